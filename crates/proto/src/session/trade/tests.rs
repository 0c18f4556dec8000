//! The trading-session machines at both nodes: initiation, answers, timeouts, conclusion.
use super::*;
use tally_kernel::Currency;
use tally_kernel::crypto::SigningKey;

const T0: i64 = 1_767_225_600_000_000;

/// The MTA's waits: 120 s for the merchant, 600 s after the session's end for the records.
const WINDOWS: Windows = Windows {
    ack_s: 120,
    conclusion_s: 600,
};

fn node(seed: u8) -> NodeId {
    NodeId::of(&SigningKey::from_seed(&[seed; 32]).verifying_key())
}

fn eur(minor: i64) -> Amount {
    Amount::new(minor, Currency::from_code("EUR").expect("EUR"))
}

fn usd(minor: i64) -> Amount {
    Amount::new(minor, Currency::from_code("USD").expect("USD"))
}

fn at(s: i64) -> Timestamp {
    Timestamp(T0 + s * 1_000_000)
}

fn start() -> (AmSession, Effects) {
    AmSession::start(
        Start {
            id: SessionId::new(node(1), 7).expect("id"),
            mta: node(2),
            merchant: "shop".into(),
            account: Id::new(),
            owed: Id::new(),
            customer: "c-1f2e".into(),
            customer_key: Some("ab".repeat(32)),
            customer_cert: None,
            deposit: eur(1000),
            ack_window_s: 60,
            lifetime_s: 3600,
            clearing_grace_s: 1800,
            message: Id::new(),
        },
        at(0),
    )
    .expect("start")
}

fn initiation(effects: &Effects) -> Initiation {
    assert_eq!(effects.peers.len(), 1);
    assert_eq!(effects.peers[0].kind, INITIATION);
    serde_json::from_value(effects.peers[0].body.clone()).expect("initiation")
}

fn terms(currency: &str, rate: Option<Rate>, auto_ack: bool) -> Option<MerchantTerms> {
    Some(MerchantTerms {
        currency: Currency::from_code(currency).expect("currency"),
        rate,
        auto_ack,
        account: Id::new(),
        owed_by: Id::new(),
        agent_key: Some("cd".repeat(32)),
        agent_cert: None,
    })
}

#[test]
fn the_am_holds_the_deposit_and_sends_the_amended_initiation() {
    let (am, effects) = start();
    assert_eq!(am.state, AmState::Held);
    match effects.ledger {
        Some(Command::Transfer {
            debit_account,
            credit_account,
            amount_minor,
            timeout_s,
            ..
        }) => {
            assert_eq!((debit_account, credit_account), (am.account, am.owed));
            assert_eq!((amount_minor, timeout_s), (1000, Some(5400)));
        }
        other => panic!("no hold: {other:?}"),
    }
    let init = initiation(&effects);
    assert_eq!(effects.peers[0].to, node(2));
    assert_eq!(init.transaction.to_string(), format!("{}.1", am.id));
    assert_eq!(
        (init.deposit, init.customer.as_str()),
        (eur(1000), "c-1f2e")
    );
    assert_eq!(am.poll_timeout(), Some(at(60)));
    // Nothing about the customer but its pseudonym leaves the AM.
    let text = effects.peers[0].body.to_string();
    assert!(!text.contains(&am.account.to_string()), "{text}");
}

#[test]
fn bad_starts_are_refused() {
    let (am, _) = start();
    let base = |deposit: Amount, ack: i64, life: i64| Start {
        id: am.id,
        mta: am.mta,
        merchant: "shop".into(),
        account: am.account,
        owed: am.owed,
        customer: "c".into(),
        customer_key: None,
        customer_cert: None,
        deposit,
        ack_window_s: ack,
        lifetime_s: life,
        clearing_grace_s: 0,
        message: Id::new(),
    };
    for s in [
        base(eur(0), 60, 3600),
        base(eur(-5), 60, 3600),
        base(eur(5), 0, 3600),
        base(eur(5), 60, 60),
    ] {
        let e = AmSession::start(s, at(0)).expect_err("refused");
        assert_eq!(e.fault(), Fault::Caller);
    }
}

#[test]
fn an_mta_in_another_currency_acks_with_its_rate_and_the_am_opens() {
    let (am, effects) = start();
    let am = am.with_hold(Some(Id::new()));
    let rate = Rate::parse(
        "1.0842",
        Currency::from_code("EUR").expect("c"),
        Currency::from_code("USD").expect("c"),
    )
    .expect("rate");
    let (mta, fx) = MtaSession::register(
        initiation(&effects),
        node(1),
        terms("USD", Some(rate), false),
        WINDOWS,
        at(1),
        Id::new(),
    )
    .expect("register");
    assert_eq!(
        (mta.state, mta.merchant_deposit),
        (MtaState::Informed, usd(1084))
    );
    assert!(fx.peers.is_empty(), "no answer before the merchant acks");
    // The merchant's ack answers the AM; a second changes nothing.
    let (mta, fx) = mta
        .handle(at(2), MtaInput::MerchantAck, Id::new())
        .expect("ack");
    assert_eq!(mta.state, MtaState::Open);
    assert_eq!(
        (fx.peers.len(), fx.peers[0].kind.as_str(), fx.peers[0].to),
        (1, ACK, node(1))
    );
    let (mta, again) = mta
        .handle(at(3), MtaInput::MerchantAck, Id::new())
        .expect("again");
    assert_eq!(again, Effects::none());
    assert_eq!(
        mta.clone()
            .handle(at(3), MtaInput::MerchantDecline, Id::new())
            .expect_err("closed")
            .fault(),
        Fault::Caller
    );
    let ack: Ack = serde_json::from_value(fx.peers[0].body.clone()).expect("ack");
    let (am, opened) = am.handle(at(3), AmInput::Ack(ack.clone())).expect("open");
    assert_eq!(
        (am.state, am.rate, am.merchant_deposit),
        (AmState::Open, Some(rate), Some(usd(1084)))
    );
    assert!(opened.ledger.is_some() && opened.peers.is_empty());
    // Open, it waits for the conclusion until the hold runs out (lifetime + grace).
    assert_eq!(am.poll_timeout(), Some(at(3600 + 1800)));
    // The same ack delivered twice is applied once; a late refusal is the peer's fault.
    let (am, dup) = am.handle(at(4), AmInput::Ack(ack)).expect("dup");
    assert_eq!(dup, Effects::none());
    let e = am
        .handle(
            at(4),
            AmInput::Refused(Refused {
                transaction: None,
                session: mta.id,
                reason: Refusal::Declined,
            }),
        )
        .expect_err("too late");
    assert_eq!(e.fault(), Fault::Peer);
}

