//! A database of a test's own on the private PostgreSQL server of this test process
//! (`steadfast_tests::postgres`: started from the machine's PostgreSQL binaries as an
//! unprivileged user, gone with the process), or on the server named by
//! `STEADFAST_TEST_POSTGRES_URL`.

pub struct Postgres {
    /// A database of this test's own.
    pub url: String,
}

impl Postgres {
    /// A fresh, empty database (call it outside the async runtime).
    pub fn start() -> Postgres {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("steadfast_test_{}_{n}", std::process::id());
        Postgres {
            url: steadfast_tests::postgres::fresh_database(&name),
        }
    }
}
