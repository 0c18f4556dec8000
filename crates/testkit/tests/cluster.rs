//! Integration tests that start real PostgreSQL clusters.
//!
//! They skip (with a message) when no server binaries are installed, unless
//! `TALLY_REQUIRE_POSTGRES=1` is set, in which case they fail.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tally_testkit::{PgCluster, postgres_bin_dir, shared_cluster, skip_or_fail, test_database_url};

/// Env var that turns [`helper_process_for_watchdog_test`] into the child
/// half of [`watchdog_cleans_up_after_sigkill`].
const CHILD_ENV: &str = "TALLY_TESTKIT_WATCHDOG_CHILD";

fn private_cluster() -> Option<PgCluster> {
    if postgres_bin_dir().is_none() {
        skip_or_fail("no PostgreSQL server binaries found");
        return None;
    }
    Some(PgCluster::start().expect("cluster starts"))
}

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

#[test]
fn cluster_answers_select_1_with_test_settings() {
    let Some(cluster) = private_cluster() else {
        return;
    };
    let url = cluster.url();
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/tally", cluster.port())
    );
    assert_eq!(cluster.psql(&url, "SELECT 1").expect("psql"), "1");
    let show = |setting: &str| {
        cluster
            .psql(&url, &format!("SHOW {setting}"))
            .expect("SHOW")
    };
    assert_eq!(show("fsync"), "on");
    assert_eq!(show("max_connections"), "200");
    assert_eq!(show("shared_buffers"), "128MB");
    assert_eq!(show("listen_addresses"), "127.0.0.1");
    assert_eq!(show("server_encoding"), "UTF8");
    assert_eq!(show("TimeZone"), "UTC");
    assert_eq!(
        cluster
            .psql(&url, "SELECT current_database()")
            .expect("psql"),
        "tally"
    );
    // The unix socket lives inside the cluster directory.
    assert!(
        cluster
            .dir()
            .join(format!(".s.PGSQL.{}", cluster.port()))
            .exists()
    );
    assert!(cluster.bin_dir().join("initdb").is_file());
}

#[test]
fn fresh_databases_are_distinct_and_isolated() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let a = cluster.fresh_database();
    let b = cluster.fresh_database();
    assert_ne!(a, b);
    cluster
        .psql(&a, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        .expect("create in a");
    assert_eq!(cluster.psql(&a, "SELECT x FROM t").expect("select a"), "42");
    assert_eq!(
        cluster
            .psql(&b, "SELECT to_regclass('t') IS NULL")
            .expect("select b"),
        "t"
    );
    cluster
        .psql(&b, "CREATE TABLE t (y text)")
        .expect("same name in b");
    assert!(matches!(
        cluster.create_database("bad name;"),
        Err(tally_testkit::PgError::InvalidArgument(_))
    ));
}

#[test]
fn drop_stops_server_and_removes_directory() {
    let Some(cluster) = private_cluster() else {
        return;
    };
    let port = cluster.port();
    let dir: PathBuf = cluster.dir().to_path_buf();
    assert!(accepts_connections(port));
    assert!(dir.join("data").is_dir());
    drop(cluster);
    // `pg_ctl stop -w` returned, so the listening socket is already closed.
    assert!(
        !accepts_connections(port),
        "port {port} still accepts connections"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn test_database_url_gives_a_usable_database() {
    let Some(db) = test_database_url() else {
        return;
    };
    assert_eq!(
        tally_testkit::psql(db.url(), "SELECT 1").expect("psql"),
        "1"
    );
}

#[test]
fn pgbench_short_run_reports_positive_tps() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let tps = cluster.pgbench_tpcb(1, 2, 2, 2).expect("pgbench");
    eprintln!("pgbench TPC-B scale 1, 2 clients, 2 threads, 2 s: {tps:.1} tps");
    assert!(tps > 0.0, "tps = {tps}");
}

/// Child half of [`watchdog_cleans_up_after_sigkill`]; a no-op otherwise.
#[test]
fn helper_process_for_watchdog_test() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cluster = PgCluster::start().expect("cluster starts in child");
    // Write to the real stdout: libtest may capture `println!` even with
    // `--nocapture`/`--no-capture` depending on version and flags.
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "TESTKIT_CHILD {} {}",
        cluster.port(),
        cluster.dir().display()
    )
    .and_then(|()| stdout.flush())
    .expect("report to parent");
    drop(stdout);
    // Block until the parent kills us (it never writes to our stdin).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn watchdog_cleans_up_after_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // we are the child process; only the helper test runs
    }
    if postgres_bin_dir().is_none() {
        skip_or_fail("no PostgreSQL server binaries found");
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["--exact", "helper_process_for_watchdog_test", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process");
    let stdout = child.stdout.take().expect("child stdout");
    // Read the child's report on a thread so a misbehaving child cannot hang
    // this test forever (bounded wait).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may have printed "test <name> ... " on the same line.
            if let Some((_, rest)) = line.split_once("TESTKIT_CHILD ") {
                let _ = tx.send(rest.to_owned());
                break;
            }
        }
    });
    let report = rx.recv_timeout(Duration::from_secs(60));
    let Ok(report) = report else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("child did not report its cluster within 60 s: {report:?}");
    };
    let (port, dir) = report.split_once(' ').expect("port and dir");
    let (port, dir) = (port.parse::<u16>().expect("port"), PathBuf::from(dir));
    assert!(accepts_connections(port));

    child.kill().expect("SIGKILL child");
    child.wait().expect("reap child");

    // The watchdog notices the closed pipe at once; bounded polling for
    // pg_ctl stop + rm -rf to finish.
    let deadline = Instant::now() + Duration::from_secs(30);
    while (accepts_connections(port) || dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !accepts_connections(port),
        "server on {port} survived its owner"
    );
    assert!(!dir.exists(), "{} survived its owner", dir.display());
}
