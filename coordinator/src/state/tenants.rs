//! Tenants: how to reach each directory, its encrypted credentials, its schedule, retention and
//! shard count. Every field is checked before it is stored; an error names the field and value.

use rewind_common::connector::Secret;
use serde::{Deserialize, Serialize};

use super::audit::{Actor, AuditEntry, Subject};
use super::schedule::Schedule;
use super::{EncryptedSecret, SecretKey};

use super::{decode, encode, now, tree, State, StateError};

/// Backups kept by default.
pub const DEFAULT_RETENTION: u32 = 7;
/// Days a report (and its live snapshot) is kept by default.
pub const DEFAULT_REPORT_RETENTION_DAYS: u32 = 7;
/// 64 shards.
pub const DEFAULT_SHARD_BITS: u8 = 6;
pub const MAX_SHARD_BITS: u8 = 16;

/// One tenant as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantRecord {
    pub name: String,
    pub graph_base_url: String,
    pub token_url: String,
    pub client_id: String,
    pub secret: EncryptedSecret,
    pub schedule: Schedule,
    /// Backups kept (at least 1).
    pub retention: u32,
    pub report_retention_days: u32,
    /// log2 of the shard count; fixed when the tenant is added.
    pub shard_bits: u8,
    pub created_at: i64,
    /// How recoveries of this tenant write (absent in records of builds before them: the
    /// defaults).
    #[serde(default)]
    pub recovery: RecoverySettings,
    /// More app registrations beside the primary one (`client_id`, `secret`): a recovery
    /// spreads its writes over all of them, since Graph limits writes per app and tenant
    /// (absent in records of builds before them: none).
    #[serde(default)]
    pub apps: Vec<AppRegistration>,
}

/// One more app registration of a tenant: its client id and its secret, sealed as the
/// primary one is (for the tenant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRegistration {
    pub client_id: String,
    pub secret: EncryptedSecret,
}

/// The most app registrations a tenant may have, the primary one included.
pub const MAX_APPS: usize = 16;

/// A tenant's recovery settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoverySettings {
    /// Directory writes per second of each app registration, all workers together (Graph's
    /// default limit per app and tenant is 20).
    pub write_budget: u32,
    /// Directory writes per second of all the tenant's app registrations together (Graph:
    /// 60); never below one app's `write_budget`.
    pub tenant_write_budget: u32,
    /// Conditional access policy and named location writes per second (Graph: 1).
    pub conditional_access_budget: u32,
    /// A recovery that modifies more objects than this waits for a second administrator.
    pub approval_threshold: u64,
    /// Days a finished recovery's history (its actions) is kept.
    pub history_days: u32,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            write_budget: 20,
            tenant_write_budget: 60,
            conditional_access_budget: 1,
            approval_threshold: 25,
            history_days: 7,
        }
    }
}

impl RecoverySettings {
    /// Every check, the first failing one reported (naming the field).
    pub fn validate(&self) -> Result<(), StateError> {
        for (field, v) in [
            ("writeBudget", self.write_budget),
            ("tenantWriteBudget", self.tenant_write_budget),
            ("conditionalAccessBudget", self.conditional_access_budget),
        ] {
            if !(1..=100_000).contains(&v) {
                return Err(StateError::invalid(
                    field,
                    v,
                    "must be 1 to 100,000 writes per second",
                ));
            }
        }
        if self.history_days == 0 || self.history_days > 3650 {
            return Err(StateError::invalid(
                "historyDays",
                self.history_days,
                "must be 1 to 3650 days",
            ));
        }
        Ok(())
    }
}

impl TenantRecord {
    /// The tenant's client secret in clear, for the connector.
    pub fn client_secret(&self, key: &SecretKey) -> Result<Secret, StateError> {
        Ok(self.secret.open(key, &self.name)?)
    }

    /// Every app registration a recovery writes through, the primary one first: (client
    /// id, sealed secret).
    pub fn write_apps(&self) -> Vec<(&str, &EncryptedSecret)> {
        std::iter::once((self.client_id.as_str(), &self.secret))
            .chain(self.apps.iter().map(|a| (a.client_id.as_str(), &a.secret)))
            .collect()
    }

