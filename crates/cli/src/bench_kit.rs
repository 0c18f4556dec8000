//! What every benchmark shares: the load loop (many clients for a fixed time), the results
//! table, number formats, and reading a code out of a message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A results table after a blank line: the column names, then one line per row (measurement,
/// rate, ratio), in the columns every benchmark uses.
pub fn print_rows(columns: [&str; 3], rows: &[[String; 3]]) {
    println!();
    let [a, b, c] = columns;
    println!("{a:<44} {b:>14} {c:>16}");
    for [label, rate, ratio] in rows {
        println!("{label:<44} {rate:>14} {ratio:>16}");
    }
}

/// `value` as a multiple of `reference` (`2.5x`), or `-` without a reference.
pub fn fmt_ratio(value: f64, reference: Option<f64>, decimals: usize) -> String {
    reference.map_or("-".to_string(), |r| format!("{:.*}x", decimals, value / r))
}

/// A rate with thousands separators (`12,458`).
pub fn fmt_rate(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs `clients` tasks made by `client(number, stop)` for `seconds` (a progress bar
/// ticking each second), then raises `stop` and waits for every task; the first error of a
/// task is returned. The seconds from just before the first task was spawned to the end of
/// the last one.
pub async fn load<E, Fut>(
    clients: usize,
    seconds: u64,
    client: impl Fn(usize, Arc<AtomicBool>) -> Fut,
) -> anyhow::Result<f64>
where
    E: Into<anyhow::Error> + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let bar = crate::progress_bar(seconds, "load");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for number in 0..clients {
        tasks.push(tokio::spawn(client(number, stop.clone())));
    }
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?.map_err(Into::into)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(elapsed)
}

/// The code in a message body: the first run of 6–10 digits after the word "code".
pub fn code_in(body: &str) -> Option<&str> {
    let rest = &body[body.find("code")?..];
    let digits = &rest[rest.find(|c: char| c.is_ascii_digit())?..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    (6..=10).contains(&end).then(|| &digits[..end])
}

/// Durable transfers per second over HTTP: each lane `(client, from, to)` sends `per_lane`
/// transfers of 0.01 EUR one after another (each waits for its answer), the lanes at once.
pub async fn transfer_rate(
    lanes: Vec<(tally_client::Client, uuid::Uuid, uuid::Uuid)>,
    per_lane: usize,
) -> anyhow::Result<f64> {
    use tally_client::wire::ledger::TransferRequest;
    let n = lanes.len();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (client, from, to) in lanes {
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_lane {
                client
                    .transfer(
                        &uuid::Uuid::now_v7().to_string(),
                        &TransferRequest {
                            debit_account: from,
                            credit_account: to,
                            amount: Some("0.01 EUR".into()),
                            amount_minor: None,
                            currency: None,
                            memo: None,
                            notify: None,
                        },
                    )
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((n * per_lane) as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_the_first_run_of_digits_after_the_word_code() {
        assert_eq!(
            code_in("Your Tally sign-in code: 86411122\nValid until 2026-11-22T04:27:24Z."),
            Some("86411122")
        );
        assert_eq!(
            code_in("Confirm with code 123456:\n12.50 EUR to bob (account 0190)"),
            Some("123456")
        );
        assert_eq!(code_in("user 12345678 has no code here"), None);
        assert_eq!(code_in("Confirm with code {{code}}:\n12.50 EUR"), None);
        assert_eq!(fmt_rate(1_234_567.4), "1,234,567");
        assert_eq!(fmt_ratio(3.0, Some(2.0), 1), "1.5x");
        assert_eq!(fmt_ratio(1.0, Some(3.0), 2), "0.33x");
        assert_eq!(fmt_ratio(1.0, None, 2), "-");
    }
}
