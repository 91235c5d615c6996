#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runbook_host::fuzzing::runbook(data));
