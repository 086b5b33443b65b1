//! The API client: one blocking `ureq` agent, the bearer token, Graph's error shape turned
//! into a [`ClientError`] by status (the exit code follows from it), and paths built from
//! percent-encoded segments.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use ureq::http::Response;
use ureq::Body;

use super::ClientError;

/// A JSON answer is read up to this size (a page of 999 change objects fits many times over).
const MAX_JSON_BYTES: u64 = 256 << 20;
/// An error body is read up to this size.
const MAX_ERROR_BYTES: u64 = 1 << 20;

/// The server and the token every request carries.
pub struct Api {
    agent: ureq::Agent,
    /// The server's base URL, without a trailing `/`.
    base: String,
    token: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is never printed.
        f.debug_struct("Api").field("base", &self.base).finish()
    }
}

/// A request method with or without a JSON body.
enum Send<'a> {
    Empty,
    Json(&'a Value),
}

impl Api {
    /// A client of the server at `base` (`http://host:port`, maybe with a path prefix).
    pub fn new(base: &str, token: String) -> Result<Api, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(format!(
                "--server {base:?} is not an http:// or https:// URL"
            )));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .user_agent(concat!("rewind-cli/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Api {
            agent: ureq::Agent::new_with_config(config),
            base,
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The URL to follow for an `@odata.nextLink`: as written when it is on this server,
    /// else its path and query on this server (the server may name itself by another host).
    pub fn next_link(&self, link: &str) -> String {
        if link.starts_with(&self.base) {
            return link.to_owned();
        }
        match link.find("://") {
            Some(scheme_end) => {
                let rest = &link[scheme_end + 3..];
                let path = rest.find('/').map_or("/", |i| &rest[i..]);
                format!("{}{path}", origin(&self.base))
            }
            None if link.starts_with('/') => format!("{}{link}", origin(&self.base)),
            None => self.url(&format!("/{link}")),
        }
    }

    /// `GET path?query` as JSON.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        let mut req = self.agent.get(self.url(path));
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        let resp = self.finish(self.auth(req).call(), path)?;
        json_body(resp, path)
    }

    /// `GET url` (absolute, e.g. a next link) as JSON.
    pub fn get_url(&self, url: &str) -> Result<Value, ClientError> {
        let resp = self.finish(self.auth(self.agent.get(url)).call(), url)?;
        json_body(resp, url)
    }

    /// `GET path?query`, the body as a reader (streamed, never held whole).
    pub fn get_stream(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<ureq::BodyReader<'static>, ClientError> {
        let mut req = self.agent.get(self.url(path));
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        let resp = self.finish(self.auth(req).call(), path)?;
        Ok(resp.into_body().into_reader())
    }

    /// `POST path` with a JSON body (or none); the answer's JSON, or `Null` for an empty one.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let req = self.auth(self.agent.post(self.url(path)));
        let sent = match body.map_or(Send::Empty, Send::Json) {
            Send::Empty => req.send_empty(),
            Send::Json(v) => req.send_json(v),
        };
        json_body_or_null(self.finish(sent, path)?, path)
    }

    /// `PATCH path` with a JSON body.
    pub fn patch(&self, path: &str, body: &impl Serialize) -> Result<Value, ClientError> {
        let req = self.auth(self.agent.patch(self.url(path)));
        json_body_or_null(self.finish(req.send_json(body), path)?, path)
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, body: &impl Serialize) -> Result<Value, ClientError> {
        let req = self.auth(self.agent.put(self.url(path)));
        json_body_or_null(self.finish(req.send_json(body), path)?, path)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        let req = self.auth(self.agent.delete(self.url(path)));
        self.finish(req.call(), path).map(drop)
    }

    /// The pages of a collection from `GET path?query` on, following `@odata.nextLink`;
    /// each item is one page's `value`.
    pub fn pages<'a>(&'a self, path: &str, query: &[(&str, &str)]) -> Pages<'a> {
        let mut url = self.url(path);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&query_part(k));
            url.push('=');
            url.push_str(&query_part(v));
        }
        Pages {
            api: self,
            next: Some(url),
            seen: 0,
        }
    }

    /// The pages of a collection from an `@odata.nextLink` on (the first page read already).
    pub fn pages_at<'a>(&'a self, link: &str) -> Pages<'a> {
        Pages {
            api: self,
            next: Some(self.next_link(link)),
            seen: 1,
        }
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        req.header("Authorization", format!("Bearer {}", self.token))
            .header("Prefer", "include-unknown-enum-members")
            .header("Accept", "application/json")
    }

    /// A transport failure is "cannot reach"; a status of 400 and above is the API's error.
    fn finish(
        &self,
        sent: Result<Response<Body>, ureq::Error>,
        what: &str,
    ) -> Result<Response<Body>, ClientError> {
        let resp = sent.map_err(|e| transport_error(&self.base, what, e))?;
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        Err(api_error(status, resp))
    }
}

/// A query key or value, percent-encoded like a path segment (`$` kept: `$top`, `$filter`).
fn query_part(s: &str) -> String {
    segment(s).replace("%24", "$")
}

/// Pages of a collection (see [`Api::pages`]). A next link that repeats the page just read is
/// an error, not a loop.
pub struct Pages<'a> {
    api: &'a Api,
    next: Option<String>,
    seen: u64,
}

impl Iterator for Pages<'_> {
    type Item = Result<Vec<Value>, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        let url = self.next.take()?;
        self.seen += 1;
        let mut page = match self.api.get_url(&url) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        if let Some(link) = page.get("@odata.nextLink").and_then(Value::as_str) {
            let next = self.api.next_link(link);
            if next == url {
                return Some(Err(ClientError::Protocol(format!(
                    "page {} links to itself as the next page: {url}",
                    self.seen
                ))));
            }
            self.next = Some(next);
        }
        match page.get_mut("value").map(Value::take) {
            Some(Value::Array(items)) => Some(Ok(items)),
            _ => Some(Err(ClientError::Protocol(format!(
                "page {} of {url} has no value array",
                self.seen
            )))),
        }
    }
}

