//! Saving and loading the simulator's state: a zstd-compressed stream of msgpack records
//! (a header, then per tenant its app registrations followed by its objects), written to a
//! temporary file that is renamed over the state file.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use rewind_common::{DirectoryObject, ObjectId};
use serde::{Deserialize, Serialize};

use super::settings::Settings;
use super::state::{read, App, AppCredentials, Tenant};
use super::store::TenantData;

const FORMAT: &str = "rewind-dirsim-state";
const VERSION: u32 = 1;

/// Why state could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding state: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decoding state from {path}: {source}")]
    Decode {
        path: PathBuf,
        source: rmp_serde::decode::Error,
    },
    #[error("{path} is not a simulator state file (format {format:?}, version {version})")]
    Format {
        path: PathBuf,
        format: String,
        version: u32,
    },
    #[error("settings in the state file: {0}")]
    Settings(#[from] serde_json::Error),
    #[error("the apps of a tenant in {path}: {source}")]
    Apps {
        path: PathBuf,
        source: super::state::AppError,
    },
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    clock_offset: i64,
    /// Settings as JSON, so that added settings keep old files readable.
    settings: String,
    tenants: u64,
}

#[derive(Serialize, Deserialize)]
struct SavedTenant {
    name: String,
    client_id: String,
    client_secret: String,
    org_id: ObjectId,
    /// The tenant's change counter (delta tokens stay meaningful across a restart).
    seq: u64,
    objects: u64,
    /// The apps added after the primary one (`client_id`, `client_secret`), in order. Last,
    /// and empty when absent, so that a file written before apps were added still loads.
    #[serde(default)]
    apps: Vec<AppCredentials>,
}

/// What a state file holds.
#[derive(Debug)]
pub struct Loaded {
    pub clock_offset: i64,
    pub settings: Settings,
    pub tenants: Vec<Tenant>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes the state of every tenant; returns how many objects were saved. Each tenant is
/// read-locked while it is written, so each is saved consistently.
pub fn save(app: &App, path: &Path) -> Result<u64, PersistError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let mut enc = zstd::Encoder::new(BufWriter::new(file), 3).map_err(io(&tmp))?;
    let tenants = app.all_tenants();
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        clock_offset: app.clock_offset(),
        settings: serde_json::to_string(&app.settings())?,
        tenants: tenants.len() as u64,
    };
    rmp_serde::encode::write(&mut enc, &header)?;
    let mut total = 0u64;
    for t in &tenants {
        let mut apps = t.apps().into_iter();
        let primary = apps.next().unwrap_or(AppCredentials {
            client_id: String::new(),
            client_secret: String::new(),
        });
        let data = read(&t.data);
        let saved = SavedTenant {
            name: t.name.clone(),
            client_id: primary.client_id,
            client_secret: primary.client_secret,
            org_id: t.org_id,
            seq: data.seq(),
            objects: data.object_count() as u64,
            apps: apps.collect(),
        };
        rmp_serde::encode::write(&mut enc, &saved)?;
        for o in data.all_objects() {
            rmp_serde::encode::write(&mut enc, o)?;
        }
        total += saved.objects;
    }
    let mut writer = enc.finish().map_err(io(&tmp))?;
    writer.flush().map_err(io(&tmp))?;
    let file = writer.into_inner().map_err(|e| PersistError::Io {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(total)
}

/// Reads a state file written by [`save`].
pub fn load(path: &Path) -> Result<Loaded, PersistError> {
    let file = File::open(path).map_err(io(path))?;
    let mut dec = zstd::Decoder::new(BufReader::new(file)).map_err(io(path))?;
    let decode = |source| PersistError::Decode {
        path: path.to_owned(),
        source,
    };
    let header: Header = rmp_serde::decode::from_read(&mut dec).map_err(decode)?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(PersistError::Format {
            path: path.to_owned(),
            format: header.format,
            version: header.version,
        });
    }
    let settings: Settings = serde_json::from_str(&header.settings)?;
    let mut tenants = Vec::new();
    for _ in 0..header.tenants {
        let saved: SavedTenant = rmp_serde::decode::from_read(&mut dec).map_err(decode)?;
        let mut data = TenantData::default();
        data.set_seq(saved.seq);
        for _ in 0..saved.objects {
            let o: DirectoryObject = rmp_serde::decode::from_read(&mut dec).map_err(decode)?;
            data.upsert_quiet(o);
        }
        let primary = AppCredentials {
            client_id: saved.client_id,
            client_secret: saved.client_secret,
        };
        let tenant = Tenant::new(saved.name, primary, saved.org_id, data);
        for app in saved.apps {
            tenant.add_app(app).map_err(|source| PersistError::Apps {
                path: path.to_owned(),
                source,
            })?;
        }
        tenants.push(tenant);
    }
    Ok(Loaded {
        clock_offset: header.clock_offset,
        settings,
        tenants,
    })
}
