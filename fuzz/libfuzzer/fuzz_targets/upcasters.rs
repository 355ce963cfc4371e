//! `sinkd_fuzz::upcasters`, coverage-guided (`./bench fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinkd_fuzz::upcasters(data));
