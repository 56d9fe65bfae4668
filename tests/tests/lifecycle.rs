//! The lifecycle's promises, one test per defect that once broke them: terminal means
//! terminal, suspend keeps what arrives, continue-as-new keeps every unconsumed event,
//! replay never rewinds, deploy-time inspection has no effect, guest values are checked
//! before they are journaled, compatibility checks check everything, a busy host fails no
//! healthy instance, and a host fault loses nothing. Each test fails on the engine as it
//! was before the fix it names.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use steadfast::engine::{Compatibility, Limits};
use steadfast::model::Event;
use steadfast::{Engine, EngineConfig, InstanceId, RuntimeStatus, StartOptions};
use steadfast_tests::{
    HOSTILE_NAMES_WASM, HOSTILE_WASM, TESTING_V1_WASM, TESTING_V2_WASM, clock, config, id, output,
};

fn named(local: &str) -> StartOptions {
    StartOptions {
        instance_id: Some(local.to_owned()),
        ..StartOptions::default()
    }
}

/// A native activity that counts its calls and answers `answer`.
fn counting(
    config: EngineConfig,
    name: &str,
    calls: &Arc<AtomicU32>,
    answer: Value,
) -> EngineConfig {
    let calls = Arc::clone(calls);
    config.with_activity(name, move |_, _| {
        calls.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move { Ok(answer) }
    })
}

async fn open(config: EngineConfig) -> Engine {
    let engine = Engine::open(config).await.expect("engine opens");
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();
    engine.deploy(HOSTILE_WASM.to_vec()).await.unwrap();
    engine
}

/// Polls `check` (yielding to the runtime in between) until it holds, for at most 30 s of
/// wall-clock time: a guard against a hang, not a measurement.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn kinds_after_terminated(engine: &Engine, instance: &InstanceId) -> Vec<&'static str> {
    let history = engine.history(instance).unwrap();
    let at = history
        .iter()
        .position(|e| matches!(e.event, Event::WorkflowTerminated { .. }))
        .expect("the journal records the termination");
    history[at + 1..].iter().map(|e| e.event.kind()).collect()
}

/// Defect 1: a guest busy when it is terminated used to write its next step, run the
/// activity it asked for, and overwrite TERMINATED with COMPLETED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_busy_guest_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let mut config = counting(
        config(dir.path(), &clock()),
        "after_burn",
        &calls,
        json!("ran"),
    );
    config.limits = Limits {
        fuel_per_run: 1 << 40,
        ..Limits::default()
    };
    let engine = open(config).await;
    // More than a second of computing (about 1.3 ns a round here) before the guest asks
    // for its activity: the termination lands while it computes.
    let busy = engine
        .start("burn", "1000000000", named("busy"))
        .await
        .unwrap();
    until("the guest to be running", || {
        engine.guest_memory().stores >= 1
    })
    .await;
    let terminated = engine.terminate(&busy, "stop it").await.unwrap();
    assert_eq!(terminated, vec![busy.clone()]);
    engine.raise_event(&busy, "go", "1").await.unwrap_err();
    engine.settle().await;

    let record = engine.status(&busy).unwrap();
    assert_eq!(record.status, RuntimeStatus::Terminated, "{record:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "an activity ran after termination"
    );
    assert_eq!(
        kinds_after_terminated(&engine, &busy),
        Vec::<&str>::new(),
        "nothing is journaled after the termination"
    );
    assert_eq!(engine.guest_memory().stores, 0, "the guest left memory");
}

