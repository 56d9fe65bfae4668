//! Hostile guests: each attack ends only its own instance, with its reason named, while a
//! well-behaved workflow on the same host completes and the host stays up.

use serde_json::json;
use steadfast::engine::Limits;
use steadfast::{Engine, RuntimeStatus, StartOptions, examples};
use steadfast_tests::{
    HOSTILE_WASI_WASM, HOSTILE_WASM, LogCapture, TESTING_V1_WASM, clock, config, output,
};

fn limits() -> Limits {
    Limits {
        fuel_per_run: 200_000_000,
        max_memory_bytes: 48 << 20,
        max_payload_bytes: 64 * 1024,
        max_timers_per_generation: 100,
        ..Limits::default()
    }
}

async fn engine(dir: &std::path::Path) -> Engine {
    engine_with(dir, limits()).await
}

async fn engine_with(dir: &std::path::Path, limits: Limits) -> Engine {
    let mut config = config(dir, &clock());
    config.limits = limits;
    let engine = Engine::open(config).await.unwrap();
    examples::install(&engine).await.unwrap();
    engine.deploy(HOSTILE_WASM.to_vec()).await.unwrap();
    engine
}

fn named(id: &str) -> StartOptions {
    StartOptions {
        instance_id: Some(id.to_owned()),
        ..StartOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attack_fails_only_its_own_instance_with_a_named_reason() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;

    // A well-behaved approval waits while the attacks run.
    let good_input =
        json!({"request_id": "ok", "requester": "b", "amount": 5000, "description": "x"});
    let good = engine
        .start("approval_workflow", &good_input.to_string(), named("good"))
        .await
        .unwrap();
    engine.settle().await;
    let baseline = engine.guest_memory();
    assert_eq!(baseline.stores, 1, "the approval is resident: {baseline:?}");

    let cases = [
        (
            "spin",
            "fuel_exhausted",
            "used up its fuel (200000000 units)",
        ),
        (
            "allocate_forever",
            "memory_limit",
            "tried to grow its memory past 50331648 bytes",
        ),
        ("recurse", "stack_overflow", "overflowed its stack"),
        ("huge_output", "payload_too_large", "the workflow output is"),
        ("panic", "workflow_trapped", "unreachable"),
        (
            "timer_storm",
            "timer_limit",
            "created 100 timers, the limit",
        ),
    ];
    let mut ids = Vec::new();
    for (workflow, _, _) in &cases {
        ids.push(
            engine
                .start(workflow, "null", named(workflow))
                .await
                .unwrap(),
        );
    }
    engine.settle().await;
    for ((workflow, kind, fragment), id) in cases.iter().zip(&ids) {
        let status = engine.status(id).unwrap();
        assert_eq!(
            status.status,
            RuntimeStatus::Failed,
            "{workflow}: {status:?}"
        );
        let error = status.error.unwrap();
        assert_eq!(error.kind, *kind, "{workflow}: {}", error.message);
        assert!(
            error.message.contains(fragment),
            "{workflow}: {}",
            error.message
        );
    }

    // Every attacker's store is gone with the memory it grabbed (the allocation bomb
    // reached 48 MiB); what is left is the approval's, as before the attacks.
    assert_eq!(engine.guest_memory(), baseline);

    // The good instance is untouched and still completes.
    assert_eq!(engine.status(&good).unwrap().status, RuntimeStatus::Running);
    engine
        .raise_event(
            &good,
            "approval_received",
            r#"{"approved": true, "approver": "m"}"#,
        )
        .await
        .unwrap();
    engine.settle().await;
    assert_eq!(
        engine.status(&good).unwrap().status,
        RuntimeStatus::Completed
    );
    assert_eq!(
        engine.resident_count(),
        0,
        "every failed instance left memory"
    );
    assert_eq!(
        engine.guest_memory(),
        steadfast::engine::GuestMemory::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_traps_only_on_replay_stalls_instead_of_looping() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let id = engine
        .start("trap_on_replay", "null", named("fragile"))
        .await
        .unwrap();
    engine.settle().await;
    assert_eq!(engine.status(&id).unwrap().status, RuntimeStatus::Running);
    assert!(engine.evict(&id).await);
    engine.raise_event(&id, "go", "null").await.unwrap();
    engine.settle().await;
    let status = engine.status(&id).unwrap();
    assert_eq!(status.status, RuntimeStatus::Stalled, "{status:?}");
    let reason = status.error.unwrap().message;
    assert!(
        reason.starts_with("the workflow trapped while replaying journal position 0"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_with_ambient_authority_or_broken_bytes_are_refused_at_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;

    let wasi = engine
        .deploy(HOSTILE_WASI_WASM.to_vec())
        .await
        .unwrap_err()
        .to_string();
    assert!(wasi.starts_with("the component imports "), "{wasi}");
    assert!(wasi.contains("wasi:filesystem/"), "{wasi}");
    assert!(
        wasi.contains("which orchestrators may not use: they import only the steadfast:workflow"),
        "{wasi}"
    );

    let truncated = &HOSTILE_WASM[..HOSTILE_WASM.len() / 2];
    let broken = engine
        .deploy(truncated.to_vec())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        broken.starts_with("the component failed to compile"),
        "{broken}"
    );
    let empty_component = engine
        .deploy(b"\0asm\x0d\0\x01\0".to_vec())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        empty_component.contains("implements neither"),
        "{empty_component}"
    );

    // Nothing half-deployed: the refused workflow names do not exist.
    let unknown = engine
        .start("read_secrets", "null", StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        unknown
            .to_string()
            .starts_with("no workflow named 'read_secrets'"),
        "{unknown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_inputs_and_events_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let big = serde_json::to_string(&"x".repeat(100 * 1024)).unwrap();
    let err = engine
        .start("approval_workflow", &big, named("big"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the workflow input is 102402 bytes; the limit is 65536 bytes"
    );
    assert!(
        engine.status(&steadfast_tests::id("big")).is_err(),
        "nothing was written"
    );

    let input = json!({"request_id": "r", "requester": "b", "amount": 5000, "description": "x"});
    let id = engine
        .start("approval_workflow", &input.to_string(), named("r"))
        .await
        .unwrap();
    engine.settle().await;
    let err = engine
        .raise_event(&id, "approval_received", &big)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the event payload is 102402 bytes; the limit is 65536 bytes"
    );
    assert_eq!(engine.limits("default"), limits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_live_instance_limit_starts_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &clock());
    config.limits.max_live_instances = 2;
    let engine = Engine::open(config).await.unwrap();
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();

    let a = engine.start("sleeper", "3600", named("a")).await.unwrap();
    engine.start("sleeper", "3600", named("b")).await.unwrap();
    let refused = engine
        .start("sleeper", "3600", named("c"))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        refused,
        "tenant 'default' already has 2 pending, running or suspended instances, its max_live_instances \
         limit; wait for some to finish, terminate some, or raise the limit"
    );
    assert!(
        engine.status(&steadfast_tests::id("c")).is_err(),
        "nothing written"
    );

    // Ending one frees its place; a child workflow counts like any other instance.
    engine.terminate(&a, "make room").await.unwrap();
    let parent = engine.start("parent", "{}", named("p")).await.unwrap();
    engine.settle().await;
    let status = engine.status(&parent).unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed, "{status:?}");
    let error = status.error.unwrap();
    assert_eq!(error.kind, "instance_quota", "{error:?}");
    assert!(
        error.message.contains("max_live_instances"),
        "{}",
        error.message
    );

    // With the parent ended, only "b" is live: one more start fits.
    engine.start("sleeper", "3600", named("c")).await.unwrap();
}

// A current-thread runtime, so the captured log sees what the engine's tasks write.
#[tokio::test]
async fn a_workflow_flooding_the_log_is_cut_to_its_budget_each_step() {
    let (capture, _guard) = LogCapture::start("steadfast::workflow=info");
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let id = engine
        .start("log_flood", "null", named("flood"))
        .await
        .unwrap();
    engine
        .advance_by(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(output(&engine, &id), json!("done"));

    let log = capture.text();
    let line = "f".repeat(1023);
    assert_eq!(
        log.lines().filter(|l| l.contains(&line)).count(),
        64,
        "64 KiB of the megabyte logged in the first step"
    );
    // The other 960 lines are counted once, when the next step begins.
    let dropped = log
        .find("982080 bytes of log output dropped: a guest may log 65536 bytes per activity call or workflow step")
        .expect("the cut is reported");
    let after = log
        .find("still heard after the timer")
        .expect("the next step has a fresh budget");
    assert!(dropped < after);
}

/// The per-step time limit: a guest that computes past it fails with `time_limit`
/// (fuel is set high enough that only the time limit can stop it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_runs_past_its_time_limit_fails_with_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(
        dir.path(),
        Limits {
            fuel_per_run: 1 << 50,
            step_wall_clock_ms: 200,
            ..limits()
        },
    )
    .await;
    let spin = engine.start("spin", "null", named("spin")).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), engine.settle())
        .await
        .expect("the time limit stops the guest");
    let record = engine.status(&spin).unwrap();
    assert_eq!(record.status, RuntimeStatus::Failed, "{record:?}");
    let error = record.error.unwrap();
    assert_eq!(error.kind, "time_limit", "{}", error.message);
    assert!(
        error
            .message
            .contains("one step computed for more than 200 ms of CPU time"),
        "{}",
        error.message
    );
}

