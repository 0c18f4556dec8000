//! Out-of-band authentication (WO 99/23617, SPEC A1–A4), the session core.
//!
//! A user opens a session on channel A (HTTP, CLI, web page) with an identifier; the server
//! assigns an unguessable session number (A1). The secret is a one-way function of the
//! invariant (the user id), the variable (the session number), a time marker (when the secret
//! was issued) and, for a transaction, what is being authorised: amount, payer and payee
//! accounts, description (A2, operations 202/502/603/708 of the seed). It goes out on channel
//! B together with the transaction in clear so the user can check it (A3); the user types it
//! back on channel A within the same open session, and the server checks it in constant time,
//! with an expiry and an attempt limit (A4). A leaked secret is useless elsewhere: it is bound
//! to this session's number, and the session closes on success.
//!
//! Construction: `code = dynamic_truncate(HMAC-SHA256(key, "tally/oob-code/v1\0" ||
//! JCS(binding)), digits)` (RFC 4226's truncation over HMAC-SHA256), where `binding` is
//! [`CodeBinding`] and `key` a node secret kept for this purpose. Rejected: storing the code
//! (a database leak would leak live codes); TOTP (not bound to a session or amount).
//!
//! [`Session`] is a value: [`Session::verify`] consumes it and returns the next state with
//! the outcome, so a caller cannot keep using a stale copy by accident.

use serde::{Deserialize, Serialize};
use tally_kernel::crypto::canonical::canonical_json;
use tally_kernel::crypto::otp::{code_hmac_sha256, codes_match};
use tally_kernel::{Amount, Id, Secret, Timestamp};

/// Domain tag of the code's HMAC input.
pub const CODE_DOMAIN: &[u8] = b"tally/oob-code/v1\0";

/// Why a session refused a code. Nothing is executed in any of these cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OobError {
    /// The code was right once; the session is over (or was cancelled).
    #[error("the session is closed")]
    SessionClosed,
    /// The code's time is up.
    #[error("the code expired at {expires_at}")]
    Expired {
        /// When it expired.
        expires_at: Timestamp,
    },
    /// The session is locked after too many wrong codes.
    #[error("too many wrong codes; the session is locked")]
    TooManyAttempts,
    /// Wrong code; `attempts_left` more tries before the session locks.
    #[error("wrong code ({attempts_left} attempts left)")]
    WrongCode {
        /// Tries left.
        attempts_left: u32,
    },
    /// The confirmation names another transaction than the one the code was sent for.
    #[error("the confirmation does not match the transaction the code was sent for")]
    TransactionMismatch,
    /// A caller bug: bad policy or binding (never caused by the user's input alone).
    #[error("API misuse: {0}")]
    ApiMisuse(&'static str),
}

/// How codes are made and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Digits in a code (6 to 10; default 8).
    pub digits: u32,
    /// Seconds a code stays valid (default 300).
    pub ttl_s: i64,
    /// Wrong codes before the session locks (default 5).
    pub attempts_max: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            digits: 8,
            ttl_s: 300,
            attempts_max: 5,
        }
    }
}

impl Policy {
    fn check(&self) -> Result<(), OobError> {
        if !(6..=10).contains(&self.digits) {
            return Err(OobError::ApiMisuse("digits must be 6 to 10"));
        }
        if !(10..=86_400).contains(&self.ttl_s) {
            return Err(OobError::ApiMisuse("ttl must be 10 s to 1 day"));
        }
        if !(1..=20).contains(&self.attempts_max) {
            return Err(OobError::ApiMisuse("attempts must be 1 to 20"));
        }
        Ok(())
    }
}

/// What a transaction code authorises; shown in clear on channel B.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The amount.
    pub amount: Amount,
    /// Account debited, when known at this point.
    pub payer_account: Option<Id>,
    /// Who is paid, as shown to the user.
    pub payee: String,
    /// Account credited, when known.
    pub payee_account: Option<Id>,
    /// What is being bought or certified.
    pub description: String,
}

/// A message being certified (registered mail, a declaration): what the user sees, and the
/// SHA-256 of the full content the code is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certified {
    /// What is being certified, shown on channel B (`Registered mail to bob: Contract`).
    pub title: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