    /// The effective tenant-wide write budget: never below one app's.
    pub fn tenant_write_budget(&self) -> u32 {
        self.recovery
            .tenant_write_budget
            .max(self.recovery.write_budget)
    }
}

/// A tenant to add; [`NewTenant::new`] fills the defaults.
#[derive(Clone, Debug)]
pub struct NewTenant {
    pub name: String,
    pub graph_base_url: String,
    pub token_url: String,
    pub client_id: String,
    pub secret: Secret,
    pub schedule: Schedule,
    pub retention: u32,
    pub report_retention_days: u32,
    pub shard_bits: u8,
    pub recovery: RecoverySettings,
}

impl NewTenant {
    pub fn new(
        name: impl Into<String>,
        graph_base_url: impl Into<String>,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<Secret>,
    ) -> NewTenant {
        NewTenant {
            name: name.into(),
            graph_base_url: graph_base_url.into(),
            token_url: token_url.into(),
            client_id: client_id.into(),
            secret: secret.into(),
            schedule: Schedule::default(),
            retention: DEFAULT_RETENTION,
            report_retention_days: DEFAULT_REPORT_RETENTION_DAYS,
            shard_bits: DEFAULT_SHARD_BITS,
            recovery: RecoverySettings::default(),
        }
    }
}

/// Settings to change on a tenant; `None` keeps the current value. The name and shard count
/// never change; credentials change through [`State::set_credentials`].
#[derive(Clone, Debug, Default)]
pub struct TenantSettings {
    pub graph_base_url: Option<String>,
    pub token_url: Option<String>,
    pub schedule: Option<Schedule>,
    pub retention: Option<u32>,
    pub report_retention_days: Option<u32>,
    pub recovery: RecoveryPatch,
}

/// Recovery settings to change: each field given replaces the tenant's, the others stay.
/// Applied to the stored record under the state's lock, so two edits of different fields made
/// at the same time both stand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryPatch {
    pub write_budget: Option<u32>,
    pub tenant_write_budget: Option<u32>,
    pub conditional_access_budget: Option<u32>,
    pub approval_threshold: Option<u64>,
    pub history_days: Option<u32>,
}

impl RecoveryPatch {
    /// Whether no field is given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` with the fields given replaced.
    pub fn apply(&self, mut base: RecoverySettings) -> RecoverySettings {
        if let Some(v) = self.write_budget {
            base.write_budget = v;
        }
        if let Some(v) = self.tenant_write_budget {
            base.tenant_write_budget = v;
        }
        if let Some(v) = self.conditional_access_budget {
            base.conditional_access_budget = v;
        }
        if let Some(v) = self.approval_threshold {
            base.approval_threshold = v;
        }
        if let Some(v) = self.history_days {
            base.history_days = v;
        }
        base
    }
}

/// `[a-z0-9][a-z0-9-]{0,62}`: tenant names go into NATS subjects and bucket names.
pub fn validate_tenant_name(name: &str) -> Result<(), StateError> {
    let bytes = name.as_bytes();
    let reason = "must be 1 to 63 characters of a-z, 0-9 and '-', not starting with '-'";
    let first_ok = bytes
        .first()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = bytes
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !first_ok || !rest_ok || bytes.len() > 63 {
        return Err(StateError::invalid("name", format!("{name:?}"), reason));
    }
    Ok(())
}

fn validate_url(field: &'static str, url: &str) -> Result<(), StateError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host_ok = rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty()
    });
    if !host_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(StateError::invalid(
            field,
            format!("{url:?}"),
            "must be an http:// or https:// URL with a host",
        ));
    }
    Ok(())
}

fn validate_client_id(client_id: &str) -> Result<(), StateError> {
    if client_id.is_empty()
        || client_id.len() > 256
        || client_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(StateError::invalid(
            "clientId",
            format!("{client_id:?}"),
            "must be 1 to 256 characters without spaces",
        ));
    }
    Ok(())
}

fn validate_secret(secret: &Secret) -> Result<(), StateError> {
    if secret.expose().is_empty() {
        return Err(StateError::invalid(
            "secret",
            "(hidden)",
            "must not be empty",
        ));
    }
    Ok(())
}

