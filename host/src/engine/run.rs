//! The life of one activation: run each generation of an instance in a fresh store,
//! turn how the run ended into the journal's verdict (completed, failed, stalled,
//! continued as new, evicted), and leave the resident set.

use std::sync::Arc;

use tokio::sync::mpsc;
use wasmtime::Store;

use super::Shared;
use super::activation::{HostState, Interrupt, Msg};
use super::limits::check_payload;
use super::work::WorkGuard;
use crate::journal::{Finish, JournalError};
use crate::model::RuntimeStatus;
use crate::model::{ErrorInfo, InstanceId};

/// An instance's row and first journal entry as its start wrote them, so that its first
/// activation need not read them back. Only for an instance this host has just created
/// on SQLite: if anything changed since (an event raised, a termination), the event is
/// delivered to the mailbox as for any resident instance and the first write is fenced.
/// (An instance terminated in that moment may so run its first step, its `log` lines and
/// step span included, before that write is refused; nothing it asked for is journaled
/// or started.)
pub(crate) struct Preload {
    record: crate::journal::InstanceRecord,
    history: Vec<crate::journal::StoredEvent>,
}

impl Preload {
    pub(crate) fn new(
        new: crate::journal::NewInstance,
        created: crate::journal::Created,
        now: crate::model::Timestamp,
    ) -> Preload {
        let started = crate::model::Event::WorkflowStarted {
            workflow: new.workflow.clone(),
            input: new.input.clone(),
        };
        Preload {
            record: crate::journal::InstanceRecord {
                id: new.id,
                workflow: new.workflow,
                component: new.component,
                status: RuntimeStatus::Running,
                generation: 0,
                input: new.input,
                output: None,
                error: None,
                custom_status: None,
                parent: None,
                created_at: now,
                updated_at: now,
                start_at: new.start_at,
                incarnation: created.incarnation,
            },
            history: vec![crate::journal::StoredEvent {
                pos: created.started_pos,
                generation: 0,
                at: now,
                event: started,
            }],
        }
    }
}

