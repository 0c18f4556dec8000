//! The ledger's API: accounts, transfers, holds, exchanges, API keys, the development inbox and
//! the audit.
//!
//! Key decision: these are separate from the ledger's and the store's types, even where the
//! fields look alike. The wire shape is a promise to clients; the domain types change with the
//! ledger. Money goes out as integer minor units plus a currency code (`{"minor": 1250,
//! "currency": "EUR"}`) and a display string for people; it comes in either as a display string
//! (`"12.50 EUR"`) or as `amount_minor` + `currency`, never as a float. Request bodies refuse
//! unknown fields, so a typo such as `"ammount"` is an error rather than a silently ignored
//! field.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tally_kernel::{Amount, Timestamp};
use tally_ledger::{Account, AccountKind, Transfer};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// An amount in minor units of a currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Money {
    /// Count of minor units (cents for EUR).
    #[schema(example = 1250)]
    pub minor: i64,
    /// ISO-4217 code.
    #[schema(example = "EUR")]
    pub currency: String,
}

impl From<Amount> for Money {
    fn from(a: Amount) -> Money {
        Money {
            minor: a.minor,
            currency: a.currency.code().to_string(),
        }
    }
}

/// What an account stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountKindDto {
    /// A customer's money held by the operator.
    Customer,
    /// Fees the operator earns.
    Fee,
    /// The operator's position in one currency, for exchanges.
    Liquidity,
    /// A merchant's money held by the operator.
    Merchant,
    /// Any other account of the operator.
    Operator,
    /// Money entering or leaving the ledger (bank, cash, card network).
    Settlement,
}

impl From<AccountKindDto> for AccountKind {
    fn from(k: AccountKindDto) -> AccountKind {
        match k {
            AccountKindDto::Customer => AccountKind::Customer,
            AccountKindDto::Fee => AccountKind::Fee,
            AccountKindDto::Liquidity => AccountKind::Liquidity,
            AccountKindDto::Merchant => AccountKind::Merchant,
            AccountKindDto::Operator => AccountKind::Operator,
            AccountKindDto::Settlement => AccountKind::Settlement,
        }
    }
}

/// `POST /v1/accounts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountRequest {
    /// Owner name. Admins choose (default `operator`); others may only name themselves.
    pub owner: Option<String>,
    /// ISO-4217 code.
    #[schema(example = "EUR")]
    pub currency: String,
    /// Admins choose; customers and merchants get their own kind.
    pub kind: Option<AccountKindDto>,
    /// Overdraft allowed (admins only).
    pub limit_minor: Option<i64>,
    /// Bound debits by credits (default true for customer and merchant accounts).
    pub debits_must_not_exceed_credits: Option<bool>,
    /// Bound credits by debits (default false).
    pub credits_must_not_exceed_debits: Option<bool>,
    /// For loading history (admins only): when the account was opened, RFC 3339, in the past;
    /// imported transfers must come after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_at: Option<String>,
    /// Keep the account's counters after each transfer (`GET /v1/accounts/{id}/history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<bool>,
    /// The client's 128-bit reference (a decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_128: Option<String>,
    /// The client's 64-bit reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_64: Option<u64>,
    /// The client's 32-bit reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_32: Option<u32>,
    /// The client's code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

/// Bounds on an account's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountFlagsDto {
    /// Debits (pending + posted) never exceed posted credits plus the limit.
    pub debits_must_not_exceed_credits: bool,
    /// Credits (pending + posted) never exceed posted debits plus the limit.
    pub credits_must_not_exceed_debits: bool,
    /// Closed by a closing hold: refuses new transfers until that hold is voided.
    #[serde(default, skip_serializing_if = "is_false")]
    pub closed: bool,
    /// Keeps its counters after each transfer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub history: bool,
}