/// What the session is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Purpose {
    /// Access to a protected resource.
    Login,
    /// Certifying a message (registered mail, a declaration) by its content hash.
    Message(Certified),
    /// Certifying a transaction (a payment, an order, a transfer between accounts).
    Transaction(Transaction),
}

/// Everything the code is a function of, in its canonical (RFC 8785) form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeBinding<'a> {
    /// Format version.
    pub v: u32,
    /// The invariant: the user's identifier.
    pub user: &'a str,
    /// The variable: the session number, hex.
    pub session: String,
    /// The time marker: when the code was issued, µs since the epoch.
    pub issued_at: i64,
    /// When it expires, µs since the epoch.
    pub expires_at: i64,
    /// For transactions: amount in minor units (as a string, exact at any size).
    pub amount_minor: Option<String>,
    /// For transactions: ISO-4217 code.
    pub currency: Option<&'static str>,
    /// For transactions: accounts and payee as shown.
    pub payer_account: Option<String>,
    /// For transactions.
    pub payee: Option<&'a str>,
    /// For transactions.
    pub payee_account: Option<String>,
    /// For transactions.
    pub description: Option<&'a str>,
    /// For messages: the title shown (absent otherwise, so v1 login and transaction codes
    /// are unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<&'a str>,
    /// For messages: SHA-256 of the content, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<&'a str>,
}

/// Where a session stands. Variants are alphabetical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Cancelled by the user or the application.
    Closed,
    /// Too many wrong codes.
    Locked,
    /// Waiting for the code.
    Open,
    /// The right code arrived; whatever it authorised may run (once).
    Verified,
}

/// One out-of-band session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The unguessable session number (128 random bits).
    pub number: [u8; 16],
    /// The user's identifier (the invariant).
    pub user: String,
    /// What it is for.
    pub purpose: Purpose,
    /// How codes work here.
    pub policy: Policy,
    /// When the code was issued (the time marker).
    pub issued_at: Timestamp,
    /// When the code expires.
    pub expires_at: Timestamp,
    /// Wrong codes so far.
    pub attempts: u32,
    /// Where it stands.
    pub state: State,
}

/// What the caller sends on channel B when a session opens: the code and, in clear, what it
/// authorises.
#[derive(Debug)]
pub struct Notice {
    /// The code; show it to the user on channel B only.
    pub code: Secret<String>,
    /// Plain text for the message: the code, the transaction in clear, the expiry.
    pub text: Secret<String>,
}

impl Session {
    /// Opens a session for `user` at `now`; `number` must come from a CSPRNG. Returns the
    /// session to store and the notice to send on channel B.
    pub fn open(
        user: &str,
        purpose: Purpose,
        policy: Policy,
        number: [u8; 16],
        now: Timestamp,
        key: &[u8],
    ) -> Result<(Session, Notice), OobError> {
        policy.check()?;
        if user.is_empty() || user.len() > 200 {
            return Err(OobError::ApiMisuse("user id must be 1 to 200 bytes"));
        }
        if let Purpose::Transaction(t) = &purpose
            && (t.amount.minor <= 0
                || t.payee.is_empty()
                || t.payee.len() > 200
                || t.description.len() > 500)
        {
            return Err(OobError::ApiMisuse(
                "transaction needs a positive amount, a payee and a short description",
            ));
        }
        if let Purpose::Message(m) = &purpose
            && (m.title.is_empty()
                || m.title.len() > 300
                || m.sha256.len() != 64
                || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(OobError::ApiMisuse(
                "message needs a short title and a hex SHA-256",
            ));
        }
        let session = Session {
            number,
            user: user.to_string(),
            purpose,
            policy,
            issued_at: now,
            expires_at: now.plus_seconds(policy.ttl_s),
            attempts: 0,
            state: State::Open,
        };
        let code = session.code(key)?;
        let text = Secret::new(session.notice_text(code.expose()));
        Ok((session, Notice { code, text }))
    }

    /// The session number as shown and stored (hex).
    pub fn number_hex(&self) -> String {
        hex::encode(self.number)
    }

