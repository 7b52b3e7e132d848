//! Any bytes as a WorkloadEndpoint to store (`_core::fuzzing::endpoint`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _core::fuzzing::endpoint(data));
