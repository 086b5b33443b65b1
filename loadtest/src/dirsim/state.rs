//! The simulator's shared state: tenants (their app registrations, directory, throttling
//! state), settings, the simulated clock, issued tokens and counters.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rewind_common::{DirectoryObject, ObjectId, ObjectType, Value};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::random_guid;
use super::metrics::Metrics;
use super::settings::Settings;
use super::store::TenantData;
use super::throttle::ThrottleState;
use super::writelog::WriteLog;

/// A read guard, recovering the data of a lock poisoned by a panicking writer.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One of a tenant's app registrations, as the token endpoint checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppCredentials {
    pub client_id: String,
    pub client_secret: String,
}

/// An app's place in [`Tenant::apps`] (0 is the primary app). Apps are only ever appended, so
/// an index names the same app for the tenant's whole life, and a token or a logged write
/// keeps two bytes instead of the client id.
pub type AppIndex = u16;

/// The most app registrations one tenant holds (its primary app included).
pub const MAX_APPS: usize = 1000;

/// Why an app could not be added to a tenant.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("client id {0:?} is already one of the tenant's apps")]
    Exists(String),
    #[error("the tenant already holds {MAX_APPS} apps")]
    TooMany,
}

/// One simulated tenant.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    /// The tenant's app registrations: the primary app (the one it was created with) first,
    /// then the added ones in the order they were added.
    apps: RwLock<Vec<AppCredentials>>,
    /// The id of the tenant's organization object.
    pub org_id: ObjectId,
    pub data: RwLock<TenantData>,
    pub throttle: Mutex<ThrottleState>,
    /// The write log and per-second write maxima (`/_admin/tenants/{tenant}/writes`); not
    /// saved in the state file.
    pub writes: Mutex<WriteLog>,
}

impl Tenant {
    /// A tenant with fresh throttling state and an empty write log.
    pub fn new(name: String, primary: AppCredentials, org_id: ObjectId, data: TenantData) -> Self {
        Self {
            name,
            apps: RwLock::new(vec![primary]),
            org_id,
            data: RwLock::new(data),
            throttle: Mutex::new(ThrottleState::default()),
            writes: Mutex::new(WriteLog::default()),
        }
    }

    /// Every app registration, the primary one first.
    pub fn apps(&self) -> Vec<AppCredentials> {
        read(&self.apps).clone()
    }

    /// Every app's client id, the primary one first (index = [`AppIndex`]).
    pub fn client_ids(&self) -> Vec<String> {
        read(&self.apps)
            .iter()
            .map(|a| a.client_id.clone())
            .collect()
    }

    /// The primary app's client id.
    pub fn primary_client_id(&self) -> String {
        read(&self.apps)
            .first()
            .map(|a| a.client_id.clone())
            .unwrap_or_default()
    }

    /// The app with this client id: its index, and whether `secret` is its own secret.
    pub fn find_app(&self, client_id: &str, secret: &str) -> Option<(AppIndex, bool)> {
        let apps = read(&self.apps);
        let i = apps.iter().position(|a| a.client_id == client_id)?;
        let index = AppIndex::try_from(i).ok()?;
        Some((index, apps[i].client_secret == secret))
    }

    /// Adds an app registration (after the ones already held).
    pub fn add_app(&self, app: AppCredentials) -> Result<(), AppError> {
        let mut apps = write(&self.apps);
        if apps.iter().any(|a| a.client_id == app.client_id) {
            return Err(AppError::Exists(app.client_id));
        }
        if apps.len() >= MAX_APPS {
            return Err(AppError::TooMany);
        }
        apps.push(app);
        Ok(())
    }
}

/// An issued bearer token.
#[derive(Debug, Clone)]
pub struct Token {
    pub tenant: String,
    /// The app (client id) the token was issued to.
    pub app: AppIndex,
    pub expires: Instant,
}

/// Why a tenant could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant {0:?} already exists")]
    Exists(String),
    #[error("invalid tenant name {0:?} (letters, digits, '.', '-' and '_' only)")]
    BadName(String),
}

/// Everything the server shares between requests.
#[derive(Debug)]
pub struct App {
    pub tenants: RwLock<BTreeMap<String, Arc<Tenant>>>,
    pub settings: RwLock<Settings>,
    clock_offset: AtomicI64,
    pub tokens: Mutex<HashMap<String, Token>>,
    pub metrics: Metrics,
    pub state_path: Option<PathBuf>,
    /// Graph requests seen, for spreading dropped connections evenly (see [`App::drop_next`]).
    drop_sequence: AtomicU64,
}

impl App {
    pub fn new(settings: Settings, state_path: Option<PathBuf>) -> Self {
        Self {
            tenants: RwLock::new(BTreeMap::new()),
            settings: RwLock::new(settings),
            clock_offset: AtomicI64::new(0),
            tokens: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            state_path,
            drop_sequence: AtomicU64::new(0),
        }
    }

