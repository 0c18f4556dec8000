//! Reference-code parsing on arbitrary text: never panics; what parses prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_proto::delivery::ReferenceCode;

fuzz_target!(|text: &str| {
    if let Ok(code) = ReferenceCode::parse(text) {
        assert_eq!(ReferenceCode::parse(&code.display()).ok(), Some(code));
    }
});
