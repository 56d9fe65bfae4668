//! `Engine::replay_check`: a journal re-run, with no side effects, on the build it ran on
//! or on another build, reporting the first divergence; and native activities that sleep
//! on the virtual clock (what the test kit's slow fakes are made of).

use std::time::Duration;

use serde_json::json;
use steadfast::engine::Compatibility;
use steadfast::{EngineError, RuntimeStatus, StartOptions};
use steadfast_tests::{HOSTILE_WASM, TESTING_V1_WASM, TESTING_V2_WASM, clock, config, runtime};

async fn engine(dir: &std::path::Path) -> steadfast::Engine {
    let mut config = config(dir, &clock());
    for name in ["step_a", "step_b", "step_c"] {
        config = config.with_activity(name, |ctx, _| async move { Ok(json!(ctx.activity)) });
    }
    // Two sleeps at once (both pass), then a sleep given up for something ready at once.
    config = config.with_activity("twin", |ctx, _| async move {
        let (a, b) = tokio::join!(
            ctx.sleep(Duration::from_secs(600)),
            ctx.sleep(Duration::from_secs(1200))
        );
        let raced = tokio::select! {
            biased;
            _ = ctx.sleep(Duration::from_secs(3600)) => "slept",
            _ = std::future::ready(()) => "ready",
        };
        Ok(json!([a, b, raced, ctx.now().expect("the engine runs").0]))
    });
    config = config.with_activity("slow", |ctx, _| async move {
        if !ctx.sleep(Duration::from_secs(3600)).await {
            return Err(steadfast::ErrorInfo::new("cancelled", "cut short"));
        }
        Ok(json!(ctx.now().expect("the engine runs").0))
    });
    let engine = steadfast::Engine::open(config).await.expect("engine opens");
    engine
        .deploy(TESTING_V1_WASM.to_vec())
        .await
        .expect("v1 deploys");
    engine
}

async fn start(engine: &steadfast::Engine, workflow: &str, id: &str) -> steadfast::InstanceId {
    let options = StartOptions {
        instance_id: Some(id.into()),
        ..StartOptions::default()
    };
    let id = engine
        .start(workflow, "null", options)
        .await
        .expect("starts");
    engine.settle().await;
    id
}

/// Why `id` does not replay on `build`; panics (with `expected`) if it does.
async fn divergence(
    engine: &steadfast::Engine,
    id: &steadfast::InstanceId,
    build: &[u8],
    expected: &str,
) -> String {
    match engine.replay_check(id, Some(build.to_vec())).await.unwrap() {
        Compatibility::Incompatible(why) => why,
        Compatibility::Compatible => panic!("{id} replays on the other build, though {expected}"),
    }
}

/// Starts the `call` workflow on `activity` and lets it run as far as it goes.
async fn call(engine: &steadfast::Engine, activity: &str) -> steadfast::InstanceId {
    let input = json!({ "activity": activity }).to_string();
    let id = engine
        .start("call", &input, StartOptions::default())
        .await
        .expect("starts");
    engine.settle().await;
    id
}

#[test]
fn a_changed_build_is_reported_at_the_first_request_it_does_not_repeat() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        let id = start(&engine, "changing", "c1").await;
        assert_eq!(engine.status(&id).unwrap().status, RuntimeStatus::Running);

        assert_eq!(
            engine.replay_check(&id, None).await.unwrap(),
            Compatibility::Compatible
        );
        let why = divergence(
            &engine,
            &id,
            TESTING_V2_WASM,
            "v2 asks for step_c where v1 waited for go",
        )
        .await;
        assert!(why.contains("step_c"), "{why}");
        // The check changed nothing: the instance goes on as before, on v1.
        engine.raise_event(&id, "go", "null").await.unwrap();
        engine.settle().await;
        let record = engine.status(&id).unwrap();
        assert_eq!(record.status, RuntimeStatus::Completed);
        assert_eq!(record.output.as_deref(), Some("\"step_b\""));
        assert_eq!(
            engine.replay_check(&id, None).await.unwrap(),
            Compatibility::Compatible
        );
    });
}

#[test]
fn a_finished_run_must_end_the_same_way_on_replay() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        let id = start(&engine, "verdict", "v").await;
        assert_eq!(
            engine.status(&id).unwrap().output.as_deref(),
            Some("\"v1\"")
        );
        assert_eq!(
            engine.replay_check(&id, None).await.unwrap(),
            Compatibility::Compatible
        );
        let why = divergence(&engine, &id, TESTING_V2_WASM, "v2 returns another output").await;
        assert!(why.contains("\"v1\"") && why.contains("\"v2\""), "{why}");
    });
}

#[test]
fn replay_needs_a_workflow_component_and_an_instance() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        let id = start(&engine, "verdict", "v").await;
        let activities = steadfast::examples::ACTIVITIES_WASM.to_vec();
        let refused = engine.replay_check(&id, Some(activities)).await;
        assert!(
            matches!(&refused, Err(EngineError::CannotReplay(why)) if why.contains("activity")),
            "{refused:?}"
        );
        let missing = engine
            .replay_check(&steadfast_tests::id("nobody"), None)
            .await;
        assert!(
            matches!(missing, Err(EngineError::InstanceNotFound(_))),
            "{missing:?}"
        );
        let broken = engine.replay_check(&id, Some(b"\0asm nope".to_vec())).await;
        assert!(
            matches!(broken, Err(EngineError::Component(_))),
            "{broken:?}"
        );
    });
}

