//! Engine behaviours the tutorial's patterns rely on, each on real components and a real
//! SQLite file: event buffering, when-any races, continue-as-new, retries, children,
//! eviction, and nondeterminism detection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use steadfast::model::{Event, Timestamp};
use steadfast::{ErrorInfo, RuntimeStatus, StartOptions, examples};
use steadfast_tests::{TESTING_V1_WASM, TESTING_V2_WASM, clock, open, output};

fn named(id: &str) -> StartOptions {
    StartOptions {
        instance_id: Some(id.to_owned()),
        ..StartOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_raised_before_the_wait_are_buffered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), &clock()).await;
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();

    let id = engine
        .start("buffered_events", "null", named("buffered"))
        .await
        .unwrap();
    engine.settle().await;
    // The workflow sleeps ten minutes before it waits; both events arrive first.
    engine.raise_event(&id, "e", r#"{"n": 1}"#).await.unwrap();
    engine.raise_event(&id, "e", r#"{"n": 2}"#).await.unwrap();
    engine.run_until_idle().await.unwrap();

    assert_eq!(output(&engine, &id), json!([{"n": 1}, {"n": 2}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_loses_a_when_any_to_a_timer_does_not_swallow_the_next_event() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), &clock()).await;
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();

    let id = engine
        .start("event_race", "null", named("race"))
        .await
        .unwrap();
    // Nothing is raised: the one-hour timer wins the race.
    let fired_at = engine.advance_to_next_timer().await.unwrap();
    assert_eq!(
        fired_at,
        Some(Timestamp(steadfast_tests::START.0 + 3_600_000))
    );
    let status = engine.status(&id).unwrap();
    assert_eq!(status.status, RuntimeStatus::Running);
    assert_eq!(
        status.custom_status.as_deref(),
        Some(r#"{"first":"timer"}"#)
    );

    // The next event goes to the new wait, not to the one that lost.
    engine.raise_event(&id, "e", r#""late""#).await.unwrap();
    engine.settle().await;
    assert_eq!(
        output(&engine, &id),
        json!({"first": "timer", "second": "late"})
    );

    let winners: Vec<u32> = engine
        .history(&id)
        .unwrap()
        .iter()
        .filter_map(|e| match e.event {
            Event::WhenAnyResolved { winner, .. } => Some(winner),
            _ => None,
        })
        .collect();
    assert_eq!(
        winners,
        vec![1],
        "the timer (seq 1) won, and that decision is journaled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_wins_the_race_is_consumed_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), &clock()).await;
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();

    let id = engine
        .start("event_race", "null", named("race-event"))
        .await
        .unwrap();
    engine.settle().await;
    engine.raise_event(&id, "e", r#""first""#).await.unwrap();
    engine.settle().await;
    assert_eq!(
        engine.status(&id).unwrap().custom_status.as_deref(),
        Some(r#"{"first":"first"}"#)
    );
    engine.raise_event(&id, "e", r#""second""#).await.unwrap();
    engine.settle().await;
    assert_eq!(
        output(&engine, &id),
        json!({"first": "first", "second": "second"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_monitor_generations_keep_the_journal_at_a_constant_size() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), &clock()).await;
    examples::install(&engine).await.unwrap();
    // A service that is always up; no network needed for this test.
    engine.register_activity("check_service_status", |_, _| async {
        Ok(json!("healthy"))
    });

    let id = engine
        .start(
            "health_monitor_workflow",
            r#"{"job_id": "task-service"}"#,
            named("monitor"),
        )
        .await
        .unwrap();
    let mut rows_at = Vec::new();
    for generation in 1..=1000u32 {
        engine
            .advance_to_next_timer()
            .await
            .unwrap()
            .expect("the monitor always has a timer");
        if generation == 10 || generation == 1000 {
            rows_at.push(engine.journal_rows(&id).unwrap());
        }
    }
    let status = engine.status(&id).unwrap();
    assert_eq!(status.status, RuntimeStatus::Running);
    assert_eq!(status.generation, 1000);
    let state: serde_json::Value = serde_json::from_str(&status.input).unwrap();
    assert_eq!(state["check_count"], 1000);
    assert_eq!(
        rows_at[0], rows_at[1],
        "journal rows at generation 10 and 1000"
    );
    assert!(
        rows_at[1] <= 6,
        "one generation's worth of rows, got {}",
        rows_at[1]
    );
    assert_eq!(
        engine.now().millis_since(steadfast_tests::START),
        1000 * 3_600_000,
        "60 minutes per healthy check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_policy_on_the_virtual_clock() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), &clock()).await;
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&attempts);
    let clock_engine = engine.clone();
    engine.register_activity("flaky", move |ctx, input| {
        let seen = Arc::clone(&seen);
        let now = clock_engine.now();
        async move {
            seen.lock().unwrap().push((ctx.attempt, now));
            if ctx.attempt < 3 {
                Err(ErrorInfo::new(
                    "unavailable",
                    format!("attempt {} failed", ctx.attempt),
                ))
            } else {
                Ok(json!({ "ok": input }))
            }
        }
    });

    let id = engine
        .start("flaky_retry", r#""payload""#, named("flaky"))
        .await
        .unwrap();
    engine.run_until_idle().await.unwrap();

    assert_eq!(output(&engine, &id), json!({"ok": "payload"}));
    let start = steadfast_tests::START;
    assert_eq!(
        *attempts.lock().unwrap(),
        vec![
            (1, start),
            (2, start.plus_ms(10_000)),
            (3, start.plus_ms(30_000))
        ],
        "first retry after 10 s, the second after 20 s (backoff 2)"
    );
    let journaled: Vec<(u32, String)> = engine
        .history(&id)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            Event::ActivityAttemptFailed { attempt, error, .. } => Some((attempt, error.message)),
            Event::ActivityCompleted { attempts, .. } => Some((attempts, "completed".into())),
            _ => None,
        })
        .collect();
    assert_eq!(
        journaled,
        vec![
            (1, "attempt 1 failed".into()),
            (2, "attempt 2 failed".into()),
            (3, "completed".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_retry_policy_fails_the_activity_for_the_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), &clock()).await;
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();
    engine.register_activity("flaky", |ctx, _| async move {
        Err(ErrorInfo::new(
            "unavailable",
            format!("attempt {} failed", ctx.attempt),
        ))
    });
    let id = engine
        .start("flaky_retry", "null", named("flaky-fails"))
        .await
        .unwrap();
    engine.run_until_idle().await.unwrap();
    let status = engine.status(&id).unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    assert_eq!(
        status.error,
        Some(ErrorInfo::new("unavailable", "attempt 3 failed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_workflow_returns_its_result_to_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), &clock()).await;
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();
    let id = engine
        .start("parent", r#"{"x": 1}"#, named("parent-1"))
        .await
        .unwrap();
    engine.run_until_idle().await.unwrap();
    assert_eq!(
        output(&engine, &id),
        json!({"echo": {"x": 1}, "by": "parent-1:0:0"})
    );
    let child = steadfast_tests::id("parent-1:0:0");
    assert_eq!(engine.status(&child).unwrap().parent, Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_instance_resumes_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), &clock()).await;
    examples::install(&engine).await.unwrap();
    let request =
        json!({"request_id": "req-9", "requester": "bob", "amount": 5000.0, "description": "x"});
    let id = engine
        .start("approval_workflow", &request.to_string(), named("req-9"))
        .await
        .unwrap();
    engine.settle().await;
    assert_eq!(engine.resident_count(), 1);
    assert!(engine.evict(&id).await, "an idle instance leaves memory");
    assert_eq!(engine.resident_count(), 0);

    engine
        .raise_event(
            &id,
            "approval_received",
            r#"{"approved": true, "approver": "manager@company.com"}"#,
        )
        .await
        .unwrap();
    engine.settle().await;
    assert_eq!(output(&engine, &id)["status"], "approved");
    let requests = engine
        .history(&id)
        .unwrap()
        .iter()
        .filter(|e| matches!(&e.event, Event::ActivityScheduled { name, .. } if name == "send_approval_request"))
        .count();
    assert_eq!(
        requests, 1,
        "the replay did not schedule the approval request again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_workflow_replayed_against_an_old_journal_stalls_naming_the_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), &clock()).await;
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();
    for name in ["step_a", "step_b", "step_c"] {
        engine.register_activity(name, |ctx, _| async move { Ok(json!(ctx.activity)) });
    }
    let id = engine
        .start("changing", "null", named("changing"))
        .await
        .unwrap();
    engine.settle().await;
    assert_eq!(engine.status(&id).unwrap().status, RuntimeStatus::Running);

    // Move the instance onto v2 and make it replay.
    let v2 = engine.deploy(TESTING_V2_WASM.to_vec()).await.unwrap();
    engine
        .set_instance_component(&id, &v2.digest)
        .await
        .unwrap();
    assert!(engine.evict(&id).await);
    engine.raise_event(&id, "go", "null").await.unwrap();
    engine.settle().await;

    let status = engine.status(&id).unwrap();
    assert_eq!(status.status, RuntimeStatus::Stalled, "{status:?}");
    let reason = status.error.unwrap().message;
    assert_eq!(
        reason,
        "journal position 1: the journal recorded wait-for-external-event 'go', \
         but the workflow now asks for call-activity 'step_c'"
    );
    assert!(matches!(
        engine.history(&id).unwrap().last().unwrap().event,
        Event::WorkflowStalled { .. }
    ));
    // Stalled stays stalled: no retry loop, nothing more in the journal.
    let rows = engine.journal_rows(&id).unwrap();
    engine.advance_by(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(engine.journal_rows(&id).unwrap(), rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), &clock()).await;
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();

    let unknown = engine
        .start("nope", "null", StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        unknown
            .to_string()
            .starts_with("no workflow named 'nope' is deployed; deployed workflows: "),
        "{unknown}"
    );
    let bad_json = engine
        .start("echo", "{oops", StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        bad_json
            .to_string()
            .starts_with("the workflow input is not valid JSON"),
        "{bad_json}"
    );
    engine.start("echo", "1", named("dup")).await.unwrap();
    let dup = engine.start("echo", "1", named("dup")).await.unwrap_err();
    assert_eq!(
        dup.to_string(),
        "instance 'dup' already exists; choose another id or purge the old instance"
    );
    engine.settle().await;
    let done = engine
        .raise_event(&steadfast_tests::id("dup"), "e", "1")
        .await
        .unwrap_err();
    assert_eq!(
        done.to_string(),
        "instance 'dup' is COMPLETED; it accepts no more events"
    );
    let missing = engine
        .raise_event(&steadfast_tests::id("ghost"), "e", "1")
        .await
        .unwrap_err();
    assert_eq!(missing.to_string(), "no instance 'ghost'");

    let not_wasm = engine.deploy(b"hello".to_vec()).await.unwrap_err();
    assert!(
        not_wasm.to_string().contains("not a WebAssembly component"),
        "{not_wasm}"
    );
    let core_module = engine
        .deploy(b"\0asm\x01\0\0\0".to_vec())
        .await
        .unwrap_err();
    assert!(
        core_module.to_string().contains("core wasm module"),
        "{core_module}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_beyond_the_resident_limit_wait_in_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let config = steadfast_tests::config(dir.path(), &clock()).with_max_resident(2);
    let engine = steadfast::Engine::open(config).await.unwrap();
    examples::install(&engine).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let request = json!({"request_id": format!("r{i}"), "requester": "b", "amount": 5000.0, "description": "x"});
        ids.push(
            engine
                .start(
                    "approval_workflow",
                    &request.to_string(),
                    named(&format!("cap-{i}")),
                )
                .await
                .unwrap(),
        );
    }
    engine.settle().await;
    assert!(
        engine.resident_count() <= 2,
        "{} resident",
        engine.resident_count()
    );
    for id in &ids {
        assert_eq!(engine.status(id).unwrap().status, RuntimeStatus::Running);
        engine
            .raise_event(
                id,
                "approval_received",
                r#"{"approved": true, "approver": "m"}"#,
            )
            .await
            .unwrap();
    }
    engine.settle().await;
    for id in &ids {
        assert_eq!(output(&engine, id)["status"], "approved", "{id:?}");
    }
    assert!(engine.resident_count() <= 2);
}

/// NaN canonicalisation: a guest dividing zero by zero sees the same bits on every host
/// (x86-64 hardware alone would give the negative NaN `0xFFC00000`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floats_are_the_same_on_every_host() {
    let dir = tempfile::tempdir().unwrap();
    let engine = steadfast_tests::open(dir.path(), &steadfast_tests::clock()).await;
    engine
        .deploy(steadfast_tests::TESTING_V1_WASM.to_vec())
        .await
        .unwrap();
    let id = engine
        .start("nan_bits", "null", steadfast::StartOptions::default())
        .await
        .unwrap();
    engine.settle().await;
    assert_eq!(
        steadfast_tests::output(&engine, &id),
        serde_json::json!([0x7FC0_0000u32, 0x7FF8_0000_0000_0000u64])
    );
}

/// One tenant's idle instances cannot take every resident slot: beyond its own
/// `max_resident_instances` they wait in the journal, while another tenant's stay in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_idle_instances_beyond_its_own_resident_limit_wait_in_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = steadfast_tests::config(dir.path(), &clock()).with_max_resident(100);
    let crowded = steadfast::engine::Limits {
        max_resident_instances: 2,
        ..steadfast::engine::Limits::default()
    };
    config.tenant_limits.insert("default".to_owned(), crowded);
    let engine = steadfast::Engine::open(config).await.unwrap();
    examples::install(&engine).await.unwrap();
    let other = steadfast::model::Tenant::new("other").unwrap();
    engine.create_tenant(&other).await.unwrap();
    engine
        .deploy_to(&other, examples::WORKFLOWS_WASM.to_vec())
        .await
        .unwrap();
    engine
        .deploy_to(&other, examples::ACTIVITIES_WASM.to_vec())
        .await
        .unwrap();
    let request =
        json!({"request_id": "r", "requester": "b", "amount": 5000.0, "description": "x"});
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            engine
                .start(
                    "approval_workflow",
                    &request.to_string(),
                    named(&format!("crowd-{i}")),
                )
                .await
                .unwrap(),
        );
    }
    for i in 0..3 {
        let options = StartOptions {
            instance_id: Some(format!("calm-{i}")),
            tenant: Some(other.clone()),
            ..StartOptions::default()
        };
        engine
            .start("approval_workflow", &request.to_string(), options)
            .await
            .unwrap();
    }
    engine.settle().await;
    let default = steadfast::model::Tenant::default_tenant();
    assert!(
        engine.resident_of(&default) <= 2,
        "{}",
        engine.resident_of(&default)
    );
    assert_eq!(
        engine.resident_of(&other),
        3,
        "the other tenant keeps its instances in memory"
    );
    for id in &ids {
        engine
            .raise_event(
                id,
                "approval_received",
                r#"{"approved": true, "approver": "m"}"#,
            )
            .await
            .unwrap();
    }
    engine.settle().await;
    for id in &ids {
        assert_eq!(output(&engine, id)["status"], "approved", "{id:?}");
    }
}

/// One tenant's activities cannot take every activity slot of the host: beyond its own
/// `max_activities_in_flight` they wait in its own line, and another tenant's run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_stuck_activities_leave_slots_for_another_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let held = Arc::new(tokio::sync::Notify::new());
    let release = Arc::clone(&held);
    let mut config = steadfast_tests::config(dir.path(), &clock()).with_activity(
        "send_approval_request",
        move |_, input| {
            let held = Arc::clone(&held);
            async move {
                // The crowding tenant's requests hang until released.
                if input["requester"] == "crowd" {
                    held.notified().await;
                }
                Ok(json!(null))
            }
        },
    );
    config.max_concurrent_activities = 5;
    let crowded = steadfast::engine::Limits {
        max_activities_in_flight: 4,
        ..steadfast::engine::Limits::default()
    };
    config.tenant_limits.insert("default".to_owned(), crowded);
    let engine = steadfast::Engine::open(config).await.unwrap();
    examples::install(&engine).await.unwrap();
    let calm = steadfast::model::Tenant::new("calm").unwrap();
    engine.create_tenant(&calm).await.unwrap();
    engine
        .deploy_to(&calm, examples::WORKFLOWS_WASM.to_vec())
        .await
        .unwrap();
    engine
        .deploy_to(&calm, examples::ACTIVITIES_WASM.to_vec())
        .await
        .unwrap();
    let crowd =
        json!({"request_id": "r", "requester": "crowd", "amount": 5000.0, "description": "x"});
    for i in 0..10 {
        engine
            .start(
                "approval_workflow",
                &crowd.to_string(),
                named(&format!("crowd-{i}")),
            )
            .await
            .unwrap();
    }
    let request =
        json!({"request_id": "r", "requester": "calm", "amount": 5000.0, "description": "x"});
    let options = StartOptions {
        instance_id: Some("calm-1".to_owned()),
        tenant: Some(calm.clone()),
        ..StartOptions::default()
    };
    let id = engine
        .start("approval_workflow", &request.to_string(), options)
        .await
        .unwrap();
    // The calm tenant's request gets a slot while ten of the crowd's hang.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = engine.status(&id).unwrap();
        if status
            .custom_status
            .as_deref()
            .is_some_and(|s| s.contains("waiting_for_approval"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other tenant's activity never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        release.notify_waiters();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release.notify_waiters();
}
