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
    // 11: the partition of each instance (a hash of its key). One SQLite engine owns them
    // all; the column keeps the statements the same as PostgreSQL's, where hosts share
    // partitions by lease.
    r#"
    ALTER TABLE instances ADD COLUMN partition INTEGER NOT NULL DEFAULT 0;
    "#,
    // 12: how many history entries of its generation a running instance had seen when
    // its last step committed and it went back to waiting. Superseded by 13 (a count
    // alone could look current after a host that does not know it moved the instance on);
    // no longer written or read.
    r#"
    ALTER TABLE instances ADD COLUMN idle_seen INTEGER;
    "#,
    // 13: the generation, incarnation and component a running instance's last step ran
    // on, and how many history entries of that generation it had seen, written as it went
    // back to waiting (NULL: unknown). A restart leaves it in the journal while all four
    // still hold: replaying it would only bring it back to the same wait (see
    // `Journal::running_instances`). A host of an older build, which does not know the
    // column, cannot make a stale mark look current: it changes one of the four.
    r#"
    ALTER TABLE instances ADD COLUMN idle_mark TEXT;
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

/// The PostgreSQL schema, in the same steps as [`MIGRATIONS`] where they apply; its
/// version is kept in `steadfast_schema`. Several hosts may start at once: the first to
/// lock that table migrates, the others find the work done.
///
/// Differences from SQLite, all PostgreSQL's own types and no extension:
/// - every integer is `BIGINT` and every key `TEXT COLLATE "C"` (byte order, as SQLite
///   compares), so the keyset pages walk ids the same way;
/// - `history.pos` is an identity column;
/// - no `tenant_load` counter: one row per tenant, locked by every start and end on every
///   host, would deadlock their group commits; the quota counts live instances instead;
/// - wake-ups for other hosts come from PL/pgSQL triggers (CockroachDB has none before
///   24.3; there the statements that change an instance would add them);
/// - `partitions` holds the leases of several hosts (see `journal::leases`), and each
///   history row says which host wrote it and when by the database's clock, so a test
///   can check that a host wrote nothing after it lost its lease.
const POSTGRES_MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE instances (
        id              TEXT COLLATE "C" PRIMARY KEY,
        workflow        TEXT NOT NULL,
        component       TEXT NOT NULL,
        status          TEXT NOT NULL,
        generation      BIGINT NOT NULL DEFAULT 0,
        input           TEXT NOT NULL,
        output          TEXT,
        error           TEXT,
        custom_status   TEXT,
        parent_id       TEXT,
        parent_gen      BIGINT,
        parent_seq      BIGINT,
        created_at      BIGINT NOT NULL,
        updated_at      BIGINT NOT NULL,
        tenant          TEXT COLLATE "C" NOT NULL DEFAULT 'default',
        start_at        BIGINT,
        incarnation     BIGINT NOT NULL DEFAULT 0,
        traceparent     TEXT,
        partition       BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX instances_by_status ON instances(status);
    CREATE INDEX instances_by_tenant ON instances(tenant, id);
    CREATE INDEX instances_by_partition ON instances(partition, status);

    CREATE TABLE history (
        pos         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        instance    TEXT COLLATE "C" NOT NULL,
        generation  BIGINT NOT NULL,
        kind        TEXT NOT NULL,
        seq         BIGINT,
        data        TEXT NOT NULL,
        at          BIGINT NOT NULL,
        name        TEXT,
        size        BIGINT NOT NULL DEFAULT 0,
        written_by  TEXT NOT NULL DEFAULT current_setting('application_name'),
        written_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX history_by_instance ON history(instance, generation, pos);
    CREATE INDEX history_event_load ON history(instance, generation, kind, name, size)
        WHERE kind IN ('event_raised', 'event_wait_started');

    CREATE TABLE timers (
        instance    TEXT COLLATE "C" NOT NULL,
        generation  BIGINT NOT NULL,
        seq         BIGINT NOT NULL,
        fire_at     BIGINT NOT NULL,
        PRIMARY KEY (instance, generation, seq)
    );

    CREATE TABLE activity_queue (
        instance    TEXT COLLATE "C" NOT NULL,
        generation  BIGINT NOT NULL,
        seq         BIGINT NOT NULL,
        name        TEXT NOT NULL,
        input       TEXT NOT NULL,
        retry       TEXT,
        attempt     BIGINT NOT NULL,
        due_at      BIGINT NOT NULL,
        first_at    BIGINT NOT NULL,
        incarnation BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (instance, generation, seq)
    );

    CREATE TABLE components (
        digest      TEXT COLLATE "C" PRIMARY KEY,
        kind        TEXT NOT NULL,
        names       TEXT NOT NULL,
        bytes       BYTEA NOT NULL,
        created_at  BIGINT NOT NULL
    );

    CREATE TABLE tenants (
        name             TEXT COLLATE "C" PRIMARY KEY,
        created_at       BIGINT NOT NULL,
        external_workers BIGINT NOT NULL DEFAULT 0
    );
    INSERT INTO tenants (name, created_at) VALUES ('default', 0);

    CREATE TABLE workflow_versions (
        tenant      TEXT COLLATE "C" NOT NULL,
        workflow    TEXT COLLATE "C" NOT NULL,
        version     BIGINT NOT NULL,
        digest      TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        PRIMARY KEY (tenant, workflow, version)
    );

    CREATE TABLE component_owners (
        tenant      TEXT COLLATE "C" NOT NULL,
        digest      TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (tenant, digest)
    );

    CREATE TABLE tokens (
        hash        TEXT COLLATE "C" PRIMARY KEY,
        tenant      TEXT NOT NULL,
        scopes      TEXT NOT NULL,
        label       TEXT NOT NULL,
        created_at  BIGINT NOT NULL
    );

    CREATE TABLE compiled_code (
        file    TEXT COLLATE "C" PRIMARY KEY,
        sha256  TEXT NOT NULL
    );

    -- The leases of several hosts: each partition of instances has at most one owner at
    -- a time; every write of that owner is fenced by the epoch it took the lease with.
    CREATE TABLE partitions (
        partition   BIGINT PRIMARY KEY,
        owner       TEXT,
        epoch       BIGINT NOT NULL DEFAULT 0,
        expires_at  TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
    );
    INSERT INTO partitions (partition) SELECT generate_series(0, 63);

    -- Hosts alive (heartbeat by the database's clock), for sharing partitions fairly.
    CREATE TABLE hosts (
        id          TEXT COLLATE "C" PRIMARY KEY,
        seen_at     TIMESTAMPTZ NOT NULL
    );

    -- Work for a partition's owner written by another host (a start, a raised event, a
    -- termination...). Announced by NOTIFY; read by polling too, so none is missed.
    CREATE TABLE wakeups (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        partition   BIGINT NOT NULL,
        instance    TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX wakeups_by_partition ON wakeups(partition, id);

    -- A write for an instance whose partition another host holds leaves that host a
    -- wake-up: new or changed instances (a start, a termination, a suspension...) and
    -- raised events or children's results in its history.
    CREATE FUNCTION steadfast_wake() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        key TEXT;
        part BIGINT;
        holder TEXT;
    BEGIN
        IF TG_TABLE_NAME = 'instances' THEN
            key := NEW.id;
            part := NEW.partition;
        ELSE
            key := NEW.instance;
            SELECT i.partition INTO part FROM instances i WHERE i.id = NEW.instance;
        END IF;
        IF part IS NULL THEN
            RETURN NULL;
        END IF;
        -- Read FOR SHARE: a lease given back or taken over meanwhile waits for this
        -- commit, and the host taking it recovers from a journal holding this write.
        SELECT p.owner INTO holder FROM partitions p WHERE p.partition = part FOR SHARE;
        IF holder IS DISTINCT FROM current_setting('application_name') THEN
            INSERT INTO wakeups (partition, instance) VALUES (part, key);
            PERFORM pg_notify('steadfast_wakeups', part::text);
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER wake_on_instances AFTER INSERT OR UPDATE OF status, component, incarnation
        ON instances FOR EACH ROW EXECUTE FUNCTION steadfast_wake();
    -- Every host hears of every change of status, for the waits it serves (a start
    -- awaited, a completion awaited) on instances another host runs.
    CREATE FUNCTION steadfast_status() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('steadfast_status', NEW.id);
        RETURN NULL;
    END $$;
    CREATE TRIGGER status_changed AFTER UPDATE OF status ON instances
        FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION steadfast_status();
    CREATE TRIGGER wake_on_history AFTER INSERT ON history
        FOR EACH ROW WHEN (NEW.kind IN ('event_raised', 'child_completed'))
        EXECUTE FUNCTION steadfast_wake();
    "#,
    // As SQLite's migration 12 (superseded, never read).
    r#"
    ALTER TABLE instances ADD COLUMN idle_seen BIGINT;
    "#,
    // As SQLite's migration 13.
    r#"
    ALTER TABLE instances ADD COLUMN idle_mark TEXT;
    "#,
];

/// Brings a PostgreSQL database to the newest schema.
pub(super) fn migrate_postgres(conn: &mut super::sql::PgConn) -> Result<(), JournalError> {
    let client = &mut conn.client;
    // Two hosts creating the version table at once: one of them fails and tries again.
    for attempt in 0.. {
        match client
            .batch_execute("CREATE TABLE IF NOT EXISTS steadfast_schema (version BIGINT NOT NULL)")
        {
            Ok(()) => break,
            Err(_) if attempt < 3 => std::thread::sleep(std::time::Duration::from_millis(100)),
            Err(e) => return Err(e.into()),
        }
    }
    let mut tx = client.transaction()?;
    tx.batch_execute("LOCK TABLE steadfast_schema IN EXCLUSIVE MODE")?;
    let current: i64 = tx
        .query_opt("SELECT version FROM steadfast_schema", &[])?
        .map(|r| r.get(0))
        .unwrap_or(0);
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > POSTGRES_MIGRATIONS.len() {
        return Err(JournalError::Corrupt(format!(
            "the database has Steadfast schema version {current}, newer than this build \
             knows ({}); run a newer steadfast",
            POSTGRES_MIGRATIONS.len()
        )));
    }
    for sql in POSTGRES_MIGRATIONS.iter().skip(current) {
        tx.batch_execute(sql)?;
    }
    tx.batch_execute("DELETE FROM steadfast_schema")?;
    tx.execute(
        "INSERT INTO steadfast_schema (version) VALUES ($1)",
        &[&(POSTGRES_MIGRATIONS.len() as i64)],
    )?;
    tx.commit()?;
    Ok(())
}