/// Defect 1 (the same batch): an event delivered together with the termination used to
/// keep the activation going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_raised_as_the_instance_is_terminated_does_not_revive_it() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let engine = open(counting(
        config(dir.path(), &clock()),
        "step_b",
        &calls,
        json!("b"),
    ))
    .await;
    let tick = Arc::new(AtomicU32::new(0));
    engine.register_activity("step_a", {
        let tick = Arc::clone(&tick);
        move |_, _| {
            tick.fetch_add(1, Ordering::SeqCst);
            async { Ok(json!("a")) }
        }
    });
    for round in 0..20 {
        let instance = engine
            .start("changing", "null", named(&format!("race-{round}")))
            .await
            .unwrap();
        engine.settle().await;
        let (raised, terminated) = tokio::join!(
            engine.raise_event(&instance, "go", "1"),
            engine.terminate(&instance, "raced")
        );
        terminated.unwrap();
        drop(raised);
        engine.settle().await;
        let record = engine.status(&instance).unwrap();
        assert_eq!(
            record.status,
            RuntimeStatus::Terminated,
            "round {round}: {record:?}"
        );
        assert_eq!(
            kinds_after_terminated(&engine, &instance),
            Vec::<&str>::new(),
            "round {round}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "step_b never runs");
}

/// Two events raised at once reach a waiting instance in the order the journal holds
/// them, so what a live wait consumes is what a replay's wait would consume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_raised_at_once_are_consumed_in_journal_order() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(config(dir.path(), &clock())).await;
    for round in 0..40 {
        let instance = engine
            .start("two_events", "null", named(&format!("pair-{round}")))
            .await
            .unwrap();
        engine.settle().await;
        let (a, b) = tokio::join!(
            engine.raise_event(&instance, "e", r#""a""#),
            engine.raise_event(&instance, "e", r#""b""#)
        );
        a.unwrap();
        b.unwrap();
        engine.settle().await;
        let journal_order: Vec<Value> = engine
            .history(&instance)
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.event {
                Event::EventRaised { payload, .. } => serde_json::from_str(&payload).ok(),
                _ => None,
            })
            .collect();
        assert_eq!(
            output(&engine, &instance),
            json!(journal_order),
            "round {round}"
        );
    }
}

/// An activity its workflow never waited for is abandoned when the instance ends: if it
/// had not started by then (all activity slots busy), it never starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_abandoned_by_its_ended_instance_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let never = Arc::new(AtomicU32::new(0));
    let mut config = counting(config(dir.path(), &clock()), "never", &never, json!(null));
    config.max_concurrent_activities = 1;
    let engine = open(config).await;
    let busy = Arc::new(AtomicU32::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    engine.register_activity("blocker", {
        let busy = Arc::clone(&busy);
        let release = Arc::clone(&release);
        move |_, _| {
            busy.fetch_add(1, Ordering::SeqCst);
            let release = Arc::clone(&release);
            async move {
                release.notified().await;
                Ok(json!("released"))
            }
        }
    });
    // The only activity slot is taken.
    let blocking = engine
        .start(
            "call",
            &json!({"activity": "blocker", "input": null}).to_string(),
            named("blocking"),
        )
        .await
        .unwrap();
    until("the blocker to hold the slot", || {
        busy.load(Ordering::SeqCst) == 1
    })
    .await;
    // `never` is queued behind it; its instance ends meanwhile.
    let forgetful = engine
        .start("forget", "null", named("forgetful"))
        .await
        .unwrap();
    until("never to be queued", || {
        engine
            .history(&forgetful)
            .unwrap()
            .iter()
            .any(|e| matches!(&e.event, Event::ActivityScheduled { name, .. } if name == "never"))
    })
    .await;
    engine.raise_event(&forgetful, "go", "1").await.unwrap();
    until("the forgetful instance to end", || {
        engine.status(&forgetful).unwrap().status == RuntimeStatus::Completed
    })
    .await;
    release.notify_one();
    engine.settle().await;
    assert_eq!(
        engine.status(&blocking).unwrap().status,
        RuntimeStatus::Completed
    );
    assert_eq!(
        never.load(Ordering::SeqCst),
        0,
        "an abandoned activity started"
    );
}

/// Defect 2: a child's result used to be dropped while its parent was suspended, so the
/// parent waited forever after it resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_childs_result_reaches_its_parent_that_was_suspended_when_it_came() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(config(dir.path(), &clock())).await;
    let parent = engine
        .start(
            "parent_of",
            &json!({"workflow": "wait_go", "input": null}).to_string(),
            named("parent"),
        )
        .await
        .unwrap();
    engine.settle().await;
    let child = id("parent:0:0");
    assert_eq!(
        engine.status(&child).unwrap().status,
        RuntimeStatus::Running
    );

    engine.suspend(&parent, "hold").await.unwrap();
    engine
        .raise_event(&child, "go", r#""from the child""#)
        .await
        .unwrap();
    engine.settle().await;
    assert_eq!(
        engine.status(&child).unwrap().status,
        RuntimeStatus::Completed
    );
    assert_eq!(
        engine.status(&parent).unwrap().status,
        RuntimeStatus::Suspended
    );

    engine.resume(&parent, "go on").await.unwrap();
    engine.settle().await;
    let record = engine.status(&parent).unwrap();
    assert_eq!(record.status, RuntimeStatus::Completed, "{record:?}");
    assert_eq!(output(&engine, &parent), json!("from the child"));
}

/// Defect 3: continue-as-new used to carry only the events the activation held; events
/// already journaled but still on their way to it were deleted with the old generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_as_new_keeps_events_journaled_while_the_generation_was_ending() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(config(dir.path(), &clock())).await;
    // Generation 0 computes for about 130 ms after its second item.
    let instance = engine
        .start(
            "collector",
            &json!({"items": [], "burn": 100_000_000u64}).to_string(),
            named("collector"),
        )
        .await
        .unwrap();
    engine.settle().await;
    engine.raise_event(&instance, "item", "1").await.unwrap();
    engine.raise_event(&instance, "item", "2").await.unwrap();
    // Journaled while generation 0 computes, before it continues as new.
    engine.raise_event(&instance, "item", "3").await.unwrap();
    engine.settle().await;
    let record = engine.status(&instance).unwrap();
    assert_eq!(record.generation, 1, "{record:?}");
    engine
        .raise_event(&instance, "item", r#""stop""#)
        .await
        .unwrap();
    engine.settle().await;
    let record = engine.status(&instance).unwrap();
    assert_eq!(record.status, RuntimeStatus::Completed, "{record:?}");
    assert_eq!(output(&engine, &instance), json!([1, 2, 3]));
}

/// Defect 4: `should-continue-as-new` used to answer from the whole journal's length, and
/// a continue-as-new was acted on before the replay check, so an instance replaying after
/// an eviction restarted its generation and lost the work done since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_eviction_never_rewinds_a_generation() {
    let dir = tempfile::tempdir().unwrap();
    let ticks = Arc::new(AtomicU32::new(0));
    let mut config = counting(config(dir.path(), &clock()), "tick", &ticks, json!(null));
    config.limits = Limits {
        max_history_per_generation: 20,
        ..Limits::default()
    };
    let engine = open(config).await;
    let instance = engine
        .start(
            "looper",
            &json!({"n": 0, "limit": 30}).to_string(),
            named("looper"),
        )
        .await
        .unwrap();
    for _ in 0..200 {
        engine.settle().await;
        if engine.status(&instance).unwrap().status.is_terminal() {
            break;
        }
        // Every wait is followed by a replay.
        engine.evict(&instance).await;
        engine.advance_to_next_timer().await.unwrap();
    }
    let record = engine.status(&instance).unwrap();
    assert_eq!(record.status, RuntimeStatus::Completed, "{record:?}");
    assert_eq!(output(&engine, &instance), json!(30));
    assert!(record.generation >= 3, "it continued as new: {record:?}");
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        30,
        "each round's activity ran once"
    );
}

