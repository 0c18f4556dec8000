//! The invariants of trading sessions, checked on both nodes after every step, read from the
//! stores as they are (with lost answers, crashes and a faulty wire the simulator cannot know
//! which steps took effect, but the data must be consistent whatever did). The clearing is in
//! two phases: B sends it (`clearing`), A posts its hold (`cleared`) and answers
//! `session_posted`, then B pays the merchant (`cleared`); or A's hold is gone, it answers
//! `session_released` and B pays nothing (`expired`, the clearing kept).
//!
//! 1. each node's ledger balances (per currency, debits equal credits, posted and pending);
//! 2. at A, every session's hold fits its state: `held`, `open`, `concluding`, `disputed`: the
//!    deposit pending (or expired); `aborted`, `expired`: released (voided or expired), nothing
//!    posted; `cleared`: exactly the customer's total posted into A's account owed to B (a
//!    total of zero voids the hold), with one withdrawal billing record (and no other state
//!    has one). Each customer's account holds what it was paid less the totals cleared, and
//!    holds pending exactly the pending deposits; A's account owed to B holds exactly the
//!    same, from the other side;
//! 3. at B, the clearing of a `clearing`, `cleared` or released `expired` session is what its
//!    records say (both agreeing, the customer's alone, or a merchant's claiming nothing) or
//!    its verdict, within the deposit, the customer's total the merchant's converted back at
//!    the session's rate; no other state has one. Only a `cleared` session paid its merchant,
//!    exactly the clearing's total, with one deposit billing record and one receipt (signed by
//!    B, of that clearing); nothing else paid anyone, billed or has a receipt: each merchant's
//!    account holds the totals of its cleared transactions, B's account owed by A (per
//!    currency) owes exactly the same. A's receipts are B's (the same text), each of a
//!    transaction cleared at A; with the wire quiet A has every receipt B made;
//! 4. across the nodes, on A's current transaction: A `cleared` ⇒ B `clearing` or `cleared`
//!    with the same clearing (transaction, totals, count, list, verdict) at the same rate;
//!    B `cleared` ⇒ A `cleared` (B pays only what A posted); A `open` or `concluding` ⇒ B
//!    acked; A `disputed` ⇒ B `disputed`, or `clearing` on a verdict on its way to A; B
//!    `clearing` without a verdict ⇒ A not `disputed`; B released (`expired` with a clearing)
//!    ⇒ A `expired` or `aborted`; B `expired` otherwise ⇒ A neither `cleared` nor `disputed`;
//!    A `aborted` ⇒ B neither `cleared` nor holding the customer's record (it reaches B only
//!    through A, which then concludes); B `disputed` ⇒ A forwarded the customer's record, or
//!    B had the merchant's alone at its deadline; B `refused` ⇒ A never `open`; B never has a
//!    session A did not start. Always, per session, what B paid its merchant for A's customer
//!    (the customer's side of each clearing it paid) is at most what A posted. Once the wire
//!    is quiet, no answer is missing: A is not `held` when B answered, not `concluding` when B
//!    concluded (`clearing`, `cleared`, `disputed`, `expired`), B has the record of every
//!    session A forwarded (unless it came past B's deadline), no session at B is `clearing`
//!    (A's word on it reached B: A never refuses a clearing), and the operators agree on what
//!    A owes B (what A posted is what B paid, converted back at each transaction's rate);
//! 5. nothing of the purchases reaches either node (only the list hash): no item's text is in
//!    either node's sessions, inbox, outbox or journal;
//! 6. a session's transactions (M4): 2 to 4 are of each session's current transaction; each
//!    one before it ended cleared at A (with the clearing both nodes had when the next one
//!    started, kept by the simulator), its own hold posted for its customer total alone (or
//!    voided), billed once at A under its label (`<session>` for the first, `<session>.<n>`
//!    after), paid, billed and receipted once at B, and counted in the accounts' sums of 2
//!    and 3; at most one hold per session is pending, its current transaction's; every
//!    transfer resolving a hold at A resolves one of the sessions' transactions' holds; no
//!    billing record names a transaction no session has. A is on B's transaction or one ahead
//!    of it (B `clearing` or `cleared` on the one before with A's clearing of it, A waiting
//!    for the answer to the next one's initiation or given up on it), never behind; once the
//!    wire is quiet, B has A's current transaction unless A's wait for it ran out;
//! 7. a session its merchant ended on transaction k (B took the word, M4): B keeps the word
//!    (`merchant_ended`, across crashes) and has no transaction after k save k + 1 refused
//!    (`ended`); A has none after k save k + 1, waiting for B's answer (`held`) or `aborted`,
//!    its refusal `ended` (B's, which B then has) or `unanswered` (A gave up first); its hold
//!    is then released, never posted (2). No other session is ended at B, and neither node
//!    has a refusal `ended` elsewhere.
//!
//! And at the end of a run ([`ended`]): every session at A has ended, consistently with B, and
//! none at B waits for A's word on its clearing; a next transaction started after its
//! merchant ended the session is aborted at A, refused (ended) at B unless A gave up on it
//! first, its hold voided or lapsed and nothing posted.

use super::{A, B, NAMES, TradeSim};
use crate::check::{Broken, int, rows, text};
use std::collections::{BTreeMap, BTreeSet};
use tally_kernel::{Amount, Id, Rate, Timestamp};
use tally_ledger::{Event, TransferKind, TransferState};
use tally_proto::session::conclusion::{Clearing, customer_total};
use tally_proto::session::ids::{SessionId, TransactionId};
use tally_proto::session::receipt::SessionReceipt;
use tally_proto::session::trade::{self, AmSession, AmState, MtaSession, MtaState, Refusal};
use tally_service::Node;

/// Both nodes' sessions, by id.
pub(super) type Sessions = (BTreeMap<String, AmSession>, Mtas);
/// B's sessions, by id.
type Mtas = BTreeMap<String, MtaSession>;