#[test]
fn an_ack_that_does_not_add_up_is_refused() {
    let (am, _) = start();
    let rate = Rate {
        numerator: 2,
        denominator: 1,
    };
    for ack in [
        Ack {
            transaction: None,
            session: SessionId::new(node(1), 8).expect("id"),
            rate,
            merchant_deposit: eur(2000),
            merchant_key: None,
            merchant_cert: None,
        },
        Ack {
            transaction: None,
            session: am.id,
            rate,
            merchant_deposit: eur(1999),
            merchant_key: None,
            merchant_cert: None,
        },
        Ack {
            transaction: None,
            session: am.id,
            rate: Rate {
                numerator: 0,
                denominator: 1,
            },
            merchant_deposit: eur(0),
            merchant_key: None,
            merchant_cert: None,
        },
    ] {
        let e = am
            .clone()
            .handle(at(1), AmInput::Ack(ack))
            .expect_err("mismatch");
        assert_eq!(e.fault(), Fault::Peer);
    }
}

#[test]
fn refusals_and_silence_void_the_hold() {
    let (am, effects) = start();
    let hold = Id::new();
    let am = am.with_hold(Some(hold));
    let void = Some(Command::Void { pending_id: hold });
    // Unknown merchant, no rate, agent mode: the MTA answers at once.
    let init = initiation(&effects);
    let (mta, fx) =
        MtaSession::register(init.clone(), node(1), None, WINDOWS, at(1), Id::new()).expect("r");
    assert_eq!(
        (mta.state, mta.refusal),
        (MtaState::Refused, Some(Refusal::UnknownMerchant))
    );
    assert_eq!(fx.peers[0].kind, REFUSED);
    let (mta, _) = MtaSession::register(
        init.clone(),
        node(1),
        terms("USD", None, false),
        WINDOWS,
        at(1),
        Id::new(),
    )
    .expect("r");
    assert_eq!(mta.refusal, Some(Refusal::NoRate));
    let (mta, fx) = MtaSession::register(
        init.clone(),
        node(1),
        terms("EUR", None, true),
        WINDOWS,
        at(1),
        Id::new(),
    )
    .expect("r");
    assert_eq!(
        (mta.state, mta.merchant_deposit, fx.peers[0].kind.as_str()),
        (MtaState::Open, eur(1000), ACK)
    );
    // An initiation that is not from its session's AM is refused outright.
    assert_eq!(
        MtaSession::register(
            init.clone(),
            node(3),
            terms("EUR", None, true),
            WINDOWS,
            at(1),
            Id::new()
        )
        .expect_err("forged")
        .fault(),
        Fault::Peer
    );
    // The merchant leaves it unanswered: refused when due, not before; and never later than
    // the AM waits (60 s here, less than the MTA's own 120 s).
    let (mta, _) = MtaSession::register(
        init.clone(),
        node(1),
        terms("EUR", None, false),
        WINDOWS,
        at(1),
        Id::new(),
    )
    .expect("r");
    assert_eq!(mta.poll_timeout(), Some(at(60)));
    assert_eq!(
        mta.clone()
            .handle(at(59), MtaInput::Timeout, Id::new())
            .expect_err("early"),
        TradeError::NotDue
    );
    // The AM gave up (its `session_aborted`): the MTA ends its side, once.
    let (abandoned, fx) = mta
        .clone()
        .handle(at(59), MtaInput::Abandoned, Id::new())
        .expect("abandoned");
    assert_eq!(
        (abandoned.state, abandoned.refusal, fx.peers.len()),
        (MtaState::Refused, Some(Refusal::Abandoned), 0)
    );
    let (abandoned, again) = abandoned
        .handle(at(59), MtaInput::Abandoned, Id::new())
        .expect("again");
    assert_eq!(again, Effects::none());
    assert!(matches!(
        abandoned.handle(at(59), MtaInput::MerchantAck, Id::new()),
        Err(TradeError::Closed("refused"))
    ));
    // An initiation that arrives after the AM stopped waiting is refused at once.
    let (late, fx) = MtaSession::register(
        init,
        node(1),
        terms("EUR", None, true),
        WINDOWS,
        at(60),
        Id::new(),
    )
    .expect("late");
    assert_eq!(
        (late.state, late.refusal, fx.peers[0].kind.as_str()),
        (MtaState::Refused, Some(Refusal::Unanswered), REFUSED)
    );
    // The merchant's answer after that is too late, even before the sweeper ran.
    assert_eq!(
        mta.clone()
            .handle(at(60), MtaInput::MerchantAck, Id::new())
            .expect_err("late"),
        TradeError::Closed("past its answer time")
    );
    let (mta, fx) = mta
        .handle(at(60), MtaInput::Timeout, Id::new())
        .expect("due");
    assert_eq!(mta.refusal, Some(Refusal::Unanswered));
    let refused: Refused = serde_json::from_value(fx.peers[0].body.clone()).expect("refused");
    // The AM voids its hold on the refusal, once.
    let (aborted, fx) = am
        .clone()
        .handle(at(122), AmInput::Refused(refused.clone()))
        .expect("abort");
    assert_eq!((aborted.state, fx.ledger), (AmState::Aborted, void.clone()));
    let (_, dup) = aborted
        .handle(at(123), AmInput::Refused(refused))
        .expect("dup");
    assert_eq!(dup, Effects::none());
    // Or on its own timeout.
    assert_eq!(
        am.clone()
            .handle(at(59), AmInput::Timeout(Id::new()))
            .expect_err("early"),
        TradeError::NotDue
    );
    let (aborted, fx) = am
        .handle(at(60), AmInput::Timeout(Id::new()))
        .expect("timeout");
    assert_eq!((aborted.state, fx.ledger), (AmState::Aborted, void));
    // The MTA is told; an ack that crossed it changes nothing.
    assert_eq!(
        (fx.peers[0].kind.as_str(), fx.peers[0].to),
        (ABORTED, node(2))
    );
    let ack = Ack {
        transaction: None,
        session: aborted.id,
        rate: Rate {
            numerator: 1,
            denominator: 1,
        },
        merchant_deposit: eur(1000),
        merchant_key: None,
        merchant_cert: None,
    };
    let (_, crossed) = aborted.handle(at(61), AmInput::Ack(ack)).expect("crossed");
    assert_eq!(crossed, Effects::none());
}

