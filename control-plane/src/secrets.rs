//! Secrets at rest: ChaCha20-Poly1305 under a master key.
//!
//! The master key comes from `HOOKMESH_MASTER_KEY` (base64 of 32 bytes) or a key file created in
//! the data directory with mode 0600. A sealed value is `version (1) | key id (4) | nonce (12)
//! | ciphertext+tag`, and the resource id is authenticated with it, so a blob copied onto
//! another row does not decrypt. Previous keys (`HOOKMESH_PREVIOUS_MASTER_KEYS`) still open
//! old values until `hookmesh rekey` has re-sealed everything under the current key.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};
use std::path::Path;

const VERSION: u8 = 1;
const KEY_FILE: &str = "master.key";

/// Failures of key loading and unsealing.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A configured key is not base64 of 32 bytes.
    #[error("{0}: a master key is base64 of exactly 32 bytes")]
    BadKey(&'static str),
    /// The key file could not be read or created.
    #[error("master key file {path}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but is readable by others.
    #[error("master key file {0} is readable by group or others: chmod 600 it")]
    KeyFileMode(String),
    /// Sealed by a key that is not configured.
    #[error("sealed with unknown master key {0:08x}: add it to HOOKMESH_PREVIOUS_MASTER_KEYS")]
    UnknownKey(u32),
    /// Tampered, truncated, or bound to another resource.
    #[error("sealed value failed authentication")]
    Corrupt,
}

struct MasterKey {
    id: u32,
    cipher: ChaCha20Poly1305,
    /// The ingest token derived from this key (see [`MasterKeys::ingest_token`]).
    ingest_token: String,
    /// The in-process controller's API key derived from this key.
    controller_key: String,
}

impl MasterKey {
    fn new(bytes: &[u8; 32]) -> MasterKey {
        let digest = Sha256::digest(bytes);
        // A labelled hash: the token reveals nothing about the key, and every replica holding
        // the key derives the same token without storing one more secret.
        let token = Sha256::new()
            .chain_update(b"hookmesh ingest token v1\0")
            .chain_update(bytes)
            .finalize();
        let controller = Sha256::new()
            .chain_update(b"hookmesh controller key v1\0")
            .chain_update(bytes)
            .finalize();
        MasterKey {
            id: u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]),
            cipher: ChaCha20Poly1305::new(&Key::from(*bytes)),
            ingest_token: hex::encode(token),
            controller_key: format!("hm_{}", hex::encode(controller)),
        }
    }
}

/// The current master key and any previous ones.
pub struct MasterKeys {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

fn decode_key(b64: &str, what: &'static str) -> Result<[u8; 32], SecretsError> {
    STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or(SecretsError::BadKey(what))
}

impl MasterKeys {
    /// Builds from explicit keys (base64).
    ///
    /// # Errors
    /// A key that is not base64 of 32 bytes.
    pub fn from_base64(current: &str, previous: &[String]) -> Result<MasterKeys, SecretsError> {
        MasterKeys::build(current, "HOOKMESH_MASTER_KEY", previous)
    }

