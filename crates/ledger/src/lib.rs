//! Double-entry rules, with no I/O: what a ledger command does to accounts, decided in memory.
//!
//! The model follows TigerBeetle: an [`Account`] carries four monotone counters
//! (`debits_pending`, `debits_posted`, `credits_pending`, `credits_posted`) and flags that bound
//! them; a [`Transfer`] moves an amount from a debit account to a credit account of the same
//! currency, either at once ([`TransferKind::Single`]) or in two phases: a
//! [`TransferKind::Pending`] hold reserves the amount, and later exactly one of
//! [`TransferKind::PostPending`] (in full or in part), [`TransferKind::VoidPending`] or
//! [`TransferKind::ExpirePending`] resolves it. Currency exchange is two linked transfers through
//! the operator's liquidity accounts, applied all-or-nothing, with the rate recorded on both.
//!
//! [`Book`] is the working set a caller loads (the accounts and pending transfers a batch
//! touches) and [`Book::apply`] is the only function that changes it: either the whole command
//! applies and the resulting [`Event`] is returned, or an error is returned and the book is
//! exactly as before. The store writes the event to the hash-chained [`journal`] and the new
//! rows in one database transaction; [`audit`] replays a journal and recomputes every balance.
//!
//! Decision: postings are not stored as separate rows. Each transfer is one debit and one credit
//! of the same amount, so "every transfer's postings sum to zero" holds by construction and is
//! asserted again by [`audit`], which checks per currency that debits equal credits.

pub mod audit;
pub mod batch;
pub mod body;
pub mod journal;

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tally_kernel::{Amount, Currency, Id, Rate, Timestamp};

/// Longest idempotency key we accept, in bytes.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 200;
/// Longest memo we accept, in bytes.
pub const MEMO_LEN_MAX: usize = 512;
/// Longest owner name we accept, in bytes.
pub const OWNER_LEN_MAX: usize = 200;
/// Longest hold we accept: 366 days.
pub const TIMEOUT_S_MAX: i64 = 366 * 24 * 3600;

/// Why a command was refused. The variants name the caller's mistake; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum LedgerError {
    /// No account with this id.
    #[error("account {id} not found")]
    AccountNotFound {
        /// The id asked for.
        id: Id,
    },
    /// An account with this id already exists.
    #[error("account {id} already exists")]
    AccountExists {
        /// The id given.
        id: Id,
    },
    /// The amount is zero or negative.
    #[error("amount must be a positive number of minor units, got {amount_minor}")]
    AmountNotPositive {
        /// The amount given.
        amount_minor: i64,
    },
    /// The transfer's currency differs from an account's.
    #[error(
        "currency mismatch: account {account} holds {account_currency}, transfer is in {currency}"
    )]
    CurrencyMismatch {
        /// The account.
        account: Id,
        /// Its currency.
        account_currency: Currency,
        /// The currency of the transfer.
        currency: Currency,
    },
    /// Debits would exceed credits plus the account's limit.
    #[error(
        "insufficient funds on {account}: needs {}, available {}",
        Amount::new(*needed_minor, *currency),
        Amount::new(*available_minor, *currency)
    )]
    ExceedsCredits {
        /// The account that would go beyond its limit.
        account: Id,
        /// The account's currency.
        currency: Currency,
        /// The amount asked for.
        needed_minor: i64,
        /// What the account can still be debited.
        available_minor: i64,
    },
    /// Credits would exceed debits plus the account's limit.
    #[error(
        "account {account} cannot be credited {}: only {} allowed",
        Amount::new(*needed_minor, *currency),
        Amount::new(*available_minor, *currency)
    )]
    ExceedsDebits {
        /// The account that would go beyond its limit.
        account: Id,
        /// The account's currency.
        currency: Currency,
        /// The amount asked for.
        needed_minor: i64,
        /// What the account can still be credited.
        available_minor: i64,
    },
    /// A field is out of range or malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The idempotency key is empty, too long or not printable.
    #[error("invalid idempotency key: {0}")]
    IdempotencyKeyInvalid(&'static str),
    /// The idempotency key was used before for a different request.
    #[error("idempotency key was already used for a different request")]
    IdempotencyConflict,
    /// A counter would overflow.
    #[error("amount overflow on account {account}")]
    Overflow {
        /// The account whose counter would overflow.
        account: Id,
    },
    /// Post or void of a transfer that is not pending any more.
    #[error("transfer {id} is {state}, not pending")]
    PendingNotPending {
        /// The pending transfer.
        id: Id,
        /// What it is now.
        state: TransferState,
    },
    /// Post or void of a pending transfer whose timeout has passed.
    #[error("pending transfer {id} expired at {expires_at}")]
    PendingExpired {
        /// The pending transfer.
        id: Id,
        /// When it expired.
        expires_at: Timestamp,
    },
    /// No pending transfer with this id.
    #[error("pending transfer {id} not found")]
    PendingNotFound {
        /// The id asked for.
        id: Id,
    },
    /// A post for more than the pending amount.
    #[error(
        "cannot post {}: the hold is {}",
        Amount::new(*requested_minor, *currency),
        Amount::new(*pending_minor, *currency)
    )]
    PostExceedsPending {
        /// The hold's currency.
        currency: Currency,
        /// Amount asked for.
        requested_minor: i64,
        /// Amount held.
        pending_minor: i64,
    },
    /// Debit and credit account are the same.
    #[error("debit and credit account must differ")]
    SameAccount,
    /// The account was closed by a closing transfer: only a void (or expiry) of a hold on it
    /// is allowed until the closing transfer is voided.
    #[error("account {account} is closed")]
    AccountClosed {
        /// The closed account.
        account: Id,
    },
    /// A new limit below what the account already uses under it.
    #[error(
        "account {account} already uses {} of its limit: the limit cannot be lower",
        Amount::new(*used_minor, *currency)
    )]
    LimitBelowUse {
        /// The account.
        account: Id,
        /// Its currency.
        currency: Currency,
        /// The least limit it can have now.
        used_minor: i64,
    },
}

