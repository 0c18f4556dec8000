//! Conversions between the API's wire types ([`tally_wire::ledger`]) and the node's orders and
//! records: parsing of amounts, and the store's records as shown.

use std::collections::BTreeMap;
use tally_kernel::{Amount, Currency, Timestamp};
use tally_service::Role;
use tally_store::keys::ApiKeyRecord;
use tally_store::outbox::StoredMessage;
pub use tally_wire::ledger::*;

use crate::error::ApiError;

/// The service's account order.
pub fn open_account_order(
    r: OpenAccountRequest,
) -> Result<tally_service::ledger_ops::OpenAccount, ApiError> {
    let imported_at = r
        .imported_at
        .as_deref()
        .map(|t| {
            Timestamp::parse_rfc3339(t)
                .ok_or_else(|| ApiError::invalid_field("imported_at", "not an RFC 3339 time"))
        })
        .transpose()?;
    Ok(tally_service::ledger_ops::OpenAccount {
        owner: r.owner,
        currency: r.currency,
        kind: r.kind.map(tally_ledger::AccountKind::from),
        limit_minor: r.limit_minor,
        debits_must_not_exceed_credits: r.debits_must_not_exceed_credits,
        credits_must_not_exceed_debits: r.credits_must_not_exceed_debits,
        imported_at,
        history: r.history,
        references: tally_ledger::References {
            user_data_128: match r.user_data_128.as_deref() {
                None => 0,
                Some(t) => tally_ledger::decimal_u128(t).ok_or_else(|| {
                    ApiError::invalid_field("user_data_128", "a decimal below 2^128")
                })?,
            },
            user_data_64: r.user_data_64.unwrap_or(0),
            user_data_32: r.user_data_32.unwrap_or(0),
            code: r.code.unwrap_or(0),
        },
    })
}

fn query_time(name: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        Timestamp::parse_rfc3339(t).ok_or_else(|| ApiError::bad_parameter(name, "not RFC 3339"))
    })
    .transpose()
}

fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_parameter("limit", "1 to 1000")),
    }
}

fn query_u128(text: Option<&str>) -> Result<Option<u128>, ApiError> {
    text.map(|t| {
        tally_ledger::decimal_u128(t)
            .ok_or_else(|| ApiError::bad_parameter("user_data_128", "a decimal below 2^128"))
    })
    .transpose()
}

/// The store's filter for `GET /v1/accounts` (the owner is the service's to decide).
pub fn account_filter(q: &AccountsQuery) -> Result<tally_store::queries::AccountFilter, ApiError> {
    Ok(tally_store::queries::AccountFilter {
        owner: String::new(),
        since: query_time("since", q.since.as_deref())?,
        until: query_time("until", q.until.as_deref())?,
        user_data_128: query_u128(q.user_data_128.as_deref())?,
        user_data_64: q.user_data_64,
        user_data_32: q.user_data_32,
        code: q.code,
        reversed: q.reversed.unwrap_or(false),
        after: q.after.map(tally_kernel::Id),
        limit: match q.limit {
            None => 1000,
            Some(n) if (1..=1000).contains(&n) => n,
            Some(_) => return Err(ApiError::bad_parameter("limit", "1 to 1000")),
        },
    })
}

/// A transfer page's cursor: the last row's `created_at` (µs) and id, `"{µs}.{uuid}"`.
pub fn transfer_cursor(t: &tally_ledger::Transfer) -> String {
    format!("{}.{}", t.created_at.as_micros(), t.id)
}