/// Defect 5: deploying a component used to run its `names` export with a live context of
/// the default tenant, so `names` could run activities and start children for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_time_inspection_has_no_effect() {
    let dir = tempfile::tempdir().unwrap();
    let launched = Arc::new(AtomicU32::new(0));
    let engine = open(counting(
        config(dir.path(), &clock()),
        "launch_missiles",
        &launched,
        json!("boom"),
    ))
    .await;
    let mut refusals = Vec::new();
    for check_only in [true, false] {
        let refused = if check_only {
            engine
                .check_deploy(
                    &steadfast::model::Tenant::default_tenant(),
                    HOSTILE_NAMES_WASM.to_vec(),
                    false,
                )
                .await
                .map(drop)
        } else {
            engine.deploy(HOSTILE_NAMES_WASM.to_vec()).await.map(drop)
        }
        .expect_err("a component whose names() calls the host is refused");
        refusals.push(refused.to_string());
    }
    engine.settle().await;
    assert_eq!(launched.load(Ordering::SeqCst), 0, "no activity ran");
    for message in refusals {
        assert!(
            message.contains("may only return names") && message.contains("call-"),
            "{message}"
        );
    }
    let all = engine
        .list_instances(
            &steadfast::model::Tenant::default_tenant(),
            &steadfast::engine::InstanceFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(all.is_empty(), "no instance was started: {all:?}");
}

/// Defect 6: a NaN backoff used to be journaled as `null` (and then no engine could open
/// the journal), and a timer past the i64 range looped on "host fault".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_the_host_cannot_keep_fail_the_instance_and_the_journal_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(config(dir.path(), &clock())).await;
    for (workflow, says) in [
        ("nan_backoff", "backoff coefficient NaN"),
        ("far_timer", "past the latest time the host keeps"),
    ] {
        let instance = engine
            .start(workflow, "null", named(workflow))
            .await
            .unwrap();
        engine.settle().await;
        let record = engine.status(&instance).unwrap();
        assert_eq!(
            record.status,
            RuntimeStatus::Failed,
            "{workflow}: {record:?}"
        );
        let error = record.error.unwrap();
        assert_eq!(error.kind, "invalid_argument", "{workflow}: {error:?}");
        assert!(
            error.message.contains(says),
            "{workflow}: {}",
            error.message
        );
    }
    engine.shutdown().await;
    let reopened = Engine::open(config(dir.path(), &clock()))
        .await
        .expect("the journal opens again");
    assert_eq!(
        reopened.status(&id("nan_backoff")).unwrap().status,
        RuntimeStatus::Failed
    );
}