/// What an account stands for. Variants are alphabetical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A customer's money held by the operator.
    Customer,
    /// Fees the operator earns.
    Fee,
    /// The operator's position in one currency, through which exchanges pass.
    Liquidity,
    /// A merchant's money held by the operator.
    Merchant,
    /// Any other account of the operator.
    Operator,
    /// The outside world: money entering or leaving the ledger (bank, cash, card network).
    Settlement,
}

impl AccountKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Customer => "customer",
            AccountKind::Fee => "fee",
            AccountKind::Liquidity => "liquidity",
            AccountKind::Merchant => "merchant",
            AccountKind::Operator => "operator",
            AccountKind::Settlement => "settlement",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<AccountKind> {
        Some(match s {
            "customer" => AccountKind::Customer,
            "fee" => AccountKind::Fee,
            "liquidity" => AccountKind::Liquidity,
            "merchant" => AccountKind::Merchant,
            "operator" => AccountKind::Operator,
            "settlement" => AccountKind::Settlement,
            _ => return None,
        })
    }
}

/// Bounds on an account's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountFlags {
    /// `debits_pending + debits_posted <= credits_posted + limit_minor` at all times: the
    /// account cannot be overdrawn beyond its limit.
    pub debits_must_not_exceed_credits: bool,
    /// `credits_pending + credits_posted <= debits_posted + limit_minor` at all times.
    pub credits_must_not_exceed_debits: bool,
    /// Keep the account's balance after each transfer (for history queries).
    #[serde(default, skip_serializing_if = "is_false")]
    pub history: bool,
    /// Closed by a closing pending transfer: refuses every new transfer; posting or voiding
    /// a pending one still works, and voiding the closing transfer reopens the account.
    #[serde(default, skip_serializing_if = "is_false")]
    pub closed: bool,
}

impl AccountFlags {
    /// As a bit set, for storage.
    pub fn bits(self) -> i64 {
        i64::from(self.debits_must_not_exceed_credits)
            | (i64::from(self.credits_must_not_exceed_debits) << 1)
            | (i64::from(self.history) << 2)
            | (i64::from(self.closed) << 3)
    }

    /// From the stored bit set.
    pub fn from_bits(bits: i64) -> AccountFlags {
        AccountFlags {
            debits_must_not_exceed_credits: bits & 1 != 0,
            credits_must_not_exceed_debits: bits & 2 != 0,
            history: bits & 4 != 0,
            closed: bits & 8 != 0,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// What a transfer was created as, beyond its kind: TigerBeetle's transfer flags that are not
/// already [`TransferKind`]. All false for transfers made by single commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferFlags {
    /// In a batch: succeeds only together with the next event (see [`batch`]).
    #[serde(skip_serializing_if = "is_false")]
    pub linked: bool,
    /// The amount is at most what the debit account holds (clamped, never refused for it).
    #[serde(skip_serializing_if = "is_false")]
    pub balancing_debit: bool,
    /// The amount is at most what the credit account may still be credited.
    #[serde(skip_serializing_if = "is_false")]
    pub balancing_credit: bool,
    /// A pending transfer that closes its debit account (voiding it reopens the account).
    #[serde(skip_serializing_if = "is_false")]
    pub closing_debit: bool,
    /// A pending transfer that closes its credit account (voiding it reopens the account).
    #[serde(skip_serializing_if = "is_false")]
    pub closing_credit: bool,
    /// Loaded history: carries its own past timestamp.
    #[serde(skip_serializing_if = "is_false")]
    pub imported: bool,
}

impl TransferFlags {
    /// As a bit set, for storage (TigerBeetle's bit positions are not kept: kinds are ours).
    pub fn bits(self) -> i64 {
        i64::from(self.linked)
            | (i64::from(self.balancing_debit) << 1)
            | (i64::from(self.balancing_credit) << 2)
            | (i64::from(self.closing_debit) << 3)
            | (i64::from(self.closing_credit) << 4)
            | (i64::from(self.imported) << 5)
    }

    /// From the stored bit set.
    pub fn from_bits(bits: i64) -> TransferFlags {
        TransferFlags {
            linked: bits & 1 != 0,
            balancing_debit: bits & 2 != 0,
            balancing_credit: bits & 4 != 0,
            closing_debit: bits & 8 != 0,
            closing_credit: bits & 16 != 0,
            imported: bits & 32 != 0,
        }
    }

    /// True when no flag is set.
    pub fn is_empty(&self) -> bool {
        *self == TransferFlags::default()
    }
}

/// A 128-bit reference written as decimal digits (nothing else: no sign, no spaces, no
/// exponent), or `None` when it is not one or is 2^128 or more.
pub fn decimal_u128(text: &str) -> Option<u128> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse::<u128>().ok()).flatten()
}

/// A 128-bit number written as a decimal string in JSON (JavaScript numbers hold 53 bits).
mod u128_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::decimal_u128(&text)
            .ok_or_else(|| D::Error::custom("expected a decimal string below 2^128"))
    }
}

