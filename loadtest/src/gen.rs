//! `rewind loadtest gen`: builds a seeded, realistic tenant straight into a running simulator
//! through its admin bulk-load route (JSON Lines of Graph-shaped objects), chunk by chunk and
//! two chunks at a time, without holding the tenant in memory.

use std::time::{Duration, Instant};

use rayon::prelude::*;
use rewind_common::graph_json::to_graph_json;
use serde::Serialize;
use serde_json::Value as Json;

use rewind_common::DirectoryObject;

use crate::tenant::{Fate, TenantGenerator, TenantSpec};

/// Objects per bulk-load request.
const CHUNK: u64 = 20_000;

#[derive(Clone, Debug)]
pub struct GenConfig {
    /// The simulator's root URL (`http://host:port`).
    pub dirsim: String,
    pub tenant: String,
    pub objects: u64,
    pub seed: u64,
    /// Credentials of the tenant's app; derived from the tenant name and seed when absent, so
    /// that refilling a tenant with the same seed uses the credentials it already has.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// What a client needs to reach the generated tenant (printed as JSON).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenResult {
    pub tenant: String,
    pub graph_base_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub objects: u64,
    pub created_tenant: bool,
    pub seconds: f64,
    pub objects_per_second: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("the simulator at {url} cannot be reached: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("the simulator answered {status} to {what}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("the simulator rejected {count} objects, first: {first}")]
    Rejected { count: u64, first: String },
    #[error("invalid --dirsim URL {0:?}: it must start with http:// or https://")]
    BadUrl(String),
    #[error("{0}")]
    Usage(String),
}

fn derived(tenant: &str, seed: u64, what: &str) -> String {
    let h = blake3::hash(format!("rewind-gen:{what}:{tenant}:{seed}").as_bytes());
    h.to_hex()[..32].to_owned()
}

/// The client id and secret `gen` gives a tenant when none are given: a pure function of the
/// tenant name and the seed, so that other commands (`incident`) find them again.
pub fn tenant_credentials(tenant: &str, seed: u64) -> (String, String) {
    (
        guid(&derived(tenant, seed, "client-id")),
        derived(tenant, seed, "client-secret"),
    )
}

fn guid(hex32: &str) -> String {
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex32[..8],
        &hex32[8..12],
        &hex32[13..16],
        &hex32[17..20],
        &hex32[20..32]
    )
}

/// Sends one request, turning transport errors and non-success statuses into [`GenError`].
fn send(
    agent: &ureq::Agent,
    root: &str,
    what: &str,
    path: &str,
    body: &[u8],
    content_type: &str,
) -> Result<(u16, String), GenError> {
    let url = format!("{root}{path}");
    let response = agent
        .post(&url)
        .header("content-type", content_type)
        .send(body)
        .map_err(|source| GenError::Unreachable {
            url: url.clone(),
            source: Box::new(source),
        })?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap_or_default();
    if status >= 400 && status != 409 {
        return Err(GenError::Refused {
            what: what.to_owned(),
            status,
            body: text,
        });
    }
    Ok((status, text))
}

/// Bulk-loads `count` objects (`object(0..count)`) into the tenant, two chunks in flight;
/// returns how many the simulator loaded (all, or an error).
fn load(
    agent: &ureq::Agent,
    root: &str,
    tenant: &str,
    count: u64,
    object: impl Fn(u64) -> DirectoryObject + Sync,
) -> Result<u64, GenError> {
    let chunks: Vec<u64> = (0..count.div_ceil(CHUNK)).collect();
    let done = std::sync::atomic::AtomicU64::new(0);
    let path = format!("/_admin/tenants/{tenant}/objects");
    chunks.par_iter().try_for_each(|&c| {
        let mut body = Vec::with_capacity(CHUNK as usize * 900);
        for i in c * CHUNK..((c + 1) * CHUNK).min(count) {
            let object = object(i);
            let mut json = to_graph_json(&object);
            if let Json::Object(map) = &mut json {
                map.insert(
                    "type".into(),
                    Json::String(object.object_type.as_str().into()),
                );
            }
            // Writing JSON into memory cannot fail.
            let _ = serde_json::to_writer(&mut body, &json);
            body.push(b'\n');
        }
        let (_, text) = send(
            agent,
            root,
            "a bulk load",
            &path,
            &body,
            "application/x-ndjson",
        )?;
        let answer: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
        let rejected = answer["errorCount"].as_u64().unwrap_or(0);
        if rejected > 0 {
            return Err(GenError::Rejected {
                count: rejected,
                first: answer["errors"][0].to_string(),
            });
        }
        let n = done.fetch_add(
            answer["loaded"].as_u64().unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        ) + answer["loaded"].as_u64().unwrap_or(0);
        tracing::info!(loaded = n, total = count, "objects loaded");
        Ok(())
    })?;
    let loaded = done.into_inner();
    if loaded != count {
        return Err(GenError::Rejected {
            count: count - loaded,
            first: "the simulator loaded fewer objects than were sent".into(),
        });
    }
    Ok(loaded)
}

