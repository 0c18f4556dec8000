//! Starts a throw-away cluster and runs pgbench TPC-B against it.
//!
//! `cargo run -p tally-testkit --example pgbench -- [scale] [clients] [threads] [seconds]`
//! (defaults: 1 2 2 10). Prints the tps "without initial connection time".

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut numbers = std::env::args().skip(1).map(|a| a.parse::<u32>());
    let mut next = |default: u32| numbers.next().unwrap_or(Ok(default));
    let (Ok(scale), Ok(clients), Ok(threads), Ok(seconds)) = (next(1), next(2), next(2), next(10))
    else {
        eprintln!("usage: pgbench [scale] [clients] [threads] [seconds]  (positive integers)");
        return ExitCode::FAILURE;
    };
    let cluster = match tally_testkit::PgCluster::start() {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Free function on a URL (the cluster method would use a fresh database).
    match tally_testkit::pgbench_tpcb(&cluster.url(), scale, clients, threads, seconds) {
        Ok(tps) => {
            println!(
                "pgbench TPC-B scale={scale} clients={clients} threads={threads} \
                 seconds={seconds}: {tps:.1} tps (fsync=on, port {})",
                cluster.port()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