/// An account and its four counters, all in minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Identifier.
    pub id: Id,
    /// Who the account belongs to (a customer, merchant or the operator), as the caller names it.
    pub owner: String,
    /// Currency of every amount on this account.
    pub currency: Currency,
    /// What the account stands for.
    pub kind: AccountKind,
    /// Bounds on the counters.
    pub flags: AccountFlags,
    /// Overdraft allowed beyond the flag's bound (a credit limit), >= 0.
    pub limit_minor: i64,
    /// Sum of holds against this account not yet resolved.
    pub debits_pending: i64,
    /// Sum of posted debits.
    pub debits_posted: i64,
    /// Sum of holds in favour of this account not yet resolved.
    pub credits_pending: i64,
    /// Sum of posted credits.
    pub credits_posted: i64,
    /// When it was opened.
    pub created_at: Timestamp,
    /// The client's own reference, 128 bits (0 = none).
    #[serde(default, skip_serializing_if = "is_zero", with = "u128_text")]
    pub user_data_128: u128,
    /// The client's own reference, 64 bits (0 = none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub user_data_64: u64,
    /// The client's own reference, 32 bits (0 = none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub user_data_32: u32,
    /// The client's reason code (0 = none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: u16,
}

/// The client's references and code on an account or a transfer (all zero = none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct References {
    /// 128 bits.
    #[serde(default, skip_serializing_if = "is_zero", with = "u128_text")]
    pub user_data_128: u128,
    /// 64 bits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub user_data_64: u64,
    /// 32 bits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub user_data_32: u32,
    /// A reason code.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: u16,
}

impl References {
    /// True when all are zero.
    pub fn is_empty(&self) -> bool {
        *self == References::default()
    }
}

impl Account {
    /// `credits_posted - debits_posted`: what the operator owes the owner (for a customer).
    pub fn balance_minor(&self) -> i64 {
        self.credits_posted.saturating_sub(self.debits_posted)
    }

    /// What may still be debited (held or posted) under `debits_must_not_exceed_credits`, or
    /// `None` when debits are unbounded.
    pub fn available_minor(&self) -> Option<i64> {
        if !self.flags.debits_must_not_exceed_credits {
            return None;
        }
        let cap = i128::from(self.credits_posted) + i128::from(self.limit_minor);
        let used = i128::from(self.debits_posted) + i128::from(self.debits_pending);
        Some(i64::try_from(cap - used).unwrap_or(i64::MAX))
    }

    fn debit_room(&self, amount: i64) -> Result<(), LedgerError> {
        if !self.flags.debits_must_not_exceed_credits {
            return Ok(());
        }
        let cap = i128::from(self.credits_posted) + i128::from(self.limit_minor);
        let used = i128::from(self.debits_posted) + i128::from(self.debits_pending);
        if used + i128::from(amount) > cap {
            return Err(LedgerError::ExceedsCredits {
                account: self.id,
                currency: self.currency,
                needed_minor: amount,
                available_minor: i64::try_from((cap - used).max(0)).unwrap_or(i64::MAX),
            });
        }
        Ok(())
    }

    fn credit_room(&self, amount: i64) -> Result<(), LedgerError> {
        if !self.flags.credits_must_not_exceed_debits {
            return Ok(());
        }
        let cap = i128::from(self.debits_posted) + i128::from(self.limit_minor);
        let used = i128::from(self.credits_posted) + i128::from(self.credits_pending);
        if used + i128::from(amount) > cap {
            return Err(LedgerError::ExceedsDebits {
                account: self.id,
                currency: self.currency,
                needed_minor: amount,
                available_minor: i64::try_from((cap - used).max(0)).unwrap_or(i64::MAX),
            });
        }
        Ok(())
    }

    /// Checks the flag invariants; used after every change (pair assertion) and by the audit.
    pub fn within_limits(&self) -> bool {
        let nonneg = self.debits_pending >= 0
            && self.debits_posted >= 0
            && self.credits_pending >= 0
            && self.credits_posted >= 0;
        let dr = i128::from(self.debits_pending) + i128::from(self.debits_posted);
        let cr = i128::from(self.credits_pending) + i128::from(self.credits_posted);
        let d_ok = !self.flags.debits_must_not_exceed_credits
            || dr <= i128::from(self.credits_posted) + i128::from(self.limit_minor);
        let c_ok = !self.flags.credits_must_not_exceed_debits
            || cr <= i128::from(self.debits_posted) + i128::from(self.limit_minor);
        nonneg && d_ok && c_ok
    }
}

/// What a transfer row does. Variants are alphabetical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// Releases a pending transfer whose timeout passed.
    ExpirePending,
    /// Reserves an amount (a hold, a deposit) until posted, voided or expired.
    Pending,
    /// Posts all or part of a pending transfer and releases the rest.
    PostPending,
    /// Moves the amount at once.
    Single,
    /// Releases a pending transfer on request.
    VoidPending,
}

impl TransferKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::ExpirePending => "expire_pending",
            TransferKind::Pending => "pending",
            TransferKind::PostPending => "post_pending",
            TransferKind::Single => "single",
            TransferKind::VoidPending => "void_pending",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<TransferKind> {
        Some(match s {
            "expire_pending" => TransferKind::ExpirePending,
            "pending" => TransferKind::Pending,
            "post_pending" => TransferKind::PostPending,
            "single" => TransferKind::Single,
            "void_pending" => TransferKind::VoidPending,
            _ => return None,
        })
    }
}

