//! {{name}}: a Steadfast workflow, compiled to a WebAssembly component.
//!
//! `{{workflow}}` asks for a human approval and races the decision against a
//! three-day timer, like the Dapr Workflows tutorial's approval workflow. Everything it
//! does outside its own code goes through the `Context`: the activity, the event, the
//! timer. That is what lets the host journal each step and replay the workflow after a
//! restart. See "Write your own workflow" in Steadfast's README.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use steadfast_sdk::{Context, Error, Value, json};

steadfast_sdk::workflows! { "{{workflow}}" => {{workflow}} }

/// The workflow's input.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub request_id: String,
    pub requester: String,
    pub amount: f64,
    pub description: String,
}

/// The payload of the `approval_received` event.
#[derive(Debug, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
    pub approver: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Amounts below this need no approval.
pub const THRESHOLD: f64 = 1000.0;

/// How long an approver has to decide.
pub const TIMEOUT: Duration = Duration::from_secs(3 * 24 * 3600);

pub fn {{workflow}}(ctx: &Context, request: Request) -> Result<Value, Error> {
    if request.amount < THRESHOLD {
        return Ok(json!({
            "status": "auto_approved",
            "request_id": request.request_id,
        }));
    }

    // An activity: runs outside the workflow (in an activity component or the host),
    // may be retried, and its result is journaled.
    ctx.call_activity("send_approval_request", &request)
        .wait()?;
    ctx.set_custom_status(&json!({ "stage": "waiting_for_approval" }));

    // Whichever comes first: the decision, or three days.
    let decision = ctx.wait_for_external_event("approval_received");
    let timeout = ctx.create_timer(TIMEOUT);
    if ctx.when_any(&[&decision, &timeout]) == 1 {
        return Ok(json!({
            "status": "timeout",
            "request_id": request.request_id,
        }));
    }

    let decision: Decision = decision.get()?;
    Ok(json!({
        "status": if decision.approved { "approved" } else { "rejected" },
        "request_id": request.request_id,
        "approver": decision.approver,
        "reason": decision.reason,
    }))
}
