use super::*;
use crate::session::ids::{SessionId, TransactionId};
use tally_kernel::{Amount, Currency};

const T0: i64 = 1_767_225_600_000_000;

fn customer() -> SigningKey {
    SigningKey::from_seed(&[61; 32])
}

fn merchant() -> SigningKey {
    SigningKey::from_seed(&[62; 32])
}

fn mta() -> SigningKey {
    SigningKey::from_seed(&[63; 32])
}

fn eur(minor: i64) -> Amount {
    Amount::new(minor, Currency::from_code("EUR").expect("EUR"))
}

fn usd(minor: i64) -> Amount {
    Amount::new(minor, Currency::from_code("USD").expect("USD"))
}

fn transaction() -> TransactionId {
    let am = NodeId::of(&SigningKey::from_seed(&[64; 32]).verifying_key());
    SessionId::new(am, 7)
        .expect("id")
        .first_transaction()
        .next()
        .expect("second")
}

/// 10.84 USD per 10.00 EUR.
fn rate() -> Rate {
    Rate {
        numerator: 1084,
        denominator: 1000,
    }
}

fn signed(side: Side, key: &SigningKey, total: i64, list: &str) -> Signed {
    let record = Record {
        transaction: transaction(),
        side,
        total: usd(total),
        count: 3,
        list: list.repeat(64),
    }
    .sign(key)
    .expect("sign");
    Signed {
        key: key.verifying_key().to_hex(),
        record: String::from_utf8(record).expect("text"),
    }
}

fn receipt() -> SessionReceipt {
    SessionReceipt {
        at: T0,
        clearing: Clearing {
            transaction: transaction(),
            total: usd(271),
            customer_total: eur(250),
            count: 3,
            list: "c".repeat(64),
            verdict: false,
        },
        customer: Some(signed(Side::Customer, &customer(), 271, "c")),
        issuer: NodeId::of(&mta().verifying_key()),
        issuer_key: mta().verifying_key().to_hex(),
        merchant: Some(signed(Side::Merchant, &merchant(), 271, "c")),
        rate: rate(),
    }
}

#[test]
fn a_receipt_opens_alone_and_every_changed_byte_is_refused() {
    let text = receipt().issue(&mta()).expect("issue");
    assert_eq!(SessionReceipt::open(&text), Ok(receipt()));
    for i in 0..text.len() {
        let mut bytes = text.clone().into_bytes();
        bytes[i] ^= 1;
        let Ok(changed) = String::from_utf8(bytes) else {
            continue;
        };
        if let Ok(r) = SessionReceipt::open(&changed) {
            assert_eq!(r, receipt(), "byte {i}");
        }
    }
}

#[test]
fn a_receipt_that_does_not_add_up_is_refused() {
    // Signed by another node than the one it names.
    assert_eq!(
        receipt().issue(&merchant()),
        Err(ReceiptError::BadSignature)
    );
    // A record under another key than the one it names, or of another side.
    let mut r = receipt();
    r.customer = Some(Signed {
        key: merchant().verifying_key().to_hex(),
        ..signed(Side::Customer, &customer(), 271, "c")
    });
    assert_eq!(r.issue(&mta()), Err(ReceiptError::Record(Side::Customer)));
    let mut r = receipt();
    r.merchant = Some(signed(Side::Customer, &merchant(), 271, "c"));
    assert_eq!(r.issue(&mta()), Err(ReceiptError::Record(Side::Merchant)));
    // Records that disagree with each other or with the clearing, a customer's total that is
    // not the merchant's at the rate, or no record at all.
    let mut r = receipt();
    r.merchant = Some(signed(Side::Merchant, &merchant(), 300, "c"));
    assert_eq!(r.issue(&mta()), Err(ReceiptError::Disagrees));
    let mut r = receipt();
    r.clearing.customer_total = eur(249);
    assert_eq!(r.issue(&mta()), Err(ReceiptError::Disagrees));
    let mut r = receipt();
    (r.customer, r.merchant) = (None, None);
    assert_eq!(r.issue(&mta()), Err(ReceiptError::Disagrees));
    // A verdict keeps disagreeing records, with the merchant's alone too; but not with none,
    // and not without its total converted back at the rate.
    let mut r = receipt();
    r.merchant = Some(signed(Side::Merchant, &merchant(), 300, "c"));
    r.clearing.verdict = true;
    r.issue(&mta()).expect("a verdict");
    r.customer = None;
    r.issue(&mta())
        .expect("a verdict on the merchant's record alone");
    r.clearing.customer_total = eur(249);
    assert_eq!(r.issue(&mta()), Err(ReceiptError::Disagrees));
    r.clearing.customer_total = eur(250);
    r.merchant = None;
    assert_eq!(r.issue(&mta()), Err(ReceiptError::Disagrees));
    // One side alone, as the deadline clears it.
    let mut r = receipt();
    r.merchant = None;
    let text = r.issue(&mta()).expect("the customer's alone");
    assert_eq!(SessionReceipt::open(&text), Ok(r));
}

#[test]
fn the_golden_vector_holds() {
    let text = receipt().issue(&mta()).expect("issue");
    let computed = serde_json::json!({
        "customer_key": customer().verifying_key().to_hex(),
        "merchant_key": merchant().verifying_key().to_hex(),
        "mta_key": mta().verifying_key().to_hex(),
        "receipt": text,
    });
    crate::pinned::check(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/protocols/vectors/session_receipt.json"
        ),
        &computed,
    );
}
