#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runbook_fleet::fuzzing::run_request(data));
