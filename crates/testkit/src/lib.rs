//! Throw-away PostgreSQL clusters for tests and benchmarks.
//!
//! `tally-testkit` runs the PostgreSQL server binaries that are installed on
//! the machine (Debian: `/usr/lib/postgresql/<version>/bin`): `initdb` into a
//! temporary directory, `pg_ctl start` on `127.0.0.1` at a free TCP port, and
//! `pg_ctl stop -m immediate` plus directory removal when the [`PgCluster`] is
//! dropped. It depends only on `std` and `tempfile`.
//!
//! # Choosing a database in a test
//!
//! * [`test_database_url`] — `TEST_DATABASE_URL` if set, else a private
//!   cluster that lives as long as the returned [`TestDb`].
//! * [`shared_test_database_url`] — `TEST_DATABASE_URL` if set, else a fresh,
//!   uniquely named database on the per-process [`shared_cluster`] (one
//!   `initdb` per test binary instead of one per test).
//!
//! Both return `None` (after printing a "skipping" line) when PostgreSQL is not
//! available, so tests can `let Some(..) = .. else { return };`. When the
//! environment variable `TALLY_REQUIRE_POSTGRES=1` is set they panic instead,
//! so CI cannot silently skip the PostgreSQL suite.
//!
//! ```no_run
//! let Some(url) = tally_testkit::shared_test_database_url() else {
//!     return; // skipped: no PostgreSQL here (message already printed)
//! };
//! assert!(url.starts_with("postgres://"));
//! ```
//!
//! # Root
//!
//! `initdb` and `postgres` refuse to run as root. When the effective uid is 0
//! the cluster directory is handed to the OS user `postgres` and the server
//! programs (`initdb`, `pg_ctl`, hence `postgres`) run through
//! `runuser -u postgres --` (or `su postgres -s /bin/sh -c ..` when `runuser`
//! is missing). Client programs (`psql`, `createdb`, `pg_isready`, `pgbench`)
//! connect over TCP with `trust` authentication as database user `postgres`,
//! so they run as the current user.
//!
//! # No leftovers
//!
//! Every cluster gets a small watchdog shell process whose stdin is a pipe held
//! by this process. When the process exits — normally, by panic, or killed with
//! `SIGKILL` — the kernel closes the pipe, the watchdog reads end-of-file, stops
//! the server (`pg_ctl stop -m immediate`) and removes the directory. That is
//! what cleans up [`shared_cluster`], which lives in a `static` and is never
//! dropped. A normal `Drop` does the same work synchronously first.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Environment variable naming a directory that holds `initdb`, `pg_ctl` and
/// `postgres` (overrides the automatic search).
pub const ENV_PG_BIN: &str = "TALLY_PG_BIN";
/// Environment variable with an externally managed PostgreSQL URL for tests.
pub const ENV_TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";
/// Environment variable that turns "skip when PostgreSQL is missing" into a
/// panic (`1`, `true` or `yes`).
pub const ENV_REQUIRE_POSTGRES: &str = "TALLY_REQUIRE_POSTGRES";

/// Database (role) user the clusters are initialised with; `trust` auth.
pub const SUPERUSER: &str = "postgres";
/// Name of the database every cluster creates after start.
pub const DEFAULT_DATABASE: &str = "tally";

