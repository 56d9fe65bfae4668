//! Compatibility checks for hot-swapping a workflow's code: replay an instance's journal
//! on a new component, with no side effects, and see whether it asks for exactly what the
//! journal recorded.

use std::sync::Arc;

use tokio::sync::mpsc;
use wasmtime::Store;

use super::activation::{HostState, Interrupt};
use super::bindings::orchestrator::OrchestratorPre;
use super::limits::check_payload;
use super::registry::Loaded;
use super::{Engine, EngineError, Shared};
use crate::journal::InstanceRecord;
use crate::model::{Event, InstanceId};

/// Whether an instance's journal replays on a new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    Compatible,
    /// The first divergence, as the `STALLED` status would name it.
    Incompatible(String),
}

/// Replays `record`'s current generation on `pre` in a dry run: requests are compared
/// with the journal and answered from it; compatible only if the new code asks for every
/// recorded request, in order, before it waits or returns. Also returns the last journal
/// position the check covered: a migration applies only while the journal still ends
/// there.
pub(crate) async fn check_compatible(
    shared: &Arc<Shared>,
    record: &InstanceRecord,
    pre: OrchestratorPre<HostState>,
) -> (Compatibility, u64) {
    let history = match shared
        .journal
        .generation_history(&record.id, record.generation)
    {
        Ok(history) => history,
        Err(e) => {
            return (
                Compatibility::Incompatible(format!("cannot read the journal: {e}")),
                0,
            );
        }
    };
    let upto = history.iter().map(|e| e.pos).max().unwrap_or(0);
    (replay(shared, record, pre, history).await, upto)
}

impl Engine {
    /// Replays `id`'s current generation, with no side effects, on `component` (the
    /// bytes of another build of its workflow) or, when `None`, on the component it runs
    /// on, and reports the first divergence from its journal. For a generation that
    /// ended, the replay must also end the same way: the same output, the same failure
    /// (kind and message), or a trap of the same kind (its message names code offsets,
    /// which differ between builds). A step stopped by the wall-clock limit cannot be
    /// re-run without side effects and is reported as such.
    ///
    /// This is the check a test runs after changing a workflow's code: a journal written
    /// by the old build must replay on the new one.
    pub async fn replay_check(
        &self,
        id: &InstanceId,
        component: Option<Vec<u8>>,
    ) -> Result<Compatibility, EngineError> {
        let record = self.status(id)?;
        let loaded = match component {
            Some(bytes) => {
                let tenant =
                    crate::model::Tenant::new(id.tenant()).map_err(EngineError::InvalidName)?;
                let ticket = self.upload_ticket(&tenant)?;
                let (digest, bytes) = super::components::digest_of(bytes).await;
                self.shared
                    .inspect_upload(&ticket, &digest, bytes)
                    .await?
                    .loaded
                    .clone()
            }
            None => self
                .shared
                .registry
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .component(&record.component)
                .ok_or_else(|| {
                    EngineError::CannotReplay(format!(
                        "the component {} that '{id}' runs on is not loaded",
                        record.component
                    ))
                })?,
        };
        let Loaded::Orchestrator(pre) = &*loaded else {
            return Err(EngineError::CannotReplay(
                "the component is an activity component; replay needs the workflow's".into(),
            ));
        };
        Ok(check_compatible(&self.shared, &record, pre.clone()).await.0)
    }
}

