//! Who is calling: a bearer token (or Dapr's `dapr-api-token` header) resolves to a tenant
//! and its scopes.

use std::collections::HashSet;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::engine::Scope;
use crate::model::{InstanceId, Tenant};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: Tenant,
    scopes: HashSet<Scope>,
    /// The tenant's slot for this request, held until the handler is done with it.
    _in_flight: Option<super::guard::InFlight>,
}

impl Principal {
    /// Fails with 403 unless the caller has `scope` (admin has every scope).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::forbidden(scope.as_str()))
        }
    }

    /// The caller's scopes by name, sorted.
    pub fn scope_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.scopes.iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// The caller's instance with local id `local`.
    pub fn instance(&self, local: &str) -> Result<InstanceId, ApiError> {
        InstanceId::scoped(&self.tenant, local)
            .map_err(|e| ApiError::bad_request("invalid_instance_id", e))
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let token = header("authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .or_else(|| header("dapr-api-token"));
        authenticate(state, token).await
    }
}

/// The caller a token names, with its request counted against the token's rate and its
/// tenant's requests in progress; the same for HTTP and gRPC. Without authentication
/// (`dev --no-auth`), everyone is the default tenant's admin.
pub(crate) async fn authenticate(
    state: &AppState,
    token: Option<&str>,
) -> Result<Principal, ApiError> {
    if !state.config.auth {
        return Ok(Principal {
            tenant: Tenant::default_tenant(),
            scopes: Scope::ALL.into_iter().collect(),
            _in_flight: None,
        });
    }
    let token = token.map(str::trim).ok_or_else(ApiError::unauthorized)?;
    let hash = crate::engine::token_hash(token);
    let record = match state.guard.cached_token(&hash) {
        Some(known) => known,
        None => {
            // A journal read: on a blocking thread, not on the async workers.
            let (engine, key) = (state.engine.clone(), hash.clone());
            let record = tokio::task::spawn_blocking(move || engine.token_by_hash(&key))
                .await
                .map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                })??;
            state.guard.remember_token(&hash, record.as_ref());
            record
        }
    }
    .ok_or_else(ApiError::unauthorized)?;
    let (per_second, in_flight) = state.engine.limit(record.tenant.as_str(), |l| {
        (l.requests_per_second, l.max_requests_in_flight)
    });
    state.guard.request(&hash, per_second)?;
    let slot = state.guard.enter(record.tenant.as_str(), in_flight)?;
    let scopes = record
        .scopes
        .iter()
        .filter_map(|s| Scope::parse(s).ok())
        .collect();
    Ok(Principal {
        tenant: record.tenant,
        scopes,
        _in_flight: Some(slot),
    })
}
