//! `tally report sales`: the producer's sales with what was paid and when, and the fingerprint
//! of each unlock key (for matching registrations).
//!
//! `--format csv` prints the node's CSV as it wrote it; `--format json` the rows as the node
//! serializes them (the same types, so the same bytes); the table is drawn here, with totals
//! per currency.

use anyhow::Context;
use std::io::Write;
use std::process::ExitCode;
use tally_client::wire::delivery::{ReportQuery, ReportRow};
use tally_kernel::{Amount, Timestamp};

use super::common::or_dash;
use super::{ReportCommand, ReportFormat, ReportSalesArgs};
use crate::client::{Client, parse_id};

/// `tally report sales`.
pub async fn report(cmd: ReportCommand) -> anyhow::Result<ExitCode> {
    let ReportCommand::Sales(a) = cmd;
    let filter = report_filter(&a)?;
    let c = Client::new(&a.conn)?;
    let format = a.format.unwrap_or(if c.json {
        ReportFormat::Json
    } else {
        ReportFormat::Table
    });
    let text = match format {
        ReportFormat::Csv => c.api.sales_report_csv(&filter).await?,
        ReportFormat::Json => {
            let rows = c.api.sales_report(&filter).await?;
            serde_json::to_string(&rows).context("the report as JSON")?
        }
        ReportFormat::Table => {
            let rows = c.api.sales_report(&filter).await?;
            println!("{}", report_table(&rows));
            return Ok(ExitCode::SUCCESS);
        }
    };
    verbatim(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The report's filter, checked before the request: an id, RFC 3339 times.
fn report_filter(a: &ReportSalesArgs) -> anyhow::Result<ReportQuery> {
    let product = match &a.product {
        Some(p) => Some(parse_id("--product", p)?),
        None => None,
    };
    for (flag, value) in [("--from", &a.from), ("--to", &a.to)] {
        if let Some(t) = value {
            Timestamp::parse_rfc3339(t).with_context(|| {
                format!("{flag} {t:?}: expected RFC 3339, e.g. 2026-11-01T00:00:00Z")
            })?;
        }
    }
    Ok(ReportQuery {
        producer: a.producer.clone(),
        product,
        from: a.from.clone(),
        to: a.to.clone(),
        format: None,
    })
}

/// Writes `body` to stdout as it is: verbatim for pipes; a terminal gets its prompt back on a
/// line of its own.
fn verbatim(body: &[u8]) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(body)?;
    if stdout.is_terminal() && !body.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

/// The rows in aligned columns, then the count and what was paid per currency.
fn report_table(rows: &[ReportRow]) -> String {
    let mut out = format!(
        "{:25} {:27} {:9} {:>14} {:>14}  {:16}  {}\n",
        "REFERENCE", "CREATED", "STATE", "PRICE", "PAID", "KEY", "TITLE"
    );
    let mut totals: Vec<Amount> = Vec::new();
    for r in rows {
        out.push_str(&format!(
            "{:25} {:27} {:9} {:>14} {:>14}  {:16}  {}\n",
            r.reference,
            r.created_at.to_string(),
            r.state.as_str(),
            or_dash(&r.price),
            or_dash(&r.paid),
            r.key_fingerprint,
            r.title,
        ));
        if let Ok(p) = r.paid.parse::<Amount>() {
            match totals.iter_mut().find(|t| t.currency == p.currency) {
                Some(t) => *t = t.checked_add(p).unwrap_or(*t),
                None => totals.push(p),
            }
        }
    }
    out.push_str(&format!(
        "{} sale{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    for t in totals {
        out.push_str(&format!(", paid {t}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_kernel::Id;
    use tally_proto::delivery::sale::SaleState;

    fn row(paid: &str) -> ReportRow {
        ReportRow {
            sale: Id::new(),
            product: Id::new(),
            title: "Night Songs".into(),
            producer: "shop".into(),
            merchant: "shop".into(),
            buyer: "alice".into(),
            reference: "ABCD-EFGH".into(),
            created_at: Timestamp(0),
            state: if paid.is_empty() {
                SaleState::Open
            } else {
                SaleState::Released
            },
            price: "9.90 EUR".into(),
            paid: paid.into(),
            paid_at: None,
            mismatched_payments: 0,
            key_fingerprint: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn the_table_totals_what_was_paid() {
        let table = report_table(&[row("9.90 EUR"), row("9.90 EUR"), row("")]);
        assert!(table.ends_with("3 sales, paid 19.80 EUR"), "{table}");
        let open = table.lines().nth(3).expect("third row");
        assert!(open.contains("open     "), "{open}");
        assert!(open.contains("9.90 EUR              -  0123"), "{open}");
    }

    #[test]
    fn times_are_checked_before_any_request() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: ReportSalesArgs,
        }
        let cli = Cli::parse_from(["t", "--from", "yesterday"]);
        assert!(report_filter(&cli.a).is_err());
        let cli = Cli::parse_from(["t", "--from", "2026-11-01T00:00:00Z", "--product", "x"]);
        assert!(report_filter(&cli.a).is_err());
    }
}
