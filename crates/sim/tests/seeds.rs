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

/// The same with clock jumps of a day or more while sessions are open, so deposits' holds run
/// out before the session concludes.
///
/// Ignored: it fails (seed 0 at the end of its run, seed 15 too; `SIM_SEED=0 cargo test -p
/// tally-sim trading_sessions_with_long -- --ignored --nocapture`). A customer whose hold
/// has passed its lifetime plus the clearing grace still posts its record at A, which takes
/// it (`open` → `concluding`: the AM does not check that its hold is still pending) and
/// forwards it; B takes it with the merchant's, clears the session and pays the merchant from
/// what A owes; A then refuses `session_cleared` (the post of an expired hold fails, or the
/// machine finds no hold), B's message fails for good, A stays `concluding` for ever and never
/// collects, and the operators disagree on what A owes B. The fix belongs to the session end
/// (the AM refusing a record once its hold expired, the MTA refusing records after
/// `expires_at`), being built in `proto::session::trade` and `service::session`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "finds a bug: a record taken after the deposit's hold expired clears at B and never at A"]
async fn trading_sessions_with_long_clock_jumps() {
    let steps = env("SIM_STEPS").unwrap_or(200) as usize;
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("SIM_SEEDS").unwrap_or(6)).collect(),
    };
    for seed in seeds {
        let config = tally_sim::Config { seed, steps };
        if let Err(f) = tally_sim::run_trading_with_long_jumps(config).await {
            panic!("{f}");
        }
    }
}