/// Defect 7: a compatibility check used to pass as soon as the new code blocked, even
/// with recorded requests it never reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compatibility_check_covers_every_recorded_request() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(config(dir.path(), &clock())).await;
    for name in ["step_a", "step_b"] {
        engine.register_activity(name, |_, _| async {
            std::future::pending::<()>().await;
            Ok(json!(null))
        });
    }
    let instance = engine.start("pair", "null", named("pair")).await.unwrap();
    until("both steps to be scheduled", || {
        engine
            .history(&instance)
            .unwrap()
            .iter()
            .any(|e| matches!(&e.event, Event::ActivityScheduled { name, .. } if name == "step_b"))
    })
    .await;
    let tenant = steadfast::model::Tenant::default_tenant();
    let (_, report) = engine
        .check_deploy(&tenant, TESTING_V2_WASM.to_vec(), true)
        .await
        .unwrap();
    let pair = report
        .iter()
        .find(|c| c.instance == instance)
        .expect("the pair instance was checked");
    match &pair.compatibility {
        Compatibility::Incompatible(why) => {
            assert!(why.contains("call-activity 'step_b'"), "{why}")
        }
        Compatibility::Compatible => panic!("v2 never schedules step_b: {report:?}"),
    }
    assert!(!pair.migrated);
    let v1 = steadfast::model::Digest::of(TESTING_V1_WASM);
    assert_eq!(engine.status(&instance).unwrap().component, v1);
}

/// Defect 8: the per-step limit used to count wall-clock time, so on a busy host healthy
/// instances failed while they waited for a CPU, or stalled while replaying.
#[test]
fn a_busy_host_fails_no_healthy_instance() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let engine_with = |step_ms: u64| {
        let mut config = counting(
            config(dir.path(), &clock()),
            "after_burn",
            &calls,
            json!("ran"),
        );
        config.limits = Limits {
            step_wall_clock_ms: step_ms,
            fuel_per_run: 1 << 40,
            ..Limits::default()
        };
        config
    };
    let runtime = steadfast_tests::runtime();

    // A step of about 400 ms of computing, under a 1 s limit, while eight threads keep
    // both cores busy: it takes far longer than 1 s of wall-clock time to finish.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..8)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    let first = runtime.block_on(async {
        let engine = open(engine_with(1_000)).await;
        let started = std::time::Instant::now();
        let instance = engine
            .start(
                "burn",
                &json!({"first": 300_000_000u64, "then": 1_000_000u64}).to_string(),
                named("burn"),
            )
            .await
            .unwrap();
        engine.settle().await;
        let took = started.elapsed();
        let record = engine.status(&instance).unwrap();
        engine.shutdown().await;
        (record, took)
    });
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
    let (record, took) = first;
    assert_eq!(
        record.status,
        RuntimeStatus::Running,
        "after {took:?}: {record:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop(runtime);

    // A new host replays those 400 ms under a 100 ms limit, then runs a short live step.
    let runtime = steadfast_tests::runtime();
    runtime.block_on(async {
        let engine = Engine::open(engine_with(100)).await.unwrap();
        let instance = id("burn");
        engine.raise_event(&instance, "go", "1").await.unwrap();
        engine.settle().await;
        let record = engine.status(&instance).unwrap();
        assert_eq!(record.status, RuntimeStatus::Completed, "{record:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

/// Defect 9: a host fault used to drop the activation's mailbox, with the activity results
/// not yet written, and the instance hung until the next restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_fault_loses_no_result_and_the_instance_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(config(dir.path(), &clock())).await;
    let calls = Arc::new(AtomicU32::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    engine.register_activity("slow", {
        let calls = Arc::clone(&calls);
        let release = Arc::clone(&release);
        move |_, _| {
            calls.fetch_add(1, Ordering::SeqCst);
            let release = Arc::clone(&release);
            async move {
                release.notified().await;
                Ok(json!("slow result"))
            }
        }
    });
    let instance = engine
        .start(
            "call",
            &json!({"activity": "slow", "input": null}).to_string(),
            named("faulty"),
        )
        .await
        .unwrap();
    until("the activity to run", || calls.load(Ordering::SeqCst) == 1).await;
    // The result reaches the resident instance unwritten; the write that would carry it
    // fails.
    engine.inject_journal_faults(1);
    release.notify_one();
    engine.settle().await;
    engine.advance_by(Duration::from_secs(5)).await.unwrap();
    let record = engine.status(&instance).unwrap();
    assert_eq!(record.status, RuntimeStatus::Completed, "{record:?}");
    assert_eq!(output(&engine, &instance), json!("slow result"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the result was kept, not re-run"
    );
}