    /// Whether to drop the connection of the next Graph request: request `n` is dropped when
    /// `floor((n + 1) * rate) > floor(n * rate)`, so exactly the configured share of requests is
    /// dropped, evenly spread and reproducibly (a rate of 0.05 drops every 20th request).
    pub fn drop_next(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let n = self.drop_sequence.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * rate).floor() > (n * rate).floor()
    }

    /// The simulated time, in Unix seconds.
    pub fn now(&self) -> i64 {
        real_now().saturating_add(self.clock_offset.load(Ordering::Relaxed))
    }

    pub fn clock_offset(&self) -> i64 {
        self.clock_offset.load(Ordering::Relaxed)
    }

    pub fn set_clock_offset(&self, offset: i64) {
        self.clock_offset.store(offset, Ordering::Relaxed);
    }

    pub fn set_now(&self, unix: i64) {
        self.set_clock_offset(unix.saturating_sub(real_now()));
    }

    pub fn advance(&self, secs: i64) {
        self.clock_offset.fetch_add(secs, Ordering::Relaxed);
    }

    pub fn settings(&self) -> Settings {
        read(&self.settings).clone()
    }

    /// The tenant by its name, or by its organization (tenant) id as clients often address it.
    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        let tenants = read(&self.tenants);
        if let Some(t) = tenants.get(name) {
            return Some(t.clone());
        }
        let id = name.parse::<ObjectId>().ok()?;
        tenants.values().find(|t| t.org_id == id).cloned()
    }

    pub fn all_tenants(&self) -> Vec<Arc<Tenant>> {
        read(&self.tenants).values().cloned().collect()
    }

    /// Adds a tenant with its singletons (organization, authorization policy, authentication
    /// methods policy) seeded.
    pub fn create_tenant(
        &self,
        name: &str,
        client_id: &str,
        client_secret: &str,
        org_id: Option<ObjectId>,
    ) -> Result<Arc<Tenant>, TenantError> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('_')
            && name != "metrics"
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !valid {
            return Err(TenantError::BadName(name.to_owned()));
        }
        let mut tenants = write(&self.tenants);
        if tenants.contains_key(name) {
            return Err(TenantError::Exists(name.to_owned()));
        }
        let org_id = org_id.unwrap_or(ObjectId(random_guid()));
        let mut data = TenantData::default();
        for object in seed_singletons(name, org_id) {
            data.upsert(object);
        }
        let primary = AppCredentials {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
        };
        let tenant = Arc::new(Tenant::new(name.to_owned(), primary, org_id, data));
        tenants.insert(name.to_owned(), tenant.clone());
        Ok(tenant)
    }

    /// Adds a tenant as a saved state file holds it.
    pub fn insert_tenant(&self, tenant: Tenant) {
        write(&self.tenants).insert(tenant.name.clone(), Arc::new(tenant));
    }

    /// Issues a token for `tenant`'s app `app` valid for the configured lifetime.
    pub fn issue_token(&self, tenant: &str, app: AppIndex, lifetime_secs: u64) -> String {
        let token = format!("dirsim.{:032x}{:032x}", random_guid(), random_guid());
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        if tokens.len() > 10_000 {
            tokens.retain(|_, t| t.expires > now);
        }
        tokens.insert(
            token.clone(),
            Token {
                tenant: tenant.to_owned(),
                app,
                // At most ten years, so that the deadline cannot overflow.
                expires: now + std::time::Duration::from_secs(lifetime_secs.min(315_360_000)),
            },
        );
        token
    }

    /// The tenant and the app a live token was issued to.
    pub fn token_grant(&self, token: &str) -> Option<(String, AppIndex)> {
        let tokens = lock(&self.tokens);
        let t = tokens.get(token)?;
        (t.expires > Instant::now()).then(|| (t.tenant.clone(), t.app))
    }

    /// Each tenant's writes in the current and the previous write window.
    pub fn write_windows(&self) -> BTreeMap<String, (u64, u64)> {
        let settings = self.settings();
        let now = Instant::now();
        self.all_tenants()
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    lock(&t.throttle).writes_in_window(&settings, now),
                )
            })
            .collect()
    }
}

pub fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn seed_singletons(name: &str, org_id: ObjectId) -> Vec<DirectoryObject> {
    let mut org = DirectoryObject::new(org_id, ObjectType::Organization);
    org.set("displayName", name.into());
    org.set("mfaEnabled", false.into());
    org.set("mfaAppPasswordsBlocked", true.into());
    org.set("mfaRememberDevicesEnabled", false.into());
    org.set("mfaRememberDevicesDays", Value::Int(14));
    org.set(
        "mfaAvailableMethods",
        Value::List(vec!["phoneAppNotification".into(), "phoneAppOtp".into()]),
    );

    let mut authz = DirectoryObject::new(
        ObjectId::for_singleton("authorizationPolicy"),
        ObjectType::AuthorizationPolicy,
    );
    authz.set("displayName", "Authorization Policy".into());
    authz.set("blockMsolPowerShell", false.into());
    authz.set(
        "guestUserRoleId",
        "10dae51f-b6af-4016-8d66-8c2a99b929b3".into(),
    );

    let mut methods = DirectoryObject::new(
        ObjectId::for_singleton("authenticationMethodsPolicy"),
        ObjectType::AuthenticationMethodsPolicy,
    );
    methods.set("displayName", "Authentication Methods Policy".into());
    for (id, kind) in [
        ("email", "emailAuthenticationMethodConfiguration"),
        ("fido2", "fido2AuthenticationMethodConfiguration"),
        (
            "microsoftAuthenticator",
            "microsoftAuthenticatorAuthenticationMethodConfiguration",
        ),
        ("sms", "smsAuthenticationMethodConfiguration"),
        (
            "softwareOath",
            "softwareOathAuthenticationMethodConfiguration",
        ),
        (
            "temporaryAccessPass",
            "temporaryAccessPassAuthenticationMethodConfiguration",
        ),
        ("voice", "voiceAuthenticationMethodConfiguration"),
        (
            "x509Certificate",
            "x509CertificateAuthenticationMethodConfiguration",
        ),
    ] {
        let config = json!({
            "@odata.type": format!("#microsoft.graph.{kind}"),
            "state": "disabled",
        });
        methods.set(id, Value::from_json(&config));
    }
    vec![org, authz, methods]
}
