//! Crash and restart: a host crashes mid-flight (`Engine::crash` abandons every journal
//! write not yet committed, then its tokio runtime is dropped with every task where it
//! is), a new host opens the same SQLite file, and every instance finishes with nothing
//! lost and no completed activity run twice. `kill_restart.rs` (host crate) does the same
//! to a real `steadfast serve` process with SIGKILL.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::json;
use steadfast::{Engine, EngineConfig, RuntimeStatus, StartOptions, VirtualClock, examples};
use steadfast_tests::{START, TESTING_V1_WASM, config, id, open, output, runtime, start_approval};

type Calls = Arc<Mutex<HashMap<String, u32>>>;

/// Adds counting native versions of the saga's activities. With `hang_on`, that
/// activity never finishes (the host is about to "crash") and signals `reached`.
fn with_saga_activities(
    mut config: EngineConfig,
    calls: &Calls,
    hang_on: Option<&'static str>,
    reached: Option<tokio::sync::mpsc::UnboundedSender<()>>,
) -> EngineConfig {
    for name in [
        "create_task_record",
        "reserve_assignee_capacity",
        "notify_assignee",
        "update_dashboard",
    ] {
        let calls = Arc::clone(calls);
        let reached = reached.clone();
        config = config.with_activity(name, move |ctx, _| {
            *calls
                .lock()
                .unwrap()
                .entry(ctx.activity.clone())
                .or_default() += 1;
            let hang = hang_on == Some(name);
            let reached = reached.clone();
            async move {
                if hang {
                    if let Some(reached) = reached {
                        let _ = reached.send(());
                    }
                    std::future::pending::<()>().await;
                }
                Ok(json!({ "done": ctx.activity }))
            }
        });
    }
    config
}

async fn open_with_examples(dir: &Path, clock: &VirtualClock) -> Engine {
    let engine = open(dir, clock).await;
    examples::install(&engine).await.unwrap();
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();
    engine
}

#[test]
fn a_saga_resumes_after_a_crash_without_rerunning_completed_activities() {
    let dir = tempfile::tempdir().unwrap();
    let calls: Calls = Arc::default();
    let order = json!({"task_id": "task-7", "title": "t", "assignee": "alice@example.com", "priority": "high"});

    // Host 1 crashes while the third activity is running.
    let first = runtime();
    first.block_on(async {
        let (tx, mut reached) = tokio::sync::mpsc::unbounded_channel();
        let config = config(dir.path(), &VirtualClock::new(START));
        let engine = Engine::open(with_saga_activities(
            config,
            &calls,
            Some("notify_assignee"),
            Some(tx),
        ))
        .await
        .unwrap();
        examples::install(&engine).await.unwrap();
        engine
            .start(
                "task_processing_saga",
                &order.to_string(),
                StartOptions {
                    instance_id: Some("saga".into()),
                    ..StartOptions::default()
                },
            )
            .await
            .unwrap();
        reached.recv().await.expect("activity 3 starts");
        engine.crash();
    });
    drop(first);

    // Host 2 opens the same database and finishes the saga.
    let second = runtime();
    second.block_on(async {
        let config = with_saga_activities(
            config(dir.path(), &VirtualClock::new(START)),
            &calls,
            None,
            None,
        );
        let engine = Engine::open(config).await.unwrap();
        engine.settle().await;
        let saga = id("saga");
        assert_eq!(
            engine.status(&saga).unwrap().status,
            RuntimeStatus::Completed
        );
        assert_eq!(output(&engine, &saga)["status"], "success");
    });
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls["create_task_record"], 1, "activity 1 ran once");
    assert_eq!(calls["reserve_assignee_capacity"], 1, "activity 2 ran once");
    assert_eq!(
        calls["notify_assignee"], 2,
        "activity 3 had not finished: it runs again (at least once)"
    );
    assert_eq!(calls["update_dashboard"], 1);
}

#[test]
fn a_timer_created_before_a_restart_fires_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = runtime();
    first.block_on(async {
        let engine = open_with_examples(dir.path(), &VirtualClock::new(START)).await;
        engine
            .start(
                "sleeper",
                "7200",
                StartOptions {
                    instance_id: Some("sleeper".into()),
                    ..StartOptions::default()
                },
            )
            .await
            .unwrap();
        engine.settle().await;
        engine.crash();
    });
    drop(first);

    let second = runtime();
    second.block_on(async {
        let clock = VirtualClock::new(START.plus_ms(60_000));
        let engine = open(dir.path(), &clock).await;
        engine.run_until_idle().await.unwrap();
        let sleeper = id("sleeper");
        assert_eq!(
            engine.status(&sleeper).unwrap().status,
            RuntimeStatus::Completed
        );
        assert_eq!(
            output(&engine, &sleeper),
            json!(7_200_000),
            "woke exactly two hours after it started"
        );
        assert_eq!(engine.now(), START.plus_ms(7_200_000));
    });
}