/// OS account the server runs as when this process is root.
const OS_USER: &str = "postgres";
/// Bounded wait for the server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a freshly picked port may turn out to be taken.
const PORT_ATTEMPTS: u32 = 5;
/// Where Debian/Ubuntu install versioned server binaries.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
/// Programs a usable server binary directory must contain.
const SERVER_PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Errors from starting clusters or running PostgreSQL programs.
#[derive(Debug)]
#[non_exhaustive]
pub enum PgError {
    /// No PostgreSQL server binaries were found (see [`postgres_bin_dir`]).
    NoBinaries,
    /// A program this crate needs is missing.
    ProgramNotFound(String),
    /// A file-system operation or process spawn failed.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A program ran but exited unsuccessfully.
    Command {
        /// The command line (debug-formatted).
        command: String,
        /// Its exit status.
        status: String,
        /// Its stdout and stderr (and, for server start, the log tail).
        output: String,
    },
    /// The server did not accept connections within the bounded wait.
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// The end of the server log.
        log_tail: String,
    },
    /// A caller-supplied argument was rejected.
    InvalidArgument(String),
    /// Program output did not have the expected shape.
    UnexpectedOutput {
        /// What was expected.
        expected: String,
        /// The full output.
        output: String,
    },
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoBinaries => write!(
                f,
                "no PostgreSQL server binaries found (set {ENV_PG_BIN}, or install PostgreSQL \
                 so that {DEBIAN_PG_ROOT}/*/bin has initdb, pg_ctl and postgres)"
            ),
            Self::ProgramNotFound(p) => write!(f, "PostgreSQL program not found: {p}"),
            Self::Io { context, source } => write!(f, "{context}: {source}"),
            Self::Command {
                command,
                status,
                output,
            } => write!(f, "{command} failed ({status}):\n{output}"),
            Self::NotReady { waited, log_tail } => write!(
                f,
                "PostgreSQL did not accept connections within {waited:?}; server log tail:\n{log_tail}"
            ),
            Self::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Self::UnexpectedOutput { expected, output } => {
                write!(f, "expected {expected} in program output:\n{output}")
            }
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
    let context = context.into();
    move |source| PgError::Io { context, source }
}

// ---------------------------------------------------------------------------
// Locating binaries
// ---------------------------------------------------------------------------

/// Directory with the PostgreSQL server binaries.
///
/// Order: `$TALLY_PG_BIN` if set and non-empty (returned as is); else the
/// highest version `/usr/lib/postgresql/<version>/bin` that contains
/// `initdb`, `pg_ctl` and `postgres`; else the first `$PATH` entry containing
/// all three (Fedora, Homebrew, …); else `None`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_PG_BIN).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    versioned_bin_dir(Path::new(DEBIAN_PG_ROOT)).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).find(|d| has_server_programs(d))
    })
}

fn has_server_programs(dir: &Path) -> bool {
    SERVER_PROGRAMS.iter().all(|p| dir.join(p).is_file())
}

/// Highest-versioned `<root>/<version>/bin` with the server programs.
fn versioned_bin_dir(root: &Path) -> Option<PathBuf> {
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in fs::read_dir(root).ok()?.flatten() {
        let Some(version) = entry.file_name().to_str().and_then(parse_version) else {
            continue;
        };
        let bin = entry.path().join("bin");
        if has_server_programs(&bin) && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin)
}

/// `"15"` → `[15]`, `"9.6"` → `[9, 6]`; anything else → `None`.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A client program from `bin_dir` if present there, else from `$PATH`.
fn client_program(bin_dir: Option<&Path>, name: &str) -> Result<PathBuf, PgError> {
    bin_dir
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .or_else(|| find_in_path(name))
        .ok_or_else(|| PgError::ProgramNotFound(name.to_owned()))
}

// ---------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------

/// Effective uid from `/proc/self/status` (Linux) or `id -u`.
fn effective_uid() -> Option<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        let uid_line = status.lines().find_map(|l| l.strip_prefix("Uid:"));
        // Fields: real, effective, saved, filesystem.
        if let Some(euid) = uid_line.and_then(|l| l.split_whitespace().nth(1)) {
            return euid.parse().ok();
        }
    }
    let out = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// How server programs are launched.
#[derive(Debug, Clone)]
enum RunAs {
    /// Not root: run directly.
    CurrentUser,
    /// Root: `runuser -u postgres -- prog args…`.
    Runuser(PathBuf),
    /// Root without runuser: `su -s /bin/sh -c 'exec "$0" "$@"' -- postgres prog args…`.
    Su(PathBuf),
}

impl RunAs {
    fn detect() -> Result<Self, PgError> {
        if effective_uid() != Some(0) {
            return Ok(Self::CurrentUser);
        }
        if let Some(runuser) = find_in_path("runuser") {
            return Ok(Self::Runuser(runuser));
        }
        find_in_path("su")
            .map(Self::Su)
            .ok_or_else(|| PgError::ProgramNotFound("runuser or su (needed as root)".to_owned()))
    }

    fn is_root(&self) -> bool {
        !matches!(self, Self::CurrentUser)
    }

