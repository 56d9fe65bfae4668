//! Activities that reach the network, as an activity component built for `wasm32-wasip2`:
//! their requests leave through `wasi:http`, and only to what the tenant's `http_allow`
//! list names.
//!
//! - `check_service_status` — the monitor's health check: `GET` the service's health URL;
//!   `"healthy"` on a 200, `"unhealthy"` on any other status or a network failure. A
//!   request the allow-list refuses is an error, not "unhealthy": the check never ran.
//! - `http_get` — `GET input.url` and return `{status, body}`.

use serde_json::{Value, json};
use steadfast_sdk::{Error, http, log};

steadfast_sdk::activities! {
    "check_service_status" => check_service_status,
    "http_get" => http_get,
}

/// The health URL: `input.url`, else `http://{job_id}:8000/health` for `input.job_id` or a
/// plain string input (the tutorial's shape).
fn health_url(input: &Value) -> Result<String, Error> {
    match (input.get("url"), input.get("job_id"), input) {
        (Some(Value::String(url)), _, _) => Ok(url.clone()),
        (_, Some(Value::String(job)), _) | (None, None, Value::String(job)) => {
            Ok(format!("http://{job}:8000/health"))
        }
        _ => Err(Error::new(
            "invalid_input",
            "check_service_status needs {\"url\": ...}, {\"job_id\": ...} or a job id string",
        )),
    }
}

fn check_service_status(input: Value) -> Result<String, Error> {
    let url = health_url(&input)?;
    let healthy = match http::get(&url) {
        Ok(response) => response.status == 200,
        Err(e) if e.kind == "http_denied" || e.kind == "invalid_url" => return Err(e),
        Err(e) => {
            log(format!("health check of {url} failed: {}", e.message));
            false
        }
    };
    Ok(if healthy { "healthy" } else { "unhealthy" }.to_owned())
}

fn http_get(input: Value) -> Result<Value, Error> {
    let url = input
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::new("invalid_input", "http_get needs {\"url\": ...}"))?;
    let response = http::get(url)?;
    Ok(json!({ "status": response.status, "body": response.text() }))
}
