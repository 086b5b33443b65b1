//! Graph-shaped errors of the simulator: each carries its HTTP status and Graph error code, and
//! renders as `{"error":{"code","message","innerError":{"date","request-id"}}}`.

use axum::http::StatusCode;
use serde_json::{json, Value as Json};

/// One error the simulator answers with, in Graph's terms.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct GraphError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429 and 503 only).
    pub retry_after: Option<u64>,
}

impl GraphError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!("Resource '{what}' does not exist or one of its queried reference-property objects are not present."),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
    }

    pub fn unsupported_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request_UnsupportedQuery", message)
    }

    pub fn no_route() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Resource not found for the segment.",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "The HTTP method is not allowed on this resource.",
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        )
    }

    /// A cloud write of a property that on-premises sync masters.
    pub fn synced_object() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration.",
        )
    }

    pub fn throttled(message: impl Into<String>, retry_after: Option<u64>) -> Self {
        Self {
            retry_after,
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
        }
    }

    pub fn unavailable(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "serviceNotAvailable",
                "The service is temporarily unavailable (injected fault).",
            )
        }
    }

    /// The Graph error body, stamped with the time and a fresh request id.
    pub fn body(&self, date: &str) -> Json {
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": date,
                    "request-id": new_request_id(),
                    "client-request-id": new_request_id(),
                }
            }
        })
    }
}

/// A random GUID in its text form.
pub fn new_request_id() -> String {
    uuid::Uuid::from_u128(random_guid())
        .hyphenated()
        .to_string()
}

/// A random version-4 GUID as 128 bits.
pub fn random_guid() -> u128 {
    let raw: u128 = rand::random();
    (raw & !(0xF000u128 << 64) & !(0xC000u128 << 48)) | (0x4000u128 << 64) | (0x8000u128 << 48)
}
