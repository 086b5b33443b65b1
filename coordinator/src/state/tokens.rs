//! API tokens: a role, the tenants it may see, an expiry and a revocation time, stored under a
//! random id with the blake3 hash of the token (never the token itself); a second tree maps the
//! hash to the id, so that authenticating a request is one lookup of each.

use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::audit::{Actor, AuditEntry, Subject};
use super::tenants::validate_tenant_name;
use super::{decode, encode, now, tree, State, StateError};

/// What a token may do (see the API's contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Reads backups, reports and jobs of its tenants.
    Reader,
    /// A reader that also starts backups, reports and cancels jobs.
    Administrator,
    /// Administers tenants and tokens; no report contents, no jobs.
    Operator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reader, Role::Administrator, Role::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Administrator => "administrator",
            Role::Operator => "operator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, StateError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                StateError::invalid(
                    "role",
                    format!("{s:?}"),
                    "expected reader, administrator or operator",
                )
            })
    }
}

/// The tenants a token may see: all (`["*"]` in JSON) or a list of names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantScope {
    All,
    Only(Vec<String>),
}

impl TenantScope {
    pub fn contains(&self, tenant: &str) -> bool {
        match self {
            TenantScope::All => true,
            TenantScope::Only(names) => names.iter().any(|n| n == tenant),
        }
    }

    /// The JSON form: `["*"]` or the names.
    pub fn to_names(&self) -> Vec<String> {
        match self {
            TenantScope::All => vec!["*".to_owned()],
            TenantScope::Only(names) => names.clone(),
        }
    }

    /// From names: `["*"]` is every tenant; otherwise each must be a tenant name, at least one.
    pub fn from_names(names: Vec<String>) -> Result<TenantScope, StateError> {
        if names.iter().any(|n| n == "*") {
            if names.len() != 1 {
                return Err(StateError::invalid(
                    "tenants",
                    format!("{names:?}"),
                    "\"*\" (every tenant) stands alone",
                ));
            }
            return Ok(TenantScope::All);
        }
        if names.is_empty() {
            return Err(StateError::invalid(
                "tenants",
                "[]",
                "name at least one tenant, or [\"*\"] for every tenant",
            ));
        }
        for name in &names {
            validate_tenant_name(name)?;
        }
        let mut names = names;
        names.sort();
        names.dedup();
        Ok(TenantScope::Only(names))
    }
}

impl Serialize for TenantScope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_names().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TenantScope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        TenantScope::from_names(names).map_err(serde::de::Error::custom)
    }
}

/// A token to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub tenants: TenantScope,
    /// Unix seconds after which the token is refused; `None`: never expires.
    pub expires_at: Option<i64>,
}

/// A token as stored: everything but the token, which only its hash stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// `tok_` and 12 hex digits.
    pub id: String,
    pub name: String,
    pub role: Role,
    pub tenants: TenantScope,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// blake3 of the token, lowercase hex.
    pub hash: String,
}

/// Why a token is refused (each is a 401 to the API).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not a Rewind token (rwd_ and 43 characters)")]
    Malformed,
    #[error("the token is not known")]
    Unknown,
    #[error("the token {id} expired")]
    Expired { id: String },
    #[error("the token {id} was revoked")]
    Revoked { id: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The prefix of every token.
pub const TOKEN_PREFIX: &str = "rwd_";
/// Characters after the prefix: 32 bytes in URL-safe base64 without padding.
const TOKEN_BODY_LEN: usize = 43;

fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

fn new_token_text() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn new_token_id() -> String {
    let mut bytes = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("tok_{hex}")
}

fn validate_token_name(name: &str) -> Result<(), StateError> {
    if name.trim().is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(StateError::invalid(
            "name",
            format!("{name:?}"),
            "a token's name is 1 to 128 characters without control characters",
        ));
    }
    Ok(())
}