    fn build(
        current: &str,
        what: &'static str,
        previous: &[String],
    ) -> Result<MasterKeys, SecretsError> {
        Ok(MasterKeys {
            current: MasterKey::new(&decode_key(current, what)?),
            previous: previous
                .iter()
                .map(|p| decode_key(p, "HOOKMESH_PREVIOUS_MASTER_KEYS").map(|k| MasterKey::new(&k)))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The key from `env_key`, or else from `<data_dir>/master.key`, created (mode 0600) when
    /// missing.
    ///
    /// # Errors
    /// Bad keys, unreadable files, or a key file others can read.
    pub fn load(
        data_dir: &Path,
        env_key: Option<&str>,
        previous: &[String],
    ) -> Result<MasterKeys, SecretsError> {
        if let Some(k) = env_key {
            return MasterKeys::from_base64(k, previous);
        }
        let path = data_dir.join(KEY_FILE);
        let shown = path.display().to_string();
        let io = |source| SecretsError::KeyFile {
            path: shown.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
                    if mode & 0o077 != 0 {
                        return Err(SecretsError::KeyFileMode(shown));
                    }
                }
                MasterKeys::build(&text, "master key file", previous)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(io)?;
                let mut key = [0u8; 32];
                crate::ids::fill_random(&mut key);
                write_private(&path, STANDARD.encode(key).as_bytes()).map_err(io)?;
                MasterKeys::from_base64(&STANDARD.encode(key), previous)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Encrypts `plaintext`, binding it to `aad` (the resource id).
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        crate::ids::fill_random(&mut nonce);
        let ct = self
            .current
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_else(|_| {
                unreachable!("ChaCha20-Poly1305 encryption cannot fail for in-memory input")
            });
        let mut out = Vec::with_capacity(17 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&self.current.id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts a sealed value bound to `aad`.
    ///
    /// # Errors
    /// An unknown key, or a value that fails authentication.
    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<Vec<u8>, SecretsError> {
        if sealed.len() < 17 + 16 || sealed[0] != VERSION {
            return Err(SecretsError::Corrupt);
        }
        let id = u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]);
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or(SecretsError::UnknownKey(id))?;
        let nonce: [u8; 12] = sealed[5..17]
            .try_into()
            .map_err(|_| SecretsError::Corrupt)?;
        key.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed[17..],
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Corrupt)
    }

    /// The per-deployment token the filter sends with hub requests (`x-hookmesh-ingest-token`),
    /// derived from the current master key.
    pub fn ingest_token(&self) -> &str {
        &self.current.ingest_token
    }

    /// The API key of the Kubernetes controller running inside `hookmesh serve`: derived like
    /// the ingest token, so every replica computes the same one and none is stored in clear.
    pub fn controller_key(&self) -> &str {
        &self.current.controller_key
    }

    /// Whether `token` is the ingest token of the current or a previous master key (Envoys
    /// still on the configuration pushed before a key rotation keep working). Constant time.
    pub fn accepts_ingest_token(&self, token: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        std::iter::once(&self.current)
            .chain(&self.previous)
            .fold(false, |ok, k| {
                ok | bool::from(k.ingest_token.as_bytes().ct_eq(token))
            })
    }

    /// Whether a sealed value was made with an older key.
    pub fn is_stale(&self, sealed: &[u8]) -> bool {
        sealed.len() >= 5
            && u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]) != self.current.id
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// Shows the last four characters of a long secret, nothing of a short one.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= 24 {
        format!("…{}", chars[chars.len() - 4..].iter().collect::<String>())
    } else {
        "…".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_binds_to_the_resource_and_key() {
        let keys = MasterKeys::from_base64(&STANDARD.encode([1u8; 32]), &[]).unwrap();
        let sealed = keys.seal(b"whsec_secret", "src_1");
        assert_eq!(keys.open(&sealed, "src_1").unwrap(), b"whsec_secret");
        assert!(matches!(
            keys.open(&sealed, "src_2"),
            Err(SecretsError::Corrupt)
        ));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            keys.open(&tampered, "src_1"),
            Err(SecretsError::Corrupt)
        ));
        // Rotation: the new key opens old values through `previous`, and marks them stale.
        let rotated =
            MasterKeys::from_base64(&STANDARD.encode([2u8; 32]), &[STANDARD.encode([1u8; 32])])
                .unwrap();
        assert!(rotated.is_stale(&sealed));
        assert_eq!(rotated.open(&sealed, "src_1").unwrap(), b"whsec_secret");
        let fresh = MasterKeys::from_base64(&STANDARD.encode([2u8; 32]), &[]).unwrap();
        assert!(matches!(
            fresh.open(&sealed, "src_1"),
            Err(SecretsError::UnknownKey(_))
        ));
        assert!(MasterKeys::from_base64("short", &[]).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("hookmesh-keys-{}", crate::ids::new_id("t")));
        let a = MasterKeys::load(&dir, None, &[]).unwrap();
        let sealed = a.seal(b"x", "id");
        let b = MasterKeys::load(&dir, None, &[]).unwrap();
        assert_eq!(b.open(&sealed, "id").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join(KEY_FILE);
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                MasterKeys::load(&dir, None, &[]),
                Err(SecretsError::KeyFileMode(_))
            ));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn masks_reveal_at_most_four_characters() {
        assert_eq!(mask("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "…LaSw");
        assert_eq!(mask("short-secret"), "…");
    }
}