/// Every invariant, after a step; the first broken one.
pub(super) async fn all(sim: &TradeSim) -> Result<(), Broken> {
    let (a, b) = (sim.node(A), sim.node(B));
    for (site, node) in [(A, &a), (B, &b)] {
        crate::check::ledger_balances(node)
            .await
            .map_err(|e| format!("at {}: {e}", NAMES[site]))?;
    }
    let am = at_a(sim, &a).await?;
    let (mta, receipts) = at_b(sim, &b).await?;
    let quiet = sim.quiet().await?;
    receipts_at_a(&a, &am, &receipts, quiet).await?;
    across(&am, &mta, &sim.done, quiet, sim.now())?;
    ended_by_merchants(sim, &am, &mta)?;
    private(sim, &a, A).await?;
    private(sim, &b, B).await
}

/// Both nodes' sessions as their stores hold them (the row's state must be its machine's).
pub(super) async fn sessions(sim: &TradeSim) -> Result<Sessions, Broken> {
    Ok((
        machines(&sim.node(A), "am").await?,
        machines(&sim.node(B), "mta").await?,
    ))
}

async fn machines<T: Stated>(node: &Node, role: &str) -> Result<BTreeMap<String, T>, Broken> {
    let mut out = BTreeMap::new();
    for r in rows(
        node,
        &format!("SELECT session, state, machine FROM trading_sessions WHERE role = '{role}'"),
    )
    .await?
    {
        let session = text(&r, "session")?;
        let s = T::decode(&text(&r, "machine")?)
            .map_err(|e| format!("{role} session {session} does not decode: {e}"))?;
        if s.state_name() != text(&r, "state")? {
            return Err(format!(
                "{role} session {session}'s row says {} but its machine {}",
                text(&r, "state")?,
                s.state_name()
            ));
        }
        out.insert(session, s);
    }
    Ok(out)
}

/// A machine as a row stores it.
trait Stated: Sized {
    fn decode(json: &str) -> serde_json::Result<Self>;
    fn state_name(&self) -> &'static str;
}

impl Stated for AmSession {
    fn decode(json: &str) -> serde_json::Result<Self> {
        serde_json::from_str(json)
    }
    fn state_name(&self) -> &'static str {
        self.state.as_str()
    }
}

impl Stated for MtaSession {
    fn decode(json: &str) -> serde_json::Result<Self> {
        serde_json::from_str(json)
    }
    fn state_name(&self) -> &'static str {
        self.state.as_str()
    }
}

/// Billing records of `kind` per session: (amount, currency) each.
async fn bills(node: &Node, kind: &str) -> Result<BTreeMap<String, Vec<(i64, String)>>, Broken> {
    let mut out: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for r in rows(
        node,
        &format!("SELECT session, amount, currency FROM billing_records WHERE kind = '{kind}'"),
    )
    .await?
    {
        out.entry(text(&r, "session")?)
            .or_default()
            .push((int(&r, "amount")?, text(&r, "currency")?));
    }
    Ok(out)
}

/// The peer accounts of `direction` at a node.
async fn peer_accounts(node: &Node, direction: &str) -> Result<Vec<Id>, Broken> {
    Ok(node
        .store()
        .peer_accounts()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|p| p.direction == direction)
        .map(|p| p.account)
        .collect())
}

async fn account(node: &Node, id: Id) -> Result<tally_ledger::Account, Broken> {
    node.store()
        .account(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("account {id} vanished"))
}

