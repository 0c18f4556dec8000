//! Trustee payments (SPEC A5, the seed's Figure 10): the operator guarantees a user's payment
//! to a merchant, bills the user at the end of the period and pays the merchant less a fee.
//!
//! Everything that decides is on the ledger. Each user has, per currency, a receivable
//! account of the operator's (debit = what the user owes) bounded by
//! `debits_must_not_exceed_credits` with the operator's limit as its `limit_minor`
//! (`Command::SetLimit`), so the ledger refuses a payment beyond the limit inside the write
//! transaction, on every node of one database. A trustee session holds the amount from the
//! receivable to the operator's trustee book when it opens (refused: `trustee_limit_reached`,
//! nothing held), posts it when the code verifies and voids it when the session ends
//! otherwise. The settlement pays each merchant its lines less the fee from the trustee book
//! (the fee stays there: the operator's trustee income) and collects each user's debt from
//! the operator's settlement account (the outside world: the user's bank or phone bill).
//!
//! Key decision: the operator's trustee accounts are opened on first use under fixed
//! idempotency keys, so a retry or a second node finds the same account by replaying the key
//! instead of racing to open two. Rejected: a sum of register lines checked against a limit
//! row (a second source of truth beside the ledger, and a race between two nodes).

use super::Oob;
use crate::access::{check_name, corrupt, invalid, require_admin};
use crate::{Principal, Result, ServiceError};
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::{Amount, Currency, Id, Timestamp};
use tally_ledger::{Account, AccountFlags, AccountKind, Command, LedgerError};
use tally_proto::effects::Effects;
use tally_store::Conflict;
use tally_store::oob::{RegisterEntry, settle_register};
use tally_store::trustee::upsert_credit;
use tally_wire::oob::{Collection, Payout, Settlement, TrusteeCredit};

impl Oob {
    /// The operator's settlement account in `currency`: where collected debts come from.
    pub(crate) async fn trustee_settlement_account(&self, currency: Currency) -> Result<Id> {
        self.core
            .store()
            .accounts_of("operator")
            .await?
            .into_iter()
            .find(|a| a.kind == AccountKind::Settlement && a.currency == currency)
            .map(|a| a.id)
            .ok_or(ServiceError::Disabled(
                "trustee payments need an operator settlement account in this currency",
            ))
    }

    /// An account of the operator's trustee books, opened on first use under `key`.
    async fn trustee_book(&self, key: String, currency: Currency, bounded: bool) -> Result<Id> {
        let open = Command::OpenAccount {
            owner: "operator".into(),
            currency,
            kind: AccountKind::Operator,
            flags: AccountFlags {
                debits_must_not_exceed_credits: bounded,
                credits_must_not_exceed_debits: false,
                ..Default::default()
            },
            limit_minor: 0,
            imported_at: None,
            references: Default::default(),
        };
        let outcome = self
            .core
            .commit(key, Effects::ledger(open), Vec::new())
            .await?;
        outcome
            .account()
            .map(|a| a.id)
            .ok_or_else(|| corrupt("a trustee book's key names another command"))
    }

    /// The user's receivable account in `currency` (opened at limit zero).
    async fn receivable(&self, user: &str, currency: Currency) -> Result<Id> {
        // Hashed: a user name may be as long as a whole idempotency key.
        let who = hex::encode(&sha256(user.as_bytes())[..16]);
        let key = format!(":trustee_receivable:{who}:{}", currency.code());
        self.trustee_book(key, currency, true).await
    }

    /// The operator's trustee book in `currency`: credited by verified trustee payments,
    /// debited by the payouts; what stays is the fee.
    pub(crate) async fn trustee_payable(&self, currency: Currency) -> Result<Id> {
        self.trustee_book(payable_key(currency), currency, false)
            .await
    }

    /// Sets a user's trustee limit in the limit's currency (operator only). The first limit
    /// opens the user's receivable account; a limit below what the user owes and holds is
    /// refused (`limit_below_use`).
    pub async fn trustee_set_limit(
        &self,
        by: &Principal,
        user: &str,
        limit: Amount,
    ) -> Result<TrusteeCredit> {
        require_admin(by)?;
        check_name("user", user)?;
        if limit.minor < 0 {
            return Err(invalid("limit", "must not be negative"));
        }
        let account = self.receivable(user, limit.currency).await?;
        let now = self.core.now();
        self.core
            .commit(
                format!(":trustee_limit:{}", Id::new()),
                Effects::ledger(Command::SetLimit {
                    account,
                    limit_minor: limit.minor,
                }),
                vec![upsert_credit(user, limit.currency.code(), account, now)],
            )
            .await?;
        let row = self.account_row(account).await?;
        Ok(credit_view(user, &row))
    }

