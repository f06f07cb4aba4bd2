//! libFuzzer entry for [`didmesh_fuzz::sync_frame`]: see its doc for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| didmesh_fuzz::sync_frame(data));