#[test]
fn a_sleeping_activity_lets_the_virtual_clock_pass_it() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        let started = engine.now();
        // `call` settles although the activity has not answered: it sleeps on the clock.
        let id = call(&engine, "slow").await;
        assert_eq!(engine.status(&id).unwrap().status, RuntimeStatus::Running);
        engine.advance_by(Duration::from_secs(3599)).await.unwrap();
        assert_eq!(engine.status(&id).unwrap().status, RuntimeStatus::Running);
        engine.advance_by(Duration::from_secs(1)).await.unwrap();
        let record = engine.status(&id).unwrap();
        assert_eq!(record.status, RuntimeStatus::Completed, "{record:?}");
        // It woke exactly an hour after it started.
        let woke: u64 = serde_json::from_str(record.output.as_deref().unwrap()).unwrap();
        assert_eq!(woke, started.0 + 3_600_000);
    });
}

#[test]
fn a_failure_replays_to_the_same_failure() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        // An activity nobody registered: the workflow fails with its error.
        let id = call(&engine, "missing").await;
        let record = engine.status(&id).unwrap();
        assert_eq!(record.status, RuntimeStatus::Failed, "{record:?}");
        assert_eq!(
            engine.replay_check(&id, None).await.unwrap(),
            Compatibility::Compatible
        );
        // A workflow that panics fails the same way on every replay of its journal.
        engine.deploy(HOSTILE_WASM.to_vec()).await.unwrap();
        let panicked = start(&engine, "panic", "p").await;
        assert_eq!(
            engine.status(&panicked).unwrap().status,
            RuntimeStatus::Failed
        );
        assert_eq!(
            engine.replay_check(&panicked, None).await.unwrap(),
            Compatibility::Compatible
        );
        // On a build whose workflow of that name does something else, it is reported.
        let why = divergence(
            &engine,
            &panicked,
            TESTING_V1_WASM,
            "the testing build has no `panic` workflow",
        )
        .await;
        assert!(why.contains("failure"), "{why}");
    });
}

#[test]
fn a_sleep_is_cut_short_when_its_instance_ends() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        let id = call(&engine, "slow").await;
        engine.terminate(&id, "no longer needed").await.unwrap();
        engine.settle().await;
        // The wake-up went with the instance: no timer is left to jump to.
        assert_eq!(engine.advance_to_next_timer().await.unwrap(), None);
        assert_eq!(
            engine.status(&id).unwrap().status,
            RuntimeStatus::Terminated
        );
    });
}

#[test]
fn more_sleepers_than_activity_slots_do_not_stall_the_clock() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        let limit = engine.limits("default").max_activities_in_flight;
        let mut ids = Vec::new();
        let input = json!({ "activity": "slow" }).to_string();
        for _ in 0..limit + 8 {
            let started = engine.start("call", &input, StartOptions::default());
            ids.push(started.await.unwrap());
        }
        // Every one of them sleeps at once: a sleeper holds no slot. (Before, the ones
        // beyond the limit waited for a slot forever, counted as work: `settle` hung.)
        tokio::time::timeout(Duration::from_secs(120), async {
            engine.settle().await;
            engine.advance_by(Duration::from_secs(3600)).await.unwrap();
        })
        .await
        .expect("the clock moves past every sleeper");
        for id in &ids {
            assert_eq!(engine.status(id).unwrap().status, RuntimeStatus::Completed);
        }
    });
}

#[test]
fn a_live_instance_is_not_moved_to_code_that_would_trap() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        let id = start(&engine, "brittle", "b").await;
        assert_eq!(engine.status(&id).unwrap().status, RuntimeStatus::Running);
        let why = divergence(&engine, &id, TESTING_V2_WASM, "v2 panics where v1 waits").await;
        assert!(
            why.contains("traps after the journal's last entry"),
            "{why}"
        );
    });
}

#[test]
fn sleeps_at_once_and_a_dropped_sleep_keep_the_clock_honest() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        let started = engine.now();
        let id = call(&engine, "twin").await;
        tokio::time::timeout(Duration::from_secs(120), async {
            engine.advance_by(Duration::from_secs(1199)).await.unwrap();
            assert_eq!(engine.status(&id).unwrap().status, RuntimeStatus::Running);
            engine.advance_by(Duration::from_secs(1)).await.unwrap();
        })
        .await
        .expect("the clock is not held by a sleeper");
        let record = engine.status(&id).unwrap();
        assert_eq!(record.status, RuntimeStatus::Completed, "{record:?}");
        let output: serde_json::Value =
            serde_json::from_str(record.output.as_deref().unwrap()).unwrap();
        assert_eq!(
            output,
            json!([true, true, "ready", started.0 + 1200 * 1000])
        );
    });
}
