//! Every error of the API in Graph's shape (`{"error": {"code", "message", "innerError":
//! {"request-id", "date"}}}`), and THE mapping of the state's and the engine's error classes to
//! HTTP statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::EngineError;
use crate::state::{AuthError, ErrorClass, StateError};

tokio::task_local! {
    /// The id of the request being answered (set by the API's outermost layer).
    pub static REQUEST_ID: String;
}

/// The current request's id, or a fresh one outside a request.
pub fn request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}

/// An error answer: a status, Graph's code and a message that names the problem.
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "badRequest", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "itemNotFound", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Authorization has been denied for this request.",
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "notImplemented", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceUnavailable",
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "generalException",
            message,
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "requestEntityTooLarge",
            format!("the request body is over the limit of {limit} bytes"),
        )
    }

    /// An error of `status` with Graph's code for it (for answers made outside the API's own
    /// code, such as the framework's rejections).
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status.as_u16() {
            400 | 422 => "badRequest",
            401 => "InvalidAuthenticationToken",
            403 => "Authorization_RequestDenied",
            404 => "ResourceNotFound",
            405 => "methodNotAllowed",
            409 => "conflict",
            413 => "requestEntityTooLarge",
            415 => "unsupportedMediaType",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "generalException",
        };
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        let mut message = message.into();
        if message.is_empty() {
            message = status.canonical_reason().unwrap_or("error").to_owned();
        }
        Self::new(status, code, message)
    }

    /// The JSON body of the error, with the current request's id and the time.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "code": self.code,
            "message": self.message,
            "innerError": {
                "request-id": request_id(),
                "date": rewind_common::graph_json::format_time(crate::state::unix_now()),
            },
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.message, "API error");
        }
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// THE one place a state error becomes a status.
impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        let message = e.to_string();
        match e.class() {
            ErrorClass::NotFound => ApiError::not_found(message),
            ErrorClass::Conflict => match e {
                StateError::Conflict { .. } => ApiError::conflict(format!(
                    "A recovery job is currently in progress: {message}"
                )),
                _ => ApiError::conflict(message),
            },
            ErrorClass::Invalid => ApiError::bad_request(message),
            ErrorClass::Storage => ApiError::internal(message),
        }
    }
}

/// THE one place an engine error becomes a status.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::State(s) => s.into(),
            EngineError::Invalid(m) => ApiError::bad_request(m),
            e if e.is_transient() => ApiError::unavailable(e.to_string()),
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::State(s) => s.into(),
            e => ApiError::unauthenticated(e.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("blocking work failed: {e}"))
    }
}
