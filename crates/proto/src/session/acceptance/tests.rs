//! Acceptance delivery: the customer's checks, accept, reject-and-resend, the arbiter, and the
//! golden vector.
use super::*;
use crate::session::ids::{NodeId, SessionId};
use tally_kernel::Currency;

const T0: i64 = 1_767_225_600_000_000;

fn merchant() -> SigningKey {
    SigningKey::from_seed(&[41; 32])
}

fn customer() -> SigningKey {
    SigningKey::from_seed(&[42; 32])
}

fn mta() -> SigningKey {
    SigningKey::from_seed(&[43; 32])
}

fn transaction() -> TransactionId {
    let am = NodeId::of(&SigningKey::from_seed(&[1; 32]).verifying_key());
    SessionId::new(am, 9).expect("id").first_transaction()
}

fn eur(minor: i64) -> Amount {
    Amount::new(minor, Currency::from_code("EUR").expect("EUR"))
}

const PRODUCT: &[u8] = b"Chapter 1. It was a bright cold day in April.";
const K1: [u8; 32] = [11; 32];
const K2: [u8; 32] = [22; 32];

/// A UUIDv7 at `micros` (for answers at a given time).
fn id_at(micros: i64, n: u8) -> Id {
    let ms = (micros / 1000).to_be_bytes();
    let mut b = [n; 16];
    b[..6].copy_from_slice(&ms[2..]);
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    Id::from_slice(&b).expect("16 bytes")
}

struct World {
    offer_signed: Vec<u8>,
    order: Order,
    order_signed: Vec<u8>,
}

fn world() -> World {
    let offer = Offer::of(
        "ebook-1984",
        "George Orwell, 1984, chapter 1",
        eur(250),
        PRODUCT,
    )
    .expect("offer");
    let offer_signed = offer.sign(&merchant());
    let order = Order {
        transaction: transaction(),
        order: id_at(T0, 1),
        product: "ebook-1984".into(),
        price: eur(250),
        offer: digest(&offer_signed),
        at: T0,
    };
    let order_signed = order.sign(&customer());
    World {
        offer_signed,
        order,
        order_signed,
    }
}

fn sending(order: &Order, attempt: u32, k2: &[u8; 32]) -> Sending {
    send(
        order,
        attempt,
        seal_product(k2, order.order, PRODUCT).expect("seal"),
        &merchant(),
    )
}

#[test]
fn an_accepted_delivery_releases_k2_to_the_customer_only() {
    let w = world();
    // The merchant opens the customer's order against its own offer.
    let offer = Offer::open(&w.offer_signed, &merchant().verifying_key()).expect("offer");
    let order = Order::open(
        &w.order_signed,
        &customer().verifying_key(),
        transaction(),
        &w.offer_signed,
        &offer,
    )
    .expect("order");
    // K1 as the MTA vouched for it.
    let key = OrderKey {
        transaction: transaction(),
        order: order.order,
        k1: hex::encode(K1),
    }
    .sign(&mta());
    let k1 = OrderKey::open(&key, &mta().verifying_key(), &order).expect("k1");
    assert_eq!(k1, K1);
    assert_eq!(
        OrderKey::open(&key, &merchant().verifying_key(), &order),
        Err(AcceptanceError::BadSignature("order key"))
    );
    let s = sending(&order, 1, &K2);
    let d = Delivery::start(order.clone(), k1, K2, &s.package);
    assert!(!format!("{d:?}").contains(&hex::encode(K2)));
    // The customer checks and accepts; the merchant releases [K2]^K1.
    check(&w.order, &s, &merchant().verifying_key()).expect("intact");
    let accept = Answer::to(&w.order, &s.package, true, id_at(T0 + 1_000_000, 2));
    let signed = accept.sign(&customer());
    let a = Answer::open(&signed, &customer().verifying_key()).expect("answer");
    let (d, next) = d.answer(&a, T0 + 2_000_000).expect("accepted");
    assert_eq!(d.state, DeliveryState::Accepted);
    let Next::Release { wrapped } = next else {
        panic!("not released: {next:?}")
    };
    assert_eq!(
        unlock(&K1, order.order, &wrapped, &s.sealed).expect("unlocked"),
        PRODUCT
    );
    assert_eq!(
        unlock(&[9; 32], order.order, &wrapped, &s.sealed),
        Err(AcceptanceError::Sealed("key"))
    );
    // The same accept again (a lost answer) releases the same K2; nothing else is taken.
    let (d, again) = d.answer(&a, T0 + 3_000_000).expect("repeat");
    assert!(matches!(again, Next::Release { .. }));
    let reject = Answer::to(&w.order, &s.package, false, id_at(T0 + 3_000_000, 3));
    assert_eq!(
        d.answer(&reject, T0 + 3_000_000).err(),
        Some(AcceptanceError::Over("accepted"))
    );
}