/// What [`apply_incident`] did to the tenant.
#[derive(Clone, Debug, Serialize)]
pub struct IncidentLoad {
    pub changed: u64,
    pub soft_deleted: u64,
    pub created: u64,
    pub seconds: f64,
    /// The ids it changed, soft-deleted or created, sorted.
    #[serde(skip)]
    pub ids: Vec<rewind_common::ObjectId>,
}

impl IncidentLoad {
    /// The entries a difference report against the generated backup must have.
    pub fn expected_entries(&self) -> u64 {
        self.changed + self.soft_deleted + self.created
    }
}

/// Applies the generator's own incident (1% of objects changed, 0.5% soft-deleted, 0.5%
/// created: `TenantSpec::new`) to a generated tenant through the bulk-load route, which
/// replaces the objects by id: the benchmarks' current state, at any size.
pub fn apply_incident(config: &GenConfig) -> Result<IncidentLoad, GenError> {
    apply_incident_of(config, TenantSpec::new(config.objects, config.seed))
}

/// Applies the incident of `spec` (its shares changed, soft-deleted and created; its objects
/// and seed must be the generated tenant's) the way [`apply_incident`] does: for benchmarks
/// that need a larger incident than the generator's own.
pub fn apply_incident_of(config: &GenConfig, spec: TenantSpec) -> Result<IncidentLoad, GenError> {
    if spec.objects != config.objects || spec.seed != config.seed {
        return Err(GenError::Usage(format!(
            "the incident's tenant ({} objects, seed {}) is not the generated one ({} objects, seed {})",
            spec.objects, spec.seed, config.objects, config.seed
        )));
    }
    let root = config.dirsim.trim_end_matches('/').to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let started = Instant::now();
    let generator = TenantGenerator::new(spec);
    let (mut changed, mut soft_deleted) = (0, 0);
    let mut touched: Vec<u64> = Vec::new();
    for i in 0..generator.backup_count() {
        match generator.fate(i) {
            Fate::Changed => changed += 1,
            Fate::SoftDeleted => soft_deleted += 1,
            Fate::Unchanged => continue,
        }
        touched.push(i);
    }
    touched.extend(generator.backup_count()..generator.current_count());
    let created = generator.current_count() - generator.backup_count();
    load(&agent, &root, &config.tenant, touched.len() as u64, |k| {
        let i = touched[k as usize];
        generator
            .current_object(i)
            .unwrap_or_else(|| generator.backup_object(i))
    })?;
    let mut ids: Vec<rewind_common::ObjectId> = touched.iter().map(|&i| generator.id(i)).collect();
    ids.sort_unstable();
    Ok(IncidentLoad {
        changed,
        soft_deleted,
        created,
        seconds: started.elapsed().as_secs_f64(),
        ids,
    })
}

/// Creates the tenant (or finds it) and loads the generated objects into it.
pub fn run(config: &GenConfig) -> Result<GenResult, GenError> {
    let root = config.dirsim.trim_end_matches('/').to_owned();
    if !(root.starts_with("http://") || root.starts_with("https://")) {
        return Err(GenError::BadUrl(config.dirsim.clone()));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let (derived_id, derived_secret) = tenant_credentials(&config.tenant, config.seed);
    let client_id = config.client_id.clone().unwrap_or(derived_id);
    let client_secret = config.client_secret.clone().unwrap_or(derived_secret);
    let started = Instant::now();
    let tenant_body = serde_json::json!({
        "tenant": config.tenant,
        "clientId": client_id,
        "clientSecret": client_secret,
    });
    let (status, _) = send(
        &agent,
        &root,
        "creating the tenant",
        "/_admin/tenants",
        tenant_body.to_string().as_bytes(),
        "application/json",
    )?;
    let created_tenant = status != 409;

    let generator = TenantGenerator::new(TenantSpec::new(config.objects, config.seed));
    let total = generator.backup_count();
    let objects = load(&agent, &root, &config.tenant, total, |i| {
        generator.backup_object(i)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(GenResult {
        graph_base_url: format!("{root}/{}/v1.0", config.tenant),
        token_url: format!("{root}/{}/oauth2/v2.0/token", config.tenant),
        tenant: config.tenant.clone(),
        client_id,
        client_secret,
        objects,
        created_tenant,
        seconds,
        objects_per_second: objects as f64 / seconds.max(1e-9),
    })
}