/// An opened pair (AM with its hold, MTA open), for the conclusion.
fn opened() -> (AmSession, MtaSession, Id) {
    let (am, effects) = start();
    let hold = Id::new();
    let (mta, fx) = MtaSession::register(
        initiation(&effects),
        node(1),
        terms("EUR", None, true),
        WINDOWS,
        at(1),
        Id::new(),
    )
    .expect("register");
    let ack: Ack = serde_json::from_value(fx.peers[0].body.clone()).expect("ack");
    let (am, _) = am
        .with_hold(Some(hold))
        .handle(at(2), AmInput::Ack(ack))
        .expect("open");
    (am, mta, hold)
}

/// The session's first transaction.
fn tx() -> TransactionId {
    SessionId::new(node(1), 7).expect("id").first_transaction()
}

fn record(side: Side, minor: i64, list: &str) -> Record {
    Record {
        transaction: tx(),
        side,
        total: eur(minor),
        count: 2,
        list: list.repeat(64),
    }
}

#[test]
fn records_that_agree_clear_the_session_at_both_nodes() {
    let (am, mta, hold) = opened();
    let customer = record(Side::Customer, 250, "a");
    let (am, fx) = am
        .handle(
            at(3),
            AmInput::Record {
                record: customer.clone(),
                signed: "{}".into(),
                message: Id::new(),
            },
        )
        .expect("concluding");
    assert_eq!(
        (am.state, fx.peers[0].kind.as_str()),
        (AmState::Concluding, RECORD)
    );
    // The merchant's record first, then the customer's: clearing, the AM gets the clearing
    // information; nothing is paid yet.
    let (mta, fx) = mta
        .handle(
            at(4),
            MtaInput::Record(record(Side::Merchant, 250, "a")),
            Id::new(),
        )
        .expect("one in");
    assert_eq!((mta.state, fx.peers.len()), (MtaState::Concluding, 0));
    let (mta, fx) = mta
        .handle(at(5), MtaInput::Record(customer.clone()), Id::new())
        .expect("both in");
    assert_eq!(mta.state, MtaState::Clearing);
    assert!(
        matches!(fx.ledger, Some(Command::Record { .. })),
        "nothing paid before the AM posted: {:?}",
        fx.ledger
    );
    let clearing: Clearing = serde_json::from_value(fx.peers[0].body.clone()).expect("clearing");
    assert_eq!(
        (fx.peers[0].kind.as_str(), clearing.customer_total),
        (CLEARED, eur(250))
    );
    // The same record again changes nothing.
    let (mta, again) = mta
        .handle(at(6), MtaInput::Record(customer), Id::new())
        .expect("repeat");
    assert_eq!(again, Effects::none());
    // The AM posts what was spent from the hold (the rest is released by the post) and says
    // so.
    let answer = Id::new();
    let (am, fx) = am
        .handle(
            at(6),
            AmInput::Cleared {
                clearing: clearing.clone(),
                message: answer,
            },
        )
        .expect("cleared");
    assert_eq!(am.state, AmState::Cleared);
    assert_eq!(
        fx.ledger,
        Some(Command::Post {
            pending_id: hold,
            amount_minor: Some(250)
        })
    );
    assert_eq!(
        (fx.peers[0].kind.as_str(), fx.peers[0].id, &fx.peers[0].body),
        (POSTED, answer, &json!({"session": tx().session}))
    );
    let (_, dup) = am
        .handle(
            at(7),
            AmInput::Cleared {
                clearing,
                message: Id::new(),
            },
        )
        .expect("dup");
    assert_eq!(dup, Effects::none());
    // Then the MTA pays the merchant from the account owed by the AM's operator, once.
    let (mta, fx) = mta
        .handle(at(8), MtaInput::Posted, Id::new())
        .expect("paid");
    assert_eq!(mta.state, MtaState::Cleared);
    match fx.ledger {
        Some(Command::Transfer {
            debit_account,
            credit_account,
            amount_minor,
            ..
        }) => {
            assert_eq!(
                (Some(debit_account), Some(credit_account), amount_minor),
                (mta.owed_by, mta.account, 250)
            );
        }
        other => panic!("no payment: {other:?}"),
    }
    assert!(fx.peers.is_empty());
    let (mta, again) = mta
        .handle(at(9), MtaInput::Posted, Id::new())
        .expect("repeat");
    assert_eq!(again, Effects::none());
    assert!(mta.handle(at(9), MtaInput::Released, Id::new()).is_err());
}

/// The customer's record (2.50) in at the AM: concluding.
fn customer_concludes(am: AmSession) -> AmSession {
    let input = AmInput::Record {
        record: record(Side::Customer, 250, "a"),
        signed: "{}".into(),
        message: Id::new(),
    };
    am.handle(at(3), input).expect("concluding").0
}

/// The merchant's record (3.00) in, then the customer's (2.50): disputed.
fn disagree(mta: MtaSession) -> (MtaSession, Effects) {
    let (mta, _) = mta
        .handle(
            at(4),
            MtaInput::Record(record(Side::Merchant, 300, "a")),
            Id::new(),
        )
        .expect("one in");
    mta.handle(
        at(5),
        MtaInput::Record(record(Side::Customer, 250, "a")),
        Id::new(),
    )
    .expect("both in")
}

