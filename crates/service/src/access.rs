//! Who may do what, and the checks a request's fields go through before anything is decided:
//! owner names, namespaced idempotency keys, text fields, second-channel addresses. Shared by
//! every protocol driver; knows none of them.

use crate::{Principal, Result, ServiceError};
use tally_store::StoreError;

/// Longest client idempotency key, in bytes (the ledger key adds the owner's namespace).
pub const CLIENT_KEY_LEN_MAX: usize = 128;

/// The caller is the operator.
pub(crate) fn require_admin(by: &Principal) -> Result<()> {
    if by.is_admin() {
        Ok(())
    } else {
        Err(ServiceError::Forbidden("operator only"))
    }
}

/// Owner names: 1 to 200 printable bytes without ':' (the separator of namespaced
/// idempotency keys `{owner}:{key}`, so two owners' keys can never collide).
pub(crate) fn check_name(field: &'static str, value: &str) -> Result<()> {
    // `.` and `..` would fold a URL path that names them onto another route.
    let ok = !value.is_empty()
        && value.len() <= 200
        && tally_kernel::text::plain(value, false)
        && !value.contains(':')
        && value != "."
        && value != "..";
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid {
            field,
            reason: "1 to 200 printable bytes, no ':', not '.' or '..'".into(),
        })
    }
}

/// The ledger-wide key: the caller's owner, then the client's key.
pub(crate) fn namespaced(by: &Principal, key: &str) -> Result<String> {
    let printable = key.chars().all(|c| c.is_ascii_graphic());
    if key.is_empty() || key.len() > CLIENT_KEY_LEN_MAX || !printable {
        return Err(ServiceError::IdempotencyKeyInvalid(format!(
            "1 to {CLIENT_KEY_LEN_MAX} printable ASCII characters"
        )));
    }
    Ok(format!("{}:{}", by.owner, key))
}

/// A malformed field.
pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A stored row that does not decode (a bug or a hand-edited database).
pub(crate) fn corrupt(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Store(StoreError::Corrupt(e.to_string()))
}

/// 1 to `max` bytes of text, no control characters but newlines.
pub(crate) fn text_field(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max || !tally_kernel::text::plain(value, true) {
        return Err(invalid(field, format!("1 to {max} bytes of text")));
    }
    Ok(())
}

/// A second-channel kind this node may send on.
pub(crate) fn channel_kind(channel: &str, dev: bool) -> Result<()> {
    match channel {
        "email" | "sms" | "webhook" => Ok(()),
        "dev" if dev => Ok(()),
        "dev" => Err(ServiceError::Disabled("the dev channel needs --dev")),
        _ => Err(invalid("channel", "email, sms, webhook or dev")),
    }
}

/// A second-channel address as a certificate URI (the seed's "telephone number coded in a
/// field of the certificate"): `mailto:`, `tel:`, the webhook's own `https:` URL, or
/// `tally-dev:` for the development inbox.
pub(crate) fn address_uri(channel: &str, address: &str) -> Result<String> {
    Ok(match channel {
        "email" => format!("mailto:{address}"),
        "sms" => format!("tel:{address}"),
        "webhook" if address.starts_with("https://") => address.to_string(),
        "webhook" => return Err(invalid("address", "a webhook address is an https:// URL")),
        "dev" => format!("tally-dev:{address}"),
        _ => return Err(invalid("channel", "email, sms, webhook or dev")),
    })
}

/// The inverse of [`address_uri`].
pub(crate) fn uri_address(uri: &str) -> Option<(String, String)> {
    let (channel, address) = if let Some(a) = uri.strip_prefix("mailto:") {
        ("email", a)
    } else if let Some(a) = uri.strip_prefix("tel:") {
        ("sms", a)
    } else if let Some(a) = uri.strip_prefix("tally-dev:") {
        ("dev", a)
    } else if uri.starts_with("https://") {
        ("webhook", uri)
    } else {
        return None;
    };
    (!address.is_empty()).then(|| (channel.to_string(), address.to_string()))
}

/// A delivery address that a channel can use.
pub(crate) fn check_address(channel: &str, address: &str) -> Result<()> {
    if address.is_empty() || address.len() > 320 || !tally_kernel::text::plain(address, false) {
        return Err(invalid("address", "1 to 320 printable bytes"));
    }
    address_uri(channel, address).map(|_| ())
}

/// `alice@example.com` → `a***@example.com`; `+4915112345678` → `***5678`.
pub(crate) fn mask(channel: &str, address: &str) -> String {
    match (channel, address.split_once('@')) {
        ("email", Some((local, domain))) => {
            format!("{}***@{domain}", local.chars().next().unwrap_or('*'))
        }
        ("dev", _) => address.to_string(),
        _ => {
            let tail: String = address
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("***{tail}")
        }
    }
}

/// `N` bytes from hex.
pub(crate) fn parse_hex<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N]> {
    let bytes = hex::decode(text.trim()).map_err(|_| invalid(field, "not hex"))?;
    bytes
        .try_into()
        .map_err(|_| invalid(field, format!("must be {N} bytes")))
}

pub use tally_wire::amount_text;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_certificate_uris_and_mask() {
        for (channel, address) in [
            ("email", "alice@example.com"),
            ("sms", "+4915112345678"),
            ("webhook", "https://hooks.example/alice"),
            ("dev", "alice"),
        ] {
            let uri = address_uri(channel, address).expect("uri");
            assert_eq!(
                uri_address(&uri),
                Some((channel.to_string(), address.to_string()))
            );
        }
        assert!(address_uri("webhook", "http://plain.example").is_err());
        assert_eq!(mask("email", "alice@example.com"), "a***@example.com");
        assert_eq!(mask("sms", "+4915112345678"), "***5678");
    }

    #[test]
    fn names_and_keys_cannot_collide_across_owners() {
        assert!(check_name("owner", "a:b").is_err());
        assert!(check_name("owner", "").is_err());
        assert!(check_name("owner", "alice").is_ok());
        let by = Principal {
            key_id: tally_kernel::Id::new(),
            role: crate::Role::Customer,
            owner: "alice".into(),
        };
        assert_eq!(namespaced(&by, "order-1").expect("ok"), "alice:order-1");
        assert!(namespaced(&by, "has space").is_err());
        assert!(namespaced(&by, &"k".repeat(CLIENT_KEY_LEN_MAX + 1)).is_err());
    }
}
