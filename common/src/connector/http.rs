//! The request core: the token cache (client credentials, renewed before expiry by one thread
//! while the others use the still-valid token, refreshed once on a 401), one attempt of a Graph
//! request with its error read into a [`ConnectorError`], bodies read up to their limits, and
//! the retry loop (backon's exponential backoff with jitter, `Retry-After` honoured up to
//! `max_retry_after`). Every attempt is counted in the `metrics` facade
//! ([`crate::metrics::GRAPH_REQUESTS_TOTAL`] by status class, 429s, seconds to the answer's
//! headers, retries, token requests), beside the connector's own [`super::TrafficTotals`].

use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Deserialize;
use serde_json::Value as Json;

use super::{CachedToken, ConnectorError, GraphConnector, TokenCache};
use crate::metrics as names;

/// An HTTP method the connector uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A successful answer: its status and the reader of its body.
pub(crate) type Response = ureq::http::Response<ureq::Body>;

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Reads `{"error":{"code","message"}}` (Graph) or `{"error":"...","error_description"}` (OAuth).
fn error_fields(body: &str) -> (String, String) {
    let json: Json = serde_json::from_str(body).unwrap_or(Json::Null);
    match &json["error"] {
        Json::Object(e) => (
            e.get("code")
                .and_then(Json::as_str)
                .unwrap_or("unknown")
                .to_owned(),
            e.get("message")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned(),
        ),
        Json::String(code) => (
            code.clone(),
            json["error_description"].as_str().unwrap_or("").to_owned(),
        ),
        _ => ("unknown".to_owned(), body.chars().take(200).collect()),
    }
}

/// The `Retry-After` of an answer, in seconds (an HTTP date is not used by Graph), cut to `max`
/// (a huge or infinite value too). A value that is not a number of seconds (garbage, NaN,
/// negative) is not used.
pub(crate) fn parse_retry_after(value: Option<&str>, max: Duration) -> Option<Duration> {
    let seconds = value?.trim().parse::<f64>().ok().filter(|s| *s >= 0.0)?;
    Some(Duration::try_from_secs_f64(seconds).map_or(max, |d| d.min(max)))
}

/// A request to `url` that got no answer: a connection or timeout failure is transient; a
/// request that cannot be made at all (bad URL, TLS refused) is permanent. The message names
/// the URL (without its query, which never holds a secret but can be long).
fn transport(url: &str, e: ureq::Error) -> ConnectorError {
    let url = url.split('?').next().unwrap_or(url);
    match e {
        ureq::Error::BadUri(_)
        | ureq::Error::Http(_)
        | ureq::Error::Tls(_)
        | ureq::Error::TlsRequired
        | ureq::Error::RequireHttpsOnly(_)
        | ureq::Error::InvalidProxyUrl
        | ureq::Error::BodyExceedsLimit(_)
        | ureq::Error::LargeResponseHeader(..) => ConnectorError::Request(format!("{url}: {e}")),
        other => ConnectorError::Transport(format!("{url}: {other}")),
    }
}

/// A body reader that counts the bytes it hands out.
pub(crate) struct Counting<'a, R> {
    inner: R,
    connector: &'a GraphConnector,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.connector
            .counters
            .bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Counts one request of `counter` (Graph requests, token requests) under its status class.
fn count_request(counter: &'static str, class: &'static str) {
    metrics::counter!(counter, names::label::CLASS => class).increment(1);
}

/// Counts what an inner answer of a `$batch` tells (its 429s), the `$batch` itself having been
/// counted as one request.
pub(crate) fn count_inner_answer(status: u16) {
    if status == 429 {
        metrics::counter!(names::GRAPH_THROTTLED_TOTAL).increment(1);
    }
}

fn token_poisoned() -> ConnectorError {
    ConnectorError::Settings("the token cache was poisoned".into())
}

/// The end of a token request: no thread is renewing any more, and the waiting ones wake up
/// (also when the request failed or panicked).
struct Renewal<'a>(&'a GraphConnector);

impl Drop for Renewal<'_> {
    fn drop(&mut self) {
        let mut cache = self
            .0
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.renewing = false;
        drop(cache);
        self.0.token_renewed.notify_all();
    }
}

/// A JSON answer, an empty one read as null.
fn parse_json_answer(url: &str, buf: &[u8]) -> Result<Json, ConnectorError> {
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(Json::Null);
    }
    serde_json::from_slice(buf).map_err(|e| json_error(url, e))
}