/// Invariant 2, at A.
async fn at_a(sim: &TradeSim, a: &Node) -> Result<BTreeMap<String, AmSession>, Broken> {
    let keys: BTreeMap<String, String> = rows(
        a,
        "SELECT session, client_key FROM trading_sessions WHERE role = 'am'",
    )
    .await?
    .iter()
    .map(|r| Ok((text(r, "session")?, text(r, "client_key")?)))
    .collect::<Result<_, Broken>>()?;
    let am: BTreeMap<String, AmSession> = machines(a, "am").await?;
    let withdrawals = bills(a, "withdrawal").await?;
    // Per account: posted and pending, as the sessions say.
    let mut posted: BTreeMap<Id, i64> = BTreeMap::new();
    let mut pending: BTreeMap<Id, i64> = BTreeMap::new();
    // Every session's hold of every transaction, and how many transfers resolve them.
    let mut holds = 0usize;
    let mut resolutions = 0usize;
    let mut labels = BTreeSet::new();
    for (id, s) in &am {
        let key = keys.get(id).ok_or("a session without its opening key")?;
        // The transactions before the current one ended cleared (the next one starts only
        // then): each posted its total from its own hold, billed once.
        let mut live = Vec::new();
        for seq in 1..=s.txn {
            let t = TransactionId { session: s.id, seq };
            let step = if seq == 1 {
                key.clone()
            } else {
                format!(":session_next:{t}")
            };
            let (h, resolved) = hold(a, &step)
                .await
                .map_err(|e| format!("transaction {t} at A: {e}"))?;
            holds += 1;
            resolutions += resolved.len();
            let label = trade::label(t);
            labels.insert(label.clone());
            let bill = withdrawals.get(&label).cloned().unwrap_or_default();
            if h.state == TransferState::Pending {
                live.push(t);
                *pending.entry(s.account).or_default() += h.amount_minor;
                *pending.entry(s.owed).or_default() += h.amount_minor;
            }
            if seq == s.txn {
                current(s, &h, &resolved, &bill, a.now(), &mut posted)?;
                continue;
            }
            let done = sim.done.get(&label).ok_or_else(|| {
                format!(
                    "session {id} is on {} at A, and the simulator never saw {t} cleared",
                    s.transaction()
                )
            })?;
            let paid = done.customer_total();
            let own = done.clearing.transaction == t
                && h.kind == TransferKind::Pending
                && h.debit_account == s.account
                && h.credit_account == s.owed
                && h.amount_minor == done.deposit
                && h.currency == s.deposit.currency;
            let fits = if paid > 0 {
                h.state == TransferState::Posted
                    && resolved == [(TransferKind::PostPending.as_str().to_string(), paid)]
            } else {
                h.state == TransferState::Voided && resolved.len() <= 1
            };
            let billed = bill == [(paid, s.deposit.currency.code().to_string())];
            if !(own && fits && billed) {
                return Err(format!(
                    "{t} cleared at A for {paid} of {} before the session's next transaction, \
                     and its hold is {h:?} (resolved by {resolved:?}, billed {bill:?}): its \
                     own deposit, posted for its total alone, billed once",
                    done.deposit
                ));
            }
            *posted.entry(s.account).or_default() += paid;
            *posted.entry(s.owed).or_default() += paid;
        }
        if live.len() > 1 {
            return Err(format!(
                "session {id} holds the deposits of {live:?} at once: one at most, its current \
                 transaction's"
            ));
        }
        if live.first().is_some_and(|t| *t != s.transaction()) {
            return Err(format!(
                "session {id} is on {} and still holds the deposit of {live:?}",
                s.transaction()
            ));
        }
    }
    // Nothing resolves a hold that is no session's transaction's (a clearing posts only from
    // its own transaction's hold, checked above), and nothing is billed for a transaction
    // no session at A has.
    let all = rows(
        a,
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM transfers WHERE pending_id IS NOT NULL",
    )
    .await?;
    let all = all.first().map(|r| int(r, "n")).transpose()?.unwrap_or(0);
    if usize::try_from(all).ok() != Some(resolutions) {
        return Err(format!(
            "A resolved {all} holds' transfers, and the {holds} holds of its sessions' \
             transactions account for {resolutions}"
        ));
    }
    if let Some(stray) = withdrawals.keys().find(|l| !labels.contains(*l)) {
        return Err(format!(
            "A billed a withdrawal for {stray}, no transaction of its sessions"
        ));
    }
    for (i, c) in sim.customers.iter().enumerate() {
        let acc = account(a, c.account).await?;
        let spent = posted.get(&c.account).copied().unwrap_or(0);
        let held = pending.get(&c.account).copied().unwrap_or(0);
        if acc.credits_posted != c.funded
            || acc.debits_posted != spent
            || acc.debits_pending != held
            || acc.credits_pending != 0
        {
            return Err(format!(
                "cust{i}'s account ({acc:?}) is not {} paid in, {spent} spent in cleared \
                 sessions and {held} held by live ones",
                c.funded
            ));
        }
    }
    for owed in peer_accounts(a, "owed_to").await? {
        let acc = account(a, owed).await?;
        let due = posted.get(&owed).copied().unwrap_or(0);
        let held = pending.get(&owed).copied().unwrap_or(0);
        if acc.credits_posted != due
            || acc.credits_pending != held
            || acc.debits_posted != 0
            || acc.debits_pending != 0
        {
            return Err(format!(
                "A's account owed to B ({acc:?}) is not the {due} cleared and {held} held"
            ));
        }
    }
    Ok(am)
}

/// The hold of next transaction `t` at A, and the transfers that resolved it.
pub(super) async fn next_hold(
    a: &Node,
    t: TransactionId,
) -> Result<(tally_ledger::Transfer, Vec<(String, i64)>), Broken> {
    hold(a, &format!(":session_next:{t}"))
        .await
        .map_err(|e| format!("transaction {t} at A: {e}"))
}

/// The hold of the step keyed `step` at A (the opening's, or a next transaction's), and the
/// transfers that resolved it (kind, amount).
async fn hold(
    a: &Node,
    step: &str,
) -> Result<(tally_ledger::Transfer, Vec<(String, i64)>), Broken> {
    let Some(Event::Transfers { transfers }) = a
        .store()
        .journal_event(step)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Err("no hold".into());
    };
    let hold = transfers.first().ok_or("an empty hold")?.id;
    let h = a
        .store()
        .transfer(hold)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("a hold vanished")?;
    let resolved = rows(
        a,
        &format!(
            "SELECT kind, amount_minor FROM transfers WHERE pending_id = x'{}'",
            hex::encode(hold.as_bytes())
        ),
    )
    .await?
    .iter()
    .map(|r| Ok((text(r, "kind")?, int(r, "amount_minor")?)))
    .collect::<Result<Vec<_>, Broken>>()?;
    Ok((h, resolved))
}

/// Invariant 2 for a session's current transaction at A: its hold fits its state; what it
/// posted is added to `posted`.
fn current(
    s: &AmSession,
    h: &tally_ledger::Transfer,
    resolved: &[(String, i64)],
    bill: &[(i64, String)],
    now: Timestamp,
    posted: &mut BTreeMap<Id, i64>,
) -> Result<(), Broken> {
    let id = s.transaction();
    if h.kind != TransferKind::Pending
        || h.debit_account != s.account
        || h.credit_account != s.owed
        || h.amount_minor != s.deposit.minor
        || h.currency != s.deposit.currency
    {
        return Err(format!(
            "{id}'s hold is not its deposit from the customer to A's account owed to B: {h:?}"
        ));
    }
    let state = s.state;
    let hold_state = h.state;
    let broken = |why: &str| {
        format!(
            "{id} is {state} at A and its hold is {} (resolved by {resolved:?}, billed \
             {bill:?}): {why}",
            hold_state.as_str()
        )
    };
    if matches!(state, AmState::Cleared) {
        let c = s.clearing.as_ref().ok_or_else(|| broken("no clearing"))?;
        let paid = c.customer_total.minor;
        let fits = if paid > 0 {
            hold_state == TransferState::Posted
                && resolved == [(TransferKind::PostPending.as_str().to_string(), paid)]
        } else {
            hold_state == TransferState::Voided
        };
        if !fits {
            return Err(broken("a cleared hold is posted for the customer's total"));
        }
        if c.customer_total.currency != s.deposit.currency || paid > s.deposit.minor {
            return Err(broken("the customer's total is within the deposit"));
        }
        if bill != [(paid, s.deposit.currency.code().to_string())] {
            return Err(broken("a cleared session is billed once, its total"));
        }
        *posted.entry(s.account).or_default() += paid;
        *posted.entry(s.owed).or_default() += paid;
    } else {
        if hold_state == TransferState::Posted || !bill.is_empty() {
            return Err(broken("only a cleared session posts or bills"));
        }
        // Released: voided, or expired (marked so, or past its expiry and not yet swept:
        // the ledger posts and voids it no more).
        let lapsed = h.expires_at.is_some_and(|at| at <= now);
        if matches!(state, AmState::Aborted | AmState::Expired)
            && hold_state == TransferState::Pending
            && !lapsed
        {
            return Err(broken("an aborted or expired session releases its deposit"));
        }
        let live = matches!(
            state,
            AmState::Held | AmState::Open | AmState::Concluding | AmState::Disputed
        );
        if live && hold_state == TransferState::Voided {
            return Err(broken("a live session keeps its deposit until it expires"));
        }
    }
    Ok(())
}