/// `scheme://host[:port]` of a base URL.
fn origin(base: &str) -> &str {
    let after = base.find("://").map_or(0, |i| i + 3);
    match base[after..].find('/') {
        Some(i) => &base[..after + i],
        None => base,
    }
}

/// A failure before any answer: the server cannot be reached (exit 3), or the answer broke
/// off (exit 1).
fn transport_error(base: &str, what: &str, e: ureq::Error) -> ClientError {
    use ureq::Error as E;
    match e {
        E::Io(_)
        | E::ConnectionFailed
        | E::HostNotFound
        | E::Timeout(_)
        | E::TlsRequired
        | E::Tls(_) => ClientError::Unreachable {
            server: base.to_owned(),
            reason: one_line(&e.to_string()),
        },
        other => ClientError::Protocol(format!("{what}: {}", one_line(&other.to_string()))),
    }
}

/// The API's `error.message` (Graph's shape), or the status and the start of the body.
fn api_error(status: u16, resp: Response<Body>) -> ClientError {
    let text = resp
        .into_body()
        .into_with_config()
        .limit(MAX_ERROR_BYTES)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    let parsed: Option<(String, String)> =
        serde_json::from_str::<Value>(&text).ok().and_then(|v| {
            let err = v.get("error")?;
            Some((
                err.get("code")?.as_str()?.to_owned(),
                err.get("message")?.as_str()?.to_owned(),
            ))
        });
    let (code, message) = parsed.unwrap_or_else(|| {
        let start: String = text.chars().take(200).collect();
        let message = if start.trim().is_empty() {
            format!("the server answered HTTP {status}")
        } else {
            format!("the server answered HTTP {status}: {}", start.trim())
        };
        (String::new(), message)
    });
    ClientError::Api {
        status,
        code,
        message: one_line(&message),
    }
}

fn json_body(resp: Response<Body>, what: &str) -> Result<Value, ClientError> {
    resp.into_body()
        .into_with_config()
        .limit(MAX_JSON_BYTES)
        .read_json()
        .map_err(|e| ClientError::Protocol(format!("{what}: the answer is not JSON: {e}")))
}

fn json_body_or_null(resp: Response<Body>, what: &str) -> Result<Value, ClientError> {
    let text = resp
        .into_body()
        .into_with_config()
        .limit(MAX_JSON_BYTES)
        .read_to_string()
        .map_err(|e| ClientError::Protocol(format!("{what}: cannot read the answer: {e}")))?;
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text)
        .map_err(|e| ClientError::Protocol(format!("{what}: the answer is not JSON: {e}")))
}

/// Line breaks and other control characters as spaces: a message is printed on one line.
pub fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    out.truncate(out.trim_end().len());
    out
}

/// A path segment, percent-encoded (everything but RFC 3986's unreserved characters).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path built from a template's literal parts and encoded segments:
/// `path(&["tenants", t, "rewind", "jobs", id])` → `/tenants/{t}/rewind/jobs/{id}`.
pub fn path(parts: &[&str]) -> String {
    let mut out = String::new();
    for p in parts {
        out.push('/');
        out.push_str(&segment(p));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        let cases = [
            ("contoso", "contoso"),
            ("a/b", "a%2Fb"),
            ("MjAyNi0xMi0wMQ==", "MjAyNi0xMi0wMQ%3D%3D"),
            ("a b?c#d", "a%20b%3Fc%23d"),
            ("é", "%C3%A9"),
        ];
        for (input, want) in cases {
            assert_eq!(segment(input), want, "{input}");
        }
        assert_eq!(path(&["tenants", "t/1", "rewind"]), "/tenants/t%2F1/rewind");
    }

    #[test]
    fn next_links_are_followed_on_the_server_given() {
        let api = Api::new("http://127.0.0.1:9/", "t".into()).unwrap();
        let cases = [
            (
                "http://127.0.0.1:9/tenants/a/x?$skip=999",
                "http://127.0.0.1:9/tenants/a/x?$skip=999",
            ),
            (
                "http://rewind.internal:8080/tenants/a/x?$skip=999",
                "http://127.0.0.1:9/tenants/a/x?$skip=999",
            ),
            (
                "/tenants/a/x?$skip=1",
                "http://127.0.0.1:9/tenants/a/x?$skip=1",
            ),
        ];
        for (link, want) in cases {
            assert_eq!(api.next_link(link), want, "{link}");
        }
        let prefixed = Api::new("https://h/rewind", "t".into()).unwrap();
        assert_eq!(prefixed.next_link("/tenants/a"), "https://h/tenants/a");
        assert_eq!(
            prefixed.next_link("https://h/rewind/tenants/a"),
            "https://h/rewind/tenants/a"
        );
    }

    #[test]
    fn the_first_page_carries_its_query_encoded() {
        let api = Api::new("http://127.0.0.1:9", "t".into()).unwrap();
        let pages = api.pages(
            "/x",
            &[
                ("$top", "999"),
                ("$filter", "startswith(displayName,'A b&c')"),
            ],
        );
        assert_eq!(
            pages.next.as_deref(),
            Some("http://127.0.0.1:9/x?$top=999&$filter=startswith%28displayName%2C%27A%20b%26c%27%29")
        );
    }

    #[test]
    fn a_server_that_is_not_a_url_is_refused() {
        let e = Api::new("127.0.0.1:8080", "t".into()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("not an http"), "{e}");
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a\nb\r\n\tc\u{1b}[31m\n"), "a b   c [31m");
    }
}
