//! The snapshot reader on raw bytes with the CRC comparisons on, as in a
//! normal build.
//!
//! Checks, for each input:
//! - as is, with CRCs checked: no panic; `verify_file` and `load_file` agree;
//!   batches in order and bounded; an accepted file re-encodes, through the
//!   real writer, to exactly its bytes;
//! - a copy with every CRC recomputed (`nvecd_fuzz::fix_crcs`), so mutations
//!   get past the checksums with the checks still on: the same, and its
//!   verdict equals the verdict on the original bytes with CRC checks off
//!   (the checksums are the only thing that switch changes).
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvecd_fuzz::{assert_reencodes, fix_crcs, opts_for, read_checked};

fuzz_target!(|data: &[u8]| {
    let opts = opts_for(data);
    let (verdict, model) = read_checked(data, opts, true);
    if let (Some(header), Some(model)) = (verdict.header(), model) {
        assert_reencodes(data, header, &model);
    }

    let mut fixed = data.to_vec();
    fix_crcs(&mut fixed);
    let (fixed_verdict, fixed_model) = read_checked(&fixed, opts, true);
    if let (Some(header), Some(model)) = (fixed_verdict.header(), fixed_model) {
        assert_reencodes(&fixed, header, &model);
    }
    let (unchecked, _) = read_checked(data, opts, false);
    assert_eq!(
        fixed_verdict.without_crc(),
        unchecked.without_crc(),
        "CRCs recomputed + checks on differs from checks off"
    );
});
