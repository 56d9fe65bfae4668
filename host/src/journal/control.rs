//! The control plane's writes, each one step of the group-commit transaction: deploys and
//! compiled-code records, tenants and tokens, and the lifecycle changes an operator asks
//! for (a scheduled instance's start, suspend and resume, terminate, purge, migrate). A
//! status change is a conditional update decided by `model::Transition`.

use super::sql::{Db, params};
use super::writes::{insert_event, status_of};
use super::{Journal, JournalError};
use crate::model::{
    Digest, ErrorInfo, Event, InstanceId, RuntimeStatus, Tenant, Timestamp, Transition,
};

impl Journal {
    /// Records the SHA-256 of a compiled-code cache file just written.
    pub async fn record_compiled_code(
        &self,
        file: String,
        sha256: String,
    ) -> Result<(), JournalError> {
        self.write(move |db| {
            db.execute(
                "INSERT INTO compiled_code (file, sha256) VALUES (?1, ?2)
                 ON CONFLICT (file) DO UPDATE SET sha256 = excluded.sha256",
                params![file, sha256],
            )?;
            Ok(())
        })
        .await
    }

    /// Stores a component for `tenant` so a restarted host can load it again, and gives
    /// each workflow it implements a version: the next number if the digest is new for that
    /// workflow, the existing one if the same bytes are deployed again.
    pub async fn deploy_component(
        &self,
        tenant: Tenant,
        digest: Digest,
        kind: &'static str,
        names: Vec<String>,
        bytes: Vec<u8>,
        now: Timestamp,
    ) -> Result<Vec<(String, u32)>, JournalError> {
        self.write(move |db| {
            db.execute(
                "INSERT INTO components (digest, kind, names, bytes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![digest.as_str(), kind, serde_json::to_string(&names)?, bytes, now],
            )?;
            db.execute(
                "INSERT INTO component_owners (tenant, digest) VALUES (?1, ?2)
                 ON CONFLICT DO NOTHING",
                params![tenant.as_str(), digest.as_str()],
            )?;
            let mut versions = Vec::new();
            if kind != "orchestrator" {
                return Ok(versions);
            }
            for name in names {
                let existing: Option<u32> = db.query_opt(
                    "SELECT version FROM workflow_versions WHERE tenant = ?1 AND workflow = ?2 AND digest = ?3",
                    params![tenant.as_str(), name, digest.as_str()],
                    |r| r.get(0),
                )?;
                let version = match existing {
                    Some(v) => v,
                    None => {
                        let next: u32 = db.query_one(
                            "SELECT coalesce(max(version), 0) + 1 FROM workflow_versions
                             WHERE tenant = ?1 AND workflow = ?2",
                            params![tenant.as_str(), name],
                            |r| r.get(0),
                        )?;
                        db.execute(
                            "INSERT INTO workflow_versions (tenant, workflow, version, digest, created_at)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![tenant.as_str(), name, next, digest.as_str(), now],
                        )?;
                        next
                    }
                };
                versions.push((name, version));
            }
            Ok(versions)
        })
        .await
    }

