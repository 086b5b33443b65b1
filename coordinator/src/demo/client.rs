//! A small blocking client of Rewind's HTTP API (`docs/api.md`) for the demo: bearer tokens,
//! JSON bodies, the `Prefer` header of Microsoft's enums, and Graph's error shape turned into
//! a message naming the request and the answer. Called from plain threads, never from the
//! async runtime.

use std::time::Duration;

use serde_json::Value as Json;

/// Bytes of one answer the client reads at most (a page of 999 change objects is a few MiB).
const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// Asks for `loadingData`, `calculating` and the grant and assignment entries.
const PREFER: &str = "include-unknown-enum-members";

/// Why a call to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{method} {url}: the API cannot be reached: {source}")]
    Unreachable {
        method: String,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{method} {url} answered {status} {code}: {message}")]
    Refused {
        method: String,
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{method} {url} answered {status} with a body that is not JSON: {body}")]
    NotJson {
        method: String,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{method} {url}: {what}")]
    Malformed {
        method: String,
        url: String,
        what: String,
    },
}

/// One answer: its status, its `Location` header and its JSON body (`null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: Json,
}

/// The API of one coordinator, at `http://host:port`.
#[derive(Debug, Clone)]
pub struct ApiClient {
    agent: ureq::Agent,
    base: String,
}

impl ApiClient {
    pub fn new(base: impl Into<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self {
            agent,
            base: base.into().trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The absolute URL of `path` (a path from the API's root, or an absolute URL as a
    /// `Location` or `@odata.nextLink` gives it).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// `GET path` with `token`, asking for Microsoft's newer enum members; an answer whose
    /// status is not in `expect` is an error naming it.
    pub fn get(&self, path: &str, token: &str, expect: &[u16]) -> Result<Answer, ClientError> {
        let url = self.url(path);
        let sent = self
            .agent
            .get(&url)
            .header("authorization", &format!("Bearer {token}"))
            .header("prefer", PREFER)
            .call();
        Self::answer("GET", url, sent, expect)
    }

    /// `POST path` with `token` and `body` as JSON; as [`ApiClient::get`].
    pub fn post(
        &self,
        path: &str,
        token: &str,
        body: &Json,
        expect: &[u16],
    ) -> Result<Answer, ClientError> {
        let url = self.url(path);
        let sent = self
            .agent
            .post(&url)
            .header("authorization", &format!("Bearer {token}"))
            .header("prefer", PREFER)
            .send_json(body);
        Self::answer("POST", url, sent, expect)
    }

    fn answer(
        method: &str,
        url: String,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        expect: &[u16],
    ) -> Result<Answer, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            method: method.to_owned(),
            url: url.clone(),
            source: Box::new(source),
        };
        let mut response = sent.map_err(unreachable)?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(unreachable)?;
        let body: Json = if text.trim().is_empty() {
            Json::Null
        } else {
            serde_json::from_str(&text).map_err(|_| ClientError::NotJson {
                method: method.to_owned(),
                url: url.clone(),
                status,
                body: text.chars().take(300).collect(),
            })?
        };
        if !expect.contains(&status) {
            return Err(ClientError::Refused {
                method: method.to_owned(),
                url,
                status,
                code: body["error"]["code"].as_str().unwrap_or("").to_owned(),
                message: body["error"]["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| text.chars().take(300).collect()),
            });
        }
        Ok(Answer {
            status,
            location,
            body,
        })
    }

    /// Every item of a paged collection: `value` of each page, following `@odata.nextLink`
    /// to the end; `progress` hears the count after each page.
    pub fn get_all(
        &self,
        path: &str,
        token: &str,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Json>, ClientError> {
        let mut out = Vec::new();
        let mut next = Some(path.to_owned());
        let mut seen = std::collections::HashSet::new();
        while let Some(link) = next.take() {
            if !seen.insert(link.clone()) {
                return Err(ClientError::Malformed {
                    method: "GET".into(),
                    url: self.url(&link),
                    what: "the next link leads back to a page already read".into(),
                });
            }
            let mut page = self.get(&link, token, &[200])?.body;
            match page.get_mut("value").map(Json::take) {
                Some(Json::Array(items)) => out.extend(items),
                _ => {
                    return Err(ClientError::Malformed {
                        method: "GET".into(),
                        url: self.url(&link),
                        what: "the page has no \"value\" array".into(),
                    })
                }
            }
            progress(out.len());
            next = page["@odata.nextLink"].as_str().map(str::to_owned);
        }
        Ok(out)
    }
}
