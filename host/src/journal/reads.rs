//! Queries: what the engine loads when it activates an instance or recovers after a
//! restart, and what clients read.

use super::sql::{Dialect, Row, params};
use super::{Journal, JournalError};
use crate::model::{
    Digest, ErrorInfo, Event, InstanceId, RetryPolicy, RuntimeStatus, Tenant, Timestamp,
};

/// An instance's row.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub id: InstanceId,
    pub workflow: String,
    pub component: Digest,
    pub status: RuntimeStatus,
    pub generation: u32,
    pub input: String,
    pub output: Option<String>,
    pub error: Option<ErrorInfo>,
    pub custom_status: Option<String>,
    pub parent: Option<InstanceId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the workflow first runs, for an instance started with a later start time.
    pub start_at: Option<Timestamp>,
    /// Which life of this id the row is (ids can be reused after a purge).
    pub incarnation: i64,
}

/// One journal entry with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub pos: u64,
    pub generation: u32,
    pub at: Timestamp,
    pub event: Event,
}

/// A queued activity attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedActivity {
    pub instance: InstanceId,
    pub generation: u32,
    pub seq: u32,
    pub name: String,
    pub input: String,
    pub retry: Option<RetryPolicy>,
    /// The attempt about to run (1 = first).
    pub attempt: u32,
    pub due_at: Timestamp,
    pub first_at: Timestamp,
    /// The life of the instance id that scheduled it.
    pub incarnation: i64,
}

/// A deployed component's bytes.
#[derive(Debug, Clone)]
pub struct StoredComponent {
    pub digest: Digest,
    pub kind: String,
    pub bytes: Vec<u8>,
}

/// Which instances [`Journal::list_instances`] returns.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub workflow: Option<String>,
    pub status: Option<RuntimeStatus>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
    /// Only ids whose local part contains this text.
    pub search: Option<String>,
    /// Newest id first (descending) instead of ascending.
    pub descending: bool,
    /// Only ids (local part) past this one in the chosen order: the cursor of the
    /// previous page.
    pub after: Option<String>,
    pub limit: u32,
}

/// A stored API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub tenant: Tenant,
    pub scopes: Vec<String>,
    pub label: String,
}

