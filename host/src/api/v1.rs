//! The `/v1` routes.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::dto::{HistoryEntry, InstanceStatus, StartRequest};
use super::{ApiError, AppState, Principal, body};
use crate::engine::{Compatibility, InstanceFilter, ReusePolicy, Scope, StartOptions};
use crate::model::{RuntimeStatus, Tenant, Timestamp};

pub(super) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/tokens", post(issue_token))
        .route("/v1/workflows", get(list_workflows))
        .route("/v1/limits", get(limits))
        .route("/v1/me", get(me))
        .route("/v1/workers", get(workers))
        .route("/v1/workflows/{name}/start", post(start))
        .route("/v1/instances", get(list_instances))
        .route("/v1/instances/{id}", get(status).delete(purge))
        .route("/v1/instances/{id}/wait", get(wait))
        .route("/v1/instances/{id}/history", get(history))
        .route("/v1/instances/{id}/events/{event}", post(raise_event))
        .route("/v1/instances/{id}/terminate", post(terminate))
        .route("/v1/instances/{id}/suspend", post(suspend))
        .route("/v1/instances/{id}/resume", post(resume))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantRequest {
    name: String,
}

async fn create_tenant(
    State(state): State<AppState>,
    principal: Principal,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require(Scope::Admin)?;
    let request: TenantRequest = super::request(
        &body(raw, state.config.max_payload_bytes)?,
        "the tenant request",
    )?;
    let tenant =
        Tenant::new(request.name).map_err(|e| ApiError::bad_request("invalid_tenant", e))?;
    let created = state.engine.create_tenant(&tenant).await?;
    let scopes = [Scope::Deploy, Scope::Start, Scope::Signal, Scope::Read];
    let token = state
        .engine
        .issue_token(&tenant, &scopes, "created with the tenant")
        .await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(json!({ "tenant": tenant.as_str(), "token": token, "scopes": ["deploy", "start", "signal", "read"] }))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// The caller's tenant if absent.
    tenant: Option<String>,
    scopes: Vec<String>,
    label: Option<String>,
}

/// Issues a token with just the scopes asked for (admin only): a CI job that deploys, a
/// service that only raises events.
async fn issue_token(
    State(state): State<AppState>,
    principal: Principal,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require(Scope::Admin)?;
    let request: TokenRequest = super::request(
        &body(raw, state.config.max_payload_bytes)?,
        "the token request",
    )?;
    let tenant = match request.tenant {
        Some(name) => Tenant::new(name).map_err(|e| ApiError::bad_request("invalid_tenant", e))?,
        None => principal.tenant.clone(),
    };
    let scopes = request
        .scopes
        .iter()
        .map(|s| Scope::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request("invalid_scope", e))?;
    if scopes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_scope",
            "name at least one scope",
        ));
    }
    let label = request
        .label
        .unwrap_or_else(|| "issued through the API".to_owned());
    if label.chars().count() > super::openapi::MAX_LABEL_CHARS {
        return Err(ApiError::bad_request(
            "invalid_label",
            format!(
                "a label is at most {} characters",
                super::openapi::MAX_LABEL_CHARS
            ),
        ));
    }
    let token = state.engine.issue_token(&tenant, &scopes, &label).await?;
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "tenant": tenant.as_str(), "token": token, "scopes": names })),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DeployQuery {
    #[serde(default)]
    check: bool,
    #[serde(default)]
    migrate: bool,
}

