//! The tutorial's examples, embedded in the binary: the orchestrator component with
//! `task_processing_saga`, `health_monitor_workflow` and `approval_workflow`, the activity
//! component with their activities, and the native `check_service_status` activity, which
//! makes a real HTTP request.

use std::time::Duration;

use crate::engine::{Deployment, Engine, EngineError};
use crate::model::ErrorInfo;

/// The example orchestrator component (built from `workflows/examples`).
pub const WORKFLOWS_WASM: &[u8] = include_bytes!(env!("STEADFAST_EXAMPLES_WASM"));

/// The example activity component (built from `workflows/example-activities`).
pub const ACTIVITIES_WASM: &[u8] = include_bytes!(env!("STEADFAST_EXAMPLE_ACTIVITIES_WASM"));

/// Deploys both example components and registers `check_service_status`.
pub async fn install(engine: &Engine) -> Result<(Deployment, Deployment), EngineError> {
    let workflows = engine.deploy(WORKFLOWS_WASM.to_vec()).await?;
    let activities = engine.deploy(ACTIVITIES_WASM.to_vec()).await?;
    register_health_check(engine);
    Ok((workflows, activities))
}

/// Registers `check_service_status`: GET `input.url` (or `http://{job_id}:8000/health`);
/// `"healthy"` on a 200 within 5 seconds, `"unhealthy"` otherwise.
pub fn register_health_check(engine: &Engine) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a plain HTTP client builds");
    engine.register_activity("check_service_status", move |_ctx, input| {
        let client = client.clone();
        async move {
            let url = match (&input["url"], &input["job_id"], &input) {
                (serde_json::Value::String(url), _, _) => url.clone(),
                (_, serde_json::Value::String(job), _) | (_, _, serde_json::Value::String(job)) => {
                    format!("http://{job}:8000/health")
                }
                _ => {
                    return Err(ErrorInfo::new(
                        "invalid_input",
                        "check_service_status needs {\"job_id\": ..., \"url\": ...} or a job id string",
                    ));
                }
            };
            let healthy = matches!(client.get(&url).send().await, Ok(r) if r.status() == reqwest::StatusCode::OK);
            Ok(serde_json::json!(if healthy { "healthy" } else { "unhealthy" }))
        }
    });
}
