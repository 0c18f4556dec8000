//! The parties of the trading simulation: customers at A open sessions (and retry when an
//! answer is lost), buy at merchant agents, post their records and start their sessions' next
//! transactions (M4); merchants at B answer sessions, post theirs and end sessions; B's
//! operator settles disputes. Each checks what it can of the answer: an opening or a next transaction beyond
//! the money is refused and changes nothing, a retry is the same session (the same
//! transaction, nothing new held), the agent's tab and the customer's wallet count the same
//! purchases of the same transaction, a record sent again or a second different one changes
//! nothing, a verdict the deposit covers is taken (and sent as the clearing), another or a
//! second different one is refused and changes nothing, a merchant's end is taken once and
//! changes nothing but the word (another merchant's is not found).

use super::{A, B, NAMES, Step, Trade, TradeSim, Wallet, eur, unexpected};
use super::{Done, LostOpen, NextRequest, OpenRequest};
use rand::RngExt;
use tally_kernel::Amount;
use tally_kernel::crypto::SigningKey;
use tally_ledger::LedgerError;
use tally_proto::session::conclusion::{Clearing, Record, Side, customer_total};
use tally_proto::session::ids::{SessionId, TransactionId};
use tally_proto::session::purchase::{self, Purchase, PurchaseError, Tab, Taken};
use tally_proto::session::trade::{self, AmSession, AmState, MtaSession, MtaState, TradeError};
use tally_service::ServiceError;
use tally_wire::federation::{NextTransaction, OpenTradingSession};

impl TradeSim {
    /// What the customer may still hold: posted credits less posted and pending debits.
    pub(super) async fn available(&self, customer: usize) -> Step<i64> {
        let a = self
            .node(A)
            .store()
            .account(self.customers[customer].account)
            .await
            .map_err(unexpected)?
            .ok_or("a customer's account vanished")?;
        Ok(a.credits_posted - a.debits_posted - a.debits_pending)
    }

    // ----- the customers' side ---------------------------------------------------------------

    /// A customer opens a session: a deposit it may hold (sometimes more than it may: refused),
    /// usually with a merchant of B (sometimes one B does not know: B refuses it); sometimes
    /// the answer is lost and the customer sends the request again later.
    pub(super) async fn open_session(&mut self) -> Step<()> {
        let customer = self.rng.random_range(0..self.customers.len());
        let merchant = self
            .rng
            .random_bool(0.9)
            .then(|| self.rng.random_range(0..self.merchants.len()));
        let available = self.available(customer).await?;
        let minor = match self.rng.random_range(0..10) {
            // Beyond what the customer may spend: refused, nothing held.
            0 => available.max(0) + self.rng.random_range(1..=500),
            1..=3 => self.rng.random_range(1..=5_000),
            _ => self.rng.random_range(1..=1_500),
        };
        let session_key = SigningKey::from_seed(&self.seed32());
        let mac_key = self.seed32();
        let lifetime_s = self
            .rng
            .random_bool(0.5)
            .then(|| self.rng.random_range(600..=3_600));
        let request = OpenRequest {
            customer,
            merchant,
            key: self.key(),
            body: OpenTradingSession {
                account: self.customers[customer].account,
                deposit: eur(minor),
                merchant: merchant.map_or("nobody".into(), |m| self.merchants[m].name.clone()),
                operator: "bank-b".into(),
                lifetime_s,
                customer_key: Some(session_key.verifying_key().to_hex()),
            },
            session_key,
            mac_key,
        };
        let lost = self.rng.random_bool(0.12);
        self.send_open(request, lost, None).await
    }

    /// A customer sends again an opening request whose answer it never got.
    pub(super) async fn retry_open(&mut self) -> Step<()> {
        if self.lost.is_empty() {
            return Ok(());
        }
        let i = self.rng.random_range(0..self.lost.len());
        let lost = self.lost.remove(i);
        let again = self.rng.random_bool(0.1);
        self.send_open(lost.request, again, Some(lost.took)).await
    }

    /// Sends an opening request to A. `lost`: its answer never reaches the customer. `first`:
    /// a retry, with what the first attempt made.
    pub(super) async fn send_open(
        &mut self,
        r: OpenRequest,
        lost: bool,
        first: Option<Option<SessionId>>,
    ) -> Step<()> {
        let a = self.node(A);
        let principal = self.customers[r.customer].principal.clone();
        let available = self.available(r.customer).await?;
        let before = self.snapshot(r.customer).await?;
        let deposit = r.body.deposit.minor;
        self.note(format!(
            "cust{} opens {} EUR minor with {} (key {}{})",
            r.customer,
            deposit,
            r.body.merchant,
            r.key,
            if first.is_some() { ", again" } else { "" }
        ));
        let result = a.sessions().open(&principal, &r.key, &r.body).await;
        let took = match result {
            Ok((view, replayed)) => {
                let id: SessionId = view.session.parse().map_err(unexpected)?;
                match (&first, replayed) {
                    (Some(Some(before)), true) if *before == id => self.outcome.replays += 1,
                    (Some(Some(before)), _) => {
                        return Err(format!(
                            "a retry of {} came back as {id} (replayed: {replayed}), not {before}",
                            r.key
                        ));
                    }
                    (_, true) => {
                        return Err(format!(
                            "{} replayed a session although no attempt made one",
                            r.key
                        ));
                    }
                    (_, false) if deposit > available => {
                        return Err(format!(
                            "a deposit of {deposit} was held with {available} available: \
                             money spent twice"
                        ));
                    }
                    (_, false) => {}
                }
                if view.state != AmState::Held.as_str() && !replayed {
                    return Err(format!("a new session is {}, not held", view.state));
                }
                Some(id)
            }
            Err(ServiceError::Ledger(LedgerError::ExceedsCredits { .. }))
                if deposit > available =>
            {
                self.note("  refused: beyond what the customer may spend".into());
                self.outcome.refused_opens += 1;
                let after = self.snapshot(r.customer).await?;
                if after != before {
                    return Err(format!(
                        "a refused opening changed A: {before:?} became {after:?}"
                    ));
                }
                if let Some(Some(before)) = first {
                    return Err(format!(
                        "{} made {before} before, and is refused now",
                        r.key
                    ));
                }
                None
            }
            Err(e) => {
                return Err(format!(
                    "opening {deposit} (available {available}) failed: {e}"
                ));
            }
        };
        if lost {
            self.note("  its answer is lost".into());
            self.outcome.answers_lost += 1;
            let took = match first {
                Some(Some(before)) => Some(before),
                _ => took,
            };
            self.lost.push(LostOpen { request: r, took });
            return Ok(());
        }
        if let Some(id) = took
            && !self.trades.iter().any(|t| t.id == id)
        {
            self.trades.push(Trade {
                id,
                txn: 1,
                customer: r.customer,
                merchant: r.merchant,
                key: r.session_key,
                mac_key: r.mac_key,
                tab: None,
                wallet: Wallet::default(),
                customer_record: None,
                merchant_record: None,
                lost_next: None,
                ended_at: None,
            });
        }
        Ok(())
    }