pub(super) async fn deploy(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<DeployQuery>,
    upload: axum::body::Body,
) -> Result<Response, ApiError> {
    principal.require(Scope::Deploy)?;
    let per_minute = state
        .engine
        .limit(principal.tenant.as_str(), |l| l.deploys_per_minute);
    state.guard.deploy(principal.tenant.as_str(), per_minute)?;
    // The tenant's turn first, the upload's bytes after: a tenant buffers one upload at a
    // time, the host a few.
    let ticket = state.engine.upload_ticket(&principal.tenant)?;
    // The ticket is held while the body arrives: a deadline for the whole upload (the
    // pause window plus the limit at 1 MiB/s), so a slow sender cannot keep it.
    let limit = state.config.max_component_bytes;
    let deadline = state.config.header_read_timeout
        + std::time::Duration::from_secs_f64(limit as f64 / (1024.0 * 1024.0));
    let bytes = tokio::time::timeout(deadline, read_upload(upload, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upload_too_slow",
                format!(
                    "the upload did not arrive within {} s; send it faster or smaller",
                    deadline.as_secs()
                ),
            )
        })??;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "send the component's .wasm bytes as the request body",
        ));
    }
    if query.check || query.migrate {
        let (deployment, report) = state
            .engine
            .check_deploy_with(&ticket, bytes, query.migrate)
            .await?;
        let instances: Vec<Value> = report
            .iter()
            .map(|c| {
                let (compatible, divergence) = match &c.compatibility {
                    Compatibility::Compatible => (true, None),
                    Compatibility::Incompatible(why) => (false, Some(why.clone())),
                };
                json!({
                    "instance_id": c.instance.local(),
                    "workflow": c.workflow,
                    "compatible": compatible,
                    "divergence": divergence,
                    "migrated": c.migrated,
                })
            })
            .collect();
        let deployment = deployment.map(|d| deployment_json(&d));
        return Ok(
            Json(json!({ "deployment": deployment, "instances": instances })).into_response(),
        );
    }
    let deployment = state.engine.deploy_with(&ticket, bytes).await?;
    Ok((StatusCode::CREATED, Json(deployment_json(&deployment))).into_response())
}

/// Reads an upload of at most `limit` bytes.
async fn read_upload(upload: axum::body::Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    match axum::body::to_bytes(upload, limit).await {
        Ok(bytes) => Ok(Vec::from(bytes)),
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(cause) = source {
                if cause.is::<http_body_util::LengthLimitError>() {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!(
                            "the upload is over the limit of {limit} bytes; send less or raise \
                             the server's max_component_bytes"
                        ),
                    ));
                }
                source = cause.source();
            }
            Err(ApiError::bad_request("unreadable_body", e.to_string()))
        }
    }
}

fn deployment_json(d: &crate::engine::Deployment) -> Value {
    json!({
        "digest": d.digest.as_str(),
        "kind": d.kind.as_str(),
        "names": d.names,
        "versions": d.versions.iter().map(|(w, v)| json!({"workflow": w, "version": v})).collect::<Vec<_>>(),
    })
}

/// The limits that apply to the caller's tenant.
async fn limits(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Read)?;
    let limits = state.engine.limits(principal.tenant.as_str()).redacted();
    Ok(Json(
        json!({ "tenant": principal.tenant.as_str(), "limits": limits }),
    ))
}

/// The tenant's worker processes connected over the Durable Task protocol, and the
/// activity names they have answered (most recent first).
async fn workers(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Read)?;
    let (connected, names) = state.engine.workers(&principal.tenant);
    Ok(Json(json!({ "connected": connected, "activities": names })))
}

/// Who the caller is: its tenant and scopes (the console shows only what they allow).
async fn me(principal: Principal) -> Json<Value> {
    Json(json!({ "tenant": principal.tenant.as_str(), "scopes": principal.scope_names() }))
}

async fn list_workflows(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Read)?;
    let tenant = principal.tenant.clone();
    let live = super::blocking(&state, move |engine| engine.live_counts(&tenant)).await?;
    let workflows: Vec<Value> = state
        .engine
        .workflows(&principal.tenant)
        .into_iter()
        .map(|w| {
            let versions: Vec<Value> = w
                .versions
                .iter()
                .map(|v| {
                    let pinned = live
                        .get(&(w.name.clone(), v.digest.as_str().to_owned()))
                        .copied()
                        .unwrap_or(0);
                    json!({"version": v.version, "digest": v.digest.as_str(), "live_instances": pinned})
                })
                .collect();
            json!({ "name": w.name, "versions": versions })
        })
        .collect();
    Ok(Json(json!({ "workflows": workflows })))
}

