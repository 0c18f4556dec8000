//! The pad frame's parsers (issue [8]) on arbitrary bytes: `frame::parse` never panics; a
//! frame that parses opens under the vectors' pad only if it is one of the golden vectors' (the
//! fuzzer holds no pad bytes, so it cannot make another authentic frame); both plaintext
//! decoders and the pad file's never panic, and what they take re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_kernel::crypto::pad::keystream;
use tally_proto::pad::file::{PadBytes, PadFile};
use tally_proto::pad::frame;
use tally_proto::pad::plain::{Reply, Request};
use zeroize::Zeroizing;

fuzz_target!(|bytes: &[u8]| {
    // The golden vector's pad: the ChaCha20 keystream of 07 × 32, 4 KiB.
    let mut m = Zeroizing::new(vec![0u8; 4096]);
    keystream(&Zeroizing::new([7u8; 32]), 0, &mut m).expect("in range");
    let pad = PadBytes::OneTime(m);
    if let Ok(f) = frame::parse(bytes) {
        if let Ok(material) = pad.read(f.header.range()) {
            if let Ok(plain) = f.open(&material) {
                let show = include_bytes!("../seeds/pad_frame/show_up");
                let forward = include_bytes!("../seeds/pad_frame/forward_up");
                let golden = [&show[..], &forward[..]];
                assert!(golden.contains(&bytes), "only the vectors' frames are authentic");
                assert!(Request::decode(&plain).is_ok());
            }
        }
    }
    if let Ok(r) = Request::decode(bytes) {
        let again = r.encode(false).expect("encodes");
        assert_eq!(&bytes[..again.len()], &again[..]);
    }
    if let Ok(r) = Reply::decode(bytes) {
        assert_eq!(r.encode(bytes.len()).as_deref().map(|v| &v[..]), Some(bytes));
    }
    if let Ok(file) = PadFile::decode(bytes) {
        assert_eq!(&file.encode().expect("encodes")[..], bytes);
    }
});
