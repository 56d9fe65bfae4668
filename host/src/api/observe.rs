//! `/metrics`, and the timing of every HTTP request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, Principal};
use crate::engine::Scope;
use crate::metrics::{ResponseLabels, RouteLabels, Text};

/// The host's metrics, for a token with the `metrics` scope (they name every tenant).
pub(super) async fn metrics(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Scope::Metrics)?;
    let text = state.engine.render_metrics();
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// Counts and times a request under its route's pattern (`/v1/instances/{id}`), never the
/// path asked for: a label per instance id would grow without bound.
pub(super) async fn time_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let began = Instant::now();
    let route = Text::from(
        request
            .extensions()
            .get::<MatchedPath>()
            .map_or("<unmatched>", MatchedPath::as_str),
    );
    // Any token is a method to HTTP; only the standard ones become labels.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    };
    let response = next.run(request).await;
    let metrics = state.engine.metrics();
    metrics
        .http_duration
        .get_or_create(&RouteLabels {
            method,
            route: route.clone(),
        })
        .observe(began.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&ResponseLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