async fn start(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require(Scope::Start)?;
    let bytes = body(raw, state.config.max_payload_bytes)?;
    let request: StartRequest = if bytes.is_empty() {
        StartRequest::default()
    } else {
        super::request(&bytes, "the start request")?
    };
    let reuse = match request.reuse.as_deref() {
        None | Some("error") => ReusePolicy::Error,
        Some("ignore") => ReusePolicy::Ignore,
        Some("terminate") => {
            // It terminates (and purges) the instance in the way: terminate's scope.
            principal.require(Scope::Signal)?;
            ReusePolicy::TerminateExisting
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_reuse",
                format!("reuse '{other}' is not one of error, ignore, terminate"),
            ));
        }
    };
    let input = request.input.unwrap_or(Value::Null).to_string();
    let options = StartOptions {
        instance_id: request.instance_id,
        tenant: Some(principal.tenant.clone()),
        reuse,
        start_at: match request.start_delay_ms {
            Some(delay) if delay > super::openapi::MAX_START_DELAY_MS => {
                return Err(ApiError::bad_request(
                    "invalid_delay",
                    format!(
                        "start_delay_ms is at most {} (100 years)",
                        super::openapi::MAX_START_DELAY_MS
                    ),
                ));
            }
            delay => delay.map(|delay| state.engine.now().plus_ms(delay)),
        },
        traceparent: super::traceparent(&headers),
    };
    let id = state.engine.start(&name, &input, options).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "instance_id": id.local() })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    workflow: Option<String>,
    status: Option<String>,
    /// Milliseconds since the epoch.
    created_after: Option<u64>,
    created_before: Option<u64>,
    /// Only ids containing this text.
    search: Option<String>,
    /// `asc` (default) or `desc`, by id.
    order: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

async fn list_instances(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Read)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<RuntimeStatus>)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_status", e))?;
    let limit = page_limit(query.limit)?;
    for (name, value) in [
        ("created_after", query.created_after),
        ("created_before", query.created_before),
    ] {
        if value.is_some_and(|v| i64::try_from(v).is_err()) {
            return Err(ApiError::bad_request(
                "invalid_time",
                format!(
                    "{name} is milliseconds since the epoch, at most {}",
                    i64::MAX
                ),
            ));
        }
    }
    let descending = match query.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_order",
                format!("order '{other}' is not one of asc, desc"),
            ));
        }
    };
    if query
        .search
        .as_ref()
        .is_some_and(|s| s.chars().count() > super::openapi::MAX_SEARCH_CHARS)
    {
        return Err(ApiError::bad_request(
            "invalid_search",
            format!(
                "a search text is at most {} characters",
                super::openapi::MAX_SEARCH_CHARS
            ),
        ));
    }
    let filter = InstanceFilter {
        search: query.search,
        descending,
        workflow: query.workflow,
        status,
        created_after: query.created_after.map(Timestamp),
        created_before: query.created_before.map(Timestamp),
        after: query.cursor,
        limit,
    };
    let tenant = principal.tenant.clone();
    let records = super::blocking(&state, move |engine| {
        engine.list_instances(&tenant, &filter)
    })
    .await?;
    // Bounded in bytes as well as in count: a page stops early once it holds
    // MAX_PAGE_BYTES of inputs, outputs and statuses, and says where to go on.
    let mut instances: Vec<InstanceStatus> = Vec::new();
    let mut bytes = 0;
    let mut cut = false;
    for record in &records {
        if bytes >= MAX_PAGE_BYTES {
            cut = true;
            break;
        }
        bytes += record.input.len()
            + record.output.as_ref().map_or(0, String::len)
            + record.custom_status.as_ref().map_or(0, String::len);
        instances.push(InstanceStatus::new(&state.engine, record));
    }
    let next = (cut || records.len() as u32 == limit)
        .then(|| {
            instances
                .len()
                .checked_sub(1)
                .and_then(|last| records.get(last))
        })
        .flatten()
        .map(|r| r.id.local().to_owned());
    Ok(Json(json!({ "instances": instances, "next_cursor": next })))
}

