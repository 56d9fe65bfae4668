//! The tutorial's examples, embedded in the binary: the orchestrator component with
//! `task_processing_saga`, `health_monitor_workflow` and `approval_workflow`, the activity
//! component with their activities, and the WASI activity component whose
//! `check_service_status` makes a real HTTP request through `wasi:http` (to hosts the
//! tenant's `http_allow` list names).

use crate::engine::{Deployment, Engine, EngineError};

/// The example orchestrator component (built from `workflows/examples`).
pub const WORKFLOWS_WASM: &[u8] = include_bytes!(env!("STEADFAST_EXAMPLES_WASM"));

/// The example activity component (built from `workflows/example-activities`).
pub const ACTIVITIES_WASM: &[u8] = include_bytes!(env!("STEADFAST_EXAMPLE_ACTIVITIES_WASM"));

/// The network activities, `check_service_status` and `http_get`, built for
/// `wasm32-wasip2` from `workflows/http-activities`.
pub const HTTP_ACTIVITIES_WASM: &[u8] = include_bytes!(env!("STEADFAST_HTTP_ACTIVITIES_WASM"));

/// What [`install`] deployed.
#[derive(Debug, Clone)]
pub struct Installed {
    pub workflows: Deployment,
    pub activities: Deployment,
    pub http_activities: Deployment,
}

/// Deploys the three example components for the default tenant.
pub async fn install(engine: &Engine) -> Result<Installed, EngineError> {
    Ok(Installed {
        workflows: engine.deploy(WORKFLOWS_WASM.to_vec()).await?,
        activities: engine.deploy(ACTIVITIES_WASM.to_vec()).await?,
        http_activities: engine.deploy(HTTP_ACTIVITIES_WASM.to_vec()).await?,
    })
}
