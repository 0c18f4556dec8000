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
