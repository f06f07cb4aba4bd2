//! libFuzzer entry for [`didmesh_fuzz::op_decode`]: see its doc for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| didmesh_fuzz::op_decode(data));
