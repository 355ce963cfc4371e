//! `sinkd_fuzz::expression`, coverage-guided (`./bench fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinkd_fuzz::expression(data));
