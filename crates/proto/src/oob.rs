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
//! [`Session`] is a value and a state machine of the crate's one shape ([`crate::effects`]):
//! [`Session::start`] opens it with the code message and the payment hold as effects, and
//! [`Session::handle`] consumes it with a code, a cancellation or a timeout and returns the
//! next state with what to commit (the hold posted, voided, or a transfer made), so a caller
//! cannot keep using a stale copy by accident. The code itself is never an effect: the message
//! carries a [`SecretRef::OobCode`] and the code is recomputed when the message is delivered.

use crate::effects::{Blame, Effects, Fault, Outgoing, SecretRef};
use serde::{Deserialize, Serialize};
use tally_kernel::crypto::canonical::canonical_json;
use tally_kernel::crypto::otp::{code_hmac_sha256, codes_match};
use tally_kernel::{Amount, Id, Secret, Timestamp};
use tally_ledger::Command;

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

impl Blame for OobError {
    fn fault(&self) -> Fault {
        match self {
            OobError::ApiMisuse(_) => Fault::Node,
            OobError::WrongCode { .. } | OobError::TooManyAttempts => Fault::Peer,
            OobError::Expired { .. } | OobError::SessionClosed | OobError::TransactionMismatch => {
                Fault::Caller
            }
        }
    }
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
    /// Refuses a policy no session may run under (checked when a node starts, and again by
    /// every session).
    pub fn check(&self) -> Result<(), OobError> {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Cancelled by the user or the application.
    Closed,
    /// The code's time ran out before the right code came back (the hold is released).
    Expired,
    /// Too many wrong codes.
    Locked,
    /// Waiting for the code.
    Open,
    /// The right code arrived; whatever it authorised may run (once).
    Verified,
}

impl State {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Expired => "expired",
            State::Locked => "locked",
            State::Open => "open",
            State::Verified => "verified",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "closed" => State::Closed,
            "expired" => State::Expired,
            "locked" => State::Locked,
            "open" => State::Open,
            "verified" => State::Verified,
            _ => return None,
        })
    }
}

/// The money a session moves, decided when it opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Money {
    /// A hold placed when the session opens (the seed's bank authorisation), posted when the
    /// code verifies and released when the session locks, is cancelled or times out.
    Hold {
        /// The payer's account.
        debit_account: Id,
        /// The payee's account.
        credit_account: Id,
        /// How much.
        amount: Amount,
        /// The transfers' memo.
        memo: String,
        /// Seconds the hold lives (beyond the code's lifetime, so the session decides first).
        timeout_s: i64,
        /// The hold, while it is pending: set by the caller from what the opening step
        /// committed ([`Session::with_pending_hold`]); never stored with the session.
        #[serde(skip)]
        pending: Option<Id>,
    },
    /// A transfer made when the code verifies.
    Transfer {
        /// The payer's account.
        debit_account: Id,
        /// The payee's account.
        credit_account: Id,
        /// How much.
        amount: Amount,
        /// The transfer's memo.
        memo: String,
    },
}

/// What a session step gets.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A code typed back on channel A, with the transaction the confirming client shows.
    Code {
        /// What the user typed.
        submitted: &'a str,
        /// The transaction the confirming client displays, if it shows one.
        confirm: Option<&'a Transaction>,
    },
    /// The user or the application gives up.
    Cancel,
    /// [`Session::poll_timeout`] has passed.
    Timeout,
}