#[test]
fn a_damaged_or_foreign_package_is_rejected_and_sent_again_once() {
    let w = world();
    let s = sending(&w.order, 1, &K2);
    // What the customer's check catches: damaged bytes, another product, another signer.
    let mut damaged = s.clone();
    damaged.sealed[30] ^= 1;
    assert_eq!(
        check(&w.order, &damaged, &merchant().verifying_key()),
        Err(AcceptanceError::Damaged)
    );
    let mut other = w.order.clone();
    other.product = "ebook-animal-farm".into();
    assert_eq!(
        check(&other, &s, &merchant().verifying_key()),
        Err(AcceptanceError::Mismatch("package"))
    );
    assert_eq!(
        check(&w.order, &s, &customer().verifying_key()),
        Err(AcceptanceError::BadSignature("package"))
    );
    // Rejected: sent again under a new K2; rejected again: aborted, nothing owed.
    let d = Delivery::start(w.order.clone(), K1, K2, &s.package);
    let reject = Answer::to(&w.order, &s.package, false, id_at(T0, 2));
    let (d, next) = d.answer(&reject, T0).expect("rejected");
    assert_eq!((next, d.state), (Next::Resend, DeliveryState::Sent));
    // The same reject again is a replay.
    assert_eq!(
        d.clone().answer(&reject, T0).err(),
        Some(AcceptanceError::Replayed)
    );
    let k2b = [23; 32];
    let s2 = sending(&w.order, 2, &k2b);
    let d = d.resent(k2b, &s2.package);
    assert_eq!((d.attempt, d.k2().expect("k2")), (2, k2b));
    // An answer to the first package is about another package now.
    let late = Answer::to(&w.order, &s.package, true, id_at(T0, 3));
    assert_eq!(
        d.clone().answer(&late, T0).err(),
        Some(AcceptanceError::Mismatch("answer's package"))
    );
    let again = Answer::to(&w.order, &s2.package, false, id_at(T0, 4));
    let (d, next) = d.answer(&again, T0).expect("rejected again");
    assert_eq!((next, d.state), (Next::Abort, DeliveryState::Aborted));
    let accept = Answer::to(&w.order, &s2.package, true, id_at(T0, 5));
    assert_eq!(
        d.answer(&accept, T0).err(),
        Some(AcceptanceError::Over("aborted"))
    );
}

#[test]
fn stale_answers_and_orders_that_do_not_fit_the_offer_are_refused() {
    let w = world();
    let s = sending(&w.order, 1, &K2);
    let d = Delivery::start(w.order.clone(), K1, K2, &s.package);
    let old = Answer::to(&w.order, &s.package, true, id_at(T0 - 301_000_000, 2));
    assert_eq!(
        d.clone().answer(&old, T0).err(),
        Some(AcceptanceError::Replayed)
    );
    let v4 = Answer {
        id: Id::from_slice(&[0x44; 16]).expect("id"),
        ..old
    };
    assert_eq!(d.answer(&v4, T0).err(), Some(AcceptanceError::Replayed));
    let offer = Offer::open(&w.offer_signed, &merchant().verifying_key()).expect("offer");
    let cheaper = Order {
        price: eur(1),
        ..w.order.clone()
    }
    .sign(&customer());
    assert_eq!(
        Order::open(
            &cheaper,
            &customer().verifying_key(),
            transaction(),
            &w.offer_signed,
            &offer
        ),
        Err(AcceptanceError::Mismatch("order's product, price or offer"))
    );
    assert_eq!(
        Order::open(
            &w.order_signed,
            &merchant().verifying_key(),
            transaction(),
            &w.offer_signed,
            &offer
        ),
        Err(AcceptanceError::BadSignature("order"))
    );
}

#[test]
fn the_arbiter_compares_the_product_with_its_signed_description() {
    let w = world();
    let s = sending(&w.order, 1, &K2);
    assert_eq!(
        arbitrate(&w.offer_signed, &s, &K2, &merchant().verifying_key()),
        Ok(Verdict::Matches)
    );
    // The merchant sent something else than it described.
    let wrong = send(
        &w.order,
        1,
        seal_product(&K2, w.order.order, b"Chapter 1. Call me Ishmael.").expect("seal"),
        &merchant(),
    );
    assert_eq!(
        arbitrate(&w.offer_signed, &wrong, &K2, &merchant().verifying_key()),
        Ok(Verdict::DoesNotMatch)
    );
    // The customer cannot bring false evidence: a package it changed, or an offer it made.
    let mut forged = s.clone();
    forged.sealed[40] ^= 1;
    assert_eq!(
        arbitrate(&w.offer_signed, &forged, &K2, &merchant().verifying_key()),
        Err(AcceptanceError::Damaged)
    );
    let own_offer = Offer::of("ebook-1984", "anything", eur(250), b"x")
        .expect("offer")
        .sign(&customer());
    assert_eq!(
        arbitrate(&own_offer, &s, &K2, &merchant().verifying_key()),
        Err(AcceptanceError::BadSignature("offer"))
    );
}

#[test]
fn the_golden_vector_holds() {
    let w = world();
    let sealed =
        seal::seal_with_nonce(&K2, &[5; 24], &product_aad(w.order.order), PRODUCT).expect("seal");
    let s = send(&w.order, 1, sealed, &merchant());
    let answer = Answer::to(&w.order, &s.package, true, id_at(T0 + 1_000_000, 2)).sign(&customer());
    let wrapped = seal::seal_with_nonce(
        &K1,
        &[6; 24],
        &[KEY_AAD, w.order.order.to_string().as_bytes()].concat(),
        &K2,
    )
    .expect("wrap");
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("utf-8");
    let computed = serde_json::json!({
        "merchant_key": merchant().verifying_key().to_hex(),
        "customer_key": customer().verifying_key().to_hex(),
        "product_hex": hex::encode(PRODUCT),
        "k1_hex": hex::encode(K1),
        "k2_hex": hex::encode(K2),
        "offer": text(&w.offer_signed),
        "order": text(&w.order_signed),
        "package": text(&s.package),
        "sealed_hex": hex::encode(&s.sealed),
        "answer": text(&answer),
        "wrapped_hex": hex::encode(&wrapped),
    });
    crate::pinned::check(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/protocols/vectors/acceptance.json"
        ),
        &computed,
    );
    assert_eq!(
        unlock(&K1, w.order.order, &wrapped, &s.sealed).expect("unlock"),
        PRODUCT
    );
}