/// An app registration's client id and secret checked, and the secret sealed for the tenant.
fn seal_app(
    key: &SecretKey,
    tenant: &str,
    client_id: &str,
    secret: &Secret,
) -> Result<EncryptedSecret, StateError> {
    validate_client_id(client_id)?;
    validate_secret(secret)?;
    Ok(EncryptedSecret::seal(key, tenant, secret)?)
}

fn validate_retention(retention: u32) -> Result<(), StateError> {
    if retention == 0 {
        return Err(StateError::invalid(
            "retention",
            retention,
            "at least 1 backup must be kept",
        ));
    }
    Ok(())
}

fn validate_report_retention_days(days: u32) -> Result<(), StateError> {
    if days == 0 || days > 3650 {
        return Err(StateError::invalid(
            "reportRetentionDays",
            days,
            "must be 1 to 3650 days",
        ));
    }
    Ok(())
}

fn validate_shard_bits(bits: u8) -> Result<(), StateError> {
    if bits > MAX_SHARD_BITS {
        return Err(StateError::invalid(
            "shardBits",
            bits,
            format!("must be 0..={MAX_SHARD_BITS} (at most 65,536 shards)"),
        ));
    }
    Ok(())
}

impl NewTenant {
    /// Every check of a new tenant, the first failing one reported.
    pub fn validate(&self) -> Result<(), StateError> {
        validate_tenant_name(&self.name)?;
        validate_url("graphBaseUrl", &self.graph_base_url)?;
        validate_url("tokenUrl", &self.token_url)?;
        validate_client_id(&self.client_id)?;
        validate_secret(&self.secret)?;
        self.schedule.validate()?;
        validate_retention(self.retention)?;
        validate_report_retention_days(self.report_retention_days)?;
        self.recovery.validate()?;
        validate_shard_bits(self.shard_bits)
    }
}

impl State {
    /// Adds a tenant (its secret encrypted under `key`); a tenant of the same name is a
    /// conflict.
    pub async fn add_tenant(
        &self,
        key: &SecretKey,
        new: NewTenant,
    ) -> Result<TenantRecord, StateError> {
        self.add_tenant_by(&Actor::Coordinator, key, new).await
    }

    /// [`State::add_tenant`] on behalf of `actor`, named in the audit record.
    pub async fn add_tenant_by(
        &self,
        actor: &Actor,
        key: &SecretKey,
        new: NewTenant,
    ) -> Result<TenantRecord, StateError> {
        new.validate()?;
        let record = TenantRecord {
            secret: EncryptedSecret::seal(key, &new.name, &new.secret)?,
            name: new.name,
            graph_base_url: new.graph_base_url,
            token_url: new.token_url,
            client_id: new.client_id,
            schedule: new.schedule,
            retention: new.retention,
            report_retention_days: new.report_retention_days,
            shard_bits: new.shard_bits,
            created_at: now(),
            recovery: new.recovery,
            apps: Vec::new(),
        };
        let bytes = encode(tree::TENANTS, record.name.as_bytes(), &record)?;
        {
            let guard = self.lock();
            if self.tenants.get(record.name.as_bytes())?.is_some() {
                return Err(StateError::Exists {
                    what: "tenant",
                    id: record.name,
                });
            }
            let entry = AuditEntry::new(actor, "tenant.added", Subject::tenant(&record.name))
                .with("graphBaseUrl", &record.graph_base_url)
                .with("clientId", &record.client_id);
            self.append_audit(&guard, entry)?;
            self.tenants.insert(record.name.as_bytes(), bytes)?;
        }
        self.flush().await?;
        Ok(record)
    }

    pub fn get_tenant(&self, name: &str) -> Result<TenantRecord, StateError> {
        match self.tenants.get(name.as_bytes())? {
            Some(bytes) => decode(tree::TENANTS, name.as_bytes(), &bytes),
            None => Err(StateError::not_found("tenant", name)),
        }
    }

    /// Every tenant, by name.
    pub fn list_tenants(&self) -> Result<Vec<TenantRecord>, StateError> {
        self.tenants
            .iter()
            .map(|item| {
                let (key, bytes) = item?;
                decode(tree::TENANTS, &key, &bytes)
            })
            .collect()
    }

