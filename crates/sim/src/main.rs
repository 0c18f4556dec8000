//! `tally-sim`: runs the simulator over many seeds (longer than CI's budget).
//!
//! ```text
//! cargo run -p tally-sim --release -- --seeds 1000 [--from 0] [--steps 300] [--trading]
//! ```
//!
//! `--trading`: trading sessions across two nodes instead of the one node's protocols.

use std::process::ExitCode;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let seeds = arg("--seeds", 100);
    let from = arg("--from", 0);
    let steps = arg("--steps", 300) as usize;
    if std::env::args().any(|a| a == "--trading") {
        return trading(from, seeds, steps).await;
    }
    let mut total = tally_sim::Outcome::default();
    for seed in from..from + seeds {
        match tally_sim::run(tally_sim::Config { seed, steps }).await {
            Ok(o) => {
                total.requests += o.requests;
                total.crashes += o.crashes;
                total.messages += o.messages;
                total.batches.add(&o.batches);
            }
            Err(f) => {
                eprintln!("{f}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{seeds} seeds x {steps} steps passed: {} requests, {} messages, {} crashes; ledger \
         batches: {}",
        total.requests, total.messages, total.crashes, total.batches
    );
    ExitCode::SUCCESS
}

async fn trading(from: u64, seeds: u64, steps: usize) -> ExitCode {
    let mut total = tally_sim::TradeOutcome::default();
    for seed in from..from + seeds {
        match tally_sim::run_trading(tally_sim::Config { seed, steps }).await {
            Ok(o) => total.add(&o),
            Err(f) => {
                eprintln!("{f}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{seeds} seeds x {steps} steps of trading sessions passed: {total}");
    ExitCode::SUCCESS
}