/// Where and how a new session's code goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The user.
    pub user: String,
    /// What the session is for.
    pub purpose: Purpose,
    /// Code length, lifetime and attempts.
    pub policy: Policy,
    /// 16 bytes from a CSPRNG.
    pub number: [u8; 16],
    /// The money it moves, if any.
    pub money: Option<Money>,
    /// Channel B's kind (`email`, `sms`, `webhook`, `dev`).
    pub channel: String,
    /// Channel B's address.
    pub address: String,
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
    /// The money it moves, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub money: Option<Money>,
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
            money: None,
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
            State::Expired => Err(OobError::Expired {
                expires_at: self.expires_at,
            }),
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

    /// Opens a session as a step: the new session, with the code message to channel B (the
    /// code by reference, put in at delivery) and, for a payment, the hold as its ledger
    /// command. Nothing else in the node needs the code now.
    pub fn start(
        opening: Opening,
        now: Timestamp,
        key: &[u8],
    ) -> Result<(Session, Effects), OobError> {
        let Opening {
            user,
            purpose,
            policy,
            number,
            money,
            channel,
            address,
        } = opening;
        let (mut session, _notice) = Session::open(&user, purpose, policy, number, now, key)?;
        if let Some(Money::Transfer { amount, .. } | Money::Hold { amount, .. }) = &money
            && amount.minor <= 0
        {
            return Err(OobError::ApiMisuse("a session moves a positive amount"));
        }
        session.money = money;
        let hex_number = session.number_hex();
        let secret = SecretRef::OobCode {
            session: hex_number.clone(),
        };
        let message = Outgoing {
            dedup_key: format!(":oob:{hex_number}:code"),
            subject: match &session.purpose {
                Purpose::Login => "Your Tally sign-in code".into(),
                Purpose::Message(_) => "Confirm with your Tally code".into(),
                Purpose::Transaction(t) => format!("Confirm {} to {}", t.amount, t.payee),
            },
            body: session.notice_text(secret.placeholder()),
            // The session number is channel A's capability: only the dev inbox (a test
            // harness's channel B) names it, so scripts can match a code to its session.
            data: if channel == "dev" {
                serde_json::json!({ "session": hex_number, "expires_at": session.expires_at })
            } else {
                serde_json::json!({ "expires_at": session.expires_at })
            },
            secret: Some(secret),
            channel: channel.clone(),
            address,
        };
        let ledger = match &session.money {
            Some(Money::Hold {
                debit_account,
                credit_account,
                amount,
                memo,
                timeout_s,
                ..
            }) => Command::Transfer {
                debit_account: *debit_account,
                credit_account: *credit_account,
                amount_minor: amount.minor,
                currency: amount.currency,
                timeout_s: Some(*timeout_s),
                memo: memo.clone(),
            },
            Some(Money::Transfer { .. }) | None => Command::Record {
                kind: "oob_session_opened".into(),
                data: serde_json::json!({
                    "session": hex_number, "user": user, "channel": channel,
                }),
            },
        };
        Ok((session, Effects::ledger(ledger).send(message)))
    }

    /// The same session knowing its payment hold: `pending` is the hold the opening step
    /// placed, while it is still pending (`None` once it expired or was resolved).
    pub fn with_pending_hold(mut self, pending: Option<Id>) -> Session {
        if let Some(Money::Hold { pending: p, .. }) = &mut self.money {
            *p = pending;
        }
        self
    }

    /// When this session next needs a step without any input: its code's expiry while open.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        (self.state == State::Open).then_some(self.expires_at)
    }

    /// Wrong codes the user may still type.
    pub fn attempts_left(&self) -> u32 {
        self.policy.attempts_max.saturating_sub(self.attempts)
    }

    /// What a code step that committed answers the user: `Ok` once verified, else why not.
    pub fn verdict(&self) -> Result<(), OobError> {
        match self.state {
            State::Verified => Ok(()),
            State::Locked => Err(OobError::TooManyAttempts),
            State::Open => Err(OobError::WrongCode {
                attempts_left: self.attempts_left(),
            }),
            State::Expired => Err(OobError::Expired {
                expires_at: self.expires_at,
            }),
            State::Closed => Err(OobError::SessionClosed),
        }
    }

    /// One step at `now`. A refusal that changes nothing is an error (an expired code, a
    /// closed session, a mismatched confirmation); a wrong code is a step (it is counted, and
    /// the last one locks the session and releases its hold) whose [`Session::verdict`] tells
    /// the user. The right code verifies the session and moves its money.
    pub fn handle(
        self,
        now: Timestamp,
        input: Input<'_>,
        key: &[u8],
    ) -> Result<(Session, Effects), OobError> {
        let hex_number = self.number_hex();
        match input {
            Input::Code { submitted, confirm } => {
                let before = (self.state, self.attempts);
                let (next, verdict) = self.verify(now, submitted, confirm, key);
                if (next.state, next.attempts) == before {
                    return Err(verdict.err().unwrap_or(OobError::SessionClosed));
                }
                let effects = match next.state {
                    State::Verified => next.on_verified()?,
                    State::Locked => next.released("oob_session_locked")?,
                    _ => Effects::record(
                        "oob_code_refused",
                        serde_json::json!({ "session": hex_number, "attempts": next.attempts }),
                    ),
                };
                Ok((next, effects))
            }
            Input::Cancel => {
                if self.state != State::Open {
                    return Err(OobError::SessionClosed);
                }
                let next = self.close();
                let effects = next.released("oob_session_closed")?;
                Ok((next, effects))
            }
            Input::Timeout => {
                if self.state != State::Open || now < self.expires_at {
                    return Err(OobError::ApiMisuse("no timeout is due"));
                }
                let mut next = self;
                next.state = State::Expired;
                let effects = next.released("oob_session_expired")?;
                Ok((next, effects))
            }
        }
    }

    /// The effects of the right code: the hold posted, the transfer made, or a record.
    fn on_verified(&self) -> Result<Effects, OobError> {
        Ok(match &self.money {
            Some(Money::Hold { pending, .. }) => Effects::ledger(Command::Post {
                pending_id: pending.ok_or(OobError::ApiMisuse(
                    "a payment session verified without its pending hold",
                ))?,
                amount_minor: None,
            }),
            Some(Money::Transfer {
                debit_account,
                credit_account,
                amount,
                memo,
            }) => Effects::ledger(Command::Transfer {
                debit_account: *debit_account,
                credit_account: *credit_account,
                amount_minor: amount.minor,
                currency: amount.currency,
                timeout_s: None,
                memo: memo.clone(),
            }),
            None => Effects::record(
                "oob_session_verified",
                serde_json::json!({ "session": self.number_hex(), "user": self.user }),
            ),
        })
    }

    /// The effects of a session ending unverified: its pending hold voided, or a record.
    fn released(&self, kind: &str) -> Result<Effects, OobError> {
        Ok(match &self.money {
            Some(Money::Hold {
                pending: Some(hold),
                ..
            }) => Effects::ledger(Command::Void { pending_id: *hold }),
            _ => Effects::record(kind, serde_json::json!({ "session": self.number_hex() })),
        })
    }
}

#[cfg(test)]
mod tests;