#[test]
fn records_that_disagree_are_disputed_and_nothing_is_paid() {
    let (am, mta, _) = opened();
    let (mta, fx) = disagree(mta);
    assert_eq!(mta.state, MtaState::Disputed);
    assert!(
        matches!(fx.ledger, Some(Command::Record { .. })),
        "nothing paid"
    );
    assert_eq!(fx.peers[0].kind, DISPUTED);
    // A second, different record of a side is refused.
    let (concluding, _) = opened()
        .1
        .handle(
            at(4),
            MtaInput::Record(record(Side::Merchant, 1, "b")),
            Id::new(),
        )
        .expect("in");
    let e = concluding
        .handle(
            at(5),
            MtaInput::Record(record(Side::Merchant, 2, "b")),
            Id::new(),
        )
        .expect_err("twice");
    assert_eq!(e.fault(), Fault::Peer);
    // A record beyond the deposit is not taken by the AM; a clearing that does not match
    // its record is refused.
    let e = am
        .clone()
        .handle(
            at(3),
            AmInput::Record {
                record: record(Side::Customer, 1001, "a"),
                signed: "{}".into(),
                message: Id::new(),
            },
        )
        .expect_err("beyond");
    assert_eq!(e.fault(), Fault::Caller);
    let am = customer_concludes(am);
    let wrong = Clearing {
        transaction: record(Side::Customer, 250, "a").transaction,
        total: eur(250),
        customer_total: eur(200),
        count: 2,
        list: "a".repeat(64),
        verdict: false,
    };
    // Not posted but answered, so that the MTA (which pays only on the AM's word) is not
    // left waiting: released, the hold voided, the transaction over here.
    let (released, fx) = am
        .clone()
        .handle(
            at(4),
            AmInput::Cleared {
                clearing: wrong.clone(),
                message: Id::new(),
            },
        )
        .expect("answered");
    assert_eq!(
        (released.state, &fx.ledger, fx.peers[0].kind.as_str()),
        (
            AmState::Expired,
            &Some(Command::Void {
                pending_id: am.hold.expect("held")
            }),
            RELEASED
        )
    );
    // Another session's or transaction's clearing is refused, the peer's fault.
    let elsewhere = Clearing {
        transaction: tx().next().expect("next"),
        ..wrong
    };
    let e = am
        .clone()
        .handle(
            at(4),
            AmInput::Cleared {
                clearing: elsewhere,
                message: Id::new(),
            },
        )
        .expect_err("another transaction");
    assert_eq!(e.fault(), Fault::Peer);
    // A clearing that claims nothing is posted (the hold voided) whatever the customer's
    // record says: the merchant's record alone at the MTA's deadline, the customer's late.
    let zero = Clearing {
        transaction: tx(),
        total: eur(0),
        customer_total: eur(0),
        count: 0,
        list: "0".repeat(64),
        verdict: false,
    };
    let (nothing, fx) = am
        .clone()
        .handle(
            at(4),
            AmInput::Cleared {
                clearing: zero,
                message: Id::new(),
            },
        )
        .expect("posted");
    assert_eq!(
        (nothing.state, fx.peers[0].kind.as_str()),
        (AmState::Cleared, POSTED)
    );
    let (am, fx) = am.handle(at(4), AmInput::Disputed(tx())).expect("disputed");
    assert_eq!(am.state, AmState::Disputed);
    assert!(
        matches!(fx.ledger, Some(Command::Record { .. })),
        "the hold is kept"
    );
}

/// A dispute settled by the MTA's operator: the AM posts the customer's side whatever its own
/// record said and releases the rest, then the merchant is paid the verdict; a verdict beyond
/// the deposit or in another currency is refused and changes nothing; the same verdict again
/// changes nothing, another is refused. On the merchant's record alone too: the AM answers
/// whether it still held the deposit.
#[test]
fn a_verdict_settles_a_dispute_at_both_nodes() {
    let (am, mta, hold) = opened();
    let (mta, _) = disagree(mta);
    assert_eq!(mta.state, MtaState::Disputed);
    // Disputed on the merchant's record alone: a verdict too (the AM says whether it still
    // holds the deposit).
    let (alone, _) = opened()
        .1
        .handle(
            at(4),
            MtaInput::Record(record(Side::Merchant, 300, "a")),
            Id::new(),
        )
        .expect("one in");
    let (alone, _) = alone
        .handle(at(DEADLINE), MtaInput::Timeout, Id::new())
        .expect("deadline");
    assert_eq!(alone.state, MtaState::Disputed);
    let (alone, fx) = alone
        .handle(at(DEADLINE + 1), MtaInput::Verdict(eur(10)), Id::new())
        .expect("a verdict on the merchant's record");
    assert_eq!(
        (alone.state, fx.peers[0].kind.as_str()),
        (MtaState::Clearing, CLEARED)
    );
    let am = customer_concludes(am);
    let (am, _) = am.handle(at(6), AmInput::Disputed(tx())).expect("disputed");
    // Not disputed: no verdict.
    assert!(matches!(
        opened()
            .1
            .handle(at(7), MtaInput::Verdict(eur(10)), Id::new()),
        Err(TradeError::Closed("open"))
    ));
    for bad in [eur(1001), eur(-1), usd(10)] {
        let e = mta
            .clone()
            .handle(at(7), MtaInput::Verdict(bad), Id::new())
            .expect_err("refused");
        assert_eq!(e.fault(), Fault::Caller, "{bad:?}");
    }
    let (mta, fx) = mta
        .handle(at(7), MtaInput::Verdict(eur(270)), Id::new())
        .expect("settled");
    assert_eq!(mta.state, MtaState::Clearing);
    assert!(matches!(fx.ledger, Some(Command::Record { .. })));
    assert_eq!(fx.peers[0].kind, CLEARED);
    let c: Clearing = serde_json::from_value(fx.peers[0].body.clone()).expect("clearing");
    assert!(c.verdict);
    assert_eq!((c.total, c.customer_total), (eur(270), eur(270)));
    let (same, fx) = mta
        .clone()
        .handle(at(8), MtaInput::Verdict(eur(270)), Id::new())
        .expect("the same verdict again");
    assert_eq!((same.state, fx), (MtaState::Clearing, Effects::none()));
    assert!(
        mta.clone()
            .handle(at(8), MtaInput::Verdict(eur(280)), Id::new())
            .is_err()
    );
    // The AM: a verdict that is not the deposit at the session's rate is not posted: it is
    // released (the MTA then pays nothing).
    let tampered = Clearing {
        customer_total: eur(200),
        ..c.clone()
    };
    let (released, fx) = am
        .clone()
        .handle(
            at(9),
            AmInput::Cleared {
                clearing: tampered,
                message: Id::new(),
            },
        )
        .expect("answered");
    assert_eq!(
        (released.state, fx.peers[0].kind.as_str(), &fx.ledger),
        (
            AmState::Expired,
            RELEASED,
            &Some(Command::Void { pending_id: hold })
        )
    );
    // A verdict reaching an AM that never heard the ack (no rate): released too.
    let (held, _) = start();
    let (released, fx) = held
        .with_hold(Some(hold))
        .handle(
            at(9),
            AmInput::Cleared {
                clearing: c.clone(),
                message: Id::new(),
            },
        )
        .expect("answered");
    assert_eq!(
        (released.state, fx.peers[0].kind.as_str()),
        (AmState::Expired, RELEASED)
    );
    let (am, fx) = am
        .handle(
            at(9),
            AmInput::Cleared {
                clearing: c,
                message: Id::new(),
            },
        )
        .expect("posted");
    assert_eq!(
        (am.state, fx.peers[0].kind.as_str()),
        (AmState::Cleared, POSTED)
    );
    assert_eq!(
        fx.ledger,
        Some(Command::Post {
            pending_id: hold,
            amount_minor: Some(270)
        })
    );
    let (mta, fx) = mta
        .handle(at(10), MtaInput::Posted, Id::new())
        .expect("paid");
    assert_eq!(mta.state, MtaState::Cleared);
    assert!(
        matches!(
            fx.ledger,
            Some(Command::Transfer {
                amount_minor: 270,
                ..
            })
        ),
        "{:?}",
        fx.ledger
    );
    let (_, fx) = mta
        .handle(at(11), MtaInput::Verdict(eur(270)), Id::new())
        .expect("the same verdict again");
    assert_eq!(fx, Effects::none());
}

