//! API errors: every failure becomes a status code and a JSON body that says what was
//! wrong and what to do, `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::engine::EngineError;
use crate::sandbox::SandboxError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds the client should wait before trying again (a 429's `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a token as 'Authorization: Bearer <token>' (steadfast dev writes one to <data-dir>/admin.token)",
        )
    }

    pub fn forbidden(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token lacks the '{scope}' scope"),
        )
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            EngineError::UnknownWorkflow { .. } => (StatusCode::NOT_FOUND, "unknown_workflow"),
            EngineError::InvalidJson { .. } => (StatusCode::BAD_REQUEST, "invalid_json"),
            EngineError::InvalidInstanceId(_) => (StatusCode::BAD_REQUEST, "invalid_instance_id"),
            EngineError::InstanceExists(_) => (StatusCode::CONFLICT, "instance_exists"),
            EngineError::InstanceNotFound(_) => (StatusCode::NOT_FOUND, "instance_not_found"),
            EngineError::NotRunning { .. } => (StatusCode::CONFLICT, "instance_not_running"),
            EngineError::WrongStatus { .. } => (StatusCode::CONFLICT, "wrong_status"),
            EngineError::StillRunning { .. } => (StatusCode::CONFLICT, "instance_running"),
            EngineError::Component(crate::sandbox::SandboxError::NotAComponent(_)) => {
                (StatusCode::BAD_REQUEST, "not_a_component")
            }
            EngineError::Component(SandboxError::ForbiddenImports { .. }) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "forbidden_imports")
            }
            EngineError::Component(SandboxError::NotOurWorld(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "wrong_world")
            }
            EngineError::Component(SandboxError::TooLarge(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "component_too_large")
            }
            EngineError::Component(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_component"),
            EngineError::NotOurWorld(_) => (StatusCode::UNPROCESSABLE_ENTITY, "wrong_world"),
            EngineError::Inspect(..) => (StatusCode::UNPROCESSABLE_ENTITY, "component_failed"),
            EngineError::TooManyInstances { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_instances")
            }
            EngineError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            EngineError::UnknownTenant(_) => (StatusCode::NOT_FOUND, "unknown_tenant"),
            EngineError::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            EngineError::TooManyEvents { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_events"),
            EngineError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            EngineError::NoVirtualClock
            | EngineError::CannotReplay(_)
            | EngineError::InvalidLimits { .. }
            | EngineError::Journal(_) => {
                tracing::error!(error = %message, "request failed inside the engine");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let retry_after = match &e {
            EngineError::Busy { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            EngineError::TooManyEvents { .. } => Some(1),
            _ => None,
        };
        ApiError {
            status,
            code,
            message,
            retry_after,
        }
    }
}