    /// Changes a tenant's settings; each given value is checked as at creation.
    pub async fn update_tenant(
        &self,
        name: &str,
        settings: TenantSettings,
    ) -> Result<TenantRecord, StateError> {
        self.update_tenant_by(&Actor::Coordinator, name, settings)
            .await
    }

    /// [`State::update_tenant`] on behalf of `actor`, named in the audit record.
    pub async fn update_tenant_by(
        &self,
        actor: &Actor,
        name: &str,
        settings: TenantSettings,
    ) -> Result<TenantRecord, StateError> {
        if let Some(url) = &settings.graph_base_url {
            validate_url("graphBaseUrl", url)?;
        }
        if let Some(url) = &settings.token_url {
            validate_url("tokenUrl", url)?;
        }
        if let Some(schedule) = &settings.schedule {
            schedule.validate()?;
        }
        if let Some(retention) = settings.retention {
            validate_retention(retention)?;
        }
        if let Some(days) = settings.report_retention_days {
            validate_report_retention_days(days)?;
        }
        if !settings.recovery.is_empty() {
            // Every check is of one field: the fields given, over any valid base.
            settings
                .recovery
                .apply(RecoverySettings::default())
                .validate()?;
        }
        let mut entry = AuditEntry::new(actor, "tenant.updated", Subject::tenant(name));
        for (field, given) in [
            ("graphBaseUrl", settings.graph_base_url.is_some()),
            ("tokenUrl", settings.token_url.is_some()),
            ("schedule", settings.schedule.is_some()),
            ("retention", settings.retention.is_some()),
            (
                "reportRetentionDays",
                settings.report_retention_days.is_some(),
            ),
            ("recovery", !settings.recovery.is_empty()),
        ] {
            if given {
                entry = entry.with(field, "changed");
            }
        }
        let record = self.edit_tenant(name, entry, |t| {
            if let Some(url) = settings.graph_base_url {
                t.graph_base_url = url;
            }
            if let Some(url) = settings.token_url {
                t.token_url = url;
            }
            if let Some(schedule) = settings.schedule {
                t.schedule = schedule;
            }
            if let Some(retention) = settings.retention {
                t.retention = retention;
            }
            if let Some(days) = settings.report_retention_days {
                t.report_retention_days = days;
            }
            if !settings.recovery.is_empty() {
                let r = settings.recovery.apply(t.recovery.clone());
                r.validate()?;
                t.recovery = r;
            }
            Ok(())
        })?;
        self.flush().await?;
        Ok(record)
    }

    /// Replaces a tenant's application credentials.
    pub async fn set_credentials(
        &self,
        key: &SecretKey,
        name: &str,
        client_id: &str,
        secret: &Secret,
    ) -> Result<TenantRecord, StateError> {
        self.set_credentials_by(&Actor::Coordinator, key, name, client_id, secret)
            .await
    }

    /// [`State::set_credentials`] on behalf of `actor`, named in the audit record (with the
    /// client id, never the secret).
    pub async fn set_credentials_by(
        &self,
        actor: &Actor,
        key: &SecretKey,
        name: &str,
        client_id: &str,
        secret: &Secret,
    ) -> Result<TenantRecord, StateError> {
        let sealed = seal_app(key, name, client_id, secret)?;
        let entry = AuditEntry::new(actor, "credentials.set", Subject::tenant(name))
            .with("clientId", client_id);
        let record = self.edit_tenant(name, entry, |t| {
            if t.apps.iter().any(|a| a.client_id == client_id) {
                return Err(StateError::Exists {
                    what: "app registration",
                    id: client_id.to_owned(),
                });
            }
            t.client_id = client_id.to_owned();
            t.secret = sealed;
            Ok(())
        })?;
        self.flush().await?;
        Ok(record)
    }

    /// Adds an app registration to a tenant's (its secret sealed under `key`), on behalf of
    /// `actor`: a client id the tenant already has is a conflict.
    pub async fn add_app_by(
        &self,
        actor: &Actor,
        key: &SecretKey,
        name: &str,
        client_id: &str,
        secret: &Secret,
    ) -> Result<TenantRecord, StateError> {
        let sealed = seal_app(key, name, client_id, secret)?;
        let entry =
            AuditEntry::new(actor, "app.added", Subject::tenant(name)).with("clientId", client_id);
        let record = self.edit_tenant(name, entry, |t| {
            if t.write_apps().iter().any(|(id, _)| *id == client_id) {
                return Err(StateError::Exists {
                    what: "app registration",
                    id: client_id.to_owned(),
                });
            }
            if t.write_apps().len() >= MAX_APPS {
                return Err(StateError::invalid(
                    "clientId",
                    format!("{client_id:?}"),
                    format!("the tenant already has {MAX_APPS} app registrations, the most it may"),
                ));
            }
            t.apps.push(AppRegistration {
                client_id: client_id.to_owned(),
                secret: sealed,
            });
            Ok(())
        })?;
        self.flush().await?;
        Ok(record)
    }