    /// What a refused opening must leave as it was: the customer's account, A's sessions and
    /// its outbox.
    async fn snapshot(&self, customer: usize) -> Step<(i64, i64, i64, i64)> {
        let a = self.node(A);
        let account = a
            .store()
            .account(self.customers[customer].account)
            .await
            .map_err(unexpected)?
            .ok_or("a customer's account vanished")?;
        let sessions = crate::check::rows(
            &a,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM trading_sessions",
        )
        .await?;
        let n = sessions
            .first()
            .map(|r| crate::check::int(r, "n"))
            .transpose()?
            .unwrap_or(0);
        let outbox = a.store().outbox_len().await.map_err(unexpected)?;
        Ok((account.debits_pending, account.debits_posted, n, outbox))
    }

    /// The customer buys at the merchant's agent, in a session both its AM and the agent's
    /// operator say is open: the tab takes what the deposit covers, the wallet counts the same.
    pub(super) async fn buy(&mut self) -> Step<()> {
        let open: Vec<usize> = (0..self.trades.len())
            .filter(|&i| self.may_buy(i))
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let i = open[self.rng.random_range(0..open.len())];
        self.buy_in(i).await
    }

    /// Whether the customer of trade `i` may still buy, as it knows: neither side concluded
    /// its transaction.
    fn may_buy(&self, i: usize) -> bool {
        let t = &self.trades[i];
        t.merchant.is_some()
            && t.customer_record.is_none()
            && t.merchant_record.is_none()
            && t.tab.as_ref().is_none_or(|tab| !tab.closed)
    }

    /// The customer of trade `i` buys, if both nodes say its transaction is open.
    async fn buy_in(&mut self, i: usize) -> Step<()> {
        let (id, customer) = (self.trades[i].id, self.trades[i].customer);
        let principal = self.customers[customer].principal.clone();
        let view = self
            .node(A)
            .sessions()
            .show(&principal, &id.to_string())
            .await
            .map_err(unexpected)?;
        let transaction = self.trades[i].transaction();
        // (A's current transaction is the one the customer is on: it heard of every next
        // one it started, save one whose answer it lost)
        if AmState::parse(&view.state) != Some(AmState::Open)
            || view.transaction != transaction.to_string()
        {
            return Ok(());
        }
        if self.trades[i].tab.is_none() {
            let Some(s) = self.mta(&id).await? else {
                return Err(format!("{id} is open at A and unknown at B"));
            };
            if !matches!(s.state, MtaState::Open) {
                return Ok(());
            }
            if s.transaction() != transaction {
                return Err(format!(
                    "{transaction} is open at A, and B is on {}",
                    s.transaction()
                ));
            }
            let t = &self.trades[i];
            let signed = purchase::new_tab(&t.key, transaction, t.mac_key, self.now())
                .map_err(unexpected)?;
            let tab = Tab::open(
                &signed,
                &t.key.verifying_key(),
                transaction,
                s.merchant_deposit,
            )
            .map_err(|e| format!("the agent refused {id}'s tab: {e}"))?;
            self.note(format!(
                "{transaction}: tab opened ({})",
                s.merchant_deposit
            ));
            self.trades[i].tab = Some(tab);
        }
        for _ in 0..self.rng.random_range(1..=3) {
            let Some(remaining) = self.trades[i].tab.as_ref().map(Tab::remaining) else {
                return Ok(());
            };
            if remaining <= 0 {
                break;
            }
            let too_much = self.rng.random_bool(0.1);
            let price = if too_much {
                remaining + 1
            } else {
                self.rng.random_range(1..=remaining.min(700))
            };
            let t = &self.trades[i];
            let Some(tab) = &t.tab else {
                return Ok(());
            };
            let p = Purchase {
                transaction,
                seq: t.wallet.count + 1,
                price: Amount::new(price, tab.deposit.currency),
                item: format!("{} {}", self.marker, t.wallet.count + 1),
                at: self.now().as_micros(),
            };
            let wire = p.mac(&t.mac_key).map_err(unexpected)?;
            let repeat = self.rng.random_bool(0.15);
            let now = self.now().as_micros();
            let t = &mut self.trades[i];
            let Some(tab) = &mut t.tab else {
                return Ok(());
            };
            match tab.take(&wire, now) {
                Ok(Taken::New { .. }) if !too_much => {
                    t.wallet.list = purchase::list_next(&t.wallet.list, wire.bytes.as_bytes());
                    t.wallet.spent += price;
                    t.wallet.count += 1;
                    if tab.list != t.wallet.list || tab.spent != t.wallet.spent {
                        return Err(format!("{id}: the agent's tab and the wallet differ"));
                    }
                    self.outcome.purchases += 1;
                }
                Err(PurchaseError::Exhausted { .. }) if too_much => continue,
                other => {
                    return Err(format!(
                        "{id}: a purchase of {price} ({remaining} left) was answered {other:?}"
                    ));
                }
            }
            if repeat && !matches!(tab.take(&wire, now), Ok(Taken::Repeat)) {
                return Err(format!("{id}: the last purchase again was not a repeat"));
            }
        }
        let w = &self.trades[i].wallet;
        let line = format!("{id}: {} purchases, {} spent", w.count, w.spent);
        self.note(line);
        Ok(())
    }

