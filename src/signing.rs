//! Signed metadata (manifests, WAL sidecars): a tamper-evident catalog.
//!
//! age encrypts to public recipients, so encryption proves nothing about who
//! wrote a backup: anyone who can write the bucket can encrypt a forged dump
//! to the same recipients and commit a matching manifest. A manifest signed
//! with the writer's Ed25519 key cannot be forged without that key, and it
//! pins the data object by its SHA-256, so neither can be swapped.
//!
//! What is signed: the document's JSON as this build writes it with the
//! `signature` field left out (manifests reject unknown fields, so reading
//! and writing one again gives the same bytes; the catalog builds them).
//! Keys are text:
//! `gsdr-ed25519-secret:<base64 PKCS#8>` (the signing key file, mode 0600)
//! and `gsdr-ed25519:<base64 32-byte public key>` (a verify key, in the
//! policy; several for rotation). A key is named by its id, the first 8 bytes
//! of the SHA-256 of its public key in hex.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const SECRET_PREFIX: &str = "gsdr-ed25519-secret:";
const PUBLIC_PREFIX: &str = "gsdr-ed25519:";

/// `[signing]` of a policy: who signs manifests, and which keys are trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningConfig {
    /// The signing key (a mounted secret, mode 0600; `gsdr keygen --signing`):
    /// only the writers (daemon, `backup`, `wal-push`) need it.
    pub key_file: Option<PathBuf>,
    /// Trusted verify keys (`gsdr-ed25519:…`); several while keys rotate.
    /// Set: restores, verify, drills and replication refuse manifests that are
    /// unsigned or whose signature does not verify.
    pub verify_keys: Vec<String>,
    /// Accept unsigned manifests (those written before signing was set up).
    pub allow_unsigned: bool,
}

/// A document's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Id of the key that signed it.
    pub key_id: String,
    /// The Ed25519 signature, base64.
    pub ed25519: String,
}

/// Why a key or a signature is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The signing key file cannot be used.
    #[error("signing key `{path}`: {detail}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// A verify key in the policy is not one.
    #[error("verify key `{key}` is not a gsdr Ed25519 public key (`gsdr-ed25519:<base64>`, as `gsdr keygen --signing` prints)")]
    BadVerifyKey {
        /// The text given (public: no secret).
        key: String,
    },
    /// The manifest carries no signature and the policy requires one.
    #[error("`{key}` is not signed, and the policy's signing.verify_keys require signed manifests: a backup written before signing was set up (pass --allow-unsigned to use it once, after checking where it came from), or one somebody placed in the bucket")]
    Unsigned {
        /// Manifest key.
        key: String,
    },
    /// Signed by a key the policy does not trust.
    #[error("`{key}` is signed by key {key_id}, which is not among the policy's signing.verify_keys: add that key's `gsdr-ed25519:…` line if it is yours (a rotated key), otherwise it is forged")]
    UnknownKey {
        /// Manifest key.
        key: String,
        /// The id it names.
        key_id: String,
    },
    /// The signature does not verify: the manifest was changed or forged.
    #[error("`{key}`: the signature of key {key_id} does not verify: it was changed after it was signed, or forged; do not restore it (restore an older backup with --id)")]
    BadSignature {
        /// Manifest key.
        key: String,
        /// The id it names.
        key_id: String,
    },
}

/// The id of a public key.
fn key_id(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// The signer: the daemon's private key.
pub struct Signer {
    pair: Ed25519KeyPair,
    id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.id)
    }
}

impl Signer {
    /// Reads the signing key at `path`, refused when group or others may read it.
    pub fn read(path: &Path) -> Result<Signer, SignError> {
        let err = |detail: String| SignError::KeyFile {
            path: path.to_path_buf(),
            detail,
        };
        crate::secret::check_private_file(path).map_err(err)?;
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        let b64 = text
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(SECRET_PREFIX))
            .ok_or_else(|| {
                err(format!(
                    "no `{SECRET_PREFIX}…` line: make one with `gsdr keygen --signing -o FILE`"
                ))
            })?;
        let der = B64
            .decode(b64)
            .map_err(|_| err("the key is not valid base64".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| err("not an Ed25519 key (PKCS#8)".into()))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(Signer { pair, id })
    }

    /// A new key: the key file's text and the verify key line.
    pub fn generate() -> (String, String) {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
        let pair = Ed25519KeyPair::from_pkcs8(der.as_ref()).expect("a fresh key parses");
        let public = format!("{PUBLIC_PREFIX}{}", B64.encode(pair.public_key().as_ref()));
        let secret = format!(
            "# gsdr manifest signing key {} (secret: keep it 0600)\n# verify key: {public}\n{SECRET_PREFIX}{}\n",
            key_id(pair.public_key().as_ref()),
            B64.encode(der.as_ref())
        );
        (secret, public)
    }

