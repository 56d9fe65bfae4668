//! The physical limit of the store, for benchmarks: raw SQLite inserts of journal-sized
//! rows with the journal's settings (WAL, `synchronous=FULL`) and a given batch size.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::params;

use super::{JournalError, open_connection};

/// Inserts `rows` rows of `row_bytes` bytes of data into a fresh table at `path`,
/// committing every `batch` rows; returns the elapsed time.
pub fn insert_rows(
    path: &Path,
    rows: u64,
    batch: u64,
    row_bytes: usize,
) -> Result<Duration, JournalError> {
    let conn = open_connection(path)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS rows (pos INTEGER PRIMARY KEY, instance TEXT NOT NULL,
         generation INTEGER NOT NULL, kind TEXT NOT NULL, seq INTEGER, data TEXT NOT NULL, at INTEGER NOT NULL) STRICT;
         CREATE INDEX IF NOT EXISTS rows_by_instance ON rows(instance, generation, pos);",
    )?;
    let data = "x".repeat(row_bytes);
    let batch = batch.max(1);
    let start = Instant::now();
    let mut written = 0;
    while written < rows {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        {
            let mut insert = conn.prepare_cached(
                "INSERT INTO rows (instance, generation, kind, seq, data, at) VALUES (?1, 0, 'activity_completed', ?2, ?3, 0)",
            )?;
            for _ in 0..batch.min(rows - written) {
                insert.execute(params![
                    format!("default/bench-{}", written / 10),
                    (written % 10) as i64,
                    data
                ])?;
                written += 1;
            }
        }
        conn.execute_batch("COMMIT")?;
    }
    Ok(start.elapsed())
}