/// Invariant 3, at B; with B's receipts (transaction id → the receipt's text).
async fn at_b(sim: &TradeSim, b: &Node) -> Result<(Mtas, BTreeMap<String, String>), Broken> {
    let mta: BTreeMap<String, MtaSession> = machines(b, "mta").await?;
    let deposits = bills(b, "deposit").await?;
    let mut paid: BTreeMap<Id, i64> = BTreeMap::new();
    let mut labels = BTreeSet::new();
    // What B paid, by transaction id: the clearing (and its rate, for the current one).
    let mut cleared: BTreeMap<String, (Clearing, Option<Rate>)> = BTreeMap::new();
    for (id, s) in &mta {
        // The transactions before the current one ended cleared at A (A starts the next one
        // only then) and B paid them before it took the next one (on A's `session_posted`, or
        // on the next one's initiation, which stands for it): each paid its merchant once,
        // what the clearing of both nodes said.
        for seq in 1..s.txn {
            let t = TransactionId { session: s.id, seq };
            let label = trade::label(t);
            labels.insert(label.clone());
            let done = sim.done.get(&label).ok_or_else(|| {
                format!(
                    "session {id} is on {} at B, and the simulator never saw {t} cleared",
                    s.transaction()
                )
            })?;
            let bill = deposits.get(&label).cloned().unwrap_or_default();
            let total = done.clearing.total;
            let billed_ok = bill == [(total.minor, total.currency.code().to_string())];
            let (true, true, Some(to), Some(from)) = (
                billed_ok,
                done.clearing.transaction == t,
                done.account,
                done.owed_by,
            ) else {
                return Err(format!(
                    "{t} cleared ({:?}) before the session's next transaction, and is billed \
                     {bill:?} at B: paid once, its total",
                    done.clearing
                ));
            };
            *paid.entry(to).or_default() += total.minor;
            *paid.entry(from).or_default() += total.minor;
            cleared.insert(t.to_string(), (done.clearing.clone(), None));
        }
        let label = trade::label(s.transaction());
        labels.insert(label.clone());
        let bill = deposits.get(&label).cloned().unwrap_or_default();
        let broken = |why: &str| {
            format!(
                "session {id} is {} at B (verdict {:?}, clearing {:?}, records {:?} and {:?}, \
                 deposit {}, billed {bill:?}): {why}",
                s.state,
                s.verdict,
                s.clearing,
                s.customer_record,
                s.merchant_record,
                s.merchant_deposit
            )
        };
        // The clearing B sent A (`clearing` on): on records that agree, the customer's alone
        // or a merchant's claiming nothing at the deadline, or a verdict; kept when A answered
        // that its hold was gone (`expired`, nothing paid).
        match (s.state, &s.clearing) {
            (MtaState::Clearing | MtaState::Cleared, None) => {
                return Err(broken("no clearing"));
            }
            (MtaState::Clearing | MtaState::Cleared | MtaState::Expired, Some(c)) => {
                fits(s, c).map_err(|why| broken(&why))?;
            }
            (_, Some(_)) => return Err(broken("a clearing in this state")),
            (_, None) if s.verdict.is_some() => {
                return Err(broken("a verdict is sent as a clearing"));
            }
            (_, None) => {}
        }
        if !matches!(s.state, MtaState::Cleared) {
            if !bill.is_empty() {
                return Err(broken("only a cleared session is paid and billed"));
            }
            if matches!(s.state, MtaState::Refused) && s.refusal.is_none() {
                return Err(broken("refused without a reason"));
            }
            continue;
        }
        // Paid once A posted: the clearing's total, billed once.
        let (Some(c), Some(to), Some(from)) = (&s.clearing, s.account, s.owed_by) else {
            return Err(broken("paid without its clearing or its accounts"));
        };
        if bill != [(c.total.minor, c.total.currency.code().to_string())] {
            return Err(broken("a cleared session is billed once, its total"));
        }
        *paid.entry(to).or_default() += c.total.minor;
        *paid.entry(from).or_default() += c.total.minor;
        cleared.insert(s.transaction().to_string(), (c.clone(), Some(s.rate)));
    }
    if let Some(stray) = deposits.keys().find(|l| !labels.contains(*l)) {
        return Err(format!(
            "B billed a deposit for {stray}, no transaction of its sessions"
        ));
    }
    for m in &sim.merchants {
        let acc = account(b, m.account).await?;
        let due = paid.get(&m.account).copied().unwrap_or(0);
        if acc.credits_posted != due
            || acc.debits_posted != 0
            || acc.debits_pending != 0
            || acc.credits_pending != 0
        {
            return Err(format!(
                "{}'s account ({acc:?}) is not the {due} of its cleared sessions",
                m.name
            ));
        }
    }
    for owed in peer_accounts(b, "owed_by").await? {
        let acc = account(b, owed).await?;
        let due = paid.get(&owed).copied().unwrap_or(0);
        if acc.debits_posted != due
            || acc.credits_posted != 0
            || acc.debits_pending != 0
            || acc.credits_pending != 0
        {
            return Err(format!(
                "B's account owed by A in {} ({acc:?}) is not the {due} paid out",
                acc.currency
            ));
        }
    }
    // One receipt per transaction B paid, made in the step that paid it: signed by B, of the
    // clearing it paid (at the rate of the current transaction).
    let mut receipts = BTreeMap::new();
    for r in rows(b, "SELECT transaction_id, receipt FROM session_receipts").await? {
        let t = text(&r, "transaction_id")?;
        let receipt = text(&r, "receipt")?;
        let Some((c, rate)) = cleared.get(&t) else {
            return Err(format!("B has a receipt of {t}, which it did not pay"));
        };
        let opened = SessionReceipt::open(&receipt)
            .map_err(|e| format!("B's receipt of {t} does not open: {e}"))?;
        if opened.issuer != sim.sites[B].id
            || &opened.clearing != c
            || rate.is_some_and(|rate| rate != opened.rate)
        {
            return Err(format!(
                "B's receipt of {t} is {opened:?}: B's, of the clearing it paid ({c:?} at \
                 {rate:?})"
            ));
        }
        receipts.insert(t, receipt);
    }
    if let Some(t) = cleared.keys().find(|t| !receipts.contains_key(*t)) {
        return Err(format!("B paid {t} and has no receipt of it"));
    }
    Ok((mta, receipts))
}

