//! How receipts, tokens, warrants and arbiter decisions read in a terminal, and the commands
//! that only show what the node holds: `receipt list`, `receipt show`.
//!
//! The summaries are fixed text (tests and scripts read them by their labels); `--json`
//! prints the node's answer as the wire type, or, for what is made here, a struct whose fields
//! are in alphabetical order, as that output has always been.

use std::process::ExitCode;
use tally_client::wire::receipts::{ArbiterView, ReceiptView, TokenView, WarrantView};
use tally_kernel::Timestamp;
use tally_proto::receipt::{self as proto, VERSION_BLS, VERSION_ED25519};

use super::{ConnArgs, TransactionArgs};
use crate::client::Client;

/// Seconds since the epoch (field 4) as RFC 3339.
pub(super) fn rfc3339_s(seconds: i64) -> String {
    Timestamp(seconds.saturating_mul(1_000_000)).to_rfc3339()
}

/// A receipt version and what it means.
pub(super) fn version_text(version: u8) -> &'static str {
    match version {
        VERSION_ED25519 => "1 (Ed25519 party signatures)",
        VERSION_BLS => "2 (BLS party signatures, fair exchange)",
        _ => "unknown",
    }
}

/// The record between clear markers, exactly as it is (checked plain text beforehand).
pub(super) fn record_block(record: &str) -> String {
    let mut out = format!(
        "----- record: {} bytes, sha256 {} -----\n{record}",
        record.len(),
        hex::encode(proto::content_hash(record))
    );
    if record.ends_with('\n') {
        out.push_str("----- end of record -----");
    } else {
        out.push_str("\n----- end of record (no newline at its end) -----");
    }
    out
}

/// An offer as party B reads it before signing; `own` marks B's line.
pub(super) fn offer_text(v: &ReceiptView, own: &str) -> String {
    format!(
        "transaction   {}\nversion       {}\ntime          {}\nparty A       {}  key {}\nparty B       {}  key {}{own}\nfair exchange {}\n{}",
        v.transaction,
        version_text(v.version),
        rfc3339_s(v.time),
        v.party_a,
        v.party_a_fingerprint,
        v.party_b,
        v.party_b_fingerprint,
        if v.fair { "yes" } else { "no" },
        record_block(&v.record)
    )
}

/// A receipt's state, fields and parties (without the record).
pub(super) fn receipt_text(v: &ReceiptView) -> String {
    let mut out = format!(
        "transaction   {}\nstate         {}\nversion       {}\ntime          {}\ncontent hash  {}\nparty A       {}  key {}\nparty B       {}  key {}\nfair exchange {}",
        v.transaction,
        v.state,
        version_text(v.version),
        rfc3339_s(v.time),
        v.content_hash,
        v.party_a,
        v.party_a_fingerprint,
        v.party_b,
        v.party_b_fingerprint,
        if v.fair { "yes" } else { "no" },
    );
    for (name, value) in [
        ("warrant A", &v.warrant_a),
        ("warrant B", &v.warrant_b),
        ("digest", &v.digest),
    ] {
        if let Some(x) = value {
            out.push_str(&format!("\n{name:13} {x}"));
        }
    }
    if let Some(n) = v.receipt_number {
        out.push_str(&format!("\nreceipt no.   {n}"));
    }
    if let Some(t) = v.acked_at {
        out.push_str(&format!("\nacked         {}", t.to_rfc3339()));
    }
    out
}

/// Receipts as a table, newest first as the node lists them.
fn receipt_table(list: &[ReceiptView]) -> String {
    if list.is_empty() {
        return "(no receipts)".into();
    }
    let mut out = format!(
        "{:>16}  {:9} {:4} {:16} {:16} {}\n",
        "transaction", "state", "fair", "party A", "party B", "time"
    );
    let rows: Vec<String> = list
        .iter()
        .map(|v| {
            format!(
                "{:>16}  {:9} {:4} {:16} {:16} {}",
                v.transaction,
                v.state,
                if v.fair { "fair" } else { "-" },
                v.party_a,
                v.party_b,
                rfc3339_s(v.time)
            )
        })
        .collect();
    out.push_str(&rows.join("\n"));
    out
}

/// A warrant's counterparties: `any`, or the names.
fn counterparties_text(w: &WarrantView) -> &str {
    if w.counterparties == "*" {
        "any"
    } else {
        &w.counterparties
    }
}

/// One warrant in full.
pub(super) fn warrant_text(w: &WarrantView) -> String {
    let mut out = format!(
        "warrant        {}\nissuer         {}\ncounterparties {}\nvalid          {} to {}",
        w.serial,
        w.issuer,
        counterparties_text(w),
        w.not_before.to_rfc3339(),
        w.not_after.to_rfc3339()
    );
    if let Some(r) = w.revoked_at {
        out.push_str(&format!("\nrevoked        {}", r.to_rfc3339()));
    }
    out
}

/// Warrants, one line each.
pub(super) fn warrant_table(list: &[WarrantView]) -> String {
    if list.is_empty() {
        return "(no warrants)".into();
    }
    list.iter()
        .map(|w| {
            format!(
                "{}  {:16} {:24} until {}{}",
                w.serial,
                w.issuer,
                counterparties_text(w),
                w.not_after.to_rfc3339(),
                if w.revoked_at.is_some() {
                    "  (revoked)"
                } else {
                    ""
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The node's tokens, one line each.
pub(super) fn token_table(tokens: &[TokenView]) -> String {
    if tokens.is_empty() {
        return "(no tokens)".into();
    }
    tokens
        .iter()
        .map(|t| {
            format!(
                "{}  {:16} {:>4} slots  {} unacknowledged  issued {}",
                t.serial,
                t.holder,
                t.slots,
                t.unacked,
                t.created_at.to_rfc3339()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the arbiter decided.
pub(super) fn arbiter_text(v: &ArbiterView) -> String {
    format!(
        "transaction   {}\ndecision      {}\nsignature     {}\nstate         {}",
        v.transaction,
        v.decision,
        v.signature.as_deref().unwrap_or("- (none released)"),
        v.receipt.state
    )
}

/// `tally receipt list`.
pub(super) async fn list(a: ConnArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let list = c.api.receipts().await?;
    c.show(&list, |list| receipt_table(list));
    Ok(ExitCode::SUCCESS)
}

/// `tally receipt show`.
pub(super) async fn show(a: TransactionArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let v = c.api.receipt(a.transaction).await?;
    c.show(&v, |v| {
        format!("{}\n{}", receipt_text(v), record_block(&v.record))
    });
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_shown_between_markers_as_they_are() {
        let with_newline = record_block("Order 1\n");
        assert!(with_newline.starts_with("----- record: 8 bytes, sha256 "));
        assert!(with_newline.ends_with("Order 1\n----- end of record -----"));
        let without = record_block("Order 1");
        assert!(without.ends_with("Order 1\n----- end of record (no newline at its end) -----"));
    }

    #[test]
    fn times_and_versions_read_as_before() {
        assert_eq!(rfc3339_s(0), Timestamp(0).to_rfc3339());
        assert_eq!(
            version_text(VERSION_ED25519),
            "1 (Ed25519 party signatures)"
        );
        assert_eq!(version_text(9), "unknown");
        assert_eq!(receipt_table(&[]), "(no receipts)");
        assert_eq!(warrant_table(&[]), "(no warrants)");
        assert_eq!(token_table(&[]), "(no tokens)");
    }
}