async fn replay(
    shared: &Arc<Shared>,
    record: &InstanceRecord,
    pre: OrchestratorPre<HostState>,
    history: Vec<crate::journal::StoredEvent>,
) -> Compatibility {
    // How the generation ended, if it did: the replay must end the same way.
    let ended = history.iter().find_map(|stored| match &stored.event {
        Event::WorkflowCompleted { output } => Some(Ending::Completed(output.clone())),
        Event::WorkflowFailed { error } => Some(Ending::Failed(error.clone())),
        Event::ContinuedAsNew { input } => Some(Ending::ContinuedAsNew(input.clone())),
        _ => None,
    });
    let (_tx, rx) = mpsc::unbounded_channel();
    let mut state = HostState::new(
        Arc::clone(shared),
        record.id.clone(),
        record.workflow.clone(),
        record.component.clone(),
        record.generation,
        rx,
        None,
    );
    state.dry_run = true;
    if let Err(e) = state.load(history) {
        return Compatibility::Incompatible(e.to_string());
    }
    let limits = Arc::clone(shared.limits(record.id.tenant()));
    let mut store = Store::new(shared.sandbox.engine(), state);
    super::limits::meter(&mut store, limits.fuel_per_run, limits.step_wall_clock_ms);
    let result = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance
            .steadfast_workflow_workflows()
            .call_run(&mut store, &record.workflow, &record.input)
            .await
    }
    .await;
    let mut state = store.into_data();
    // The end the replay reached, decided as a live run decides it (`run.rs`).
    let replayed = match result {
        Err(error) => match error.downcast_ref::<Interrupt>() {
            // It waits where the journal ends: nothing recorded contradicts it, unless the
            // journal recorded an end there.
            Some(Interrupt::Frontier) => match ended {
                None => return Compatibility::Compatible,
                Some(ended) => {
                    return Compatibility::Incompatible(format!(
                        "the journal recorded {}, the replay waits for more",
                        ended.describe()
                    ));
                }
            },
            Some(divergence @ Interrupt::Nondeterminism { .. }) => {
                return Compatibility::Incompatible(divergence.to_string());
            }
            Some(other) => return Compatibility::Incompatible(other.to_string()),
            // A live run would stall here, not fail.
            None if state.replaying() => {
                return Compatibility::Incompatible(format!(
                    "the replay trapped before it replayed everything the journal recorded: {}",
                    super::limits::classify_trap(&error, &limits, "the workflow").message
                ));
            }
            // Past the journal's end of a live generation: the new code would fail the
            // instance on its next step.
            None if ended.is_none() => {
                return Compatibility::Incompatible(format!(
                    "the new code traps after the journal's last entry: {}",
                    super::limits::classify_trap(&error, &limits, "the workflow").message
                ));
            }
            None => Ending::Trapped(super::limits::classify_trap(
                &error,
                &limits,
                "the workflow",
            )),
        },
        Ok(_) if state.replaying() => {
            return Compatibility::Incompatible(
                "the new code returns before replaying everything the journal recorded".into(),
            );
        }
        Ok(returned) => match (state.continue_as_new.take(), returned) {
            (Some((input, _)), _) => Ending::ContinuedAsNew(input),
            // As a live run decides it: an output over the limit fails the instance.
            (None, Ok(output)) => match check_payload("the workflow output", &output, &limits) {
                Ok(()) => Ending::Completed(output),
                Err(e) => Ending::Failed(crate::model::ErrorInfo::new(
                    "payload_too_large",
                    e.to_string(),
                )),
            },
            (None, Err(e)) => Ending::Failed(crate::model::ErrorInfo::new(e.kind, e.message)),
        },
    };
    match ended {
        // The dry run has no step clock: a step the wall-clock limit stopped cannot be
        // run again here, so nothing can be said of it.
        Some(Ending::Failed(error)) if error.kind == "time_limit" => Compatibility::Incompatible(
            "the generation failed on the step wall-clock limit (time_limit), which a \
                 replay without side effects cannot reproduce"
                .into(),
        ),
        Some(ended) if !ended.same_as(&replayed) => Compatibility::Incompatible(format!(
            "the journal recorded {}, the replay {}",
            ended.describe(),
            replayed.describe().replacen("the ", "reached the ", 1)
        )),
        // Same end, or a live generation whose new code ends where the old one waits
        // (a hot swap may do that).
        _ => Compatibility::Compatible,
    }
}

/// How a generation ended.
enum Ending {
    Completed(String),
    /// The workflow returned an error (or the host failed it, as for a too large output).
    Failed(crate::model::ErrorInfo),
    /// The guest trapped (a panic, a limit): only ever from a replay.
    Trapped(crate::model::ErrorInfo),
    ContinuedAsNew(String),
}

impl Ending {
    fn same_as(&self, other: &Ending) -> bool {
        match (self, other) {
            (Ending::Completed(a), Ending::Completed(b))
            | (Ending::ContinuedAsNew(a), Ending::ContinuedAsNew(b)) => same_json(a, b),
            (Ending::Failed(a), Ending::Failed(b)) => a == b,
            // A trap's message carries code offsets, which differ between builds: the
            // same kind of trap is the same end.
            (Ending::Failed(a), Ending::Trapped(b)) | (Ending::Trapped(a), Ending::Failed(b)) => {
                a.kind == b.kind
            }
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Ending::Completed(output) => format!("the output {output}"),
            Ending::Failed(error) | Ending::Trapped(error) => {
                format!("the failure {}: {}", error.kind, error.message)
            }
            Ending::ContinuedAsNew(input) => format!("the continue-as-new with {input}"),
        }
    }
}

/// Equal as JSON values (a recorded output may have been re-serialised).
fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