/// The store's filter for `GET /v1/transfers`.
pub fn transfer_filter(q: TransferQuery) -> Result<tally_store::queries::TransferFilter, ApiError> {
    use tally_store::queries::{Side, TransferFilter};
    let side = match q.side.as_deref() {
        None | Some("both") => Side::Both,
        Some("debit") => Side::Debit,
        Some("credit") => Side::Credit,
        Some(_) => return Err(ApiError::bad_parameter("side", "debit, credit or both")),
    };
    if side != Side::Both && q.account.is_none() {
        return Err(ApiError::bad_parameter("side", "needs an account"));
    }
    let user_data_128 = query_u128(q.user_data_128.as_deref())?;
    let after = q
        .after
        .as_deref()
        .map(|c| {
            let bad = || ApiError::bad_parameter("after", "the `next` of a previous page");
            let (at, id) = c.split_once('.').ok_or_else(bad)?;
            let at = at.parse::<i64>().map_err(|_| bad())?;
            let id = id.parse::<uuid::Uuid>().map_err(|_| bad())?;
            Ok::<_, ApiError>((Timestamp(at), tally_kernel::Id(id)))
        })
        .transpose()?;
    Ok(TransferFilter {
        account: q.account.map(tally_kernel::Id),
        side,
        since: query_time("since", q.since.as_deref())?,
        until: query_time("until", q.until.as_deref())?,
        user_data_128,
        user_data_64: q.user_data_64,
        user_data_32: q.user_data_32,
        code: q.code,
        reversed: q.reversed.unwrap_or(false),
        after,
        limit: page_limit(q.limit)?,
    })
}

/// The store's filter for `GET /v1/accounts/{id}/history`; its cursor is `"{seq}.{ordinal}"`.
pub fn history_filter(q: HistoryQuery) -> Result<tally_store::queries::HistoryFilter, ApiError> {
    let after = q
        .after
        .as_deref()
        .map(|c| {
            let bad = || ApiError::bad_parameter("after", "the `next` of a previous page");
            let (seq, ordinal) = c.split_once('.').ok_or_else(bad)?;
            Ok::<_, ApiError>((
                seq.parse::<i64>().map_err(|_| bad())?,
                ordinal.parse::<i64>().map_err(|_| bad())?,
            ))
        })
        .transpose()?;
    Ok(tally_store::queries::HistoryFilter {
        since: query_time("since", q.since.as_deref())?,
        until: query_time("until", q.until.as_deref())?,
        reversed: q.reversed.unwrap_or(false),
        after,
        limit: page_limit(q.limit)?,
    })
}

/// Largest body of `POST /v1/transfers/batch`: 8,189 events with long memos fit.
pub const BATCH_BODY_MAX: usize = 8 * 1024 * 1024;

/// A batch's events for the ledger, or the first malformed one (by index and field); more
/// than the ledger's limit is a 413, none a 422.
pub fn transfer_events(
    r: &TransferBatchRequest,
) -> Result<Vec<tally_ledger::batch::TransferEvent>, ApiError> {
    use tally_ledger::batch::BATCH_EVENTS_MAX;
    use tally_wire::error::ErrorCode;
    if r.events.len() > BATCH_EVENTS_MAX {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "a batch holds at most {BATCH_EVENTS_MAX} events, this one {}",
                r.events.len()
            ),
        )
        .with_details(serde_json::json!({ "events_max": BATCH_EVENTS_MAX })));
    }
    if r.events.is_empty() {
        return Err(ApiError::invalid_field(
            "events",
            "a batch holds at least one event",
        ));
    }
    r.events
        .iter()
        .enumerate()
        .map(|(index, e)| {
            e.to_event().map_err(|(field, reason)| {
                ApiError::invalid_field(field, format!("event {index}: {reason}"))
                    .with_details(serde_json::json!({ "index": index, "field": field }))
            })
        })
        .collect()
}

/// The order for the service (`timeout_s` set for holds).
pub fn transfer_order(
    r: TransferRequest,
    timeout_s: Option<i64>,
) -> Result<tally_service::ledger_ops::TransferOrder, ApiError> {
    let amount = parse_amount(r.amount.as_deref(), r.amount_minor, r.currency.as_deref())?;
    Ok(tally_service::ledger_ops::TransferOrder {
        debit_account: tally_kernel::Id(r.debit_account),
        credit_account: tally_kernel::Id(r.credit_account),
        amount,
        timeout_s,
        memo: r.memo,
        notify: r.notify,
    })
}

/// The hold's order for the service.
pub fn hold_order(r: HoldRequest) -> Result<tally_service::ledger_ops::TransferOrder, ApiError> {
    let timeout_s = Some(r.timeout_s);
    transfer_order(
        TransferRequest {
            debit_account: r.debit_account,
            credit_account: r.credit_account,
            amount: r.amount,
            amount_minor: r.amount_minor,
            currency: r.currency,
            memo: r.memo,
            notify: r.notify,
        },
        timeout_s,
    )
}