    // ----- the next transaction (M4) -----------------------------------------------------------

    /// A customer whose session is cleared at A (its transaction ended, with time left in the
    /// session for another) starts the session's next transaction with a deposit it may
    /// usually hold (sometimes more than it may: refused, nothing held); sometimes its answer
    /// is lost and it sends the same request again later; often one whose merchant ended the
    /// session (B refuses it). Or it sends again a request whose answer it lost.
    pub(super) async fn next_transaction(&mut self) -> Step<()> {
        let waiting: Vec<usize> = (0..self.trades.len())
            .filter(|&i| self.trades[i].lost_next.is_some())
            .collect();
        if !waiting.is_empty() && self.rng.random_bool(0.4) {
            let i = waiting[self.rng.random_range(0..waiting.len())];
            let r = self.trades[i].lost_next.take().ok_or("no lost request")?;
            let lost = self.rng.random_bool(0.1);
            return self.send_next(i, r, lost).await;
        }
        if self.rng.random_bool(0.1) {
            return self.next_too_soon().await;
        }
        let mut cleared = self.ready_for_next().await?;
        if cleared.is_empty() {
            return Ok(());
        }
        // Often a session its merchant ended (the customer does not know): B refuses it.
        let ended: Vec<usize> = cleared
            .iter()
            .copied()
            .filter(|&i| self.trades[i].ended_at.is_some())
            .collect();
        if !ended.is_empty() && self.rng.random_bool(0.8) {
            cleared = ended;
        }
        let i = cleared[self.rng.random_range(0..cleared.len())];
        self.start_next(i).await
    }

    /// The customer of a session its merchant ended, cleared at A with time left, starts the
    /// next transaction (it does not know of the end: B refuses it, `ended`, and A voids its
    /// hold); whether there was one.
    pub(super) async fn next_after_end(&mut self) -> Step<bool> {
        let ended: Vec<usize> = self
            .ready_for_next()
            .await?
            .into_iter()
            .filter(|&i| self.trades[i].ended_at.is_some())
            .collect();
        if ended.is_empty() {
            return Ok(false);
        }
        let i = ended[self.rng.random_range(0..ended.len())];
        self.start_next(i).await?;
        Ok(true)
    }

    /// The trades whose session is cleared at A on the transaction its customer is on, with
    /// time left for another (not near the session's end: the MTA could not acknowledge it in
    /// time, refused), and no request for the next one waiting to be sent again.
    async fn ready_for_next(&self) -> Step<Vec<usize>> {
        let latest = self
            .now()
            .plus_seconds(self.ack_window_s() + 60)
            .as_micros();
        let mut cleared = Vec::new();
        for (i, t) in self.trades.iter().enumerate() {
            if t.merchant.is_none() || t.lost_next.is_some() {
                continue;
            }
            let s = self
                .am(&t.id)
                .await?
                .ok_or_else(|| format!("{} is unknown at A", t.id))?;
            if s.state == AmState::Cleared && s.txn == t.txn && s.expires_at > latest {
                cleared.push(i);
            }
        }
        Ok(cleared)
    }

    /// The customer of trade `i` starts its session's next transaction with a deposit it may
    /// usually hold (sometimes more than it may: refused, nothing held); sometimes its answer
    /// is lost.
    async fn start_next(&mut self, i: usize) -> Step<()> {
        let available = self.available(self.trades[i].customer).await?;
        let minor = match self.rng.random_range(0..10) {
            // Beyond what the customer may spend: refused, nothing held.
            0 => available.max(0) + self.rng.random_range(1..=500),
            1..=3 => self.rng.random_range(1..=5_000),
            _ => self.rng.random_range(1..=1_500),
        };
        let next = self.trades[i].transaction().next().map_err(unexpected)?;
        let r = NextRequest {
            body: NextTransaction {
                transaction: next.to_string(),
                deposit: eur(minor),
            },
            mac_key: self.seed32(),
            took: None,
        };
        let lost = self.rng.random_bool(0.25);
        self.send_next(i, r, lost).await
    }

    /// A customer asks for the next transaction of a session whose current one has not
    /// cleared: refused (409), nothing changes.
    async fn next_too_soon(&mut self) -> Step<()> {
        let mut going = Vec::new();
        for (i, t) in self.trades.iter().enumerate() {
            if t.lost_next.is_some() {
                continue;
            }
            if let Some(s) = self.am(&t.id).await?
                && s.state != AmState::Cleared
                && s.txn == t.txn
            {
                going.push((i, s));
            }
        }
        if going.is_empty() {
            return Ok(());
        }
        let (i, s) = going.swap_remove(self.rng.random_range(0..going.len()));
        let customer = self.trades[i].customer;
        let next = s.transaction().next().map_err(unexpected)?;
        let body = NextTransaction {
            transaction: next.to_string(),
            deposit: eur(self.rng.random_range(1..=1_500)),
        };
        let label = format!(
            "{next}: cust{customer} starts it with {} while the session is {}",
            body.deposit, s.state
        );
        let was = self.as_is(customer, &s.id).await?;
        let principal = self.customers[customer].principal.clone();
        let result = self
            .node(A)
            .sessions()
            .next_transaction(&principal, &s.id.to_string(), &body)
            .await;
        match result {
            Err(ServiceError::Trade(TradeError::State(..))) => {
                self.note(format!("{label}: refused"));
            }
            other => return Err(format!("{label}: answered {other:?}, not refused")),
        }
        let now = self.as_is(customer, &s.id).await?;
        if now != was {
            return Err(format!(
                "{label}: refused, and A changed: {was:?} became {now:?}"
            ));
        }
        Ok(())
    }