/// An account with its four counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountDto {
    /// Identifier (UUIDv7).
    pub id: Uuid,
    /// Who it belongs to.
    pub owner: String,
    /// ISO-4217 code.
    #[schema(example = "EUR")]
    pub currency: String,
    /// `customer`, `fee`, `liquidity`, `merchant`, `operator` or `settlement`.
    #[schema(example = "customer")]
    pub kind: String,
    /// Bounds.
    pub flags: AccountFlagsDto,
    /// Overdraft allowed beyond the bound.
    pub limit_minor: i64,
    /// Holds against the account, not yet resolved.
    pub debits_pending: i64,
    /// Posted debits.
    pub debits_posted: i64,
    /// Holds in favour of the account, not yet resolved.
    pub credits_pending: i64,
    /// Posted credits.
    pub credits_posted: i64,
    /// `credits_posted - debits_posted`.
    pub balance: Money,
    /// The balance for people, e.g. `12.50 EUR`.
    #[schema(example = "12.50 EUR")]
    pub balance_display: String,
    /// `balance_minor` for clients that want the bare number.
    pub balance_minor: i64,
    /// What may still be debited; `null` when debits are unbounded.
    pub available_minor: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
    /// The client's 128-bit reference as a decimal string (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_128: Option<String>,
    /// The client's 64-bit reference (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_64: Option<u64>,
    /// The client's 32-bit reference (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_32: Option<u32>,
    /// The client's code (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

impl From<Account> for AccountDto {
    fn from(a: Account) -> AccountDto {
        let balance = Amount::new(a.balance_minor(), a.currency);
        AccountDto {
            id: a.id.0,
            owner: a.owner.clone(),
            currency: a.currency.code().to_string(),
            kind: a.kind.as_str().to_string(),
            flags: AccountFlagsDto {
                debits_must_not_exceed_credits: a.flags.debits_must_not_exceed_credits,
                credits_must_not_exceed_debits: a.flags.credits_must_not_exceed_debits,
                closed: a.flags.closed,
                history: a.flags.history,
            },
            limit_minor: a.limit_minor,
            debits_pending: a.debits_pending,
            debits_posted: a.debits_posted,
            credits_pending: a.credits_pending,
            credits_posted: a.credits_posted,
            balance: balance.into(),
            balance_display: balance.to_string(),
            balance_minor: balance.minor,
            available_minor: a.available_minor(),
            created_at: a.created_at.to_rfc3339(),
            user_data_128: (a.user_data_128 != 0).then(|| a.user_data_128.to_string()),
            user_data_64: (a.user_data_64 != 0).then_some(a.user_data_64),
            user_data_32: (a.user_data_32 != 0).then_some(a.user_data_32),
            code: (a.code != 0).then_some(a.code),
        }
    }
}

/// Someone to tell when the transfer commits (in the same database transaction).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyDto {
    /// `email`, `sms`, `webhook` or `dev`.
    #[schema(example = "dev")]
    pub channel: String,
    /// Where to.
    #[schema(example = "alice")]
    pub address: String,
}

/// `POST /v1/transfers`: give `amount` (`"12.50 EUR"`) or `amount_minor` with `currency`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// Account debited (must be the caller's, unless admin).
    pub debit_account: Uuid,
    /// Account credited.
    pub credit_account: Uuid,
    /// Decimal amount and currency, e.g. `12.50 EUR`.
    #[schema(example = "12.50 EUR")]
    pub amount: Option<String>,
    /// Minor units (with `currency`), instead of `amount`.
    pub amount_minor: Option<i64>,
    /// ISO-4217 code (with `amount_minor`).
    pub currency: Option<String>,
    /// Free text, at most 512 bytes.
    pub memo: Option<String>,
    /// Tell someone when it commits.
    pub notify: Option<NotifyDto>,
}

/// `POST /v1/holds`: a transfer request plus how long to hold.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// Account debited (must be the caller's, unless admin).
    pub debit_account: Uuid,
    /// Account credited (its owner later posts or voids the hold).
    pub credit_account: Uuid,
    /// Decimal amount and currency, e.g. `12.50 EUR`.
    #[schema(example = "12.50 EUR")]
    pub amount: Option<String>,
    /// Minor units (with `currency`), instead of `amount`.
    pub amount_minor: Option<i64>,
    /// ISO-4217 code (with `amount_minor`).
    pub currency: Option<String>,
    /// Seconds until the hold expires by itself.
    #[schema(minimum = 1, maximum = 31622400)]
    pub timeout_s: i64,
    /// Free text, at most 512 bytes.
    pub memo: Option<String>,
    /// Tell someone when it commits.
    pub notify: Option<NotifyDto>,
}

