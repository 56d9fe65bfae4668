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
use crate::journal::Finish;
use crate::model::{ErrorInfo, InstanceId};

/// Runs an instance until it ends, is evicted, or the host fails; then leaves the
/// resident set. `activation` identifies this run in the resident map.
pub(crate) async fn run(
    shared: Arc<Shared>,
    id: InstanceId,
    activation: u64,
    mut mailbox: mpsc::UnboundedReceiver<Msg>,
    work: WorkGuard,
) {
    let mut work = Some(work);
    loop {
        match run_generation(&shared, &id, mailbox, work.take()).await {
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
            Ok(Next::Evicted(rx, ack, guard)) => {
                shared.leave_resident(&id, activation, Some(rx));
                drop(guard);
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
            Err(fault) => {
                tracing::error!(instance = %id, error = %fault, "instance deactivated by a host fault; it resumes on restart");
                break;
            }
        }
    }
    shared.leave_resident(&id, activation, None);
}

enum Next {
    Generation(mpsc::UnboundedReceiver<Msg>, WorkGuard),
    Evicted(
        mpsc::UnboundedReceiver<Msg>,
        Option<tokio::sync::oneshot::Sender<()>>,
        Option<WorkGuard>,
    ),
    Done(Option<mpsc::UnboundedReceiver<Msg>>, Option<WorkGuard>),
}

async fn run_generation(
    shared: &Arc<Shared>,
    id: &InstanceId,
    mailbox: mpsc::UnboundedReceiver<Msg>,
    work: Option<WorkGuard>,
) -> Result<Next, String> {
    let record = match shared.journal.instance(id).map_err(|e| e.to_string())? {
        Some(record) if record.status == crate::model::RuntimeStatus::Running => record,
        _ => return Ok(Next::Done(Some(mailbox), work)),
    };
    // Woken before its start time (by an event, say): what woke it is journaled, and the
    // start timer brings it back when the time comes.
    if record.generation == 0 && record.start_at.is_some_and(|at| at > shared.clock.now()) {
        return Ok(Next::Done(Some(mailbox), work));
    }
    let history = shared
        .journal
        .generation_history(id, record.generation)
        .map_err(|e| e.to_string())?;
    let mut state = HostState::new(
        Arc::clone(shared),
        id.clone(),
        record.workflow.clone(),
        record.generation,
        mailbox,
        work,
    );
    state.custom_status = record.custom_status.clone();
    if let Err(e) = state.load(history) {
        return Err(e.to_string());
    }
    let Some(pre) = shared.orchestrator_pre(&record.component) else {
        let reason = format!(
            "the component this instance runs on ({}) is not deployed; deploy it again to resume",
            record.component.short()
        );
        let (mailbox, work) = finish(
            shared,
            id,
            record.generation,
            state,
            Finish::Stalled(reason),
        )
        .await?;
        return Ok(Next::Done(Some(mailbox), work));
    };

    let limits = state.limits.clone();
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
            Err(e) => return Err(format!("cannot instantiate the workflow: {e:#}")),
        }
    };
    let result = instance
        .steadfast_workflow_workflows()
        .call_run(&mut store, &record.workflow, &record.input)
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
            Some(Interrupt::HostFault(message)) => return Err(message.clone()),
            Some(Interrupt::Frontier) => return Err("a live run reached a dry-run frontier".into()),
            Some(divergence @ Interrupt::Nondeterminism { .. }) => {
                Finish::Stalled(divergence.to_string())
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
                tracing::warn!(instance = %id, kind = %reason.kind, "workflow failed: {}", reason.message);
                Finish::Failed(reason)
            }
        },
        Ok(returned) => {
            if let Some((input, keep)) = state.continue_as_new.take() {
                let keep_events = if keep {
                    state.unconsumed_events()
                } else {
                    Vec::new()
                };
                Finish::ContinueAsNew { input, keep_events }
            } else if state.replaying() {
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
    let next_generation = matches!(outcome, Finish::ContinueAsNew { .. });
    let generation = state.generation;
    let (mailbox, work) = finish(shared, id, generation, state, outcome).await?;
    if next_generation {
        // The next generation starts right away: it keeps the work guard.
        let work = work.unwrap_or_else(|| shared.work.guard());
        return Ok(Next::Generation(mailbox, work));
    }
    Ok(Next::Done(Some(mailbox), work))
}

/// Writes the end of a generation and tells whoever waits on it.
async fn finish(
    shared: &Arc<Shared>,
    id: &InstanceId,
    generation: u32,
    mut state: HostState,
    outcome: Finish,
) -> Result<(mpsc::UnboundedReceiver<Msg>, Option<WorkGuard>), String> {
    if let Finish::Stalled(reason) = &outcome {
        tracing::warn!(instance = %id, "instance stalled: {reason}");
    }
    // Requests made after the last write are kept for the record, but started: no.
    let last = std::mem::take(&mut state.pending.events);
    let custom_status = if state.custom_status_dirty {
        state.custom_status.clone()
    } else {
        None
    };
    let now = shared.clock.now();
    let notice = shared
        .journal
        .finish(id.clone(), generation, last, custom_status, outcome, now)
        .await
        .map_err(|e| e.to_string())?;
    shared.timers.cancel_instance(id);
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
    Ok((state.mailbox, state.work.take()))
}
