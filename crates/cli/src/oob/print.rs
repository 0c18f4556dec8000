//! The summaries people read: the node's answers (wire types) as aligned text. `--json`
//! bypasses all of this and prints the answer itself.
//!
//! Times are RFC 3339, money is `12.50 EUR`, and what a session authorises is written out in
//! clear, the way it went to channel B. A verified session's `result` is the wire's
//! [`SessionResult`]: each application sets its own fields.

use crate::accounts::transfer_summary;
use serde::Deserialize;
use tally_client::wire::oob::{
    AddressView, CertificateView, Collection, MailView, Opened, Payout, RegisterLine, ResultMail,
    SessionResult, SessionView, Statement, TrusteeCredit,
};
use tally_kernel::Timestamp;
use tally_kernel::crypto::SignedRecord;
use tally_proto::oob::{Purpose, Transaction};

/// The part of a certificate's signed body (`SignedRecord::bytes`) shown in a summary; the
/// node writes more (user, purpose, times, what).
#[derive(Debug, Deserialize)]
struct CertifiedBody {
    /// What it certifies (`transfer`, `payment`, `mail_deposit`, …).
    kind: String,
    /// The session, hex.
    session: String,
}

/// `verified 2026-…` when `at` is set, else `not verified` (`done` is the word: verified,
/// retrieved).
pub(super) fn done_at(at: Option<Timestamp>, done: &str) -> String {
    match at {
        Some(t) => format!("{done} {}", t.to_rfc3339()),
        None => format!("not {done}"),
    }
}

pub(super) use crate::client::money;

/// Seconds, with `h:mm:ss` from a minute on.
pub(super) fn seconds(total_s: i64) -> String {
    if total_s < 60 {
        return format!("{total_s} s");
    }
    format!(
        "{total_s} s ({}:{:02}:{:02})",
        total_s / 3600,
        (total_s / 60) % 60,
        total_s % 60
    )
}

