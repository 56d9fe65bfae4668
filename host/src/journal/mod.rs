//! The SQLite journal: the single source of truth for every instance.
//!
//! ## Durability
//! WAL mode with `synchronous=FULL`: a write is acknowledged only after its transaction is
//! fsynced, so an acknowledged step, activity result or raised event survives a crash or a
//! power cut.
//!
//! ## Concurrency
//! One writer thread owns the write connection. Callers send it closures and await the
//! reply; the thread drains everything queued, runs it in **one** transaction (group
//! commit: many instances' steps share one fsync), and only then answers each caller. Each
//! closure runs inside its own savepoint, so one failing write does not undo the others.
//! Reads use a small pool of other connections, which WAL lets proceed while the writer
//! writes; a long read holds one of them, not every reader.
//!
//! ## One engine per journal
//! An exclusive lock on `<journal>.lock` is taken before the journal is read and is held
//! by the writer thread, so it is released only after the last queued write has
//! committed. A second engine on the same file (another process, or an engine reopened
//! in this process while the old one's writer is still finishing) cannot read state that
//! is about to change under it: it gets [`JournalError::InUse`] until the lock is free.
//!
//! **Invariant:** this is the only module that knows the journal's SQL (the bench's
//! raw-SQLite baseline, in `cli/bench`, writes a scratch file of its own); no `rusqlite`
//! type appears in its public signatures.

mod control;
pub mod copy;
pub mod leases;
mod reads;
mod schema;
pub(crate) mod sql;

pub use sql::redact;
mod writer;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use sql::{Db, PgConn};

use crate::model::{InstanceId, RuntimeStatus};

pub use reads::{
    InstanceFilter, InstanceRecord, QueuedActivity, RunningInstance, StoredComponent, StoredEvent,
    TokenRecord,
};
use writer::{Job, Reply, WriteJob, WriterConn, writer_loop};
pub use writer::{WriterCounts, WriterStats};
pub use writes::{
    Created, EventBounds, Fence, Finish, NewInstance, ParentNotice, StepWrite, StepWritten,
};

/// Read connections (WAL lets each read while the writer writes).
const READERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("instance '{0}' already exists; choose another id or purge the old instance")]
    InstanceExists(InstanceId),
    #[error("no instance '{0}'")]
    InstanceNotFound(InstanceId),
    #[error(
        "tenant '{tenant}' already has {limit} pending, running or suspended instances, its \
         max_live_instances limit; wait for some to finish, terminate some, or raise the limit"
    )]
    TooManyInstances { tenant: String, limit: u64 },
    #[error(
        "instance '{id}' holds {why}. Nothing was raised: pending events make room as the \
         workflow waits for them; event bytes only when it continues as new"
    )]
    TooManyEvents { id: InstanceId, why: String },
    #[error("instance '{id}' is {status}; it accepts no more events")]
    NotRunning {
        id: InstanceId,
        status: RuntimeStatus,
    },
    #[error("instance '{id}' is {status}, not {wanted}")]
    WrongStatus {
        id: InstanceId,
        status: RuntimeStatus,
        wanted: RuntimeStatus,
    },
    #[error("instance '{id}' is {status}; terminate it first or purge with force")]
    StillRunning {
        id: InstanceId,
        status: RuntimeStatus,
    },
    /// An activation's write, refused because the instance moved on without it.
    #[error("instance '{id}' takes no more writes from this activation: {why}")]
    Fenced { id: InstanceId, why: String },
    /// A status change the lifecycle state machine forbids.
    #[error("instance '{id}': {refused}")]
    Refused {
        id: InstanceId,
        refused: crate::model::Refused,
    },
    #[error("the journal is corrupt or from an incompatible version: {0}")]
    Corrupt(String),
    #[error("journal storage failed: {0}")]
    Storage(String),
    #[error("the journal writer has stopped (the engine is shutting down)")]
    WriterGone,
    #[error(
        "the journal at {path} is in use by another Steadfast engine (it holds {lock}); \
         stop that engine first, or give this one another data directory"
    )]
    InUse { path: PathBuf, lock: PathBuf },
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        JournalError::Storage(e.to_string())
    }
}

