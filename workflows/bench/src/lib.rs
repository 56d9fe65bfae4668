//! Workflows for `steadfast bench`, embedded in the binary.
//!
//! `steps` builds a long journal: `n` sequential `noop` activities, then a wait for the
//! `go` event, then one more `noop`. The cold-resume scenario evicts it while it waits and
//! measures how fast an event brings it back.

use serde_json::{Value, json};
use steadfast_sdk::{Context, Error};

steadfast_sdk::workflows! {
    "steps" => steps,
}

fn steps(ctx: &Context, input: Value) -> Result<Value, Error> {
    let n = input["n"].as_u64().unwrap_or(0);
    for i in 0..n {
        ctx.call_activity("noop", &i).wait()?;
    }
    ctx.wait_for_external_event("go").wait()?;
    ctx.call_activity("noop", &n).wait()?;
    Ok(json!({ "steps": n + 1 }))
}
