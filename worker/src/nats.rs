//! NATS connection settings (embeddable in a config file, secrets never printed) and
//! `connect`, which refuses servers older than 2.10 or without JetStream and keeps
//! reconnecting after the server restarts.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use serde::Deserialize;

/// The oldest server this build talks to (work-queue consumers, advisories, stream config
/// updates as used here).
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 10);

/// How to reach the NATS cluster.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// Server URLs (`nats://host:4222`, `tls://...`); several for a cluster.
    pub urls: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    /// An nkey seed (`SU...`).
    #[serde(default)]
    pub nkey: Option<String>,
    /// A `.creds` file (JWT and nkey seed).
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: Option<NatsTls>,
    /// The connection's name as the server's monitoring shows it.
    #[serde(default)]
    pub name: Option<String>,
}

/// TLS to the servers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTls {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Refuse a plain-text connection.
    #[serde(default)]
    pub required: bool,
}

fn redacted(s: &Option<String>) -> Option<&'static str> {
    s.as_ref().map(|_| "<redacted>")
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("urls", &self.urls)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("nkey", &redacted(&self.nkey))
            .field("creds_file", &self.creds_file)
            .field("tls", &self.tls)
            .field("name", &self.name)
            .finish()
    }
}

impl NatsSettings {
    /// Settings for one server URL, without authentication.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            ..Self::default()
        }
    }
}

/// A connection failure, saying what was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("nats settings: {0}")]
    Settings(String),
    #[error("reading nats credentials file {path:?}: {source}")]
    Creds {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to nats at {urls}: {message}")]
    Connect { urls: String, message: String },
    #[error("nats server {server} is version {found}; rewind needs nats-server 2.10 or newer")]
    ServerTooOld { server: String, found: String },
    #[error("nats server {server} (version {version}) has jetstream disabled; rewind needs jetstream (start nats-server with -js)")]
    NoJetStream { server: String, version: String },
    #[error("jetstream is not available to this account on nats server {server}: {message}")]
    JetStreamAccount { server: String, message: String },
}

/// `major.minor` of a server version string (`2.10.3`, `2.11.0-RC.1`).
pub fn parse_version(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.trim_start_matches('v').split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Connects, checks the server (version ≥ 2.10, JetStream on and usable by the account) and
/// returns the client and its JetStream context. The first connection is not retried (a wrong
/// URL fails at once); after that, the client reconnects without limit, so a server restart
/// only delays requests.
pub async fn connect(
    settings: &NatsSettings,
) -> Result<(async_nats::Client, jetstream::Context), NatsError> {
    if settings.urls.is_empty() {
        return Err(NatsError::Settings("no server urls".into()));
    }
    if settings.user.is_some() != settings.password.is_some() {
        return Err(NatsError::Settings("user and password go together".into()));
    }
    let mut options = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5));
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &settings.token {
        options = options.token(token.clone());
    }
    if let Some(seed) = &settings.nkey {
        options = options.nkey(seed.clone());
    }
    if let Some(path) = &settings.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| NatsError::Creds {
                path: path.clone(),
                source,
            })?;
    }
    if let Some(tls) = &settings.tls {
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => {
                return Err(NatsError::Settings(
                    "tls cert_file and key_file go together".into(),
                ))
            }
        }
        options = options.require_tls(tls.required);
    }
    if let Some(name) = &settings.name {
        options = options.name(name);
    }
    let urls = settings.urls.join(",");
    let client = options
        .connect(settings.urls.clone())
        .await
        .map_err(|e| NatsError::Connect {
            urls: urls.clone(),
            message: e.to_string(),
        })?;
    let info = client.server_info();
    let server = format!("{}:{}", info.host, info.port);
    match parse_version(&info.version) {
        Some(v) if v >= MIN_SERVER_VERSION => {}
        _ => {
            return Err(NatsError::ServerTooOld {
                server,
                found: info.version,
            })
        }
    }
    if !info.jetstream {
        return Err(NatsError::NoJetStream {
            server,
            version: info.version,
        });
    }
    let context = jetstream::new(client.clone());
    context
        .query_account()
        .await
        .map_err(|e| NatsError::JetStreamAccount {
            server,
            message: e.to_string(),
        })?;
    Ok((client, context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("2.10.3"), Some((2, 10)));
        assert_eq!(parse_version("2.11.0-RC.1"), Some((2, 11)));
        assert_eq!(parse_version("v2.9.25"), Some((2, 9)));
        assert!(parse_version("2.9.25").unwrap() < MIN_SERVER_VERSION);
        assert_eq!(parse_version("x"), None);
    }

    #[test]
    fn settings_parse_and_redact() {
        let s: NatsSettings = serde_json::from_str(
            r#"{"urls":["nats://a:4222"],"user":"u","password":"hunter2","token":"tok","nkey":"SUSEED","tls":{"ca_file":"/ca.pem","required":true},"name":"w1"}"#,
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok\"") && !shown.contains("SUSEED"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
        assert!(serde_json::from_str::<NatsSettings>(r#"{"urls":[],"passwd":"x"}"#).is_err());
    }
}
