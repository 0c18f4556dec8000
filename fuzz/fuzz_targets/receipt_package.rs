//! The receipt package parser (and the offline verifier behind `tally receipt verify`) on
//! arbitrary bytes: never panics; what parses encodes back to exactly the same bytes (one
//! encoding per package); nothing verifies against a CA the fuzzer cannot sign for; the
//! token formats parse or refuse without panicking and round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tally_kernel::Timestamp;
use tally_kernel::crypto::CertificateAuthority;
use tally_proto::receipt::token::{SecureWrite, TokenRecord};
use tally_proto::receipt::{Package, verify_package};

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        CertificateAuthority::generate("Fuzz CA", Timestamp(1_700_000_000_000_000), 3650)
            .expect("CA")
    })
}

fuzz_target!(|bytes: &[u8]| {
    if let Ok(p) = Package::from_bytes(bytes) {
        assert_eq!(p.to_bytes(), bytes, "one encoding per package");
        // A random CA: nothing the fuzzer makes can chain to it.
        assert!(verify_package(&p, ca().certificate()).is_err());
    }
    if let Ok(w) = SecureWrite::from_bytes(bytes) {
        assert_eq!(w.to_bytes(), bytes);
    }
    if let Ok(r) = TokenRecord::from_bytes(bytes) {
        assert_eq!(r.to_bytes().as_slice(), bytes);
    }
});