impl State {
    /// Creates a token; returns its record and the token itself, which is not kept (only its
    /// hash is) and so is shown this once.
    pub async fn create_token(&self, t: NewToken) -> Result<(TokenRecord, String), StateError> {
        self.create_token_by(&Actor::Coordinator, t).await
    }

    /// [`State::create_token`] on behalf of `actor`, named in the audit record.
    pub async fn create_token_by(
        &self,
        actor: &Actor,
        t: NewToken,
    ) -> Result<(TokenRecord, String), StateError> {
        validate_token_name(&t.name)?;
        let created_at = now();
        if let Some(at) = t.expires_at {
            if at <= created_at {
                return Err(StateError::invalid(
                    "expiresDateTime",
                    rewind_common::graph_json::format_time(at),
                    "must be in the future",
                ));
            }
        }
        if let TenantScope::Only(names) = &t.tenants {
            TenantScope::from_names(names.clone())?;
        }
        let token = new_token_text();
        let record = TokenRecord {
            id: new_token_id(),
            name: t.name,
            role: t.role,
            tenants: t.tenants,
            created_at,
            expires_at: t.expires_at,
            revoked_at: None,
            hash: token_hash(&token),
        };
        let bytes = encode(tree::TOKENS, record.id.as_bytes(), &record)?;
        {
            let guard = self.lock();
            if self.tokens.get(record.id.as_bytes())?.is_some() {
                return Err(StateError::Exists {
                    what: "token",
                    id: record.id,
                });
            }
            let entry = AuditEntry::new(actor, "token.created", Subject::token(&record.id))
                .with("name", &record.name)
                .with("role", record.role)
                .with("tenants", record.tenants.to_names().join(","));
            self.append_audit(&guard, entry)?;
            // The record first, then its hash: a crash between the two leaves a record no
            // token reaches (listed, never usable), never a hash without its record.
            self.tokens.insert(record.id.as_bytes(), bytes)?;
            self.tokens_by_hash
                .insert(record.hash.as_bytes(), record.id.as_bytes())?;
        }
        self.flush().await?;
        Ok((record, token))
    }

    /// Every token, by id (never the token itself).
    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, StateError> {
        self.tokens
            .iter()
            .map(|item| {
                let (key, bytes) = item?;
                decode(tree::TOKENS, &key, &bytes)
            })
            .collect()
    }

    pub fn get_token(&self, id: &str) -> Result<TokenRecord, StateError> {
        match self.tokens.get(id.as_bytes())? {
            Some(bytes) => decode(tree::TOKENS, id.as_bytes(), &bytes),
            None => Err(StateError::not_found("token", id)),
        }
    }

    /// Revokes a token at once (a token revoked already keeps its first revocation time).
    pub async fn revoke_token(&self, id: &str) -> Result<TokenRecord, StateError> {
        self.revoke_token_by(&Actor::Coordinator, id).await
    }