/// Whether `c`, the clearing B sent A, is what B's session says: its transaction, within
/// the deposit at the session's rate (the customer's total the merchant's converted back,
/// rounded up), with the session's accounts; on records that agree, on the customer's alone,
/// or on a merchant's claiming nothing (not a verdict); or the operator's verdict (the count
/// and list the merchant's record's, else the customer's, else none).
fn fits(s: &MtaSession, c: &Clearing) -> Result<(), String> {
    let back = customer_total(c.total.minor, s.rate).filter(|&t| t <= s.deposit.minor);
    let within = c.transaction == s.transaction()
        && c.total.currency == s.merchant_deposit.currency
        && (0..=s.merchant_deposit.minor).contains(&c.total.minor)
        && back.is_some_and(|t| c.customer_total == Amount::new(t, s.deposit.currency))
        && s.account.is_some()
        && s.owed_by.is_some();
    if !within {
        return Err(format!(
            "the clearing {c:?} is this transaction's, within the deposit at the rate {:?}",
            s.rate
        ));
    }
    let says = |r: &tally_proto::session::conclusion::Record| {
        r.transaction == c.transaction && r.count == c.count && r.list == c.list
    };
    let on = if c.verdict {
        let basis = s.merchant_record.as_ref().or(s.customer_record.as_ref());
        s.verdict == Some(c.total)
            && basis.map_or(c.count == 0 && c.list == hex::encode([0u8; 32]), says)
    } else {
        let basis = match (&s.customer_record, &s.merchant_record) {
            (Some(a), Some(m)) if a.agrees_with(m) => Some(m),
            (Some(a), None) => Some(a),
            (None, Some(m)) if m.total.minor == 0 && m.count == 0 => Some(m),
            _ => None,
        };
        s.verdict.is_none() && basis.is_some_and(|r| r.total == c.total && says(r))
    };
    if !on {
        return Err(format!(
            "the clearing {c:?} is what both records say, the customer's alone, a merchant's \
             claiming nothing, or the verdict"
        ));
    }
    Ok(())
}

/// Invariant 3 for A's receipts: each is one B made (the same text), of a transaction cleared
/// at A (before the current one, or the current one with the receipt's clearing); with the
/// wire quiet, A has every receipt B made.
async fn receipts_at_a(
    a: &Node,
    am: &BTreeMap<String, AmSession>,
    at_b: &BTreeMap<String, String>,
    quiet: bool,
) -> Result<(), Broken> {
    let mut got = BTreeSet::new();
    for r in rows(a, "SELECT transaction_id, receipt FROM session_receipts").await? {
        let t = text(&r, "transaction_id")?;
        let receipt = text(&r, "receipt")?;
        if at_b.get(&t) != Some(&receipt) {
            return Err(format!("A has a receipt of {t} that B did not make"));
        }
        let id: TransactionId = t.parse().map_err(|e| format!("A's receipt of {t}: {e}"))?;
        let opened = SessionReceipt::open(&receipt)
            .map_err(|e| format!("A's receipt of {t} does not open: {e}"))?;
        let s = am
            .get(&id.session.to_string())
            .ok_or_else(|| format!("A has a receipt of {t}, of no session of its own"))?;
        let cleared = id.seq < s.txn
            || (id.seq == s.txn
                && s.state == AmState::Cleared
                && s.clearing.as_ref() == Some(&opened.clearing));
        if !cleared {
            return Err(format!(
                "A has a receipt of {t} ({:?}) and is {} on {} ({:?}): a receipt of a \
                 transaction A cleared",
                opened.clearing,
                s.state,
                s.transaction(),
                s.clearing
            ));
        }
        got.insert(t);
    }
    if quiet && let Some(t) = at_b.keys().find(|t| !got.contains(*t)) {
        return Err(format!("with the wire quiet, B's receipt of {t} reached A"));
    }
    Ok(())
}