async fn status(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<InstanceStatus>, ApiError> {
    principal.require(Scope::Read)?;
    let id = principal.instance(&id)?;
    let record = super::blocking(&state, move |engine| engine.status(&id)).await?;
    Ok(Json(InstanceStatus::new(&state.engine, &record)))
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    timeout_ms: Option<u64>,
}

/// Long poll: answers when the instance ends, or with its current status at the timeout.
async fn wait(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Json<InstanceStatus>, ApiError> {
    principal.require(Scope::Read)?;
    let id = principal.instance(&id)?;
    let max = super::openapi::MAX_WAIT_MS;
    let timeout_ms = query.timeout_ms.unwrap_or(30_000);
    if timeout_ms > max {
        return Err(ApiError::bad_request(
            "invalid_timeout",
            format!("timeout_ms is at most {max}; wait again for longer"),
        ));
    }
    let timeout = Duration::from_millis(timeout_ms);
    // The waiter is removed when this request ends: at the timeout, or when the client
    // goes away and the future is dropped.
    let record = match tokio::time::timeout(timeout, state.engine.wait_for_completion(&id)).await {
        Ok(done) => done?,
        Err(_) => super::blocking(&state, move |engine| engine.status(&id)).await?,
    };
    Ok(Json(InstanceStatus::new(&state.engine, &record)))
}

/// A page size: 100 if not given, else 1 to 1,000.
fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit {n} is not between 1 and 1000"),
        )),
    }
}

/// Most bytes of inputs, outputs and payloads one page of a list or a history holds.
pub(super) const MAX_PAGE_BYTES: usize = 4 << 20;

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    /// Entries after this position (`next_after` of the previous page).
    after: Option<u64>,
    limit: Option<u32>,
}

/// The journal, a page at a time: at most `limit` entries (100 by default, 1000 at
/// most) and about [`MAX_PAGE_BYTES`]; `next_after` is where the next page starts.
async fn history(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    principal.require(Scope::Read)?;
    let instance = principal.instance(&id)?;
    let limit = page_limit(query.limit)?;
    let after = query.after.unwrap_or(0);
    if i64::try_from(after).is_err() {
        return Err(ApiError::bad_request(
            "invalid_position",
            format!("after is a journal position, at most {}", i64::MAX),
        ));
    }
    // Read, converted and serialised on a blocking thread: a page of large payloads is
    // milliseconds of work that must not hold up the async workers.
    let body = super::blocking(&state, move |engine| {
        let (events, more) = engine.history_page(&instance, after, limit, MAX_PAGE_BYTES)?;
        let next_after = if more {
            events.last().map(|e| e.pos)
        } else {
            None
        };
        let entries: Vec<HistoryEntry> = events.iter().map(HistoryEntry::from).collect();
        let page = json!({ "instance_id": id, "history": entries, "next_after": next_after });
        Ok(serde_json::to_vec(&page).unwrap_or_default())
    })
    .await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

async fn raise_event(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, event)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require(Scope::Signal)?;
    let payload = super::event_payload(raw, state.config.max_payload_bytes).await?;
    let instance = principal.instance(&id)?;
    state
        .engine
        .raise_event(&instance, &event, &payload)
        .await?;
    super::trace_event(&state, instance, event.clone(), &headers).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "event_raised", "instance_id": id, "event": event })),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonRequest {
    reason: Option<String>,
}

fn reason(
    raw: Result<Bytes, BytesRejection>,
    limit: usize,
    default: &str,
) -> Result<String, ApiError> {
    let bytes = body(raw, limit)?;
    let request: ReasonRequest = if bytes.is_empty() {
        ReasonRequest::default()
    } else {
        super::request(&bytes, "the request")?
    };
    Ok(request.reason.unwrap_or_else(|| default.to_owned()))
}

async fn terminate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require(Scope::Signal)?;
    let why = reason(
        raw,
        state.config.max_payload_bytes,
        "terminated through the API",
    )?;
    let done = state
        .engine
        .terminate(&principal.instance(&id)?, &why)
        .await?;
    let ids: Vec<&str> = done.iter().map(|i| i.local()).collect();
    Ok((StatusCode::ACCEPTED, Json(json!({ "terminated": ids }))).into_response())
}

async fn suspend(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    principal.require(Scope::Signal)?;
    let why = reason(
        raw,
        state.config.max_payload_bytes,
        "suspended through the API",
    )?;
    state
        .engine
        .suspend(&principal.instance(&id)?, &why)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    principal.require(Scope::Signal)?;
    let why = reason(
        raw,
        state.config.max_payload_bytes,
        "resumed through the API",
    )?;
    state.engine.resume(&principal.instance(&id)?, &why).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize)]
struct PurgeQuery {
    #[serde(default)]
    force: bool,
}

async fn purge(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<PurgeQuery>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Signal)?;
    let purged = state
        .engine
        .purge(&principal.instance(&id)?, query.force)
        .await?;
    Ok(Json(json!({ "purged": purged })))
}
