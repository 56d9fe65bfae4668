//! Hostile workflows for the sandbox tests: each one tries to hurt the host in one way.
//! Every one of them must end only its own instance, with a clearly named reason.

use serde_json::{Value, json};
use steadfast_sdk::{Context, Error};

#[cfg(not(feature = "effectful_names"))]
steadfast_sdk::workflows! {
    "spin" => spin,
    "allocate_forever" => allocate_forever,
    "recurse" => recurse,
    "huge_output" => huge_output,
    "panic" => panic,
    "trap_on_replay" => trap_on_replay,
    "timer_storm" => timer_storm,
    "log_flood" => log_flood,
    "nan_backoff" => nan_backoff,
    "far_timer" => far_timer,
    "history_probe" => history_probe,
    "burn" => burn,
}

/// An infinite loop.
fn spin(_: &Context, _: Value) -> Result<Value, Error> {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Allocates until something gives.
fn allocate_forever(_: &Context, _: Value) -> Result<Value, Error> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
}

/// Unbounded recursion.
fn recurse(_: &Context, _: Value) -> Result<Value, Error> {
    #[allow(unconditional_recursion)] // the point of this workflow
    fn down(n: u64) -> u64 {
        std::hint::black_box(down(std::hint::black_box(n + 1)) + 1)
    }
    Ok(json!(down(0)))
}

/// An output far over any payload limit.
fn huge_output(_: &Context, _: Value) -> Result<Value, Error> {
    Ok(json!("x".repeat(1 << 20)))
}

fn panic(_: &Context, _: Value) -> Result<Value, Error> {
    panic!("the workflow gave up");
}

/// Behaves live, traps when replayed: panics if the host replays it.
fn trap_on_replay(ctx: &Context, _: Value) -> Result<Value, Error> {
    let _first = ctx.wait_for_external_event("first");
    if ctx.is_replaying() {
        panic!("replay is not what I expected");
    }
    ctx.wait_for_external_event("go").wait()?;
    Ok(json!("done"))
}

/// Creates timers without end.
fn timer_storm(ctx: &Context, _: Value) -> Result<Value, Error> {
    let mut timers = Vec::new();
    loop {
        timers.push(ctx.create_timer(std::time::Duration::from_secs(3600)));
    }
}

/// Logs a megabyte in one step, then, after a timer, one more line.
fn log_flood(ctx: &Context, _: Value) -> Result<Value, Error> {
    let line = "f".repeat(1023);
    for _ in 0..1024 {
        ctx.log(&line);
    }
    ctx.create_timer(std::time::Duration::from_secs(60))
        .wait()?;
    ctx.log("still heard after the timer");
    Ok(json!("done"))
}

/// Schedules an activity whose retry policy has a NaN backoff coefficient.
fn nan_backoff(_: &Context, _: Value) -> Result<Value, Error> {
    use steadfast_sdk::bindings::steadfast::workflow::{context, types};
    let policy = types::RetryPolicy {
        first_retry_interval_ms: 1000,
        backoff_coefficient: f64::NAN,
        max_retry_interval_ms: 10_000,
        max_attempts: 3,
        retry_timeout_ms: None,
        non_retryable_kinds: Vec::new(),
    };
    let options = types::ActivityOptions {
        retry: Some(policy),
    };
    let task = context::call_activity("nothing", "null", &options);
    let _ = context::await_(&task);
    Ok(json!("scheduled"))
}

/// A timer at the largest time a u64 can name.
fn far_timer(ctx: &Context, _: Value) -> Result<Value, Error> {
    ctx.create_timer_at(u64::MAX).wait()?;
    Ok(json!("fired"))
}

/// Reads the time until the host says to continue as new; returns how often it read.
fn history_probe(ctx: &Context, _: Value) -> Result<Value, Error> {
    let mut reads = 0u64;
    while !ctx.should_continue_as_new() {
        ctx.now_ms();
        reads += 1;
    }
    Ok(json!(reads))
}

/// Computes for `input` rounds (a busy step), calls activity `after_burn`, waits for
/// event `go`, computes again, and returns all three results. The input is a number of
/// rounds for both computations, or `{"first": n, "then": m}`.
fn burn(ctx: &Context, input: Value) -> Result<Value, Error> {
    let (first_rounds, then_rounds) = match input.as_u64() {
        Some(n) => (n, n),
        None => (
            input["first"].as_u64().unwrap_or(0),
            input["then"].as_u64().unwrap_or(0),
        ),
    };
    let spin = |seed: u64, rounds: u64| {
        let mut x = seed;
        for _ in 0..rounds {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        x
    };
    let first = spin(1, first_rounds);
    let called: Value = ctx.call_activity("after_burn", &first).get()?;
    ctx.wait_for_external_event("go").wait()?;
    Ok(json!([first, called, spin(first, then_rounds)]))
}

/// With `effectful_names`, `names` tries to call an activity and start a child: the host
/// must refuse both at deploy time, whoever deploys it.
#[cfg(feature = "effectful_names")]
mod effectful_names {
    use steadfast_sdk::bindings::exports::steadfast::workflow::workflows::Guest;
    use steadfast_sdk::bindings::steadfast::workflow::{context, types};

    struct Names;

    impl Guest for Names {
        fn names() -> Vec<String> {
            let options = types::ActivityOptions { retry: None };
            let child = context::call_child_workflow("spin", "null", None);
            let activity = context::call_activity("launch_missiles", "null", &options);
            // Waiting is what made the old host write and dispatch what was asked.
            let _ = context::await_(&activity);
            drop(child);
            vec!["innocent".to_owned()]
        }

        fn run(_: String, _: String) -> Result<String, types::ErrorInfo> {
            Ok("null".to_owned())
        }
    }

    steadfast_sdk::bindings::export_orchestrator!(Names with_types_in steadfast_sdk::bindings);
}
