//! Moving up: an SQLite journal copied into a PostgreSQL database, so the hosts sharing
//! that database carry on with every instance where it was.
//!
//! The copy holds the SQLite journal's lock (no engine may run on it meanwhile), refuses a
//! database that already holds instances, and writes everything in one PostgreSQL
//! transaction: a failed copy leaves nothing behind. Journal positions are kept (so
//! replay reads each history in the same order) and the position sequence moves past
//! them; each instance gets its partition. The compiled-code digests stay behind: each
//! host compiles into its own data directory.

use std::path::Path;

use super::sql::{Param, PgConn};
use super::{JournalError, leases, lock_journal, open_connection, schema};

/// Tables copied, with their columns (the same names on both backends).
const TABLES: &[(&str, &str)] = &[
    ("tenants", "name, created_at, external_workers"),
    ("components", "digest, kind, names, bytes, created_at"),
    (
        "workflow_versions",
        "tenant, workflow, version, digest, created_at",
    ),
    ("component_owners", "tenant, digest"),
    ("tokens", "hash, tenant, scopes, label, created_at"),
    (
        "instances",
        "id, workflow, component, status, generation, input, output, error, custom_status, \
         parent_id, parent_gen, parent_seq, created_at, updated_at, tenant, start_at, \
         incarnation, traceparent",
    ),
    (
        "history",
        "pos, instance, generation, kind, seq, data, at, name, size",
    ),
    ("timers", "instance, generation, seq, fire_at"),
    (
        "activity_queue",
        "instance, generation, seq, name, input, retry, attempt, due_at, first_at, incarnation",
    ),
];

/// Rows copied, per table.
pub type CopyReport = Vec<(&'static str, u64)>;

/// Copies the SQLite journal at `from` into the PostgreSQL database at `to`.
pub fn sqlite_to_postgres(from: &Path, to: &str) -> Result<CopyReport, JournalError> {
    if !from.exists() {
        return Err(JournalError::Storage(format!(
            "no journal at {}; name a data directory's steadfast.db",
            from.display()
        )));
    }
    let _lock = lock_journal(from)?;
    let mut source = open_connection(from)?;
    // Brings an older journal to this build's schema first, as opening it would.
    schema::migrate(&mut source)?;
    let mut target = PgConn::connect_as(to, "steadfast-journal-copy")?;
    schema::migrate_postgres(&mut target)?;
    let mut tx = target.client.transaction()?;
    let existing: i64 = tx.query_one("SELECT count(*) FROM instances", &[])?.get(0);
    if existing > 0 {
        return Err(JournalError::Storage(format!(
            "the PostgreSQL database already holds {existing} instances; copy into an empty \
             one (nothing was written)"
        )));
    }
    let mut report = Vec::new();
    for (table, columns) in TABLES {
        let count = columns.split(',').count();
        let partitioned = *table == "instances";
        let placeholders: Vec<String> = (1..=count + usize::from(partitioned))
            .map(|i| format!("${i}"))
            .collect();
        let insert = format!(
            "INSERT INTO {table} ({columns}{}) VALUES ({}) ON CONFLICT DO NOTHING",
            if partitioned { ", partition" } else { "" },
            placeholders.join(", ")
        );
        let insert = tx.prepare(&insert)?;
        let mut select = source.prepare(&format!("SELECT {columns} FROM {table}"))?;
        let mut rows = select.query([])?;
        let mut copied = 0u64;
        while let Some(row) = rows.next()? {
            let mut values: Vec<rusqlite::types::Value> = (0..count)
                .map(|i| row.get::<_, rusqlite::types::Value>(i))
                .collect::<Result<_, _>>()?;
            if partitioned {
                let key = match &values[0] {
                    rusqlite::types::Value::Text(key) => key.clone(),
                    other => {
                        return Err(JournalError::Corrupt(format!(
                            "an instance id is not text: {other:?}"
                        )));
                    }
                };
                values.push(rusqlite::types::Value::Integer(i64::from(
                    leases::partition_of(&key),
                )));
            }
            let params: Vec<Param<'_>> = values
                .iter()
                .map(|v| match v {
                    rusqlite::types::Value::Null => Param::Null,
                    rusqlite::types::Value::Integer(i) => Param::Int(*i),
                    rusqlite::types::Value::Real(f) => Param::Int(*f as i64),
                    rusqlite::types::Value::Text(s) => Param::Text(s),
                    rusqlite::types::Value::Blob(b) => Param::Blob(b),
                })
                .collect();
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                .collect();
            copied += tx.execute(&insert, &refs)?;
        }
        report.push((*table, copied));
    }
    tx.batch_execute(
        // Wake-ups are for hosts already running; the hosts that start on the copy
        // recover every instance from it.
        "DELETE FROM wakeups;
         SELECT setval(pg_get_serial_sequence('history', 'pos'),
                       GREATEST((SELECT max(pos) FROM history), 1))",
    )?;
    tx.commit()?;
    Ok(report)
}
