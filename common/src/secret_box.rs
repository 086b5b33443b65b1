//! Directory credentials at rest (the coordinator's state) and in task messages (sealed the
//! same way; workers open them with the same key): XChaCha20-Poly1305 under a 32-byte key from the environment
//! or a key file, a random nonce per secret, the tenant name as associated data.

use std::fmt;
use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::connector::Secret;

/// A secret that cannot be sealed or opened, or a key that cannot be had. Never holds the
/// secret or the key.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key does not match the key that encrypted the secret of tenant {tenant}")]
    KeyMismatch { tenant: String },
    #[error("secret key: {reason}")]
    SecretKey { reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// The environment variable that holds the key as 64 hex characters.
pub const SECRET_KEY_ENV: &str = "REWIND_SECRET_KEY";

const NONCE_LEN: usize = 24;

/// The key that encrypts every tenant's secret. Never printed.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> SecretKey {
        SecretKey(XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    /// From 64 hex characters (surrounding white space ignored). `source` names where the text
    /// came from; the text itself is never in the error.
    pub fn from_hex(source: &str, text: &str) -> Result<SecretKey, SecretError> {
        let text = text.trim();
        let bad = |reason: String| SecretError::SecretKey {
            reason: format!("{source}: {reason}"),
        };
        if text.len() != 64 {
            return Err(bad(format!(
                "64 hex characters expected, {} found",
                text.chars().count()
            )));
        }
        let mut key = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let hi = hex_digit(pair[0]);
            let lo = hex_digit(pair[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => key[i] = (hi << 4) | lo,
                _ => return Err(bad("only hex characters (0-9, a-f) are allowed".into())),
            }
        }
        Ok(SecretKey(key))
    }

    /// The key from [`SECRET_KEY_ENV`] when it is set, else from the key file at `path`
    /// (created on a first run by [`SecretKey::load_or_create`]).
    pub fn from_env_or_file(path: &Path) -> Result<SecretKey, SecretError> {
        match std::env::var(SECRET_KEY_ENV) {
            Ok(text) => SecretKey::from_hex(SECRET_KEY_ENV, &text),
            Err(std::env::VarError::NotPresent) => SecretKey::load_or_create(path),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::SecretKey {
                reason: format!("{SECRET_KEY_ENV}: not valid UTF-8"),
            }),
        }
    }

    /// Reads the key file at `path`, or creates it (mode 0600, a new random key) when there is
    /// none. A key file that others may read is refused.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, SecretError> {
        let io = |what: String| move |source| SecretError::Io { what, source };
        match std::fs::metadata(path) {
            Ok(meta) => {
                check_mode(path, &meta)?;
                let text = std::fs::read_to_string(path)
                    .map_err(io(format!("cannot read the key file {}", path.display())))?;
                SecretKey::from_hex(&format!("key file {}", path.display()), &text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(io(format!(
                        "cannot create the folder of the key file {}",
                        path.display()
                    )))?;
                }
                let key = SecretKey::generate();
                let mut file = create_private(path)
                    .map_err(io(format!("cannot create the key file {}", path.display())))?;
                file.write_all(key.to_hex().as_bytes())
                    .and_then(|()| file.write_all(b"\n"))
                    .and_then(|()| file.sync_all())
                    .map_err(io(format!("cannot write the key file {}", path.display())))?;
                Ok(key)
            }
            Err(e) => Err(SecretError::Io {
                what: format!("cannot read the key file {}", path.display()),
                source: e,
            }),
        }
    }

    fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::SecretKey {
            reason: format!(
                "the key file {} may be read by others (mode {mode:o}): make it 0600",
                path.display()
            ),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), SecretError> {
    Ok(())
}

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// A tenant's secret as stored: nonce and ciphertext (with its tag). Bound to the tenant's
/// name, so it opens only as that tenant's.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedSecret {
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl fmt::Debug for EncryptedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptedSecret(***)")
    }
}

impl EncryptedSecret {
    /// Encrypts `secret` for `tenant` with a fresh random nonce.
    pub fn seal(key: &SecretKey, tenant: &str, secret: &Secret) -> Result<Self, SecretError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = key
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: tenant.as_bytes(),
                },
            )
            .map_err(|_| SecretError::SecretKey {
                reason: format!("cannot encrypt the secret of tenant {tenant}"),
            })?;
        Ok(EncryptedSecret {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Decrypts the secret of `tenant`; a wrong key, or a ciphertext of another tenant, is
    /// [`SecretError::KeyMismatch`].
    pub fn open(&self, key: &SecretKey, tenant: &str) -> Result<Secret, SecretError> {
        let mismatch = || SecretError::KeyMismatch {
            tenant: tenant.to_owned(),
        };
        if self.nonce.len() != NONCE_LEN {
            return Err(mismatch());
        }
        let nonce = XNonce::from_slice(&self.nonce);
        let plain = key
            .cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &self.ciphertext,
                    aad: tenant.as_bytes(),
                },
            )
            .map_err(|_| mismatch())?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| mismatch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_round_trips_and_a_wrong_key_says_so() {
        let key = SecretKey::generate();
        let sealed = EncryptedSecret::seal(&key, "acme", &Secret::new("hunter2")).unwrap();
        assert_eq!(sealed.open(&key, "acme").unwrap().expose(), "hunter2");
        let err = sealed.open(&SecretKey::generate(), "acme").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("does not match") && !msg.contains("hunter2"),
            "{msg}"
        );
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[test]
    fn a_ciphertext_cannot_be_moved_to_another_tenant() {
        let key = SecretKey::generate();
        let sealed = EncryptedSecret::seal(&key, "acme", &Secret::new("s")).unwrap();
        assert!(matches!(
            sealed.open(&key, "other"),
            Err(SecretError::KeyMismatch { tenant }) if tenant == "other"
        ));
    }

    #[test]
    fn each_seal_has_its_own_nonce() {
        let key = SecretKey::generate();
        let a = EncryptedSecret::seal(&key, "acme", &Secret::new("s")).unwrap();
        let b = EncryptedSecret::seal(&key, "acme", &Secret::new("s")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn hex_keys_parse_and_bad_ones_never_echo_the_text() {
        let text = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        assert!(SecretKey::from_hex("test", text).is_ok());
        let bad = "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let msg = SecretKey::from_hex(SECRET_KEY_ENV, bad)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(SECRET_KEY_ENV) && !msg.contains(bad), "{msg}");
        let msg = SecretKey::from_hex(SECRET_KEY_ENV, "abc")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("64 hex characters"), "{msg}");
        assert_eq!(format!("{:?}", SecretKey::generate()), "SecretKey(***)");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_is_created_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secret.key");
        let key = SecretKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(key.0, again.0);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let msg = SecretKey::load_or_create(&path).unwrap_err().to_string();
        assert!(msg.contains("read by others"), "{msg}");
    }
}