    /// Writes a new key to `path` (created 0600, never overwritten) and returns its verify key line.
    pub fn create(path: &Path) -> Result<String, SignError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let err = |e: std::io::Error| SignError::KeyFile {
            path: path.to_path_buf(),
            detail: format!("cannot create it: {e}"),
        };
        let (secret, public) = Signer::generate();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(secret.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(err)?;
        Ok(public)
    }

    /// This key's verify key line (`gsdr-ed25519:…`).
    pub fn verify_key(&self) -> VerifyKey {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        VerifyKey {
            id: self.id.clone(),
            public,
        }
    }

    /// Signs `bytes` (a document's JSON without its signature).
    pub fn sign(&self, bytes: &[u8]) -> Signature {
        Signature {
            key_id: self.id.clone(),
            ed25519: B64.encode(self.pair.sign(bytes).as_ref()),
        }
    }
}

/// A public key manifests are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyKey {
    id: String,
    public: [u8; 32],
}

impl VerifyKey {
    /// Parses `gsdr-ed25519:<base64>`.
    pub fn parse(text: &str) -> Result<VerifyKey, SignError> {
        let bad = || SignError::BadVerifyKey {
            key: text.chars().take(80).collect(),
        };
        let b = B64
            .decode(text.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?)
            .map_err(|_| bad())?;
        let public: [u8; 32] = b.try_into().map_err(|_| bad())?;
        Ok(VerifyKey {
            id: key_id(&public),
            public,
        })
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// What the policy trusts: its verify keys, and whether unsigned manifests pass.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The verify keys; none: signing is not set up and every manifest passes.
    pub keys: Vec<VerifyKey>,
    /// Accept unsigned manifests (`--allow-unsigned`, `signing.allow_unsigned`).
    pub allow_unsigned: bool,
}

impl Trust {
    /// Whether the document `key` (its JSON without signature: `bytes`) may
    /// be used: signed by a trusted key with a signature that verifies (or
    /// unsigned where that is allowed). No keys: signing is not set up, and
    /// everything passes.
    pub fn check(&self, key: &str, bytes: &[u8], sig: Option<&Signature>) -> Result<(), SignError> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let key = key.to_string();
        let Some(sig) = sig else {
            return if self.allow_unsigned {
                tracing::warn!(event = "unsigned_manifest_accepted", manifest = %key);
                Ok(())
            } else {
                Err(SignError::Unsigned { key })
            };
        };
        let Some(vk) = self.keys.iter().find(|k| k.id == sig.key_id) else {
            return Err(SignError::UnknownKey {
                key,
                key_id: sig.key_id.clone(),
            });
        };
        let bad = || SignError::BadSignature {
            key: key.clone(),
            key_id: sig.key_id.clone(),
        };
        let raw = B64.decode(&sig.ed25519).map_err(|_| bad())?;
        UnparsedPublicKey::new(&ED25519, &vk.public)
            .verify(bytes, &raw)
            .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let (secret, _) = Signer::generate();
        std::fs::write(&p, secret).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        Signer::read(&p).unwrap()
    }

    #[test]
    fn a_signature_verifies_and_any_change_or_other_key_is_refused() {
        let s = signer();
        let doc = br#"{"id":"a","stored_sha256":"bb"}"#;
        let sig = s.sign(doc);
        let trust = Trust {
            keys: vec![s.verify_key()],
            allow_unsigned: false,
        };
        trust.check("k", doc, Some(&sig)).unwrap();
        let changed = br#"{"id":"a","stored_sha256":"cc"}"#;
        assert!(matches!(
            trust.check("k", changed, Some(&sig)),
            Err(SignError::BadSignature { .. })
        ));
        let other = signer();
        let forged = other.sign(doc);
        assert!(matches!(
            trust.check("k", doc, Some(&forged)),
            Err(SignError::UnknownKey { .. })
        ));
        // Rotation: both keys trusted.
        let both = Trust {
            keys: vec![s.verify_key(), other.verify_key()],
            allow_unsigned: false,
        };
        both.check("k", doc, Some(&forged)).unwrap();
        assert!(matches!(
            trust.check("k", doc, None),
            Err(SignError::Unsigned { .. })
        ));
        let lenient = Trust {
            allow_unsigned: true,
            ..trust.clone()
        };
        lenient.check("k", doc, None).unwrap();
        Trust::default().check("k", doc, None).unwrap();
    }

    #[test]
    fn verify_keys_parse_and_bad_ones_are_named() {
        let (_, public) = Signer::generate();
        let k = VerifyKey::parse(&public).unwrap();
        assert_eq!(k.id().len(), 16);
        let e = VerifyKey::parse("gsdr-ed25519:AAAA")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gsdr keygen --signing"), "{e}");
        assert!(VerifyKey::parse("ssh-ed25519 AAAA").is_err());
    }

    #[test]
    fn a_readable_signing_key_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, Signer::generate().0).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Signer::read(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