    /// At the end, the customers whose session with a merchant in agent mode is cleared with
    /// time left start its next transaction (their answers arrive; they buy in it once it is
    /// open, [`TradeSim::buy_at_end`]); so do those whose merchant ended the session (of any
    /// merchant: B refuses it, `ended`, and A voids its hold; kept in `refused_at_end` for
    /// [`TradeSim::refused_as_ended`]); how many did.
    pub(super) async fn next_at_end(&mut self) -> Step<usize> {
        let latest = self
            .now()
            .plus_seconds(self.ack_window_s() + 60)
            .as_micros();
        let mut started = 0;
        for i in 0..self.trades.len() {
            let t = &self.trades[i];
            if t.merchant.is_none() || t.lost_next.is_some() {
                continue;
            }
            let s = self
                .am(&t.id)
                .await?
                .ok_or_else(|| format!("{} is unknown at A", t.id))?;
            // (a merchant in agent mode: no one answers by hand at the end; or one that ended
            // the session: B refuses it without asking anyone)
            let agent = t.merchant.is_some_and(|m| self.merchants[m].auto_ack);
            let ended = t.ended_at.is_some();
            if s.state != AmState::Cleared
                || s.txn != t.txn
                || s.expires_at <= latest
                || !(agent || ended)
            {
                continue;
            }
            let next = s.transaction().next().map_err(unexpected)?;
            let r = NextRequest {
                body: NextTransaction {
                    transaction: next.to_string(),
                    deposit: eur(self.rng.random_range(1..=1_500)),
                },
                mac_key: self.seed32(),
                took: None,
            };
            self.send_next(i, r, false).await?;
            if self.trades[i].txn == next.seq {
                started += 1;
                if ended {
                    self.refused_at_end.push(next);
                }
            }
        }
        Ok(started)
    }

    /// Once the wire drained after [`TradeSim::next_at_end`], each next transaction it started
    /// in a session its merchant had ended was refused (`ended`) at B and aborted at A for that
    /// reason (no fault, no timeout on the way), its hold voided: none opened.
    pub(super) async fn refused_as_ended(&mut self) -> Step<()> {
        for t in std::mem::take(&mut self.refused_at_end) {
            let a = self
                .am(&t.session)
                .await?
                .ok_or("a session vanished at A")?;
            let b = self
                .mta(&t.session)
                .await?
                .ok_or("a session vanished at B")?;
            let at_a = (a.transaction(), a.state, a.refusal);
            let at_b = (b.transaction(), b.state, b.refusal);
            if at_a != (t, AmState::Aborted, Some(trade::Refusal::Ended))
                || at_b != (t, MtaState::Refused, Some(trade::Refusal::Ended))
            {
                return Err(format!(
                    "{t} was started at the end after its merchant ended the session, and is \
                     {at_a:?} at A and {at_b:?} at B once the wire drained: refused (ended) at \
                     B, aborted for it at A"
                ));
            }
            let (h, resolved) = super::check::next_hold(&self.node(A), t).await?;
            let void = tally_ledger::TransferKind::VoidPending.as_str();
            if h.state != tally_ledger::TransferState::Voided
                || resolved.iter().any(|(kind, _)| kind != void)
            {
                return Err(format!(
                    "{t} was refused as ended, and its hold is {h:?} (resolved by \
                     {resolved:?}): voided at once"
                ));
            }
            self.note(format!(
                "{t}: refused at B (ended), aborted at A, hold voided"
            ));
        }
        Ok(())
    }

    /// At the end, the customers of the transactions [`TradeSim::next_at_end`] started buy
    /// once their sessions are open again.
    pub(super) async fn buy_at_end(&mut self) -> Step<()> {
        for i in 0..self.trades.len() {
            if self.trades[i].txn > 1 && self.may_buy(i) {
                self.buy_in(i).await?;
            }
        }
        Ok(())
    }

