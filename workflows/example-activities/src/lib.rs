//! Activities of the tutorial's saga, monitor and approval examples, as an activity
//! component. Each prints what the tutorial's activities print, through the host's log.
//!
//! `update_dashboard` fails when the order asks for it (`simulate_dashboard_failure`), so
//! the saga's compensation path is driven by the input, never by chance.

use serde_json::Value;
use steadfast_sdk::{Error, log};

steadfast_sdk::activities! {
    "create_task_record" => create_task_record,
    "delete_task_record" => delete_task_record,
    "reserve_assignee_capacity" => reserve_assignee_capacity,
    "release_assignee_capacity" => release_assignee_capacity,
    "notify_assignee" => notify_assignee,
    "send_cancellation_notice" => send_cancellation_notice,
    "update_dashboard" => update_dashboard,
    "send_alert" => send_alert,
    "send_approval_request" => send_approval_request,
    "send_timeout_notification" => send_timeout_notification,
    "send_rejection_notification" => send_rejection_notification,
    "send_approval_confirmation" => send_approval_confirmation,
    "execute_approved_action" => execute_approved_action,
}

fn field<'a>(data: &'a Value, pointer: &str) -> &'a str {
    data.pointer(pointer).and_then(Value::as_str).unwrap_or("?")
}

fn create_task_record(order: Value) -> Result<Value, Error> {
    log(format!(
        "Creating task record: {}",
        field(&order, "/task_id")
    ));
    Ok(serde_json::json!({ "created": true, "task_id": order["task_id"] }))
}

fn delete_task_record(data: Value) -> Result<(), Error> {
    log(format!(
        "Compensating: delete_task_record for {}",
        field(&data, "/task_id")
    ));
    Ok(())
}

fn reserve_assignee_capacity(order: Value) -> Result<Value, Error> {
    log(format!(
        "Reserving capacity for {}",
        field(&order, "/assignee")
    ));
    Ok(serde_json::json!({ "reserved": true }))
}

fn release_assignee_capacity(data: Value) -> Result<(), Error> {
    log(format!(
        "Compensating: release_assignee_capacity for {}",
        field(&data, "/assignee")
    ));
    Ok(())
}

fn notify_assignee(order: Value) -> Result<Value, Error> {
    log(format!(
        "Notifying assignee: {}",
        field(&order, "/assignee")
    ));
    Ok(serde_json::json!({ "notified": true }))
}

fn send_cancellation_notice(data: Value) -> Result<(), Error> {
    log(format!(
        "Compensating: send_cancellation_notice for {}",
        field(&data, "/task_id")
    ));
    Ok(())
}

fn update_dashboard(order: Value) -> Result<Value, Error> {
    log(format!(
        "Updating dashboard for {}",
        field(&order, "/task_id")
    ));
    if order
        .get("simulate_dashboard_failure")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Err(Error::new("unavailable", "Dashboard service unavailable"));
    }
    Ok(serde_json::json!({ "updated": true }))
}

fn send_alert(data: Value) -> Result<(), Error> {
    log(format!(
        "[{}] {}",
        field(&data, "/severity").to_uppercase(),
        field(&data, "/message")
    ));
    Ok(())
}

fn amount(request: &Value) -> String {
    match request.get("amount") {
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        _ => "?".to_owned(),
    }
}

fn send_approval_request(request: Value) -> Result<(), Error> {
    log(format!(
        "Sending approval request for {} (${}) to manager",
        field(&request, "/request_id"),
        amount(&request)
    ));
    Ok(())
}

fn send_timeout_notification(request: Value) -> Result<(), Error> {
    log(format!(
        "Sending timeout notification for {}",
        field(&request, "/request_id")
    ));
    Ok(())
}

fn send_rejection_notification(data: Value) -> Result<(), Error> {
    log(format!(
        "Sending rejection notification: {}",
        field(&data, "/decision/reason")
    ));
    Ok(())
}

fn send_approval_confirmation(data: Value) -> Result<(), Error> {
    log(format!(
        "Sending approval confirmation for {}",
        field(&data, "/request/request_id")
    ));
    Ok(())
}

fn execute_approved_action(request: Value) -> Result<(), Error> {
    log(format!(
        "Executing approved action for {}",
        field(&request, "/request_id")
    ));
    Ok(())
}