/// The session started at 0 for 3,600 s: the MTA's records are due by 4,200 (600 s more).
const DEADLINE: i64 = 4200;
/// The AM's hold runs out at 5,400 (a grace of 1,800 s).
const RELEASE: i64 = 5400;

#[test]
fn with_no_record_by_the_deadline_the_session_expires_and_the_deposit_is_released() {
    let (am, mta, hold) = opened();
    assert_eq!(mta.poll_timeout(), Some(at(DEADLINE)));
    assert_eq!(
        mta.clone()
            .handle(at(DEADLINE - 1), MtaInput::Timeout, Id::new())
            .expect_err("early"),
        TradeError::NotDue
    );
    // At the deadline a record is too late, even before the sweeper ran.
    assert_eq!(
        mta.clone()
            .handle(
                at(DEADLINE),
                MtaInput::Record(record(Side::Merchant, 250, "a")),
                Id::new()
            )
            .expect_err("late"),
        TradeError::Closed("past its conclusion deadline")
    );
    let (mta, fx) = mta
        .handle(at(DEADLINE), MtaInput::Timeout, Id::new())
        .expect("deadline");
    assert_eq!(
        (mta.state, fx.peers[0].kind.as_str(), mta.poll_timeout()),
        (MtaState::Expired, EXPIRED, None)
    );
    assert!(
        matches!(fx.ledger, Some(Command::Record { .. })),
        "nothing is paid"
    );
    // A record after the deadline is too late.
    assert_eq!(
        mta.handle(
            at(DEADLINE + 1),
            MtaInput::Record(record(Side::Merchant, 250, "a")),
            Id::new()
        )
        .expect_err("late"),
        TradeError::Closed("expired")
    );
    // The AM voids its hold, once; an ack overtaken by the expiry changes nothing.
    let ack = Ack {
        transaction: None,
        session: am.id,
        rate: am.rate.expect("rate"),
        merchant_deposit: am.merchant_deposit.expect("deposit"),
        merchant_key: None,
        merchant_cert: None,
    };
    let (am, fx) = am
        .handle(at(DEADLINE + 1), AmInput::Expired(tx()))
        .expect("expired");
    assert_eq!(
        (am.state, fx.ledger),
        (AmState::Expired, Some(Command::Void { pending_id: hold }))
    );
    let (am, again) = am
        .handle(at(DEADLINE + 2), AmInput::Expired(tx()))
        .expect("dup");
    assert_eq!(again, Effects::none());
    let (_, late) = am
        .handle(at(DEADLINE + 3), AmInput::Ack(ack))
        .expect("late ack");
    assert_eq!(late, Effects::none());
}

