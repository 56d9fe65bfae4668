//! An orchestrator built for `wasm32-wasip2` that reads a file: its component imports
//! `wasi:filesystem` (and the rest of WASI). Steadfast must refuse to deploy it.

use serde_json::Value;
use steadfast_sdk::{Context, Error};

steadfast_sdk::workflows! {
    "read_secrets" => read_secrets,
}

fn read_secrets(_: &Context, _: Value) -> Result<Value, Error> {
    let secret = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    Ok(Value::String(secret))
}