    /// Full argv (program first) running `program` as the server user.
    fn argv(&self, program: &Path) -> Vec<OsString> {
        let mut argv: Vec<OsString> = match self {
            Self::CurrentUser => Vec::new(),
            Self::Runuser(runuser) => {
                vec![runuser.into(), "-u".into(), OS_USER.into(), "--".into()]
            }
            Self::Su(su) => vec![
                su.into(),
                "-s".into(),
                "/bin/sh".into(),
                "-c".into(),
                r#"exec "$0" "$@""#.into(),
                // `--` stops su's option parsing (it permutes, so a program
                // argument like `-D` would otherwise be taken as its own).
                "--".into(),
                OS_USER.into(),
            ],
        };
        argv.push(program.into());
        argv
    }
}

/// A command with a predictable environment: no inherited `PG*` variables
/// (`PGHOST`, `PGSSLMODE`, `PGDATA`, … would override our explicit
/// arguments) and untranslated messages.
fn command(argv: &[OsString]) -> Command {
    let (program, args) = argv
        .split_first()
        .map_or((OsStr::new("false"), &[][..]), |(p, a)| (p.as_os_str(), a));
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("LC_ALL", "C").stdin(Stdio::null());
    cmd
}

fn combined_output(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

/// Runs `cmd` to completion; non-zero exit becomes [`PgError::Command`].
fn run(mut cmd: Command) -> Result<Output, PgError> {
    let described = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(io_err(format!("spawning {described}")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(PgError::Command {
            command: described,
            status: out.status.to_string(),
            output: combined_output(&out),
        })
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, PgError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io_err("binding 127.0.0.1:0 to find a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("reading the bound port"))?
        .port();
    Ok(port)
}

fn url_for(port: u16, database: &str) -> String {
    format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{database}")
}

/// Database names we create: 1–63 ASCII letters, digits or `_`, so they need
/// no quoting in SQL or URL-escaping.
fn validate_database_name(name: &str) -> Result<(), PgError> {
    let ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PgError::InvalidArgument(format!(
            "database name {name:?} must be 1-63 ASCII letters, digits or '_'"
        )))
    }
}

/// Runs one SQL command through `psql -X -tA` and returns its trimmed output.
fn run_psql(psql: &Path, url: &str, sql: &str) -> Result<String, PgError> {
    let mut cmd = command(&[psql.into()]);
    cmd.args(["-X", "-q", "-w", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(url)
        .arg("-c")
        .arg(sql);
    let out = run(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}

/// Runs one SQL command through `psql` (from [`postgres_bin_dir`] or `$PATH`)
/// against `url` and returns its unaligned, tuples-only output, trimmed at
/// the end (e.g. `"1"` for `SELECT 1`).
pub fn psql(url: &str, sql: &str) -> Result<String, PgError> {
    let psql = client_program(postgres_bin_dir().as_deref(), "psql")?;
    run_psql(&psql, url, sql)
}

// ---------------------------------------------------------------------------
// PgCluster
// ---------------------------------------------------------------------------

/// A private PostgreSQL server in a temporary directory.
///
/// Layout of [`dir`](Self::dir): `data/` (PGDATA), `postgres.log`, and the
/// unix socket. Settings: listen on `127.0.0.1` only, `max_connections=200`,
/// `shared_buffers=128MB`, `fsync=on` (durability is kept so benchmarks are
/// honest), `timezone=UTC`, `trust` authentication for user `postgres`.
///
/// Dropping it stops the server (`pg_ctl stop -m immediate`) and deletes the
/// directory.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin_dir: PathBuf,
    run_as: RunAs,
    port: u16,
    watchdog: Option<Child>,
    watchdog_stdin: Option<ChildStdin>,
}

impl PgCluster {
    /// Starts a cluster using the binaries from [`postgres_bin_dir`].
    pub fn start() -> Result<Self, PgError> {
        let bin_dir = postgres_bin_dir().ok_or(PgError::NoBinaries)?;
        Self::start_with_bin_dir(bin_dir)
    }

    /// Starts a cluster using the server binaries in `bin_dir`.
    ///
    /// Runs `initdb`, starts the server on a free port (retrying with a new
    /// port if the picked one got taken meanwhile), waits until `pg_isready`
    /// answers (at most 30 s) and creates the database `tally`.
    pub fn start_with_bin_dir(bin_dir: impl Into<PathBuf>) -> Result<Self, PgError> {
        let bin_dir = bin_dir.into();
        for program in SERVER_PROGRAMS {
            if !bin_dir.join(program).is_file() {
                return Err(PgError::ProgramNotFound(
                    bin_dir.join(program).display().to_string(),
                ));
            }
        }
        let run_as = RunAs::detect()?;

        // As root the server user must be able to reach the directory, and a
        // TMPDIR below /root would not be; /tmp always is.
        let parent = if run_as.is_root() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("tally-pg-")
            .tempdir_in(&parent)
            .map_err(io_err(format!(
                "creating a temp dir in {}",
                parent.display()
            )))?
            .keep();

        // From here on `Drop` cleans up, including on the error paths below.
        let mut cluster = Self {
            dir,
            bin_dir,
            run_as,
            port: 0,
            watchdog: None,
            watchdog_stdin: None,
        };
        cluster.prepare_dir()?;
        cluster.spawn_watchdog()?;
        cluster.initdb()?;
        cluster.configure()?;
        cluster.start_server()?;
        cluster.create_database(DEFAULT_DATABASE)?;
        Ok(cluster)
    }

    /// URL of the `tally` database: `postgres://postgres@127.0.0.1:PORT/tally`.
    pub fn url(&self) -> String {
        url_for(self.port, DEFAULT_DATABASE)
    }

    /// URL of another database on this cluster (not created by this call).
    pub fn url_for(&self, database: &str) -> String {
        url_for(self.port, database)
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the server binaries used.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The cluster's temporary directory (data, log, socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server log file (useful when a test fails).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Creates database `name` (1–63 ASCII letters, digits, `_`) with
    /// `createdb` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, PgError> {
        validate_database_name(name)?;
        let createdb = client_program(Some(&self.bin_dir), "createdb")?;
        let mut cmd = command(&[createdb.into()]);
        cmd.args(["-w", "-h", "127.0.0.1", "-U", SUPERUSER, "-p"])
            .arg(self.port.to_string())
            .arg(name);
        run(cmd)?;
        Ok(self.url_for(name))
    }

    /// Creates a uniquely named database (`t_<pid>_<n>`) and returns its URL.
    pub fn try_fresh_database(&self) -> Result<String, PgError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("t_{}_{n}", std::process::id()))
    }

    /// Like [`try_fresh_database`](Self::try_fresh_database), for tests:
    /// panics with the error if the database cannot be created.
    pub fn fresh_database(&self) -> String {
        match self.try_fresh_database() {
            Ok(url) => url,
            Err(e) => panic!("creating a fresh test database failed: {e}"),
        }
    }

    /// Runs one SQL command via this cluster's `psql` against `url` (any
    /// database, typically [`url`](Self::url) or a fresh one); see [`psql`].
    pub fn psql(&self, url: &str, sql: &str) -> Result<String, PgError> {
        let psql = client_program(Some(&self.bin_dir), "psql")?;
        run_psql(&psql, url, sql)
    }

    /// pgbench TPC-B on a fresh database of this cluster; see
    /// [`pgbench_tpcb`]. Returns transactions per second.
    pub fn pgbench_tpcb(
        &self,
        scale: u32,
        clients: u32,
        threads: u32,
        seconds: u32,
    ) -> Result<f64, PgError> {
        let pgbench = client_program(Some(&self.bin_dir), "pgbench")?;
        let url = self.try_fresh_database()?;
        run_pgbench(&pgbench, &url, scale, clients, threads, seconds)
    }

    /// A command for a server program, run as the server user, from inside
    /// the cluster directory (so the cwd is accessible to that user).
    fn server_command(&self, program: &str) -> Command {
        let mut cmd = command(&self.run_as.argv(&self.bin_dir.join(program)));
        cmd.current_dir(&self.dir);
        cmd
    }

    fn prepare_dir(&self) -> Result<(), PgError> {
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod 755 {}", self.dir.display())))?;
        if self.run_as.is_root() {
            let mut chown = command(&["chown".into(), "-R".into(), OS_USER.into()]);
            chown.arg(&self.dir);
            run(chown)?;
        }
        Ok(())
    }

    /// Starts the watchdog: a shell that blocks reading a pipe from us and,
    /// at end-of-file (this process dropped the cluster, exited or was
    /// killed), stops the server if it still runs and removes the directory.
    fn spawn_watchdog(&mut self) -> Result<(), PgError> {
        const SCRIPT: &str = r#"trap '' INT HUP
dir=$1; shift
read -r _ || :
if [ -f "$dir/data/postmaster.pid" ]; then "$@" >/dev/null 2>&1 || :; fi
rm -rf -- "$dir"
"#;
        let mut argv: Vec<OsString> = vec![
            "/bin/sh".into(),
            "-c".into(),
            SCRIPT.into(),
            "tally-pg-watchdog".into(),
            self.dir.clone().into(),
        ];
        argv.extend(self.run_as.argv(&self.bin_dir.join("pg_ctl")));
        argv.extend(self.stop_args());
        let mut cmd = command(&argv);
        cmd.current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a Ctrl-C aimed at `cargo test` must not kill
            // the watchdog before it has cleaned up.
            .process_group(0);
        let mut child = cmd.spawn().map_err(io_err("spawning the watchdog"))?;
        self.watchdog_stdin = child.stdin.take();
        self.watchdog = Some(child);
        Ok(())
    }

    fn stop_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["stop".into(), "-D".into(), self.data_dir().into()];
        args.extend(["-m", "immediate", "-w", "-t", "30"].map(OsString::from));
        args
    }

    fn initdb(&self) -> Result<(), PgError> {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D").arg(self.data_dir()).args([
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "--no-sync",
            "-E",
            "UTF8",
            "--locale",
            "C",
        ]);
        run(cmd).map(drop)
    }

    /// Appends our settings to `postgresql.conf` (the port is passed on the
    /// command line because it may change between start attempts).
    fn configure(&self) -> Result<(), PgError> {
        let socket_dir = self.dir.display().to_string().replace('\'', "''");
        let settings = format!(
            "\n# --- tally-testkit ---\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket_dir}'\n\
             max_connections = 200\n\
             shared_buffers = 128MB\n\
             fsync = on\n\
             timezone = 'UTC'\n\
             log_timezone = 'UTC'\n"
        );
        let conf = self.data_dir().join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .map_err(io_err(format!("appending to {}", conf.display())))
    }

    fn start_server(&mut self) -> Result<(), PgError> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            let log_len_before = fs::metadata(self.log_path()).map_or(0, |m| m.len());
            let mut cmd = self.server_command("pg_ctl");
            cmd.arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", "30", "-o"])
                .arg(format!("-p {}", self.port))
                .arg("start");
            match run(cmd) {
                Ok(_) => return self.wait_until_ready(),
                Err(err) => {
                    // A server that came up half-way must not block the retry.
                    let _ = run(self.stop_command());
                    let log = fs::read(self.log_path()).unwrap_or_default();
                    let from = usize::try_from(log_len_before).unwrap_or(usize::MAX);
                    let attempt_log = log.get(from..).unwrap_or_default();
                    let attempt_log = String::from_utf8_lossy(attempt_log);
                    let port_taken = attempt_log.contains("could not bind")
                        || attempt_log.contains("Address already in use");
                    let err = match err {
                        PgError::Command {
                            command,
                            status,
                            output,
                        } => PgError::Command {
                            command,
                            status,
                            output: format!("{output}\nserver log:\n{attempt_log}"),
                        },
                        other => other,
                    };
                    if !port_taken {
                        return Err(err);
                    }
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.unwrap_or(PgError::InvalidArgument("no start attempts".to_owned())))
    }

    fn stop_command(&self) -> Command {
        let mut cmd = self.server_command("pg_ctl");
        cmd.args(self.stop_args());
        cmd
    }

    /// Polls `pg_isready` (or a TCP connect if it is missing) for at most
    /// [`READY_TIMEOUT`]. `pg_ctl -w` normally already waited, so the first
    /// probe usually succeeds.
    fn wait_until_ready(&self) -> Result<(), PgError> {
        let pg_isready = client_program(Some(&self.bin_dir), "pg_isready").ok();
        let started = Instant::now();
        loop {
            let ready = match &pg_isready {
                Some(program) => {
                    let mut cmd = command(&[program.into()]);
                    cmd.args(["-q", "-h", "127.0.0.1", "-U", SUPERUSER, "-d", "postgres"])
                        .args(["-t", "2", "-p"])
                        .arg(self.port.to_string())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    cmd.status().is_ok_and(|s| s.success())
                }
                None => TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
                    Duration::from_secs(2),
                )
                .is_ok(),
            };
            if ready {
                return Ok(());
            }
            if started.elapsed() >= READY_TIMEOUT {
                return Err(PgError::NotReady {
                    waited: started.elapsed(),
                    log_tail: log_tail(&self.log_path(), 40),
                });
            }
            // Bounded readiness polling, not a timing assumption.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = run(self.stop_command());
        }
        let _ = fs::remove_dir_all(&self.dir);
        // EOF for the watchdog; it finds nothing left to do and exits.
        drop(self.watchdog_stdin.take());
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.wait();
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// Test entry points
// ---------------------------------------------------------------------------