#[test]
fn at_the_deadline_the_customers_record_alone_clears_and_the_merchants_alone_is_disputed() {
    let (_, mta, _) = opened();
    let customer = record(Side::Customer, 300, "c");
    let (with_customer, _) = mta
        .clone()
        .handle(at(10), MtaInput::Record(customer.clone()), Id::new())
        .expect("customer's");
    assert_eq!(with_customer.poll_timeout(), Some(at(DEADLINE)));
    let (clearing_, fx) = with_customer
        .handle(at(DEADLINE), MtaInput::Timeout, Id::new())
        .expect("deadline");
    assert_eq!(clearing_.state, MtaState::Clearing);
    let (_, paid) = clearing_
        .handle(at(DEADLINE + 1), MtaInput::Posted, Id::new())
        .expect("posted");
    assert!(
        matches!(
            paid.ledger,
            Some(Command::Transfer {
                amount_minor: 300,
                ..
            })
        ),
        "the merchant is paid what the customer signed: {:?}",
        paid.ledger
    );
    let clearing: Clearing = serde_json::from_value(fx.peers[0].body.clone()).expect("clearing");
    assert_eq!(
        (clearing.total, clearing.count, clearing.list),
        (customer.total, customer.count, customer.list)
    );
    // The merchant's record alone claiming nothing (a tab opened, nothing bought) clears
    // at zero: nothing paid, nothing to dispute.
    let (zero, _) = mta
        .clone()
        .handle(
            at(10),
            MtaInput::Record(Record {
                total: eur(0),
                count: 0,
                ..record(Side::Merchant, 0, "0")
            }),
            Id::new(),
        )
        .expect("an empty tab");
    let (zero, fx) = zero
        .handle(at(DEADLINE), MtaInput::Timeout, Id::new())
        .expect("deadline");
    assert_eq!(
        (zero.state, fx.peers[0].kind.as_str()),
        (MtaState::Clearing, CLEARED)
    );
    assert!(matches!(fx.ledger, Some(Command::Record { .. })));
    let (paid, fx0) = zero
        .handle(at(DEADLINE + 1), MtaInput::Posted, Id::new())
        .expect("posted");
    assert_eq!(paid.state, MtaState::Cleared);
    assert!(
        matches!(fx0.ledger, Some(Command::Record { .. })),
        "nothing to pay"
    );
    let zero: Clearing = serde_json::from_value(fx.peers[0].body.clone()).expect("clearing");
    let (am, _, hold) = opened();
    let (am, fx) = am
        .handle(
            at(DEADLINE),
            AmInput::Cleared {
                clearing: zero,
                message: Id::new(),
            },
        )
        .expect("the AM releases the deposit");
    assert_eq!(
        (am.state, fx.ledger, fx.peers[0].kind.as_str()),
        (
            AmState::Cleared,
            Some(Command::Void { pending_id: hold }),
            POSTED
        )
    );
    // The merchant's record alone: its MAC key is the merchant's too, so it proves nothing.
    let (with_merchant, _) = mta
        .handle(
            at(10),
            MtaInput::Record(record(Side::Merchant, 900, "m")),
            Id::new(),
        )
        .expect("merchant's");
    let (disputed, fx) = with_merchant
        .handle(at(DEADLINE), MtaInput::Timeout, Id::new())
        .expect("deadline");
    assert_eq!(
        (disputed.state, fx.peers[0].kind.as_str()),
        (MtaState::Disputed, DISPUTED)
    );
    assert!(
        matches!(fx.ledger, Some(Command::Record { .. })),
        "nothing is paid"
    );
}

#[test]
fn a_clearing_that_reaches_the_am_after_its_hold_ran_out_pays_nothing_on_either_side() {
    // B was down past its deadline and clears when it comes back, after A's hold ran out
    // and A's session expired: A answers that it posted nothing, and B pays nothing.
    let (am, mta, _) = opened();
    let am = customer_concludes(am);
    let (mta, _) = mta
        .handle(
            at(10),
            MtaInput::Record(record(Side::Customer, 250, "a")),
            Id::new(),
        )
        .expect("customer's");
    let (mta, fx) = mta
        .handle(at(RELEASE + 10), MtaInput::Timeout, Id::new())
        .expect("late");
    assert_eq!(mta.state, MtaState::Clearing);
    let clearing: Clearing = serde_json::from_value(fx.peers[0].body.clone()).expect("clearing");
    let (am, _) = am
        .with_hold(None)
        .handle(at(RELEASE), AmInput::Timeout(Id::new()))
        .expect("expired");
    assert_eq!(am.state, AmState::Expired);
    let answer = Id::new();
    let (am, fx) = am
        .handle(
            at(RELEASE + 20),
            AmInput::Cleared {
                clearing: clearing.clone(),
                message: answer,
            },
        )
        .expect("answered");
    assert_eq!(
        (am.state, fx.peers[0].kind.as_str(), fx.peers[0].id),
        (AmState::Expired, RELEASED, answer)
    );
    assert!(
        matches!(fx.ledger, Some(Command::Record { .. })),
        "nothing posted"
    );
    let (mta, fx) = mta
        .handle(at(RELEASE + 30), MtaInput::Released, Id::new())
        .expect("released");
    assert_eq!(mta.state, MtaState::Expired);
    assert!(
        matches!(fx.ledger, Some(Command::Record { .. })),
        "nothing paid"
    );
    let (mta, again) = mta
        .handle(at(RELEASE + 31), MtaInput::Released, Id::new())
        .expect("repeat");
    assert_eq!(again, Effects::none());
    assert!(
        mta.handle(at(RELEASE + 31), MtaInput::Posted, Id::new())
            .is_err()
    );
    // A session whose hold the ledger let go before its sweeper ran answers the same, and
    // ends.
    let (am, _, _) = opened();
    let (am, fx) = customer_concludes(am)
        .with_hold(None)
        .handle(
            at(RELEASE - 1),
            AmInput::Cleared {
                clearing,
                message: Id::new(),
            },
        )
        .expect("answered");
    assert_eq!(
        (am.state, fx.peers[0].kind.as_str()),
        (AmState::Expired, RELEASED)
    );
}

#[test]
fn an_am_that_hears_nothing_expires_when_its_hold_runs_out() {
    let (am, _, hold) = opened();
    assert_eq!(am.poll_timeout(), Some(at(RELEASE)));
    assert_eq!(
        am.clone()
            .handle(at(RELEASE - 1), AmInput::Timeout(Id::new()))
            .expect_err("early"),
        TradeError::NotDue
    );
    // Once the hold ran out the customer's record is refused, even before the sweeper ran.
    assert_eq!(
        am.clone()
            .handle(
                at(RELEASE),
                AmInput::Record {
                    record: record(Side::Customer, 1, "a"),
                    signed: "{}".into(),
                    message: Id::new(),
                }
            )
            .expect_err("too late"),
        TradeError::State("expired", "record")
    );
    // The hold's own timeout is the same instant: the ledger releases it, the step only
    // records the end (a void would be refused as too late).
    let (expired, fx) = am
        .handle(at(RELEASE), AmInput::Timeout(Id::new()))
        .expect("expired");
    assert_eq!(
        (expired.state, expired.poll_timeout()),
        (AmState::Expired, None)
    );
    assert!(
        matches!(fx.ledger, Some(Command::Record { .. })),
        "no void of {hold}: {:?}",
        fx.ledger
    );
    // Clearing information after that is answered: nothing was posted.
    let (expired, fx) = expired
        .handle(
            at(RELEASE + 1),
            AmInput::Cleared {
                clearing: Clearing {
                    transaction: tx(),
                    total: eur(1),
                    customer_total: eur(1),
                    count: 1,
                    list: "a".repeat(64),
                    verdict: false,
                },
                message: Id::new(),
            },
        )
        .expect("answered");
    assert_eq!(
        (expired.state, fx.peers[0].kind.as_str()),
        (AmState::Expired, RELEASED)
    );
}

