//! `tally transfer --batch FILE.jsonl`: the transfer events of a JSON Lines file, sent to
//! `POST /v1/transfers/batch` in batches of at most 8,189 events that never cut a linked
//! chain. The file is read twice (checked whole before anything is sent, then sent), so memory
//! stays flat whatever its size and a malformed line sends nothing.

use crate::client::Client;
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use tally_client::wire::ledger::{TransferBatchRequest, TransferEventDto};
use tally_ledger::batch::BATCH_EVENTS_MAX;

/// Refused events listed by name before the rest are only counted.
const LISTED_MAX: usize = 20;

/// One event and the line it came from.
struct Line {
    number: usize,
    event: TransferEventDto,
}

/// Reads the file's events in order, numbering them by line; blank lines are skipped.
fn events(file: &Path) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Line>>> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let lines = std::io::BufReader::new(f).lines().enumerate();
    Ok(lines.filter_map(|(i, line)| {
        let number = i + 1;
        match line {
            Err(e) => Some(Err(anyhow::anyhow!("line {number}: {e}"))),
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => Some(
                serde_json::from_str::<TransferEventDto>(&text)
                    .map_err(|e| anyhow::anyhow!("line {number}: {e}"))
                    .and_then(|event| {
                        event.to_event().map_err(|(field, reason)| {
                            anyhow::anyhow!("line {number}: {field}: {reason}")
                        })?;
                        Ok(Line { number, event })
                    }),
            ),
        }
    }))
}

/// Cuts a stream of events into batches of at most `max`, never inside a linked chain.
struct Batches<I> {
    lines: I,
    carry: Vec<Line>,
    max: usize,
}

impl<I: Iterator<Item = anyhow::Result<Line>>> Iterator for Batches<I> {
    type Item = anyhow::Result<Vec<Line>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut batch = std::mem::take(&mut self.carry);
        while batch.len() < self.max {
            match self.lines.next() {
                Some(Ok(line)) => batch.push(line),
                Some(Err(e)) => return Some(Err(e)),
                None => break,
            }
        }
        if batch.is_empty() {
            return None;
        }
        // Full, and its last event opens or continues a chain: cut where that chain began.
        let full = batch.len() == self.max;
        if full && batch.last().is_some_and(|l| l.event.flags.linked) {
            let start = batch
                .iter()
                .rposition(|l| !l.event.flags.linked)
                .map_or(0, |i| i + 1);
            if start == 0 {
                let first = batch.first().map_or(0, |l| l.number);
                return Some(Err(anyhow::anyhow!(
                    "line {first}: a linked chain longer than {} events cannot be sent",
                    self.max
                )));
            }
            self.carry = batch.split_off(start);
        }
        Some(Ok(batch))
    }
}

/// Checks the whole file, then sends it.
pub(crate) async fn send(c: &Client, file: &Path) -> anyhow::Result<ExitCode> {
    let mut total = 0_u64;
    let checked = Batches {
        lines: events(file)?,
        carry: Vec::new(),
        max: BATCH_EVENTS_MAX,
    };
    for batch in checked {
        total += batch?.len() as u64;
    }
    if total == 0 {
        anyhow::bail!("{} holds no events", file.display());
    }
    let bar = crate::progress_bar(total, "sending transfers");
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused: Vec<String> = Vec::new();
    let batches = Batches {
        lines: events(file)?,
        carry: Vec::new(),
        max: BATCH_EVENTS_MAX,
    };
    for batch in batches {
        let batch = batch?;
        let numbers: Vec<usize> = batch.iter().map(|l| l.number).collect();
        let request = TransferBatchRequest {
            events: batch.into_iter().map(|l| l.event).collect(),
        };
        let answer = c.api.transfer_batch(&request).await?;
        for ((number, event), result) in numbers.iter().zip(&request.events).zip(&answer.results) {
            if c.json {
                let line = serde_json::json!({
                    "line": number,
                    "id": event.id,
                    "status": result.status,
                    "transfer": result.transfer,
                });
                println!("{line}");
            }
            if !matches!(result.status.as_str(), "created" | "exists") {
                refused.push(format!("line {number}: {}: {}", event.id, result.status));
            }
            *counts.entry(result.status.clone()).or_default() += 1;
        }
        bar.inc(numbers.len() as u64);
    }
    bar.finish_and_clear();
    if !c.json {
        for line in refused.iter().take(LISTED_MAX) {
            println!("{line}");
        }
        if refused.len() > LISTED_MAX {
            println!("… and {} more refused", refused.len() - LISTED_MAX);
        }
        let by_status: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let noun = if total == 1 { "event" } else { "events" };
        println!("{total} {noun}: {}", by_status.join(", "));
    }
    Ok(if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(number: usize, linked: bool) -> anyhow::Result<Line> {
        let mut event: TransferEventDto =
            serde_json::from_value(serde_json::json!({ "id": uuid::Uuid::now_v7() }))?;
        event.flags.linked = linked;
        Ok(Line { number, event })
    }

    fn cut(links: &[bool], max: usize) -> Vec<Result<Vec<usize>, String>> {
        let lines: Vec<anyhow::Result<Line>> = links
            .iter()
            .enumerate()
            .map(|(i, l)| line(i + 1, *l))
            .collect();
        Batches {
            lines: lines.into_iter(),
            carry: Vec::new(),
            max,
        }
        .map(|b| {
            b.map(|b| b.iter().map(|l| l.number).collect())
                .map_err(|e| e.to_string())
        })
        .collect()
    }

    #[test]
    fn batches_are_cut_between_chains_never_inside_one() {
        // Lines 3–5 are one chain (3 and 4 linked, 5 ends it); a cut at 4 would split it.
        let got = cut(&[false, false, true, true, false, false], 4);
        assert_eq!(got, vec![Ok(vec![1, 2]), Ok(vec![3, 4, 5, 6])]);
        // Fits exactly: no cut needed.
        assert_eq!(cut(&[false, true, false], 3), vec![Ok(vec![1, 2, 3])]);
        // A chain longer than a batch cannot be sent.
        let got = cut(&[true, true, true, false], 3);
        assert!(
            matches!(&got[0], Err(e) if e.contains("longer than 3")),
            "{got:?}"
        );
    }
}
