//! The connector's errors and their class: transient (retry later) or permanent (record the
//! reason), decided from the HTTP status and the Graph error code, never from the message.

use std::time::Duration;

use crate::error::SnapshotError;

/// What the caller should do with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, an unavailable service, a dropped connection, a timeout: try again later.
    Transient,
    /// A refused or impossible request, bad credentials, a malformed answer: record the reason.
    Permanent,
}

/// Why a Graph call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Graph answered with an error status.
    #[error("graph answered {status} {code}: {message}")]
    Graph {
        status: u16,
        code: String,
        message: String,
        /// The `Retry-After` the answer carried, if any.
        retry_after: Option<Duration>,
    },
    /// The token endpoint refused the credentials (a wrong secret, an unknown client or tenant).
    #[error("authentication refused ({status} {code}): {message}")]
    Auth {
        status: u16,
        code: String,
        message: String,
    },
    /// The request did not get a complete answer (connection refused or dropped, timeout).
    #[error("transport failure: {0}")]
    Transport(String),
    /// The request cannot be made (a malformed URL, TLS refused): retrying cannot help.
    #[error("request cannot be sent: {0}")]
    Request(String),
    /// The answer could not be read as the dialect says it should be.
    #[error("malformed answer from {url}: {reason}")]
    Malformed { url: String, reason: String },
    /// The settings cannot be used.
    #[error("invalid connector settings: {0}")]
    Settings(String),
    /// The work stopped because another part of it failed (that failure is reported).
    #[error("stopped because another part of the work failed")]
    Aborted,
    /// Writing the captured snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl ConnectorError {
    /// Transient or permanent, from the status (and the kind of failure).
    pub fn class(&self) -> ErrorClass {
        match self {
            ConnectorError::Graph { status, .. } => status_class(*status),
            ConnectorError::Transport(_) => ErrorClass::Transient,
            ConnectorError::Auth { status, .. } => status_class(*status),
            ConnectorError::Malformed { .. }
            | ConnectorError::Request(_)
            | ConnectorError::Aborted
            | ConnectorError::Settings(_)
            | ConnectorError::Snapshot(_) => ErrorClass::Permanent,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The HTTP status, when Graph or the token endpoint answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectorError::Graph { status, .. } | ConnectorError::Auth { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The Graph (or OAuth) error code, when one was given.
    pub fn code(&self) -> Option<&str> {
        match self {
            ConnectorError::Graph { code, .. } | ConnectorError::Auth { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::Graph { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The class of an HTTP error status: throttling, timeouts and server failures are transient.
pub fn status_class(status: u16) -> ErrorClass {
    match status {
        408 | 429 | 500 | 502 | 503 | 504 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_status() {
        let graph = |status| ConnectorError::Graph {
            status,
            code: "x".into(),
            message: String::new(),
            retry_after: None,
        };
        for s in [429, 500, 503, 504] {
            assert!(graph(s).is_transient(), "{s}");
        }
        for s in [400, 403, 404, 409, 412] {
            assert_eq!(graph(s).class(), ErrorClass::Permanent, "{s}");
        }
        assert!(ConnectorError::Transport("reset".into()).is_transient());
        let auth = ConnectorError::Auth {
            status: 401,
            code: "invalid_client".into(),
            message: String::new(),
        };
        assert_eq!(auth.class(), ErrorClass::Permanent);
    }
}