    /// A user's trustee credit per currency (the operator, or the user itself).
    pub async fn trustee_credit(&self, by: &Principal, user: &str) -> Result<Vec<TrusteeCredit>> {
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden(
                "only the operator or the user sees its credit",
            ));
        }
        let mut out = Vec::new();
        for c in self.core.store().trustee_credit(user).await? {
            out.push(credit_view(user, &self.account_row(c.account).await?));
        }
        Ok(out)
    }

    /// The receivable a trustee payment of `amount` by `user` is held on; a user without
    /// credit in that currency is refused as at its limit.
    pub(crate) async fn trustee_receivable(&self, user: &str, amount: Amount) -> Result<Id> {
        self.core
            .store()
            .trustee_credit(user)
            .await?
            .into_iter()
            .find(|c| c.currency == amount.currency.code())
            .map(|c| c.account)
            .ok_or(ServiceError::TrusteeLimit {
                currency: amount.currency,
                available_minor: 0,
            })
    }

    async fn account_row(&self, id: Id) -> Result<Account> {
        self.core
            .store()
            .account(id)
            .await?
            .ok_or_else(|| corrupt("a trustee account is missing"))
    }

    /// Ends a trustee period (operator only). Every unsettled trustee line before `until` is
    /// paid to its merchant from the trustee book, less the fee: one ledger transfer per
    /// merchant account, settling its lines under a guard, so running this twice (or on two
    /// nodes) pays once. Then every user's posted debt is collected from the operator's
    /// settlement account, under a key naming the receivable's credits so far: two runs that
    /// read the same debt collect it once, and a payment that lands between them waits for the
    /// next period.
    pub async fn settle_trustee(&self, by: &Principal, until: Timestamp) -> Result<Settlement> {
        require_admin(by)?;
        Ok(Settlement {
            payouts: self.pay_merchants(until).await?,
            collections: self.collect_debts().await?,
        })
    }

    async fn pay_merchants(&self, until: Timestamp) -> Result<Vec<Payout>> {
        let lines = self.core.store().unsettled_trustee(until, 10_000).await?;
        let mut groups: std::collections::BTreeMap<(Id, String), Vec<RegisterEntry>> =
            std::collections::BTreeMap::new();
        for l in lines {
            let Some(account) = l.payee_account else {
                continue;
            };
            groups
                .entry((account, l.currency.clone()))
                .or_default()
                .push(l);
        }
        let fee_bps = self.settings.trustee_fee_bps;
        let mut payouts = Vec::new();
        for ((merchant_account, currency), lines) in groups {
            let currency_code = Currency::from_code(&currency)?;
            let gross: i64 = lines.iter().map(|l| l.amount_minor).sum();
            // The fee rounds down: the merchant is never paid less than the stated rate.
            let fee = i64::try_from(i128::from(gross) * i128::from(fee_bps) / 10_000)
                .map_err(|_| invalid("amount", "too large"))?;
            let net = gross - fee;
            if net <= 0 {
                continue;
            }
            let source = self.trustee_payable(currency_code).await?;
            let settlement = Id::new();
            let mut attachments = Vec::new();
            for l in &lines {
                attachments.extend(settle_register(l.id, settlement, self.core.now()));
            }
            let outcome = self
                .core
                .commit(
                    format!(":trustee_payout:{settlement}"),
                    Effects::ledger(Command::Transfer {
                        debit_account: source,
                        credit_account: merchant_account,
                        amount_minor: net,
                        currency: currency_code,
                        timeout_s: None,
                        memo: format!("trustee payout: {} payments, fee {fee_bps} bp", lines.len()),
                    }),
                    attachments,
                )
                .await;
            match outcome {
                // Another settlement (here or on another node) paid these lines first.
                Err(ServiceError::Conflict(Conflict::Moved(_))) => continue,
                Err(e) => return Err(e),
                Ok(o) => payouts.push(Payout {
                    merchant_account,
                    gross_minor: gross,
                    fee_minor: fee,
                    transfer: o.transfer().map_or(settlement, |t| t.id),
                    currency,
                    lines: lines.len(),
                }),
            }
        }
        Ok(payouts)
    }

    async fn collect_debts(&self) -> Result<Vec<Collection>> {
        let mut collections = Vec::new();
        for c in self.core.store().trustee_credits().await? {
            let row = self.account_row(c.account).await?;
            let owed = row.debits_posted.saturating_sub(row.credits_posted);
            if owed <= 0 {
                continue;
            }
            let source = self.trustee_settlement_account(row.currency).await?;
            let outcome = self
                .core
                .commit(
                    format!(":trustee_collect:{}:{}", row.id, row.credits_posted),
                    Effects::ledger(Command::Transfer {
                        debit_account: source,
                        credit_account: row.id,
                        amount_minor: owed,
                        currency: row.currency,
                        timeout_s: None,
                        memo: format!("trustee debt of {} collected", c.user_id),
                    }),
                    Vec::new(),
                )
                .await;
            match outcome {
                // Another run collected from the same balance first.
                Err(ServiceError::Ledger(LedgerError::IdempotencyConflict)) => continue,
                Err(e) => return Err(e),
                Ok(o) if o.replayed => continue,
                Ok(o) => collections.push(Collection {
                    user: c.user_id,
                    amount_minor: owed,
                    currency: c.currency,
                    transfer: o
                        .transfer()
                        .map(|t| t.id)
                        .ok_or_else(|| corrupt("a collection without its transfer"))?,
                }),
            }
        }
        Ok(collections)
    }
}

/// The idempotency key that opened the operator's trustee book in `currency`: its journal
/// entry names the account (read by checks that find the book from outside the node).
pub fn payable_key(currency: Currency) -> String {
    format!(":trustee_payable:{}", currency.code())
}

/// A receivable account as the user's credit.
fn credit_view(user: &str, a: &Account) -> TrusteeCredit {
    TrusteeCredit {
        user: user.into(),
        currency: a.currency.code().into(),
        limit_minor: a.limit_minor,
        owed_minor: a.debits_posted.saturating_sub(a.credits_posted).max(0),
        held_minor: a.debits_pending,
        available_minor: a.available_minor().unwrap_or(0).max(0),
        account: a.id,
    }
}
