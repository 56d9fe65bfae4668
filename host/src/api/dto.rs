//! Response and request shapes of the `/v1` API.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{Engine, InstanceRecord, StoredEvent};
use crate::model::ErrorInfo;

/// An instance's status.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    pub instance_id: String,
    pub workflow: String,
    pub runtime_status: String,
    pub version: Option<u32>,
    pub generation: u32,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub custom_status: Option<Value>,
    pub parent_instance_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// When the workflow first runs, for an instance started with a delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
}

impl InstanceStatus {
    pub fn new(engine: &Engine, record: &InstanceRecord) -> Self {
        InstanceStatus {
            instance_id: record.id.local().to_owned(),
            workflow: record.workflow.clone(),
            runtime_status: record.status.as_str().to_owned(),
            version: engine.version_of(record),
            generation: record.generation,
            input: parse(&record.input),
            output: record.output.as_deref().map(parse),
            error: record.error.clone(),
            custom_status: record.custom_status.as_deref().map(parse),
            parent_instance_id: record.parent.as_ref().map(|p| p.local().to_owned()),
            created_at: rfc3339(record.created_at.0),
            updated_at: rfc3339(record.updated_at.0),
            start_at: record.start_at.map(|at| rfc3339(at.0)),
        }
    }
}

/// One journal entry, readable.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    pub position: u64,
    pub generation: u32,
    pub at: String,
    #[serde(flatten)]
    pub event: Value,
}

impl From<&StoredEvent> for HistoryEntry {
    fn from(e: &StoredEvent) -> Self {
        let mut event = serde_json::to_value(&e.event).unwrap_or(Value::Null);
        // Payloads are JSON text in the journal; show them as JSON.
        if let Value::Object(map) = &mut event {
            for key in ["input", "output", "payload"] {
                if let Some(Value::String(text)) = map.get(key)
                    && let Ok(parsed) = serde_json::from_str::<Value>(text)
                {
                    map.insert(key.to_owned(), parsed);
                }
            }
        }
        HistoryEntry {
            position: e.pos,
            generation: e.generation,
            at: rfc3339(e.at.0),
            event,
        }
    }
}

/// Body of `POST /v1/workflows/{name}/start`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub instance_id: Option<String>,
    /// `error` (default), `ignore` or `terminate`.
    #[serde(default)]
    pub reuse: Option<String>,
    /// Run the workflow first this many milliseconds from now (the server's clock). A
    /// whole number written as a float (`5000.0`) is accepted, as JSON Schema allows.
    #[serde(default, deserialize_with = "whole_number")]
    pub start_delay_ms: Option<u64>,
}

/// A non-negative whole number, also when written with a fraction of zero.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<serde_json::Number>::deserialize(d)?;
    let Some(number) = value else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "{number} is not a non-negative whole number"
        ))),
    }
}

pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-11-25T09:00:00.000Z`).
pub fn rfc3339(ms: u64) -> String {
    let t = crate::model::Timestamp(ms)
        .to_utc_string()
        .replacen(' ', "T", 1);
    format!("{t}.{:03}Z", ms % 1000)
}
