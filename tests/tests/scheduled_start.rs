//! Starts with a later start time: the instance exists at once and takes events, but its
//! code first runs when the clock reaches the start time, also after a restart.

use std::time::Duration;

use serde_json::json;
use steadfast::model::Timestamp;
use steadfast::{Engine, InstanceId, RuntimeStatus, VirtualClock, examples};
use steadfast_tests::{START, id, open, output, runtime, start_approval};

const HOUR_MS: u64 = 3_600_000;

/// The workflow's code has not run: nothing it asks for (no command) is journaled.
fn not_yet_run(engine: &Engine, id: &InstanceId) {
    let record = engine.status(id).unwrap();
    assert_eq!(record.status, RuntimeStatus::Pending);
    assert_eq!(record.start_at, Some(START.plus_ms(HOUR_MS)));
    assert_eq!(record.custom_status, None, "{record:?}");
    let history = engine.history(id).unwrap();
    assert_eq!(history[0].event.kind(), "workflow_started");
    assert!(
        history.iter().all(|e| e.event.command_seq().is_none()),
        "{history:?}"
    );
}

/// When the workflow's first request (the approval request activity) was journaled.
fn first_run_at(engine: &Engine, id: &InstanceId) -> Timestamp {
    let history = engine.history(id).unwrap();
    let first = history.iter().find(|e| e.event.command_seq().is_some());
    first.expect("the workflow ran").at
}

#[test]
fn a_delayed_start_runs_at_its_time_with_the_events_raised_before_it() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let engine = open(dir.path(), &VirtualClock::new(START)).await;
        examples::install(&engine).await.unwrap();
        let req = start_approval(&engine, "req-later", Some(START.plus_ms(HOUR_MS))).await;
        not_yet_run(&engine, &req);

        // An event raised before the start waits in the inbox.
        engine
            .raise_event(&req, "approval_received", r#"{"approved": true, "approver": "early@example.com"}"#)
            .await
            .unwrap();
        engine.settle().await;
        not_yet_run(&engine, &req);

        assert_eq!(
            engine.advance_to_next_timer().await.unwrap(),
            Some(START.plus_ms(HOUR_MS)),
            "the next thing that happens is the start"
        );
        assert_eq!(first_run_at(&engine, &req), START.plus_ms(HOUR_MS));
        assert_eq!(
            output(&engine, &req),
            json!({"status": "approved", "request_id": "req-later", "approver": "early@example.com"})
        );
    });
}

#[test]
fn a_delayed_start_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = runtime();
    first.block_on(async {
        let engine = open(dir.path(), &VirtualClock::new(START)).await;
        examples::install(&engine).await.unwrap();
        start_approval(&engine, "req-restart", Some(START.plus_ms(HOUR_MS))).await;
    });
    drop(first);

    runtime().block_on(async {
        let engine = open(dir.path(), &VirtualClock::new(START.plus_ms(10 * 60_000))).await;
        engine.settle().await;
        let req = id("req-restart");
        not_yet_run(&engine, &req);
        engine.advance_by(Duration::from_secs(3600)).await.unwrap();
        assert_eq!(first_run_at(&engine, &req), START.plus_ms(HOUR_MS));
        assert_eq!(
            engine.status(&req).unwrap().custom_status.as_deref(),
            Some(r#"{"stage":"waiting_for_approval"}"#)
        );
    });
}

#[test]
fn a_delayed_start_terminated_before_its_time_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let engine = open(dir.path(), &VirtualClock::new(START)).await;
        examples::install(&engine).await.unwrap();
        let req = start_approval(&engine, "req-cancelled", Some(START.plus_ms(HOUR_MS))).await;
        engine.terminate(&req, "not needed").await.unwrap();
        assert_eq!(
            engine.advance_to_next_timer().await.unwrap(),
            None,
            "the start timer went with the instance"
        );
        assert_eq!(
            engine.status(&req).unwrap().status,
            RuntimeStatus::Terminated
        );
        assert_eq!(
            engine.history(&req).unwrap().len(),
            2,
            "started, then terminated"
        );
    });
}
