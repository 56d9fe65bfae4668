//! Compatibility checks for hot-swapping a workflow's code: replay an instance's journal
//! on a new component, with no side effects, and see whether it asks for exactly what the
//! journal recorded.

use std::sync::Arc;

use tokio::sync::mpsc;
use wasmtime::Store;

use super::Shared;
use super::activation::{HostState, Interrupt};
use super::bindings::orchestrator::OrchestratorPre;
use crate::journal::InstanceRecord;

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

async fn replay(
    shared: &Arc<Shared>,
    record: &InstanceRecord,
    pre: OrchestratorPre<HostState>,
    history: Vec<crate::journal::StoredEvent>,
) -> Compatibility {
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
    let state = store.into_data();
    match result {
        Err(error) => match error.downcast_ref::<Interrupt>() {
            Some(Interrupt::Frontier) => Compatibility::Compatible,
            Some(divergence @ Interrupt::Nondeterminism { .. }) => {
                Compatibility::Incompatible(divergence.to_string())
            }
            _ => Compatibility::Incompatible(format!("the replay trapped: {error:#}")),
        },
        Ok(_) if state.replaying() => Compatibility::Incompatible(
            "the new code returns before replaying everything the journal recorded".into(),
        ),
        Ok(_) => Compatibility::Compatible,
    }
}
