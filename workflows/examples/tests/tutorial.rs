//! The tutorial's three workflows, tested with the Steadfast test kit the way an author
//! tests their own crate (this is the documentation example `steadfast new` follows): the
//! crate is built for wasm, run by the real engine on a temporary journal and a virtual
//! clock, with fake activities.

use std::time::Duration;

use steadfast_testkit::{ErrorInfo, Event, RuntimeStatus, TestEnv, Value, json};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// An engine with this crate's workflows deployed.
fn env() -> steadfast_testkit::Result<TestEnv> {
    let env = TestEnv::new()?;
    env.deploy(&steadfast_testkit::this_crate!()?)?;
    Ok(env)
}

/// Every activity the saga may call answers `true`, except those in `failing`.
fn saga_activities(env: &TestEnv, failing: &'static [&'static str]) {
    for name in [
        "create_task_record",
        "reserve_assignee_capacity",
        "notify_assignee",
        "update_dashboard",
        "delete_task_record",
        "release_assignee_capacity",
        "send_cancellation_notice",
    ] {
        env.activity(name, move |call| {
            if failing.contains(&call.activity.as_str()) {
                Err(ErrorInfo::new(
                    "unavailable",
                    "Dashboard service unavailable",
                ))
            } else {
                Ok(true)
            }
        });
    }
}

fn order() -> Value {
    json!({
        "task_id": "TASK-001",
        "title": "Review quarterly report",
        "assignee": "alice",
        "priority": "high",
    })
}

#[test]
fn the_saga_runs_its_four_steps_in_order() -> steadfast_testkit::Result<()> {
    let env = env()?;
    saga_activities(&env, &[]);
    let run = env.start("task_processing_saga", order())?;
    let result: Value = env.output(&run)?;
    assert_eq!(result["status"], "success");
    assert_eq!(
        env.activities_run(),
        [
            "create_task_record",
            "reserve_assignee_capacity",
            "notify_assignee",
            "update_dashboard"
        ]
    );
    env.replay_check(&run)
}

#[test]
fn a_failed_step_compensates_in_reverse_order() -> steadfast_testkit::Result<()> {
    let env = env()?;
    saga_activities(&env, &["update_dashboard"]);
    let run = env.start("task_processing_saga", order())?;
    let result: Value = env.output(&run)?;
    assert_eq!(result["status"], "failed");
    assert_eq!(result["error"], "Dashboard service unavailable");
    // The saga calls its steps without a retry policy: one attempt of the failing step,
    // then the three compensations, newest first.
    assert_eq!(
        env.activities_run(),
        [
            "create_task_record",
            "reserve_assignee_capacity",
            "notify_assignee",
            "update_dashboard",
            "send_cancellation_notice",
            "release_assignee_capacity",
            "delete_task_record"
        ]
    );
    env.replay_check(&run)
}

fn approval_env() -> steadfast_testkit::Result<TestEnv> {
    let env = env()?;
    for name in [
        "send_approval_request",
        "send_timeout_notification",
        "send_rejection_notification",
        "execute_approved_action",
        "send_approval_confirmation",
    ] {
        env.activity(name, |_| Ok(true));
    }
    Ok(env)
}

fn request(id: &str, amount: f64) -> Value {
    json!({
        "request_id": id,
        "requester": "bob",
        "amount": amount,
        "description": "New laptop",
    })
}

#[test]
fn an_approval_a_day_later_runs_the_approved_action() -> steadfast_testkit::Result<()> {
    let env = approval_env()?;
    let run = env.start("approval_workflow", request("REQ-1", 5000.0))?;
    assert_eq!(env.status(&run)?, RuntimeStatus::Running);
    assert_eq!(
        env.custom_status(&run)?,
        Some(json!({ "stage": "waiting_for_approval" }))
    );
    env.advance(DAY)?;
    env.raise(
        &run,
        "approval_received",
        json!({ "approved": true, "approver": "manager@company.com", "reason": "Within budget" }),
    )?;
    let result: Value = env.output(&run)?;
    assert_eq!(result["status"], "approved");
    assert_eq!(result["approver"], "manager@company.com");
    assert_eq!(
        env.activities_run(),
        [
            "send_approval_request",
            "execute_approved_action",
            "send_approval_confirmation"
        ]
    );
    // The decision is in the journal, as raised.
    assert!(env.history(&run)?.iter().any(|event| matches!(
        event,
        Event::EventRaised { name, .. } if name == "approval_received"
    )));
    env.replay_check(&run)
}

#[test]
fn a_rejection_notifies_the_requester() -> steadfast_testkit::Result<()> {
    let env = approval_env()?;
    let run = env.start("approval_workflow", request("REQ-2", 5000.0))?;
    env.raise(
        &run,
        "approval_received",
        json!({ "approved": false, "approver": "manager@company.com", "reason": "Over budget" }),
    )?;
    let result: Value = env.output(&run)?;
    assert_eq!(result["status"], "rejected");
    assert_eq!(result["reason"], "Over budget");
    assert_eq!(
        env.activities_run(),
        ["send_approval_request", "send_rejection_notification"]
    );
    env.replay_check(&run)
}