/// Reads the two accepted spellings of an amount. Parsing only: whether the amount is positive
/// and matches the accounts is the ledger's decision.
fn parse_amount(
    text: Option<&str>,
    minor: Option<i64>,
    currency: Option<&str>,
) -> Result<Amount, ApiError> {
    match (text, minor, currency) {
        (Some(text), None, None) => text
            .parse::<Amount>()
            .map_err(|e| ApiError::invalid_field("amount", e)),
        (None, Some(minor), Some(code)) => {
            let currency =
                Currency::from_code(code).map_err(|e| ApiError::invalid_field("currency", e))?;
            Ok(Amount::new(minor, currency))
        }
        (None, Some(_), None) => Err(ApiError::invalid_field(
            "currency",
            "required with amount_minor",
        )),
        (None, None, _) => Err(ApiError::invalid_field(
            "amount",
            "give `amount` (\"12.50 EUR\") or `amount_minor` with `currency`",
        )),
        (Some(_), _, _) => Err(ApiError::invalid_field(
            "amount",
            "give either `amount` or `amount_minor` with `currency`, not both",
        )),
    }
}

/// `(amount_minor, currency)` of a post for the service; a stated currency is checked there.
pub fn post_amount(r: &PostHoldRequest) -> Result<(Option<i64>, Option<Currency>), ApiError> {
    match (&r.amount, r.amount_minor, &r.currency) {
        (None, None, None) => Ok((None, None)),
        (None, Some(minor), None) => Ok((Some(minor), None)),
        (text, minor, code) => {
            let a = parse_amount(text.as_deref(), minor, code.as_deref())?;
            Ok((Some(a.minor), Some(a.currency)))
        }
    }
}

/// The exchange order for the service.
pub fn exchange_order(
    r: ExchangeRequest,
) -> Result<tally_service::ledger_ops::ExchangeOrder, ApiError> {
    let currency = r
        .currency
        .as_deref()
        .map(Currency::from_code)
        .transpose()
        .map_err(|e| ApiError::invalid_field("currency", e))?;
    Ok(tally_service::ledger_ops::ExchangeOrder {
        debit_account: tally_kernel::Id(r.debit_account),
        credit_account: tally_kernel::Id(r.credit_account),
        amount_minor: r.amount_minor,
        currency,
        rate: r.rate,
        memo: r.memo,
    })
}

/// The service's role.
pub fn role(r: RoleDto) -> Role {
    match r {
        RoleDto::Admin => Role::Admin,
        RoleDto::Customer => Role::Customer,
        RoleDto::Merchant => Role::Merchant,
    }
}

/// An API key as shown (never its secret).
pub fn api_key(r: ApiKeyRecord) -> ApiKeyDto {
    ApiKeyDto {
        id: r.id.0,
        role: r.role,
        owner: r.owner,
        label: r.label,
        created_at: r.created_at.to_rfc3339(),
        revoked_at: r.revoked_at.map(Timestamp::to_rfc3339),
    }
}

/// A development-inbox message as shown.
pub fn message(m: StoredMessage) -> MessageDto {
    MessageDto {
        id: m.id.0,
        channel: m.message.kind,
        address: m.message.address,
        subject: m.message.subject,
        body: m.message.body,
        data: m.message.data,
        state: m.state,
        created_at: m.created_at.to_rfc3339(),
        sent_at: m.sent_at.map(Timestamp::to_rfc3339),
    }
}

/// The audit as shown.
pub fn audit(a: tally_store::audit::StoreAudit) -> AuditDto {
    let ok = a.ok();
    let r = a.ledger;
    AuditDto {
        ok,
        entries: r.entries,
        accounts: r.accounts,
        transfers: r.transfers,
        checkpoints: r.checkpoints_matched,
        signatures_verified: a.signatures_verified,
        signers: a.signers,
        problems: r.problems,
        totals: r
            .totals
            .into_iter()
            .map(|(code, t)| {
                let dto = CurrencyTotalsDto {
                    debits_posted: t.debits_posted,
                    credits_posted: t.credits_posted,
                    debits_pending: t.debits_pending,
                    credits_pending: t.credits_pending,
                };
                (code, dto)
            })
            .collect::<BTreeMap<_, _>>(),
    }
}