/// Whether `TALLY_REQUIRE_POSTGRES` is set to `1`/`true`/`yes`.
pub fn require_postgres() -> bool {
    std::env::var(ENV_REQUIRE_POSTGRES).is_ok_and(|v| {
        let v = v.trim();
        v == "1" || v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes")
    })
}

/// Call when a PostgreSQL test cannot run: prints a "skipping" line, or
/// panics if [`require_postgres`] is true.
pub fn skip_or_fail(reason: &str) {
    assert!(
        !require_postgres(),
        "{ENV_REQUIRE_POSTGRES} is set but PostgreSQL is unavailable: {reason}"
    );
    eprintln!(
        "skipping PostgreSQL test: {reason} (set {ENV_TEST_DATABASE_URL} or {ENV_PG_BIN}, \
         or install PostgreSQL)"
    );
}

/// A database for one test: either `TEST_DATABASE_URL` or a private cluster
/// that is stopped and deleted when this value is dropped.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    cluster: Option<PgCluster>,
}

impl TestDb {
    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The private cluster, if one was started (not for `TEST_DATABASE_URL`).
    pub fn cluster(&self) -> Option<&PgCluster> {
        self.cluster.as_ref()
    }
}

/// `TEST_DATABASE_URL` if set; else a private [`PgCluster`] if PostgreSQL
/// binaries exist; else `None` after printing a skip message.
///
/// # Panics
///
/// If `TALLY_REQUIRE_POSTGRES=1` and neither is available, or if binaries
/// exist but the cluster fails to start (a broken setup must not look like
/// a skip).
pub fn test_database_url() -> Option<TestDb> {
    if let Some(url) = external_test_url() {
        return Some(TestDb { url, cluster: None });
    }
    let Some(bin_dir) = postgres_bin_dir() else {
        skip_or_fail("no PostgreSQL server binaries found");
        return None;
    };
    match PgCluster::start_with_bin_dir(bin_dir) {
        Ok(cluster) => Some(TestDb {
            url: cluster.url(),
            cluster: Some(cluster),
        }),
        Err(e) => panic!("starting a PostgreSQL test cluster failed: {e}"),
    }
}

