//! Bearer tokens: the middleware that turns `Authorization: Bearer <token>` into the caller's
//! [`Caller`] (401 for none, a bad one, an expired or a revoked one), and the checks a route
//! makes: 404 for a tenant outside the token's list, 403 for a right its role lacks.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::ApiState;
use crate::state::{Role, TokenRecord};

/// What a route needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    /// Backups, reports and jobs (reader, administrator).
    Read,
    /// Starting backups and reports, cancelling (administrator).
    Write,
    /// Tenants and tokens (operator).
    Operate,
}

impl Right {
    pub fn granted_to(self, role: Role) -> bool {
        match self {
            Right::Read => matches!(role, Role::Reader | Role::Administrator),
            Right::Write => role == Role::Administrator,
            Right::Operate => role == Role::Operator,
        }
    }
}

/// The authenticated caller of a request (in the request's extensions).
#[derive(Clone, Debug)]
pub struct Caller(pub TokenRecord);

impl Caller {
    /// The checks of a route on `tenant`: 404 when the tenant is outside the token's list (as if
    /// it did not exist), then 403 when the role lacks `right`.
    pub fn on_tenant(&self, tenant: &str, right: Right) -> Result<(), ApiError> {
        if !self.0.tenants.contains(tenant) {
            return Err(ApiError::not_found(format!("tenant {tenant} not found")));
        }
        self.may(right)
    }

    /// The check of a route on no tenant: 403 when the role lacks `right`.
    pub fn may(&self, right: Right) -> Result<(), ApiError> {
        if right.granted_to(self.0.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

/// The token of a request's `Authorization` header.
fn bearer(request: &Request) -> Result<&str, ApiError> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("no Authorization header: send a Bearer token"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthenticated("the Authorization header is not text"))?;
    let (scheme, token) = text.split_once(' ').ok_or_else(|| {
        ApiError::unauthenticated("the Authorization header is not \"Bearer <token>\"")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthenticated(
            "the Authorization header is not \"Bearer <token>\"",
        ));
    }
    Ok(token.trim())
}

/// Authenticates every request it wraps; the token's hash is looked up each time, so a
/// revoked or expired token is refused at once.
pub async fn authenticate(
    State(api): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let record = match bearer(&request) {
        Ok(token) => {
            let token = token.to_owned();
            let state = api.engine.state().clone();
            let now = crate::state::unix_now();
            match tokio::task::spawn_blocking(move || state.authenticate(&token, now)).await {
                Ok(Ok(record)) => record,
                Ok(Err(e)) => return ApiError::from(e).into_response(),
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
        Err(e) => return e.into_response(),
    };
    request.extensions_mut().insert(Caller(record));
    next.run(request).await
}
