//! The writes of running instances — creation, steps, ends of generations, activity
//! results, timers firing, raised events — each one step of the group-commit transaction.
//! (The control plane's writes are in `control`.)
//!
//! Writes derive the bookkeeping rows from the events they append: an `ActivityScheduled`
//! event also queues the activity, a `TimerCreated` event also stores the timer, a
//! `ChildScheduled` event also creates the child instance. So a step and the work it
//! schedules commit together or not at all.

use std::collections::HashMap;

use super::sql::{Db, Dialect, params};
use super::{Journal, JournalError, QueuedActivity};
use crate::model::{
    Digest, ErrorInfo, Event, InstanceId, Outcome, RuntimeStatus, Timestamp, Transition,
};

/// A new top-level or child instance.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub id: InstanceId,
    pub workflow: String,
    pub component: Digest,
    pub input: String,
    /// The tenant's pending, running or suspended instances may not exceed this.
    pub max_live: u64,
    /// When its workflow first runs; `None` for at once.
    pub start_at: Option<Timestamp>,
    /// The W3C `traceparent` of the request (or the parent's run) that started it, for
    /// its spans.
    pub traceparent: Option<String>,
}

/// What a workflow produced since its last write: commands, decisions, custom status.
#[derive(Debug, Default)]
pub struct StepWrite {
    pub events: Vec<Event>,
    pub custom_status: Option<String>,
    /// Components for the children this step starts, by `ChildScheduled` seq.
    pub child_components: Vec<(u32, Digest)>,
    /// The tenant's live-instance limit, for the children this step starts.
    pub max_live_instances: u64,
    /// The `traceparent` of the run that starts children in this step (traces on): the
    /// children's runs nest under it.
    pub child_traceparent: Option<String>,
    /// How many distinct history entries of its generation the activation had taken in
    /// before this step, when the workflow is about to wait for what it asked for. With
    /// the entries the step writes, recorded in the instance's `idle_mark`: a restart
    /// finding the journal holds no more than that leaves the instance waiting in the
    /// journal (see [`Journal::running_instances`]).
    pub seen: Option<u64>,
}

/// What creating an instance wrote: the life of the id and the position of its
/// `workflow_started` entry.
#[derive(Debug, Clone, Copy)]
pub struct Created {
    pub incarnation: i64,
    pub started_pos: u64,
}

/// Entries a write added on its own, with their positions.
pub type Derived = Vec<(u64, Event)>;

/// What a step's write did.
#[derive(Debug)]
pub struct StepWritten {
    /// Entries the write added for the instance on its own (a child it could not start,
    /// answered with a failure), with their positions.
    pub derived: Derived,
    /// The positions of the step's own entries, as written.
    pub positions: Vec<u64>,
    /// The journal's count of writes that stop activities, as of this write.
    pub stops: u64,
}

/// How a generation ends.
#[derive(Debug)]
pub enum Finish {
    Completed(String),
    Failed(ErrorInfo),
    Stalled(String),
    /// Start the next generation with `input`. With `keep_events`, the raised events the
    /// workflow never consumed move to it: every event of the generation in the journal
    /// (also those still on their way to the activation) except the first `consumed[name]`
    /// of each name, which the workflow took.
    ContinueAsNew {
        input: String,
        keep_events: bool,
        consumed: HashMap<String, u32>,
    },
}

/// What an activation believes about its instance, checked in the same transaction as
/// each of its writes: the instance is RUNNING, in this generation, on this component.
/// Anything else means the instance moved on (terminated, suspended, continued, migrated
/// or purged) and the write is refused with [`JournalError::Fenced`]: nothing of it is
/// journaled, so nothing it asked for is dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub generation: u32,
    pub component: Digest,
    pub incarnation: i64,
    /// On a shared journal, the epoch of the partition's lease the activation loaded its
    /// history under: a host that lost the lease and took it back since must not write
    /// from what it loaded before.
    pub lease_epoch: Option<i64>,
}

/// A child's result, appended to its parent's history when the child ends.
#[derive(Debug, Clone)]
pub struct ParentNotice {
    pub parent: InstanceId,
    pub generation: u32,
    pub pos: u64,
    pub event: Event,
}