/// Where a transfer stands. Only `Pending` transfers ever change state, and only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// A pending transfer that timed out.
    Expired,
    /// A hold not yet resolved.
    Pending,
    /// Final: the amount moved (single transfers, posts, and pending transfers once posted).
    Posted,
    /// A pending transfer released on request (also the void row itself).
    Voided,
}

impl TransferState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Expired => "expired",
            TransferState::Pending => "pending",
            TransferState::Posted => "posted",
            TransferState::Voided => "voided",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<TransferState> {
        Some(match s {
            "expired" => TransferState::Expired,
            "pending" => TransferState::Pending,
            "posted" => TransferState::Posted,
            "voided" => TransferState::Voided,
            _ => return None,
        })
    }
}

impl std::fmt::Display for TransferState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One movement of money from `debit_account` to `credit_account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Identifier.
    pub id: Id,
    /// What the transfer does.
    pub kind: TransferKind,
    /// Where it stands (see [`TransferState`]).
    pub state: TransferState,
    /// Account debited.
    pub debit_account: Id,
    /// Account credited.
    pub credit_account: Id,
    /// Amount moved or held, in minor units (> 0). For a post: the amount posted. For a void or
    /// expiry: the amount released.
    pub amount_minor: i64,
    /// Currency of the amount.
    pub currency: Currency,
    /// For post/void/expire: the pending transfer it resolves.
    pub pending_id: Option<Id>,
    /// For post/void/expire: the amount that was held (so replay needs no lookup).
    pub pending_amount_minor: Option<i64>,
    /// For pending transfers: when they expire.
    pub expires_at: Option<Timestamp>,
    /// For exchanges: the id shared by both legs.
    pub link_id: Option<Id>,
    /// For exchanges: the rate applied.
    pub rate: Option<Rate>,
    /// Free text for the people involved.
    pub memo: String,
    /// When it was recorded.
    pub created_at: Timestamp,
    /// How it was created, beyond its kind (batch events only).
    #[serde(default, skip_serializing_if = "TransferFlags::is_empty")]
    pub flags: TransferFlags,
    /// The client's own reference, 128 bits (0 = none).
    #[serde(default, skip_serializing_if = "is_zero", with = "u128_text")]
    pub user_data_128: u128,
    /// The client's own reference, 64 bits (0 = none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub user_data_64: u64,
    /// The client's own reference, 32 bits (0 = none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub user_data_32: u32,
    /// The client's reason code (0 = none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: u16,
}

impl Transfer {
    /// For a pending transfer: its timeout in whole seconds (0 = none), as it was asked for.
    pub fn timeout_s(&self) -> i64 {
        match self.expires_at {
            Some(at) if self.kind == TransferKind::Pending => {
                (at.as_micros() - self.created_at.as_micros()) / 1_000_000
            }
            _ => 0,
        }
    }
}

/// A request to change the ledger. Each carries its own idempotency key (in [`Request`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Exchange `amount_minor` from `debit_account` (currency A) into `credit_account`
    /// (currency B) through the liquidity accounts of A and B: two linked transfers.
    Exchange {
        /// Source account, currency A.
        debit_account: Id,
        /// Operator's liquidity account in A (credited).
        liquidity_from: Id,
        /// Operator's liquidity account in B (debited).
        liquidity_to: Id,
        /// Target account, currency B.
        credit_account: Id,
        /// Amount in A's minor units.
        amount_minor: i64,
        /// B minor units per A minor unit.
        rate: Rate,
        /// Free text.
        memo: String,
    },
    /// Opens an account with zero counters.
    OpenAccount {
        /// Who it belongs to.
        owner: String,
        /// Its currency.
        currency: Currency,
        /// What it stands for.
        kind: AccountKind,
        /// Its bounds.
        flags: AccountFlags,
        /// Overdraft allowed beyond the bound.
        limit_minor: i64,
        /// For loading history: when the account was opened, in the past (absent: now).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        imported_at: Option<Timestamp>,
        /// The client's references and code for the account.
        #[serde(default, skip_serializing_if = "References::is_empty")]
        references: References,
    },
    /// Resolves a pending transfer by posting `amount_minor` (default: all of it).
    Post {
        /// The pending transfer.
        pending_id: Id,
        /// How much to post; the rest is released.
        amount_minor: Option<i64>,
    },
    /// Moves money, at once or (with `timeout_s`) as a pending hold.
    Transfer {
        /// Account debited.
        debit_account: Id,
        /// Account credited.
        credit_account: Id,
        /// Amount in minor units.
        amount_minor: i64,
        /// Must equal both accounts' currency.
        currency: Currency,
        /// With a value: a pending transfer that expires after this many seconds.
        timeout_s: Option<i64>,
        /// Free text.
        memo: String,
    },
    /// Releases a pending transfer.
    Void {
        /// The pending transfer.
        pending_id: Id,
    },
    /// Releases a pending transfer whose timeout passed (issued by the node's sweeper).
    Expire {
        /// The pending transfer.
        pending_id: Id,
    },
    /// Sets an account's limit (the overdraft or credit line beyond its flag's bound): never
    /// below what the account already uses under it.
    SetLimit {
        /// The account.
        account: Id,
        /// The new limit, >= 0.
        limit_minor: i64,
    },
    /// Journals a state change that moves no money (an API key made or revoked, later the
    /// protocols' own steps), so the journal holds every state change in one order.
    Record {
        /// What happened, `snake_case`, e.g. `api_key_created`; becomes the entry's kind.
        kind: String,
        /// Its details (never secrets).
        data: serde_json::Value,
    },
}

/// Largest `data` of a [`Command::Record`], in bytes of JSON.
pub const RECORD_DATA_LEN_MAX: usize = 16 * 1024;

impl Command {
    /// Accounts the command touches directly (not counting those reached through a pending id).
    pub fn account_ids(&self) -> Vec<Id> {
        match self {
            Command::Exchange {
                debit_account,
                liquidity_from,
                liquidity_to,
                credit_account,
                ..
            } => {
                vec![
                    *debit_account,
                    *liquidity_from,
                    *liquidity_to,
                    *credit_account,
                ]
            }
            Command::Transfer {
                debit_account,
                credit_account,
                ..
            } => {
                vec![*debit_account, *credit_account]
            }
            Command::SetLimit { account, .. } => vec![*account],
            Command::OpenAccount { .. }
            | Command::Post { .. }
            | Command::Void { .. }
            | Command::Expire { .. }
            | Command::Record { .. } => vec![],
        }
    }

    /// The pending transfer the command resolves, if any.
    pub fn pending_id(&self) -> Option<Id> {
        match self {
            Command::Post { pending_id, .. }
            | Command::Void { pending_id }
            | Command::Expire { pending_id } => Some(*pending_id),
            _ => None,
        }
    }

    /// SHA-256 over the command's JSON: the same key with a different fingerprint is refused.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest;
        // Serialising a plain data enum cannot fail; an empty vec still hashes deterministically.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        sha2::Sha256::digest(&bytes).into()
    }
}

/// A command with its idempotency key, as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Client-chosen key; a retry with the same key returns the first result.
    pub idempotency_key: String,
    /// What to do.
    pub command: Command,
}

impl Request {
    /// Checks sizes and ranges that do not need the book.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let invalid = |field: &str, reason: &str| LedgerError::Invalid {
            field: field.to_string(),
            reason: reason.to_string(),
        };
        if self.idempotency_key.is_empty()
            || self.idempotency_key.len() > IDEMPOTENCY_KEY_LEN_MAX
            || !printable(&self.idempotency_key)
        {
            return Err(LedgerError::IdempotencyKeyInvalid("must be 1 to 200 bytes"));
        }
        match &self.command {
            Command::OpenAccount {
                owner, limit_minor, ..
            } => {
                if owner.is_empty() || owner.len() > OWNER_LEN_MAX || !printable(owner) {
                    return Err(invalid("owner", "must be 1 to 200 bytes"));
                }
                if *limit_minor < 0 {
                    return Err(invalid("limit_minor", "must not be negative"));
                }
            }
            Command::Transfer {
                debit_account,
                credit_account,
                amount_minor,
                timeout_s,
                memo,
                ..
            } => {
                positive(*amount_minor)?;
                if debit_account == credit_account {
                    return Err(LedgerError::SameAccount);
                }
                if let Some(t) = timeout_s
                    && !(1..=TIMEOUT_S_MAX).contains(t)
                {
                    return Err(invalid("timeout_s", "must be 1 s to 366 days"));
                }
                memo_ok(memo)?;
            }
            Command::Exchange {
                debit_account,
                credit_account,
                amount_minor,
                memo,
                ..
            } => {
                positive(*amount_minor)?;
                if debit_account == credit_account {
                    return Err(LedgerError::SameAccount);
                }
                memo_ok(memo)?;
            }
            Command::Post {
                amount_minor: Some(a),
                ..
            } => positive(*a)?,
            Command::SetLimit { limit_minor, .. } => {
                if *limit_minor < 0 {
                    return Err(invalid("limit_minor", "must not be negative"));
                }
            }
            Command::Record { kind, data } => {
                let word = !kind.is_empty()
                    && kind.len() <= 64
                    && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                if !word || ["account_opened", "transfers", "limit_set"].contains(&kind.as_str()) {
                    return Err(invalid("kind", "1 to 64 of a-z and _, not a ledger kind"));
                }
                if data.to_string().len() > RECORD_DATA_LEN_MAX {
                    return Err(invalid("data", "at most 16 KiB of JSON"));
                }
            }
            Command::Post { .. } | Command::Void { .. } | Command::Expire { .. } => {}
        }
        Ok(())
    }
}

fn positive(amount_minor: i64) -> Result<(), LedgerError> {
    if amount_minor <= 0 {
        return Err(LedgerError::AmountNotPositive { amount_minor });
    }
    Ok(())
}

fn memo_ok(memo: &str) -> Result<(), LedgerError> {
    // No control characters: a NUL, for one, is refused by PostgreSQL's TEXT and would fail
    // the whole write batch it travels in.
    if memo.len() > MEMO_LEN_MAX || !tally_kernel::text::plain(memo, false) {
        return Err(LedgerError::Invalid {
            field: "memo".to_string(),
            reason: "at most 512 bytes, no control or bidirectional formatting characters"
                .to_string(),
        });
    }
    Ok(())
}

/// True when `s` has no control characters (see [`memo_ok`]).
fn printable(s: &str) -> bool {
    tally_kernel::text::plain(s, false)
}

/// What a command did: the body of one journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An account was opened (counters zero).
    AccountOpened {
        /// The new account.
        account: Account,
    },
    /// A state change that moves no money (see [`Command::Record`]).
    Recorded {
        /// What happened.
        kind: String,
        /// Its details.
        data: serde_json::Value,
    },
    /// An account's limit changed.
    LimitSet {
        /// The account.
        account: Id,
        /// The limit before.
        previous_minor: i64,
        /// The limit now.
        limit_minor: i64,
    },
    /// Transfers were recorded (one, or two linked legs of an exchange).
    Transfers {
        /// The new transfer rows, in order.
        transfers: Vec<Transfer>,
    },
}

impl Event {
    /// The journal entry kind of this event.
    pub fn kind(&self) -> &str {
        match self {
            Event::AccountOpened { .. } => "account_opened",
            Event::LimitSet { .. } => "limit_set",
            Event::Recorded { kind, .. } => kind,
            Event::Transfers { .. } => "transfers",
        }
    }
}

/// The accounts and pending transfers a batch of commands touches, held in memory.
///
/// The store loads them inside its write transaction, the commands are applied here, and the
/// store writes back what [`Book::apply`] changed.
#[derive(Debug, Default, Clone)]
pub struct Book {
    /// Accounts by id.
    pub accounts: HashMap<Id, Account>,
    /// Transfers that may be resolved by a command in the batch, by id.
    pub pending: HashMap<Id, Transfer>,
    /// Transfers whose id a batch event reuses, by id, and those a batch created
    /// (see [`Book::apply_batch`]).
    pub transfers: HashMap<Id, Transfer>,
    /// The balances after each transfer of accounts opened with `history`, in the order the
    /// transfers applied; the caller drains them into its history rows.
    pub balances: Vec<AccountBalance>,
}

/// An account's counters just after one transfer (kept for accounts opened with `history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBalance {
    /// The account.
    pub account: Id,
    /// The transfer that moved it.
    pub transfer: Id,
    /// The transfer's time.
    pub at: Timestamp,
    /// Counters after the transfer.
    pub debits_pending: i64,
    /// Counters after the transfer.
    pub debits_posted: i64,
    /// Counters after the transfer.
    pub credits_pending: i64,
    /// Counters after the transfer.
    pub credits_posted: i64,
}