/// `POST /v1/holds/{id}/post` (the body may be empty: post everything).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostHoldRequest {
    /// How much to post as `"5.00 EUR"` (default: all of it); the rest is released.
    #[schema(example = "5.00 EUR")]
    pub amount: Option<String>,
    /// Or in minor units of the hold's currency.
    pub amount_minor: Option<i64>,
    /// With `amount_minor`: must be the hold's currency.
    pub currency: Option<String>,
}

/// `POST /v1/exchanges`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// Source account.
    pub debit_account: Uuid,
    /// Target account, in another currency.
    pub credit_account: Uuid,
    /// Amount in the source currency's minor units.
    pub amount_minor: i64,
    /// The source currency; when given it must be the debited account's.
    pub currency: Option<String>,
    /// Target units per source unit, as a decimal string.
    #[schema(example = "1.0834")]
    pub rate: String,
    /// Free text.
    pub memo: Option<String>,
}

/// An exchange rate as an exact ratio of target minor units per source minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RateDto {
    /// Target minor units…
    pub numerator: i64,
    /// …per this many source minor units.
    pub denominator: i64,
}

/// A transfer: a single movement, a hold, or the post/void/expiry of a hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferDto {
    /// Identifier (UUIDv7).
    pub id: Uuid,
    /// `single`, `pending`, `post_pending`, `void_pending` or `expire_pending`.
    #[schema(example = "single")]
    pub kind: String,
    /// `pending`, `posted`, `voided` or `expired`.
    #[schema(example = "posted")]
    pub state: String,
    /// Account debited.
    pub debit_account: Uuid,
    /// Account credited.
    pub credit_account: Uuid,
    /// Amount moved, held, posted or released.
    pub amount: Money,
    /// The amount for people, e.g. `12.50 EUR`.
    #[schema(example = "12.50 EUR")]
    pub amount_display: String,
    /// For post/void/expire: the hold it resolves.
    pub pending_id: Option<Uuid>,
    /// For post/void/expire: the amount that was held.
    pub pending_amount_minor: Option<i64>,
    /// For holds: when it expires (RFC 3339).
    pub expires_at: Option<String>,
    /// For exchanges: shared by both legs.
    pub link_id: Option<Uuid>,
    /// For exchanges: the rate applied.
    pub rate: Option<RateDto>,
    /// Free text.
    pub memo: String,
    /// RFC 3339.
    pub created_at: String,
    /// How a batch event created it (absent: no flag).
    #[serde(default, skip_serializing_if = "TransferFlagsDto::is_empty")]
    pub flags: TransferFlagsDto,
    /// The client's 128-bit reference as a decimal string (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "340282366920938463463374607431768211455")]
    pub user_data_128: Option<String>,
    /// The client's 64-bit reference (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_64: Option<u64>,
    /// The client's 32-bit reference (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_32: Option<u32>,
    /// The client's reason code (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

/// A transfer's flags beyond its kind (TigerBeetle's); every one defaults to false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TransferFlagsDto {
    /// Succeeds only together with the next event of the batch.
    #[serde(skip_serializing_if = "is_false")]
    pub linked: bool,
    /// Moves at most what the debit account holds.
    #[serde(skip_serializing_if = "is_false")]
    pub balancing_debit: bool,
    /// Moves at most what the credit account may still take.
    #[serde(skip_serializing_if = "is_false")]
    pub balancing_credit: bool,
    /// A hold that closes its debit account until voided.
    #[serde(skip_serializing_if = "is_false")]
    pub closing_debit: bool,
    /// A hold that closes its credit account until voided.
    #[serde(skip_serializing_if = "is_false")]
    pub closing_credit: bool,
    /// History loaded with its own past `timestamp`.
    #[serde(skip_serializing_if = "is_false")]
    pub imported: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TransferFlagsDto {
    /// True when no flag is set.
    pub fn is_empty(&self) -> bool {
        *self == TransferFlagsDto::default()
    }
}

impl From<tally_ledger::TransferFlags> for TransferFlagsDto {
    fn from(f: tally_ledger::TransferFlags) -> Self {
        TransferFlagsDto {
            linked: f.linked,
            balancing_debit: f.balancing_debit,
            balancing_credit: f.balancing_credit,
            closing_debit: f.closing_debit,
            closing_credit: f.closing_credit,
            imported: f.imported,
        }
    }
}

