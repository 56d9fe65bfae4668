//! One instance running inside wasmtime: the WIT host functions and the replay logic.
//! (`run.rs` drives an activation from generation to generation.)
//!
//! An activation loads the instance's current generation from the journal and runs the
//! workflow from the start. While the workflow re-issues requests the journal already
//! holds, it is **replaying**: each request is compared with the recorded one at the same
//! position and answered from the journal. Past the end of the journal it runs **live**:
//! new requests are buffered and written in one transaction when the workflow next
//! blocks, and only then is the work they ask for started.
//!
//! A workflow that blocks on a task that is not finished is suspended inside the host
//! function (its wasmtime fiber parks) until a delivery arrives in its mailbox. So a live
//! instance stays resident and never replays; replay happens only after a restart or an
//! eviction.
//!
//! ## Determinism
//! - `when-any` records which task won; a replay returns the recorded winner.
//! - `now()` is journaled; `random`/`new-guid` come from a generator seeded by the
//!   instance id and generation.
//! - Raised events are consumed first-in, first-out per name, and only when the workflow
//!   observes a wait finishing, so the k-th consumption of a name always takes the k-th
//!   event of that name in the journal.

mod host;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;
use wasmtime::component::{Resource, ResourceTable};

use super::limits::LimitExceeded;
use super::work::WorkGuard;
use super::{Shared, random::SplitMix64};
use crate::journal::{Fence, JournalError, QueuedActivity, StepWrite, StoredEvent};
use crate::model::{Digest, Event, InstanceId, Outcome, Tenant, Timestamp};

/// The host-side value behind a guest's `task` handle.
#[derive(Debug)]
pub struct TaskRep {
    seq: u32,
    kind: TaskKind,
}

#[derive(Debug)]
enum TaskKind {
    Completable,
    /// An event wait; `taken` holds the payload once the workflow consumed one.
    Event {
        name: String,
        taken: Option<String>,
    },
}

/// What arrives in an instance's mailbox.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A completion or raised event for this instance. Normally already journaled at
    /// `pos`. An activity result may arrive `unwritten`: the instance then writes it with
    /// its next step, sparing a commit (the activity runs again if the host stops first).
    Deliver {
        generation: u32,
        pos: u64,
        event: Event,
        work: WorkGuard,
        unwritten: Option<Box<QueuedActivity>>,
    },
    /// Leave memory; the journal has everything needed to come back. The sender hears
    /// back once the instance has left (it is dropped if the instance was busy and stayed).
    Evict(Option<tokio::sync::oneshot::Sender<()>>),
}

/// Why a workflow's run stopped other than by returning.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Interrupt {
    #[error(
        "journal position {seq}: the journal recorded {recorded}, but the workflow now asks for {asked}"
    )]
    Nondeterminism {
        seq: u32,
        recorded: String,
        asked: String,
    },
    #[error("the instance was evicted from memory")]
    Evicted,
    #[error("host fault: {0}")]
    HostFault(String),
    /// The journal contradicts itself: no run of any code could have written it.
    /// Retrying cannot help, so the instance stalls for a person to look at.
    #[error("the journal is inconsistent: {0}")]
    BrokenJournal(String),
    /// The journal refused the activation's write: the instance moved on (terminated,
    /// suspended, migrated, purged) and this activation must leave without acting.
    #[error("the instance moved on: {0}")]
    Fenced(String),
    /// Deploy-time inspection (`names`) asked the host for something with an effect.
    #[error(
        "a component's `names` export may only return names, but it called {0}; \
         move that call into the workflow"
    )]
    Inspecting(String),
    /// A dry run (a compatibility check) replayed the whole journal.
    #[error("replay reached the end of the journal")]
    Frontier,
}