/// The page query of [`Journal::list_instances`], walking the ids one way: `id CMP ?6`
/// (the cursor), `ORDER BY id DIRECTION`. `FIND(haystack, needle)` is the backend's
/// substring search (1-based position, 0 if absent): SQLite's `instr`, PostgreSQL's
/// `strpos`.
/// Each optional filter names its column before `IS NULL`: PostgreSQL types a parameter
/// where it first meets it, and `?2 IS NULL` alone says nothing of its type.
macro_rules! list_sql {
    ($find:literal, $cmp:literal, $direction:literal) => {
        concat!(
            "SELECT id, workflow, component, status, generation, input, output, error,
                    custom_status, parent_id, created_at, updated_at, start_at, incarnation
             FROM instances WHERE tenant = ?1
               AND (workflow = ?2 OR ?2 IS NULL) AND (status = ?3 OR ?3 IS NULL)
               AND (created_at > ?4 OR ?4 IS NULL) AND (created_at < ?5 OR ?5 IS NULL)
               AND (",
            $find,
            "(substr(id, ?9), ?8) > 0 OR ?8 IS NULL)
               AND id ",
            $cmp,
            " ?6 ORDER BY id ",
            $direction,
            " LIMIT ?7"
        )
    };
}

/// A pending or running instance, as recovery finds it.
#[derive(Debug)]
pub struct RunningInstance {
    pub id: InstanceId,
    /// When it was started for (PENDING until then).
    pub start_at: Option<Timestamp>,
    /// The component it runs on.
    pub component: Digest,
    /// Waiting in the journal with nothing new for it: no need to replay it now.
    pub waiting: bool,
}

impl Journal {
    /// A page of a tenant's instances, by id (ascending, or descending when asked).
    pub fn list_instances(
        &self,
        tenant: &Tenant,
        filter: &InstanceFilter,
    ) -> Result<Vec<InstanceRecord>, JournalError> {
        self.read(|db| {
            // Without a cursor, the page starts at the first (or last) key of the tenant:
            // every key is `tenant/local`, above `tenant/` and below `tenant0` ('0'
            // follows '/'). A bound rather than `IS NULL OR` lets SQLite seek the index.
            let after = match &filter.after {
                Some(local) => format!("{tenant}/{local}"),
                None if filter.descending => format!("{tenant}0"),
                None => format!("{tenant}/"),
            };
            // Two statements (per backend) rather than one built at run time: each stays
            // in the cache, and each walks `instances_by_tenant` in its own direction.
            let sql = match (db.dialect(), filter.descending) {
                (Dialect::Sqlite, true) => list_sql!("instr", "<", "DESC"),
                (Dialect::Sqlite, false) => list_sql!("instr", ">", "ASC"),
                (Dialect::Postgres, true) => list_sql!("strpos", "<", "DESC"),
                (Dialect::Postgres, false) => list_sql!("strpos", ">", "ASC"),
            };
            // The local part of a key starts after "tenant/" (1-based for substr).
            let local_start = tenant.as_str().len() + 2;
            db.query_map(
                sql,
                params![
                    tenant.as_str(),
                    filter.workflow,
                    filter.status.map(RuntimeStatus::as_str),
                    filter.created_after,
                    filter.created_before,
                    after,
                    filter.limit,
                    filter.search.as_deref().filter(|s| !s.is_empty()),
                    local_start as i64,
                ],
                instance_from_row,
            )
        })
    }

    /// What an instance's spans are derived from: the W3C `traceparent` it was started
    /// with (if any) and the life of its id (`incarnation`); `None` if it does not exist.
    pub fn trace_identity(
        &self,
        id: &InstanceId,
    ) -> Result<Option<(Option<String>, i64)>, JournalError> {
        self.read(|db| {
            db.query_opt(
                "SELECT traceparent, incarnation FROM instances WHERE id = ?1",
                params![id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// How many live instances (pending, running, suspended) of a tenant run on each
    /// workflow's component: (workflow, digest) -> count.
    pub fn live_counts(
        &self,
        tenant: &Tenant,
    ) -> Result<std::collections::HashMap<(String, String), u64>, JournalError> {
        self.read(|db| {
            let rows: Vec<((String, String), u64)> = db.query_map(
                "SELECT workflow, component, COUNT(*) FROM instances WHERE tenant = ?1
                 AND status IN ('PENDING', 'RUNNING', 'SUSPENDED') GROUP BY workflow, component",
                params![tenant.as_str()],
                |r| Ok(((r.get(0)?, r.get(1)?), r.get::<i64>(2)? as u64)),
            )?;
            Ok(rows.into_iter().collect())
        })
    }

    /// Instances of a tenant's workflow that have not ended (pending, running or suspended).
    pub fn live_instances(
        &self,
        tenant: &Tenant,
        workflow: &str,
    ) -> Result<Vec<InstanceId>, JournalError> {
        self.read(|db| {
            db.query_map(
                "SELECT id FROM instances WHERE tenant = ?1 AND workflow = ?2
                 AND status IN ('PENDING', 'RUNNING', 'SUSPENDED') ORDER BY id",
                params![tenant.as_str(), workflow],
                |r| InstanceId::from_key(r.get(0)?).map_err(JournalError::Corrupt),
            )
        })
    }

    /// Every workflow version of every tenant: (tenant, workflow, version, digest).
    pub fn workflow_versions(&self) -> Result<Vec<(String, String, u32, Digest)>, JournalError> {
        self.read(|db| {
            db.query_map(
                "SELECT tenant, workflow, version, digest FROM workflow_versions ORDER BY tenant, workflow, version",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, Digest::from_hex(r.get(3)?))),
            )
        })
    }

    /// Which tenant deployed which component: (tenant, digest).
    pub fn component_owners(&self) -> Result<Vec<(String, Digest)>, JournalError> {
        self.read(|db| {
            db.query_map("SELECT tenant, digest FROM component_owners", &[], |r| {
                Ok((r.get(0)?, Digest::from_hex(r.get(1)?)))
            })
        })
    }

    pub fn token(&self, hash: &str) -> Result<Option<TokenRecord>, JournalError> {
        self.read(|db| {
            let row: Option<(String, String, String)> = db.query_opt(
                "SELECT tenant, scopes, label FROM tokens WHERE hash = ?1",
                params![hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            row.map(|(tenant, scopes, label)| {
                Ok(TokenRecord {
                    tenant: Tenant::new(tenant).map_err(JournalError::Corrupt)?,
                    scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                    label,
                })
            })
            .transpose()
        })
    }

    pub fn tenant_exists(&self, tenant: &Tenant) -> Result<bool, JournalError> {
        self.read(|db| {
            Ok(db
                .query_opt(
                    "SELECT 1 FROM tenants WHERE name = ?1",
                    params![tenant.as_str()],
                    |_| Ok(()),
                )?
                .is_some())
        })
    }

    pub fn instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>, JournalError> {
        self.read(|db| {
            db.query_opt(
                "SELECT id, workflow, component, status, generation, input, output, error,
                        custom_status, parent_id, created_at, updated_at, start_at, incarnation
                 FROM instances WHERE id = ?1",
                params![id.as_str()],
                instance_from_row,
            )
        })
    }

    /// The events of one generation, in order.
    pub fn generation_history(
        &self,
        id: &InstanceId,
        generation: u32,
    ) -> Result<Vec<StoredEvent>, JournalError> {
        self.read(|db| {
            db.query_map(
                "SELECT pos, generation, at, data FROM history
                 WHERE instance = ?1 AND generation = ?2 ORDER BY pos",
                params![id.as_str(), generation],
                event_from_row,
            )
        })
    }

    /// Every stored event of an instance (older generations are gone after
    /// continue-as-new), in order.
    pub fn history(&self, id: &InstanceId) -> Result<Vec<StoredEvent>, JournalError> {
        self.read(|db| {
            db.query_map(
                "SELECT pos, generation, at, data FROM history WHERE instance = ?1 ORDER BY pos",
                params![id.as_str()],
                event_from_row,
            )
        })
    }

    /// Up to `limit` journal entries after position `after`, stopping early once they
    /// hold `max_bytes`; true if there are more.
    pub fn history_page(
        &self,
        id: &InstanceId,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<StoredEvent>, bool), JournalError> {
        self.read(|db| {
            let mut page = Vec::new();
            let mut bytes = 0;
            let mut more = false;
            db.for_each(
                "SELECT pos, generation, at, data FROM history
                 WHERE instance = ?1 AND pos > ?2 ORDER BY pos LIMIT ?3",
                params![id.as_str(), after as i64, i64::from(limit) + 1],
                |row| {
                    if page.len() == limit as usize || (bytes >= max_bytes && !page.is_empty()) {
                        more = true;
                        return Ok(false);
                    }
                    let (event, size) = sized_event_from_row(row)?;
                    bytes += size;
                    page.push(event);
                    Ok(true)
                },
            )?;
            Ok((page, more))
        })
    }

    /// How many journal rows an instance holds (history, queued work, timers).
    pub fn row_count(&self, id: &InstanceId) -> Result<u64, JournalError> {
        self.read(|db| {
            Ok(db.query_one(
                "SELECT (SELECT count(*) FROM history WHERE instance = ?1)
                      + (SELECT count(*) FROM timers WHERE instance = ?1)
                      + (SELECT count(*) FROM activity_queue WHERE instance = ?1)",
                params![id.as_str()],
                |r| r.get::<i64>(0),
            )? as u64)
        })
    }

    /// Instances that still have work to do, each with its start time if it was started
    /// for later, and whether it is waiting in the journal: RUNNING, and its last step
    /// was written as it went back to waiting, in the generation, incarnation and
    /// component it still has, having taken in every entry its generation holds now
    /// (`idle_mark`, kept by the step writes). Replaying such an instance would only
    /// bring it back to the same wait; whatever comes for it next (a raised event, a
    /// timer, an activity's or a child's result) is journaled and activates it.
    ///
    /// `partitions` narrows the scan to those partitions (every one with `None`).
    pub fn running_instances(
        &self,
        partitions: Option<&[u32]>,
    ) -> Result<Vec<RunningInstance>, JournalError> {
        if partitions.is_some_and(<[u32]>::is_empty) {
            return Ok(Vec::new());
        }
        // Partition numbers are integers below 64: written into the text, not bound.
        let only = partitions.map_or(String::new(), |list| {
            let list: Vec<String> = list.iter().map(u32::to_string).collect();
            format!(" AND i.partition IN ({})", list.join(", "))
        });
        let sql = format!(
            "SELECT i.id, i.start_at, i.status, i.idle_mark, i.generation, i.incarnation,
                    i.component,
                    CASE WHEN i.idle_mark IS NULL THEN NULL ELSE
                      (SELECT count(*) FROM history h
                       WHERE h.instance = i.id AND h.generation = i.generation) END
             FROM instances i WHERE i.status IN ('PENDING', 'RUNNING'){only}"
        );
        self.read(|db| {
            db.query_map(&sql, &[], |r| {
                let status: String = r.get(2)?;
                let mark: Option<String> = r.get(3)?;
                let component = Digest::from_hex(r.get(6)?);
                let waiting = match (mark, r.get::<Option<i64>>(7)?) {
                    (Some(mark), Some(entries)) if status == "RUNNING" => {
                        let fence = super::Fence {
                            generation: r.get(4)?,
                            incarnation: r.get(5)?,
                            component: component.clone(),
                            lease_epoch: None,
                        };
                        mark == super::writes::idle_mark(&fence, entries as u64)
                    }
                    _ => false,
                };
                Ok(RunningInstance {
                    id: InstanceId::from_key(r.get(0)?).map_err(JournalError::Corrupt)?,
                    start_at: r.get::<Option<Timestamp>>(1)?,
                    component,
                    waiting,
                })
            })
        })
    }

    /// Timers not yet fired: (instance, generation, seq, fire_at).
    pub fn pending_timers(&self) -> Result<Vec<(InstanceId, u32, u32, Timestamp)>, JournalError> {
        self.read(|db| {
            db.query_map(
                "SELECT instance, generation, seq, fire_at FROM timers",
                &[],
                |r| {
                    Ok((
                        InstanceId::from_key(r.get(0)?).map_err(JournalError::Corrupt)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get::<Timestamp>(3)?,
                    ))
                },
            )
        })
    }

    /// The tenant's live-instance counter (kept by triggers) and its pending, running or suspended
    /// instances counted.
    pub fn tenant_load(&self, tenant: &Tenant) -> Result<(u64, u64), JournalError> {
        self.read(|db| {
            // One snapshot for both counts: one statement sees one snapshot on either
            // backend (no counter row yet reads as 0).
            // PostgreSQL keeps no counter (see `insert_instance`): it is the count.
            let sql = match db.dialect() {
                Dialect::Sqlite => {
                    "SELECT (SELECT live FROM tenant_load WHERE tenant = ?1),
                            (SELECT count(*) FROM instances
                             WHERE tenant = ?1 AND status IN ('PENDING', 'RUNNING', 'SUSPENDED'))"
                }
                Dialect::Postgres => {
                    "SELECT count(*), count(*) FROM instances
                     WHERE tenant = ?1 AND status IN ('PENDING', 'RUNNING', 'SUSPENDED')"
                }
            };
            let (counter, counted) = db.query_one(sql, params![tenant.as_str()], |r| {
                Ok((r.get::<Option<i64>>(0)?.unwrap_or(0), r.get::<i64>(1)?))
            })?;
            Ok((counter.max(0) as u64, counted.max(0) as u64))
        })
    }

    /// Whether this attempt's activity is still queued: false once its instance ended,
    /// moved to another generation or was purged (so the activity must not start).
    pub fn activity_queued(&self, job: &QueuedActivity) -> Result<bool, JournalError> {
        self.read(|db| {
            Ok(db
                .query_opt(
                    "SELECT 1 FROM activity_queue
                     WHERE instance = ?1 AND generation = ?2 AND seq = ?3 AND incarnation = ?4",
                    params![
                        job.instance.as_str(),
                        job.generation,
                        job.seq,
                        job.incarnation
                    ],
                    |_| Ok(()),
                )?
                .is_some())
        })
    }

    /// Activities queued and not finished. A row that cannot be read is logged and
    /// skipped, so one bad row cannot keep the engine from opening.
    pub fn pending_activities(&self) -> Result<Vec<QueuedActivity>, JournalError> {
        self.read(|db| {
            let mut queued = Vec::new();
            db.for_each(
                "SELECT instance, generation, seq, name, input, retry, attempt, due_at, first_at,
                        incarnation
                 FROM activity_queue",
                &[],
                |r| {
                    match activity_from_row(r) {
                        Ok(job) => queued.push(job),
                        Err(e) => {
                            tracing::error!(error = %e, "skipping an unreadable activity queue row")
                        }
                    }
                    Ok(true)
                },
            )?;
            Ok(queued)
        })
    }

    /// The SHA-256 recorded for compiled-code cache file `file`.
    pub fn compiled_code(&self, file: &str) -> Result<Option<String>, JournalError> {
        self.read(|db| {
            db.query_opt(
                "SELECT sha256 FROM compiled_code WHERE file = ?1",
                params![file],
                |r| r.get(0),
            )
        })
    }

    pub fn components(&self) -> Result<Vec<StoredComponent>, JournalError> {
        self.read(|db| {
            // Oldest first; ties in insertion order on SQLite (`rowid`), by digest on
            // PostgreSQL (which has no `rowid`).
            let sql = match db.dialect() {
                Dialect::Sqlite => {
                    "SELECT digest, kind, bytes FROM components ORDER BY created_at, rowid"
                }
                Dialect::Postgres => {
                    "SELECT digest, kind, bytes FROM components ORDER BY created_at, digest"
                }
            };
            db.query_map(sql, &[], |r| {
                Ok(StoredComponent {
                    digest: Digest::from_hex(r.get(0)?),
                    kind: r.get(1)?,
                    bytes: r.get(2)?,
                })
            })
        })
    }
}

impl Journal {
    /// The deployed components not in `known`, with their bytes (another host sharing
    /// the journal deployed them).
    pub fn components_except(
        &self,
        known: &std::collections::HashSet<Digest>,
    ) -> Result<Vec<StoredComponent>, JournalError> {
        self.read(|db| {
            let digests = db.query_map(
                "SELECT digest FROM components ORDER BY created_at, digest",
                &[],
                |r| Ok(Digest::from_hex(r.get(0)?)),
            )?;
            let mut out = Vec::new();
            for digest in digests.into_iter().filter(|d| !known.contains(d)) {
                let stored = db.query_opt(
                    "SELECT kind, bytes FROM components WHERE digest = ?1",
                    params![digest.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if let Some((kind, bytes)) = stored {
                    out.push(StoredComponent {
                        digest,
                        kind,
                        bytes,
                    });
                }
            }
            Ok(out)
        })
    }
}

fn instance_from_row(r: &Row<'_>) -> Result<InstanceRecord, JournalError> {
    let id: String = r.get(0)?;
    let status: String = r.get(3)?;
    let error: Option<String> = r.get(7)?;
    let parent: Option<String> = r.get(9)?;
    Ok(InstanceRecord {
        id: InstanceId::from_key(id).map_err(JournalError::Corrupt)?,
        workflow: r.get(1)?,
        component: Digest::from_hex(r.get(2)?),
        status: status.parse().map_err(JournalError::Corrupt)?,
        generation: r.get(4)?,
        input: r.get(5)?,
        output: r.get(6)?,
        error: error.map(|e| serde_json::from_str(&e)).transpose()?,
        custom_status: r.get(8)?,
        parent: parent
            .map(InstanceId::from_key)
            .transpose()
            .map_err(JournalError::Corrupt)?,
        created_at: r.get::<Timestamp>(10)?,
        updated_at: r.get::<Timestamp>(11)?,
        start_at: r.get::<Option<Timestamp>>(12)?,
        incarnation: r.get(13)?,
    })
}

fn event_from_row(r: &Row<'_>) -> Result<StoredEvent, JournalError> {
    sized_event_from_row(r).map(|(event, _)| event)
}

/// A journal entry and the size in bytes of its stored data.
fn sized_event_from_row(r: &Row<'_>) -> Result<(StoredEvent, usize), JournalError> {
    let pos: i64 = r.get(0)?;
    let generation: u32 = r.get(1)?;
    let at: Timestamp = r.get(2)?;
    let data: String = r.get(3)?;
    let event = serde_json::from_str(&data)
        .map_err(|e| JournalError::Corrupt(format!("history entry {pos}: {e}")))?;
    Ok((
        StoredEvent {
            pos: pos as u64,
            generation,
            at,
            event,
        },
        data.len(),
    ))
}

/// One row of `activity_queue`, columns in the order `pending_activities` selects them.
fn activity_from_row(r: &Row<'_>) -> Result<QueuedActivity, JournalError> {
    let retry: Option<String> = r.get(5)?;
    Ok(QueuedActivity {
        instance: InstanceId::from_key(r.get(0)?).map_err(JournalError::Corrupt)?,
        generation: r.get(1)?,
        seq: r.get(2)?,
        name: r.get(3)?,
        input: r.get(4)?,
        retry: retry.map(|r| serde_json::from_str(&r)).transpose()?,
        attempt: r.get(6)?,
        due_at: r.get(7)?,
        first_at: r.get(8)?,
        incarnation: r.get(9)?,
    })
}
