//! Hostile workflows for the sandbox tests: each one tries to hurt the host in one way.
//! Every one of them must end only its own instance, with a clearly named reason.

use serde_json::{Value, json};
use steadfast_sdk::{Context, Error};

steadfast_sdk::workflows! {
    "spin" => spin,
    "allocate_forever" => allocate_forever,
    "recurse" => recurse,
    "huge_output" => huge_output,
    "panic" => panic,
    "trap_on_replay" => trap_on_replay,
    "timer_storm" => timer_storm,
    "log_flood" => log_flood,
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