/// Epoch yields: on a single thread, a guest computing in a loop still lets the other
/// instances run between its ticks (without the yield, the thread would be its own until
/// the time limit ended it).
#[tokio::test]
async fn a_busy_guest_yields_so_other_instances_progress() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(
        dir.path(),
        Limits {
            fuel_per_run: 1 << 50,
            step_wall_clock_ms: 3_000,
            ..limits()
        },
    )
    .await;
    let spin = engine.start("spin", "null", named("spin")).await.unwrap();
    let quick = engine.start("panic", "null", named("quick")).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let quick_status = engine.status(&quick).unwrap().status;
        if quick_status.is_terminal() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the quick instance never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        engine.status(&spin).unwrap().status,
        RuntimeStatus::Running,
        "the other instance finished while the spinning guest was still in its step"
    );
    engine.settle().await;
    let error = engine.status(&spin).unwrap().error.unwrap();
    assert_eq!(error.kind, "time_limit", "{}", error.message);
}

/// The history limit: a generation that keeps journaling is told to continue as new at
/// 80 % of the limit and fails with `history_limit` when it reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_is_told_to_continue_as_new_and_stopped_at_its_history_limit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(
        dir.path(),
        Limits {
            max_history_per_generation: 50,
            max_timers_per_generation: 10_000,
            ..limits()
        },
    )
    .await;
    let storm = engine
        .start("timer_storm", "null", named("storm"))
        .await
        .unwrap();
    let probe = engine
        .start("history_probe", "null", named("probe"))
        .await
        .unwrap();
    engine.settle().await;
    let record = engine.status(&storm).unwrap();
    assert_eq!(record.status, RuntimeStatus::Failed, "{record:?}");
    let error = record.error.unwrap();
    assert_eq!(error.kind, "history_limit", "{}", error.message);
    assert!(
        error.message.contains("reached 50 entries"),
        "{}",
        error.message
    );
    // Asked before each of its journaled reads: told at 40 of 50 entries.
    assert_eq!(output(&engine, &probe), json!(40));
}