    /// A PENDING instance whose start time has come begins to run. Returns whether it
    /// moved (false if it no longer is PENDING: it was terminated, or started already).
    pub async fn start_pending(
        &self,
        id: InstanceId,
        incarnation: i64,
        now: Timestamp,
    ) -> Result<bool, JournalError> {
        self.write(move |db| {
            // One conditional write: this life of the id, still PENDING, and due.
            let from = RuntimeStatus::Pending;
            let to = Transition::Start
                .apply(from)
                .map_err(|refused| JournalError::Refused {
                    id: id.clone(),
                    refused,
                })?;
            let n = db.execute(
                "UPDATE instances SET status = ?2, updated_at = ?3
                 WHERE id = ?1 AND status = ?4 AND incarnation = ?5
                   AND (start_at IS NULL OR start_at <= ?3)",
                params![id.as_str(), to.as_str(), now, from.as_str(), incarnation],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Moves an instance between RUNNING and SUSPENDED, journaling why.
    pub async fn set_suspended(
        &self,
        id: InstanceId,
        suspend: bool,
        reason: String,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        self.write(move |db| {
            let transition = if suspend {
                Transition::Suspend
            } else {
                Transition::Resume
            };
            let (status, generation) = status_of(db, &id)?;
            if transition.apply(status).is_err() {
                return Err(JournalError::WrongStatus {
                    id,
                    status,
                    wanted: transition.sources()[0],
                });
            }
            apply_transition(db, &id, transition, now)?;
            let event = if suspend {
                Event::Suspended { reason }
            } else {
                Event::Resumed { reason }
            };
            insert_event(db, &id, generation, &event, now)?;
            Ok(())
        })
        .await
    }

    /// Terminates an instance and, recursively, its unfinished children. Returns every
    /// instance terminated.
    pub async fn terminate(
        &self,
        id: InstanceId,
        reason: String,
        now: Timestamp,
    ) -> Result<Vec<InstanceId>, JournalError> {
        let stops = std::sync::Arc::clone(&self.stops);
        self.write(move |db| {
            stops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (status, _) = status_of(db, &id)?;
            if status.is_terminal() {
                return Err(JournalError::NotRunning { id, status });
            }
            let mut done = Vec::new();
            terminate_tree(db, &id, &reason, now, &mut done)?;
            Ok(done)
        })
        .await
    }

    /// Deletes an instance and everything it owns in the journal (its children too).
    /// Refused for an instance that has not ended unless `force`.
    /// Without `force`, an instance with a child that still runs is refused too. Returns
    /// every instance deleted.
    pub async fn purge(
        &self,
        id: InstanceId,
        force: bool,
    ) -> Result<Vec<InstanceId>, JournalError> {
        let stops = std::sync::Arc::clone(&self.stops);
        self.write(move |db| {
            stops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (status, _) = status_of(db, &id)?;
            if !status.is_terminal() && !force {
                return Err(JournalError::StillRunning { id, status });
            }
            if !force && let Some((child, status)) = live_descendant(db, &id)? {
                return Err(JournalError::StillRunning { id: child, status });
            }
            let mut purged = Vec::new();
            purge_tree(db, &id, &mut purged)?;
            Ok(purged)
        })
        .await
    }

    /// Creates a tenant (idempotent).
    pub async fn create_tenant(
        &self,
        tenant: Tenant,
        now: Timestamp,
    ) -> Result<bool, JournalError> {
        self.write(move |db| {
            let n = db.execute(
                "INSERT INTO tenants (name, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![tenant.as_str(), now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Remembers that `tenant` has had an external worker connect.
    pub async fn mark_external_workers(&self, tenant: String) -> Result<(), JournalError> {
        self.write(move |db| {
            db.execute(
                "UPDATE tenants SET external_workers = 1 WHERE name = ?1",
                params![tenant],
            )?;
            Ok(())
        })
        .await
    }

    /// The tenants that have had an external worker connect.
    pub fn external_worker_tenants(&self) -> Result<Vec<String>, JournalError> {
        self.read(|db| {
            db.query_map(
                "SELECT name FROM tenants WHERE external_workers = 1",
                &[],
                |r| r.get::<String>(0),
            )
        })
    }

    /// Stores a token's hash with its tenant and scopes.
    pub async fn add_token(
        &self,
        hash: String,
        tenant: Tenant,
        scopes: Vec<String>,
        label: String,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        self.write(move |db| {
            db.execute(
                "INSERT INTO tokens (hash, tenant, scopes, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, tenant.as_str(), scopes.join(" "), label, now],
            )?;
            Ok(())
        })
        .await
    }

    /// Moves a live instance from component `from` to `to`, but only if its journal is
    /// still exactly what a compatibility check replayed: the same generation, and no
    /// entry after position `checked_upto`. Returns whether it moved. The activation
    /// running on `from` is fenced off by the same change, so no step of the old code
    /// lands after the check.
    pub async fn migrate_instance(
        &self,
        id: InstanceId,
        from: Digest,
        generation: u32,
        checked_upto: u64,
        to: Digest,
    ) -> Result<bool, JournalError> {
        self.write(move |db| {
            let last: Option<i64> = db.query_one(
                "SELECT max(pos) FROM history WHERE instance = ?1 AND generation = ?2",
                params![id.as_str(), generation],
                |r| r.get(0),
            )?;
            if last.and_then(|p| u64::try_from(p).ok()).unwrap_or(0) != checked_upto {
                return Ok(false);
            }
            let n = db.execute(
                "UPDATE instances SET component = ?2, idle_mark = NULL
                 WHERE id = ?1 AND component = ?3 AND generation = ?4
                   AND status IN ('PENDING', 'RUNNING', 'SUSPENDED')",
                params![id.as_str(), to.as_str(), from.as_str(), generation],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Pins a live instance to another component (tests of divergence; migrations go
    /// through [`Journal::migrate_instance`]).
    pub async fn set_instance_component(
        &self,
        id: InstanceId,
        digest: Digest,
    ) -> Result<(), JournalError> {
        self.write(move |db| {
            let n = db.execute(
                "UPDATE instances SET component = ?2, idle_mark = NULL
                 WHERE id = ?1 AND status IN ('PENDING', 'RUNNING', 'SUSPENDED')",
                params![id.as_str(), digest.as_str()],
            )?;
            if n == 1 {
                return Ok(());
            }
            let (status, _) = status_of(db, &id)?;
            Err(JournalError::NotRunning { id, status })
        })
        .await
    }
}

/// Moves an instance's status through `transition`, as the state machine decides, with a
/// write conditional on the status it was read in. Refused if the machine forbids it.
fn apply_transition(
    db: &Db<'_>,
    id: &InstanceId,
    transition: Transition,
    now: Timestamp,
) -> Result<RuntimeStatus, JournalError> {
    let (from, _) = status_of(db, id)?;
    let to = transition
        .apply(from)
        .map_err(|refused| JournalError::Refused {
            id: id.clone(),
            refused,
        })?;
    let n = db.execute(
        "UPDATE instances SET status = ?2, updated_at = ?3, idle_mark = NULL
         WHERE id = ?1 AND status = ?4",
        params![id.as_str(), to.as_str(), now, from.as_str()],
    )?;
    if n != 1 {
        return Err(JournalError::Refused {
            id: id.clone(),
            refused: crate::model::Refused { from, transition },
        });
    }
    Ok(to)
}

fn children_of(db: &Db<'_>, id: &InstanceId) -> Result<Vec<InstanceId>, JournalError> {
    // Collected in full before the caller recurses or runs anything else: with
    // PostgreSQL no other statement may run while rows are still being read.
    db.query_map(
        "SELECT id FROM instances WHERE parent_id = ?1",
        params![id.as_str()],
        |r| InstanceId::from_key(r.get::<String>(0)?).map_err(JournalError::Corrupt),
    )
}

fn terminate_tree(
    db: &Db<'_>,
    id: &InstanceId,
    reason: &str,
    now: Timestamp,
    done: &mut Vec<InstanceId>,
) -> Result<(), JournalError> {
    let (status, generation) = status_of(db, id)?;
    if Transition::Terminate.apply(status).is_err() {
        return Ok(());
    }
    apply_transition(db, id, Transition::Terminate, now)?;
    let error = ErrorInfo::new("terminated", reason);
    db.execute(
        "UPDATE instances SET error = ?2 WHERE id = ?1",
        params![id.as_str(), serde_json::to_string(&error)?],
    )?;
    db.execute(
        "DELETE FROM timers WHERE instance = ?1",
        params![id.as_str()],
    )?;
    db.execute(
        "DELETE FROM activity_queue WHERE instance = ?1",
        params![id.as_str()],
    )?;
    insert_event(
        db,
        id,
        generation,
        &Event::WorkflowTerminated {
            reason: reason.to_owned(),
        },
        now,
    )?;
    done.push(id.clone());
    for child in children_of(db, id)? {
        terminate_tree(db, &child, reason, now, done)?;
    }
    Ok(())
}

/// A child (or grandchild, ...) of `id` that has not ended, if any.
fn live_descendant(
    db: &Db<'_>,
    id: &InstanceId,
) -> Result<Option<(InstanceId, RuntimeStatus)>, JournalError> {
    for child in children_of(db, id)? {
        let (status, _) = status_of(db, &child)?;
        if !status.is_terminal() {
            return Ok(Some((child, status)));
        }
        if let Some(live) = live_descendant(db, &child)? {
            return Ok(Some(live));
        }
    }
    Ok(None)
}

fn purge_tree(
    db: &Db<'_>,
    id: &InstanceId,
    purged: &mut Vec<InstanceId>,
) -> Result<(), JournalError> {
    for child in children_of(db, id)? {
        purge_tree(db, &child, purged)?;
    }
    for sql in [
        "DELETE FROM history WHERE instance = ?1",
        "DELETE FROM timers WHERE instance = ?1",
        "DELETE FROM activity_queue WHERE instance = ?1",
    ] {
        db.execute(sql, params![id.as_str()])?;
    }
    if db.execute("DELETE FROM instances WHERE id = ?1", params![id.as_str()])? == 1 {
        purged.push(id.clone());
    }
    Ok(())
}
