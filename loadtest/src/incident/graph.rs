//! A small blocking Graph client for the incident generator: client-credentials token, paged
//! reads, single writes and `$batch` (≤ 20 requests), waiting out 429s and 503s, and the
//! simulator's admin sync route.

use std::thread::sleep;
use std::time::Duration;

use serde_json::{json, Value as Json};

use super::IncidentError;

/// Requests per `$batch`, Graph's limit.
pub const BATCH: usize = 20;
/// Attempts of one request (or one inner request of a batch) answered 429 or 503.
const ATTEMPTS: u32 = 8;

/// One write of a batch.
#[derive(Clone, Debug)]
pub struct Write {
    pub method: &'static str,
    /// Relative to the Graph base, starting with `/`.
    pub url: String,
    pub body: Option<Json>,
}

impl Write {
    pub fn new(method: &'static str, url: impl Into<String>, body: Option<Json>) -> Self {
        Self {
            method,
            url: url.into(),
            body,
        }
    }
}

/// A Graph client of one tenant of the simulator.
#[derive(Debug)]
pub struct GraphClient {
    agent: ureq::Agent,
    root: String,
    tenant: String,
    graph: String,
    client_id: String,
    client_secret: String,
    token: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// The wait a throttled or unavailable answer asks for (1 s when it names none).
fn retry_after(value: Option<&str>) -> Duration {
    Duration::from_secs(
        value
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, 60),
    )
}