impl AccountBalance {
    /// The counters of `account` as `t` left them.
    pub fn after(account: &Account, t: &Transfer) -> AccountBalance {
        AccountBalance {
            account: account.id,
            transfer: t.id,
            at: t.created_at,
            debits_pending: account.debits_pending,
            debits_posted: account.debits_posted,
            credits_pending: account.credits_pending,
            credits_posted: account.credits_posted,
        }
    }
}

/// The history rows `t` adds: its accounts that keep history, as it left them.
pub(crate) fn history_of(accounts: &HashMap<Id, Account>, t: &Transfer) -> Vec<AccountBalance> {
    [t.debit_account, t.credit_account]
        .iter()
        .filter_map(|id| accounts.get(id))
        .filter(|a| a.flags.history)
        .map(|a| AccountBalance::after(a, t))
        .collect()
}

impl Book {
    /// Applies one command at `now`. On success the book reflects it and the event says what
    /// happened; on error the book is unchanged. `new_id` supplies fresh ids.
    pub fn apply(
        &mut self,
        command: &Command,
        now: Timestamp,
        new_id: &mut dyn FnMut() -> Id,
    ) -> Result<Event, LedgerError> {
        match command {
            Command::OpenAccount {
                owner,
                currency,
                kind,
                flags,
                limit_minor,
                imported_at,
                references,
            } => {
                if imported_at.is_some_and(|at| at >= now || at.as_micros() < 1) {
                    return Err(LedgerError::Invalid {
                        field: "imported_at".to_string(),
                        reason: "must be in the past".to_string(),
                    });
                }
                if flags.closed {
                    return Err(LedgerError::Invalid {
                        field: "flags".to_string(),
                        reason: "an account opens open; a closing transfer closes it".to_string(),
                    });
                }
                let account = Account {
                    id: new_id(),
                    owner: owner.clone(),
                    currency: *currency,
                    kind: *kind,
                    flags: *flags,
                    limit_minor: *limit_minor,
                    debits_pending: 0,
                    debits_posted: 0,
                    credits_pending: 0,
                    credits_posted: 0,
                    created_at: imported_at.unwrap_or(now),
                    user_data_128: references.user_data_128,
                    user_data_64: references.user_data_64,
                    user_data_32: references.user_data_32,
                    code: references.code,
                };
                if self.accounts.contains_key(&account.id) {
                    return Err(LedgerError::AccountExists { id: account.id });
                }
                self.accounts.insert(account.id, account.clone());
                Ok(Event::AccountOpened { account })
            }
            Command::Transfer {
                debit_account,
                credit_account,
                amount_minor,
                currency,
                timeout_s,
                memo,
            } => {
                let (kind, state, expires_at) = match timeout_s {
                    Some(t) => (
                        TransferKind::Pending,
                        TransferState::Pending,
                        Some(now.plus_seconds(*t)),
                    ),
                    None => (TransferKind::Single, TransferState::Posted, None),
                };
                let transfer = Transfer {
                    id: new_id(),
                    kind,
                    state,
                    debit_account: *debit_account,
                    credit_account: *credit_account,
                    amount_minor: *amount_minor,
                    currency: *currency,
                    pending_id: None,
                    pending_amount_minor: None,
                    expires_at,
                    link_id: None,
                    rate: None,
                    memo: memo.clone(),
                    created_at: now,
                    flags: TransferFlags::default(),
                    user_data_128: 0,
                    user_data_64: 0,
                    user_data_32: 0,
                    code: 0,
                };
                self.commit(vec![transfer])
            }
            Command::Exchange {
                debit_account,
                liquidity_from,
                liquidity_to,
                credit_account,
                amount_minor,
                rate,
                memo,
            } => {
                let from = self.account(*debit_account)?.currency;
                let to = self.account(*credit_account)?.currency;
                if from == to {
                    return Err(LedgerError::Invalid {
                        field: "credit_account".to_string(),
                        reason: format!(
                            "an exchange needs two currencies; both accounts hold {from}"
                        ),
                    });
                }
                let converted = rate
                    .convert(*amount_minor)
                    .map_err(|_| LedgerError::Overflow {
                        account: *credit_account,
                    })?;
                positive(converted)?;
                let link_id = new_id();
                let leg =
                    |id: Id, debit: Id, credit: Id, amount: i64, currency: Currency| Transfer {
                        id,
                        kind: TransferKind::Single,
                        state: TransferState::Posted,
                        debit_account: debit,
                        credit_account: credit,
                        amount_minor: amount,
                        currency,
                        pending_id: None,
                        pending_amount_minor: None,
                        expires_at: None,
                        link_id: Some(link_id),
                        rate: Some(*rate),
                        memo: memo.clone(),
                        created_at: now,
                        flags: TransferFlags::default(),
                        user_data_128: 0,
                        user_data_64: 0,
                        user_data_32: 0,
                        code: 0,
                    };
                let first = leg(
                    new_id(),
                    *debit_account,
                    *liquidity_from,
                    *amount_minor,
                    from,
                );
                let second = leg(new_id(), *liquidity_to, *credit_account, converted, to);
                self.commit(vec![first, second])
            }
            Command::Post {
                pending_id,
                amount_minor,
            } => {
                let pending = self.pending_open(*pending_id, now)?;
                let amount = amount_minor.unwrap_or(pending.amount_minor);
                if amount > pending.amount_minor {
                    return Err(LedgerError::PostExceedsPending {
                        currency: pending.currency,
                        requested_minor: amount,
                        pending_minor: pending.amount_minor,
                    });
                }
                self.resolve(&pending, TransferKind::PostPending, amount, new_id(), now)
            }
            Command::Void { pending_id } => {
                let pending = self.pending_open(*pending_id, now)?;
                let amount = pending.amount_minor;
                self.resolve(&pending, TransferKind::VoidPending, amount, new_id(), now)
            }
            Command::SetLimit {
                account,
                limit_minor,
            } => {
                let mut changed = self.account(*account)?.clone();
                let previous_minor = changed.limit_minor;
                changed.limit_minor = *limit_minor;
                if !changed.within_limits() {
                    // The least limit that keeps both bounds.
                    let dr = changed.debits_pending + changed.debits_posted;
                    let cr = changed.credits_pending + changed.credits_posted;
                    let mut used = 0_i64;
                    if changed.flags.debits_must_not_exceed_credits {
                        used = used.max(dr.saturating_sub(changed.credits_posted));
                    }
                    if changed.flags.credits_must_not_exceed_debits {
                        used = used.max(cr.saturating_sub(changed.debits_posted));
                    }
                    return Err(LedgerError::LimitBelowUse {
                        account: changed.id,
                        currency: changed.currency,
                        used_minor: used,
                    });
                }
                self.accounts.insert(changed.id, changed);
                Ok(Event::LimitSet {
                    account: *account,
                    previous_minor,
                    limit_minor: *limit_minor,
                })
            }
            Command::Record { kind, data } => Ok(Event::Recorded {
                kind: kind.clone(),
                data: data.clone(),
            }),
            Command::Expire { pending_id } => {
                let pending = self.pending_any(*pending_id)?;
                if pending.state != TransferState::Pending {
                    return Err(LedgerError::PendingNotPending {
                        id: pending.id,
                        state: pending.state,
                    });
                }
                let due = pending.expires_at.is_some_and(|t| t <= now);
                if !due {
                    return Err(LedgerError::Invalid {
                        field: "pending_id".to_string(),
                        reason: "transfer has not reached its timeout".to_string(),
                    });
                }
                let amount = pending.amount_minor;
                self.resolve(&pending, TransferKind::ExpirePending, amount, new_id(), now)
            }
        }
    }