    /// Removes one of a tenant's added app registrations, on behalf of `actor` (the primary
    /// one is replaced through [`State::set_credentials`], never removed).
    pub async fn remove_app_by(
        &self,
        actor: &Actor,
        name: &str,
        client_id: &str,
    ) -> Result<TenantRecord, StateError> {
        let entry = AuditEntry::new(actor, "app.removed", Subject::tenant(name))
            .with("clientId", client_id);
        let record = self.edit_tenant(name, entry, |t| {
            if t.client_id == client_id {
                return Err(StateError::invalid(
                    "clientId",
                    format!("{client_id:?}"),
                    "is the tenant's primary app registration: replace it through its credentials instead",
                ));
            }
            let before = t.apps.len();
            t.apps.retain(|a| a.client_id != client_id);
            if t.apps.len() == before {
                return Err(StateError::not_found("app registration", client_id));
            }
            Ok(())
        })?;
        self.flush().await?;
        Ok(record)
    }

    /// Removes a tenant; refused while it has an open job. Its snapshots and job history stay
    /// (backups are immutable; only retention removes them).
    pub async fn remove_tenant(&self, name: &str) -> Result<(), StateError> {
        self.remove_tenant_by(&Actor::Coordinator, name).await
    }

    /// [`State::remove_tenant`] on behalf of `actor`, named in the audit record.
    pub async fn remove_tenant_by(&self, actor: &Actor, name: &str) -> Result<(), StateError> {
        {
            let guard = self.lock();
            if let Some(job) = self.active_by_tenant.get(name.as_bytes())? {
                return Err(StateError::Conflict {
                    tenant: name.to_owned(),
                    running_job: String::from_utf8_lossy(&job).into_owned(),
                });
            }
            if self.tenants.get(name.as_bytes())?.is_none() {
                return Err(StateError::not_found("tenant", name));
            }
            let entry = AuditEntry::new(actor, "tenant.removed", Subject::tenant(name));
            self.append_audit(&guard, entry)?;
            self.tenants.remove(name.as_bytes())?;
        }
        self.flush().await
    }

    /// Read, edit, audit, write under the write lock (no flush: the caller flushes).
    fn edit_tenant(
        &self,
        name: &str,
        audit: AuditEntry<'_>,
        edit: impl FnOnce(&mut TenantRecord) -> Result<(), StateError>,
    ) -> Result<TenantRecord, StateError> {
        let guard = self.lock();
        let mut record = self.get_tenant(name)?;
        edit(&mut record)?;
        let bytes = encode(tree::TENANTS, name.as_bytes(), &record)?;
        self.append_audit(&guard, audit)?;
        self.tenants.insert(name.as_bytes(), bytes)?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        for good in ["a", "acme", "0", "acme-corp-1", &"a".repeat(63)] {
            assert!(validate_tenant_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-acme",
            "Acme",
            "ac me",
            "acme.corp",
            "acme_corp",
            &"a".repeat(64),
        ] {
            let msg = validate_tenant_name(bad).unwrap_err().to_string();
            assert!(msg.contains("invalid name"), "{bad}: {msg}");
        }
    }

    #[test]
    fn urls() {
        assert!(validate_url("tokenUrl", "https://login.example/t/oauth2/v2.0/token").is_ok());
        assert!(validate_url("tokenUrl", "http://127.0.0.1:8080/x").is_ok());
        for bad in ["ftp://x", "https://", "x", "https:// x"] {
            let msg = validate_url("tokenUrl", bad).unwrap_err().to_string();
            assert!(msg.contains("tokenUrl") && msg.contains(bad), "{msg}");
        }
    }
}