    /// The canonical binding the code is computed from.
    pub fn binding(&self) -> CodeBinding<'_> {
        let t = match &self.purpose {
            Purpose::Transaction(t) => Some(t),
            Purpose::Login | Purpose::Message(_) => None,
        };
        let m = match &self.purpose {
            Purpose::Message(m) => Some(m),
            Purpose::Login | Purpose::Transaction(_) => None,
        };
        CodeBinding {
            v: 1,
            user: &self.user,
            session: self.number_hex(),
            issued_at: self.issued_at.as_micros(),
            expires_at: self.expires_at.as_micros(),
            amount_minor: t.map(|t| t.amount.minor.to_string()),
            currency: t.map(|t| t.amount.currency.code()),
            payer_account: t.and_then(|t| t.payer_account.map(|a| a.to_string())),
            payee: t.map(|t| t.payee.as_str()),
            payee_account: t.and_then(|t| t.payee_account.map(|a| a.to_string())),
            description: t.map(|t| t.description.as_str()),
            title: m.map(|m| m.title.as_str()),
            content_sha256: m.map(|m| m.sha256.as_str()),
        }
    }

    /// Recomputes this session's code (never stored).
    pub fn code(&self, key: &[u8]) -> Result<Secret<String>, OobError> {
        let mut message = CODE_DOMAIN.to_vec();
        let json = canonical_json(&self.binding())
            .map_err(|_| OobError::ApiMisuse("binding is not canonical JSON"))?;
        message.extend_from_slice(&json);
        code_hmac_sha256(key, &message, self.policy.digits)
            .map(Secret::new)
            .map_err(|_| OobError::ApiMisuse("bad digit count"))
    }

    /// The channel-B text for `code`: the code, what it authorises in clear, the expiry.
    pub fn notice_text(&self, code: &str) -> String {
        let until = self.expires_at.to_rfc3339();
        match &self.purpose {
            Purpose::Login => {
                format!("Your Tally sign-in code: {code}\nValid until {until}.\nDo not share it.")
            }
            Purpose::Message(m) => format!(
                "Confirm with code {code}:\n{}\nContent SHA-256: {}\nValid until {until}. If you did not start this, do not type the code.",
                m.title, m.sha256
            ),
            Purpose::Transaction(t) => format!(
                "Confirm with code {code}:\n{} to {}{}\nFor: {}\nValid until {until}. If you did not start this, do not type the code.",
                t.amount,
                t.payee,
                t.payee_account
                    .map(|a| format!(" (account {a})"))
                    .unwrap_or_default(),
                t.description
            ),
        }
    }

    /// Checks a code typed back on channel A at `now`. `confirmed` is the transaction the
    /// confirming client shows (if any): it must be the one the code was sent for. Consumes
    /// the session and returns its next state, with the result. A wrong code counts; after
    /// `attempts_max` the session locks. Only `Ok(())` may execute anything.
    pub fn verify(
        mut self,
        now: Timestamp,
        submitted: &str,
        confirmed: Option<&Transaction>,
        key: &[u8],
    ) -> (Session, Result<(), OobError>) {
        let verdict = match self.state {
            State::Closed | State::Verified => Err(OobError::SessionClosed),
            State::Locked => Err(OobError::TooManyAttempts),
            State::Open if now >= self.expires_at => Err(OobError::Expired {
                expires_at: self.expires_at,
            }),
            State::Open => {
                let mismatch = match (&self.purpose, confirmed) {
                    (Purpose::Transaction(t), Some(c)) => t != c,
                    _ => false,
                };
                if mismatch {
                    Err(OobError::TransactionMismatch)
                } else {
                    match self.code(key) {
                        Err(e) => Err(e),
                        Ok(expected) if codes_match(expected.expose(), submitted.trim()) => {
                            self.state = State::Verified;
                            Ok(())
                        }
                        Ok(_) => {
                            self.attempts += 1;
                            if self.attempts >= self.policy.attempts_max {
                                self.state = State::Locked;
                                Err(OobError::TooManyAttempts)
                            } else {
                                Err(OobError::WrongCode {
                                    attempts_left: self.policy.attempts_max - self.attempts,
                                })
                            }
                        }
                    }
                }
            }
        };
        (self, verdict)
    }

    /// Closes an open session (the user cancelled, the application gave up).
    pub fn close(mut self) -> Session {
        if self.state == State::Open {
            self.state = State::Closed;
        }
        self
    }
}

#[cfg(test)]
mod tests;