    fn account(&self, id: Id) -> Result<&Account, LedgerError> {
        self.accounts
            .get(&id)
            .ok_or(LedgerError::AccountNotFound { id })
    }

    fn pending_any(&self, id: Id) -> Result<Transfer, LedgerError> {
        match self.pending.get(&id) {
            Some(t) if t.kind == TransferKind::Pending => Ok(t.clone()),
            _ => Err(LedgerError::PendingNotFound { id }),
        }
    }

    fn pending_open(&self, id: Id, now: Timestamp) -> Result<Transfer, LedgerError> {
        let pending = self.pending_any(id)?;
        if pending.state != TransferState::Pending {
            return Err(LedgerError::PendingNotPending {
                id,
                state: pending.state,
            });
        }
        if let Some(expires_at) = pending.expires_at
            && expires_at <= now
        {
            return Err(LedgerError::PendingExpired { id, expires_at });
        }
        Ok(pending)
    }

    fn resolve(
        &mut self,
        pending: &Transfer,
        kind: TransferKind,
        amount: i64,
        id: Id,
        now: Timestamp,
    ) -> Result<Event, LedgerError> {
        let state = match kind {
            TransferKind::PostPending => TransferState::Posted,
            TransferKind::VoidPending => TransferState::Voided,
            _ => TransferState::Expired,
        };
        let row = Transfer {
            id,
            kind,
            state,
            debit_account: pending.debit_account,
            credit_account: pending.credit_account,
            amount_minor: amount,
            currency: pending.currency,
            pending_id: Some(pending.id),
            pending_amount_minor: Some(pending.amount_minor),
            expires_at: None,
            link_id: None,
            rate: None,
            memo: String::new(),
            created_at: now,
            // A closing hold's flags travel with its resolution (see `effect`).
            flags: TransferFlags {
                closing_debit: pending.flags.closing_debit,
                closing_credit: pending.flags.closing_credit,
                ..TransferFlags::default()
            },
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            code: 0,
        };
        let event = self.commit(vec![row])?;
        if let Some(p) = self.pending.get_mut(&pending.id) {
            p.state = state;
        }
        Ok(event)
    }

