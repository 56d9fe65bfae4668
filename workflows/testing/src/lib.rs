//! Small workflows that exercise one engine behaviour each, for the end-to-end tests.
//!
//! Built twice: as is, and with the `v2` feature, which changes `changing` so that a
//! replay of a v1 journal on v2 must stop as nondeterministic.

use std::time::Duration;

use serde_json::{Value, json};
use steadfast_sdk::{Context, Error, RetryPolicy};

steadfast_sdk::workflows! {
    "event_race" => event_race,
    "buffered_events" => buffered_events,
    "flaky_retry" => flaky_retry,
    "sleeper" => sleeper,
    "changing" => changing,
    "parent" => parent,
    "echo" => echo,
    "counter" => counter,
    "entropy" => entropy,
    "call" => call,
    "collector" => collector,
    "fan_out" => fan_out,
    "parent_of" => parent_of,
    "wait_go" => wait_go,
    "looper" => looper,
    "two_events" => two_events,
    "nan_bits" => nan_bits,
    "forget" => forget,
    "pair" => pair,
    "verdict" => verdict,
    "brittle" => brittle,
}

/// Races event `e` against a one-hour timer, then waits for `e` once more.
fn event_race(ctx: &Context, _: Value) -> Result<Value, Error> {
    let event = ctx.wait_for_external_event("e");
    let timer = ctx.create_timer(Duration::from_secs(3600));
    let first = if ctx.when_any(&[&event, &timer]) == 0 {
        event.get()?
    } else {
        json!("timer")
    };
    ctx.set_custom_status(&json!({ "first": first }));
    let second: Value = ctx.wait_for_external_event("e").get()?;
    Ok(json!({ "first": first, "second": second }))
}

/// Sleeps ten minutes, then takes two `e` events in order.
fn buffered_events(ctx: &Context, _: Value) -> Result<Value, Error> {
    ctx.create_timer(Duration::from_secs(600)).wait()?;
    let a: Value = ctx.wait_for_external_event("e").get()?;
    let b: Value = ctx.wait_for_external_event("e").get()?;
    Ok(json!([a, b]))
}

/// Calls `flaky` with 3 attempts, 10 s first retry interval, backoff 2.
fn flaky_retry(ctx: &Context, input: Value) -> Result<Value, Error> {
    let policy = RetryPolicy::new(Duration::from_secs(10), 3).backoff_coefficient(2.0);
    ctx.call_activity_with_retry("flaky", &input, &policy).get()
}

/// Sleeps for `input` seconds and returns the time it woke up.
fn sleeper(ctx: &Context, seconds: u64) -> Result<u64, Error> {
    let start = ctx.now_ms();
    ctx.create_timer(Duration::from_secs(seconds)).wait()?;
    Ok(ctx.now_ms() - start)
}

#[cfg(not(feature = "v2"))]
fn changing(ctx: &Context, _: Value) -> Result<Value, Error> {
    ctx.call_activity("step_a", &1).wait()?;
    ctx.wait_for_external_event("go").wait()?;
    ctx.call_activity("step_b", &2).get()
}

#[cfg(feature = "v2")]
fn changing(ctx: &Context, _: Value) -> Result<Value, Error> {
    ctx.call_activity("step_a", &1).wait()?;
    ctx.call_activity("step_c", &3).wait()?;
    ctx.wait_for_external_event("go").wait()?;
    ctx.call_activity("step_b", &2).get()
}

/// Runs `echo` as a child and returns what it returned.
fn parent(ctx: &Context, input: Value) -> Result<Value, Error> {
    ctx.call_child_workflow("echo", &input, None).get()
}

fn echo(ctx: &Context, input: Value) -> Result<Value, Error> {
    Ok(json!({ "echo": input, "by": ctx.instance_id() }))
}

/// Counts generations: sleeps a minute, continues as new until `limit`.
fn counter(ctx: &Context, input: Value) -> Result<Value, Error> {
    let n = input["n"].as_u64().unwrap_or(0);
    let limit = input["limit"].as_u64().unwrap_or(0);
    if n >= limit {
        return Ok(json!({ "n": n }));
    }
    ctx.create_timer(Duration::from_secs(60)).wait()?;
    ctx.continue_as_new(&json!({ "n": n + 1, "limit": limit }))
}

/// Everything a workflow could get nondeterministically from a normal program — time,
/// randomness, ids, hash order, float bits — published as custom status before it waits,
/// and returned (as computed by whichever run finishes it) after the `go` event.
fn entropy(ctx: &Context, _: Value) -> Result<Value, Error> {
    let mut seen = std::collections::HashMap::new();
    for word in ["saga", "monitor", "approval", "timer", "event"] {
        seen.insert(word, word.len());
    }
    let order: Vec<&str> = seen.keys().copied().collect();
    let x = (ctx.random() % 1000) as f64 / 7.0;
    let values = json!({
        "now": ctx.now_ms(),
        "random": ctx.random(),
        "guid": ctx.new_guid(),
        "hash_order": order,
        "float_bits": (x.sqrt() * 0.1f64.sin()).to_bits(),
        "nan_bits": (f64::NAN * x).to_bits(),
    });
    ctx.set_custom_status(&values);
    ctx.wait_for_external_event("go").wait()?;
    Ok(values)
}

/// Calls `input.activity` with `input.input` and returns its result.
fn call(ctx: &Context, input: Value) -> Result<Value, Error> {
    let name = input["activity"].as_str().unwrap_or_default();
    ctx.call_activity(name, &input["input"]).get()
}

