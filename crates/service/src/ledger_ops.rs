//! The ledger's own operations on a node: accounts, transfers, holds and their capture or
//! release, exchanges, the development inbox and the audit. Each is one ledger command
//! committed through the executor, with an idempotency key namespaced by the caller's owner.

use crate::Missing;
use crate::access::{check_name, namespaced, require_admin};
use crate::core::{Gate, Outflow};
use crate::node::{Node, verify_checkpoint};
use crate::{Principal, Result, Role, ServiceError};
use tally_kernel::{Amount, Currency, Id, Rate};
use tally_ledger::{Account, AccountFlags, AccountKind, Command, Transfer};
use tally_proto::effects::{Effects, Outgoing};
use tally_store::Outcome;
use tally_store::outbox::StoredMessage;
use tally_wire::ledger::NotifyDto;

/// A new account as requested.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct OpenAccount {
    /// Owner name; admins choose, others get their own.
    pub owner: Option<String>,
    /// ISO-4217 code.
    pub currency: String,
    /// Kind; admins choose, others get `customer`/`merchant` by role.
    pub kind: Option<AccountKind>,
    /// Overdraft allowed (admins only).
    pub limit_minor: Option<i64>,
    /// Bound debits by credits (default true for customer and merchant accounts).
    pub debits_must_not_exceed_credits: Option<bool>,
    /// Bound credits by debits (default false).
    pub credits_must_not_exceed_debits: Option<bool>,
    /// For loading history (operator only): when the account was opened, in the past.
    #[serde(default)]
    pub imported_at: Option<tally_kernel::Timestamp>,
    /// Keep the counters after each transfer.
    #[serde(default)]
    pub history: Option<bool>,
    /// The client's references and code.
    #[serde(default)]
    pub references: tally_ledger::References,
}

/// A transfer or hold as requested.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct TransferOrder {
    /// Account debited.
    pub debit_account: Id,
    /// Account credited.
    pub credit_account: Id,
    /// The amount.
    pub amount: Amount,
    /// For a hold: seconds until it expires.
    pub timeout_s: Option<i64>,
    /// Free text.
    pub memo: Option<String>,
    /// Tell someone when it commits (same transaction).
    pub notify: Option<NotifyDto>,
}

/// An exchange as requested.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct ExchangeOrder {
    /// Source account.
    pub debit_account: Id,
    /// Target account (another currency).
    pub credit_account: Id,
    /// Amount in the source currency's minor units.
    pub amount_minor: i64,
    /// The source currency, if the client states it: must be the debited account's.
    pub currency: Option<Currency>,
    /// Target units per source unit, as a decimal string (`1.0834`).
    pub rate: String,
    /// Free text.
    pub memo: Option<String>,
}

/// The node's health as the operator's console shows it ([`Node::overview`]).
#[derive(Debug, Clone)]
pub struct Overview {
    /// Accounts, transfers and the journal head.
    pub counts: tally_store::Counts,
    /// The newest signed checkpoint.
    pub last_checkpoint: Option<tally_ledger::journal::Checkpoint>,
    /// Outbox messages per state (and `retrying`: pending after a failure).
    pub outbox: Vec<(String, i64)>,
    /// The newest messages that failed or are being retried.
    pub failures: Vec<tally_store::outbox::StoredMessage>,
    /// Payment receivers: name, account, key kind, last set (never their keys).
    pub receivers: Vec<(String, Id, String, tally_kernel::Timestamp)>,
    /// Threshold rules: `(payer, owner, currency, secured_above_minor)`.
    pub rules: Vec<(bool, String, String, i64)>,
}

