//! What the disk under the bench allows: raw SQLite inserts with the journal's settings
//! (WAL, `synchronous=FULL`) at a given batch size, the time of one fsync, and which
//! filesystem the data directory is on (an in-memory one makes every fsync free, and
//! every figure meaningless for a durable store).

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::params;

use crate::journal::{JournalError, open_connection};

/// Inserts `rows` rows of `row_bytes` bytes of data into a fresh table at `path`,
/// committing every `batch` rows; returns the elapsed time.
pub(super) fn insert_rows(
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

/// The median time of a 100-byte append followed by `fsync`, over `rounds` rounds, in a
/// scratch file in `dir` (removed afterwards).
pub(super) fn fsync_time(dir: &Path, rounds: usize) -> std::io::Result<Duration> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        file.write_all(&[b'x'; 100])?;
        file.sync_all()?;
        samples.push(start.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// The filesystem `dir` is on, by name, and whether it keeps data only in memory (so an
/// fsync writes nothing durable). Linux only; elsewhere `("unknown", false)`.
pub(super) fn filesystem(dir: &Path) -> (&'static str, bool) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt as _;
        let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return ("unknown", false);
        };
        // SAFETY: `path` is a valid NUL-terminated string and `stat` a plain struct the
        // call fills in.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
            return ("unknown", false);
        }
        // Magic numbers from linux/magic.h.
        match stat.f_type as u64 {
            0x0102_1994 => ("tmpfs", true),
            0x8584_58f6 => ("ramfs", true),
            0x794c_7630 => ("overlayfs", false),
            0xef53 => ("ext4", false),
            0x5846_5342 => ("xfs", false),
            0x9123_683e => ("btrfs", false),
            0x0102_1997 => ("9p", false),
            0x6573_5546 => ("fuse", false),
            0x2fc1_2fc1 => ("zfs", false),
            _ => ("other", false),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        ("unknown", false)
    }
}