#[test]
fn three_days_without_a_decision_time_out() -> steadfast_testkit::Result<()> {
    let env = approval_env()?;
    let run = env.start("approval_workflow", request("REQ-3", 5000.0))?;
    env.advance(3 * DAY - Duration::from_secs(1))?;
    assert_eq!(
        env.status(&run)?,
        RuntimeStatus::Running,
        "not a second early"
    );
    env.advance(Duration::from_secs(1))?;
    let result: Value = env.output(&run)?;
    assert_eq!(result["status"], "timeout");
    assert_eq!(
        env.activities_run(),
        ["send_approval_request", "send_timeout_notification"]
    );
    // A decision after the timeout finds the instance finished.
    let late = env.raise(
        &run,
        "approval_received",
        json!({ "approved": true, "approver": "x" }),
    );
    let refused = format!("{:#}", late.expect_err("the instance has ended"));
    assert!(refused.contains("accepts no more events"), "{refused}");
    env.replay_check(&run)
}

#[test]
fn small_amounts_are_approved_without_asking() -> steadfast_testkit::Result<()> {
    let env = approval_env()?;
    let run = env.start("approval_workflow", request("REQ-4", 250.0))?;
    assert_eq!(env.output::<Value>(&run)?["status"], "auto_approved");
    assert!(env.activities_run().is_empty());
    Ok(())
}

#[test]
fn a_slow_request_email_still_gets_its_three_days() -> steadfast_testkit::Result<()> {
    let env = env()?;
    // Sending the request takes two hours of virtual time.
    env.activity_taking(
        "send_approval_request",
        2 * Duration::from_secs(3600),
        |_| Ok(true),
    );
    env.activity("send_timeout_notification", |_| Ok(true));
    let started = env.now();
    let run = env.start("approval_workflow", request("REQ-5", 5000.0))?;
    assert_eq!(env.custom_status(&run)?, None, "still sending the request");
    env.advance(3 * DAY)?;
    assert_eq!(
        env.status(&run)?,
        RuntimeStatus::Running,
        "the timer started two hours late"
    );
    env.advance(2 * Duration::from_secs(3600))?;
    assert_eq!(env.output::<Value>(&run)?["status"], "timeout");
    let calls = env.calls();
    assert_eq!(calls[0].at, started);
    assert_eq!(calls[1].at.0 - started.0, (3 * 24 + 2) * 3600 * 1000);
    Ok(())
}

#[test]
fn the_monitor_alerts_once_then_escalates_and_its_history_stays_bounded()
-> steadfast_testkit::Result<()> {
    let env = env()?;
    // Healthy for the first two checks, then down for good.
    env.activity("check_service_status", |call| {
        let _ = &call.input;
        Ok(
            if call.at.0 < steadfast_testkit::EPOCH.0 + 2 * 3600 * 1000 {
                "healthy"
            } else {
                "unhealthy"
            },
        )
    });
    env.activity("send_alert", |call| Ok(call.input["severity"].clone()));
    let run = env.start("health_monitor_workflow", json!({ "job_id": "api-server" }))?;
    // Two healthy checks an hour apart, then one every five minutes: run a day of them.
    for _ in 0..300 {
        env.advance_to_next_timer()?;
    }
    let alerts: Vec<Value> = env
        .calls()
        .into_iter()
        .filter(|call| call.activity == "send_alert")
        .map(|call| call.input["severity"].clone())
        .collect();
    // One warning when it went down, then a critical alert on every check from the third.
    assert_eq!(alerts[0], "warning");
    assert!(alerts[1..].iter().all(|s| s == "critical"), "{alerts:?}");
    let status = env
        .custom_status(&run)?
        .expect("the monitor reports its state");
    assert_eq!(status["check_count"], 301);
    assert_eq!(status["is_healthy"], false);
    // Continue-as-new keeps the journal to the current check, however long it runs.
    let history = env.history(&run)?;
    assert!(
        history.len() < 20,
        "{} entries after 301 checks",
        history.len()
    );
    env.replay_check(&run)
}

#[test]
fn an_assertion_inside_a_fake_fails_the_test() {
    let env = env().unwrap();
    env.activity("send_approval_request", |call| {
        assert!(
            call.input["requester"] == "nobody",
            "the request names a requester"
        );
        Ok(true)
    });
    // The kit re-raises the fake's panic in the test, from the call that waited for it.
    let raised = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.start("approval_workflow", request("REQ-6", 5000.0))
    }))
    .expect_err("the fake's failed assertion reaches the test");
    let message = raised.downcast_ref::<String>().cloned().unwrap_or_default();
    assert_eq!(
        message,
        "the fake 'send_approval_request' panicked: the request names a requester"
    );
}