    /// Sends trade `i`'s request for its next transaction to A. `lost`: its answer never
    /// reaches the customer, which keeps the request to send it again. A new transaction is
    /// held at once and the parties move to it (a fresh wallet; the merchant agent's tab once
    /// the session is open again); a refusal changes nothing at A; a request sent again after
    /// one that started the transaction is a replay: the same view, nothing new held.
    /// Sometimes a request for another transaction number, or the started one with another
    /// deposit, goes first: refused, nothing changes.
    pub(super) async fn send_next(&mut self, i: usize, mut r: NextRequest, lost: bool) -> Step<()> {
        let (id, customer) = (self.trades[i].id, self.trades[i].customer);
        let principal = self.customers[customer].principal.clone();
        let wanted: TransactionId = r.body.transaction.parse().map_err(unexpected)?;
        let deposit = r.body.deposit.minor;
        let label = format!(
            "{wanted}: cust{customer} starts it with {deposit} EUR minor{}",
            if r.took.is_some() { ", again" } else { "" }
        );
        let a = self.node(A);
        let before = self.am(&id).await?.ok_or("a session vanished at A")?;
        let ending = self.ending(&before).await?;
        let view = a
            .sessions()
            .show(&principal, &id.to_string())
            .await
            .map_err(unexpected)?;
        let was = self.as_is(customer, &id).await?;
        let available = self.available(customer).await?;
        let unchanged = |what: &str, now: &(_, _)| {
            if *now == was {
                Ok(())
            } else {
                Err(format!("{label}: {what} changed A: {was:?} became {now:?}"))
            }
        };
        if self.rng.random_bool(0.1) {
            let (body, field) = if r.took == Some(true) {
                let mut other = r.body.deposit;
                other.minor += 1;
                (
                    NextTransaction {
                        transaction: r.body.transaction.clone(),
                        deposit: other,
                    },
                    "deposit",
                )
            } else {
                let beyond = wanted.next().map_err(unexpected)?;
                (
                    NextTransaction {
                        transaction: beyond.to_string(),
                        deposit: r.body.deposit,
                    },
                    "transaction",
                )
            };
            let wrong = a
                .sessions()
                .next_transaction(&principal, &id.to_string(), &body)
                .await;
            match wrong {
                Err(ServiceError::Invalid { field: f, .. }) if f == field => {
                    self.note(format!(
                        "{id}: {} with {} is refused (invalid {field})",
                        body.transaction, body.deposit
                    ));
                }
                other => {
                    return Err(format!(
                        "{id}: {} with {} (the session on {}) was answered {other:?}, not \
                         refused as an invalid {field}",
                        body.transaction,
                        body.deposit,
                        before.transaction()
                    ));
                }
            }
            unchanged("a refused request", &self.as_is(customer, &id).await?)?;
        }
        self.note(label.clone());
        let result = a
            .sessions()
            .next_transaction(&principal, &id.to_string(), &r.body)
            .await;
        let took = match result {
            Ok((after, replayed)) => {
                if after.transaction != r.body.transaction {
                    return Err(format!("{label}: answered with {}", after.transaction));
                }
                match (r.took, replayed) {
                    (Some(true), true) => {
                        if after != view {
                            return Err(format!(
                                "{label}: a replay answered {after:?}, not the session as it \
                                 was ({view:?})"
                            ));
                        }
                        unchanged("a replay", &self.as_is(customer, &id).await?)?;
                        self.note(format!("  a replay: {}", after.state));
                        self.outcome.next_replays += 1;
                    }
                    (Some(true), false) => {
                        return Err(format!("{label}: started a second time"));
                    }
                    (_, true) => {
                        return Err(format!(
                            "{label}: replayed, although no attempt started it (the session \
                             was {} on {})",
                            before.state,
                            before.transaction()
                        ));
                    }
                    (_, false) => {
                        if deposit > available {
                            return Err(format!(
                                "{label}: held with {available} available: money spent twice"
                            ));
                        }
                        if after.state != AmState::Held.as_str() {
                            return Err(format!("{label}: a new transaction is {}", after.state));
                        }
                        let Some(done) = ending else {
                            return Err(format!(
                                "{label}: started while the session was {} on {}",
                                before.state,
                                before.transaction()
                            ));
                        };
                        if Ok(wanted) != before.transaction().next() {
                            return Err(format!("{label}: started after {}", before.transaction()));
                        }
                        self.done.insert(trade::label(before.transaction()), done);
                    }
                }
                true
            }
            Err(ServiceError::Ledger(LedgerError::ExceedsCredits { .. }))
                if deposit > available && r.took != Some(true) =>
            {
                self.note("  refused: beyond what the customer may spend".into());
                self.outcome.refused_nexts += 1;
                unchanged("a refused request", &self.as_is(customer, &id).await?)?;
                false
            }
            // Sent again (the first was refused) when the session is about to end.
            Err(ServiceError::Trade(TradeError::Invalid(why)))
                if r.took == Some(false)
                    && self.now().plus_seconds(self.ack_window_s()).as_micros()
                        >= before.expires_at =>
            {
                self.note(format!("  refused: {why}"));
                unchanged("a refused request", &self.as_is(customer, &id).await?)?;
                false
            }
            Err(e) => {
                return Err(format!(
                    "{label}: {e} (available {available}; the session {} on {})",
                    before.state,
                    before.transaction()
                ));
            }
        };
        if lost {
            self.note("  its answer is lost".into());
            self.outcome.answers_lost += 1;
            r.took = Some(r.took == Some(true) || took);
            self.trades[i].lost_next = Some(r);
            return Ok(());
        }
        if took {
            // The customer moves to the new transaction: a fresh wallet; the agent opens its
            // tab once the session is open again.
            let t = &mut self.trades[i];
            t.txn = wanted.seq;
            t.mac_key = r.mac_key;
            t.tab = None;
            t.wallet = Wallet::default();
            t.customer_record = None;
            t.merchant_record = None;
        }
        Ok(())
    }

    fn ack_window_s(&self) -> i64 {
        self.sites[A].config.sessions.ack_window_s
    }

    /// A session's current transaction as both nodes ended it, while A has it cleared (B has
    /// the same clearing: paid, or waiting for A's `session_posted`, which the next
    /// transaction's initiation stands for if it overtakes it): what the checks of the
    /// transactions before the current one read once the next one started. B's payment of it
    /// is checked once it happened (B `cleared`, then on the next transaction).
    async fn ending(&self, s: &AmSession) -> Step<Option<Done>> {
        if s.state != AmState::Cleared {
            return Ok(None);
        }
        let c = s.clearing.as_ref().ok_or("cleared without a clearing")?;
        let b = self
            .mta(&s.id)
            .await?
            .ok_or_else(|| format!("{} is cleared at A and unknown at B", s.id))?;
        if b.transaction() != s.transaction()
            || !matches!(b.state, MtaState::Clearing | MtaState::Cleared)
            || b.clearing.as_ref() != Some(c)
        {
            return Err(format!(
                "{} is cleared at A ({c:?}) and {} at B on {} ({:?})",
                s.transaction(),
                b.state,
                b.transaction(),
                b.clearing
            ));
        }
        Ok(Some(Done {
            deposit: s.deposit.minor,
            clearing: c.clone(),
            account: b.account,
            owed_by: b.owed_by,
        }))
    }

    /// What a refused (or replayed) request for a next transaction must leave as it was: the
    /// customer's account, A's sessions and outbox, and the session's row.
    async fn as_is(
        &self,
        customer: usize,
        id: &SessionId,
    ) -> Step<((i64, i64, i64, i64), Option<(String, String)>)> {
        let row = self
            .node(A)
            .store()
            .trade("am", &id.to_string())
            .await
            .map_err(unexpected)?;
        Ok((
            self.snapshot(customer).await?,
            row.map(|r| (r.state, r.machine)),
        ))
    }

    /// A's session, as its store holds it.
    pub(super) async fn am(&self, id: &SessionId) -> Step<Option<AmSession>> {
        self.machine(A, "am", id).await
    }

    /// The machine of `id` in `role` at `site`, as its store holds it.
    async fn machine<T: serde::de::DeserializeOwned>(
        &self,
        site: usize,
        role: &str,
        id: &SessionId,
    ) -> Step<Option<T>> {
        let row = self
            .node(site)
            .store()
            .trade(role, &id.to_string())
            .await
            .map_err(unexpected)?;
        row.map(|r| serde_json::from_str(&r.machine).map_err(unexpected))
            .transpose()
    }