/// Runs an instance until it ends, is evicted, or the host fails; then leaves the
/// resident set. `activation` identifies this run in the resident map.
pub(crate) async fn run(
    shared: Arc<Shared>,
    id: InstanceId,
    activation: u64,
    mut mailbox: mpsc::UnboundedReceiver<Msg>,
    work: WorkGuard,
    mut preload: Option<Preload>,
) {
    let mut work = Some(work);
    loop {
        match run_generation(&shared, &id, mailbox, work.take(), preload.take()).await {
            Ok(Next::Generation(rx, guard)) => {
                mailbox = rx;
                work = Some(guard);
            }
            Ok(Next::Done(rx, guard)) => {
                // Leave before letting go of the work guard, so `settle` sees it gone.
                shared.leave_resident(&id, activation, rx);
                drop(guard);
                return;
            }
            Ok(Next::Fenced(rx, guard)) => {
                // Activated afresh: it exits at once if the instance ended or is
                // suspended, and replays (on its new code, if migrated) if it still runs.
                shared.leave_resident(&id, activation, Some(rx));
                shared.activate(id);
                drop(guard);
                return;
            }
            Ok(Next::Evicted(rx, ack, guard)) => {
                shared.leave_resident(&id, activation, Some(rx));
                drop(guard);
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
            Err(Fault {
                message,
                mailbox,
                unwritten,
                guard,
            }) => {
                // Nothing the workflow did since its last write is lost: its requests are
                // made again when it replays, and results that travelled unwritten are
                // journaled on their own. It is activated again after a pause, so a
                // passing fault (a full instance pool, a storage hiccup) does not leave it
                // hanging until the next restart.
                tracing::error!(instance = %id, error = %super::guest_log::escape(&message), "instance deactivated by a host fault; activating it again in {} ms", FAULT_RETRY_MS);
                for (job, result) in unwritten {
                    shared.write_unwritten(job, result);
                }
                shared.leave_resident(&id, activation, mailbox);
                let at = shared.clock.now().plus_ms(FAULT_RETRY_MS);
                shared.timers.add(at, super::timers::TimerJob::Start(id));
                drop(guard);
                return;
            }
        }
    }
}

/// How long an instance waits after a host fault before it is activated again.
const FAULT_RETRY_MS: u64 = 1_000;

/// A host fault, with what the activation must not drop on its way out.
struct Fault {
    message: String,
    mailbox: Option<mpsc::UnboundedReceiver<Msg>>,
    unwritten: Vec<(crate::journal::QueuedActivity, crate::model::Outcome)>,
    guard: Option<WorkGuard>,
}

impl Fault {
    fn of(message: String, state: &mut HostState) -> Fault {
        let (_, empty) = mpsc::unbounded_channel();
        Fault {
            message,
            mailbox: Some(std::mem::replace(&mut state.mailbox, empty)),
            unwritten: std::mem::take(&mut state.unwritten),
            guard: state.work.take(),
        }
    }
}

enum Next {
    Generation(mpsc::UnboundedReceiver<Msg>, WorkGuard),
    Evicted(
        mpsc::UnboundedReceiver<Msg>,
        Option<tokio::sync::oneshot::Sender<()>>,
        Option<WorkGuard>,
    ),
    Done(Option<mpsc::UnboundedReceiver<Msg>>, Option<WorkGuard>),
    /// The journal refused its write: the instance moved on without it.
    Fenced(mpsc::UnboundedReceiver<Msg>, Option<WorkGuard>),
}

async fn run_generation(
    shared: &Arc<Shared>,
    id: &InstanceId,
    mailbox: mpsc::UnboundedReceiver<Msg>,
    work: Option<WorkGuard>,
    preload: Option<Preload>,
) -> Result<Next, Fault> {
    let fault = |message: String, mailbox, work| Fault {
        message,
        mailbox: Some(mailbox),
        unwritten: Vec::new(),
        guard: work,
    };
    // The lease first, then the journal: what is loaded is at least as new as the lease
    // the activation's writes will be fenced by.
    let lease_epoch = shared.journal.lease_epoch(id);
    let (record, preloaded) = match preload {
        Some(Preload { record, history }) => (Ok(Some(record)), Some(history)),
        None => (shared.journal.instance(id), None),
    };
    let mut record = match record {
        Ok(Some(record)) if record.status.runs() => record,
        Ok(Some(record)) if record.status == RuntimeStatus::Pending => record,
        Ok(_) => return Ok(Next::Done(Some(mailbox), work)),
        Err(e) => return Err(fault(e.to_string(), mailbox, work)),
    };
    // Woken before its start time (by an event, say): what woke it is journaled, and the
    // start timer brings it back when the time comes. (Also for a RUNNING instance: one
    // scheduled, suspended and resumed before PENDING existed is RUNNING with its start
    // time still ahead.)
    if record.generation == 0 && record.start_at.is_some_and(|at| at > shared.clock.now()) {
        return Ok(Next::Done(Some(mailbox), work));
    }
    if record.status == RuntimeStatus::Pending {
        let started = shared
            .journal
            .start_pending(id.clone(), record.incarnation, shared.clock.now())
            .await;
        match started {
            Ok(true) => record.status = RuntimeStatus::Running,
            Ok(false) => return Ok(Next::Done(Some(mailbox), work)),
            Err(e) => return Err(fault(e.to_string(), mailbox, work)),
        }
    }
    let history = match preloaded {
        Some(history) => history,
        None => match shared.journal.generation_history(id, record.generation) {
            Ok(history) => history,
            Err(e) => return Err(fault(e.to_string(), mailbox, work)),
        },
    };
    // When this generation began: its first journal entry (the run span's start).
    let generation_began = history.first().map_or(record.created_at, |e| e.at);
    let mut state = HostState::new(
        Arc::clone(shared),
        id.clone(),
        record.workflow.clone(),
        record.component.clone(),
        record.generation,
        mailbox,
        work,
    );
    // Beside the history read above; nothing is read when traces are off.
    state.trace = shared.instance_trace(id);
    state.generation_began = generation_began;
    if state.trace.is_some() {
        state.version =
            shared
                .registry()
                .version_of(id.tenant(), &record.workflow, &record.component);
    }
    state.custom_status = record.custom_status.clone();
    state.incarnation = record.incarnation;
    state.lease_epoch = lease_epoch;
    if let Err(e) = state.load(history) {
        return finish(shared, id, state, Finish::Stalled(e.to_string())).await;
    }
    let mut pre = shared.orchestrator_pre(&record.component);
    if pre.is_none() && shared.journal.is_shared() {
        // Deployed through another host a moment ago: load it before giving up.
        if let Err(e) = shared.load_deployments().await {
            tracing::warn!(error = %e, "cannot load other hosts' deployments");
        }
        pre = shared.orchestrator_pre(&record.component);
    }
    let Some(pre) = pre else {
        let reason = format!(
            "the component this instance runs on ({}) is not deployed; deploy it again to resume",
            record.component.short()
        );
        return finish(shared, id, state, Finish::Stalled(reason)).await;
    };

    let limits = state.limits.clone();
    let clock = Arc::clone(&state.clock);
    let mut store = Store::new(shared.sandbox.engine(), state);
    super::limits::meter(&mut store, limits.fuel_per_run, limits.step_wall_clock_ms);
    // Failing to instantiate is the host's problem (out of memory, say), not the
    // workflow's: the instance stays RUNNING and resumes on the next activation.
    let mut attempt = 0;
    let instance = loop {
        match pre.instantiate_async(&mut store).await {
            Ok(instance) => break instance,
            // The instance pool can be full for a moment during a burst of activations;
            // idle instances leave as soon as they block, so wait briefly and try again.
            Err(e) if attempt < 100 => {
                attempt += 1;
                tracing::debug!(instance = %id, error = %e, "instantiation failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => {
                let message = format!("cannot instantiate the workflow: {e:#}");
                return Err(Fault::of(message, store.data_mut()));
            }
        }
    };
    let result = super::limits::timed(
        &clock,
        instance.steadfast_workflow_workflows().call_run(
            &mut store,
            &record.workflow,
            &record.input,
        ),
    )
    .await;
    let mut state = store.into_data();

    let outcome = match result {
        Err(error) => match error.downcast_ref::<Interrupt>() {
            Some(Interrupt::Evicted) => {
                return Ok(Next::Evicted(
                    state.mailbox,
                    state.evicted_by,
                    state.work.take(),
                ));
            }
            Some(Interrupt::HostFault(message)) => {
                return Err(Fault::of(message.clone(), &mut state));
            }
            Some(Interrupt::Fenced(why)) => return Ok(fenced(shared, id, why, state)),
            Some(Interrupt::Frontier | Interrupt::Inspecting(_)) => {
                let message = format!("a live run stopped as a dry run would: {error:#}");
                return Err(Fault::of(message, &mut state));
            }
            Some(stop @ (Interrupt::Nondeterminism { .. } | Interrupt::BrokenJournal(_))) => {
                Finish::Stalled(stop.to_string())
            }
            None if state.replaying() => {
                // It ran fine live but fails on its own journal: nondeterministic code.
                let reason = super::limits::classify_trap(&error, &limits, "the workflow");
                Finish::Stalled(format!(
                    "the workflow trapped while replaying journal position {}: {}",
                    state.next_seq.saturating_sub(1),
                    reason.message
                ))
            }
            None => {
                let reason = super::limits::classify_trap(&error, &limits, "the workflow");
                tracing::warn!(instance = %id, kind = %reason.kind, "workflow failed: {}", super::guest_log::escape(&reason.message));
                Finish::Failed(reason)
            }
        },
        Ok(returned) => {
            // The replay check comes first: a workflow that returns (or continues as new)
            // before it has replayed its whole journal diverged, and acting on it would
            // rewind the generation.
            if state.replaying() {
                let seq = state.next_seq;
                let recorded = state.recorded[seq as usize].describe();
                Finish::Stalled(
                    Interrupt::Nondeterminism {
                        seq,
                        recorded,
                        asked: "nothing more (the workflow returned)".into(),
                    }
                    .to_string(),
                )
            } else if let Some((input, keep_events)) = state.continue_as_new.take() {
                Finish::ContinueAsNew {
                    input,
                    keep_events,
                    consumed: state.consumed_events(),
                }
            } else {
                match returned {
                    Ok(output) => match check_payload("the workflow output", &output, &limits) {
                        Ok(()) => Finish::Completed(output),
                        Err(e) => {
                            Finish::Failed(ErrorInfo::new("payload_too_large", e.to_string()))
                        }
                    },
                    Err(e) => Finish::Failed(ErrorInfo::new(e.kind, e.message)),
                }
            }
        }
    };
    finish(shared, id, state, outcome).await
}

/// The journal refused the activation's write because the instance moved on (it was
/// terminated, suspended, continued, migrated or purged): leave without acting on
/// anything. Results that travelled unwritten are journaled on their own (a suspended
/// instance keeps them; for an ended one the write finds nothing to complete).
fn fenced(shared: &Arc<Shared>, id: &InstanceId, why: &str, mut state: HostState) -> Next {
    tracing::info!(instance = %id, "activation leaves without writing: {why}");
    for (job, result) in std::mem::take(&mut state.unwritten) {
        shared.write_unwritten(job, result);
    }
    Next::Fenced(state.mailbox, state.work.take())
}

/// Writes the end of a generation and tells whoever waits on it.
async fn finish(
    shared: &Arc<Shared>,
    id: &InstanceId,
    mut state: HostState,
    outcome: Finish,
) -> Result<Next, Fault> {
    let next_generation = matches!(outcome, Finish::ContinueAsNew { .. });
    // Requests made after the last write are kept for the record, but started: no.
    let last = std::mem::take(&mut state.pending.events);
    let custom_status = if state.custom_status_dirty {
        state.custom_status.clone()
    } else {
        None
    };
    let now = shared.clock.now();
    let stalled = match &outcome {
        Finish::Stalled(reason) => Some(reason.clone()),
        _ => None,
    };
    let failure = match &outcome {
        Finish::Failed(error) => Some(error.message.clone()),
        Finish::Stalled(reason) => Some(reason.clone()),
        _ => None,
    };
    let ending = match &outcome {
        Finish::Completed(_) => "completed",
        Finish::Failed(_) => "failed",
        Finish::Stalled(_) => "stalled",
        Finish::ContinueAsNew { .. } => "continued_as_new",
    };
    let notice = match shared
        .journal
        .finish(id.clone(), state.fence(), last, custom_status, outcome, now)
        .await
    {
        Ok(notice) => notice,
        Err(JournalError::Fenced { why, .. }) => return Ok(fenced(shared, id, &why, state)),
        Err(e) => return Err(Fault::of(e.to_string(), &mut state)),
    };
    state.unwritten.clear();
    shared
        .metrics
        .workflow_ended(id.tenant(), &state.workflow, ending);
    if let Some(trace) = &state.trace {
        shared.traces().run(
            trace,
            &crate::traces::RunInfo {
                tenant: id.tenant(),
                workflow: &state.workflow,
                version: state.version,
                generation: state.generation,
            },
            state.generation_began,
            ending,
            failure.as_deref(),
        );
    }
    if let Some(reason) = stalled {
        tracing::warn!(instance = %id, "instance stalled: {}", super::guest_log::escape(&reason.to_string()));
    }
    shared.timers.cancel_instance(id, &shared.work);
    if let Some(notice) = notice {
        let guard = shared.work.guard();
        shared.deliver(
            notice.parent,
            notice.generation,
            notice.pos,
            notice.event,
            guard,
        );
    }
    shared.status_changed(id);
    let work = state.work.take();
    if next_generation {
        // The next generation starts right away: it keeps the work guard.
        let work = work.unwrap_or_else(|| shared.work.guard());
        return Ok(Next::Generation(state.mailbox, work));
    }
    Ok(Next::Done(Some(state.mailbox), work))
}
