//! Loading a deployed component: compile it, check its imports, find out which world it
//! implements by instantiating it once, ask it for the names it serves, and add it to the
//! registry (not yet to any tenant).

use std::sync::Arc;

use wasmtime::Store;

use super::activation::HostState;
use super::activity_host::ActivityState;
use super::bindings::activity::ActivityWorkerPre;
use super::bindings::orchestrator::OrchestratorPre;
use super::registry::Loaded;
use super::{ComponentKind, EngineError, Limits, Shared, limits};
use crate::model::Digest;

impl Shared {
    /// Compiles a component, works out which world it implements and which names it
    /// serves, and adds it to the registry (not yet to any tenant).
    pub(super) async fn load_component(
        self: &Arc<Self>,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(ComponentKind, Vec<String>), EngineError> {
        let component = self.sandbox.compile(digest, bytes)?;
        self.sandbox.check_imports(&component)?;
        let inspect = |e: wasmtime::Error| EngineError::Inspect("names", format!("{e:#}"));
        let limits = Arc::clone(&self.limits);
        let orchestrator_error = match self
            .linker
            .instantiate_pre(&component)
            .and_then(OrchestratorPre::new)
        {
            Ok(pre) => {
                let mut store =
                    Store::new(self.sandbox.engine(), HostState::inert(Arc::clone(self)));
                limits::meter(&mut store, limits.fuel_per_run, limits.step_wall_clock_ms);
                let instance = pre.instantiate_async(&mut store).await.map_err(inspect)?;
                let names = instance
                    .steadfast_workflow_workflows()
                    .call_names(&mut store)
                    .await
                    .map_err(inspect)?;
                self.registry_mut().add_component(
                    digest.clone(),
                    Loaded::Orchestrator(pre),
                    names.clone(),
                );
                return Ok((ComponentKind::Orchestrator, names));
            }
            Err(e) => e.to_string(),
        };
        match self
            .activity_linker
            .instantiate_pre(&component)
            .and_then(ActivityWorkerPre::new)
        {
            Ok(pre) => {
                let state = ActivityState::new(
                    "",
                    "names",
                    "",
                    &Limits::default(),
                    Arc::clone(&self.ledger),
                )
                .map_err(|e| EngineError::Inspect("names", e))?;
                let mut store = Store::new(self.sandbox.engine(), state);
                limits::meter(
                    &mut store,
                    limits.fuel_per_activity,
                    limits.step_wall_clock_ms,
                );
                let worker = pre.instantiate_async(&mut store).await.map_err(inspect)?;
                let names = worker
                    .steadfast_workflow_activities()
                    .call_names(&mut store)
                    .await
                    .map_err(inspect)?;
                self.registry_mut().add_component(
                    digest.clone(),
                    Loaded::Activity(pre),
                    names.clone(),
                );
                Ok((ComponentKind::Activity, names))
            }
            Err(activity_error) => Err(EngineError::NotOurWorld(format!(
                "as an orchestrator: {orchestrator_error}; as an activity worker: {activity_error}"
            ))),
        }
    }
}