#[test]
fn states_have_stored_names() {
    for s in [
        AmState::Held,
        AmState::Open,
        AmState::Aborted,
        AmState::Concluding,
        AmState::Cleared,
        AmState::Disputed,
        AmState::Expired,
    ] {
        assert_eq!(AmState::parse(s.as_str()), Some(s));
    }
    for s in [
        MtaState::Informed,
        MtaState::Open,
        MtaState::Refused,
        MtaState::Concluding,
        MtaState::Clearing,
        MtaState::Cleared,
        MtaState::Disputed,
        MtaState::Expired,
    ] {
        assert_eq!(MtaState::parse(s.as_str()), Some(s));
    }
    for r in [
        Refusal::UnknownMerchant,
        Refusal::NoRate,
        Refusal::BadDeposit,
        Refusal::Declined,
        Refusal::Unanswered,
        Refusal::Abandoned,
    ] {
        assert_eq!(Refusal::parse(r.as_str()), Some(r));
        assert_eq!(
            serde_json::to_value(r).expect("json"),
            serde_json::json!(r.as_str())
        );
    }
}

#[test]
fn the_ack_names_the_merchants_key_and_an_open_session_forwards_order_keys() {
    let (am, _, _) = opened();
    assert_eq!(am.merchant_key, Some("cd".repeat(32)));
    let order = Id::new();
    let (am, fx) = am
        .handle(
            at(10),
            AmInput::OrderKey {
                order,
                k1: "0b".repeat(32),
                message: Id::new(),
            },
        )
        .expect("forwarded");
    assert_eq!(am.state, AmState::Open);
    assert_eq!(
        (fx.peers[0].kind.as_str(), &fx.peers[0].body["k1"]),
        (ORDER_KEY, &serde_json::json!("0b".repeat(32)))
    );
    // The journal's record never holds the key.
    assert!(!format!("{:?}", fx.ledger).contains(&"0b".repeat(32)));
    assert_eq!(
        am.clone()
            .handle(
                at(11),
                AmInput::OrderKey {
                    order,
                    k1: "zz".into(),
                    message: Id::new(),
                },
            )
            .expect_err("not hex"),
        TradeError::Invalid("K1 is 64 hex digits")
    );
    let (concluding, _) = am
        .handle(
            at(12),
            AmInput::Record {
                record: record(Side::Customer, 1, "a"),
                signed: "{}".into(),
                message: Id::new(),
            },
        )
        .expect("concluding");
    assert!(matches!(
        concluding.handle(
            at(13),
            AmInput::OrderKey {
                order,
                k1: "0b".repeat(32),
                message: Id::new(),
            },
        ),
        Err(TradeError::State("concluding", "order key"))
    ));
}

/// Both records of the current transactions in, agreeing on `minor`: cleared at both nodes.
fn clear_both(am: AmSession, mta: MtaSession, minor: i64, when: i64) -> (AmSession, MtaSession) {
    let mut r = record(Side::Customer, minor, "a");
    r.transaction = am.transaction();
    let (am, _) = am
        .handle(
            at(when),
            AmInput::Record {
                record: r.clone(),
                signed: "{}".into(),
                message: Id::new(),
            },
        )
        .expect("concluding");
    let merchant = Record {
        side: Side::Merchant,
        ..r.clone()
    };
    let (mta, _) = mta
        .handle(at(when), MtaInput::Record(merchant), Id::new())
        .expect("one in");
    let (mta, fx) = mta
        .handle(at(when), MtaInput::Record(r), Id::new())
        .expect("both in");
    assert_eq!(mta.state, MtaState::Clearing);
    let clearing: Clearing = serde_json::from_value(fx.peers[0].body.clone()).expect("clearing");
    assert_eq!(clearing.transaction, am.transaction());
    let (am, _) = am
        .handle(
            at(when),
            AmInput::Cleared {
                clearing,
                message: Id::new(),
            },
        )
        .expect("cleared");
    assert_eq!(am.state, AmState::Cleared);
    let (mta, _) = mta
        .handle(at(when), MtaInput::Posted, Id::new())
        .expect("paid");
    assert_eq!(mta.state, MtaState::Cleared);
    (am, mta)
}

