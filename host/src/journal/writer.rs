//! The writer thread: group commit. Writes queue as jobs; the thread blocks for the
//! first, takes whatever else is queued (up to [`MAX_BATCH`]), runs each inside one
//! transaction under a savepoint of its own, commits, and then answers every caller, in
//! commit order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;

use super::JournalError;
use super::sql::{self, Db, PgConn};
use crate::model::InstanceId;

/// Most jobs folded into one transaction.
pub(super) const MAX_BATCH: usize = 512;

/// A write to run on the writer thread: it does its work inside the batch transaction and
/// returns whether that worked plus a callback that receives the commit's outcome.
pub(super) type Job = Box<dyn FnOnce(&Db<'_>) -> (bool, Reply) + Send>;

/// A [`Job`] with the instance it writes, if it writes one: on PostgreSQL a batch runs its
/// jobs in key order, so two hosts' batches lock the instances they share in the same
/// order instead of deadlocking.
pub(super) struct WriteJob {
    pub(super) key: Option<InstanceId>,
    pub(super) run: Job,
}
pub(super) type Reply = Box<dyn FnOnce(Result<(), JournalError>) + Send>;

/// The writer thread's connection.
pub(super) enum WriterConn {
    Sqlite(Connection),
    Postgres {
        conn: Box<PgConn>,
        url: String,
        host: String,
        idle_ms: u64,
    },
}

/// Counters of the writer thread: how well group commit batches.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
    /// Rows inserted, updated or deleted by committed batches, triggers' rows included
    /// (SQLite only; 0 on PostgreSQL).
    pub rows: std::sync::atomic::AtomicU64,
    /// Where each commit's time and size are recorded, once the engine has said.
    pub(super) observers: std::sync::OnceLock<CommitObservers>,
}

/// A reading of [`WriterStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterCounts {
    /// Transactions committed.
    pub commits: u64,
    /// Writes folded into them.
    pub writes: u64,
    /// Rows they inserted, updated or deleted, rows written by triggers included
    /// (SQLite only; 0 on PostgreSQL).
    pub rows: u64,
}

/// The histograms a commit is recorded in: (seconds from BEGIN to COMMIT, writes folded).
pub(super) type CommitObservers = (
    prometheus_client::metrics::histogram::Histogram,
    prometheus_client::metrics::histogram::Histogram,
);

/// Group commit: block for the first job, take whatever else is queued, run all in one
/// transaction, commit, answer everyone.
pub(super) fn writer_loop(
    mut conn: WriterConn,
    rx: mpsc::Receiver<WriteJob>,
    stats: &WriterStats,
    abandoned: &AtomicBool,
) {
    while let Ok(first) = rx.recv() {
        if abandoned.load(Ordering::SeqCst) {
            // A simulated crash: what is queued is lost, as in a real one.
            return;
        }
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Keys are set only on a shared journal; a stable sort keeps each instance's
        // writes in the order they came.
        if jobs.iter().any(|job| job.key.is_some()) {
            jobs.sort_by(|a, b| a.key.cmp(&b.key));
        }
        let began = std::time::Instant::now();
        if let WriterConn::Postgres {
            conn: pg,
            url,
            host,
            idle_ms,
        } = &mut conn
            && pg.client.is_closed()
        {
            // The server went away (restart, failover, or it ended a transaction this
            // host left idle too long): one new connection per batch.
            let fresh = PgConn::connect_as(url, host).and_then(|mut c| {
                c.client.batch_execute(&format!(
                    "SET idle_in_transaction_session_timeout = {idle_ms}"
                ))?;
                Ok(c)
            });
            match fresh {
                Ok(fresh) => **pg = fresh,
                Err(e) => {
                    tracing::error!(error = %e, "journal: cannot reconnect");
                    continue;
                }
            }
        }
        let db = match &mut conn {
            WriterConn::Sqlite(conn) => Db::Sqlite(conn),
            WriterConn::Postgres { conn, .. } => Db::Postgres(std::cell::RefCell::new(conn)),
        };
        let begin = match db.dialect() {
            sql::Dialect::Sqlite => "BEGIN IMMEDIATE",
            sql::Dialect::Postgres => "BEGIN",
        };
        if let Err(e) = db.control(begin) {
            // Dropping the jobs tells their callers the write did not happen.
            tracing::error!(error = %e, "journal: cannot begin a transaction");
            continue;
        }
        db.forget_taken();
        let mut callbacks = Vec::with_capacity(jobs.len());
        // A savepoint that cannot be taken, released or rolled back to leaves the
        // transaction in a state no one should commit (PostgreSQL would answer COMMIT of
        // an aborted transaction with a silent ROLLBACK): the whole batch fails.
        let mut broken: Option<JournalError> = None;
        // Rows this batch changes and keeps: SQLite's running count, less what a
        // rolled-back savepoint undid.
        let changes = || match &db {
            Db::Sqlite(conn) => conn.total_changes(),
            Db::Postgres(_) => 0,
        };
        let batch_began = changes();
        let mut undone = 0;
        for job in jobs {
            if broken.is_some() {
                // Dropped unrun: its caller hears the write did not happen.
                drop(job);
                continue;
            }
            if let Err(e) = db.control("SAVEPOINT op") {
                broken = Some(e);
                drop(job);
                continue;
            }
            let job_began = changes();
            let (ok, reply) = (job.run)(&db);
            let closed = if ok {
                db.control("RELEASE op")
            } else {
                undone += changes() - job_began;
                db.forget_taken();
                db.batch("ROLLBACK TO op; RELEASE op")
            };
            if let Err(e) = closed {
                broken = Some(e);
            }
            callbacks.push(reply);
        }
        if abandoned.load(Ordering::SeqCst) {
            let _ = db.batch("ROLLBACK");
            return;
        }
        let commit = match broken {
            Some(e) => {
                tracing::error!(error = %e, "journal: a batch could not be completed; rolled back");
                let _ = db.batch("ROLLBACK");
                Err(e)
            }
            None => db.control("COMMIT"),
        };
        stats
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        stats
            .writes
            .fetch_add(callbacks.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some((duration, writes)) = stats.observers.get() {
            duration.observe(began.elapsed().as_secs_f64());
            writes.observe(callbacks.len() as f64);
        }
        if commit.is_err() {
            let _ = db.batch("ROLLBACK");
        } else {
            let kept = (changes() - batch_began).saturating_sub(undone);
            stats.rows.fetch_add(kept, Ordering::Relaxed);
        }
        for reply in callbacks {
            let outcome = match &commit {
                Ok(()) => Ok(()),
                Err(e) => Err(JournalError::Storage(e.to_string())),
            };
            reply(outcome);
        }
    }
}