impl From<serde_json::Error> for JournalError {
    fn from(e: serde_json::Error) -> Self {
        JournalError::Corrupt(e.to_string())
    }
}

/// Where a journal lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file, this engine's alone.
    File(PathBuf),
    /// A PostgreSQL database shared by several hosts (the URL, without its password).
    Postgres(String),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(url),
        }
    }
}

/// The read connections of either backend.
enum Readers {
    Sqlite(Vec<Mutex<Connection>>),
    /// With what a lost connection is made again: (URL, host name).
    Postgres(Vec<Mutex<PgConn>>, String, String),
}

/// Handle to an open journal. Cheap to share behind an `Arc`.
pub struct Journal {
    writer: mpsc::Sender<WriteJob>,
    /// A few read connections: a long read (a page of large payloads) holds one, not all.
    readers: Readers,
    next_reader: std::sync::atomic::AtomicUsize,
    location: Location,
    stats: std::sync::Arc<WriterStats>,
    /// Set by [`Journal::crash`]: the writer commits nothing more.
    abandoned: std::sync::Arc<AtomicBool>,
    /// Terminations and purges begun, counted on the writer thread inside their
    /// transactions (see [`Journal::stops`]).
    stops: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Injected faults: this many of the next activation writes fail (tests only).
    faults: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Which partitions this host holds (all of them on SQLite).
    ownership: std::sync::Arc<leases::Ownership>,
    /// Stops the lease and wake-up threads of a shared journal (see `leases::RUN`).
    stop_leases: std::sync::Arc<std::sync::atomic::AtomicU8>,
    /// The lease thread of a shared journal, joined (briefly) at shutdown.
    lease_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Lease changes and wake-ups for the engine, until it takes them.
    lease_changes: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<leases::LeaseChange>>>,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and brings its schema up to date.
    /// Fails with [`JournalError::InUse`] while another engine has it open.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let lock = lock_journal(path)?;
        let mut write_conn = open_connection(path)?;
        restrict_to_owner(path);
        schema::migrate(&mut write_conn)?;
        let readers = (0..READERS)
            .map(|_| open_connection(path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Journal::start(
            WriterConn::Sqlite(write_conn),
            Readers::Sqlite(readers),
            Location::File(path.to_owned()),
            Some(lock),
        )
    }

    /// Connects to the PostgreSQL database at `url`, shared with other hosts, brings its
    /// schema up to date and starts taking part in its leases as `config.host`.
    pub fn open_postgres(url: &str, config: &leases::LeaseConfig) -> Result<Journal, JournalError> {
        leases::check_host_name(&config.host).map_err(JournalError::Storage)?;
        let connect = || -> Result<PgConn, JournalError> {
            let mut conn = PgConn::connect_as(url, &config.host)?;
            // A host frozen inside a transaction (SIGSTOP, a long GC pause of its VM)
            // must not hold a partition's row past its lease: the server ends it.
            let idle = (config.ttl.as_millis() / 2).max(100);
            conn.client
                .batch_execute(&format!("SET idle_in_transaction_session_timeout = {idle}"))?;
            Ok(conn)
        };
        let mut write_conn = connect()?;
        schema::migrate_postgres(&mut write_conn)?;
        let readers = (0..READERS)
            .map(|_| connect().map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(leases::RUN));
        let started = leases::start(url, config, std::sync::Arc::clone(&stop))?;
        let stop_on_failure = std::sync::Arc::clone(&stop);
        let journal = Journal::start(
            WriterConn::Postgres {
                conn: Box::new(write_conn),
                url: url.to_owned(),
                host: config.host.clone(),
                idle_ms: (config.ttl.as_millis() / 2).max(100) as u64,
            },
            Readers::Postgres(readers, url.to_owned(), config.host.clone()),
            Location::Postgres(sql::redact(url)),
            None,
        );
        let mut journal = match journal {
            Ok(journal) => journal,
            Err(e) => {
                // The lease threads end with the failed open.
                stop_on_failure.store(leases::RELEASE, Ordering::SeqCst);
                return Err(e);
            }
        };
        journal.ownership = started.ownership;
        journal.stop_leases = stop;
        journal.lease_changes = Mutex::new(Some(started.changes));
        journal.lease_thread = Mutex::new(Some(started.lease_thread));
        Ok(journal)
    }

    /// The lease changes and wake-ups of a shared journal, for the engine (once).
    pub fn take_lease_changes(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<leases::LeaseChange>> {
        self.lease_changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Whether this host runs instance `id` now (always, on SQLite).
    pub fn owns(&self, id: &InstanceId) -> bool {
        self.ownership.owns(id)
    }

    /// Whether several hosts share this journal.
    pub fn is_shared(&self) -> bool {
        self.ownership.is_shared()
    }

    /// The partitions this host holds.
    pub fn held_partitions(&self) -> Vec<u32> {
        self.ownership.held()
    }

    /// Gives back this host's leases and waits (up to `within`) until they are given
    /// back: at shutdown, so the others take over at once, not at expiry. Blocks.
    pub fn release_leases(&self, within: std::time::Duration) {
        self.stop_leases();
        let thread = self
            .lease_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            let deadline = std::time::Instant::now() + within;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    /// Tells the lease threads to give the leases back and stop (without waiting).
    pub fn stop_leases(&self) {
        let _ = self.stop_leases.compare_exchange(
            leases::RUN,
            leases::RELEASE,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// The epoch of the lease this host holds on `id`'s partition (`None` on SQLite, or
    /// when it holds none): what an activation loads its history under.
    pub fn lease_epoch(&self, id: &InstanceId) -> Option<i64> {
        self.ownership.fence(id).flatten().map(|fence| fence.epoch)
    }

    /// The lease a write for `id` is decided under; refused at once if this host does
    /// not hold the partition.
    fn lease(&self, id: &InstanceId) -> Result<leases::Lease, JournalError> {
        self.lease_checked(id, None)
    }

    /// Like [`Journal::lease`], for an activation's write: refused too if the lease is not
    /// the one (`loaded` epoch) the activation loaded its history under, or if it loaded
    /// it under none.
    fn lease_at(
        &self,
        id: &InstanceId,
        loaded: Option<i64>,
    ) -> Result<leases::Lease, JournalError> {
        self.lease_checked(id, Some(loaded))
    }

    fn lease_checked(
        &self,
        id: &InstanceId,
        loaded: Option<Option<i64>>,
    ) -> Result<leases::Lease, JournalError> {
        let refused = |why: String| JournalError::Fenced {
            id: id.clone(),
            why,
        };
        match self.ownership.fence(id) {
            Some(Some(fence)) if loaded.is_some_and(|epoch| epoch != Some(fence.epoch)) => {
                Err(refused(format!(
                    "it was loaded under {} of partition {}'s lease, now epoch {}",
                    match loaded.flatten() {
                        Some(epoch) => format!("epoch {epoch}"),
                        None => "no epoch".to_owned(),
                    },
                    fence.partition,
                    fence.epoch
                )))
            }
            Some(fence) => Ok(leases::Lease {
                fence,
                ownership: std::sync::Arc::clone(&self.ownership),
            }),
            None => Err(refused(
                "this host does not hold its partition's lease".into(),
            )),
        }
    }

    fn start(
        write_conn: WriterConn,
        readers: Readers,
        location: Location,
        lock: Option<std::fs::File>,
    ) -> Result<Journal, JournalError> {
        let (tx, rx) = mpsc::channel::<WriteJob>();
        let stats = std::sync::Arc::new(WriterStats::default());
        let writer_stats = std::sync::Arc::clone(&stats);
        let abandoned = std::sync::Arc::new(AtomicBool::new(false));
        let writer_abandoned = std::sync::Arc::clone(&abandoned);
        std::thread::Builder::new()
            .name("steadfast-journal".into())
            .spawn(move || {
                writer_loop(write_conn, rx, &writer_stats, &writer_abandoned);
                // Released only now, when everything queued before the drop is committed.
                drop(lock);
            })
            .map_err(|e| JournalError::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Journal {
            writer: tx,
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            location,
            stats,
            abandoned,
            stops: std::sync::Arc::default(),
            faults: std::sync::Arc::default(),
            ownership: std::sync::Arc::new(leases::Ownership::everything()),
            stop_leases: std::sync::Arc::default(),
            lease_changes: Mutex::new(None),
            lease_thread: Mutex::new(None),
        })
    }

    /// How many terminations and purges have been written so far (counted inside their
    /// transactions, so a write ordered after one sees it counted). An activity queued by
    /// a step that saw count `n` needs no look at the queue before it starts while the
    /// count is still `n`: nothing can have cancelled it.
    pub fn stops(&self) -> u64 {
        self.stops.load(Ordering::SeqCst)
    }

    /// Makes the next `n` writes of activations (steps and generation ends) fail as a
    /// storage error would, to test how the engine survives host faults.
    pub fn inject_faults(&self, n: u32) {
        self.faults.store(n, Ordering::SeqCst);
    }

    /// Takes one injected fault, if any is left.
    fn injected_fault(&self) -> Result<(), JournalError> {
        let took = self
            .faults
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match took {
            Ok(_) => Err(JournalError::Storage("injected fault".into())),
            Err(_) => Ok(()),
        }
    }

    /// Simulates a crash of the host, for crash tests and the simulation: every write
    /// not yet committed is abandoned (its caller hears [`JournalError::WriterGone`]),
    /// the batch in progress, if any, is rolled back, and nothing is committed again.
    /// The lock is released once the writer thread has let go of the file.
    pub fn crash(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        // A crashed host renews nothing and gives nothing back.
        self.stop_leases.store(leases::ABANDON, Ordering::SeqCst);
        // Wake the writer if it waits for work, so it sees the flag and exits.
        let _ = self.writer.send(WriteJob {
            key: None,
            run: Box::new(|_| (false, Box::new(|_| {}))),
        });
    }

    /// Where the journal lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Records each commit's duration (seconds) and size (writes) in these histograms
    /// from now on; only the first call counts.
    pub fn observe_commits(
        &self,
        duration: prometheus_client::metrics::histogram::Histogram,
        writes: prometheus_client::metrics::histogram::Histogram,
    ) {
        let _ = self.stats.observers.set((duration, writes));
    }

    /// What the writer has committed since the journal opened.
    pub fn writer_stats(&self) -> WriterCounts {
        use std::sync::atomic::Ordering::Relaxed;
        WriterCounts {
            commits: self.stats.commits.load(Relaxed),
            writes: self.stats.writes.load(Relaxed),
            rows: self.stats.rows.load(Relaxed),
        }
    }

    /// Bytes on disk: the database file plus its write-ahead log (SQLite), or the
    /// database's size (PostgreSQL).
    pub fn size_on_disk(&self) -> u64 {
        match &self.location {
            Location::File(path) => {
                let wal = path.with_extension("db-wal");
                [path.as_path(), wal.as_path()]
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum()
            }
            Location::Postgres(_) => self
                .read(|db| {
                    db.query_one(
                        "SELECT CAST(pg_database_size(current_database()) AS BIGINT)",
                        sql::params![],
                        |r| r.get::<u64>(0),
                    )
                })
                .unwrap_or(0),
        }
    }

    /// Runs `f` on the writer thread inside the next group-commit transaction and returns
    /// its result once that transaction is durable.
    async fn write<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, JournalError> + Send + 'static,
    {
        self.write_then(f, |_: &T| {}).await
    }

    /// Like [`Journal::write`], and runs `on_commit` with the result on the writer
    /// thread once the transaction is durable, before any later transaction commits: the
    /// hooks of successive writes run in commit order.
    async fn write_then<T, F, H>(&self, f: F, on_commit: H) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, JournalError> + Send + 'static,
        H: FnOnce(&T) + Send + 'static,
    {
        self.write_for(None, f, on_commit).await
    }

    /// Like [`Journal::write_then`], for a write of instance `key` (see [`WriteJob`]).
    async fn write_for<T, F, H>(
        &self,
        key: Option<&InstanceId>,
        f: F,
        on_commit: H,
    ) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, JournalError> + Send + 'static,
        H: FnOnce(&T) + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit| {
                let outcome = commit.and(result);
                if let Ok(value) = &outcome {
                    on_commit(value);
                }
                let _ = tx.send(outcome);
            });
            (ok, reply)
        });
        let key = key.filter(|_| self.ownership.is_shared()).cloned();
        self.writer
            .send(WriteJob { key, run: job })
            .map_err(|_| JournalError::WriterGone)?;
        rx.await.map_err(|_| JournalError::WriterGone)?
    }

    fn read<T: Send>(
        &self,
        f: impl FnOnce(&Db<'_>) -> Result<T, JournalError> + Send,
    ) -> Result<T, JournalError> {
        match &self.readers {
            Readers::Sqlite(readers) => {
                let conn = self.reader(readers);
                f(&Db::Sqlite(&conn))
            }
            Readers::Postgres(readers, url, host) => {
                let mut guard = self.reader(readers);
                let conn: &mut PgConn = &mut guard;
                // The synchronous client drives its own runtime, which may not run inside
                // the caller's (a tokio worker); a scoped thread is outside any.
                std::thread::scope(|s| {
                    s.spawn(move || {
                        if conn.client.is_closed() {
                            // The server restarted or ended the session: a new connection
                            // (the old one is dropped here, outside the runtime too).
                            *conn = PgConn::connect_as(url, host)?;
                        }
                        f(&Db::Postgres(std::cell::RefCell::new(conn)))
                    })
                    .join()
                    .unwrap_or_else(|_| Err(JournalError::Storage("a read panicked".into())))
                })
            }
        }
    }

    /// A free read connection if there is one, else the next in turn once it is free.
    fn reader<'r, C>(&self, readers: &'r [Mutex<C>]) -> std::sync::MutexGuard<'r, C> {
        for reader in readers {
            if let Ok(conn) = reader.try_lock() {
                return conn;
            }
        }
        let turn = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        readers[turn]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Makes schema `name` afresh in the PostgreSQL database at `url` (dropping what it held)
/// and returns a URL whose connections work in it: a journal of its own inside a shared
/// database, for a benchmark or a test. Call it outside the async runtime.
pub fn fresh_schema(url: &str, name: &str) -> Result<String, JournalError> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(JournalError::Storage(format!(
            "'{name}' is not a schema name (letters, digits and _ only)"
        )));
    }
    let mut conn = PgConn::connect_as(url, "steadfast-admin")?;
    conn.client.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
    ))?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}options=-csearch_path%3D{name}"))
}

