//! The parsers of messages between nodes and of purchases (issue [7]) on arbitrary bytes:
//! `envelope::open` never panics, and what it opens is the one envelope the peer's key sealed
//! (the golden vector, the seed): the fuzzer holds no key, so it can change the spelling of
//! the outer record but never what was signed; a tab opens only under the customer's key; a
//! refused purchase takes nothing; a closing receipt opens only as the one its issuer signed
//! (the golden vector, the seed `receipt`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_kernel::crypto::SigningKey;
use tally_kernel::{Amount, Currency, Timestamp};
use tally_proto::session::envelope::{Receiver, open};
use tally_proto::session::ids::{NodeId, SessionId};
use tally_proto::session::purchase::{MacedPurchase, Tab, new_tab};
use tally_proto::session::receipt::SessionReceipt;

fuzz_target!(|bytes: &[u8]| {
    let me = NodeId::of(&SigningKey::from_seed(&[2; 32]).verifying_key());
    let peer = SigningKey::from_seed(&[1; 32]).verifying_key();
    let lookup = |n: &NodeId| (*n == NodeId::of(&peer)).then_some(peer);
    let receiver = Receiver {
        me,
        peer: &lookup,
        now: Timestamp(1_767_225_600_000_000),
        window_s: 300,
    };
    // Only node 1 can seal for node 2; the fuzzer cannot make another envelope.
    if let Ok(envelope) = open(bytes, &receiver) {
        let golden = open(include_bytes!("../seeds/peer_message/sealed"), &receiver).expect("the vector");
        assert_eq!(envelope, golden);
    }

    let customer = SigningKey::from_seed(&[9; 32]);
    let transaction = SessionId::new(me, 1).expect("id").first_transaction();
    let eur = Currency::from_code("EUR").expect("EUR");
    assert!(Tab::open(bytes, &customer.verifying_key(), transaction, Amount::new(100, eur)).is_err());
    let signed = new_tab(&customer, transaction, [7; 32], Timestamp(1)).expect("tab");
    let mut tab = Tab::open(&signed, &customer.verifying_key(), transaction, Amount::new(100, eur))
        .expect("open");
    if let Ok(p) = serde_json::from_slice::<MacedPurchase>(bytes) {
        let before = tab.clone();
        if tab.take(&p, 1).is_err() {
            assert_eq!(tab, before, "a refusal takes nothing");
        }
    }

    if let Ok(receipt) = std::str::from_utf8(bytes).map(SessionReceipt::open) {
        if let Ok(r) = receipt {
            let golden = SessionReceipt::open(include_str!("../seeds/peer_message/receipt"))
                .expect("the vector");
            assert_eq!(r, golden);
        }
    }
});