#[test]
fn a_cleared_session_starts_its_next_transaction_at_both_nodes() {
    let (am, mta, _) = opened();
    // Not before the transaction is cleared.
    let next = |deposit, message| AmInput::Next {
        deposit,
        ack_window_s: 60,
        message,
    };
    let e = am
        .clone()
        .handle(at(3), next(eur(500), Id::new()))
        .expect_err("open");
    assert_eq!(e, TradeError::State("open", "next transaction"));
    let (am, mta) = clear_both(am, mta, 1000, 3);
    // Another currency, or too late to be acknowledged before the session's end: refused.
    for (when, deposit) in [(10, usd(500)), (10, eur(0)), (3600 - 60, eur(500))] {
        let e = am
            .clone()
            .handle(at(when), next(deposit, Id::new()))
            .expect_err("refused");
        assert_eq!(e.fault(), Fault::Caller, "{when} {deposit}");
    }
    let (am, fx) = am
        .with_hold(None)
        .handle(at(10), next(eur(500), Id::new()))
        .expect("next");
    let tx2 = tx().next().expect("next");
    assert_eq!((am.state, am.transaction()), (AmState::Held, tx2));
    // A new hold, until the session's hold time (lifetime + grace = 5400 s) at the latest.
    match &fx.ledger {
        Some(Command::Transfer {
            amount_minor,
            timeout_s,
            ..
        }) => assert_eq!((*amount_minor, *timeout_s), (500, Some(5400 - 10))),
        other => panic!("no hold: {other:?}"),
    }
    let init = initiation(&fx);
    assert_eq!(
        (init.transaction, init.deposit, init.customer_cert.clone()),
        (tx2, eur(500), None)
    );
    // The MTA takes only the next transaction of a cleared session from its AM.
    let mut third = init.clone();
    third.transaction = tx2.next().expect("third");
    for (bad, from) in [(third, node(1)), (init.clone(), node(3))] {
        let e = mta
            .clone()
            .next(
                bad,
                from,
                terms("EUR", None, true),
                WINDOWS,
                at(11),
                Id::new(),
            )
            .expect_err("refused");
        assert_eq!(e.fault(), Fault::Peer);
    }
    let (mta, fx) = mta
        .next(
            init,
            node(1),
            terms("EUR", None, true),
            WINDOWS,
            at(11),
            Id::new(),
        )
        .expect("next");
    assert_eq!((mta.state, mta.transaction()), (MtaState::Open, tx2));
    assert_eq!(
        (mta.customer_record.clone(), mta.merchant_record.clone()),
        (None, None)
    );
    let ack: Ack = serde_json::from_value(fx.peers[0].body.clone()).expect("ack");
    assert_eq!(ack.transaction, Some(tx2));
    // The first transaction's ack (a stray copy) does not open the second.
    let old = Ack {
        transaction: None,
        ..ack.clone()
    };
    let e = am
        .clone()
        .handle(at(12), AmInput::Ack(old))
        .expect_err("stale");
    assert_eq!(e.fault(), Fault::Peer);
    let hold2 = Id::new();
    let (am, _) = am
        .with_hold(Some(hold2))
        .handle(at(12), AmInput::Ack(ack))
        .expect("open");
    assert_eq!(am.state, AmState::Open);
    // A record or a dispute of the first transaction is not one of the second.
    let e = mta
        .clone()
        .handle(
            at(13),
            MtaInput::Record(record(Side::Merchant, 1000, "a")),
            Id::new(),
        )
        .expect_err("stale record");
    assert_eq!(e.fault(), Fault::Peer);
    let e = am
        .clone()
        .handle(at(13), AmInput::Disputed(tx()))
        .expect_err("stale dispute");
    assert_eq!(e.fault(), Fault::Peer);
    // The second transaction clears on its own hold.
    let (am, mta) = clear_both(am, mta, 300, 14);
    assert_eq!(
        (am.clearing.as_ref().map(|c| c.customer_total), mta.txn),
        (Some(eur(300)), 2)
    );
    // Its dispute and expiry name it.
    assert_eq!(
        about(am.transaction()),
        json!({"session": am.id, "transaction": tx2})
    );
    assert_eq!(about(tx()), json!({"session": am.id}));
}

#[test]
fn answers_name_a_later_transaction_and_keep_their_shape_for_the_first() {
    let session = SessionId::new(node(1), 7).expect("id");
    let rate = Rate {
        numerator: 1,
        denominator: 1,
    };
    let mut ack = Ack {
        session,
        transaction: None,
        rate,
        merchant_deposit: eur(500),
        merchant_key: None,
        merchant_cert: None,
    };
    let first = format!(
        r#"{{"session":"{session}","rate":{{"numerator":1,"denominator":1}},"merchant_deposit":{{"minor":500,"currency":"EUR"}}}}"#
    );
    assert_eq!(serde_json::to_string(&ack).expect("json"), first);
    assert_eq!(ack.transaction_id(), tx());
    ack.transaction = later(tx().next().expect("next"));
    let second = format!(
        r#"{{"session":"{session}","transaction":"{session}.2","rate":{{"numerator":1,"denominator":1}},"merchant_deposit":{{"minor":500,"currency":"EUR"}}}}"#
    );
    assert_eq!(serde_json::to_string(&ack).expect("json"), second);
    assert_eq!(serde_json::from_str::<Ack>(&second).expect("back"), ack);
    let refused = Refused {
        session,
        transaction: later(tx().next().expect("next")),
        reason: Refusal::NoRate,
    };
    assert_eq!(
        serde_json::to_string(&refused).expect("json"),
        format!(r#"{{"session":"{session}","transaction":"{session}.2","reason":"no_rate"}}"#)
    );
    assert_eq!(later(tx()), None);
    assert_eq!(label(tx()), session.to_string());
    assert_eq!(label(tx().next().expect("next")), format!("{session}.2"));
}

/// The merchant's terminate ends the session, not only its transaction (the seed: the session
/// ends "on a terminate message from either side"): the current transaction still concludes
/// and clears, the word is taken once, and the next transaction's initiation is refused
/// (`ended`), so the AM voids its hold at once.
#[test]
fn the_merchants_terminate_ends_the_session() {
    let (am, mta, _) = opened();
    let (mta, fx) = mta
        .handle(at(2), MtaInput::MerchantEnds, Id::new())
        .expect("ended");
    // A journal record, no money, no message.
    assert!(mta.merchant_ended && fx.peers.is_empty());
    assert!(matches!(fx.ledger, Some(Command::Record { ref kind, .. }) if kind == "session_ended"));
    assert_eq!(mta.state, MtaState::Open);
    let (mta, fx) = mta
        .handle(at(2), MtaInput::MerchantEnds, Id::new())
        .expect("again");
    assert_eq!(fx, Effects::none());
    // Kept across a restart (the row's JSON).
    let mta: MtaSession =
        serde_json::from_value(serde_json::to_value(&mta).expect("json")).expect("back");
    assert!(mta.merchant_ended);
    let (am, mta) = clear_both(am, mta, 1000, 3);
    assert_eq!(mta.state, MtaState::Cleared);
    let (am, fx) = am
        .with_hold(None)
        .handle(
            at(10),
            AmInput::Next {
                deposit: eur(500),
                ack_window_s: 60,
                message: Id::new(),
            },
        )
        .expect("next asked");
    let (mta, fx) = mta
        .next(
            initiation(&fx),
            node(1),
            terms("EUR", None, true),
            WINDOWS,
            at(11),
            Id::new(),
        )
        .expect("answered");
    assert_eq!(
        (mta.state, mta.refusal, mta.txn),
        (MtaState::Refused, Some(Refusal::Ended), 2)
    );
    assert_eq!(fx.peers[0].kind, REFUSED);
    let refused: Refused = serde_json::from_value(fx.peers[0].body.clone()).expect("refused");
    assert_eq!(refused.reason, Refusal::Ended);
    let (am, _) = am
        .handle(at(12), AmInput::Refused(refused))
        .expect("aborted");
    // The customer's operator says why.
    assert_eq!(
        (am.state, am.refusal),
        (AmState::Aborted, Some(Refusal::Ended))
    );
}