impl Node {
    /// Opens an account. Customers and merchants open accounts for themselves only, bounded
    /// by their credits and without overdraft; the operator chooses everything.
    pub async fn open_account(
        &self,
        by: &Principal,
        idempotency_key: Option<&str>,
        req: OpenAccount,
    ) -> Result<(Account, bool)> {
        let currency = Currency::from_code(&req.currency)?;
        let (owner, kind, limit_minor) = if by.is_admin() {
            let owner = req.owner.unwrap_or_else(|| "operator".to_string());
            (
                owner,
                req.kind.unwrap_or(AccountKind::Operator),
                req.limit_minor.unwrap_or(0),
            )
        } else {
            if req.owner.as_ref().is_some_and(|o| *o != by.owner) {
                return Err(ServiceError::Forbidden(
                    "accounts can only be opened for yourself",
                ));
            }
            if req.imported_at.is_some() {
                return Err(ServiceError::Forbidden("only the operator loads history"));
            }
            if req.limit_minor.is_some_and(|l| l != 0) {
                return Err(ServiceError::Forbidden(
                    "only the operator grants credit limits",
                ));
            }
            let kind = if by.role == Role::Merchant {
                AccountKind::Merchant
            } else {
                AccountKind::Customer
            };
            if req.kind.is_some_and(|k| k != kind) {
                return Err(ServiceError::Forbidden(
                    "this role cannot open that kind of account",
                ));
            }
            (by.owner.clone(), kind, 0)
        };
        check_name("owner", &owner)?;
        let bounded_default = matches!(kind, AccountKind::Customer | AccountKind::Merchant);
        let dmnec = req
            .debits_must_not_exceed_credits
            .unwrap_or(bounded_default);
        if !by.is_admin() && !dmnec {
            return Err(ServiceError::Forbidden(
                "only the operator opens unbounded accounts",
            ));
        }
        let flags = AccountFlags {
            debits_must_not_exceed_credits: dmnec,
            credits_must_not_exceed_debits: req.credits_must_not_exceed_debits.unwrap_or(false),
            history: req.history.unwrap_or(false),
            closed: false,
        };
        let key = match idempotency_key {
            Some(k) => namespaced(by, k)?,
            None => format!("{}:open:{}", by.owner, Id::new()),
        };
        let command = Command::OpenAccount {
            owner,
            currency,
            kind,
            flags,
            limit_minor,
            imported_at: req.imported_at,
            references: req.references,
        };
        let outcome = self
            .core()
            .commit(key, Effects::ledger(command), Vec::new())
            .await?;
        let account = outcome
            .account()
            .cloned()
            .ok_or(ServiceError::IdempotencyKeyReused)?;
        Ok((account, outcome.replayed))
    }

    /// One account, if the caller may see it.
    pub async fn account(&self, by: &Principal, id: Id) -> Result<Account> {
        let account = self.store().account(id).await?;
        match account {
            Some(a) if by.is_admin() || a.owner == by.owner => Ok(a),
            _ => Err(ServiceError::NotFound {
                what: Missing::Account,
                id: id.to_string(),
            }),
        }
    }

    /// Accounts of the caller (admins: of `owner`, default all of the operator's).
    pub async fn accounts(&self, by: &Principal, owner: Option<&str>) -> Result<Vec<Account>> {
        let owner = listed_owner(by, owner)?;
        Ok(self.store().accounts_of(&owner).await?)
    }

    /// One owner's accounts, filtered, a page at a time (the caller's own; admins: any
    /// owner's, default the operator's).
    pub async fn query_accounts(
        &self,
        by: &Principal,
        owner: Option<&str>,
        filter: tally_store::queries::AccountFilter,
    ) -> Result<Vec<Account>> {
        let filter = tally_store::queries::AccountFilter {
            owner: listed_owner(by, owner)?,
            limit: filter.limit.clamp(1, 1000),
            ..filter
        };
        Ok(self.store().query_accounts(&filter).await?)
    }

    /// Recent transfers of an account the caller may see, newest first.
    pub async fn account_transfers(
        &self,
        by: &Principal,
        id: Id,
        limit: i64,
    ) -> Result<Vec<Transfer>> {
        self.account(by, id).await?;
        Ok(self.store().transfers_of(id, limit.clamp(1, 1000)).await?)
    }

    /// One transfer, if the caller owns one of its accounts.
    pub async fn transfer(&self, by: &Principal, id: Id) -> Result<Transfer> {
        let not_found = || ServiceError::NotFound {
            what: Missing::Transfer,
            id: id.to_string(),
        };
        let t = self.store().transfer(id).await?.ok_or_else(not_found)?;
        if by.is_admin()
            || self.core().owns(by, t.debit_account).await?
            || self.core().owns(by, t.credit_account).await?
        {
            Ok(t)
        } else {
            Err(not_found())
        }
    }

