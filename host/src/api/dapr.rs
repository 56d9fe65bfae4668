//! Dapr-compatible workflow paths, with Dapr's request and response shapes, under each
//! version prefix daprd serves (`v1.0`, `v1.0-beta1`, `v1.0-alpha1`):
//! `POST /{version}/workflows/dapr/{name}/start[?instanceID=]`,
//! `GET /{version}/workflows/dapr/{id}`, and `raiseEvent/{event}`, `terminate`, `pause`,
//! `resume`, `purge` under an instance; and the sidecar checks the SDKs make first,
//! `GET /v1.0/metadata` and `GET /v1.0/healthz[/outbound]`. The caller authenticates with
//! `dapr-api-token` or a bearer token, as on `/v1` (the health checks need none).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::dto::rfc3339;
use super::{ApiError, AppState, Principal, body, json};
use crate::engine::{Scope, StartOptions};

/// Every version prefix daprd serves the workflow API under: the SDKs of different
/// years call different ones (`@dapr/dapr` 3.x calls `v1.0-beta1`).
pub(crate) const VERSIONS: [&str; 3] = ["v1.0", "v1.0-beta1", "v1.0-alpha1"];

pub(super) fn routes() -> axum::Router<AppState> {
    let mut router = axum::Router::new()
        // What the SDKs' sidecar checks ask before their first call.
        .route("/v1.0/metadata", get(metadata))
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz));
    for version in VERSIONS {
        let base = format!("/{version}/workflows/dapr");
        router = router
            .route(&format!("{base}/{{id}}"), get(get_instance))
            .route(&format!("{base}/{{id}}/start"), post(start))
            .route(
                &format!("{base}/{{id}}/raiseEvent/{{event}}"),
                post(raise_event),
            )
            .route(&format!("{base}/{{id}}/terminate"), post(terminate))
            .route(&format!("{base}/{{id}}/pause"), post(pause))
            .route(&format!("{base}/{{id}}/resume"), post(resume))
            .route(&format!("{base}/{{id}}/purge"), post(purge));
    }
    router
}

/// daprd answers its health checks with 204 and no body, without a token.
async fn healthz() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The sidecar's metadata, as far as it applies: the app id, the runtime, and the one
/// workflow component (`dapr`, the engine built in). For any valid token.
async fn metadata(principal: Principal) -> Json<Value> {
    let version = env!("CARGO_PKG_VERSION");
    Json(json!({
        "id": "steadfast",
        "runtimeVersion": format!("steadfast-{version}"),
        "enabledFeatures": [],
        "actors": [],
        "components": [{ "name": "dapr", "type": "workflow.dapr", "version": "v1", "capabilities": [] }],
        "httpEndpoints": [],
        "subscriptions": [],
        "extended": { "daprRuntimeVersion": format!("steadfast-{version}"), "tenant": principal.tenant.as_str() },
    }))
}

/// Errors in Dapr's shape: `{"errorCode": "ERR_...", "message": "..."}`.
struct DaprError(ApiError);

impl From<ApiError> for DaprError {
    fn from(e: ApiError) -> Self {
        DaprError(e)
    }
}

impl From<crate::engine::EngineError> for DaprError {
    fn from(e: crate::engine::EngineError) -> Self {
        DaprError(e.into())
    }
}

impl IntoResponse for DaprError {
    fn into_response(self) -> Response {
        let code = format!("ERR_{}", self.0.code.to_ascii_uppercase());
        (
            self.0.status,
            Json(json!({ "errorCode": code, "message": self.0.message })),
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct StartQuery {
    #[serde(rename = "instanceID")]
    instance_id: Option<String>,
}

async fn start(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Query(query): Query<StartQuery>,
    headers: axum::http::HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, DaprError> {
    principal.require(Scope::Start)?;
    let bytes = body(raw, state.config.max_payload_bytes)?;
    let input = if bytes.is_empty() {
        Value::Null
    } else {
        json::<Value>(&bytes, "the workflow input")?
    };
    let options = StartOptions {
        instance_id: query.instance_id,
        tenant: Some(principal.tenant.clone()),
        traceparent: super::traceparent(&headers),
        ..StartOptions::default()
    };
    let id = state
        .engine
        .start(&name, &input.to_string(), options)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "instanceID": id.local() })),
    )
        .into_response())
}

async fn get_instance(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, DaprError> {
    principal.require(Scope::Read)?;
    let record = state.engine.status(&principal.instance(&id)?)?;
    let mut properties = Map::new();
    properties.insert(
        "dapr.workflow.input".into(),
        Value::String(record.input.clone()),
    );
    if let Some(output) = &record.output {
        properties.insert("dapr.workflow.output".into(), Value::String(output.clone()));
    }
    if let Some(custom) = &record.custom_status {
        properties.insert(
            "dapr.workflow.custom_status".into(),
            Value::String(custom.clone()),
        );
    }
    if let Some(error) = &record.error {
        properties.insert(
            "dapr.workflow.failure.error_type".into(),
            Value::String(error.kind.clone()),
        );
        properties.insert(
            "dapr.workflow.failure.error_message".into(),
            Value::String(error.message.clone()),
        );
    }
    Ok(Json(json!({
        "instanceID": record.id.local(),
        "workflowName": record.workflow,
        "createdAt": rfc3339(record.created_at.0),
        "lastUpdatedAt": rfc3339(record.updated_at.0),
        "runtimeStatus": record.status.as_str(),
        "properties": properties,
    })))
}

async fn raise_event(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, event)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, DaprError> {
    principal.require(Scope::Signal)?;
    let payload = super::event_payload(raw, state.config.max_payload_bytes).await?;
    let instance = principal.instance(&id)?;
    state
        .engine
        .raise_event(&instance, &event, &payload)
        .await?;
    super::trace_event(&state, instance, event, &headers).await;
    Ok(StatusCode::ACCEPTED)
}

async fn terminate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, DaprError> {
    principal.require(Scope::Signal)?;
    state
        .engine
        .terminate(&principal.instance(&id)?, "terminated through the Dapr API")
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, DaprError> {
    principal.require(Scope::Signal)?;
    state
        .engine
        .suspend(&principal.instance(&id)?, "paused through the Dapr API")
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, DaprError> {
    principal.require(Scope::Signal)?;
    state
        .engine
        .resume(&principal.instance(&id)?, "resumed through the Dapr API")
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn purge(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, DaprError> {
    principal.require(Scope::Signal)?;
    state.engine.purge(&principal.instance(&id)?, false).await?;
    Ok(StatusCode::ACCEPTED)
}
