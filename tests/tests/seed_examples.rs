//! The tutorial's three scenarios on the real engine: real components, a real SQLite file.

use std::time::Duration;

use serde_json::json;
use steadfast::engine::StoredEvent;
use steadfast::model::Event;
use steadfast::{RuntimeStatus, StartOptions, examples};
use steadfast_tests::{clock, id, open, output};

fn activities_called(history: &[StoredEvent]) -> Vec<String> {
    history
        .iter()
        .filter_map(|e| match &e.event {
            Event::ActivityScheduled { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn order(fail: bool) -> String {
    json!({
        "task_id": "task-123",
        "title": "Review PR",
        "assignee": "alice@example.com",
        "priority": "high",
        "simulate_dashboard_failure": fail,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_succeeds_without_compensation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let engine = open(dir.path(), &clock).await;
    examples::install(&engine).await.unwrap();

    let saga = engine
        .start(
            "task_processing_saga",
            &order(false),
            StartOptions {
                instance_id: Some("saga-ok".into()),
                ..StartOptions::default()
            },
        )
        .await
        .unwrap();
    engine.run_until_idle().await.unwrap();

    let record = engine.status(&saga).unwrap();
    assert_eq!(record.status, RuntimeStatus::Completed, "{record:?}");
    assert_eq!(
        output(&engine, &saga),
        json!({"status": "success", "task_id": "task-123", "error": null})
    );
    assert_eq!(
        activities_called(&engine.history(&saga).unwrap()),
        [
            "create_task_record",
            "reserve_assignee_capacity",
            "notify_assignee",
            "update_dashboard"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_compensates_in_reverse_order_when_the_dashboard_fails() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let engine = open(dir.path(), &clock).await;
    examples::install(&engine).await.unwrap();

    let saga = engine
        .start(
            "task_processing_saga",
            &order(true),
            StartOptions {
                instance_id: Some("saga-fail".into()),
                ..StartOptions::default()
            },
        )
        .await
        .unwrap();
    engine.run_until_idle().await.unwrap();

    assert_eq!(
        engine.status(&saga).unwrap().status,
        RuntimeStatus::Completed
    );
    assert_eq!(
        output(&engine, &saga),
        json!({"status": "failed", "task_id": "task-123", "error": "Dashboard service unavailable"})
    );
    let history = engine.history(&saga).unwrap();
    assert_eq!(
        activities_called(&history),
        [
            "create_task_record",
            "reserve_assignee_capacity",
            "notify_assignee",
            "update_dashboard",
            "send_cancellation_notice",
            "release_assignee_capacity",
            "delete_task_record",
        ]
    );
    let dashboard_error = history.iter().find_map(|e| match &e.event {
        Event::ActivityCompleted {
            seq: 3,
            result: Err(error),
            ..
        } => Some(error.clone()),
        _ => None,
    });
    assert_eq!(
        dashboard_error.unwrap().message,
        "Dashboard service unavailable"
    );
}

fn approval(request_id: &str, amount: f64) -> String {
    json!({
        "request_id": request_id,
        "requester": "bob@company.com",
        "amount": amount,
        "description": "New laptops",
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_scenarios_auto_approved_approved_rejected_and_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let engine = open(dir.path(), &clock).await;
    examples::install(&engine).await.unwrap();
    let start = |rid: &str, amount: f64| {
        let engine = engine.clone();
        let input = approval(rid, amount);
        let rid = rid.to_owned();
        async move {
            engine
                .start(
                    "approval_workflow",
                    &input,
                    StartOptions {
                        instance_id: Some(rid),
                        ..StartOptions::default()
                    },
                )
                .await
                .unwrap()
        }
    };

    // Scenario 1: below the threshold.
    let small = start("req-001", 500.0).await;
    engine.settle().await;
    assert_eq!(
        output(&engine, &small),
        json!({"status": "auto_approved", "request_id": "req-001", "reason": "Amount below approval threshold"})
    );

    // Scenario 2: a manager approves three hours later.
    let approved = start("req-002", 5000.0).await;
    engine.settle().await;
    assert_eq!(
        engine.status(&approved).unwrap().status,
        RuntimeStatus::Running
    );
    assert_eq!(
        engine.status(&approved).unwrap().custom_status.as_deref(),
        Some(r#"{"stage":"waiting_for_approval"}"#)
    );
    engine
        .advance_by(Duration::from_secs(3 * 3600))
        .await
        .unwrap();
    engine
        .raise_event(
            &approved,
            "approval_received",
            r#"{"approved": true, "approver": "manager@company.com"}"#,
        )
        .await
        .unwrap();
    engine.settle().await;
    assert_eq!(
        output(&engine, &approved),
        json!({"status": "approved", "request_id": "req-002", "approver": "manager@company.com"})
    );
    assert_eq!(
        activities_called(&engine.history(&approved).unwrap()),
        [
            "send_approval_request",
            "execute_approved_action",
            "send_approval_confirmation"
        ]
    );

    // A rejection.
    let rejected = start("req-004", 2500.0).await;
    engine.settle().await;
    engine
        .raise_event(
            &rejected,
            "approval_received",
            r#"{"approved": false, "approver": "cfo@company.com", "reason": "Over budget"}"#,
        )
        .await
        .unwrap();
    engine.settle().await;
    assert_eq!(
        output(&engine, &rejected),
        json!({"status": "rejected", "request_id": "req-004", "approver": "cfo@company.com", "reason": "Over budget"})
    );

    // Scenario 3: nobody answers for three days.
    let timeout = start("req-003", 5000.0).await;
    let started = engine.now();
    engine.run_until_idle().await.unwrap();
    assert_eq!(
        output(&engine, &timeout),
        json!({"status": "timeout", "request_id": "req-003", "reason": "No approval received within 3 days"})
    );
    assert_eq!(
        engine.now().millis_since(started),
        3 * 24 * 3600 * 1000,
        "fired exactly at 3 days"
    );
    assert_eq!(
        activities_called(&engine.history(&timeout).unwrap()),
        ["send_approval_request", "send_timeout_notification"]
    );
    let _ = id("unused");
}