    /// Moves money at once, or holds it when `timeout_s` is set. The caller must own the
    /// debited account (the operator may move any). Returns the transfer and whether this was
    /// a replay of an earlier request with the same key.
    pub async fn transfer_money(
        &self,
        by: &Principal,
        idempotency_key: &str,
        order: TransferOrder,
    ) -> Result<(Transfer, bool)> {
        self.core()
            .require_owner(
                by,
                order.debit_account,
                "you can only move money out of your own accounts",
            )
            .await?;
        let message = self.notification(&order, idempotency_key, by)?;
        let key = namespaced(by, idempotency_key)?;
        let (operation, what) = match order.timeout_s {
            Some(_) => ("hold", "Hold"),
            None => ("transfer", "Transfer"),
        };
        let memo = order.memo.unwrap_or_default();
        let rows = self
            .oob()
            .gate(
                by,
                &key,
                Outflow {
                    operation,
                    payer_account: order.debit_account,
                    payee_account: order.credit_account,
                    amount: order.amount,
                    description: match memo.as_str() {
                        "" => format!("{what} to account {}", order.credit_account),
                        m => format!("{what} to account {}: {m}", order.credit_account),
                    },
                },
            )
            .await?;
        let command = Command::Transfer {
            debit_account: order.debit_account,
            credit_account: order.credit_account,
            amount_minor: order.amount.minor,
            currency: order.amount.currency,
            timeout_s: order.timeout_s,
            memo,
        };
        let mut effects = Effects::ledger(command);
        effects.messages.extend(message);
        let outcome = self.core().commit(key, effects, rows).await?;
        first_transfer(outcome)
    }

    fn notification(
        &self,
        order: &TransferOrder,
        idempotency_key: &str,
        by: &Principal,
    ) -> Result<Option<Outgoing>> {
        let Some(n) = &order.notify else {
            return Ok(None);
        };
        if !matches!(n.channel.as_str(), "email" | "sms" | "webhook" | "dev") {
            return Err(ServiceError::Invalid {
                field: "notify.channel",
                reason: "email, sms, webhook or dev".into(),
            });
        }
        if n.address.is_empty() || n.address.len() > 256 {
            return Err(ServiceError::Invalid {
                field: "notify.address",
                reason: "1 to 256 bytes".into(),
            });
        }
        let what = if order.timeout_s.is_some() {
            "Hold"
        } else {
            "Transfer"
        };
        Ok(Some(Outgoing {
            dedup_key: format!("notify:{}:{}", by.owner, idempotency_key),
            channel: n.channel.clone(),
            address: n.address.clone(),
            subject: format!("{what} of {}", order.amount),
            body: format!(
                "{what} of {} from account {} to account {}.{}",
                order.amount,
                order.debit_account,
                order.credit_account,
                order
                    .memo
                    .as_ref()
                    .map(|m| format!("\nMemo: {m}"))
                    .unwrap_or_default()
            ),
            data: serde_json::json!({
                "amount_minor": order.amount.minor,
                "currency": order.amount.currency.code(),
                "debit_account": order.debit_account,
                "credit_account": order.credit_account,
            }),
            secret: None,
        }))
    }

    /// Posts a pending transfer (all of it by default). The credited account's owner captures.
    pub async fn post(
        &self,
        by: &Principal,
        idempotency_key: &str,
        pending_id: Id,
        amount_minor: Option<i64>,
        currency: Option<Currency>,
    ) -> Result<(Transfer, bool)> {
        let pending = self.transfer(by, pending_id).await?;
        self.core()
            .require_owner(
                by,
                pending.credit_account,
                "only the beneficiary of a hold can post it",
            )
            .await?;
        // An amount typed as "5.00 EUR" against a hold in JPY is refused, never reinterpreted.
        if let Some(c) = currency
            && c != pending.currency
        {
            return Err(ServiceError::Ledger(
                tally_ledger::LedgerError::CurrencyMismatch {
                    account: pending.debit_account,
                    account_currency: pending.currency,
                    currency: c,
                },
            ));
        }
        let key = namespaced(by, idempotency_key)?;
        let outcome = self
            .core()
            .commit(
                key,
                Effects::ledger(Command::Post {
                    pending_id,
                    amount_minor,
                }),
                Vec::new(),
            )
            .await?;
        first_transfer(outcome)
    }