/// The data of the store an instance runs in.
pub(crate) struct HostState {
    table: ResourceTable,
    shared: Arc<Shared>,
    id: InstanceId,
    /// The workflow's name (for metrics and logs).
    pub(crate) workflow: String,
    /// Its version number, if the registry knows the component (for spans).
    pub(crate) version: Option<u32>,
    /// Where its spans go, when traces are on.
    pub(crate) trace: Option<crate::traces::InstanceTrace>,
    /// When its generation began (its first journal entry).
    pub(crate) generation_began: crate::model::Timestamp,
    pub(crate) generation: u32,
    /// The component this activation runs, checked with each of its writes.
    component: Digest,
    /// The life of the instance id it runs, checked with each of its writes.
    pub(crate) incarnation: i64,
    /// The epoch of this host's lease on the instance's partition when its history was
    /// loaded (shared journal only); its writes are refused under any other.
    pub(crate) lease_epoch: Option<i64>,
    /// Requests and decisions by seq: from the journal, then appended live.
    pub(crate) recorded: Vec<Event>,
    pub(crate) next_seq: u32,
    /// Finished activities, children and timers by seq, with their journal position.
    results: HashMap<u32, (u64, Outcome)>,
    /// Raised events not yet consumed, per name, in journal order.
    inbox: HashMap<String, VecDeque<(u64, String)>>,
    /// Raised events consumed in this generation, per name (the first n of that name).
    consumed: HashMap<String, u32>,
    /// Journal positions of the raised events consumed live, so a repeated delivery (a
    /// host sharing a PostgreSQL journal hands over everything new it finds) is ignored.
    taken_positions: std::collections::HashSet<u64>,
    /// Activity results delivered before they were journaled, travelling with the next
    /// write; if that write does not happen they are journaled on their own.
    pub(crate) unwritten: Vec<(QueuedActivity, Outcome)>,
    /// Deliveries at or below this position were already in the loaded journal.
    loaded_upto: u64,
    /// How many entries the loaded journal held.
    loaded: u64,
    /// Positions past `loaded_upto` of this generation's entries taken in since: delivered
    /// or written by this activation. With `loaded`, what a step reports it has seen.
    seen_since_load: std::collections::HashSet<u64>,
    pub(crate) pending: StepWrite,
    pub(crate) custom_status_dirty: bool,
    pub(crate) custom_status: Option<String>,
    pub(crate) continue_as_new: Option<(String, bool)>,
    pub(crate) mailbox: mpsc::UnboundedReceiver<Msg>,
    pub(crate) work: Option<WorkGuard>,
    rng: SplitMix64,
    /// Who asked for the eviction now under way.
    pub(crate) evicted_by: Option<tokio::sync::oneshot::Sender<()>>,
    /// A compatibility check: replay only, never write, stop at the end of the journal.
    pub(crate) dry_run: bool,
    /// Deploy-time inspection: any request with an effect is refused.
    inspecting: bool,
    /// Count of completions received but not yet journaled.
    provisional: u64,
    pub(crate) limits: Arc<super::Limits>,
    meter: super::limits::GuestMeter,
    /// The time the workflow has run since it last resumed (for the per-step limit).
    pub(crate) clock: Arc<super::limits::StepClock>,
    timers_created: usize,
    /// Where its `log` calls go, within a budget per step.
    pub(crate) log: super::guest_log::GuestLog,
}

impl super::limits::Metered for HostState {
    fn step_clock(&self) -> Option<&super::limits::StepClock> {
        // Replay is bounded by fuel; counting it would stall big journals on slow hosts.
        (!self.replaying()).then_some(&*self.clock)
    }

    fn meter(&mut self) -> &mut super::limits::GuestMeter {
        &mut self.meter
    }
}

/// Positions for completions not yet journaled: after every real position.
const PROVISIONAL_POS: u64 = 1 << 62;

impl HostState {
    /// A store for calling `names` on a freshly deployed component: nothing is loaded,
    /// and any request with an effect traps ([`Interrupt::Inspecting`]).
    pub(crate) fn inert(shared: Arc<Shared>) -> HostState {
        let (_tx, rx) = mpsc::unbounded_channel();
        let mut state = Self::new(
            shared,
            InstanceId::new("inspect").expect("valid id"),
            String::new(),
            Digest::of(b""),
            0,
            rx,
            None,
        );
        state.inspecting = true;
        state.dry_run = true;
        state
    }

    pub(crate) fn new(
        shared: Arc<Shared>,
        id: InstanceId,
        workflow: String,
        component: Digest,
        generation: u32,
        mailbox: mpsc::UnboundedReceiver<Msg>,
        work: Option<WorkGuard>,
    ) -> HostState {
        let rng = SplitMix64::for_instance(id.as_str(), generation);
        let log = super::guest_log::GuestLog::workflow(&workflow, id.as_str());
        let limits = Arc::clone(shared.limits(id.tenant()));
        let meter = super::limits::GuestMeter::new(&limits, Arc::clone(&shared.ledger));
        HostState {
            table: ResourceTable::new(),
            shared,
            id,
            workflow,
            version: None,
            trace: None,
            generation_began: crate::model::Timestamp(0),
            generation,
            component,
            incarnation: 0,
            lease_epoch: None,
            recorded: Vec::new(),
            next_seq: 0,
            results: HashMap::new(),
            inbox: HashMap::new(),
            taken_positions: std::collections::HashSet::new(),
            consumed: HashMap::new(),
            unwritten: Vec::new(),
            loaded_upto: 0,
            loaded: 0,
            seen_since_load: std::collections::HashSet::new(),
            pending: StepWrite::default(),
            custom_status_dirty: false,
            custom_status: None,
            continue_as_new: None,
            mailbox,
            work,
            rng,
            evicted_by: None,
            dry_run: false,
            inspecting: false,
            provisional: 0,
            limits,
            meter,
            clock: Arc::default(),
            timers_created: 0,
            log,
        }
    }