/// Drops schema `name` (made by [`fresh_schema`]) and everything in it.
pub fn drop_schema(url: &str, name: &str) -> Result<(), JournalError> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(JournalError::Storage(format!(
            "'{name}' is not a schema name"
        )));
    }
    let mut conn = PgConn::connect_as(url, "steadfast-admin")?;
    conn.client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))?;
    Ok(())
}

impl Drop for Journal {
    fn drop(&mut self) {
        // The lease threads end with the journal (given back, unless it crashed).
        self.stop_leases();
        // The synchronous client closes its connection by blocking on its own runtime,
        // which must not happen on an async worker: closed on a thread of their own.
        let readers = std::mem::replace(&mut self.readers, Readers::Sqlite(Vec::new()));
        if let Readers::Postgres(readers, ..) = readers {
            let _ = std::thread::Builder::new()
                .name("steadfast-journal-close".into())
                .spawn(move || drop(readers));
        }
    }
}

/// The journal and its WAL are readable by this user only (SQLite gives the WAL and
/// shared-memory files the database file's mode).
fn restrict_to_owner(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

pub(crate) fn open_connection(path: &Path) -> Result<Connection, JournalError> {
    let conn = Connection::open(path).map_err(|e| {
        JournalError::Storage(format!(
            "cannot open the journal at {}: {e}",
            path.display()
        ))
    })?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Takes the exclusive lock that makes an engine the journal's only user. The OS releases
/// it when the file is closed, also when the process dies.
fn lock_journal(path: &Path) -> Result<std::fs::File, JournalError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            JournalError::Storage(format!(
                "cannot create the lock file {}: {e}",
                lock_path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::InUse {
            path: path.to_owned(),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(JournalError::Storage(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}