impl From<TransferFlagsDto> for tally_ledger::TransferFlags {
    fn from(f: TransferFlagsDto) -> Self {
        tally_ledger::TransferFlags {
            linked: f.linked,
            balancing_debit: f.balancing_debit,
            balancing_credit: f.balancing_credit,
            closing_debit: f.closing_debit,
            closing_credit: f.closing_credit,
            imported: f.imported,
        }
    }
}

/// `POST /v1/transfers/batch`: up to 8,189 events, decided in order in one transaction.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBatchRequest {
    /// The events, in order. A `linked` event succeeds only with the next one.
    pub events: Vec<TransferEventDto>,
}

/// One event of a batch: a transfer to create under the client's own id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferEventDto {
    /// The client's id for the transfer (not nil): sending it again answers `exists`.
    pub id: Uuid,
    /// `single` (default), `pending`, `post` or `void`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "single")]
    pub kind: Option<String>,
    /// Account debited (for a post or void: optional, must match the hold's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debit_account: Option<Uuid>,
    /// Account credited (for a post or void: optional, must match the hold's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_account: Option<Uuid>,
    /// Minor units: for a balancing transfer the most to move (absent: all there is); for a
    /// post the part to post (absent: all); for a void absent or the hold's amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    /// ISO-4217 code of both accounts (for a post or void: optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "EUR")]
    pub currency: Option<String>,
    /// For a post or void: the hold it resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_id: Option<Uuid>,
    /// For a hold: seconds until it expires (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31622400)]
    pub timeout_s: Option<i64>,
    /// Linked, balancing, closing, imported.
    #[serde(default, skip_serializing_if = "TransferFlagsDto::is_empty")]
    pub flags: TransferFlagsDto,
    /// The client's 128-bit reference as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "42")]
    pub user_data_128: Option<String>,
    /// The client's 64-bit reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_64: Option<u64>,
    /// The client's 32-bit reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_32: Option<u32>,
    /// The client's reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Free text, at most 512 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    /// Imported events only: when it happened (RFC 3339), after everything in the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl TransferEventDto {
    /// The ledger's event, or which field is malformed and why.
    pub fn to_event(&self) -> Result<tally_ledger::batch::TransferEvent, (&'static str, String)> {
        use tally_ledger::batch::EventKind;
        let kind = match self.kind.as_deref() {
            None | Some("single") => EventKind::Single,
            Some("pending") => EventKind::Pending,
            Some("post") => EventKind::Post,
            Some("void") => EventKind::Void,
            Some(other) => {
                return Err((
                    "kind",
                    format!("`{other}` is not single, pending, post or void"),
                ));
            }
        };
        let currency = self
            .currency
            .as_deref()
            .map(tally_kernel::Currency::from_code)
            .transpose()
            .map_err(|e| ("currency", e.to_string()))?;
        let user_data_128 = match self.user_data_128.as_deref() {
            None => 0,
            Some(text) => tally_ledger::decimal_u128(text)
                .ok_or_else(|| ("user_data_128", "a decimal string below 2^128".to_string()))?,
        };
        let timestamp = self
            .timestamp
            .as_deref()
            .map(|t| Timestamp::parse_rfc3339(t).ok_or(("timestamp", "not RFC 3339".to_string())))
            .transpose()?;
        Ok(tally_ledger::batch::TransferEvent {
            id: tally_kernel::Id(self.id),
            kind,
            debit_account: self.debit_account.map(tally_kernel::Id),
            credit_account: self.credit_account.map(tally_kernel::Id),
            amount_minor: self.amount_minor,
            currency,
            pending_id: self.pending_id.map(tally_kernel::Id),
            timeout_s: self.timeout_s,
            flags: self.flags.into(),
            user_data_128,
            user_data_64: self.user_data_64.unwrap_or(0),
            user_data_32: self.user_data_32.unwrap_or(0),
            code: self.code.unwrap_or(0),
            memo: self.memo.clone().unwrap_or_default(),
            timestamp,
        })
    }
}

/// The answer to `POST /v1/transfers/batch`: one result per event, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferBatchResponse {
    /// One per event, in the order sent.
    pub results: Vec<EventResultDto>,
    /// The journal entry holding the transfers the batch created (absent: it created none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_seq: Option<i64>,
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventResultDto {
    /// `created`, `exists`, or why not: `linked_event_failed`, `exceeds_credits`,
    /// `exists_with_different_amount`, … (docs/ledger-batches.md lists them in order of
    /// precedence).
    #[schema(example = "created")]
    pub status: String,
    /// The transfer now in the ledger under the event's id (`created` and `exists`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferDto>,
}