impl Journal {
    /// Creates an instance and its first `WorkflowStarted` event.
    pub async fn create_instance(
        &self,
        new: NewInstance,
        now: Timestamp,
    ) -> Result<Created, JournalError> {
        let new = std::sync::Arc::new(new);
        self.write_retrying(move || {
            let new = std::sync::Arc::clone(&new);
            move |db: &Db<'_>| insert_instance(db, &new, None, now)
        })
        .await
    }

    /// Appends a step's events (and the rows they imply). Returns the completions the
    /// write itself produced (a child that could not be created), with their positions.
    /// Refused with [`JournalError::Fenced`] when the instance is no longer what `fence`
    /// says. Also returns [`Journal::stops`] as the step saw it.
    pub async fn append_step(
        &self,
        id: InstanceId,
        fence: Fence,
        step: StepWrite,
        now: Timestamp,
    ) -> Result<StepWritten, JournalError> {
        self.injected_fault()?;
        let stops = std::sync::Arc::clone(&self.stops);
        let lease = self.lease_at(&id, fence.lease_epoch)?;
        let key = id.clone();
        self.write_for(
            Some(&key),
            move |db| {
                lease.check(db, &id)?;
                let stops = stops.load(std::sync::atomic::Ordering::SeqCst);
                let (derived, positions) = append_step(db, &id, &fence, step, now)?;
                Ok(StepWritten {
                    derived,
                    positions,
                    stops,
                })
            },
            |_: &_| {},
        )
        .await
    }

    /// Records a failed attempt and when the next one is due. `None` if the activity is no
    /// longer queued (its generation ended).
    pub async fn activity_attempt_failed(
        &self,
        job: QueuedActivity,
        error: ErrorInfo,
        retry_at: Timestamp,
        now: Timestamp,
    ) -> Result<Option<u64>, JournalError> {
        let lease = self.lease(&job.instance)?;
        let key = job.instance.clone();
        self.write_for(
            Some(&key),
            move |db| {
                lease.check(db, &job.instance)?;
                let updated = db.execute(
                    "UPDATE activity_queue SET attempt = ?4, due_at = ?5
                 WHERE instance = ?1 AND generation = ?2 AND seq = ?3 AND incarnation = ?6",
                    params![
                        job.instance.as_str(),
                        job.generation,
                        job.seq,
                        job.attempt + 1,
                        retry_at,
                        job.incarnation
                    ],
                )?;
                if updated == 0 {
                    return Ok(None);
                }
                let event = Event::ActivityAttemptFailed {
                    seq: job.seq,
                    attempt: job.attempt,
                    error,
                    retry_at,
                };
                insert_event(db, &job.instance, job.generation, &event, now).map(Some)
            },
            |_: &_| {},
        )
        .await
    }

    /// Records an activity's final result. `None` if it is no longer queued.
    pub async fn complete_activity(
        &self,
        job: &QueuedActivity,
        result: Outcome,
        now: Timestamp,
    ) -> Result<Option<(u64, Event)>, JournalError> {
        let (id, generation, seq, attempts, incarnation) = (
            job.instance.clone(),
            job.generation,
            job.seq,
            job.attempt,
            job.incarnation,
        );
        let lease = self.lease(&id)?;
        let key = id.clone();
        self.write_for(
            Some(&key),
            move |db| {
                lease.check(db, &id)?;
                let deleted = db.execute(
                    "DELETE FROM activity_queue
                 WHERE instance = ?1 AND generation = ?2 AND seq = ?3 AND incarnation = ?4",
                    params![id.as_str(), generation, seq, incarnation],
                )?;
                if deleted == 0 {
                    return Ok(None);
                }
                let event = Event::ActivityCompleted {
                    seq,
                    attempts,
                    result,
                };
                let pos = insert_event(db, &id, generation, &event, now)?;
                Ok(Some((pos, event)))
            },
            |_: &_| {},
        )
        .await
    }

    /// Records that a timer fired. `None` if it was already fired or its generation ended.
    pub async fn fire_timer(
        &self,
        id: InstanceId,
        generation: u32,
        seq: u32,
        now: Timestamp,
    ) -> Result<Option<(u64, Event)>, JournalError> {
        let lease = self.lease(&id)?;
        let key = id.clone();
        self.write_for(
            Some(&key),
            move |db| {
                lease.check(db, &id)?;
                let deleted = db.execute(
                    "DELETE FROM timers WHERE instance = ?1 AND generation = ?2 AND seq = ?3",
                    params![id.as_str(), generation, seq],
                )?;
                if deleted == 0 {
                    return Ok(None);
                }
                let event = Event::TimerFired { seq };
                let pos = insert_event(db, &id, generation, &event, now)?;
                Ok(Some((pos, event)))
            },
            |_: &_| {},
        )
        .await
    }