impl GraphClient {
    /// Authenticates at the simulator's token endpoint for `tenant`.
    pub fn connect(
        root: &str,
        tenant: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Self, IncidentError> {
        let mut client = Self {
            agent: agent(),
            root: root.to_owned(),
            tenant: tenant.to_owned(),
            graph: format!("{root}/{tenant}/v1.0"),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            token: String::new(),
        };
        client.refresh_token()?;
        Ok(client)
    }

    fn refresh_token(&mut self) -> Result<(), IncidentError> {
        let url = format!("{}/{}/oauth2/v2.0/token", self.root, self.tenant);
        let mut response = self
            .agent
            .post(&url)
            .send_form([
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
            ])
            .map_err(|source| IncidentError::Unreachable {
                url: url.clone(),
                source: Box::new(source),
            })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
        if status != 200 {
            let description = body["error_description"]
                .as_str()
                .or(body["error"]["message"].as_str())
                .unwrap_or(&text)
                .to_owned();
            if description.contains("AADSTS90002") {
                return Err(IncidentError::NoTenant(self.tenant.clone()));
            }
            return Err(IncidentError::Auth {
                tenant: self.tenant.clone(),
                status,
                message: description,
            });
        }
        self.token = body["access_token"]
            .as_str()
            .ok_or_else(|| IncidentError::Auth {
                tenant: self.tenant.clone(),
                status,
                message: "the token endpoint answered without an access_token".into(),
            })?
            .to_owned();
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.graph)
        }
        .replace(' ', "%20")
    }

    /// Sends one request, retrying 429 and 503 after their Retry-After and a 401 once with a
    /// new token; returns the final status and body (null when empty).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Json>,
    ) -> Result<(u16, Json), IncidentError> {
        let url = self.url(path);
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let builder = ureq::http::Request::builder()
                .method(method)
                .uri(&url)
                .header("authorization", format!("Bearer {}", self.token));
            let sent = match body {
                Some(b) => builder
                    .header("content-type", "application/json")
                    .body(b.to_string())
                    .map(|r| self.agent.run(r)),
                None => builder.body(()).map(|r| self.agent.run(r)),
            };
            let mut response = sent
                .map_err(|e| IncidentError::BadRequest(format!("{method} {url}: {e}")))?
                .map_err(|source| IncidentError::Unreachable {
                    url: url.clone(),
                    source: Box::new(source),
                })?;
            let status = response.status().as_u16();
            let wait = retry_after(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
            );
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let json = if text.trim().is_empty() {
                Json::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Json::String(text))
            };
            match status {
                401 if !renewed => {
                    renewed = true;
                    self.refresh_token()?;
                }
                429 | 503 if attempt < ATTEMPTS => sleep(wait),
                _ => return Ok((status, json)),
            }
        }
    }

    /// A request that must succeed (2xx); `what` names it in the error.
    pub fn expect(
        &mut self,
        what: &str,
        method: &str,
        path: &str,
        body: Option<&Json>,
    ) -> Result<Json, IncidentError> {
        let (status, json) = self.send(method, path, body)?;
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            Err(IncidentError::graph(what, status, &json))
        }
    }

    /// Every item of a collection, following next links exactly as given.
    pub fn get_all(&mut self, what: &str, path: &str) -> Result<Vec<Json>, IncidentError> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(p) = next {
            let mut page = self.expect(what, "GET", &p, None)?;
            if let Some(values) = page.get_mut("value").and_then(Json::as_array_mut) {
                items.append(values);
            }
            next = page["@odata.nextLink"].as_str().map(str::to_owned);
        }
        Ok(items)
    }

    /// Sends writes through `$batch`, 20 at a time, retrying inner 429s and 503s; every write
    /// must succeed. `what` names them in errors and progress.
    pub fn batch(&mut self, what: &str, writes: &[Write]) -> Result<Vec<Json>, IncidentError> {
        let mut answers = vec![Json::Null; writes.len()];
        for (c, chunk) in writes.chunks(BATCH).enumerate() {
            let mut pending: Vec<usize> = (0..chunk.len()).collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                attempt += 1;
                let requests: Vec<Json> = pending
                    .iter()
                    .map(|&i| {
                        let w = &chunk[i];
                        let mut r = json!({"id": i.to_string(), "method": w.method, "url": w.url});
                        if let Some(b) = &w.body {
                            r["body"] = b.clone();
                            r["headers"] = json!({"content-type": "application/json"});
                        }
                        r
                    })
                    .collect();
                let answer = self.expect(
                    what,
                    "POST",
                    "/$batch",
                    Some(&json!({ "requests": requests })),
                )?;
                let mut retry = Vec::new();
                let mut wait = Duration::from_secs(0);
                for r in answer["responses"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                {
                    let Some(i) = r["id"].as_str().and_then(|s| s.parse::<usize>().ok()) else {
                        continue;
                    };
                    let Some(w) = chunk.get(i) else { continue };
                    let status = r["status"].as_u64().unwrap_or(0) as u16;
                    if (200..300).contains(&status) {
                        answers[c * BATCH + i] = r["body"].clone();
                    } else if matches!(status, 429 | 503) && attempt < ATTEMPTS {
                        wait = wait.max(retry_after(
                            r["headers"]["Retry-After"]
                                .as_str()
                                .or(r["headers"]["retry-after"].as_str()),
                        ));
                        retry.push(i);
                    } else {
                        return Err(IncidentError::graph(
                            &format!("{what} ({} {})", w.method, w.url),
                            status,
                            &r["body"],
                        ));
                    }
                }
                let answered = answer["responses"].as_array().map_or(0, Vec::len);
                if answered < pending.len() && retry.is_empty() {
                    return Err(IncidentError::BadRequest(format!(
                        "{what}: $batch answered {answered} of {} requests",
                        pending.len()
                    )));
                }
                if !retry.is_empty() {
                    sleep(wait);
                }
                pending = retry;
            }
        }
        Ok(answers)
    }

    /// Plays an on-premises sync change through the simulator's admin route.
    pub fn sync_patch(&mut self, id: &str, body: &Json) -> Result<(), IncidentError> {
        let url = format!("{}/_admin/tenants/{}/objects/{id}", self.root, self.tenant);
        let mut response = self.agent.patch(&url).send_json(body).map_err(|source| {
            IncidentError::Unreachable {
                url: url.clone(),
                source: Box::new(source),
            }
        })?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Json::String(text));
        Err(IncidentError::graph(
            &format!("on-premises sync of {id}"),
            status,
            &json,
        ))
    }
}