impl From<tally_ledger::batch::EventResult> for EventResultDto {
    fn from(r: tally_ledger::batch::EventResult) -> Self {
        let status = match serde_json::to_value(r.status) {
            Ok(serde_json::Value::String(name)) => name,
            _ => "unknown".to_string(),
        };
        EventResultDto {
            status,
            transfer: r.transfer.map(TransferDto::from),
        }
    }
}

impl From<Transfer> for TransferDto {
    fn from(t: Transfer) -> TransferDto {
        let amount = Amount::new(t.amount_minor, t.currency);
        TransferDto {
            id: t.id.0,
            kind: t.kind.as_str().to_string(),
            state: t.state.as_str().to_string(),
            debit_account: t.debit_account.0,
            credit_account: t.credit_account.0,
            amount: amount.into(),
            amount_display: amount.to_string(),
            pending_id: t.pending_id.map(|i| i.0),
            pending_amount_minor: t.pending_amount_minor,
            expires_at: t.expires_at.map(Timestamp::to_rfc3339),
            link_id: t.link_id.map(|i| i.0),
            rate: t.rate.map(|r| RateDto {
                numerator: r.numerator,
                denominator: r.denominator,
            }),
            memo: t.memo,
            created_at: t.created_at.to_rfc3339(),
            flags: t.flags.into(),
            user_data_128: (t.user_data_128 != 0).then(|| t.user_data_128.to_string()),
            user_data_64: (t.user_data_64 != 0).then_some(t.user_data_64),
            user_data_32: (t.user_data_32 != 0).then_some(t.user_data_32),
            code: (t.code != 0).then_some(t.code),
        }
    }
}

/// The two legs of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExchangeResponse {
    /// Source → liquidity, then liquidity → target.
    pub transfers: Vec<TransferDto>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleDto {
    /// The operator.
    Admin,
    /// A customer: its own accounts only.
    Customer,
    /// A merchant: its own accounts; captures and releases holds in its favour.
    Merchant,
}

/// `POST /v1/api-keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKeyRequest {
    /// The key's role.
    pub role: RoleDto,
    /// The customer or merchant the key acts for (ignored for admins: `operator`).
    pub owner: String,
    /// A note for operators.
    pub label: Option<String>,
}

/// An API key without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyDto {
    /// Identifier.
    pub id: Uuid,
    /// `admin`, `merchant` or `customer`.
    pub role: String,
    /// Who it acts for.
    pub owner: String,
    /// A note for operators.
    pub label: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once revoked.
    pub revoked_at: Option<String>,
}

/// A new API key, with the secret shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewApiKeyResponse {
    /// Identifier.
    pub id: Uuid,
    /// `admin`, `merchant` or `customer`.
    pub role: String,
    /// Who it acts for.
    pub owner: String,
    /// A note for operators.
    pub label: String,
    /// The key for `Authorization: Bearer …`. Not retrievable later.
    pub key: String,
}

/// A message in the development inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageDto {
    /// Identifier.
    pub id: Uuid,
    /// The channel (`dev`).
    pub channel: String,
    /// The inbox name.
    pub address: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// Structured payload.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub sent_at: Option<String>,
}

/// Per-currency totals after replay: debits equal credits when the ledger balances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CurrencyTotalsDto {
    /// Sum of posted debits.
    pub debits_posted: i128,
    /// Sum of posted credits.
    pub credits_posted: i128,
    /// Sum of pending debits.
    pub debits_pending: i128,
    /// Sum of pending credits.
    pub credits_pending: i128,
}