    /// [`State::revoke_token`] on behalf of `actor`, named in the audit record.
    pub async fn revoke_token_by(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<TokenRecord, StateError> {
        let record = {
            let guard = self.lock();
            let mut record = self.get_token(id)?;
            if record.revoked_at.is_none() {
                let entry = AuditEntry::new(actor, "token.revoked", Subject::token(id))
                    .with("name", &record.name);
                self.append_audit(&guard, entry)?;
                record.revoked_at = Some(now());
                let bytes = encode(tree::TOKENS, id.as_bytes(), &record)?;
                self.tokens.insert(id.as_bytes(), bytes)?;
            }
            record
        };
        self.flush().await?;
        Ok(record)
    }

    /// The record of `token` if it may be used at `now` (unix seconds).
    pub fn authenticate(&self, token: &str, now: i64) -> Result<TokenRecord, AuthError> {
        let well_formed = token.strip_prefix(TOKEN_PREFIX).is_some_and(|body| {
            body.len() == TOKEN_BODY_LEN
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !well_formed {
            return Err(AuthError::Malformed);
        }
        let Some(id) = self
            .tokens_by_hash
            .get(token_hash(token).as_bytes())
            .map_err(StateError::from)?
        else {
            return Err(AuthError::Unknown);
        };
        let record = match self.get_token(&String::from_utf8_lossy(&id)) {
            Ok(r) => r,
            Err(StateError::NotFound { .. }) => return Err(AuthError::Unknown),
            Err(e) => return Err(e.into()),
        };
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked { id: record.id });
        }
        if record.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::Expired { id: record.id });
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path().join("state")).unwrap();
        (dir, state)
    }

    fn new(role: Role, expires_at: Option<i64>) -> NewToken {
        NewToken {
            name: "ci".into(),
            role,
            tenants: TenantScope::Only(vec!["acme".into()]),
            expires_at,
        }
    }

    #[tokio::test]
    async fn only_the_hash_is_stored_and_the_token_authenticates() {
        let (_dir, state) = open();
        let (record, token) = state.create_token(new(Role::Reader, None)).await.unwrap();
        assert!(token.starts_with("rwd_") && token.len() == 47, "{token}");
        assert!(record.id.starts_with("tok_") && record.id.len() == 16);
        assert_eq!(
            record.hash,
            blake3::hash(token.as_bytes()).to_hex().as_str()
        );
        // No tree holds the token's text.
        for tree in [&state.tokens, &state.tokens_by_hash] {
            for item in tree.iter() {
                let (k, v) = item.unwrap();
                for bytes in [k.as_ref(), v.as_ref()] {
                    assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
                }
            }
        }
        let who = state.authenticate(&token, now()).unwrap();
        assert_eq!(who, record);
        assert_eq!(state.list_tokens().unwrap(), vec![record]);
        let mut other = token.clone();
        other.replace_range(4..5, if &token[4..5] == "A" { "B" } else { "A" });
        assert!(matches!(
            state.authenticate(&other, now()),
            Err(AuthError::Unknown)
        ));
        assert!(matches!(
            state.authenticate("Bearer nope", now()),
            Err(AuthError::Malformed)
        ));
    }

    #[tokio::test]
    async fn an_expired_or_revoked_token_is_refused() {
        let (_dir, state) = open();
        let at = now() + 3600;
        let (record, token) = state
            .create_token(new(Role::Administrator, Some(at)))
            .await
            .unwrap();
        assert!(state.authenticate(&token, at - 1).is_ok());
        assert!(matches!(
            state.authenticate(&token, at),
            Err(AuthError::Expired { .. })
        ));
        let revoked = state.revoke_token(&record.id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        assert!(matches!(
            state.authenticate(&token, at - 1),
            Err(AuthError::Revoked { .. })
        ));
        let again = state.revoke_token(&record.id).await.unwrap();
        assert_eq!(again.revoked_at, revoked.revoked_at);
        assert!(matches!(
            state.revoke_token("tok_000000000000").await,
            Err(StateError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn bad_tokens_to_create_are_named() {
        let (_dir, state) = open();
        let past = state.create_token(new(Role::Reader, Some(1))).await;
        assert!(past.unwrap_err().to_string().contains("expiresDateTime"));
        let mut unnamed = new(Role::Reader, None);
        unnamed.name = " ".into();
        let err = state.create_token(unnamed).await.unwrap_err().to_string();
        assert!(err.contains("name"), "{err}");
        let err = TenantScope::from_names(vec!["*".into(), "acme".into()]).unwrap_err();
        assert!(err.to_string().contains("stands alone"), "{err}");
        let scope: TenantScope = serde_json::from_str(r#"["*"]"#).unwrap();
        assert_eq!(scope, TenantScope::All);
        assert_eq!(serde_json::to_string(&scope).unwrap(), r#"["*"]"#);
        assert!(serde_json::from_str::<TenantScope>(r#"["Bad Name"]"#).is_err());
        assert!("admin".parse::<Role>().is_err());
    }
}
