//! The parties of the trading simulation: customers at A open sessions (and retry when an
//! answer is lost), buy at merchant agents and post their records; merchants at B answer
//! sessions and post theirs. Each checks what it can of the answer: an opening beyond the
//! money is refused and changes nothing, a retry is the same session, the agent's tab and the
//! customer's wallet count the same purchases, a record sent again or a second different one
//! changes nothing.

use super::{A, B, NAMES, Step, Trade, TradeSim, Wallet, eur, unexpected};
use super::{LostOpen, OpenRequest};
use rand::RngExt;
use tally_kernel::Amount;
use tally_kernel::crypto::SigningKey;
use tally_ledger::LedgerError;
use tally_proto::session::conclusion::{Record, Side};
use tally_proto::session::ids::SessionId;
use tally_proto::session::purchase::{self, Purchase, PurchaseError, Tab, Taken};
use tally_proto::session::trade::{AmState, MtaSession, MtaState};
use tally_service::ServiceError;
use tally_wire::federation::OpenTradingSession;

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
                customer: r.customer,
                merchant: r.merchant,
                key: r.session_key,
                mac_key: r.mac_key,
                tab: None,
                wallet: Wallet::default(),
                customer_record: None,
                merchant_record: None,
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
            .filter(|&i| {
                let t = &self.trades[i];
                t.merchant.is_some()
                    && t.customer_record.is_none()
                    && t.merchant_record.is_none()
                    && t.tab.as_ref().is_none_or(|tab| !tab.closed)
            })
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let i = open[self.rng.random_range(0..open.len())];
        let (id, customer) = (self.trades[i].id, self.trades[i].customer);
        let principal = self.customers[customer].principal.clone();
        let view = self
            .node(A)
            .sessions()
            .show(&principal, &id.to_string())
            .await
            .map_err(unexpected)?;
        if AmState::parse(&view.state) != Some(AmState::Open) {
            return Ok(());
        }
        let transaction = id.first_transaction();
        if self.trades[i].tab.is_none() {
            let Some(s) = self.mta(&id).await? else {
                return Err(format!("{id} is open at A and unknown at B"));
            };
            if !matches!(s.state, MtaState::Open) {
                return Ok(());
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
            self.note(format!("{id}: tab opened ({})", s.merchant_deposit));
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
                Ok(Taken::New(_)) if !too_much => {
                    t.wallet.list = purchase::list_next(&t.wallet.list, wire.bytes.as_bytes());
                    t.wallet.spent += price;
                    t.wallet.count += 1;
                    if tab.list != hex::encode(t.wallet.list) || tab.spent != t.wallet.spent {
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

    /// B's operator settles a disputed session at a verdict from nothing up to its deposit
    /// (sometimes a second, different verdict, or one beyond the deposit: refused, nothing
    /// moves). Refused too when B holds the merchant's record alone, or the AM's hold is
    /// about to run out.
    pub(super) async fn settle(&mut self) -> Step<()> {
        let mut disputed = Vec::new();
        for t in &self.trades {
            if let Some(m) = self.mta(&t.id).await?
                && matches!(m.state, MtaState::Disputed | MtaState::Cleared)
                && (m.state == MtaState::Disputed || m.verdict.is_some())
            {
                disputed.push((t.id, m));
            }
        }
        if disputed.is_empty() {
            return Ok(());
        }
        let (id, m) = disputed.swap_remove(self.rng.random_range(0..disputed.len()));
        let deposit = m.merchant_deposit;
        let minor = match self.rng.random_range(0..10) {
            0 => deposit.minor + 1,
            1 => 0,
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
        match result {
            Err(e @ (ServiceError::Store(_) | ServiceError::Setup(_))) => {
                Err(format!("{label}: {}", unexpected(e)))
            }
            Ok(view) => {
                self.note(format!("{label}: {}", view.state));
                let after = self.mta(&id).await?.ok_or("the session is gone")?;
                if after.verdict.is_none_or(|v| v.minor != minor)
                    || m.customer_record.is_none()
                    || minor > deposit.minor
                {
                    return Err(format!("{label}: taken as {:?}", after.verdict));
                }
                self.outcome.verdicts += 1;
                Ok(())
            }
            Err(e) => {
                self.note(format!("{label}: refused ({e})"));
                let after = self.mta(&id).await?.ok_or("the session is gone")?;
                if after != m {
                    return Err(format!("{label}: refused, yet the session changed"));
                }
                Ok(())
            }
        }
    }

    /// B's session, as its store holds it.
    pub(super) async fn mta(&self, id: &SessionId) -> Step<Option<MtaSession>> {
        let row = self
            .node(B)
            .store()
            .trade("mta", &id.to_string())
            .await
            .map_err(unexpected)?;
        row.map(|r| serde_json::from_str(&r.machine).map_err(unexpected))
            .transpose()
    }

    /// A record of `side` for trade `i`: what that side counted, or (`!honest`) something else.
    fn record(&self, i: usize, side: Side, honest: bool) -> Step<Vec<u8>> {
        let t = &self.trades[i];
        let merchant = &self.merchants[t.merchant.ok_or("no merchant")?];
        let (total, count, list) = match (side, &t.tab) {
            (Side::Customer, _) => (t.wallet.spent, t.wallet.count, hex::encode(t.wallet.list)),
            (Side::Merchant, Some(tab)) => (tab.spent, tab.count, tab.list.clone()),
            (Side::Merchant, None) => (0, 0, hex::encode([0u8; 32])),
        };
        let (count, list) = if honest {
            (count, list)
        } else {
            (count + 1, hex::encode([0xabu8; 32]))
        };
        let record = Record {
            transaction: t.id.first_transaction(),
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
