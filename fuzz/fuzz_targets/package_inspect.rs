//! The package parser on arbitrary bytes: it must never panic, and whatever it accepts must
//! be a package whose trailer signature verified (so random input is never accepted).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(inspected) = tally_proto::delivery::inspect(data, None) {
        // Accepted only with a valid signature over the digest of everything before it.
        assert_eq!(
            tally_kernel::crypto::kdf::sha256(&data[..data.len() - tally_proto::delivery::TRAILER_LEN]),
            inspected.package_sha256
        );
    }
});