fn external_test_url() -> Option<String> {
    std::env::var(ENV_TEST_DATABASE_URL)
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// One cluster per process, started on first use (initdb costs ~2 s).
///
/// Returns `None` after printing a skip message when no binaries are found.
/// It ignores `TEST_DATABASE_URL`; see [`shared_test_database_url`]. The
/// cluster is never dropped; its watchdog stops and deletes it when the
/// process exits.
///
/// # Panics
///
/// If `TALLY_REQUIRE_POSTGRES=1` and no binaries exist, or if the cluster
/// fails to start.
pub fn shared_cluster() -> Option<&'static PgCluster> {
    static SHARED: OnceLock<Result<Option<PgCluster>, String>> = OnceLock::new();
    let slot = SHARED.get_or_init(|| match postgres_bin_dir() {
        None => Ok(None),
        Some(bin_dir) => PgCluster::start_with_bin_dir(bin_dir)
            .map(Some)
            .map_err(|e| e.to_string()),
    });
    match slot {
        Ok(Some(cluster)) => Some(cluster),
        Ok(None) => {
            skip_or_fail("no PostgreSQL server binaries found");
            None
        }
        Err(e) => panic!("starting the shared PostgreSQL test cluster failed: {e}"),
    }
}

/// URL of an isolated database for one test: `TEST_DATABASE_URL` verbatim if
/// set (shared by all tests — the caller's responsibility), else a fresh
/// database on [`shared_cluster`]; `None` (skip message printed) if neither.
///
/// # Panics
///
/// Like [`shared_cluster`], and if the fresh database cannot be created.
pub fn shared_test_database_url() -> Option<String> {
    if let Some(url) = external_test_url() {
        return Some(url);
    }
    shared_cluster().map(PgCluster::fresh_database)
}