    /// Voids a pending transfer. The credited account's owner releases.
    pub async fn void(
        &self,
        by: &Principal,
        idempotency_key: &str,
        pending_id: Id,
    ) -> Result<(Transfer, bool)> {
        let pending = self.transfer(by, pending_id).await?;
        self.core()
            .require_owner(
                by,
                pending.credit_account,
                "only the beneficiary of a hold can void it",
            )
            .await?;
        let key = namespaced(by, idempotency_key)?;
        let outcome = self
            .core()
            .commit(
                key,
                Effects::ledger(Command::Void { pending_id }),
                Vec::new(),
            )
            .await?;
        first_transfer(outcome)
    }

    /// Transfers matching `filter`, a page at a time. The operator may ask about any account
    /// or none; others must name an account of theirs.
    pub async fn query_transfers(
        &self,
        by: &Principal,
        filter: tally_store::queries::TransferFilter,
    ) -> Result<Vec<Transfer>> {
        match filter.account {
            Some(id) => {
                self.account(by, id).await?;
            }
            None => {
                if !by.is_admin() {
                    return Err(ServiceError::Invalid {
                        field: "account",
                        reason: "name one of your accounts".to_string(),
                    });
                }
            }
        }
        let filter = tally_store::queries::TransferFilter {
            limit: filter.limit.clamp(1, 1000),
            ..filter
        };
        Ok(self.store().query_transfers(&filter).await?)
    }

    /// An account's counters after each transfer (accounts opened with `history`), a page at
    /// a time; the account's owner or the operator.
    pub async fn account_history(
        &self,
        by: &Principal,
        id: Id,
        filter: tally_store::queries::HistoryFilter,
    ) -> Result<Vec<tally_store::queries::HistoryRow>> {
        self.account(by, id).await?;
        let filter = tally_store::queries::HistoryFilter {
            limit: filter.limit.clamp(1, 1000),
            ..filter
        };
        Ok(self.store().account_history(id, &filter).await?)
    }

    /// The journal entries that recorded transfers from position `from` on (inclusive), at
    /// most `limit`: the change stream (operator only). Read from the journal, so every node
    /// of one database serves the same stream.
    pub async fn transfer_entries(
        &self,
        by: &Principal,
        from: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<Transfer>)>> {
        require_admin(by)?;
        Ok(self
            .store()
            .transfer_entries(from, limit.clamp(1, 1000))
            .await?)
    }

    /// Decides a batch of transfer events in one durable transaction, TigerBeetle's
    /// `create_transfers`: one result per event, linked chains all or nothing, the client's ids
    /// making a retried batch harmless (see [`tally_ledger::batch`]). Operator only: it is the
    /// bulk interface of the operator's back office; customers and merchants move money one
    /// transfer at a time, through the out-of-band gate.
    pub async fn transfer_batch(
        &self,
        by: &Principal,
        events: Vec<tally_ledger::batch::TransferEvent>,
    ) -> Result<tally_store::Batched> {
        require_admin(by)?;
        Ok(self.store().execute_events(events).await?)
    }

    /// Exchanges between two currencies through the operator's liquidity accounts.
    pub async fn exchange(
        &self,
        by: &Principal,
        idempotency_key: &str,
        order: ExchangeOrder,
    ) -> Result<(Vec<Transfer>, bool)> {
        // The rate decides how much money the operator's liquidity hands out: only the operator
        // may state one. (Published rate tables for everyone come with trading sessions, M6.)
        if !by.is_admin() {
            return Err(ServiceError::Forbidden(
                "only the operator sets exchange rates",
            ));
        }
        let from = self.core().existing_account(order.debit_account).await?;
        let to = self.core().existing_account(order.credit_account).await?;
        if let Some(c) = order.currency
            && c != from.currency
        {
            return Err(ServiceError::Ledger(
                tally_ledger::LedgerError::CurrencyMismatch {
                    account: from.id,
                    account_currency: from.currency,
                    currency: c,
                },
            ));
        }
        let rate = Rate::parse(&order.rate, from.currency, to.currency)?;
        let liquidity_from = self.liquidity(from.currency).await?;
        let liquidity_to = self.liquidity(to.currency).await?;
        let command = Command::Exchange {
            debit_account: order.debit_account,
            liquidity_from,
            liquidity_to,
            credit_account: order.credit_account,
            amount_minor: order.amount_minor,
            rate,
            memo: order.memo.unwrap_or_default(),
        };
        let key = namespaced(by, idempotency_key)?;
        let outcome = self
            .core()
            .commit(key, Effects::ledger(command), Vec::new())
            .await?;
        match outcome.event {
            tally_ledger::Event::Transfers { transfers } => Ok((transfers, outcome.replayed)),
            tally_ledger::Event::AccountOpened { .. }
            | tally_ledger::Event::Recorded { .. }
            | tally_ledger::Event::LimitSet { .. } => Err(ServiceError::IdempotencyKeyReused),
        }
    }