    pub(crate) fn load(&mut self, history: Vec<StoredEvent>) -> Result<(), Interrupt> {
        for stored in history {
            self.loaded_upto = self.loaded_upto.max(stored.pos);
            self.loaded += 1;
            if let Some(seq) = stored.event.command_seq() {
                if seq as usize != self.recorded.len() {
                    return Err(Interrupt::BrokenJournal(format!(
                        "journal of '{}' is out of order at position {}",
                        self.id, stored.pos
                    )));
                }
                self.recorded.push(stored.event);
            } else {
                self.apply(stored.pos, stored.event);
            }
        }
        Ok(())
    }

    fn apply(&mut self, pos: u64, event: Event) {
        match event {
            // The first word on a task stands (a repeated delivery changes nothing).
            Event::ActivityCompleted { seq, result, .. }
            | Event::ChildCompleted { seq, result } => {
                self.results.entry(seq).or_insert((pos, result));
            }
            Event::TimerFired { seq } => {
                self.results
                    .entry(seq)
                    .or_insert((pos, Ok("null".to_owned())));
            }
            Event::EventRaised { name, payload } => {
                // Kept in journal order whatever order deliveries arrive in, so live
                // consumption matches what a replay of the journal sees.
                let queue = self.inbox.entry(name).or_default();
                let at = queue.partition_point(|(p, _)| *p < pos);
                queue.insert(at, (pos, payload));
            }
            _ => {}
        }
    }

    fn tenant(&self) -> Tenant {
        Tenant::new(self.id.tenant()).unwrap_or_else(|_| Tenant::default_tenant())
    }

    pub(crate) fn replaying(&self) -> bool {
        (self.next_seq as usize) < self.recorded.len()
    }

    fn clock_now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Issues request `asked` (whose seq is `self.next_seq`): checked against the journal
    /// while replaying, buffered for the next write when live. Returns the request as the
    /// journal holds it (a replayed timer keeps its recorded fire time).
    fn request(&mut self, asked: Event) -> wasmtime::Result<Event> {
        if self.inspecting {
            return Err(wasmtime::Error::new(Interrupt::Inspecting(
                asked.describe(),
            )));
        }
        let seq = self.next_seq;
        debug_assert_eq!(asked.command_seq(), Some(seq));
        self.next_seq += 1;
        if let Some(recorded) = self.recorded.get(seq as usize) {
            if !same_request(recorded, &asked) {
                return Err(self.diverged(seq, recorded.describe(), asked.describe()));
            }
            if !self.replaying() {
                // Replay just reached the live end: the step's time starts now.
                self.clock.restart();
            }
            return Ok(recorded.clone());
        }
        if self.dry_run {
            return Err(wasmtime::Error::new(Interrupt::Frontier));
        }
        if self.recorded.len() >= self.limits.max_history_per_generation {
            return Err(wasmtime::Error::new(LimitExceeded::History(
                self.recorded.len(),
            )));
        }
        self.recorded.push(asked.clone());
        self.pending.events.push(asked.clone());
        Ok(asked)
    }

    fn diverged(&self, seq: u32, recorded: String, asked: String) -> wasmtime::Error {
        wasmtime::Error::new(Interrupt::Nondeterminism {
            seq,
            recorded,
            asked,
        })
    }

    fn new_task(&mut self, seq: u32, kind: TaskKind) -> wasmtime::Result<Resource<TaskRep>> {
        Ok(self.table.push(TaskRep { seq, kind })?)
    }