/// Collects the payloads of `item` events in order, continuing as new after every two
/// (keeping the events not yet consumed), until an item `"stop"` arrives: returns every
/// item before it. Its output proves that no raised event was lost or taken twice across
/// generations.
fn collector(ctx: &Context, input: Value) -> Result<Value, Error> {
    let mut items: Vec<Value> = serde_json::from_value(input["items"].clone()).unwrap_or_default();
    for _ in 0..2 {
        let item: Value = ctx.wait_for_external_event("item").get()?;
        if item == json!("stop") {
            return Ok(json!(items));
        }
        items.push(item);
    }
    // `burn` rounds of work before continuing: events raised meanwhile are journaled but
    // not yet seen by this generation, and must still be carried over.
    let mut x = 1u64;
    for _ in 0..input["burn"].as_u64().unwrap_or(0) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    std::hint::black_box(x);
    ctx.continue_as_new(&json!({ "items": items }))
}

/// Counts to `input.limit`: each round calls `tick` and sleeps a minute, and the
/// generation continues as new whenever the host says its history is long enough. The
/// output is the count reached, which a replay that rewound a generation would get wrong.
fn looper(ctx: &Context, input: Value) -> Result<Value, Error> {
    let mut n = input["n"].as_u64().unwrap_or(0);
    let limit = input["limit"].as_u64().unwrap_or(0);
    loop {
        if ctx.should_continue_as_new() {
            return ctx.continue_as_new(&json!({ "n": n, "limit": limit }));
        }
        if n >= limit {
            return Ok(json!(n));
        }
        n += 1;
        let tick = ctx.call_activity("tick", &n);
        let sleep = ctx.create_timer(Duration::from_secs(60));
        tick.wait()?;
        sleep.wait()?;
    }
}

/// v1 schedules `step_a` and `step_b` before waiting for either; v2 waits for `step_a`
/// before it schedules `step_c`. A v1 journal with both scheduled is not v2's.
#[cfg(not(feature = "v2"))]
fn pair(ctx: &Context, _: Value) -> Result<Value, Error> {
    let a = ctx.call_activity("step_a", &1);
    let b = ctx.call_activity("step_b", &2);
    a.wait()?;
    b.wait()?;
    Ok(json!("v1"))
}

#[cfg(feature = "v2")]
fn pair(ctx: &Context, _: Value) -> Result<Value, Error> {
    ctx.call_activity("step_a", &1).wait()?;
    ctx.call_activity("step_c", &3).wait()?;
    Ok(json!("v2"))
}

/// Calls `double` on each of `input` (a list of numbers) at once, waits for all, and
/// returns the sum of the results.
fn fan_out(ctx: &Context, input: Vec<u64>) -> Result<u64, Error> {
    let tasks: Vec<_> = input
        .iter()
        .map(|n| ctx.call_activity("double", n))
        .collect();
    let refs: Vec<&steadfast_sdk::Task> = tasks.iter().collect();
    let mut sum = 0;
    for result in ctx.when_all(&refs) {
        sum += result?.as_u64().unwrap_or(0);
    }
    Ok(sum)
}

/// Runs `input.workflow` as a child with `input.input` and returns its result.
fn parent_of(ctx: &Context, input: Value) -> Result<Value, Error> {
    let name = input["workflow"].as_str().unwrap_or_default();
    ctx.call_child_workflow(name, &input["input"], None).get()
}

/// The bits of `0.0 / 0.0` in f32 and f64: the same on every host only if the host
/// canonicalises NaNs (x86-64 hardware makes a negative NaN here, others a positive one).
fn nan_bits(_: &Context, _: Value) -> Result<Value, Error> {
    let f32_nan = std::hint::black_box(0f32) / std::hint::black_box(0f32);
    let f64_nan = std::hint::black_box(0f64) / std::hint::black_box(0f64);
    Ok(json!([f32_nan.to_bits(), f64_nan.to_bits()]))
}

/// Schedules activity `never` without ever waiting for it, waits for event `go`, and
/// returns: the activity is abandoned with the instance.
fn forget(ctx: &Context, _: Value) -> Result<Value, Error> {
    let _never = ctx.call_activity("never", &json!(null));
    ctx.wait_for_external_event("go").wait()?;
    Ok(json!("done"))
}

/// Waits for two `e` events and returns their payloads in the order it took them.
fn two_events(ctx: &Context, _: Value) -> Result<Value, Error> {
    let a: Value = ctx.wait_for_external_event("e").get()?;
    let b: Value = ctx.wait_for_external_event("e").get()?;
    Ok(json!([a, b]))
}

/// Waits for event `go` and returns its payload.
fn wait_go(ctx: &Context, _: Value) -> Result<Value, Error> {
    ctx.wait_for_external_event("go").get()
}

/// Calls `step_a`, then says which build it is: the same requests in both builds, a
/// different end (for the replay check of a finished run).
fn verdict(ctx: &Context, _: Value) -> Result<Value, Error> {
    ctx.call_activity("step_a", &1).wait()?;
    Ok(json!(if cfg!(feature = "v2") { "v2" } else { "v1" }))
}

/// Calls `slow` (an hour-long activity) and waits for it; the `v2` build panics right
/// after calling it, past what a journal of `v1` records while `slow` runs (for the
/// replay check of a live instance on a build that would fail it).
fn brittle(ctx: &Context, _: Value) -> Result<Value, Error> {
    let slow = ctx.call_activity("slow", &Value::Null);
    if cfg!(feature = "v2") {
        panic!("v2 cannot go on from here");
    }
    slow.wait()?;
    Ok(json!("done"))
}