/// Invariant 4, across the nodes.
fn across(
    am: &BTreeMap<String, AmSession>,
    mta: &Mtas,
    done: &BTreeMap<String, super::Done>,
    quiet: bool,
    now: Timestamp,
) -> Result<(), Broken> {
    // What A posted of the transactions before a node's current one (they ended cleared at A,
    // and B paid each before it took the next one: checked by `at_b`).
    let before = |id: &SessionId, txn: u64| -> i64 {
        (1..txn)
            .filter_map(|seq| done.get(&trade::label(TransactionId { session: *id, seq })))
            .map(super::Done::customer_total)
            .sum()
    };
    // What A booked as owed to B, and what B paid its merchants for A's customers (the
    // customer's side of each clearing B paid).
    let (mut booked, mut claimed) = (0i64, 0i64);
    for (id, s) in am {
        // B is on A's current transaction or, while A waits for the answer to the next one's
        // initiation (or gave up on it), on the one before, with A's clearing of it (paid, or
        // waiting for A's `session_posted`): never ahead of A, never more than one behind.
        // With the wire quiet the initiation reached B, unless A's wait ran out (it arrived
        // too late to be taken).
        if let Some(b) = mta.get(id)
            && b.txn != s.txn
        {
            let broken = |why: &str| {
                format!(
                    "session {id} is {} on {} at A and {} on {} at B: {why}",
                    s.state,
                    s.transaction(),
                    b.state,
                    b.transaction()
                )
            };
            let behind = b.txn + 1 == s.txn
                && matches!(b.state, MtaState::Clearing | MtaState::Cleared)
                && matches!(s.state, AmState::Held | AmState::Aborted);
            if !behind {
                return Err(broken(
                    "B is on A's transaction, or on the one before (clearing or cleared) while \
                     A waits for the next one's answer",
                ));
            }
            let cleared = done
                .get(&trade::label(b.transaction()))
                .map(|d| &d.clearing);
            if b.clearing.as_ref() != cleared {
                return Err(broken(&format!(
                    "B's clearing of the transaction before ({:?}) is A's ({cleared:?})",
                    b.clearing
                )));
            }
            let gave_up = s.state == AmState::Aborted || now.as_micros() >= s.ack_by;
            if quiet && !gave_up {
                return Err(broken(
                    "with the wire quiet, the next transaction's initiation reached B",
                ));
            }
        }
        // The checks below are of A's current transaction, as B has it.
        let t = mta.get(id).filter(|b| b.txn == s.txn);
        let at_b = t.map_or("unknown", |t| t.state.as_str());
        let broken = |why: &str| format!("session {id} is {} at A and {at_b} at B: {why}", s.state);
        // A posts what B cleared: B has the same clearing (the same transaction, totals,
        // count, list and verdict), at the same rate, and pays it once A's word reaches it.
        if matches!(s.state, AmState::Cleared) {
            let (Some(c), Some(t)) = (&s.clearing, t) else {
                return Err(broken(&format!(
                    "A clears what B cleared (A's clearing {:?}; B on {:?})",
                    s.clearing,
                    mta.get(id).map(MtaSession::transaction)
                )));
            };
            if !matches!(t.state, MtaState::Clearing | MtaState::Cleared)
                || t.clearing.as_ref() != Some(c)
                || s.rate != Some(t.rate)
            {
                return Err(broken(&format!(
                    "A clears what B cleared: the same clearing at both ({c:?} at A at rate \
                     {:?}, {:?} at B at rate {:?})",
                    s.rate, t.clearing, t.rate
                )));
            }
        }
        let acked = t.is_some_and(|t| !matches!(t.state, MtaState::Informed | MtaState::Refused));
        if matches!(s.state, AmState::Open | AmState::Concluding) && !acked {
            return Err(broken("A opens only what B acked"));
        }
        // (or settled since: the verdict on its way to A)
        if matches!(s.state, AmState::Disputed)
            && !t.is_some_and(|t| {
                t.state == MtaState::Disputed
                    || (t.state == MtaState::Clearing
                        && t.verdict.is_some()
                        && t.clearing.as_ref().is_some_and(|c| c.verdict))
            })
        {
            return Err(broken(
                "A disputes what B disputed (or settled since: its verdict on its way to A)",
            ));
        }
        // B may end a session A gave up on only with the merchant's record alone (a dispute
        // at B's deadline, before A's word reached it, or a clearing of it A releases):
        // nothing is paid either way.
        if matches!(s.state, AmState::Aborted)
            && t.is_some_and(|t| t.state == MtaState::Cleared || t.customer_record.is_some())
        {
            return Err(broken(
                "B concludes only what A forwarded, and pays nothing A gave up on",
            ));
        }
        if quiet {
            let answered = t.is_some_and(|t| !matches!(t.state, MtaState::Informed));
            // (unless A's wait is over: it refused a late answer and aborts at its next timer)
            if matches!(s.state, AmState::Held) && answered && now.as_micros() < s.ack_by {
                return Err(broken("with the wire quiet, B's answer reached A"));
            }
            let concluded = t.is_some_and(|t| {
                matches!(
                    t.state,
                    MtaState::Clearing | MtaState::Cleared | MtaState::Disputed | MtaState::Expired
                )
            });
            if matches!(s.state, AmState::Concluding) && concluded {
                return Err(broken("with the wire quiet, B's conclusion reached A"));
            }
            // (unless it came past B's conclusion deadline: B refused it, and its timer ends
            // the session)
            let forwarded = t.is_some_and(|t| {
                t.customer_record.is_some()
                    || (t.conclude_by > 0 && now.as_micros() >= t.conclude_by)
            });
            if matches!(s.state, AmState::Concluding) && !forwarded {
                return Err(broken(
                    "with the wire quiet, the customer's record reached B (before its deadline)",
                ));
            }
        }
        // B never pays what A did not post: per session, what B paid its merchant for this
        // customer (converted back at each transaction's rate) is at most what A posted.
        let posted = before(&s.id, s.txn)
            + s.clearing
                .as_ref()
                .filter(|_| s.state == AmState::Cleared)
                .map_or(0, |c| c.customer_total.minor);
        let paid = mta.get(id).map_or(0, |t| {
            before(&t.id, t.txn)
                + t.clearing
                    .as_ref()
                    .filter(|_| t.state == MtaState::Cleared)
                    .map_or(0, |c| c.customer_total.minor)
        });
        if paid > posted {
            return Err(broken(&format!(
                "B paid its merchant {paid} EUR minor for this session's customer, and A \
                 posted {posted}: B pays only what A posted"
            )));
        }
        booked += posted;
        claimed += paid;
    }
    // With the wire quiet every `session_posted` reached B, which paid it: the two operators
    // agree on what A owes.
    if quiet && booked != claimed {
        return Err(format!(
            "with the wire quiet, A owes B {booked} EUR minor by A's books, and {claimed} by \
             what B paid its merchants for A's customers"
        ));
    }
    for (id, t) in mta {
        let Some(s) = am.get(id) else {
            return Err(format!("session {id} is {} at B and unknown at A", t.state));
        };
        let broken = |why: &str| {
            format!(
                "session {id} is {} on {} at B and {} on {} at A: {why}",
                t.state,
                t.transaction(),
                s.state,
                s.transaction()
            )
        };
        // A's word on every clearing B sent reaches B: `session_posted` (B pays), or
        // `session_released` (nothing paid). (A refusing a clearing is a bug.)
        if quiet && t.state == MtaState::Clearing {
            return Err(broken(
                "with the wire quiet, A's word on B's clearing reached B",
            ));
        }
        if t.txn != s.txn {
            // B's transaction before A's current one, clearing or cleared (checked above).
            continue;
        }
        if matches!(t.state, MtaState::Refused)
            && !matches!(s.state, AmState::Held | AmState::Aborted)
        {
            return Err(broken("what B refused is never open at A"));
        }
        // The customer's record reaches B only through A, which then concludes.
        if t.customer_record.is_some()
            && matches!(s.state, AmState::Held | AmState::Open | AmState::Aborted)
        {
            return Err(broken("B has the customer's record only from A"));
        }
        // B pays once A posted (A answered `session_posted`): A cleared it (with the same
        // clearing, checked above).
        if matches!(t.state, MtaState::Cleared) && s.state != AmState::Cleared {
            return Err(broken("B pays only what A posted"));
        }
        // B clears (without a verdict) on the customer's record A forwarded, or at its deadline
        // on a merchant's record claiming nothing: never what A holds as disputed.
        if matches!(t.state, MtaState::Clearing)
            && !t.clearing.as_ref().is_some_and(|c| c.verdict)
            && s.state == AmState::Disputed
        {
            return Err(broken("B clears nothing A disputes, save on a verdict"));
        }
        // B disputes what A forwarded, or (at its deadline) the merchant's record alone.
        let merchant_only = t.customer_record.is_none();
        if matches!(t.state, MtaState::Disputed)
            && !matches!(s.state, AmState::Concluding | AmState::Disputed)
            && !(merchant_only
                && matches!(
                    s.state,
                    AmState::Open | AmState::Expired | AmState::Aborted | AmState::Held
                ))
        {
            return Err(broken("B disputes only what A forwarded"));
        }
        // Expired: no record by B's deadline (A never clears or disputes it), or released
        // (A answered that its hold was gone: it ended with nothing posted).
        if matches!(t.state, MtaState::Expired) {
            let ended = if t.clearing.is_some() {
                matches!(s.state, AmState::Expired | AmState::Aborted)
            } else {
                !matches!(s.state, AmState::Cleared | AmState::Disputed)
            };
            if !ended {
                return Err(broken(
                    "what B let expire, or A released, is never cleared or disputed at A",
                ));
            }
        }
    }
    Ok(())
}

