//! The snapshot reader on raw bytes with the CRC comparisons skipped (the
//! default of a `cfg(fuzzing)` build), so mutated inputs reach the decoder.
//!
//! Checks: no panic; `verify_file` and `load_file` agree; batches in order and
//! bounded; an accepted file's records match its header and re-encode, through
//! the real writer, to the same bytes once its CRCs are recomputed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvecd_fuzz::{assert_reencodes, fix_crcs, opts_for, read_checked};

fuzz_target!(|data: &[u8]| {
    let (verdict, model) = read_checked(data, opts_for(data), false);
    if let (Some(header), Some(model)) = (verdict.header(), model) {
        let mut fixed = data.to_vec();
        fix_crcs(&mut fixed);
        assert_reencodes(&fixed, header, &model);
    }
});
