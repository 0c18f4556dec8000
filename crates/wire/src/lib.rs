//! The HTTP API's request and response types, in one place.
//!
//! The node builds the answers (`tally-service` returns them, `tally-http` sends them) and
//! parses the requests; the client (`tally-client`, which the CLI and the tests use) sends the
//! requests and parses the answers. One definition for both sides, so a field renamed on one
//! side does not compile on the other.
//!
//! Decision: a crate of its own, depending only on the domain crates below it (`kernel`,
//! `ledger`, `proto`) and serde, so the node does not depend on an HTTP client nor the client on
//! the node. Rejected: the service's own view types on the wire next to separate DTOs for the
//! ledger (two policies, and a client reading untyped JSON); DTOs duplicating every view (the
//! same fields written twice, converted field by field).
//!
//! * [`ledger`]: accounts, transfers, holds, exchanges, API keys, the dev inbox, the audit.
//! * [`oob`]: out-of-band sessions and what hangs off them.
//! * [`delivery`]: products, sales, payments, receivers, keys, complaints, reports.
//! * [`receipts`]: tokens, warrants, receipts, the arbiter.
//! * [`federation`]: peer nodes and the messages between them.
//! * [`pads`]: anonymous prepaid pads: the counter sale, the operator's view, the tariff.
//! * [`error`]: the error body and its stable codes.

/// `Debug` for a type carrying a secret: its other fields as usual, the secret as `<secret>`
/// (an answer printed with `{:?}` or logged must not show an API key, a private key, an
/// access token or an unlock key).
macro_rules! debug_hiding {
    ($ty:ident { $($field:ident),* } hides { $($secret:ident),* }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    $(.field(stringify!($secret), &"<secret>"))*
                    .finish()
            }
        }
    };
}

pub mod delivery;
pub mod error;
pub mod federation;
pub mod ledger;
pub mod oob;
pub mod pads;
pub mod receipts;

pub mod amount_text {
    //! Serde for [`tally_kernel::Amount`] as `"12.50 EUR"`.
    //!
    //! Key decision: an amount that is text of the wrong form (`"12.505 EUR"`, `"lots"`) is a
    //! wrong *value*, 422 `invalid_request` naming the field, like the amounts the HTTP layer
    //! parses itself; a wrong JSON *type* stays 400 `malformed_json`. serde flattens both
    //! into one error kind, so [`watch`] records a refused amount's typed error on the
    //! decoding thread while a body is decoded. Rejected: carrying amounts as `String` in
    //! every request type (thirty construction sites lose the type).
    use serde::{Deserialize, Deserializer, Serializer};
    use std::cell::RefCell;
    use tally_kernel::Amount;
    use tally_kernel::MoneyError;

    thread_local! {
        static REFUSED: RefCell<Option<Option<Refused>>> = const { RefCell::new(None) };
    }

    /// An amount refused for its form: the text and why.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Refused {
        /// The text given.
        pub text: String,
        /// Why it is not an amount.
        pub error: MoneyError,
    }

    /// As text.
    pub fn serialize<S: Serializer>(a: &Amount, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_string())
    }

    /// From text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|error: MoneyError| {
            let message = error.to_string();
            REFUSED.with(|r| {
                if let Some(slot) = r.borrow_mut().as_mut() {
                    slot.get_or_insert(Refused { text: s, error });
                }
            });
            serde::de::Error::custom(message)
        })
    }

    /// Runs a synchronous decode and returns, beside its result, the first amount it refused
    /// for its form (none when the decode failed for another reason).
    pub fn watch<R>(decode: impl FnOnce() -> R) -> (R, Option<Refused>) {
        let outer = REFUSED.with(|r| r.borrow_mut().replace(None));
        let result = decode();
        let refused = REFUSED
            .with(|r| std::mem::replace(&mut *r.borrow_mut(), outer))
            .flatten();
        (result, refused)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use tally_kernel::{Amount, Currency, Id, Timestamp};
    use utoipa::PartialSchema;
    use utoipa::openapi::{RefOr, Schema};

    fn schema_fields<T: PartialSchema>() -> BTreeSet<String> {
        match T::schema() {
            RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
            _ => panic!("not an object schema"),
        }
    }

    fn json_fields(value: impl serde::Serialize) -> BTreeSet<String> {
        serde_json::to_value(value)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn schemas_of_proto_types_have_their_fields() {
        let ack = tally_proto::delivery::Acknowledgement {
            v: 1,
            sale: Id::new(),
            reference: tally_proto::delivery::ReferenceCode::new(
                Id::new(),
                "alice",
                Timestamp::now(),
                [0; 16],
            ),
            package_sha256: "00".into(),
        };
        assert_eq!(
            json_fields(&ack),
            schema_fields::<crate::delivery::AcknowledgementDoc>()
        );
        let tx = tally_proto::oob::Transaction {
            amount: Amount::new(100, Currency::from_code("EUR").unwrap()),
            payer_account: None,
            payee: "shop".into(),
            payee_account: None,
            description: "x".into(),
        };
        assert_eq!(
            json_fields(&tx),
            schema_fields::<crate::oob::TransactionDoc>()
        );
        assert_eq!(
            json_fields(tx.amount),
            schema_fields::<crate::ledger::Money>()
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let key = crate::ledger::NewApiKeyResponse {
            id: uuid::Uuid::nil(),
            role: "customer".into(),
            owner: "alice".into(),
            label: String::new(),
            key: "tally_live_secret".into(),
        };
        let released = crate::delivery::ReleasedKey {
            unlock_key: "00112233".into(),
            fingerprint: "ab".into(),
        };
        let cert = crate::oob::IssuedCertificate {
            certificate: "PEM".into(),
            private_key: "PRIVATE".into(),
        };
        for shown in [
            format!("{key:?}"),
            format!("{released:?}"),
            format!("{cert:?}"),
        ] {
            assert!(shown.contains("<secret>"), "{shown}");
            for secret in ["tally_live_secret", "00112233", "PRIVATE"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }
}