/// Invariant 7: the sessions their merchant ended (at transaction k, as the simulator kept
/// it): B keeps the word (across crashes) and has no transaction after k save one refused
/// (`ended`); A has none after k save one waiting for B's answer (`held`) or aborted, for
/// that refusal or because A gave up waiting first (`unanswered`). No session the simulator's
/// merchants did not end is ended, and nothing is refused as ended elsewhere.
fn ended_by_merchants(
    sim: &TradeSim,
    am: &BTreeMap<String, AmSession>,
    mta: &Mtas,
) -> Result<(), Broken> {
    let mut ended = BTreeSet::new();
    for t in &sim.trades {
        let Some(k) = t.ended_at else {
            continue;
        };
        let id = t.id.to_string();
        ended.insert(id.clone());
        let b = mta
            .get(&id)
            .ok_or_else(|| format!("session {id} was ended by its merchant and B lost it"))?;
        let at_b = format!("{} on {} at B", b.state, b.transaction());
        if !b.merchant_ended {
            return Err(format!(
                "session {id} was ended by its merchant on transaction {k}, and is {at_b} \
                 without the word (lost)"
            ));
        }
        if b.txn > k
            && (b.txn != k + 1 || b.state != MtaState::Refused || b.refusal != Some(Refusal::Ended))
        {
            return Err(format!(
                "session {id} was ended by its merchant on transaction {k}, and is {at_b} \
                 (refusal {:?}): a transaction after it is refused (ended)",
                b.refusal
            ));
        }
        let s = am
            .get(&id)
            .ok_or_else(|| format!("session {id} is at B and unknown at A"))?;
        if s.txn <= k {
            continue;
        }
        let at_a = format!(
            "{} on {} at A (refusal {:?})",
            s.state,
            s.transaction(),
            s.refusal
        );
        let fits = s.txn == k + 1
            && match s.state {
                AmState::Held => s.refusal.is_none(),
                AmState::Aborted => {
                    matches!(s.refusal, Some(Refusal::Ended | Refusal::Unanswered))
                }
                _ => false,
            };
        if !fits {
            return Err(format!(
                "session {id} was ended by its merchant on transaction {k}, and is {at_a} \
                 ({at_b}): the next one waits for B's answer, or was aborted (refused as ended, \
                 or unanswered)"
            ));
        }
        // A hears `ended` only in B's refusal of this transaction: B has that refusal.
        if s.state == AmState::Aborted
            && s.refusal == Some(Refusal::Ended)
            && !(b.txn == s.txn && b.refusal == Some(Refusal::Ended))
        {
            return Err(format!(
                "session {id} is {at_a}, and {at_b}: A hears `ended` only from B's refusal"
            ));
        }
    }
    for (id, b) in mta {
        if b.merchant_ended && !ended.contains(id) {
            return Err(format!(
                "session {id} is ended at B ({} on {}), and its merchant never ended it",
                b.state,
                b.transaction()
            ));
        }
        if b.refusal == Some(Refusal::Ended) && !b.merchant_ended {
            return Err(format!(
                "session {id} is refused as ended at B, and is not ended"
            ));
        }
    }
    for (id, s) in am {
        if s.refusal == Some(Refusal::Ended) && !ended.contains(id) {
            return Err(format!(
                "session {id} is aborted as ended at A, and its merchant never ended it"
            ));
        }
    }
    Ok(())
}