    /// Applies the effect of `transfers` on copies of the accounts and writes the copies back
    /// only when every leg is valid: all or nothing.
    fn commit(&mut self, transfers: Vec<Transfer>) -> Result<Event, LedgerError> {
        let mut scratch: HashMap<Id, Account> = HashMap::new();
        let mut history = Vec::new();
        for t in &transfers {
            for id in [t.debit_account, t.credit_account] {
                if let std::collections::hash_map::Entry::Vacant(slot) = scratch.entry(id) {
                    slot.insert(self.account(id)?.clone());
                }
            }
            if t.debit_account == t.credit_account {
                return Err(LedgerError::SameAccount);
            }
            for id in [t.debit_account, t.credit_account] {
                let account = &scratch[&id];
                // A void or expiry is the one movement a closed account allows.
                let moves = matches!(
                    t.kind,
                    TransferKind::Single | TransferKind::Pending | TransferKind::PostPending
                );
                if account.flags.closed && moves {
                    return Err(LedgerError::AccountClosed { account: id });
                }
                if account.currency != t.currency {
                    return Err(LedgerError::CurrencyMismatch {
                        account: id,
                        account_currency: account.currency,
                        currency: t.currency,
                    });
                }
            }
            effect(&mut scratch, t)?;
            history.extend(history_of(&scratch, t));
        }
        for account in scratch.values() {
            assert!(
                account.within_limits(),
                "ledger rule let account {} pass its limit",
                account.id
            );
        }
        self.accounts.extend(scratch);
        self.balances.extend(history);
        for t in &transfers {
            if t.kind == TransferKind::Pending {
                self.pending.insert(t.id, t.clone());
            }
        }
        Ok(Event::Transfers { transfers })
    }
}

