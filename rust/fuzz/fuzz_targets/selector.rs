//! Any bytes as a label selector (`_core::fuzzing::selector`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _core::fuzzing::selector(data));
