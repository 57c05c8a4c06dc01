//! Any bytes as a key: a key that validates is safe on a command line.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| memgate_server::fuzzing::key(data));