/// Applies one transfer row's effect on the counters, checking limits for the parts that add
/// exposure. Shared by [`Book`] and the audit's replay so both read a row the same way.
pub fn effect(accounts: &mut HashMap<Id, Account>, t: &Transfer) -> Result<(), LedgerError> {
    let add =
        |v: i64, by: i64, account: Id| v.checked_add(by).ok_or(LedgerError::Overflow { account });
    let sub = |v: i64, by: i64, account: Id| {
        v.checked_sub(by)
            .filter(|r| *r >= 0)
            .ok_or(LedgerError::Overflow { account })
    };
    let (d, c) = (t.debit_account, t.credit_account);
    let get = |accounts: &HashMap<Id, Account>, id: Id| {
        accounts
            .get(&id)
            .cloned()
            .ok_or(LedgerError::AccountNotFound { id })
    };
    let mut debit = get(accounts, d)?;
    let mut credit = get(accounts, c)?;
    match t.kind {
        TransferKind::Single => {
            debit.debit_room(t.amount_minor)?;
            credit.credit_room(t.amount_minor)?;
            debit.debits_posted = add(debit.debits_posted, t.amount_minor, d)?;
            credit.credits_posted = add(credit.credits_posted, t.amount_minor, c)?;
        }
        TransferKind::Pending => {
            debit.debit_room(t.amount_minor)?;
            credit.credit_room(t.amount_minor)?;
            debit.debits_pending = add(debit.debits_pending, t.amount_minor, d)?;
            credit.credits_pending = add(credit.credits_pending, t.amount_minor, c)?;
        }
        TransferKind::PostPending | TransferKind::VoidPending | TransferKind::ExpirePending => {
            let held = t
                .pending_amount_minor
                .ok_or(LedgerError::PendingNotFound { id: t.id })?;
            debit.debits_pending = sub(debit.debits_pending, held, d)?;
            credit.credits_pending = sub(credit.credits_pending, held, c)?;
            if t.kind == TransferKind::PostPending {
                debit.debits_posted = add(debit.debits_posted, t.amount_minor, d)?;
                credit.credits_posted = add(credit.credits_posted, t.amount_minor, c)?;
            }
        }
    }
    // A closing hold closes its side(s); releasing it (void or expiry) reopens them. A post of
    // a closing hold cannot happen (a closed account refuses posts), so it changes nothing.
    let closes = match t.kind {
        TransferKind::Pending => Some(true),
        TransferKind::VoidPending | TransferKind::ExpirePending => Some(false),
        TransferKind::Single | TransferKind::PostPending => None,
    };
    if let Some(closed) = closes {
        if t.flags.closing_debit {
            debit.flags.closed = closed;
        }
        if t.flags.closing_credit {
            credit.flags.closed = closed;
        }
    }
    accounts.insert(d, debit);
    accounts.insert(c, credit);
    Ok(())
}

#[cfg(test)]
mod tests;
