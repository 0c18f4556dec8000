//! The package parser on arbitrary bytes: it must never panic, and whatever it accepts must
//! be a package whose trailer signature verified over the SHA-256 of its header bytes (format
//! version 1 or 2: the seeds hold one vector of each), so random input is never accepted. `open_package` (one pass, with the
//! vector's unlock key) must accept exactly what `inspect` accepts, with the same result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_proto::delivery::{header_bytes, inspect, open_package, package_len};

/// The unlock key of the vectors in docs/protocols/vectors/delivery.json and delivery_v2.json
/// (the seeds: one sale, both formats).
const UNLOCK_KEY: [u8; 32] = [
    0x28, 0xa8, 0x5c, 0x41, 0x0a, 0x68, 0xe8, 0x67, 0x28, 0xcf, 0x13, 0x47, 0xbb, 0x35, 0x50, 0x63,
    0x11, 0x2c, 0xc7, 0x2a, 0x93, 0x34, 0xb8, 0xae, 0xd4, 0x7e, 0xbb, 0x45, 0x42, 0x6a, 0x47, 0x18,
];

fuzz_target!(|data: &[u8]| {
    let inspected = inspect(data, None);
    if let Ok(inspected) = &inspected {
        let head = header_bytes(&inspected.header).expect("a verified header encodes");
        assert_eq!(&data[..head.len()], head.as_slice());
        assert_eq!(tally_kernel::crypto::kdf::sha256(&head), inspected.package_sha256);
        assert_eq!(data.len() as u64, package_len(&head, &inspected.header));
    }
    let opened = open_package(data, None, &UNLOCK_KEY, 0, std::io::sink());
    match (&inspected, &opened) {
        (Ok(a), Ok((b, _))) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        // A package that verifies but does not unlock with this key (another sale's key).
        (Ok(_), Err(_)) => {}
        (Err(e), Ok(_)) => panic!("open_package accepted what inspect refused: {e}"),
    }
});