    /// Appends a raised event to a live instance; returns its generation and position.
    /// `on_commit` gets them on the writer thread as soon as the event is durable, in
    /// commit order: deliveries made there reach an instance in journal order.
    pub async fn raise_event(
        &self,
        id: InstanceId,
        event: Event,
        data: String,
        now: Timestamp,
        bounds: EventBounds,
        on_commit: impl FnOnce(&(u32, u64, Event)) + Send + 'static,
    ) -> Result<(u32, u64, Event), JournalError> {
        let shared = std::sync::Arc::new((id, event, data, bounds));
        let hook = std::sync::Arc::new(std::sync::Mutex::new(Some(on_commit)));
        let key = shared.0.clone();
        self.retrying(|| {
            let shared = std::sync::Arc::clone(&shared);
            let hook = std::sync::Arc::clone(&hook);
            self.write_for(
                Some(&key),
                move |db| {
                    let (id, event, data, bounds) = &*shared;
                    let row: Option<(String, u32)> = db.query_opt(
                        // FOR UPDATE: two hosts raising to one instance take turns, so
                        // positions are given in commit order (SQLite has one writer).
                        match db.dialect() {
                            super::sql::Dialect::Sqlite => {
                                "SELECT status, generation FROM instances WHERE id = ?1"
                            }
                            super::sql::Dialect::Postgres => {
                                "SELECT status, generation FROM instances WHERE id = ?1 FOR UPDATE"
                            }
                        },
                        params![id.as_str()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    let Some((status, generation)) = row else {
                        return Err(JournalError::InstanceNotFound(id.clone()));
                    };
                    let status: RuntimeStatus = status.parse().map_err(JournalError::Corrupt)?;
                    if !status.accepts_deliveries() {
                        return Err(JournalError::NotRunning {
                            id: id.clone(),
                            status,
                        });
                    }
                    // Serialised before it reached this thread: a megabyte payload is not
                    // escaped while every other write waits.
                    bounds.check(db, id, generation, data.len() as u64)?;
                    let pos = insert_data(db, id, generation, event, data, now)?;
                    Ok((generation, pos, event.clone()))
                },
                move |written: &(u32, u64, Event)| {
                    if let Some(hook) = hook.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        hook(written);
                    }
                },
            )
        })
        .await
    }

    /// Runs a write made by `attempt` again when the database chose it as a deadlock's
    /// victim or could not serialise it (several hosts on PostgreSQL lock rows in
    /// different orders); at most [`RETRIES`] times.
    async fn retrying<T, Fut>(&self, attempt: impl Fn() -> Fut) -> Result<T, JournalError>
    where
        Fut: std::future::Future<Output = Result<T, JournalError>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(JournalError::Storage(why)) if tries < RETRIES && retryable(&why) => {
                    tries += 1;
                    tracing::debug!(%why, tries, "journal: trying a write again");
                }
                outcome => return outcome,
            }
        }
    }

    async fn write_retrying<T, F>(&self, make: impl Fn() -> F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, JournalError> + Send + 'static,
    {
        self.retrying(|| self.write(make())).await
    }

    /// Ends a generation: appends the workflow's last events and either finishes the
    /// instance (telling its parent, if any) or starts its next generation. Refused with
    /// [`JournalError::Fenced`] when the instance is no longer what `fence` says.
    pub async fn finish(
        &self,
        id: InstanceId,
        fence: Fence,
        last: Vec<Event>,
        custom_status: Option<String>,
        finish: Finish,
        now: Timestamp,
    ) -> Result<Option<ParentNotice>, JournalError> {
        self.injected_fault()?;
        let stops = std::sync::Arc::clone(&self.stops);
        let lease = self.lease_at(&id, fence.lease_epoch)?;
        let key = id.clone();
        self.write_for(
            Some(&key),
            move |db| {
                lease.check(db, &id)?;
                let (notice, abandoned) =
                    finish_generation(db, &id, &fence, last, custom_status, finish, now)?;
                if abandoned {
                    // Queued activities were cancelled: they must not start now.
                    stops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(notice)
            },
            |_: &_| {},
        )
        .await
    }
}

/// Most times a write is tried again after a deadlock or a serialisation failure.
const RETRIES: u32 = 5;

/// Whether a storage error is PostgreSQL's deadlock (40P01) or serialisation (40001)
/// failure, after which the same write may well succeed.
fn retryable(why: &str) -> bool {
    why.starts_with("40P01") || why.starts_with("40001")
}

pub(super) fn status_of(
    db: &Db<'_>,
    id: &InstanceId,
) -> Result<(RuntimeStatus, u32), JournalError> {
    // On PostgreSQL the row is locked as it is read, so what is decided from it (the
    // generation an event of a control write goes to) still holds when it is written.
    let sql = match db.dialect() {
        Dialect::Sqlite => "SELECT status, generation FROM instances WHERE id = ?1",
        Dialect::Postgres => "SELECT status, generation FROM instances WHERE id = ?1 FOR UPDATE",
    };
    let row: Option<(String, u32)> =
        db.query_opt(sql, params![id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let Some((status, generation)) = row else {
        return Err(JournalError::InstanceNotFound(id.clone()));
    };
    Ok((status.parse().map_err(JournalError::Corrupt)?, generation))
}

/// The mark of an activation gone back to waiting with `seen` entries of its generation
/// taken in: what `Journal::running_instances` compares with the instance's row.
pub(super) fn idle_mark(fence: &Fence, seen: u64) -> String {
    format!(
        "{} {} {} {seen}",
        fence.generation,
        fence.incarnation,
        fence.component.as_str()
    )
}

/// The write every activation write starts with: the instance's row is updated (a step:
/// `updated_at` and the custom status; the end of a generation: also its status, output
/// and error) only if the instance is still RUNNING in the fence's generation, component
/// and incarnation — one conditional update, so a racing terminate, suspend, migration or
/// purge wins cleanly. Refused with [`JournalError::Fenced`], naming why, otherwise.
fn fenced_update(
    db: &Db<'_>,
    id: &InstanceId,
    fence: &Fence,
    end: Option<(Transition, Option<&str>, Option<&str>)>,
    custom_status: Option<&str>,
    idle_mark: Option<String>,
    now: Timestamp,
) -> Result<(), JournalError> {
    let from = RuntimeStatus::Running;
    // A step keeps the instance RUNNING; its output and error are still NULL.
    let (transition, output, error) = end.unwrap_or((Transition::Step, None, None));
    let to = transition
        .apply(from)
        .map_err(|refused| JournalError::Refused {
            id: id.clone(),
            refused,
        })?;
    let n = db.execute(
        "UPDATE instances SET status = ?8, output = ?9, error = ?10,
                custom_status = coalesce(?2, custom_status), updated_at = ?3, idle_mark = ?11
         WHERE id = ?1 AND status = ?4 AND generation = ?5 AND component = ?6
           AND incarnation = ?7",
        params![
            id.as_str(),
            custom_status,
            now,
            from.as_str(),
            fence.generation,
            fence.component.as_str(),
            fence.incarnation,
            to.as_str(),
            output,
            error,
            idle_mark
        ],
    )?;
    if n == 1 {
        // The update locked the row: the history inserts that follow need not again.
        if db.dialect() == Dialect::Postgres {
            db.first_in_transaction(&format!("row {id}"));
        }
        return Ok(());
    }
    check_fence(db, id, fence)?;
    Err(JournalError::Fenced {
        id: id.clone(),
        why: "its row did not match".into(),
    })
}

/// Why an activation's view of the instance is out of date, as a [`JournalError::Fenced`].
fn check_fence(db: &Db<'_>, id: &InstanceId, fence: &Fence) -> Result<(), JournalError> {
    let row: Option<(String, u32, String, i64)> = db.query_opt(
        "SELECT status, generation, component, incarnation FROM instances WHERE id = ?1",
        params![id.as_str()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let why = match row {
        None => "it was purged".to_owned(),
        Some((_, _, _, incarnation)) if incarnation != fence.incarnation => {
            "it was purged and its id reused".to_owned()
        }
        Some((status, generation, component, _)) => {
            let status: RuntimeStatus = status.parse().map_err(JournalError::Corrupt)?;
            if !status.runs() {
                format!("it is {status}")
            } else if generation != fence.generation {
                format!("it moved on to generation {generation}")
            } else if component != fence.component.as_str() {
                "it was migrated to another version".to_owned()
            } else {
                return Ok(());
            }
        }
    };
    Err(JournalError::Fenced {
        id: id.clone(),
        why,
    })
}

/// How many raised events an instance may hold: those its workflow has not waited for
/// yet, and the bytes of all raised in the current generation (carried events included).
#[derive(Debug, Clone, Copy)]
pub struct EventBounds {
    pub max_pending: u64,
    pub max_bytes: u64,
}

impl EventBounds {
    /// Fails with [`JournalError::TooManyEvents`] if an event of `size` bytes would go
    /// over a bound.
    fn check(
        &self,
        db: &Db<'_>,
        id: &InstanceId,
        generation: u32,
        size: u64,
    ) -> Result<(), JournalError> {
        // Per event name: raised minus waited for (a wait takes the oldest of its name).
        // Read from the covering index `history_event_load`: no payload is touched.
        // The sums are cast (PostgreSQL sums BIGINTs to NUMERIC), and the subquery is named
        // (PostgreSQL 15 requires it).
        let (pending, bytes): (i64, i64) = db.query_one(
            "SELECT CAST(coalesce(sum(CASE WHEN raised - waits > 0 THEN raised - waits ELSE 0 END),
                                  0) AS BIGINT),
                    CAST(coalesce(sum(bytes), 0) AS BIGINT)
             FROM (
                 SELECT sum(CASE WHEN kind = 'event_raised' THEN 1 ELSE 0 END) AS raised,
                        sum(CASE WHEN kind = 'event_wait_started' THEN 1 ELSE 0 END) AS waits,
                        sum(CASE WHEN kind = 'event_raised' THEN size ELSE 0 END) AS bytes
                 FROM history
                 WHERE instance = ?1 AND generation = ?2
                   AND kind IN ('event_raised', 'event_wait_started')
                 GROUP BY name) AS per_name",
            params![id.as_str(), generation],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let pending = pending as u64;
        let why = if pending >= self.max_pending {
            format!(
                "{pending} events its workflow has not waited for, its limit \
                 (limits.max_pending_events)"
            )
        } else if bytes as u64 + size > self.max_bytes {
            format!(
                "{bytes} bytes of events in this generation and this one adds {size}, over \
                 its limit of {} (limits.max_event_bytes_per_generation)",
                self.max_bytes
            )
        } else {
            return Ok(());
        };
        Err(JournalError::TooManyEvents {
            id: id.clone(),
            why,
        })
    }
}

pub(super) fn insert_event(
    db: &Db<'_>,
    id: &InstanceId,
    generation: u32,
    event: &Event,
    now: Timestamp,
) -> Result<u64, JournalError> {
    let data = serde_json::to_string(event)?;
    insert_data(db, id, generation, event, &data, now)
}

/// Appends `event`, already serialised as `data`.
fn insert_data(
    db: &Db<'_>,
    id: &InstanceId,
    generation: u32,
    event: &Event,
    data: &str,
    now: Timestamp,
) -> Result<u64, JournalError> {
    // Raised events and event waits carry their name and size outside the payload, for
    // the bound on what an instance holds (see `EventBounds`).
    let name = match event {
        Event::EventRaised { name, .. } | Event::EventWaitStarted { name, .. } => {
            Some(name.as_str())
        }
        _ => None,
    };
    if db.dialect() == Dialect::Postgres && db.first_in_transaction(&format!("row {id}")) {
        // Positions come from a sequence when a row is inserted, not when it commits: with
        // several hosts writing one instance's history, each insert takes the instance's
        // row first, so its positions are given (and become visible) in commit order.
        db.query_opt(
            "SELECT 1 FROM instances WHERE id = ?1 FOR UPDATE",
            params![id.as_str()],
            |r| r.get::<i64>(0),
        )?;
    }
    let pos: i64 = db.query_one(
        "INSERT INTO history (instance, generation, kind, seq, data, at, name, size)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         RETURNING pos",
        params![
            id.as_str(),
            generation,
            event.kind(),
            event.command_seq(),
            data,
            now,
            name,
            data.len() as i64
        ],
        |r| r.get(0),
    )?;
    Ok(pos as u64)
}

fn insert_instance(
    db: &Db<'_>,
    new: &NewInstance,
    parent: Option<(&InstanceId, u32, u32)>,
    now: Timestamp,
) -> Result<Created, JournalError> {
    // On SQLite `tenant_load` is kept by triggers on `instances` (schema migration 3).
    // On PostgreSQL one counter row per tenant would be locked by every start and every
    // end on every host, and deadlock their group commits: the live instances are counted
    // (by index), and hosts starting at once may overshoot the limit by what each adds
    // in one commit.
    let live: i64 = match db.dialect() {
        Dialect::Sqlite => db
            .query_opt(
                "SELECT live FROM tenant_load WHERE tenant = ?1",
                params![new.id.tenant()],
                |r| r.get(0),
            )?
            .unwrap_or(0),
        Dialect::Postgres => db.query_one(
            "SELECT count(*) FROM instances
             WHERE tenant = ?1 AND status IN ('PENDING', 'RUNNING', 'SUSPENDED')",
            params![new.id.tenant()],
            |r| r.get(0),
        )?,
    };
    if u64::try_from(live).unwrap_or(0) >= new.max_live {
        return Err(JournalError::TooManyInstances {
            tenant: new.id.tenant().to_owned(),
            limit: new.max_live,
        });
    }
    // Started for later: PENDING until its start time (see `Journal::start_pending`).
    let status = if new.start_at.is_some_and(|at| at > now) {
        RuntimeStatus::Pending
    } else {
        RuntimeStatus::Running
    };
    // A new life for the id, unlike any before it (ids can be reused after a purge).
    let incarnation = getrandom::u64()
        .map_err(|e| JournalError::Storage(format!("no system randomness: {e}")))?
        as i64;
    let inserted = db.execute(
        "INSERT INTO instances
         (id, workflow, component, status, generation, input, parent_id, parent_gen, parent_seq,
          created_at, updated_at, tenant, start_at, incarnation, traceparent, partition)
         VALUES (?1, ?2, ?3, ?12, 0, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?13, ?14)
         ON CONFLICT DO NOTHING",
        params![
            new.id.as_str(),
            new.workflow,
            new.component.as_str(),
            new.input,
            parent.map(|p| p.0.as_str()),
            parent.map(|p| p.1),
            parent.map(|p| p.2),
            now,
            new.id.tenant(),
            new.start_at,
            incarnation,
            status.as_str(),
            new.traceparent,
            super::leases::partition_of(new.id.as_str()),
        ],
    )?;
    if inserted == 0 {
        return Err(JournalError::InstanceExists(new.id.clone()));
    }
    let started = Event::WorkflowStarted {
        workflow: new.workflow.clone(),
        input: new.input.clone(),
    };
    let started_pos = insert_event(db, &new.id, 0, &started, now)?;
    Ok(Created {
        incarnation,
        started_pos,
    })
}

fn append_step(
    db: &Db<'_>,
    id: &InstanceId,
    fence: &Fence,
    step: StepWrite,
    now: Timestamp,
) -> Result<(Derived, Vec<u64>), JournalError> {
    let generation = fence.generation;
    // Counted as if every entry is written; corrected below if one is not.
    let idle_mark = step
        .seen
        .map(|seen| idle_mark(fence, seen + step.events.len() as u64));
    let marked = idle_mark.is_some();
    fenced_update(
        db,
        id,
        fence,
        None,
        step.custom_status.as_deref(),
        idle_mark,
        now,
    )?;
    let mut positions = Vec::with_capacity(step.events.len());
    let mut extra = Vec::new();
    for event in &step.events {
        if let Event::ActivityCompleted { seq, .. } = event {
            // A result the instance carried into this step: journaled only if its queue
            // row is still there, as `complete_activity` does. It is gone if another
            // path journaled the result first (a host that ran it before a lease moved,
            // or the result written on its own) or the activity was cancelled.
            let deleted = db.execute(
                "DELETE FROM activity_queue WHERE instance = ?1 AND generation = ?2 AND seq = ?3",
                params![id.as_str(), generation, seq],
            )?;
            if deleted == 0 {
                continue;
            }
        }
        positions.push(insert_event(db, id, generation, event, now)?);
        match event {
            Event::ActivityScheduled {
                seq,
                name,
                input,
                retry,
            } => {
                let retry = retry.as_ref().map(serde_json::to_string).transpose()?;
                db.execute(
                    "INSERT INTO activity_queue
                     (instance, generation, seq, name, input, retry, attempt, due_at, first_at,
                      incarnation)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7, ?8)",
                    params![
                        id.as_str(),
                        generation,
                        seq,
                        name,
                        input,
                        retry,
                        now,
                        fence.incarnation
                    ],
                )?;
            }
            Event::TimerCreated { seq, fire_at, .. } => {
                db.execute(
                    "INSERT INTO timers (instance, generation, seq, fire_at) VALUES (?1, ?2, ?3, ?4)",
                    params![id.as_str(), generation, seq, fire_at],
                )?;
            }
            Event::ChildScheduled {
                seq,
                name,
                input,
                instance_id,
            } => {
                // The engine passes a component only for children it could resolve; the
                // others were already answered with a failure in the same step.
                let Some((_, digest)) = step.child_components.iter().find(|(s, _)| s == seq) else {
                    continue;
                };
                let child =
                    InstanceId::from_key(instance_id.clone()).map_err(JournalError::Corrupt)?;
                let new = NewInstance {
                    id: child.clone(),
                    workflow: name.clone(),
                    component: digest.clone(),
                    input: input.clone(),
                    max_live: step.max_live_instances,
                    start_at: None,
                    traceparent: step.child_traceparent.clone(),
                };
                match insert_instance(db, &new, Some((id, generation, *seq)), now) {
                    Ok(_) => {}
                    Err(JournalError::InstanceExists(_)) => extra.push(Event::ChildCompleted {
                        seq: *seq,
                        result: Err(ErrorInfo::new(
                            "instance_exists",
                            format!("cannot start child: instance '{child}' already exists"),
                        )),
                    }),
                    Err(e @ JournalError::TooManyInstances { .. }) => {
                        extra.push(Event::ChildCompleted {
                            seq: *seq,
                            result: Err(ErrorInfo::new(
                                "instance_quota",
                                format!("cannot start child '{child}': {e}"),
                            )),
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => {}
        }
    }
    let mut derived = Vec::with_capacity(extra.len());
    for event in extra {
        derived.push((insert_event(db, id, generation, &event, now)?, event));
    }
    if marked && (positions.len() != step.events.len() || !derived.is_empty()) {
        // A carried result another path had journaled, or an answer the workflow has
        // still to see: it is not known to be waiting with everything taken in.
        db.execute(
            "UPDATE instances SET idle_mark = NULL WHERE id = ?1",
            params![id.as_str()],
        )?;
    }
    Ok((derived, positions))
}

fn finish_generation(
    db: &Db<'_>,
    id: &InstanceId,
    fence: &Fence,
    last: Vec<Event>,
    custom_status: Option<String>,
    finish: Finish,
    now: Timestamp,
) -> Result<(Option<ParentNotice>, bool), JournalError> {
    let generation = fence.generation;
    let custom_status = custom_status.as_deref();
    for event in &last {
        insert_event(db, id, generation, event, now)?;
    }
    // Work the ended generation scheduled but never awaited is abandoned with it.
    db.execute(
        "DELETE FROM timers WHERE instance = ?1",
        params![id.as_str()],
    )?;
    let abandoned = db.execute(
        "DELETE FROM activity_queue WHERE instance = ?1",
        params![id.as_str()],
    )? > 0;

    let (transition, output, error, result, event) = match finish {
        Finish::ContinueAsNew {
            input,
            keep_events,
            consumed,
        } => {
            let end = (Transition::ContinueAsNew, None, None);
            fenced_update(db, id, fence, Some(end), custom_status, None, now)?;
            let keep = if keep_events {
                unconsumed_events(db, id, generation, &consumed)?
            } else {
                Vec::new()
            };
            start_next_generation(db, id, generation, &input, &keep, now)?;
            return Ok((None, abandoned));
        }
        Finish::Completed(output) => (
            Transition::Complete,
            Some(output.clone()),
            None,
            Some(Ok(output.clone())),
            Event::WorkflowCompleted { output },
        ),
        Finish::Failed(error) => (
            Transition::Fail,
            None,
            Some(serde_json::to_string(&error)?),
            Some(Err(error.clone())),
            Event::WorkflowFailed { error },
        ),
        Finish::Stalled(reason) => (
            Transition::Stall,
            None,
            Some(serde_json::to_string(&ErrorInfo::new(
                "stalled",
                reason.clone(),
            ))?),
            None,
            Event::WorkflowStalled { reason },
        ),
    };
    insert_event(db, id, generation, &event, now)?;
    let end = (transition, output.as_deref(), error.as_deref());
    fenced_update(db, id, fence, Some(end), custom_status, None, now)?;

    let Some(result) = result else {
        return Ok((None, abandoned));
    };
    let parent: Option<(Option<String>, Option<u32>, Option<u32>)> = db.query_opt(
        "SELECT parent_id, parent_gen, parent_seq FROM instances WHERE id = ?1",
        params![id.as_str()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let Some((Some(parent), Some(parent_gen), Some(parent_seq))) = parent else {
        return Ok((None, abandoned));
    };
    let parent = InstanceId::from_key(parent).map_err(JournalError::Corrupt)?;
    // Locked as read on PostgreSQL: another host's continue-as-new or termination of the
    // parent waits, so the result goes to the generation read here.
    let sql = match db.dialect() {
        Dialect::Sqlite => "SELECT generation, status FROM instances WHERE id = ?1",
        Dialect::Postgres => "SELECT generation, status FROM instances WHERE id = ?1 FOR UPDATE",
    };
    let current: Option<(u32, String)> = db.query_opt(sql, params![parent.as_str()], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    // A suspended parent keeps its child's result too: it is delivered on resume.
    let accepts = |status: &str| {
        status
            .parse::<RuntimeStatus>()
            .is_ok_and(RuntimeStatus::accepts_deliveries)
    };
    match current {
        Some((g, status)) if g == parent_gen && accepts(&status) => {
            let event = Event::ChildCompleted {
                seq: parent_seq,
                result,
            };
            let pos = insert_event(db, &parent, parent_gen, &event, now)?;
            Ok((
                Some(ParentNotice {
                    parent,
                    generation: parent_gen,
                    pos,
                    event,
                }),
                abandoned,
            ))
        }
        _ => Ok((None, abandoned)),
    }
}

/// The positions of the generation's raised events that the workflow did not consume:
/// per name, all but the first `consumed[name]` in journal order (consumption is
/// first-in, first-out per name). Read from the journal, so events committed but not yet
/// delivered to the activation are kept too.
fn unconsumed_events(
    db: &Db<'_>,
    id: &InstanceId,
    generation: u32,
    consumed: &HashMap<String, u32>,
) -> Result<Vec<u64>, JournalError> {
    let mut taken: HashMap<String, u32> = HashMap::new();
    let mut keep = Vec::new();
    db.for_each(
        "SELECT pos, data FROM history
         WHERE instance = ?1 AND generation = ?2 AND kind = 'event_raised' ORDER BY pos",
        params![id.as_str(), generation],
        |r| {
            let (pos, data) = (r.get::<i64>(0)?, r.get::<String>(1)?);
            let Event::EventRaised { name, .. } = serde_json::from_str(&data)? else {
                return Err(JournalError::Corrupt(format!(
                    "history row {pos} is not a raised event"
                )));
            };
            let seen = taken.entry(name.clone()).or_default();
            if *seen < consumed.get(&name).copied().unwrap_or(0) {
                *seen += 1;
            } else {
                keep.push(pos as u64);
            }
            Ok(true)
        },
    )?;
    Ok(keep)
}

fn start_next_generation(
    db: &Db<'_>,
    id: &InstanceId,
    generation: u32,
    input: &str,
    keep_events: &[u64],
    now: Timestamp,
) -> Result<(), JournalError> {
    let next = generation + 1;
    // Carried-over events move to the next generation; they keep their positions, so
    // their order is kept. Everything else of the old generation goes.
    for pos in keep_events {
        db.execute(
            "UPDATE history SET generation = ?3 WHERE pos = ?1 AND instance = ?2 AND kind = 'event_raised'",
            params![*pos as i64, id.as_str(), next],
        )?;
    }
    db.execute(
        "DELETE FROM history WHERE instance = ?1 AND generation <= ?2",
        params![id.as_str(), generation],
    )?;
    db.execute(
        "UPDATE instances SET generation = ?2, input = ?3, updated_at = ?4, idle_mark = NULL
         WHERE id = ?1",
        params![id.as_str(), next, input, now],
    )?;
    let workflow: String = db.query_one(
        "SELECT workflow FROM instances WHERE id = ?1",
        params![id.as_str()],
        |r| r.get(0),
    )?;
    let started = Event::WorkflowStarted {
        workflow,
        input: input.to_owned(),
    };
    insert_event(db, id, next, &started, now)?;
    Ok(())
}