    /// B's operator settles a disputed session at a verdict from nothing up to its deposit,
    /// on both records or on the merchant's alone (the customer's operator may have released
    /// the deposit then: it answers so, and nothing is paid): taken, B sends the clearing and
    /// waits for A's word (`clearing`); sometimes one beyond the deposit: refused, nothing
    /// moves. Sometimes a session settled before (`clearing`, `cleared`, or `expired` when A's
    /// hold was gone): the same verdict again changes nothing, another is refused and changes
    /// nothing.
    pub(super) async fn settle(&mut self) -> Step<()> {
        let mut disputed = Vec::new();
        for t in &self.trades {
            if let Some(m) = self.mta(&t.id).await?
                && (m.state == MtaState::Disputed
                    || (matches!(
                        m.state,
                        MtaState::Clearing | MtaState::Cleared | MtaState::Expired
                    ) && m.verdict.is_some()))
            {
                disputed.push((t.id, m));
            }
        }
        if disputed.is_empty() {
            return Ok(());
        }
        let (id, m) = disputed.swap_remove(self.rng.random_range(0..disputed.len()));
        let deposit = m.merchant_deposit;
        let minor = match (self.rng.random_range(0..10), m.verdict) {
            (0, _) => deposit.minor + 1,
            (1, _) => 0,
            // The same verdict again.
            (2..=5, Some(v)) => v.minor,
            _ => self.rng.random_range(0..=deposit.minor),
        };
        let req = tally_wire::federation::VerdictRequest {
            total_minor: minor,
            currency: deposit.currency.code().to_string(),
        };
        let admin = self.sites[B].admin.clone();
        let result = self
            .node(B)
            .sessions()
            .verdict(&admin, &id.to_string(), &req)
            .await;
        let label = format!("{id}: B's operator settles at {minor} (was {})", m.state);
        let after = self.mta(&id).await?.ok_or("the session is gone")?;
        let total = Amount::new(minor, deposit.currency);
        if m.state != MtaState::Disputed {
            // Settled before: the same verdict is a no-op, another is refused.
            let same = m.verdict == Some(total);
            match result {
                Ok(view) if same => self.note(format!("{label}: {} (the same again)", view.state)),
                Err(ServiceError::Trade(TradeError::Closed(_))) if !same => {
                    self.note(format!("{label}: refused, settled at {:?}", m.verdict));
                }
                other => {
                    return Err(format!(
                        "{label}: a session settled at {:?} answered {other:?}: the same \
                         verdict again changes nothing, another is refused",
                        m.verdict
                    ));
                }
            }
            if after != m {
                return Err(format!("{label}: the session changed ({after:?})"));
            }
            return Ok(());
        }
        // On a dispute (either record may be missing): taken when the deposit covers it.
        let paid = customer_total(minor, m.rate).filter(|&p| p <= m.deposit.minor);
        let covered = minor <= deposit.minor && paid.is_some();
        match result {
            Err(e @ (ServiceError::Store(_) | ServiceError::Setup(_))) => {
                Err(format!("{label}: {}", unexpected(e)))
            }
            Ok(view) if covered => {
                self.note(format!("{label}: {}", view.state));
                let sent = Clearing {
                    transaction: m.transaction(),
                    total,
                    customer_total: Amount::new(paid.unwrap_or(-1), m.deposit.currency),
                    count: m.merchant_record.as_ref().map_or(0, |r| r.count),
                    list: m
                        .merchant_record
                        .as_ref()
                        .map_or_else(|| hex::encode([0u8; 32]), |r| r.list.clone()),
                    verdict: true,
                };
                let rest = MtaSession {
                    state: m.state,
                    verdict: m.verdict,
                    clearing: m.clearing.clone(),
                    ..after.clone()
                };
                if after.state != MtaState::Clearing
                    || after.verdict != Some(total)
                    || after.clearing.as_ref() != Some(&sent)
                    || rest != m
                {
                    return Err(format!(
                        "{label}: taken as {after:?}: clearing, the verdict sent as {sent:?}, \
                         nothing else changed"
                    ));
                }
                if m.customer_record.is_none() {
                    self.note("  (on the merchant's record alone)".into());
                }
                self.outcome.verdicts += 1;
                Ok(())
            }
            Err(ServiceError::Trade(TradeError::Invalid(why))) if !covered => {
                self.note(format!("{label}: refused ({why})"));
                if after != m {
                    return Err(format!("{label}: refused, yet the session changed"));
                }
                Ok(())
            }
            other => Err(format!(
                "{label}: answered {other:?} (deposit {deposit}, covered: {covered}): a verdict \
                 the deposit covers is taken, another refused"
            )),
        }
    }

    /// At the end, B's operator rules once per dispute left at B ([`TradeSim::settle`]
    /// picks which, so some are ruled on twice and some not at all); how many disputes
    /// there were.
    pub(super) async fn settle_at_end(&mut self) -> Step<usize> {
        let mut disputes = 0;
        for t in &self.trades {
            if self
                .mta(&t.id)
                .await?
                .is_some_and(|m| m.state == MtaState::Disputed)
            {
                disputes += 1;
            }
        }
        for _ in 0..disputes {
            self.settle().await?;
        }
        Ok(disputes)
    }

    /// B's session, as its store holds it.
    pub(super) async fn mta(&self, id: &SessionId) -> Step<Option<MtaSession>> {
        self.machine(B, "mta", id).await
    }

    /// A record of `side` for trade `i`: what that side counted, or (`!honest`) something else.
    fn record(&self, i: usize, side: Side, honest: bool) -> Step<Vec<u8>> {
        let t = &self.trades[i];
        let merchant = &self.merchants[t.merchant.ok_or("no merchant")?];
        let (total, count, list) = match (side, &t.tab) {
            (Side::Customer, _) => (t.wallet.spent, t.wallet.count, hex::encode(t.wallet.list)),
            (Side::Merchant, Some(tab)) => (tab.spent, tab.count, tab.list_hex()),
            (Side::Merchant, None) => (0, 0, hex::encode([0u8; 32])),
        };
        let (count, list) = if honest {
            (count, list)
        } else {
            (count + 1, hex::encode([0xabu8; 32]))
        };
        let record = Record {
            transaction: t.transaction(),
            side,
            total: Amount::new(total, merchant.currency),
            count,
            list,
        };
        let key = match side {
            Side::Customer => &t.key,
            Side::Merchant => &merchant.agent,
        };
        record.sign(key).map_err(unexpected)
    }