#[test]
fn an_event_acknowledged_just_before_a_crash_is_delivered_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = runtime();
    first.block_on(async {
        let engine = open_with_examples(dir.path(), &VirtualClock::new(START)).await;
        let id = start_approval(&engine, "req-002", None).await;
        engine
            .raise_event(
                &id,
                "approval_received",
                r#"{"approved": true, "approver": "manager@company.com"}"#,
            )
            .await
            .expect("the raise is acknowledged");
        // Crash right after the acknowledgement, before the instance could act on it.
        engine.crash();
    });
    drop(first);

    let second = runtime();
    second.block_on(async {
        let engine = open(dir.path(), &VirtualClock::new(START)).await;
        engine.settle().await;
        let req = id("req-002");
        assert_eq!(
            output(&engine, &req),
            json!({"status": "approved", "request_id": "req-002", "approver": "manager@company.com"})
        );
    });
}

#[test]
fn instances_waiting_with_nothing_new_stay_in_the_journal_at_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = runtime();
    first.block_on(async {
        let engine = open_with_examples(dir.path(), &VirtualClock::new(START)).await;
        for n in 1..=5 {
            start_approval(&engine, &format!("req-{n}"), None).await;
        }
        // req-5 takes in an event it does not wait for: no step records that it has, so
        // at the restart it must be replayed (the journal holds more than its last step
        // saw).
        engine
            .raise_event(&id("req-5"), "unrelated", r#"{"note": 1}"#)
            .await
            .unwrap();
        engine.settle().await;
        assert_eq!(engine.resident_count(), 5);
        engine.crash();
    });
    drop(first);

    let second = runtime();
    second.block_on(async {
        let clock = VirtualClock::new(START);
        let engine = open(dir.path(), &clock).await;
        engine.settle().await;
        assert_eq!(
            engine.resident_count(),
            1,
            "only req-5, with an entry its last step had not seen, is replayed"
        );
        for n in 1..=5 {
            let req = id(&format!("req-{n}"));
            assert_eq!(engine.status(&req).unwrap().status, RuntimeStatus::Running);
        }
        // Whatever comes next reaches them: decisions for four of them...
        for n in [1, 2, 3, 5] {
            engine
                .raise_event(
                    &id(&format!("req-{n}")),
                    "approval_received",
                    r#"{"approved": true, "approver": "manager@company.com"}"#,
                )
                .await
                .unwrap();
        }
        engine.settle().await;
        for n in [1, 2, 3, 5] {
            let request_id = format!("req-{n}");
            assert_eq!(
                output(&engine, &id(&request_id)),
                json!({"status": "approved", "request_id": request_id, "approver": "manager@company.com"})
            );
        }
        // ...and req-4's timer, fired for an instance not replayed since the restart.
        assert_eq!(
            engine.status(&id("req-4")).unwrap().status,
            RuntimeStatus::Running
        );
        engine.run_until_idle().await.unwrap();
        assert_eq!(
            output(&engine, &id("req-4")),
            json!({"status": "timeout", "request_id": "req-4", "reason": "No approval received within 3 days"})
        );
    });
}

#[test]
fn a_journal_in_use_is_refused_to_a_second_engine_until_the_first_shuts_down() {
    if steadfast_tests::postgres::on_postgres() {
        // SQLite's file lock; hosts on PostgreSQL share the journal by lease, which
        // `host/tests/postgres_hosts.rs` tests.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let clock = VirtualClock::new(START);
        let engine = open_with_examples(dir.path(), &clock).await;
        let req = start_approval(&engine, "req-9", None).await;

        let refused = Engine::open(config(dir.path(), &clock))
            .await
            .err()
            .expect("the journal is in use");
        let message = refused.to_string();
        assert!(
            message.contains("in use by another Steadfast engine"),
            "{message}"
        );
        assert!(
            message.contains("steadfast.db.lock"),
            "names the lock file: {message}"
        );

        engine.shutdown().await;
        let reopened = open(dir.path(), &clock).await;
        reopened.settle().await;
        assert_eq!(
            reopened.status(&req).unwrap().status,
            RuntimeStatus::Running
        );
        reopened
            .raise_event(
                &req,
                "approval_received",
                r#"{"approved": true, "approver": "m@example.com"}"#,
            )
            .await
            .unwrap();
        reopened.settle().await;
        assert_eq!(output(&reopened, &req)["status"], "approved");
    });
}
