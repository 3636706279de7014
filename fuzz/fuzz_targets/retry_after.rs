//! Rule X4: see `resilient_auth::__fuzz::retry_after` for the input layout and the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| resilient_auth::__fuzz::retry_after(data));
