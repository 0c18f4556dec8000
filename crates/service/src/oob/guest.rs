//! Signing in by an address alone: the web checkout's buyer, who has no Tally user yet, types
//! an e-mail address or a phone number and proves it with the code sent there (the [2] flow,
//! application `guest_login`). The verified session yields the same access token as a login.
//!
//! Decisions:
//! * The user is found by the address. The verified address a user's codes go to signs that
//!   user in (so a customer who registered `alice@example.com` is alice at the checkout too,
//!   exactly as a sign-in by name would send the code there); a user's other verified
//!   addresses are refused. An unknown address makes a guest user named after the address's
//!   digest (`guest-…`, the same name every time, so a buyer's purchases stay together), and
//!   the code that signs it in verifies the address.
//! * An address someone registered but never proved is claimed by the sign-in: the session is
//!   the address's own guest, and the code moves the address to it. Signing in as the user who
//!   registered it would hand that user's account to the address's holder (or, when a guest
//!   registered a victim's address on itself, the victim's purchases and keys to the guest);
//!   refusing would let anyone block an address by registering it.
//! * Anyone can make the node send these codes, so they count against the per-client-address
//!   and node-wide caps like anonymous sign-ins, besides the per-address quota.

use super::open::OpenPlan;
use super::{Oob, Payload};
use crate::access::{channel_kind, check_address, invalid};
use crate::{Result, ServiceError};
use tally_kernel::Id;
use tally_kernel::crypto::kdf::sha256;
use tally_proto::oob::Purpose;
use tally_store::oob::{Address, insert_address, upsert_subscriber};
use tally_wire::oob::{AppRequest, SessionView};

/// The application of a sign-in by address.
pub const GUEST_LOGIN: &str = "guest_login";

/// How the name of a user made by a sign-in by address begins.
pub const GUEST_PREFIX: &str = "guest-";

/// The user a sign-in by address makes for an address nobody registered.
pub fn guest_name(channel: &str, address: &str) -> String {
    let digest = sha256(format!("{channel}\0{address}").as_bytes());
    format!("{GUEST_PREFIX}{}", hex::encode(&digest[..10]))
}

/// The refusal of an address that cannot sign in here (a user's second address): the same
/// words as an unknown user's at the sign-in by name, so nothing tells which addresses exist.
fn not_here() -> ServiceError {
    invalid(
        "address",
        "no code can be sent for this address here (sign in with your user name instead)",
    )
}

/// An address as a buyer types it, checked for its channel: an e-mail address with a local
/// part and a domain, an international phone number, or (with `--dev`) any dev-inbox name.
fn check_guest_address(channel: &str, address: &str) -> Result<()> {
    check_address(channel, address)?;
    let ok = match channel {
        "email" => address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        }),
        "sms" => {
            address.len() >= 8
                && address.starts_with('+')
                && address[1..].bytes().all(|b| b.is_ascii_digit())
        }
        "dev" => !address.contains(['/', '?', '#', ' ']),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "address",
            match channel {
                "email" => "an e-mail address, like ana@example.com",
                "sms" => "a phone number with its country code, like +4915112345678",
                _ => "a dev inbox name without spaces, '/', '?' or '#'",
            },
        ))
    }
}

impl Oob {
    /// Opens a sign-in by `address` on `channel` (`email`, `sms`, or `dev` on a dev node) and
    /// sends its code there. Verified, the session yields an access token for the address's
    /// user (see the module's decisions).
    pub async fn guest_sign_in(
        &self,
        channel: &str,
        address: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<SessionView> {
        channel_kind(channel, self.core.is_dev())?;
        if channel == "webhook" {
            return Err(invalid("channel", "email or sms"));
        }
        let address = address.trim();
        check_guest_address(channel, address)?;
        let existing = self.core.store().address(channel, address).await?;
        let guest = guest_name(channel, address);
        let (user, address_row, new_row) = match existing {
            // A verified address signs its user in, but only where that user's codes go (the
            // address a sign-in by name would use), never by a second or old address.
            Some(a) if a.verified_at.is_some() => match self.channel_b(&a.user_id, None).await {
                Ok((c, addr)) if c == channel && addr == address => (a.user_id, None, false),
                _ => return Err(not_here()),
            },
            // Registered but never proved, by anyone: whoever types the code sent there holds
            // it, so the sign-in is the address's own guest and the code claims the address.
            Some(a) => (guest.clone(), Some(a), false),
            None => (
                guest.clone(),
                Some(Address {
                    id: Id::new(),
                    user_id: guest.clone(),
                    channel: channel.to_string(),
                    address: address.to_string(),
                    verified_at: None,
                    created_at: self.core.now(),
                }),
                true,
            ),
        };
        let mut extra = Vec::new();
        if let Some(a) = &address_row {
            if new_row {
                extra.extend(insert_address(a));
            }
            extra.push(upsert_subscriber(&user, None, self.core.now()));
        }
        let (view, _) = self
            .open_with(OpenPlan {
                user: user.clone(),
                opened_by: user,
                application: GUEST_LOGIN,
                purpose: Purpose::Login,
                payload: Payload {
                    app: AppRequest::Login,
                    address_id: address_row.map(|a| a.id),
                },
                channel: channel.to_string(),
                address: address.to_string(),
                client_key: None,
                money: None,
                extra,
                client,
                capped: true,
            })
            .await
            .map_err(|e| match e {
                // A racing first sign-in of the same address made the guest first: the same
                // user, so the buyer may simply ask again.
                ServiceError::Invalid {
                    field: "address", ..
                } => ServiceError::Conflict(tally_store::Conflict::Taken(
                    "another sign-in for this address is under way; try again",
                )),
                other => other,
            })?;
        Ok(view)
    }

    /// The verified second-channel address of `user` that codes and keys go to.
    pub async fn verified_address(&self, user: &str) -> Result<(String, String)> {
        self.channel_b(user, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names_are_stable_valid_names_per_address() {
        let a = guest_name("email", "ana@example.com");
        assert_eq!(a, guest_name("email", "ana@example.com"));
        assert_ne!(a, guest_name("email", "bob@example.com"));
        assert_ne!(a, guest_name("sms", "ana@example.com"));
        assert_eq!(a.len(), GUEST_PREFIX.len() + 20);
        crate::access::check_name("user", &a).expect("a guest name is a valid user name");
    }

    #[test]
    fn guest_addresses_are_checked_for_their_channel() {
        let good = [
            ("email", "ana@example.com"),
            ("sms", "+4915112345678"),
            ("dev", "ana"),
        ];
        for (channel, address) in good {
            check_guest_address(channel, address).unwrap_or_else(|e| panic!("{address}: {e}"));
        }
        let bad = [
            ("email", "ana"),
            ("email", "@example.com"),
            ("email", "ana@localhost"),
            ("email", "ana@.com"),
            ("sms", "015112345678"),
            ("sms", "+49 151 1234"),
            ("sms", "+49"),
            ("dev", "a/b"),
            ("email", ""),
            ("email", "ana@example.com\nBcc: x@y.z"),
        ];
        for (channel, address) in bad {
            assert!(
                matches!(
                    check_guest_address(channel, address),
                    Err(ServiceError::Invalid {
                        field: "address",
                        ..
                    })
                ),
                "{channel} {address:?} must be refused"
            );
        }
    }
}