/// A JSON body that failed to parse: a cut connection (transient) or a malformed answer.
pub(crate) fn json_error(url: &str, e: serde_json::Error) -> ConnectorError {
    if e.is_io() || e.is_eof() {
        ConnectorError::Transport(format!("reading the answer of {url}: {e}"))
    } else {
        ConnectorError::Malformed {
            url: url.to_owned(),
            reason: e.to_string(),
        }
    }
}

impl GraphConnector {
    /// A reader of a response body that counts bytes on the wire.
    pub(crate) fn body_reader<'r>(
        &'r self,
        response: &'r mut Response,
    ) -> Counting<'r, impl Read + 'r> {
        Counting {
            inner: response.body_mut().with_config().reader(),
            connector: self,
        }
    }

    /// The `Retry-After` of an answer, cut to [`super::GraphSettings::max_retry_after`].
    fn retry_after_of(&self, response: &Response) -> Option<Duration> {
        parse_retry_after(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            self.settings.max_retry_after,
        )
    }

    /// Reads a whole body into `buffer`, refusing one longer than `limit` (the setting named
    /// `setting`) as soon as it has read that much, not after.
    fn read_limited(
        &self,
        response: &mut Response,
        url: &str,
        buffer: &mut Vec<u8>,
        (limit, setting): (u64, &str),
    ) -> Result<(), ConnectorError> {
        self.body_reader(response)
            .take(limit.saturating_add(1))
            .read_to_end(buffer)
            .map_err(|e| ConnectorError::Transport(format!("reading the answer of {url}: {e}")))?;
        if buffer.len() as u64 > limit {
            return Err(ConnectorError::Malformed {
                url: url.to_owned(),
                reason: format!("the answer is longer than {setting} ({limit} bytes)"),
            });
        }
        Ok(())
    }

    fn token_cache(&self) -> Result<std::sync::MutexGuard<'_, TokenCache>, ConnectorError> {
        self.token.lock().map_err(|_| token_poisoned())
    }

    /// A valid bearer token: the cached one, or a new one when it is due for renewal. The
    /// lock is never held across the token request: while one thread renews a token that is
    /// due, the others go on with it until it expires; without a valid token, they wait for
    /// that one request (and when it fails, the next of them asks again).
    pub(crate) fn bearer(&self) -> Result<String, ConnectorError> {
        let mut cache = self.token_cache()?;
        loop {
            let now = Instant::now();
            match &cache.current {
                Some(t) if now < t.renew_at => return Ok(t.value.clone()),
                Some(t) if now < t.expires_at && cache.renewing => return Ok(t.value.clone()),
                _ if cache.renewing => {
                    cache = self
                        .token_renewed
                        .wait(cache)
                        .map_err(|_| token_poisoned())?;
                }
                _ => break,
            }
        }
        cache.renewing = true;
        drop(cache);
        let _renewal = Renewal(self);
        let token = self.with_retries(|| self.request_token())?;
        let value = token.value.clone();
        self.token_cache()?.current = Some(token);
        Ok(value)
    }

    /// Forgets `stale` (if it is still the cached token), so the next call gets a new one.
    fn invalidate(&self, stale: &str) {
        if let Ok(mut cache) = self.token.lock() {
            if cache.current.as_ref().is_some_and(|t| t.value == stale) {
                cache.current = None;
            }
        }
    }

    fn request_token(&self) -> Result<CachedToken, ConnectorError> {
        let s = &self.settings;
        let url = s.token_url();
        self.counters.token_requests.fetch_add(1, Ordering::Relaxed);
        let asked_at = Instant::now();
        let mut response = self
            .agent
            .post(&url)
            .send_form([
                ("client_id", s.client_id.as_str()),
                ("client_secret", s.client_secret.expose()),
                ("scope", s.scope.as_str()),
                ("grant_type", "client_credentials"),
            ])
            .map_err(|e| {
                count_request(
                    names::GRAPH_TOKEN_REQUESTS_TOTAL,
                    names::status_class::ERROR,
                );
                transport(&url, e)
            })?;
        let status = response.status().as_u16();
        count_request(
            names::GRAPH_TOKEN_REQUESTS_TOTAL,
            names::status_class::of(status),
        );
        let mut bytes = Vec::new();
        let limit = (s.max_token_bytes, "max_token_bytes");
        self.read_limited(&mut response, &url, &mut bytes, limit)?;
        let body = String::from_utf8_lossy(&bytes);
        if !(200..300).contains(&status) {
            let (code, message) = error_fields(&body);
            let retry_after = self.retry_after_of(&response);
            return Err(match super::error::status_class(status) {
                super::ErrorClass::Transient => ConnectorError::Graph {
                    status,
                    code,
                    message,
                    retry_after,
                },
                super::ErrorClass::Permanent => ConnectorError::Auth {
                    status,
                    code,
                    message,
                },
            });
        }
        let answer: TokenAnswer =
            serde_json::from_str(&body).map_err(|e| ConnectorError::Malformed {
                url: url.clone(),
                reason: format!("token answer: {e}"),
            })?;
        // A lifetime of more than a day is not believed (nor allowed to overflow the clock).
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3599).min(86_400));
        let margin = s.token_refresh_margin.min(lifetime / 2);
        Ok(CachedToken {
            value: answer.access_token,
            renew_at: asked_at + (lifetime - margin),
            expires_at: asked_at + lifetime,
        })
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the attempts are used up. Waits
    /// the answer's `Retry-After` when it has one, else the next exponential backoff delay
    /// (with jitter).
    pub(crate) fn with_retries<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        let mut backoff = self.backoff();
        let mut tries = 0u32;
        loop {
            tries += 1;
            match attempt() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && tries < self.settings.max_attempts => {
                    metrics::counter!(names::GRAPH_RETRIES_TOTAL).increment(1);
                    let fallback = backoff.next().unwrap_or(self.settings.max_backoff);
                    std::thread::sleep(self.wait_for(e.retry_after(), fallback));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A fresh backoff sequence (exponential, with jitter).
    pub(crate) fn backoff(&self) -> backon::ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.settings.min_backoff)
            .with_max_delay(self.settings.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// The wait before a retry: the `Retry-After` if given (capped), plus a little of the
    /// jittered `fallback` (at most a tenth more) so that waiting clients do not all come back
    /// at once; else `fallback`.
    pub(crate) fn wait_for(&self, retry_after: Option<Duration>, fallback: Duration) -> Duration {
        match retry_after {
            Some(d) => {
                let d = d.min(self.settings.max_retry_after);
                d + fallback.min(d / 10)
            }
            None => fallback,
        }
    }

    /// One attempt of a Graph request, refreshing the token once on a 401. Returns the answer
    /// when its status is a success; otherwise the error read from its body.
    pub(crate) fn send_once(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ConnectorError> {
        let mut refreshed = false;
        loop {
            let token = self.bearer()?;
            let auth = format!("Bearer {token}");
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let result = match (method, body) {
                (Method::Get, _) => self.agent.get(url).header("Authorization", &auth).call(),
                (Method::Delete, _) => self.agent.delete(url).header("Authorization", &auth).call(),
                (Method::Post, None) => self
                    .agent
                    .post(url)
                    .header("Authorization", &auth)
                    .send_empty(),
                (Method::Post, Some(b)) => self
                    .agent
                    .post(url)
                    .header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(b),
                (Method::Patch, b) => self
                    .agent
                    .patch(url)
                    .header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(b.unwrap_or(b"{}")),
            };
            metrics::histogram!(names::GRAPH_REQUEST_SECONDS)
                .record(started.elapsed().as_secs_f64());
            let mut response = match result {
                Ok(response) => response,
                Err(e) => {
                    count_request(names::GRAPH_REQUESTS_TOTAL, names::status_class::ERROR);
                    return Err(transport(url, e));
                }
            };
            let status = response.status().as_u16();
            count_request(names::GRAPH_REQUESTS_TOTAL, names::status_class::of(status));
            if status == 429 {
                metrics::counter!(names::GRAPH_THROTTLED_TOTAL).increment(1);
            }
            if (200..300).contains(&status) {
                return Ok(response);
            }
            let retry_after = self.retry_after_of(&response);
            let mut text = String::new();
            // An error body that cannot be read still tells its status.
            let _ = self
                .body_reader(&mut response)
                .take(1 << 20)
                .read_to_string(&mut text);
            let (code, message) = error_fields(&text);
            if status == 401 && !refreshed {
                refreshed = true;
                self.invalidate(&token);
                continue;
            }
            return Err(ConnectorError::Graph {
                status,
                code,
                message,
                retry_after,
            });
        }
    }

    /// A request with retries, its successful answer handed to `read` (a failure to read it,
    /// such as a cut connection, is retried too when transient).
    pub(crate) fn call<T>(
        &self,
        method: Method,
        url: &str,
        body: Option<&Json>,
        mut read: impl FnMut(&mut Response) -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        let bytes = match body {
            Some(b) => Some(
                serde_json::to_vec(b).map_err(|e| ConnectorError::Malformed {
                    url: url.to_owned(),
                    reason: format!("request body: {e}"),
                })?,
            ),
            None => None,
        };
        self.with_retries(|| {
            let mut response = self.send_once(method, url, bytes.as_deref())?;
            read(&mut response)
        })
    }

    /// A request whose answer is read whole (a cut answer is retried like a failed request).
    pub(crate) fn call_bytes(
        &self,
        method: Method,
        url: &str,
        body: Option<&Json>,
    ) -> Result<Vec<u8>, ConnectorError> {
        self.call_into(method, url, body, Vec::new())
    }

    /// [`Self::call_bytes`], reading the answer into `buffer` (cleared first).
    pub(crate) fn call_into(
        &self,
        method: Method,
        url: &str,
        body: Option<&Json>,
        mut buffer: Vec<u8>,
    ) -> Result<Vec<u8>, ConnectorError> {
        self.call(method, url, body, |response| {
            buffer.clear();
            let limit = (self.settings.max_page_bytes, "max_page_bytes");
            self.read_limited(response, url, &mut buffer, limit)
        })?;
        Ok(buffer)
    }

    /// A POST of a body already written as JSON text, with retries; the answer read whole.
    pub(crate) fn post_text(&self, url: &str, body: &[u8]) -> Result<Vec<u8>, ConnectorError> {
        self.with_retries(|| {
            let mut response = self.send_once(Method::Post, url, Some(body))?;
            let mut buffer = Vec::new();
            self.body_reader(&mut response)
                .read_to_end(&mut buffer)
                .map_err(|e| {
                    ConnectorError::Transport(format!("reading the answer of {url}: {e}"))
                })?;
            Ok(buffer)
        })
    }

    /// One attempt of a request whose answer is JSON (or empty, read as null): no retry, so
    /// that every attempt of a gated write passes its gate (the caller retries).
    pub(crate) fn call_json_once(
        &self,
        method: Method,
        url: &str,
        body: &Json,
    ) -> Result<Json, ConnectorError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ConnectorError::Malformed {
            url: url.to_owned(),
            reason: format!("request body: {e}"),
        })?;
        let mut response = self.send_once(method, url, Some(&bytes))?;
        let mut buffer = Vec::new();
        let limit = (self.settings.max_page_bytes, "max_page_bytes");
        self.read_limited(&mut response, url, &mut buffer, limit)?;
        parse_json_answer(url, &buffer)
    }

    /// A request whose answer is JSON (or empty, read as null).
    pub(crate) fn call_json(
        &self,
        method: Method,
        url: &str,
        body: Option<&Json>,
    ) -> Result<Json, ConnectorError> {
        let buf = self.call_bytes(method, url, body)?;
        parse_json_answer(url, &buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_and_retry_after_are_read() {
        let (code, message) =
            error_fields(r#"{"error":{"code":"Request_ResourceNotFound","message":"gone"}}"#);
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("Request_ResourceNotFound", "gone")
        );
        let (code, _) = error_fields(r#"{"error":"invalid_client","error_description":"x"}"#);
        assert_eq!(code, "invalid_client");
        assert_eq!(error_fields("<html>").0, "unknown");
    }

    #[test]
    fn retry_after_is_cut_to_the_maximum_and_garbage_is_ignored() {
        let max = Duration::from_secs(300);
        let parse = |v| parse_retry_after(v, max);
        assert_eq!(parse(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(parse(Some(" 0.5 ")), Some(Duration::from_millis(500)));
        assert_eq!(parse(Some("0")), Some(Duration::ZERO));
        for huge in ["301", "1e20", "1e400", "inf", "18446744073709551616"] {
            assert_eq!(parse(Some(huge)), Some(max), "{huge}");
        }
        for garbage in [
            "soon",
            "",
            "NaN",
            "-1",
            "-inf",
            "0x10",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse(Some(garbage)), None, "{garbage}");
        }
        assert_eq!(parse(None), None);
    }
}