/// Invariant 5: no purchase's item text at the node.
async fn private(sim: &TradeSim, node: &Node, site: usize) -> Result<(), Broken> {
    for (table, column) in [
        ("trading_sessions", "machine"),
        ("peer_inbox", "body"),
        ("outbox", "body"),
        ("journal", "CAST(body AS TEXT)"),
        ("billing_records", "session"),
    ] {
        let found = rows(
            node,
            &format!(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM {table} WHERE instr({column}, '{}') > 0",
                sim.marker
            ),
        )
        .await?;
        if found.first().map(|r| int(r, "n")).transpose()?.unwrap_or(0) > 0 {
            return Err(format!(
                "a purchase's item reached {} (in {table}): only the list hash may",
                NAMES[site]
            ));
        }
    }
    Ok(())
}

/// Invariant 6, at the end: every session at A has ended (none `held`, `open` or
/// `concluding`), consistently with B (checked with the wire quiet by [`all`]); B has none
/// waiting for its merchant, nor for A's word on a clearing; what B still has open is a
/// session A aborted (B's ack came after A gave up): counted as orphaned, or a failure with
/// `strict_end`. A session its merchant ended opened nothing after (invariant 7, at the end).
/// Counts the outcome.
pub(super) async fn ended(sim: &mut TradeSim) -> Result<(), Broken> {
    if !sim.quiet().await? {
        return Err("the wire is not quiet at the end".into());
    }
    all(sim).await?;
    let (am, mta) = sessions(sim).await?;
    let strict = sim.options.strict_end;
    let o = &mut sim.outcome;
    o.opened = am.len();
    for (id, s) in &am {
        let t = mta.get(id);
        if matches!(s.state, AmState::Held | AmState::Open | AmState::Concluding) {
            return Err(format!("session {id} never ended at A: it is {}", s.state));
        }
        o.cleared += usize::from(matches!(s.state, AmState::Cleared));
        // Its transactions beyond the first: those before the current one cleared.
        let beyond = usize::try_from(s.txn.saturating_sub(1)).unwrap_or(usize::MAX);
        o.next_transactions += beyond;
        o.next_cleared += beyond.saturating_sub(1)
            + usize::from(s.txn > 1 && matches!(s.state, AmState::Cleared));
        // Disputed: still, or settled by B's operator's verdict since.
        o.disputed += usize::from(
            matches!(s.state, AmState::Disputed) || t.is_some_and(|t| t.verdict.is_some()),
        );
        o.aborted += usize::from(matches!(s.state, AmState::Aborted));
        if matches!(s.state, AmState::Aborted)
            && t.is_some_and(|t| matches!(t.state, MtaState::Open | MtaState::Concluding))
        {
            if strict {
                return Err(format!(
                    "session {id} is aborted at A (its deposit released) and {} at B: B took \
                     the merchant's ack after A gave up, and its merchant sells against a \
                     deposit that is gone",
                    t.map_or("unknown", |t| t.state.as_str())
                ));
            }
            o.orphaned += 1;
        }
    }
    for (id, t) in &mta {
        if matches!(t.state, MtaState::Informed) {
            return Err(format!("session {id} still waits for its merchant at B"));
        }
        if matches!(t.state, MtaState::Clearing) {
            return Err(format!(
                "session {id} still waits for A's word on its clearing at B"
            ));
        }
        // A clearing A answered `session_released` (its hold was gone): nothing paid.
        o.released += usize::from(t.state == MtaState::Expired && t.clearing.is_some());
        let a_ended = am
            .get(id)
            .is_some_and(|s| matches!(s.state, AmState::Aborted));
        if matches!(t.state, MtaState::Open | MtaState::Concluding) && !a_ended {
            return Err(format!(
                "session {id} is {} at B at the end, and not aborted at A",
                t.state
            ));
        }
        o.refused += usize::from(matches!(t.state, MtaState::Refused));
        o.ended_by_merchant += usize::from(t.merchant_ended);
        o.refused_ended +=
            usize::from(t.state == MtaState::Refused && t.refusal == Some(Refusal::Ended));
    }
    // A session its merchant ended opened nothing after: a next transaction started ended
    // aborted at A, its hold released (voided, or lapsed when A's hold ran out first),
    // nothing posted; B refused it (ended), or never had it when A gave up waiting first.
    for tr in &sim.trades {
        let (Some(k), Some(s)) = (tr.ended_at, am.get(&tr.id.to_string())) else {
            continue;
        };
        if s.txn <= k {
            continue;
        }
        let t = s.transaction();
        let b = mta
            .get(&tr.id.to_string())
            .ok_or("a session vanished at B")?;
        let refused =
            b.txn == s.txn && b.state == MtaState::Refused && b.refusal == Some(Refusal::Ended);
        let unanswered = s.refusal == Some(Refusal::Unanswered);
        if s.state != AmState::Aborted || !(refused || (unanswered && b.txn == k)) {
            return Err(format!(
                "{t} was started after its merchant ended the session (on {k}), and is {} at A \
                 ({:?}) and {} on {} at B ({:?}) at the end: aborted at A, refused as ended at B",
                s.state,
                s.refusal,
                b.state,
                b.transaction(),
                b.refusal
            ));
        }
        let (h, resolved) = next_hold(&sim.node(A), t).await?;
        let released = matches!(h.state, TransferState::Voided | TransferState::Expired);
        let posted = TransferKind::PostPending.as_str();
        if !released || resolved.len() > 1 || resolved.iter().any(|(kind, _)| kind == posted) {
            return Err(format!(
                "{t} was refused as its merchant ended the session, and its hold is {h:?} \
                 (resolved by {resolved:?}) at the end: released, nothing posted"
            ));
        }
    }
    Ok(())
}
