//! Any bytes from a memcached server: decoded by every reply decoder, never
//! a panic, never a value for a key that was not asked for.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| memgate_server::fuzzing::reply(data));
