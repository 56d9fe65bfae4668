//! A private PostgreSQL server for tests, and the engine suites on it.
//!
//! [`server_url`] starts one server per test process: `initdb` into a temporary directory
//! and `postgres` on a free loopback port, both from the machine's PostgreSQL binaries,
//! as an unprivileged user when the tests run as root (the server refuses root). The
//! server dies with the test process (`PR_SET_PDEATHSIG` on a thread that lives as long).
//! `STEADFAST_TEST_POSTGRES_URL` names an existing server instead.
//!
//! With `STEADFAST_TEST_BACKEND=postgres` (set by the test binaries that rerun the engine
//! suites on PostgreSQL), [`crate::config`] puts each data directory's journal in a schema
//! of its own on that server; opening the same directory again (a restart after a crash)
//! finds the same journal, under the same host name, which takes its leases back at once.

use std::collections::HashSet;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use steadfast::engine::JournalBackend;
use steadfast::journal::leases::LeaseConfig;

/// The user a server started by root runs as.
const UNPRIVILEGED: u32 = 65534;

/// Whether this test process runs the engine suites on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("STEADFAST_TEST_BACKEND").as_deref() == Ok("postgres")
}

/// The journal of `dir` on PostgreSQL, when this test process runs the suites there.
pub fn backend_for(dir: &Path) -> Option<JournalBackend> {
    if !on_postgres() {
        return None;
    }
    static OPENED: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    let schema = format!("t_{:016x}", fnv(dir.as_os_str().as_encoded_bytes()));
    let base = server_url();
    let first = OPENED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(dir.to_owned());
    let url = outside_runtime(move || {
        if first {
            steadfast::journal::fresh_schema(&base, &schema)
        } else {
            let separator = if base.contains('?') { '&' } else { '?' };
            Ok(format!("{base}{separator}options=-csearch_path%3D{schema}"))
        }
    })
    .expect("a schema for the test's journal");
    Some(JournalBackend::Postgres {
        url,
        lease: LeaseConfig {
            host: "test-host".to_owned(),
            ttl: Duration::from_secs(10),
        },
    })
}

/// The URL of this process's PostgreSQL server (started on first use).
pub fn server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("STEADFAST_TEST_POSTGRES_URL") {
        Ok(url) => url,
        Err(_) => outside_runtime(start_private),
    })
    .clone()
}

/// A new, empty database on this process's server, named `name`.
pub fn fresh_database(name: &str) -> String {
    assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let base = server_url();
    let created = base.clone();
    let name = name.to_owned();
    outside_runtime(move || {
        let mut client = postgres::Client::connect(&created, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
        // One statement each: neither may run inside a transaction block.
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let (server, _) = base.rsplit_once('/').expect("a URL ending in /database");
        format!("{server}/{name}")
    })
}

/// Runs `f` on a thread of its own: the synchronous PostgreSQL client must not run
/// inside an async runtime, and a test may call this from one.
fn outside_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f)
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn start_private() -> String {
    let bin = binaries().unwrap_or_else(|| {
        panic!(
            "these tests need PostgreSQL's server binaries: install them (Debian: apt-get \
             install postgresql, which puts initdb and postgres under \
             /usr/lib/postgresql/N/bin), or set \
             STEADFAST_TEST_POSTGRES_URL=postgres://user:password@host/db"
        )
    });
    let dir = tempfile::Builder::new()
        .prefix("steadfast-pg-")
        .tempdir()
        .expect("a temporary directory")
        .keep();
    let root = unsafe { geteuid() } == 0;
    if root {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { chown(c.as_ptr(), UNPRIVILEGED, UNPRIVILEGED) }, 0);
    }
    let data = dir.join("data");
    let as_server_user = |command: &mut Command| {
        if root {
            command.uid(UNPRIVILEGED).gid(UNPRIVILEGED);
        }
    };
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "steadfast",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ])
        .current_dir(&dir);
    as_server_user(&mut initdb);
    let out = initdb.output().expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut postgres = Command::new(bin.join("postgres"));
    postgres
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
        ])
        .current_dir(&dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    as_server_user(&mut postgres);
    // The server dies with this process: the thread that starts it lives as long, and
    // the kernel signals the server when that thread ends.
    let (started, spawned) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        unsafe {
            postgres.pre_exec(|| {
                if prctl(1 /* PR_SET_PDEATHSIG */, 9 /* SIGKILL */, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = postgres.spawn();
        let failed = child.is_err();
        let _ = started.send(child.map(|c| c.id()).map_err(|e| e.to_string()));
        if !failed {
            loop {
                std::thread::park();
            }
        }
    });
    spawned
        .recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
    let url = format!("postgres://steadfast@127.0.0.1:{port}/postgres");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while postgres::Client::connect(&url, postgres::NoTls).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the test PostgreSQL did not start: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    url
}

unsafe extern "C" {
    fn geteuid() -> u32;
    fn chown(path: *const std::ffi::c_char, owner: u32, group: u32) -> i32;
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
}

/// Where `initdb` and `postgres` are: the newest `/usr/lib/postgresql/N/bin`, or `PATH`.
fn binaries() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    if let Some(bin) = found.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("postgres").exists())
    })
}

/// FNV-1a: a stable name for a directory's schema.
fn fnv(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
