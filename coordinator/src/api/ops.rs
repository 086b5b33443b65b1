//! Operations, without a token: `/healthz` (the process lives), `/readyz` (the state and the
//! queue answer) and `/metrics` (the process's Prometheus text).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::ApiState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(api): State<ApiState>) -> Result<&'static str, ApiError> {
    api.engine
        .ready()
        .await
        .map_err(|e| ApiError::unavailable(format!("not ready: {e}")))?;
    Ok("ready\n")
}

pub async fn metrics(State(api): State<ApiState>) -> Result<Response, ApiError> {
    let handle = api
        .metrics
        .clone()
        .ok_or_else(|| ApiError::unavailable("no metrics recorder is installed in this process"))?;
    let text = tokio::task::spawn_blocking(move || handle.render()).await?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            rewind_worker::telemetry::PROMETHEUS_CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}
