//! libFuzzer entry for [`didmesh_fuzz::wallet_parse`]: see its doc for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| didmesh_fuzz::wallet_parse(data));