// ---------------------------------------------------------------------------
// pgbench
// ---------------------------------------------------------------------------

/// Runs pgbench's built-in TPC-B-like workload against `url` and returns the
/// transactions per second "without initial connection time".
///
/// Runs `pgbench -i -q -s <scale>` (this (re)creates the `pgbench_*` tables
/// in that database) and then `pgbench -c <clients> -j <threads> -T <seconds>`.
/// `pgbench` comes from [`postgres_bin_dir`] or `$PATH`. `threads` is capped
/// at `clients`; all numbers must be at least 1.
pub fn pgbench_tpcb(
    url: &str,
    scale: u32,
    clients: u32,
    threads: u32,
    seconds: u32,
) -> Result<f64, PgError> {
    let pgbench = client_program(postgres_bin_dir().as_deref(), "pgbench")?;
    run_pgbench(&pgbench, url, scale, clients, threads, seconds)
}

fn run_pgbench(
    pgbench: &Path,
    url: &str,
    scale: u32,
    clients: u32,
    threads: u32,
    seconds: u32,
) -> Result<f64, PgError> {
    if scale == 0 || clients == 0 || threads == 0 || seconds == 0 {
        return Err(PgError::InvalidArgument(format!(
            "pgbench scale/clients/threads/seconds must be >= 1 \
             (got {scale}/{clients}/{threads}/{seconds})"
        )));
    }
    let threads = threads.min(clients);

    let mut init = command(&[pgbench.into()]);
    init.args(["-i", "-q", "-s", &scale.to_string()]).arg(url);
    run(init)?;

    let mut bench = command(&[pgbench.into()]);
    bench
        .args(["-c", &clients.to_string(), "-j", &threads.to_string()])
        .args(["-T", &seconds.to_string()])
        .arg(url);
    let out = run(bench)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_tps(&stdout).ok_or_else(|| PgError::UnexpectedOutput {
        expected: "a `tps = N (without initial connection time)` line".to_owned(),
        output: combined_output(&out),
    })
}

