//! libFuzzer entry for [`didmesh_fuzz::canonical_json`]: see its doc for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| didmesh_fuzz::canonical_json(data));
