#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runbook_fleet::fuzzing::alertmanager(data));