/// One line per item, or `empty` when there is none.
pub(super) fn rows<T>(items: &[T], empty: &str, line: impl Fn(&T) -> String) -> String {
    if items.is_empty() {
        return empty.to_string();
    }
    items.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// What a session authorises, in clear: the lines after `authorises`.
pub(super) fn purpose_text(user: &str, p: &Purpose) -> String {
    match p {
        Purpose::Login => format!("sign-in as {user}"),
        Purpose::Message(m) => format!("{}\n             content SHA-256 {}", m.title, m.sha256),
        Purpose::Transaction(t) => transaction_text(t),
    }
}

/// A transaction as the user must see it before typing the code.
fn transaction_text(t: &Transaction) -> String {
    let to_account = t
        .payee_account
        .map(|a| format!(" (account {a})"))
        .unwrap_or_default();
    let from = t
        .payer_account
        .map(|a| format!("\n             from account {a}"))
        .unwrap_or_default();
    format!(
        "{} to {}{to_account}{from}\n             for: {}",
        t.amount, t.payee, t.description,
    )
}

/// A session as shown on channel A: what it authorises, where the code went, its state.
pub(super) fn session_summary(v: &SessionView) -> String {
    let mut out = format!(
        "session      {}\nuser         {}\napplication  {}\nstate        {}\nauthorises   {}\ncode sent to {} {} (delivery {})\nexpires      {}\nattempts     {} left",
        v.session,
        v.user,
        v.application,
        v.state.as_str(),
        purpose_text(&v.user, &v.purpose),
        v.channel,
        v.address,
        v.delivery,
        v.expires_at.to_rfc3339(),
        v.attempts_left,
    );
    if let Some(e) = &v.delivery_error {
        out.push_str(&format!("\ndelivery     failed so far: {e}"));
    }
    if let Some(h) = v.hold_id {
        out.push_str(&format!("\nhold         {h}"));
    }
    out
}

/// The answer of opening a session: the session to confirm, or the transfer made at once.
pub(super) fn opened_summary(o: &Opened) -> String {
    match o {
        Opened::Secured { session, .. } => format!(
            "{}\nconfirm with `tally auth confirm {}`",
            session_summary(session),
            session.session
        ),
        Opened::Normal { transfer, .. } => format!(
            "executed at once: at or below the payee's threshold, no code needed\n{}",
            transfer_summary(transfer)
        ),
    }
}

/// A node-signed certificate (a [`SignedRecord`]): what it certifies, who signed, and the
/// record itself on one line, to keep or to verify offline.
fn certificate_text(signed: &SignedRecord) -> String {
    let body = serde_json::from_slice::<CertifiedBody>(&signed.bytes).ok();
    format!(
        "certificate  {} for session {}, signed by {}\nrecord       {}",
        body.as_ref().map_or("-", |b| b.kind.as_str()),
        body.as_ref().map_or("-", |b| b.session.as_str()),
        signed.signer,
        serde_json::to_string(signed).unwrap_or_default()
    )
}

/// A retrieved registered mail, with its text.
fn mail_text(m: &MailView) -> String {
    format!(
        "mail         {}\nfrom         {}\nto           {}\nsubject      {}\ndeposited    {}\n\n{}",
        m.id,
        m.sender,
        m.recipient,
        m.subject,
        m.deposited_at.to_rfc3339(),
        m.body,
    )
}

/// An opened offer, with its text.
fn offer_text(o: &MailView) -> String {
    format!(
        "--- offer from {} ({})\nsubject      {}\n\n{}",
        o.sender,
        o.deposited_at.to_rfc3339(),
        o.subject,
        o.body
    )
}

/// What a verified session produced (its `result`), plus a login's token; empty when it
/// produced nothing to show.
pub(super) fn result_text(view: &SessionView, access_token: Option<&str>) -> String {
    let result = view.result.clone().unwrap_or_default();
    let mut lines = token_lines(&result, access_token);
    if let Some(a) = result.address_verified {
        lines.push(format!(
            "address verified ({a}); codes can now be sent to it"
        ));
    }
    if let Some(h) = result.hold {
        lines.push(format!("hold {h} posted to the merchant"));
    }
    match &result.mail {
        Some(ResultMail::Deposited(id)) => lines.push(format!("mail deposited: {id}")),
        Some(ResultMail::Retrieved(m)) => lines.push(mail_text(m)),
        None => {}
    }
    if let Some(offers) = &result.offers {
        if offers.is_empty() {
            lines.push("no new offers".to_string());
        }
        lines.extend(offers.iter().map(offer_text));
    }
    if let Some(c) = &result.certificate {
        lines.push(certificate_text(c));
    }
    lines.join("\n")
}

/// A login's access token (shown once, at confirmation) or when the one issued expires.
fn token_lines(result: &SessionResult, access_token: Option<&str>) -> Vec<String> {
    let until = result
        .access_token_expires_at
        .map_or_else(|| "-".to_string(), Timestamp::to_rfc3339);
    match (access_token, result.access_token_expires_at) {
        (Some(t), _) => vec![
            format!("access token {t}"),
            format!("valid until  {until}"),
            "(send it as `Authorization: Bearer …` to /v1/oob/whoami)".to_string(),
        ],
        (None, Some(_)) => vec![format!("access token issued, valid until {until}")],
        (None, None) => Vec::new(),
    }
}

/// One session in a list: number, application, state, expiry and the first line of what it
/// authorises.
pub(super) fn session_line(r: &SessionView) -> String {
    let what = purpose_text(&r.user, &r.purpose);
    let first = what.lines().next().unwrap_or_default();
    format!(
        "{}  {:14} {:9} expires {}  {}",
        r.session,
        r.application,
        r.state.as_str(),
        r.expires_at.to_rfc3339(),
        first
    )
}

/// One second-channel address and whether it is verified.
pub(super) fn address_line(r: &AddressView) -> String {
    format!(
        "{:8} {:32} {}",
        r.channel,
        r.address,
        done_at(r.verified_at, "verified")
    )
}

/// One registered mail or offer (without its text).
pub(super) fn mail_line(m: &MailView) -> String {
    format!(
        "{}  {:10} {} -> {}  {:?}  {}  {}",
        m.deposited_at.to_rfc3339(),
        m.kind,
        m.sender,
        m.recipient,
        m.subject,
        done_at(m.retrieved_at, "retrieved"),
        m.id,
    )
}

/// One kept certificate: when, what, which session, who signed.
pub(super) fn certificate_line(r: &CertificateView) -> String {
    format!(
        "{}  {:19} session {}  signed by {}  {}",
        r.created_at.to_rfc3339(),
        r.kind,
        r.session,
        r.body.signer,
        r.id,
    )
}

/// One trustee payout: gross, the operator's fee, and what the merchant was paid.
pub(super) fn payout_line(p: &Payout) -> String {
    let code = &p.currency;
    format!(
        "{}  {} payments  gross {}  fee {}  paid {}  transfer {}",
        p.merchant_account,
        p.lines,
        money(p.gross_minor, code),
        money(p.fee_minor, code),
        money(p.gross_minor - p.fee_minor, code),
        p.transfer,
    )
}

/// One debt collected at settlement.
pub(super) fn collection_line(c: &Collection) -> String {
    format!(
        "{}  collected {}  transfer {}",
        c.user,
        money(c.amount_minor, &c.currency),
        c.transfer
    )
}

/// A user's trustee credit in one currency.
pub(super) fn credit_line(c: &TrusteeCredit) -> String {
    let code = &c.currency;
    format!(
        "{}  limit {}  owed {}  held {}  available {}",
        c.user,
        money(c.limit_minor, code),
        money(c.owed_minor, code),
        money(c.held_minor, code),
        money(c.available_minor, code),
    )
}

/// A statement: one line per register entry, the totals per currency and the session time.
pub(super) fn statement_text(v: &Statement) -> String {
    let mut out = vec![format!(
        "statement    {} from {} to {}",
        v.user,
        v.from.to_rfc3339(),
        v.to.to_rfc3339()
    )];
    if v.entries.is_empty() {
        out.push("(no entries)".to_string());
    }
    out.extend(v.entries.iter().map(register_line));
    for (code, minor) in &v.totals {
        out.push(format!("total        {}", money(*minor, code)));
    }
    out.push(format!("session time {}", seconds(v.duration_s)));
    out.join("\n")
}

/// One line of a statement.
fn register_line(e: &RegisterLine) -> String {
    let amount = if e.currency.is_empty() {
        "-".to_string()
    } else {
        money(e.amount_minor, &e.currency)
    };
    let payee = match e.payee.as_str() {
        "" | "-" => String::new(),
        p => format!("to {p}"),
    };
    let settled = if e.settled_at.is_some() {
        "  (settled)"
    } else {
        ""
    };
    format!(
        "{}  {:13} {:>16}  {:12} {:>6}  {}{settled}",
        e.created_at.to_rfc3339(),
        e.kind,
        amount,
        payee,
        seconds(e.duration_s),
        e.description,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tally_kernel::Id;
    use tally_proto::oob::Certified;

    const A: &str = "0190f6b2-7c1e-7000-8000-00000000000a";
    const B: &str = "0190f6b2-7c1e-7000-8000-00000000000b";

    fn id(text: &str) -> Id {
        Id(text.parse().expect("uuid"))
    }

    #[test]
    fn a_transaction_is_shown_in_clear() {
        let p = Purpose::Transaction(Transaction {
            amount: "12.50 EUR".parse().expect("amount"),
            payer_account: Some(id(A)),
            payee: "bob".into(),
            payee_account: Some(id(B)),
            description: "rent".into(),
        });
        let text = purpose_text("alice", &p);
        assert!(
            text.starts_with(&format!("12.50 EUR to bob (account {B})")),
            "{text}"
        );
        assert!(
            text.contains(&format!("from account {A}")) && text.contains("for: rent"),
            "{text}"
        );
        assert_eq!(purpose_text("alice", &Purpose::Login), "sign-in as alice");
        let m = Purpose::Message(Certified {
            title: "Registered mail to bob: Contract".into(),
            sha256: "ab".into(),
        });
        assert_eq!(
            purpose_text("alice", &m),
            "Registered mail to bob: Contract\n             content SHA-256 ab"
        );
    }

    #[test]
    fn statements_total_per_currency_and_time() {
        let line = |kind: &str, minor: i64, currency: &str, duration_s: i64, payee: &str| {
            json!({"id": A, "user_id": "alice", "session": "00", "kind": kind,
                   "amount_minor": minor, "currency": currency, "duration_s": duration_s,
                   "payee": payee, "payee_account": null, "description": kind,
                   "created_at": 0, "settled_at": null, "settlement_id": null})
        };
        let v: Statement = serde_json::from_value(json!({
            "user": "alice", "from": 0, "to": 1_000_000,
            "entries": [line("transfer", 1250, "EUR", 3, "bob"), line("login", 0, "", 61, "")],
            "totals": {"EUR": 1250}, "duration_s": 64}))
        .expect("statement");
        let text = statement_text(&v);
        assert!(
            text.contains("12.50 EUR") && text.contains("to bob") && text.contains("transfer"),
            "{text}"
        );
        assert!(text.contains("total        12.50 EUR"), "{text}");
        assert!(text.contains("session time 64 s (0:01:04)"), "{text}");
        assert_eq!(seconds(59), "59 s");
        assert_eq!(money(5, "XXZ"), "5 XXZ (minor units)");
    }

    fn verified(result: serde_json::Value) -> SessionView {
        serde_json::from_value(json!({
            "session": "0123456789abcdef0123456789abcdef", "user": "alice",
            "application": "login", "state": "verified", "purpose": {"type": "login"},
            "attempts_left": 3, "expires_at": 0, "channel": "dev", "address": "a***e",
            "delivery": "sent", "delivery_error": null, "hold_id": null, "result": result}))
        .expect("session")
    }

    #[test]
    fn results_are_read_per_application() {
        let login = verified(json!({"access_token_expires_at": 0}));
        let text = result_text(&login, Some("tally_session_x"));
        assert!(
            text.starts_with("access token tally_session_x\nvalid until  1970-"),
            "{text}"
        );
        assert!(
            result_text(&login, None).starts_with("access token issued, valid until 1970-"),
            "{}",
            result_text(&login, None)
        );
        let sent = verified(json!({"mail": A}));
        assert_eq!(result_text(&sent, None), format!("mail deposited: {A}"));
        let offers = verified(json!({"offers": []}));
        assert_eq!(result_text(&offers, None), "no new offers");
        assert!(
            serde_json::from_value::<SessionView>(json!(null)).is_err(),
            "a session view is an object"
        );
        assert_eq!(result_text(&verified(json!(null)), None), "");
    }

    #[test]
    fn a_certificate_names_what_it_certifies_and_who_signed() {
        let key = tally_kernel::crypto::SigningKey::from_seed(&[7; 32]);
        let body = json!({"kind": "transfer", "session": "ab", "user": "alice"});
        let signed = SignedRecord::sign("tally/oob-certificate/v1", &body, &key).expect("sign");
        let text = certificate_text(&signed);
        let first = format!(
            "certificate  transfer for session ab, signed by {}",
            signed.signer
        );
        assert!(text.starts_with(&first), "{text}");
        assert!(
            text.ends_with(&serde_json::to_string(&signed).expect("json")),
            "{text}"
        );

        // A signed body without the fields shown: dashes, and the record is still printed.
        let other = SignedRecord::sign("d", &json!({"what": 1}), &key).expect("sign");
        let text = certificate_text(&other);
        assert!(
            text.starts_with("certificate  - for session -, signed by "),
            "{text}"
        );
        assert!(text.contains("\nrecord       {"), "{text}");
    }
}