/// `GET /v1/ledger/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditDto {
    /// True when the chain, the checkpoints, the replay and the totals all agree.
    pub ok: bool,
    /// Journal entries read.
    pub entries: u64,
    /// Accounts recomputed.
    pub accounts: u64,
    /// Transfer rows replayed.
    pub transfers: u64,
    /// Checkpoints whose hash matched the chain.
    pub checkpoints: u64,
    /// Checkpoints whose signature verified.
    pub signatures_verified: u64,
    /// Checkpoint signers (hex public keys).
    pub signers: Vec<String>,
    /// Every discrepancy, in words.
    pub problems: Vec<String>,
    /// Totals by currency code.
    pub totals: BTreeMap<String, CurrencyTotalsDto>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /v1/node`: who this node is, for clients to check what it signed (packages, journal
/// checkpoints, certificates) without an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    /// The node's Ed25519 public key (hex): signs locked packages and journal checkpoints.
    pub node_key: String,
    /// Its fingerprint (SHA-256 of the key, hex), to compare by eye.
    pub node_key_fingerprint: String,
    /// The node CA's certificate (PEM): the trust anchor of receipts and party certificates.
    pub ca_certificate: String,
    /// The CA certificate's SHA-256 fingerprint (hex).
    pub ca_fingerprint: String,
    /// The node's software version.
    pub version: String,
}

/// The query of `GET /v1/accounts`: one owner's accounts, filtered, a page at a time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountsQuery {
    /// Whose accounts (admins: anyone; others: themselves). Default: the caller's.
    pub owner: Option<String>,
    /// Opened at or after (RFC 3339).
    pub since: Option<String>,
    /// Opened at or before (RFC 3339).
    pub until: Option<String>,
    /// The client's 128-bit reference (decimal).
    pub user_data_128: Option<String>,
    /// The client's 64-bit reference.
    pub user_data_64: Option<u64>,
    /// The client's 32-bit reference.
    pub user_data_32: Option<u32>,
    /// The client's code.
    pub code: Option<u16>,
    /// Newest first.
    pub reversed: Option<bool>,
    /// Most accounts (1 to 1,000; default 1,000).
    pub limit: Option<i64>,
    /// The id of the last account of the previous page.
    pub after: Option<Uuid>,
}

/// The query of `GET /v1/transfers`: every filter optional (a caller who is not the operator
/// must name an account of theirs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TransferQuery {
    /// Only transfers on this account.
    pub account: Option<Uuid>,
    /// With `account`: `debit`, `credit` or `both` (default).
    pub side: Option<String>,
    /// Created at or after (RFC 3339).
    pub since: Option<String>,
    /// Created at or before (RFC 3339).
    pub until: Option<String>,
    /// The client's 128-bit reference (decimal).
    pub user_data_128: Option<String>,
    /// The client's 64-bit reference.
    pub user_data_64: Option<u64>,
    /// The client's 32-bit reference.
    pub user_data_32: Option<u32>,
    /// The client's reason code.
    pub code: Option<u16>,
    /// Newest first.
    pub reversed: Option<bool>,
    /// Most transfers (1 to 1,000; default 100).
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

/// A page of transfers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferPage {
    /// In the query's order.
    pub transfers: Vec<TransferDto>,
    /// Pass as `after` for the next page (absent: this page was not full, there is no more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The query of `GET /v1/accounts/{id}/history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// At or after (RFC 3339).
    pub since: Option<String>,
    /// At or before (RFC 3339).
    pub until: Option<String>,
    /// Newest first.
    pub reversed: Option<bool>,
    /// Most rows (1 to 1,000; default 100).
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

/// An account's counters just after one transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BalanceDto {
    /// The transfer.
    pub transfer: Uuid,
    /// Its time (RFC 3339).
    pub at: String,
    /// Counters after it.
    pub debits_pending: i64,
    /// Counters after it.
    pub debits_posted: i64,
    /// Counters after it.
    pub credits_pending: i64,
    /// Counters after it.
    pub credits_posted: i64,
    /// `credits_posted - debits_posted`.
    pub balance_minor: i64,
}

impl From<tally_ledger::AccountBalance> for BalanceDto {
    fn from(b: tally_ledger::AccountBalance) -> Self {
        BalanceDto {
            transfer: b.transfer.0,
            at: b.at.to_rfc3339(),
            debits_pending: b.debits_pending,
            debits_posted: b.debits_posted,
            credits_pending: b.credits_pending,
            credits_posted: b.credits_posted,
            balance_minor: b.credits_posted.saturating_sub(b.debits_posted),
        }
    }
}

/// A page of an account's history (accounts opened with `history`; others have none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    /// In the query's order.
    pub balances: Vec<BalanceDto>,
    /// Pass as `after` for the next page (absent: there is no more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `?limit=` of list endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// Most items to return (clamped by the service).
    pub limit: Option<i64>,
}

debug_hiding!(NewApiKeyResponse { id, role, owner, label } hides { key });