    /// The task's outcome if it has finished (consuming an event for an event wait), with
    /// the journal position that made it ready.
    fn take_ready(&mut self, task: &Resource<TaskRep>) -> wasmtime::Result<Option<Outcome>> {
        let rep = self.table.get_mut(task)?;
        match &mut rep.kind {
            TaskKind::Completable => Ok(self.results.get(&rep.seq).map(|(_, r)| r.clone())),
            TaskKind::Event { name, taken } => {
                if let Some(payload) = taken {
                    return Ok(Some(Ok(payload.clone())));
                }
                match self
                    .inbox
                    .get_mut(name.as_str())
                    .and_then(VecDeque::pop_front)
                {
                    Some((pos, payload)) => {
                        self.taken_positions.insert(pos);
                        *self.consumed.entry(name.clone()).or_default() += 1;
                        *taken = Some(payload.clone());
                        Ok(Some(Ok(payload)))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    /// When the task became ready (journal position), without consuming anything.
    fn ready_at(&self, task: &Resource<TaskRep>) -> wasmtime::Result<Option<u64>> {
        let rep = self.table.get(task)?;
        Ok(match &rep.kind {
            TaskKind::Completable => self.results.get(&rep.seq).map(|(pos, _)| *pos),
            TaskKind::Event { taken: Some(_), .. } => Some(0),
            TaskKind::Event { name, taken: None } => self
                .inbox
                .get(name.as_str())
                .and_then(VecDeque::front)
                .map(|(pos, _)| *pos),
        })
    }

    /// Writes what the workflow produced since the last write, then starts the work it
    /// asked for: nothing runs before the request that caused it is durable. True if the
    /// write itself answered a task (a child that could not be started).
    async fn flush(&mut self) -> wasmtime::Result<bool> {
        if self.pending.events.is_empty() && !self.custom_status_dirty {
            return Ok(false);
        }
        let mut step = std::mem::take(&mut self.pending);
        // Called only as the workflow is about to wait (from `block`).
        step.seen = Some(self.loaded + self.seen_since_load.len() as u64);
        step.custom_status = if self.custom_status_dirty {
            self.custom_status.clone()
        } else {
            None
        };
        self.custom_status_dirty = false;
        if let Some(trace) = &self.trace {
            step.child_traceparent = Some(trace.run_traceparent(self.generation));
        }
        let events = step.events.clone();
        let now = self.clock_now();
        let asked = std::time::Instant::now();
        let began = std::time::SystemTime::now();
        let written = self
            .shared
            .journal
            .append_step(self.id.clone(), self.fence(), step, now)
            .await;
        self.shared
            .metrics
            .step_duration
            .observe(asked.elapsed().as_secs_f64());
        if let Some(trace) = &self.trace {
            self.shared.traces().under_run(
                trace,
                self.generation,
                "step".to_owned(),
                began,
                vec![opentelemetry::KeyValue::new(
                    "steadfast.entries",
                    events.len() as i64,
                )],
                written.as_ref().err().map(|e| e.to_string()).as_deref(),
            );
        }
        let written = written.map_err(|e| match e {
            JournalError::Fenced { why, .. } => wasmtime::Error::new(Interrupt::Fenced(why)),
            other => wasmtime::Error::new(Interrupt::HostFault(other.to_string())),
        })?;
        let (extra, stops) = (written.derived, written.stops);
        self.seen_since_load.extend(written.positions);
        self.seen_since_load
            .extend(extra.iter().map(|(pos, _)| *pos));
        // The results that travelled with the step are journaled now.
        self.unwritten.clear();
        for event in events {
            match event {
                Event::ActivityScheduled {
                    seq,
                    name,
                    input,
                    retry,
                } => {
                    self.shared.dispatch_activity_seen(
                        QueuedActivity {
                            instance: self.id.clone(),
                            generation: self.generation,
                            seq,
                            name,
                            input,
                            retry,
                            attempt: 1,
                            due_at: now,
                            first_at: now,
                            incarnation: self.incarnation,
                        },
                        Some(stops),
                    );
                }
                Event::TimerCreated { seq, fire_at, .. } => {
                    self.shared
                        .add_timer(fire_at, self.id.clone(), self.generation, seq);
                }
                Event::ChildScheduled {
                    seq,
                    instance_id,
                    name,
                    ..
                } => {
                    let failed = extra.iter().any(
                        |(_, e)| matches!(e, Event::ChildCompleted { seq: s, .. } if *s == seq),
                    );
                    if !failed && let Ok(child) = InstanceId::from_key(instance_id) {
                        self.shared.metrics.workflow_started(child.tenant(), &name);
                        self.shared.activate(child);
                    }
                }
                _ => {}
            }
        }
        let answered = !extra.is_empty();
        for (pos, event) in extra {
            self.apply(pos, event);
        }
        Ok(answered)
    }

    /// Suspends the workflow until something is delivered to it. Writes pending work
    /// first; between the write and the delivery this instance holds no work guard.
    /// An eviction request is honoured only if nothing was delivered with it.
    async fn block(&mut self) -> wasmtime::Result<()> {
        if self.inspecting {
            return Err(wasmtime::Error::new(Interrupt::Inspecting(
                "a blocking wait".into(),
            )));
        }
        if self.dry_run {
            if self.replaying() {
                // The new code waits where the journal goes on: requests it never made.
                let seq = self.next_seq;
                return Err(self.diverged(
                    seq,
                    self.recorded[seq as usize].describe(),
                    "to wait for a task the journal has no result for".into(),
                ));
            }
            return Err(wasmtime::Error::new(Interrupt::Frontier));
        }
        if self.flush().await? {
            // The write answered a task itself: let the caller look before waiting.
            return Ok(());
        }
        if self.mailbox.is_empty() && self.shared.over_capacity(self.id.tenant()) {
            // Too many instances in memory: an idle one waits in the journal instead. It
            // keeps its work guard until it has left, so `settle` sees the resident set
            // already trimmed.
            return Err(wasmtime::Error::new(Interrupt::Evicted));
        }
        self.work = None;
        let mut next = self.mailbox.recv().await;
        let (mut delivered, mut evict) = (false, None);
        loop {
            match next {
                Some(Msg::Deliver {
                    generation,
                    pos,
                    event,
                    work,
                    unwritten,
                }) => {
                    delivered = true;
                    self.work = Some(work);
                    if generation != self.generation {
                        // For a generation that has ended: its work was abandoned with it.
                    } else if let Some(job) = unwritten {
                        // Ordered after everything journaled, until it is written.
                        self.provisional += 1;
                        self.apply(PROVISIONAL_POS + self.provisional, event.clone());
                        if let Event::ActivityCompleted { result, .. } = &event {
                            self.unwritten.push((*job, result.clone()));
                        }
                        self.pending.events.push(event);
                    } else {
                        if pos > self.loaded_upto {
                            self.seen_since_load.insert(pos);
                        }
                        if self.is_new(pos, &event) {
                            self.apply(pos, event);
                        }
                    }
                }
                Some(Msg::Evict(ack)) => evict = Some(ack),
                None => return Err(wasmtime::Error::new(Interrupt::Evicted)),
            }
            match self.mailbox.try_recv() {
                Ok(msg) => next = Some(msg),
                Err(_) => break,
            }
        }
        if let Some(ack) = evict
            && !delivered
        {
            self.evicted_by = ack;
            return Err(wasmtime::Error::new(Interrupt::Evicted));
        }
        self.clock.restart();
        self.log.next_step();
        Ok(())
    }

    /// Whether a delivered, journaled event is news to this activation. Completions are
    /// keyed by their task and applying one twice changes nothing; a raised event is a
    /// duplicate if the loaded journal already held its position.
    fn is_new(&self, pos: u64, event: &Event) -> bool {
        match event {
            Event::EventRaised { name, .. } => {
                pos > self.loaded_upto
                    && !self.taken_positions.contains(&pos)
                    && !self
                        .inbox
                        .get(name)
                        .is_some_and(|q| q.iter().any(|(p, _)| *p == pos))
            }
            _ => true,
        }
    }

    /// How many raised events of each name the workflow consumed in this generation;
    /// continue-as-new carries the rest of the journal's events over.
    pub(crate) fn consumed_events(&self) -> HashMap<String, u32> {
        self.consumed.clone()
    }

    /// What the journal must still hold for this activation's writes to be accepted.
    pub(crate) fn fence(&self) -> Fence {
        Fence {
            generation: self.generation,
            component: self.component.clone(),
            incarnation: self.incarnation,
            lease_epoch: self.lease_epoch,
        }
    }
}

/// Whether a recorded request and the one the workflow asks for now are the same request.
fn same_request(recorded: &Event, asked: &Event) -> bool {
    match (recorded, asked) {
        (
            Event::TimerCreated {
                fire_at: a,
                after_ms: after_a,
                ..
            },
            Event::TimerCreated {
                fire_at: b,
                after_ms: after_b,
                ..
            },
        ) => match (after_a, after_b) {
            (Some(x), Some(y)) => x == y,
            (None, None) => a == b,
            _ => false,
        },
        (Event::WhenAnyResolved { tasks: a, .. }, Event::WhenAnyResolved { tasks: b, .. }) => {
            a == b
        }
        (Event::TimeRead { .. }, Event::TimeRead { .. }) => true,
        _ => recorded == asked,
    }
}

/// Digest lookups used by host functions.
impl Shared {
    /// The component of the newest version of a tenant's workflow.
    pub(crate) fn workflow_component(&self, tenant: &Tenant, workflow: &str) -> Option<Digest> {
        self.registry()
            .latest(tenant.as_str(), workflow)
            .map(|(_, digest)| digest)
    }
}