    /// One side posts its signed record where it belongs (the customer at A, the merchant at
    /// B): usually what it counted; sometimes the customer counts otherwise (a dispute); a
    /// record sent again changes nothing; a second, different one is refused and changes
    /// nothing.
    pub(super) async fn conclude(&mut self) -> Step<()> {
        let side = if self.rng.random_bool(0.5) {
            Side::Customer
        } else {
            Side::Merchant
        };
        // Mostly a session whose side has not concluded yet.
        let fresh = self.rng.random_bool(0.8);
        let pool: Vec<usize> = (0..self.trades.len())
            .filter(|&i| {
                let t = &self.trades[i];
                let posted = match side {
                    Side::Customer => t.customer_record.is_some(),
                    Side::Merchant => t.merchant_record.is_some(),
                };
                t.merchant.is_some() && posted != fresh
            })
            .collect();
        if pool.is_empty() {
            return Ok(());
        }
        let i = pool[self.rng.random_range(0..pool.len())];
        let honest = side == Side::Merchant || self.rng.random_bool(0.75);
        let roll = self.rng.random_range(0..100);
        self.post(i, side, honest, roll).await
    }

    /// Posts trade `i`'s record of `side`. `roll` picks, once one was taken, between sending
    /// it again (< 40) and sending a different one (< 55).
    pub(super) async fn post(&mut self, i: usize, side: Side, honest: bool, roll: u32) -> Step<()> {
        if let Some(tab) = &mut self.trades[i].tab {
            // The customer closes its tab when it concludes.
            tab.closed = true;
        }
        let t = &self.trades[i];
        let (site, principal, taken) = match side {
            Side::Customer => (
                A,
                self.customers[t.customer].principal.clone(),
                t.customer_record.clone(),
            ),
            Side::Merchant => (
                B,
                self.merchants[t.merchant.ok_or("no merchant")?]
                    .principal
                    .clone(),
                t.merchant_record.clone(),
            ),
        };
        let id = t.id;
        let role = if site == A { "am" } else { "mta" };
        let (signed, again) = match taken {
            None => (self.record(i, side, honest)?, None),
            Some(before) if roll < 40 => (before, Some(true)),
            Some(_) if roll < 55 => {
                let mut other = self.record(i, side, true)?;
                if Some(&other) == self.trades[i].customer_record.as_ref()
                    || Some(&other) == self.trades[i].merchant_record.as_ref()
                {
                    other = self.record(i, side, false)?;
                }
                (other, Some(false))
            }
            Some(_) => return Ok(()),
        };
        let before = self
            .node(site)
            .store()
            .trade(role, &id.to_string())
            .await
            .map_err(unexpected)?;
        let result = self
            .node(site)
            .sessions()
            .record(&principal, &id.to_string(), &signed)
            .await;
        let after = self
            .node(site)
            .store()
            .trade(role, &id.to_string())
            .await
            .map_err(unexpected)?;
        let label = format!(
            "{id}: the {side:?} posts {}{} at {}",
            if honest {
                "its record"
            } else {
                "a record that differs"
            },
            match again {
                None => "",
                Some(true) => " again",
                Some(false) => " (a second, different one)",
            },
            NAMES[site]
        );
        match (&result, again) {
            (Err(e @ (ServiceError::Store(_) | ServiceError::Setup(_))), _) => {
                return Err(format!("{label}: {}", unexpected(e)));
            }
            (Ok(view), None) => {
                self.note(format!("{label}: {}", view.state));
                self.outcome.records += 1;
                match side {
                    Side::Customer => self.trades[i].customer_record = Some(signed),
                    Side::Merchant => self.trades[i].merchant_record = Some(signed),
                }
            }
            (Err(e), None) => self.note(format!("{label}: refused ({e})")),
            (Ok(_), Some(false)) => {
                return Err(format!("{label}: taken, a second record of one side"));
            }
            (r, Some(_)) => {
                let what = match r {
                    Ok(v) => v.state.clone(),
                    Err(e) => format!("refused ({e})"),
                };
                self.note(format!("{label}: {what}"));
                let unchanged = |r: &Option<tally_store::trade::TradeRow>| {
                    r.as_ref().map(|r| (r.state.clone(), r.machine.clone()))
                };
                if unchanged(&before) != unchanged(&after) {
                    return Err(format!("{label}: it changed the session"));
                }
            }
        }
        Ok(())
    }

    // ----- the merchants' side ---------------------------------------------------------------

