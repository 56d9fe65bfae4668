//! A private PostgreSQL server for the tests: `initdb` and `pg_ctl` from the machine's
//! PostgreSQL into a temporary directory, on a free loopback port, as an unprivileged user
//! when the tests run as root (the server refuses root). Or the server named by
//! `STEADFAST_TEST_POSTGRES_URL`, where each test gets a database of its own.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The user a server started by root runs as.
const UNPRIVILEGED: u32 = 65534;

pub struct Postgres {
    /// A database of this test's own.
    pub url: String,
    /// The private server, stopped on drop; `None` when the environment named one.
    server: Option<(PathBuf, tempfile::TempDir)>,
}

impl Postgres {
    /// A fresh, empty database.
    pub fn start() -> Postgres {
        if let Ok(url) = std::env::var("STEADFAST_TEST_POSTGRES_URL") {
            return Postgres {
                url: fresh_database(&url),
                server: None,
            };
        }
        let bin = binaries().unwrap_or_else(|| {
            panic!(
                "these tests need PostgreSQL: install its server (Debian: apt-get install \
                 postgresql, which puts initdb and pg_ctl under /usr/lib/postgresql/N/bin), \
                 or set STEADFAST_TEST_POSTGRES_URL=postgres://user:password@host/db"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("steadfast-pg-")
            .tempdir()
            .unwrap();
        let root = unsafe { libc_geteuid() } == 0;
        if root {
            chown(dir.path(), UNPRIVILEGED);
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let data = dir.path().join("data");
        let port = super::dev::free_port();
        let run = |program: &str, args: &[&str]| {
            let mut command = Command::new(bin.join(program));
            command.args(args).current_dir(dir.path());
            if root {
                command.uid(UNPRIVILEGED).gid(UNPRIVILEGED);
            }
            let out = command
                .output()
                .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
            assert!(
                out.status.success(),
                "{program} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let data_arg = data.to_str().unwrap();
        run(
            "initdb",
            &[
                "-D",
                data_arg,
                "-U",
                "steadfast",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            dir.path().display()
        );
        let log = dir.path().join("server.log");
        run(
            "pg_ctl",
            &[
                "-D",
                data_arg,
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        Postgres {
            url: format!("postgres://steadfast@127.0.0.1:{port}/postgres"),
            server: Some((bin, dir)),
        }
    }

    /// A blocking client of the test's database, for checks.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some((bin, dir)) = &self.server {
            let mut command = Command::new(bin.join("pg_ctl"));
            command.args([
                "-D",
                dir.path().join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ]);
            if unsafe { libc_geteuid() } == 0 {
                command.uid(UNPRIVILEGED).gid(UNPRIVILEGED);
            }
            let _ = command.output();
        }
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
    #[link_name = "chown"]
    fn libc_chown(path: *const std::ffi::c_char, owner: u32, group: u32) -> i32;
}

fn chown(path: &Path, user: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let rc = unsafe { libc_chown(c.as_ptr(), user, user) };
    assert_eq!(rc, 0, "cannot give {} to uid {user}", path.display());
}

/// Where `initdb` and `pg_ctl` are: the newest `/usr/lib/postgresql/N/bin`, or `PATH`.
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
            .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

/// A new database on the server at `url`, for one test.
fn fresh_database(url: &str) -> String {
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("STEADFAST_TEST_POSTGRES_URL: cannot connect: {e}"));
    let name = format!(
        "steadfast_test_{}_{}",
        std::process::id(),
        super::dev::free_port()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (base, _) = url.rsplit_once('/').expect("a URL ending in /database");
    format!("{base}/{name}")
}
