//! The journal's schema and its versioned migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Migrations only ever get
//! appended to [`MIGRATIONS`]; an applied one is never edited.

use rusqlite::Connection;

use super::JournalError;

/// Each entry moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: instances, their history, the work they scheduled, and deployed components.
    r#"
    CREATE TABLE instances (
        id              TEXT PRIMARY KEY,
        workflow        TEXT NOT NULL,
        component       TEXT NOT NULL,
        status          TEXT NOT NULL,
        generation      INTEGER NOT NULL DEFAULT 0,
        input           TEXT NOT NULL,
        output          TEXT,
        error           TEXT,
        custom_status   TEXT,
        parent_id       TEXT,
        parent_gen      INTEGER,
        parent_seq      INTEGER,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX instances_by_status ON instances(status);

    -- The journal proper. `pos` orders everything; an instance reads its current
    -- generation in `pos` order.
    CREATE TABLE history (
        pos         INTEGER PRIMARY KEY,
        instance    TEXT NOT NULL,
        generation  INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        seq         INTEGER,
        data        TEXT NOT NULL,
        at          INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX history_by_instance ON history(instance, generation, pos);

    -- Durable timers not yet fired.
    CREATE TABLE timers (
        instance    TEXT NOT NULL,
        generation  INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        fire_at     INTEGER NOT NULL,
        PRIMARY KEY (instance, generation, seq)
    ) STRICT, WITHOUT ROWID;

    -- Activities scheduled and not yet finished for good (with their next attempt).
    CREATE TABLE activity_queue (
        instance    TEXT NOT NULL,
        generation  INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        name        TEXT NOT NULL,
        input       TEXT NOT NULL,
        retry       TEXT,
        attempt     INTEGER NOT NULL,
        due_at      INTEGER NOT NULL,
        first_at    INTEGER NOT NULL,
        PRIMARY KEY (instance, generation, seq)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE components (
        digest      TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        names       TEXT NOT NULL,
        bytes       BLOB NOT NULL,
        created_at  INTEGER NOT NULL
    ) STRICT;
    "#,
    // 2: tenants, versions of each workflow, and API tokens.
    r#"
    CREATE TABLE tenants (
        name        TEXT PRIMARY KEY,
        created_at  INTEGER NOT NULL
    ) STRICT;
    INSERT INTO tenants (name, created_at) VALUES ('default', 0);

    ALTER TABLE instances ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX instances_by_tenant ON instances(tenant, id);

    -- Version n of a tenant's workflow is the n-th distinct component deployed for it.
    CREATE TABLE workflow_versions (
        tenant      TEXT NOT NULL,
        workflow    TEXT NOT NULL,
        version     INTEGER NOT NULL,
        digest      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (tenant, workflow, version)
    ) STRICT;

    -- Components are stored once by digest; this says which tenants deployed each.
    CREATE TABLE component_owners (
        tenant      TEXT NOT NULL,
        digest      TEXT NOT NULL,
        PRIMARY KEY (tenant, digest)
    ) STRICT, WITHOUT ROWID;

    -- Bearer tokens, stored as SHA-256 hashes only.
    CREATE TABLE tokens (
        hash        TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL,
        scopes      TEXT NOT NULL,
        label       TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    ) STRICT;
    "#,
    // 3: running and suspended instances per tenant, for the live-instance quota. Kept
    // by triggers, so every path that changes an instance's status keeps it true.
    r#"
    CREATE TABLE tenant_load (
        tenant  TEXT PRIMARY KEY,
        live    INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT INTO tenant_load (tenant, live)
        SELECT tenant, COUNT(*) FROM instances
        WHERE status IN ('RUNNING', 'SUSPENDED') GROUP BY tenant;

    CREATE TRIGGER tenant_load_insert AFTER INSERT ON instances
    WHEN NEW.status IN ('RUNNING', 'SUSPENDED')
    BEGIN
        INSERT INTO tenant_load (tenant, live) VALUES (NEW.tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET live = live + 1;
    END;

    CREATE TRIGGER tenant_load_update AFTER UPDATE OF status ON instances
    WHEN (OLD.status IN ('RUNNING', 'SUSPENDED')) != (NEW.status IN ('RUNNING', 'SUSPENDED'))
    BEGIN
        INSERT INTO tenant_load (tenant, live)
        VALUES (NEW.tenant, CASE WHEN NEW.status IN ('RUNNING', 'SUSPENDED') THEN 1 ELSE -1 END)
        ON CONFLICT (tenant) DO UPDATE SET live = live + excluded.live;
    END;

    CREATE TRIGGER tenant_load_delete AFTER DELETE ON instances
    WHEN OLD.status IN ('RUNNING', 'SUSPENDED')
    BEGIN
        UPDATE tenant_load SET live = live - 1 WHERE tenant = OLD.tenant;
    END;
    "#,
    // 4: a start time for instances scheduled to begin later (NULL: at once).
    r#"
    ALTER TABLE instances ADD COLUMN start_at INTEGER;
    "#,
    // 5: which life of an instance id a row belongs to. An id can be reused (purge, or a
    // start that replaces the instance); writes of the old life's activations and
    // activities are fenced by it.
    r#"
    ALTER TABLE instances ADD COLUMN incarnation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE activity_queue ADD COLUMN incarnation INTEGER NOT NULL DEFAULT 0;
    "#,
    // 6: PENDING (started for a later time) counts as live: instances started for later
    // move to it, and the quota triggers count it.
    r#"
    UPDATE instances SET status = 'PENDING'
        WHERE status = 'RUNNING' AND generation = 0 AND start_at IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM history h
                          WHERE h.instance = instances.id AND h.seq IS NOT NULL);
    DROP TRIGGER tenant_load_insert;
    DROP TRIGGER tenant_load_update;
    DROP TRIGGER tenant_load_delete;
    DELETE FROM tenant_load;
    INSERT INTO tenant_load (tenant, live)
        SELECT tenant, COUNT(*) FROM instances
        WHERE status IN ('PENDING', 'RUNNING', 'SUSPENDED') GROUP BY tenant;

    CREATE TRIGGER tenant_load_insert AFTER INSERT ON instances
    WHEN NEW.status IN ('PENDING', 'RUNNING', 'SUSPENDED')
    BEGIN
        INSERT INTO tenant_load (tenant, live) VALUES (NEW.tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET live = live + 1;
    END;

    CREATE TRIGGER tenant_load_update AFTER UPDATE OF status ON instances
    WHEN (OLD.status IN ('PENDING', 'RUNNING', 'SUSPENDED'))
      != (NEW.status IN ('PENDING', 'RUNNING', 'SUSPENDED'))
    BEGIN
        INSERT INTO tenant_load (tenant, live)
        VALUES (NEW.tenant,
                CASE WHEN NEW.status IN ('PENDING', 'RUNNING', 'SUSPENDED') THEN 1 ELSE -1 END)
        ON CONFLICT (tenant) DO UPDATE SET live = live + excluded.live;
    END;

    CREATE TRIGGER tenant_load_delete AFTER DELETE ON instances
    WHEN OLD.status IN ('PENDING', 'RUNNING', 'SUSPENDED')
    BEGIN
        UPDATE tenant_load SET live = live - 1 WHERE tenant = OLD.tenant;
    END;
    "#,
    // 7: the SHA-256 of each compiled-code cache file as written, checked before the file
    // is loaded: write access to the cache directory alone is not code execution.
    r#"
    CREATE TABLE compiled_code (
        file    TEXT PRIMARY KEY,
        sha256  TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    // 8: the name and size of raised events and event waits, in a covering index, so the
    // bound on what an instance may hold is checked without reading any payload.
    r#"
    ALTER TABLE history ADD COLUMN name TEXT;
    ALTER TABLE history ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    UPDATE history SET name = json_extract(data, '$.name'), size = length(CAST(data AS BLOB))
        WHERE kind IN ('event_raised', 'event_wait_started');
    CREATE INDEX history_event_load ON history(instance, generation, kind, name, size)
        WHERE kind IN ('event_raised', 'event_wait_started');
    "#,
    // 9: the W3C traceparent of the request that started an instance, so its spans join
    // the caller's trace in any process that runs it.
    r#"
    ALTER TABLE instances ADD COLUMN traceparent TEXT;
    "#,
    // 10: tenants whose activity calls go to external workers once one has connected, so
    // their calls in flight wait for a worker after a restart instead of failing.
    r#"
    ALTER TABLE tenants ADD COLUMN external_workers INTEGER NOT NULL DEFAULT 0;
    "#,
];

/// Brings the database to the newest schema, one transaction per migration.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), JournalError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(JournalError::Corrupt(format!(
            "the journal has schema version {current}, newer than this build knows ({}); \
             run a newer steadfast",
            MIGRATIONS.len()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
