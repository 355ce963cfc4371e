//! `sinkd_fuzz::avro_datum`, coverage-guided (`./bench fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinkd_fuzz::avro_datum(data));