    /// A merchant at B ends one of its sessions (its agent, on the merchant's terminate, M4):
    /// mostly one it has not ended yet. One B does not know yet (the initiation still on its
    /// way) is not found, and nothing changes. Otherwise B takes it: the session stays as it
    /// was, ended (the current transaction concludes as usual, a next one is refused); the
    /// simulator keeps the transaction it was on. Sometimes the same word again (at once, or
    /// in a later step): the same view, nothing changes. Sometimes another merchant tries
    /// first: not found, nothing changes. Sometimes B crashes right after (the word is kept).
    /// Often a session cleared at A with time left, whose customer (not knowing) sometimes
    /// asks for the next transaction at once: B refuses it (`ended`).
    pub(super) async fn merchant_ends(&mut self) -> Step<()> {
        let known: Vec<usize> = (0..self.trades.len())
            .filter(|&i| self.trades[i].merchant.is_some())
            .collect();
        let ready = self.ready_for_next().await?;
        let mut fresh = Vec::new();
        let mut live = Vec::new();
        let mut cleared = Vec::new();
        for &i in &known {
            if self.trades[i].ended_at.is_some() {
                continue;
            }
            fresh.push(i);
            // (cleared with time left: its customer may ask for the next one at once)
            if ready.contains(&i) {
                cleared.push(i);
            }
            // (one that may yet clear, after which its customer may ask for the next one)
            if self.mta(&self.trades[i].id).await?.is_some_and(|s| {
                !matches!(
                    s.state,
                    MtaState::Refused | MtaState::Expired | MtaState::Informed
                )
            }) {
                live.push(i);
            }
        }
        let ended: Vec<usize> = known
            .iter()
            .copied()
            .filter(|&i| self.trades[i].ended_at.is_some())
            .collect();
        let pool = match self.rng.random_range(0..100) {
            0..=49 if !cleared.is_empty() => cleared,
            0..=54 if !live.is_empty() => live,
            0..=79 if !fresh.is_empty() => fresh,
            80..=89 if !ended.is_empty() => ended,
            _ => known,
        };
        if pool.is_empty() {
            return Ok(());
        }
        let i = pool[self.rng.random_range(0..pool.len())];
        let (id, m) = (
            self.trades[i].id,
            self.trades[i].merchant.ok_or("no merchant")?,
        );
        let session = id.to_string();
        let b = self.node(B);
        let before = self.mta(&id).await?;
        let n = self.merchants.len();
        if n > 1 && self.rng.random_bool(0.2) {
            let other = (m + self.rng.random_range(1..n)) % n;
            let principal = self.merchants[other].principal.clone();
            let label = format!(
                "{} tries to end {id}, {}'s session",
                self.merchants[other].name, self.merchants[m].name
            );
            match b.sessions().end(&principal, &session).await {
                Err(ServiceError::NotFound { .. }) => self.note(format!("{label}: not found")),
                other => return Err(format!("{label}: answered {other:?}, not 'not found'")),
            }
            if self.mta(&id).await? != before {
                return Err(format!("{label}: refused, and the session changed at B"));
            }
        }
        let name = self.merchants[m].name.clone();
        let label = format!("{name} ends {id}");
        let principal = self.merchants[m].principal.clone();
        let result = b.sessions().end(&principal, &session).await;
        let after = self.mta(&id).await?;
        let Some(before) = before else {
            match result {
                Err(ServiceError::NotFound { .. }) if after.is_none() => {
                    self.note(format!("{label}: not found (B does not have it yet)"));
                    return Ok(());
                }
                other => {
                    return Err(format!(
                        "{label}: unknown at B, answered {other:?} (B now has {after:?})"
                    ));
                }
            }
        };
        let view = match result {
            Ok(view) => view,
            Err(e) => return Err(format!("{label}: {e} (B had it {})", before.state)),
        };
        let ended = MtaSession {
            merchant_ended: true,
            ..before.clone()
        };
        if after.as_ref() != Some(&ended) {
            return Err(format!(
                "{label}: B had {before:?} and has {after:?}: the same, ended"
            ));
        }
        if view.transaction != before.transaction().to_string()
            || view.state != before.state.as_str()
        {
            return Err(format!(
                "{label}: answered {} on {}, and B is {} on {}",
                view.state,
                view.transaction,
                before.state,
                before.transaction()
            ));
        }
        match self.trades[i].ended_at {
            Some(k) if before.merchant_ended => {
                self.note(format!("{label} again (ended on {k}): {}", view.state));
            }
            Some(k) => {
                return Err(format!(
                    "{label}: ended on {k} before, and B had forgotten it ({before:?})"
                ));
            }
            None if before.merchant_ended => {
                return Err(format!("{label}: B had it ended, and no one ended it"));
            }
            None => {
                self.note(format!(
                    "{label} on {}: {}",
                    before.transaction(),
                    view.state
                ));
                self.trades[i].ended_at = Some(before.txn);
            }
        }
        if self.rng.random_bool(0.3) {
            let again = b.sessions().end(&principal, &session).await;
            match again {
                Ok(v) if v == view => self.note(format!("  {label} again: the same")),
                other => {
                    return Err(format!(
                        "{label} again: answered {other:?}, not the same view ({view:?})"
                    ));
                }
            }
            let now = self.mta(&id).await?;
            if now != after {
                return Err(format!("{label} again: B changed ({now:?})"));
            }
        }
        if self.rng.random_bool(0.1) {
            self.crash(B).await?;
        }
        // Sometimes the customer, not knowing, asks for the next transaction at once.
        if ready.contains(&i) && self.rng.random_bool(0.5) {
            self.start_next(i).await?;
        }
        Ok(())
    }

    /// A merchant that acks by hand answers a session: mostly one it was informed of (accept
    /// or decline), sometimes one it answered before.
    pub(super) async fn merchant_answers(&mut self) -> Step<()> {
        let b = self.node(B);
        let mut informed = Vec::new();
        let mut answered = Vec::new();
        for m in 0..self.merchants.len() {
            let principal = self.merchants[m].principal.clone();
            for v in b
                .sessions()
                .list(&principal, None)
                .await
                .map_err(unexpected)?
            {
                let seq = v.session.parse::<SessionId>().map_err(unexpected)?.seq;
                if MtaState::parse(&v.state) == Some(MtaState::Informed) {
                    informed.push((seq, m, v.session));
                } else {
                    answered.push((seq, m, v.session));
                }
            }
        }
        informed.sort();
        answered.sort();
        let pool = if !informed.is_empty() && self.rng.random_bool(0.9) {
            informed
        } else {
            answered
        };
        if pool.is_empty() {
            return Ok(());
        }
        let (_, m, pick) = pool[self.rng.random_range(0..pool.len())].clone();
        let principal = self.merchants[m].principal.clone();
        let accept = self.rng.random_bool(0.85);
        let r = b.sessions().answer(&principal, &pick, accept).await;
        let verb = if accept { "accepts" } else { "declines" };
        let name = self.merchants[m].name.clone();
        match r {
            Ok(v) => self.note(format!("{name} {verb} {pick}: {}", v.state)),
            Err(e @ (ServiceError::Store(_) | ServiceError::Setup(_))) => {
                return Err(unexpected(e));
            }
            Err(e) => self.note(format!("{name} {verb} {pick}: refused ({e})")),
        }
        Ok(())
    }
}
