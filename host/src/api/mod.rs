//! The HTTP API: JSON under `/v1/`, Dapr-compatible paths under `/v1.0/workflows/dapr/`,
//! the OpenAPI document at `/v1/openapi.json`, the web console at `/ui/` and Prometheus
//! metrics at `/metrics`.
//!
//! **Invariant:** this is the only module that knows HTTP and the JSON shapes of requests
//! and responses. Every route but `/healthz` and the OpenAPI document authenticates its
//! caller, and every instance id in a path is read inside the caller's tenant, so a token
//! of one tenant gets 404 for anything of another.

mod auth;
mod console;
mod dapr;
mod dto;
mod error;
mod grpc;
mod guard;
mod observe;
mod openapi;
mod server;
mod v1;

use v1::MAX_PAGE_BYTES;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

pub use auth::Principal;
pub use error::ApiError;

use crate::engine::Engine;

/// Limits and switches of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest JSON body (inputs, event payloads), in bytes.
    pub max_payload_bytes: usize,
    /// Largest component upload, in bytes.
    pub max_component_bytes: usize,
    /// When false every caller acts as the default tenant's admin (loopback dev only), and
    /// only requests a web page cannot forge are answered.
    pub auth: bool,
    /// How long a client may take to send a request's headers; also how long a keep-alive
    /// connection may sit idle, a request body may pause, and a response may wait for the
    /// client to read it.
    pub header_read_timeout: std::time::Duration,
    /// Most client connections served at once.
    pub max_connections: usize,
    /// How long a response may wait for the client to read any of it before the
    /// connection is dropped.
    pub write_timeout: std::time::Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_payload_bytes: 1024 * 1024,
            max_component_bytes: 64 * 1024 * 1024,
            auth: true,
            header_read_timeout: std::time::Duration::from_secs(10),
            max_connections: 1_024,
            write_timeout: std::time::Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    engine: Engine,
    config: Arc<ApiConfig>,
    guard: Arc<guard::Guard>,
}

/// The router with every route.
pub fn router(engine: Engine, config: ApiConfig) -> Router {
    router_with(app_state(engine, &config), &config)
}

fn app_state(engine: Engine, config: &ApiConfig) -> AppState {
    AppState {
        engine,
        config: Arc::new(config.clone()),
        guard: Arc::default(),
    }
}

fn router_with(state: AppState, config: &ApiConfig) -> Router {
    let components = Router::new()
        .route("/v1/components", axum::routing::post(v1::deploy))
        .layer(DefaultBodyLimit::max(config.max_component_bytes));
    let router = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/v1/openapi.json", axum::routing::get(openapi::document))
        .route("/metrics", axum::routing::get(observe::metrics))
        .merge(v1::routes())
        .merge(dapr::routes())
        .merge(console::routes())
        .layer(DefaultBodyLimit::max(config.max_payload_bytes))
        .merge(components)
        .fallback(|| async {
            ApiError::not_found("no such route; the API is described at /v1/openapi.json")
        });
    let router = if config.auth {
        router
    } else {
        router.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::loopback_only,
        ))
    };
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::time_requests,
        ))
        .with_state(state)
}

/// Serves the HTTP API on `http` and, if given, the Durable Task sidecar protocol (gRPC)
/// on `grpc`, with one token cache and one set of rates, until `shutdown` resolves.
pub async fn serve_with_grpc(
    http: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    engine: Engine,
    config: ApiConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine_of_state = engine.clone();
    let state = app_state(engine, &config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopping = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let grpc = grpc.map(|listener| tokio::spawn(grpc::serve(listener, state.clone(), stopping())));
    let http = tokio::spawn(serve_state(http, state, config, stopping()));
    shutdown.await;
    let _ = stop.send(true);
    // Workers' streams never end on their own: end them, so the server can stop.
    engine_of_state.close_workers();
    if let Some(grpc) = grpc {
        match tokio::time::timeout(server::SHUTDOWN_GRACE, grpc).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the gRPC server stopped with an error"),
            Ok(Err(e)) => tracing::error!(error = %e, "the gRPC server panicked"),
            Err(_) => {
                tracing::warn!("gRPC calls still open after the shutdown grace; leaving them")
            }
            Ok(Ok(Ok(()))) => {}
        }
    }
    http.await.map_err(std::io::Error::other)?
}

/// Serves the API on `listener` until `shutdown` resolves; requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    config: ApiConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_state(listener, app_state(engine, &config), config, shutdown).await
}

async fn serve_state(
    listener: tokio::net::TcpListener,
    state: AppState,
    config: ApiConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bounds = server::Bounds {
        header_read_timeout: config
            .header_read_timeout
            .max(std::time::Duration::from_millis(100)),
        max_connections: config.max_connections,
        write_timeout: config
            .write_timeout
            .max(std::time::Duration::from_millis(100)),
    };
    let app = router_with(state, &config);
    server::run(listener, app, bounds, shutdown).await
}

/// Runs a synchronous engine call (a journal read) on a blocking thread, so a slow read
/// never holds up the async workers that answer every other request.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&Engine) -> Result<T, crate::engine::EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || read(&engine))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

/// The raw body, or a clear error when it is over the limit.
pub(crate) fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is over the limit of {limit} bytes; send less or raise the server's limit"),
            )
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })
}

/// An event payload from a request body: JSON text (`null` for an empty body). A large
/// body is parsed on a blocking thread.
pub(crate) async fn event_payload(
    raw: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<String, ApiError> {
    let bytes = body(raw, limit)?;
    if bytes.is_empty() {
        return Ok("null".to_owned());
    }
    let large = bytes.len() > crate::engine::OFF_THREAD_BYTES;
    let parse = move || Ok(json::<serde_json::Value>(&bytes, "the event payload")?.to_string());
    if large {
        tokio::task::spawn_blocking(parse).await.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?
    } else {
        parse()
    }
}

/// Parses a JSON body, naming what was wrong with it.
pub(crate) fn json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("{what} is not valid JSON: {e}"))
    })
}

/// A request body that must be a JSON object of `T`'s fields. (Parsing into `T` alone
/// would also take an array of its fields in order.)
pub(crate) fn request<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    let value: serde_json::Value = json(bytes, what)?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_json",
            format!("{what} must be a JSON object"),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("{what} is not valid: {e}")))
}

/// The request's W3C `traceparent` header, if it has a usable one.
pub(crate) fn traceparent(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| crate::traces::parse_traceparent(v).is_some())
        .map(str::to_owned)
}

/// Records a raised event in the caller's trace (journal reads, so off the async workers;
/// nothing at all when traces are off).
pub(crate) async fn trace_event(
    state: &AppState,
    instance: crate::model::InstanceId,
    event: String,
    headers: &axum::http::HeaderMap,
) {
    if !state.engine.traces_on() {
        return;
    }
    let caller = traceparent(headers);
    let engine = state.engine.clone();
    let _ = tokio::task::spawn_blocking(move || {
        engine.trace_event_raised(&instance, &event, caller.as_deref());
    })
    .await;
}
