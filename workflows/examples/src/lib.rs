//! The three patterns of the Dapr Workflows tutorial our demo reproduces, as one
//! orchestrator component:
//!
//! - `task_processing_saga`: four steps with compensations run in reverse on failure;
//! - `health_monitor_workflow`: an eternal monitor that continues as new after every check,
//!   so its history stays bounded however long it runs;
//! - `approval_workflow`: human approval racing the `approval_received` event against a
//!   three-day timer.
//!
//! Their activities live in the `example-activities` component (and `check_service_status`
//! in the host, since it makes a real HTTP request).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use steadfast_sdk::{Context, Error, Saga, json};

steadfast_sdk::workflows! {
    "task_processing_saga" => task_processing_saga,
    "health_monitor_workflow" => health_monitor_workflow,
    "approval_workflow" => approval_workflow,
}

// ---------------------------------------------------------------------------------------
// Saga

#[derive(Debug, Serialize, Deserialize)]
pub struct TaskOrder {
    pub task_id: String,
    pub title: String,
    pub assignee: String,
    pub priority: String,
    /// Makes `update_dashboard` fail, so the compensation path can be driven from the input.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub simulate_dashboard_failure: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SagaResult {
    pub status: String,
    pub task_id: String,
    pub error: Option<String>,
}

fn task_processing_saga(ctx: &Context, order: TaskOrder) -> Result<SagaResult, Error> {
    let saga = Saga::new(ctx);
    let outcome = (|| {
        ctx.call_activity("create_task_record", &order).wait()?;
        saga.add_compensation("delete_task_record", &json!({ "task_id": order.task_id }));

        ctx.call_activity("reserve_assignee_capacity", &order)
            .wait()?;
        saga.add_compensation(
            "release_assignee_capacity",
            &json!({ "task_id": order.task_id, "assignee": order.assignee }),
        );

        ctx.call_activity("notify_assignee", &order).wait()?;
        saga.add_compensation(
            "send_cancellation_notice",
            &json!({ "task_id": order.task_id, "assignee": order.assignee }),
        );

        ctx.call_activity("update_dashboard", &order).wait()
    })();

    match outcome {
        Ok(()) => Ok(SagaResult {
            status: "success".into(),
            task_id: order.task_id,
            error: None,
        }),
        Err(e) => {
            ctx.log(format!("Dashboard update failed: {e}"));
            saga.compensate();
            Ok(SagaResult {
                status: "failed".into(),
                task_id: order.task_id,
                error: Some(e.message),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Monitor

#[derive(Debug, Serialize, Deserialize)]
pub struct MonitorState {
    pub job_id: String,
    #[serde(default = "yes")]
    pub is_healthy: bool,
    #[serde(default)]
    pub check_count: u64,
    #[serde(default)]
    pub consecutive_failures: u64,
    /// Where `check_service_status` sends its GET; defaults to `http://{job_id}:8000/health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_url: Option<String>,
}

fn yes() -> bool {
    true
}

fn health_monitor_workflow(ctx: &Context, mut state: MonitorState) -> Result<(), Error> {
    let url = state
        .health_url
        .clone()
        .unwrap_or_else(|| format!("http://{}:8000/health", state.job_id));
    let status: String = ctx
        .call_activity(
            "check_service_status",
            &json!({ "job_id": state.job_id, "url": url }),
        )
        .get()?;

    let check = state.check_count + 1;
    let sleep_minutes;
    if status == "healthy" {
        state.is_healthy = true;
        state.consecutive_failures = 0;
        sleep_minutes = 60;
        ctx.log(format!(
            "Check #{check}: {} healthy, sleeping {sleep_minutes} minutes",
            state.job_id
        ));
    } else {
        let mut alerts = Vec::new();
        if state.is_healthy {
            state.is_healthy = false;
            ctx.call_activity(
                "send_alert",
                &json!({
                    "job_id": state.job_id,
                    "message": format!("Service {} became unhealthy", state.job_id),
                    "severity": "warning",
                }),
            )
            .wait()?;
            alerts.push("warning".to_owned());
        }
        state.consecutive_failures += 1;
        if state.consecutive_failures >= 3 {
            ctx.call_activity(
                "send_alert",
                &json!({
                    "job_id": state.job_id,
                    "message": format!(
                        "Service {} unhealthy for {} checks",
                        state.job_id, state.consecutive_failures
                    ),
                    "severity": "critical",
                }),
            )
            .wait()?;
            alerts.push(format!(
                "critical - {} consecutive",
                state.consecutive_failures
            ));
        }
        sleep_minutes = 5;
        let alerting = if alerts.is_empty() {
            String::new()
        } else {
            format!("alerting ({}), ", alerts.join(", "))
        };
        ctx.log(format!(
            "Check #{check}: {} UNHEALTHY, {alerting}sleeping {sleep_minutes} minutes",
            state.job_id
        ));
    }
    ctx.set_custom_status(&json!({
        "check_count": check,
        "is_healthy": state.is_healthy,
        "consecutive_failures": state.consecutive_failures,
    }));

    ctx.create_timer(Duration::from_secs(sleep_minutes * 60))
        .wait()?;
    state.check_count += 1;
    ctx.continue_as_new(&state)
}

// ---------------------------------------------------------------------------------------
// Human approval

#[derive(Debug, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub request_id: String,
    pub requester: String,
    pub amount: f64,
    pub description: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ApprovalDecision {
    pub approved: bool,
    pub approver: String,
    #[serde(default)]
    pub reason: Option<String>,
}

const APPROVAL_TIMEOUT: Duration = Duration::from_secs(3 * 24 * 3600);

fn approval_workflow(ctx: &Context, request: ApprovalRequest) -> Result<serde_json::Value, Error> {
    if request.amount < 1000.0 {
        return Ok(json!({
            "status": "auto_approved",
            "request_id": request.request_id,
            "reason": "Amount below approval threshold",
        }));
    }

    ctx.call_activity("send_approval_request", &request)
        .wait()?;
    ctx.set_custom_status(&json!({ "stage": "waiting_for_approval" }));

    let approval_event = ctx.wait_for_external_event("approval_received");
    let timeout = ctx.create_timer(APPROVAL_TIMEOUT);
    if ctx.when_any(&[&approval_event, &timeout]) == 1 {
        ctx.call_activity("send_timeout_notification", &request)
            .wait()?;
        return Ok(json!({
            "status": "timeout",
            "request_id": request.request_id,
            "reason": "No approval received within 3 days",
        }));
    }

    let decision: ApprovalDecision = approval_event.get()?;
    if !decision.approved {
        ctx.call_activity(
            "send_rejection_notification",
            &json!({ "request": request, "decision": decision }),
        )
        .wait()?;
        return Ok(json!({
            "status": "rejected",
            "request_id": request.request_id,
            "approver": decision.approver,
            "reason": decision.reason,
        }));
    }

    ctx.call_activity("execute_approved_action", &request)
        .wait()?;
    ctx.call_activity(
        "send_approval_confirmation",
        &json!({ "request": request, "decision": decision }),
    )
    .wait()?;
    Ok(json!({
        "status": "approved",
        "request_id": request.request_id,
        "approver": decision.approver,
    }))
}