/// Extracts tps from pgbench output. Prefers the PostgreSQL ≥ 14 line
/// `tps = 1234.567890 (without initial connection time)`, then the older
/// `(excluding connections establishing)`, then any `tps = N` line.
fn parse_tps(output: &str) -> Option<f64> {
    let tps_lines: Vec<(f64, &str)> = output
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("tps = ")?;
            let number = rest.split_whitespace().next()?;
            Some((number.parse().ok()?, rest))
        })
        .collect();
    [
        "without initial connection time",
        "excluding connections establishing",
        "",
    ]
    .iter()
    .find_map(|marker| {
        tps_lines
            .iter()
            .find(|(_, rest)| rest.contains(marker))
            .map(|(tps, _)| *tps)
    })
}

/// A real SMTP server on `127.0.0.1:<free port>` (mailin-embedded) that hands each message's
/// raw DATA (headers and body) to the test. Returns the port and the receiving end; the
/// server thread lives until the process exits.
pub fn smtp_sink() -> (u16, std::sync::mpsc::Receiver<String>) {
    let (port, timed) = smtp_sink_timed();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (_, raw) in timed {
            if tx.send(raw).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// [`smtp_sink`], with the moment the server accepted each message (its reply to the final
/// `.` is about to go out): for benchmarks of the path from a commit to the listener.
pub fn smtp_sink_timed() -> (u16, std::sync::mpsc::Receiver<(std::time::Instant, String)>) {
    type Sent = std::sync::mpsc::Sender<(std::time::Instant, String)>;
    #[derive(Clone)]
    struct Sink(Sent, Vec<u8>);
    impl mailin_embedded::Handler for Sink {
        fn helo(&mut self, _ip: std::net::IpAddr, _domain: &str) -> mailin_embedded::Response {
            mailin_embedded::response::OK
        }
        fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
            self.1.extend_from_slice(buf);
            Ok(())
        }
        fn data_end(&mut self) -> mailin_embedded::Response {
            let raw = String::from_utf8_lossy(&std::mem::take(&mut self.1)).into_owned();
            // The receiver lives as long as the test; a failed send means it has finished.
            let _ = self.0.send((std::time::Instant::now(), raw));
            mailin_embedded::response::OK
        }
    }
    let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("cannot bind loopback for the SMTP sink: {e}"),
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut server = mailin_embedded::Server::new(Sink(tx, Vec::new()));
    server
        .with_name("sink.test")
        .with_tcp_listener(listener)
        .with_num_threads(64);
    std::thread::spawn(move || {
        // `serve` returns only on a listener error; the test then fails on its timeout.
        let _ = server.serve().map_err(|e| e.to_string());
    });
    (port, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_15_output() {
        let out = "pgbench (15.14 (Debian 15.14-0+deb12u1))\n\
                   transaction type: <builtin: TPC-B (sort of)>\n\
                   number of transactions actually processed: 2469\n\
                   latency average = 0.809 ms\n\
                   initial connection time = 3.129 ms\n\
                   tps = 1234.567890 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(1234.567890));
    }

    #[test]
    fn parses_pre_14_pgbench_output() {
        let out = "tps = 99.5 (including connections establishing)\n\
                   tps = 101.25 (excluding connections establishing)\n";
        assert_eq!(parse_tps(out), Some(101.25));
        assert_eq!(parse_tps("tps = 7.0\n"), Some(7.0));
        assert_eq!(parse_tps("pgbench: error: oops\n"), None);
    }

    #[test]
    fn picks_highest_versioned_bin_dir_with_all_programs() {
        let root = tempfile::tempdir().expect("tempdir");
        for (version, programs) in [
            ("9.6", &SERVER_PROGRAMS[..]),
            ("15", &SERVER_PROGRAMS[..]),
            ("16", &["initdb", "pg_ctl"][..]), // incomplete: ignored
            ("notaversion", &SERVER_PROGRAMS[..]),
        ] {
            let bin = root.path().join(version).join("bin");
            fs::create_dir_all(&bin).expect("mkdir");
            for p in programs {
                fs::write(bin.join(p), "").expect("write");
            }
        }
        assert_eq!(
            versioned_bin_dir(root.path()),
            Some(root.path().join("15").join("bin"))
        );
        assert_eq!(versioned_bin_dir(&root.path().join("missing")), None);
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version("15beta"), None);
    }

    #[test]
    fn database_names_are_validated() {
        assert!(validate_database_name("t_123_4").is_ok());
        assert!(validate_database_name("").is_err());
        assert!(validate_database_name("a\"; DROP").is_err());
        assert!(validate_database_name(&"x".repeat(64)).is_err());
        assert_eq!(
            url_for(5432, "tally"),
            "postgres://postgres@127.0.0.1:5432/tally"
        );
    }

    #[test]
    fn runs_as_postgres_user_only_when_root() {
        let argv = RunAs::Runuser("/usr/sbin/runuser".into()).argv(Path::new("/pg/initdb"));
        assert_eq!(
            argv,
            ["/usr/sbin/runuser", "-u", "postgres", "--", "/pg/initdb"]
        );
        let argv = RunAs::Su("/bin/su".into()).argv(Path::new("/pg/initdb"));
        assert_eq!(
            argv,
            [
                "/bin/su",
                "-s",
                "/bin/sh",
                "-c",
                r#"exec "$0" "$@""#,
                "--",
                "postgres",
                "/pg/initdb"
            ]
        );
        let argv = RunAs::CurrentUser.argv(Path::new("/pg/initdb"));
        assert_eq!(argv, ["/pg/initdb"]);
    }

    #[test]
    fn pgbench_rejects_zero_arguments() {
        let err = run_pgbench(
            Path::new("/nonexistent/pgbench"),
            "postgres://x",
            1,
            0,
            1,
            1,
        );
        assert!(matches!(err, Err(PgError::InvalidArgument(_))));
    }
}