    async fn liquidity(&self, currency: Currency) -> Result<Id> {
        let accounts = self.store().accounts_of("operator").await?;
        accounts
            .iter()
            .find(|a| a.kind == AccountKind::Liquidity && a.currency == currency)
            .map(|a| a.id)
            .ok_or(ServiceError::NoLiquidity(currency))
    }

    /// The development inbox of `address` (only with `--dev`). The operator reads any inbox;
    /// a customer or merchant only the one named after itself.
    pub async fn dev_inbox(
        &self,
        by: &Principal,
        address: &str,
        limit: i64,
    ) -> Result<Vec<StoredMessage>> {
        if !self.is_dev() {
            return Err(ServiceError::Disabled(
                "the dev inbox needs `tally serve --dev`",
            ));
        }
        if !by.is_admin() && address != by.owner {
            return Err(ServiceError::Forbidden(
                "you can read only the dev inbox named after you",
            ));
        }
        self.any_dev_inbox(address, limit).await
    }

    /// Any dev inbox, for anyone: the web page's inbox on a dev node (whose messages go
    /// nowhere else, so a visitor with only a browser can read the code sent to them).
    pub async fn any_dev_inbox(&self, address: &str, limit: i64) -> Result<Vec<StoredMessage>> {
        if !self.is_dev() {
            return Err(ServiceError::Disabled(
                "the dev inbox needs `tally serve --dev`",
            ));
        }
        let mut messages = self.store().dev_inbox(address, limit.clamp(1, 500)).await?;
        for m in &mut messages {
            m.message.body = self.render(&m.message).await?.expose().clone();
        }
        Ok(messages)
    }

    /// What the operator's console shows of the node's health (admins only): row counts and
    /// the journal head, the newest signed checkpoint, the outbox by state and its newest
    /// failures (at most `failures`), the payment receivers and the threshold rules, read
    /// straight from the database every node shares.
    pub async fn overview(&self, by: &Principal, failures: i64) -> Result<Overview> {
        require_admin(by)?;
        let store = self.store();
        Ok(Overview {
            counts: store.counts().await?,
            last_checkpoint: store.last_checkpoint().await?,
            outbox: store.outbox_by_state().await?,
            failures: store.outbox_failures(failures.clamp(1, 200)).await?,
            receivers: store
                .receivers()
                .await?
                .into_iter()
                .map(|r| (r.name, r.account, r.kind, r.updated_at))
                .collect(),
            rules: store.rules(200).await?,
        })
    }

    /// Runs the full ledger audit (admins only).
    pub async fn audit(&self, by: &Principal) -> Result<tally_store::audit::StoreAudit> {
        require_admin(by)?;
        // Several nodes may share the database, each signing with its own key: every signer
        // is reported; the gap check proves no stretch of history went unsigned.
        let policy = tally_store::audit::AuditPolicy {
            trusted_signers: Vec::new(),
            checkpoint_gap_max: Some(self.core().checkpoint_gap_max()),
        };
        Ok(self
            .store()
            .audit(&verify_checkpoint, &policy, &|_| {})
            .await?)
    }
}

pub(crate) fn first_transfer(outcome: Outcome) -> Result<(Transfer, bool)> {
    let replayed = outcome.replayed;
    outcome
        .transfer()
        .cloned()
        .map(|t| (t, replayed))
        .ok_or(ServiceError::IdempotencyKeyReused)
}

/// Whose accounts a list shows: the caller's own, or (the operator only) the owner named.
fn listed_owner(by: &Principal, owner: Option<&str>) -> Result<String> {
    match owner {
        Some(o) if by.is_admin() || o == by.owner => Ok(o.to_string()),
        Some(_) => Err(ServiceError::Forbidden(
            "you can list only your own accounts",
        )),
        None => Ok(by.owner.clone()),
    }
}
