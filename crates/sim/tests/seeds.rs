//! The simulator in CI: a fixed budget of seeds (`SIM_SEEDS`, default 12, of `SIM_STEPS`
//! steps, default 250), or the one seed `SIM_SEED` to replay a failure. Longer runs:
//! `cargo run -p tally-sim --release -- --seeds 1000`.

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "current_thread")]
async fn every_seed_keeps_every_invariant() {
    let steps = env("SIM_STEPS").unwrap_or(250) as usize;
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("SIM_SEEDS").unwrap_or(12)).collect(),
    };
    let mut requests = 0;
    let mut crashes = 0;
    let mut released_or_verified = 0;
    for seed in seeds {
        match tally_sim::run(tally_sim::Config { seed, steps }).await {
            Ok(o) => {
                requests += o.requests;
                crashes += o.crashes;
                released_or_verified += o.verified + o.receipts + o.released;
            }
            Err(f) => panic!("{f}"),
        }
    }
    // The runs did something: requests answered, crashes survived, protocols completed.
    assert!(requests > 0 && crashes > 0 && released_or_verified > 0);
    eprintln!("{requests} requests, {crashes} crashes, {released_or_verified} completions");
}

/// Trading sessions across two nodes (issue [7]): `SIM_SEEDS` seeds (default 6) of
/// `SIM_STEPS` steps (default 200), or the one seed `SIM_SEED`.
#[tokio::test(flavor = "current_thread")]
async fn trading_sessions_across_two_nodes_keep_every_invariant() {
    let started = std::time::Instant::now();
    let steps = env("SIM_STEPS").unwrap_or(200) as usize;
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("SIM_SEEDS").unwrap_or(6)).collect(),
    };
    let runs = seeds.len();
    let mut total = tally_sim::TradeOutcome::default();
    for seed in seeds {
        match tally_sim::run_trading(tally_sim::Config { seed, steps }).await {
            Ok(o) => total.add(&o),
            Err(f) => panic!("{f}"),
        }
    }
    eprintln!(
        "trading: {runs} seeds x {steps} steps in {:.1} s: {total}",
        started.elapsed().as_secs_f64()
    );
    // The runs did something: sessions cleared, disputed, refused and aborted, crashes
    // survived, the wire lost and repeated messages, customers retried.
    if env("SIM_SEED").is_none() {
        assert!(total.cleared > 0 && total.disputed > 0, "{total}");
        assert!(total.refused > 0 && total.aborted > 0, "{total}");
        assert!(total.refused_opens > 0 && total.replays > 0, "{total}");
        assert!(total.crashes > 0 && total.purchases > 0, "{total}");
        assert!(total.dropped > 0 && total.duplicated > 0, "{total}");
    }
}

/// Seeds of the trading simulation with `options`, each run to its end.
async fn trading_with(options: tally_sim::TradeOptions) {
    let steps = env("SIM_STEPS").unwrap_or(200) as usize;
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("SIM_SEEDS").unwrap_or(6)).collect(),
    };
    for seed in seeds {
        let config = tally_sim::Config { seed, steps };
        if let Err(f) = tally_sim::run_trading_with(config, options).await {
            panic!("{f}");
        }
    }
}

/// The same with clock jumps of a day or more while sessions are open, so deposits' holds run
/// out before the session concludes.
///
/// Ignored: it fails (seeds 0, 2, 3, 4 and 5 of the default six; `SIM_SEED=2 cargo test -p
/// tally-sim trading_sessions_with_long -- --ignored --nocapture`). A customer whose hold has
/// passed its lifetime plus the clearing grace still posts its record at A, which takes it
/// (`open` → `concluding`: the AM does not check that its hold is still pending) and forwards
/// it; B takes it with the merchant's, clears the session and pays the merchant from what A
/// owes; A then refuses `session_cleared` (posting a hold past its expiry fails in the ledger,
/// or the machine finds no hold once the sweeper expired it), B's message fails for good, A
/// stays `concluding` for ever and never collects, and the operators disagree on what A owes
/// B. Seed 0 shows a lesser case of the same cause: A answers B's `session_refused` with a
/// ledger error (its hold past expiry but not swept yet), so the refusal is failed for good
/// and A only aborts at its own timeout. The fix belongs to the session end being built in
/// `proto::session::trade` and `service::session` (the AM refusing a record once its hold
/// expired, treating a hold past its expiry as expired, the MTA refusing records after
/// `expires_at`).
#[tokio::test(flavor = "current_thread")]
#[ignore = "finds a bug: a record taken after the deposit's hold expired clears at B and never at A"]
async fn trading_sessions_with_long_clock_jumps() {
    trading_with(tally_sim::TradeOptions {
        long_jumps: true,
        ..tally_sim::TradeOptions::default()
    })
    .await;
}

/// The same where a session open at B while A aborted it fails the run at the end.
///
/// Ignored: it fails (`SIM_SEED=1 cargo test -p tally-sim trading_sessions_end -- --ignored
/// --nocapture`: session 8). B takes the merchant's ack after A gave up waiting: the MTA takes
/// a `MerchantAck` in `informed` whatever the time (its own `ack_by` passed, its sweeper not
/// run yet), and its `ack_by` counts from when the initiation reached B, so it ends later than
/// A's whenever the initiation was delayed. A refuses the late ack (`inconsistent`, failed for
/// good), so B never learns: the session stays `open` at B, whose merchant agent takes a tab
/// and purchases in it, against a deposit A released. Wanted: the initiation carrying A's
/// deadline, the MTA refusing an ack past it, or A telling B it aborted.
#[tokio::test(flavor = "current_thread")]
#[ignore = "finds a bug: B opens sessions A has aborted (a late merchant ack)"]
async fn trading_sessions_end_at_both_nodes() {
    trading_with(tally_sim::TradeOptions {
        strict_end: true,
        ..tally_sim::TradeOptions::default()
    })
    .await;
}
