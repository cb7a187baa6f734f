//! The environment jobs run in: the policy, its opened targets and its keys.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::catalog::{Catalog, Manifest};
use crate::error::{Error, Result};
use crate::pipeline::keys::{self, Identities};
use crate::pipeline::{Decoded, EncodeOptions};
use crate::policy::Policy;
use crate::signing::{Signer, Trust, VerifyKey};
use crate::source::error::{EngineError, EngineResult};
use crate::source::{GsdrCall, RestoreHost};
use crate::storage::{self, Store};

/// A policy with its targets opened lazily and cached.
#[derive(Debug)]
pub struct Env {
    /// The policy.
    pub policy: Arc<Policy>,
    /// Overrides `encryption.identity_file` (`--identity`).
    pub identity_file: Option<PathBuf>,
    /// Accept unsigned manifests this once (`--allow-unsigned`).
    pub allow_unsigned: bool,
    stores: Mutex<HashMap<String, Arc<dyn Store>>>,
}

impl Env {
    /// An environment for `policy`.
    pub fn new(policy: Policy) -> Self {
        // Every secret the policy references is known before any output:
        // text from outside (a command's stderr) is filtered for them.
        crate::secret::remember_all(&policy.secret_refs);
        Env {
            policy: Arc::new(policy),
            identity_file: None,
            allow_unsigned: false,
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// The opened target named `name`.
    pub async fn store(&self, name: &str) -> Result<Arc<dyn Store>> {
        let mut stores = self.stores.lock().await;
        if let Some(s) = stores.get(name) {
            return Ok(s.clone());
        }
        let cfg = self.policy.targets.get(name).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown target `{name}` in {}",
                self.policy.path.display()
            ))
        })?;
        let s = storage::open_target(name, cfg, self.policy.pipeline.memory_budget.0).await?;
        stores.insert(name.to_string(), s.clone());
        Ok(s)
    }

    /// Replaces a target by a store built in code (tests, drills from the off-site copy).
    pub async fn set_store(&self, name: &str, store: Arc<dyn Store>) {
        self.stores.lock().await.insert(name.to_string(), store);
    }

    /// The home target of the policy-wide records (job records, Velero
    /// records): `defaults.target`, else the first target by name.
    pub fn home_target_name(&self) -> Result<String> {
        self.policy
            .defaults
            .target
            .clone()
            .or_else(|| self.policy.targets.keys().next().cloned())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{} defines no target to keep job records in",
                    self.policy.path.display()
                ))
            })
    }

    /// The opened home target ([`Env::home_target_name`]).
    pub async fn home_store(&self) -> Result<Arc<dyn Store>> {
        self.store(&self.home_target_name()?).await
    }

    /// Name of the primary target of `source`.
    pub fn primary_target_name(&self, source: &str) -> Result<String> {
        self.source_config(source)?;
        self.policy
            .target_of(source)
            .map(str::to_string)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "source `{source}` has no target; set defaults.target"
                ))
            })
    }

    /// The catalog on the primary target of `source`.
    pub async fn catalog_for(&self, source: &str) -> Result<Catalog> {
        let t = self.primary_target_name(source)?;
        Ok(Catalog::new(self.store(&t).await?))
    }

    /// The catalog on the target named `target`.
    pub async fn catalog(&self, target: &str) -> Result<Catalog> {
        Ok(Catalog::new(self.store(target).await?))
    }

    /// Settings of `source`, or a clear error listing the defined ones.
    pub fn source_config(&self, source: &str) -> Result<&crate::policy::SourceConfig> {
        self.policy.sources.get(source).ok_or_else(|| {
            Error::Invalid(format!(
                "no source `{source}` in {}; defined sources: {}",
                self.policy.path.display(),
                self.policy
                    .sources
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// Each policy source's engine, by name (sources whose settings do not
    /// build one are left out: `gsdr policy check` reports them).
    pub fn engines(&self) -> crate::source::Engines {
        self.policy
            .sources
            .iter()
            .filter_map(|(n, c)| c.engine(n).ok().map(|e| (n.clone(), e)))
            .collect()
    }

    /// How far a restore to latest reaches in the log archive of `source`
    /// (PostgreSQL's WAL) on its primary target; `None` when its engine keeps none.
    pub async fn log_tail(
        &self,
        source: &str,
    ) -> Option<std::result::Result<crate::source::LogTail, crate::source::LogError>> {
        let engine = match self.source_config(source) {
            Ok(c) => match c.engine(source) {
                Ok(e) => e,
                Err(e) => return Some(Err(Box::new(e))),
            },
            Err(e) => return Some(Err(Box::new(e))),
        };
        let log = engine.log_archive()?;
        let store = match self.primary_target_name(source) {
            Ok(t) => match self.store(&t).await {
                Ok(s) => s,
                Err(e) => return Some(Err(Box::new(e))),
            },
            Err(e) => return Some(Err(Box::new(e))),
        };
        Some(log.tail(store).await)
    }

    /// How backups are compressed and encrypted.
    pub fn encode_options(&self) -> Result<EncodeOptions> {
        let recipients = self
            .policy
            .recipients()?
            .iter()
            .map(|r| keys::parse_recipient(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EncodeOptions {
            level: self.policy.compression.level,
            workers: crate::stream::budget::zstd_workers(
                self.policy.compression.workers,
                self.policy.pipeline.memory_budget.0,
            ),
            recipients,
            stall_timeout: self.policy.pipeline.stall_timeout.0,
            signer: self.signer()?,
        })
    }

    /// The manifest signing key (`signing.key_file`), if the policy has one.
    pub fn signer(&self) -> Result<Option<Arc<Signer>>> {
        match &self.policy.signing.key_file {
            Some(p) => {
                Ok(Some(Arc::new(Signer::read(p).map_err(|e| {
                    Error::Invalid(format!("{e} (signing.key_file)"))
                })?)))
            }
            None => Ok(None),
        }
    }

    /// What restores, verify, drills and replication trust: the policy's
    /// verify keys (none: signing is not set up, everything passes).
    pub fn trust(&self) -> Result<Trust> {
        let keys = self
            .policy
            .signing
            .verify_keys
            .iter()
            .map(|k| VerifyKey::parse(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Invalid(format!("{e} (signing.verify_keys)")))?;
        Ok(Trust {
            keys,
            allow_unsigned: self.allow_unsigned || self.policy.signing.allow_unsigned,
        })
    }

    /// Refuses `m` unless the policy trusts it (see [`crate::signing`]).
    pub fn authenticate(&self, m: &Manifest) -> Result<()> {
        Ok(m.authenticate(&self.trust()?)?)
    }

    /// The identities that open backups (from `--identity` or the policy).
    pub fn identities(&self) -> Result<Arc<Identities>> {
        Ok(self.read_identities()?)
    }

    fn read_identities(&self) -> EngineResult<Arc<Identities>> {
        let path = self
            .identity_file
            .clone()
            .or_else(|| self.policy.encryption.identity_file.clone())
            .ok_or_else(|| {
                EngineError::Invalid(
                    "restoring or verifying needs the age identity (private key): pass --identity FILE or set encryption.identity_file".into(),
                )
            })?;
        Ok(Arc::new(keys::read_identity_file(&path)?))
    }

    /// Streams a backup's raw bytes back out of `catalog`'s store, checking
    /// size and SHA-256 against the manifest on the way.
    pub async fn open_backup(&self, catalog: &Catalog, m: &Manifest) -> Result<Decoded> {
        Ok(RestoreHost::open_backup(self, catalog, m).await?)
    }

    /// How a backup's download is named in stall and failure messages.
    pub fn download_label(catalog: &Catalog, m: &Manifest) -> String {
        crate::source::download_label(catalog, m)
    }
}

/// Engines read backups through the environment, never seeing the policy.
#[async_trait::async_trait]
impl RestoreHost for Env {
    fn identities(&self) -> EngineResult<Arc<Identities>> {
        self.read_identities()
    }

    fn stall_timeout(&self) -> Duration {
        self.policy.pipeline.stall_timeout.0
    }

    /// Every restore, verify and drill reads a backup through here: a
    /// manifest the policy does not trust (forged, changed, unsigned) is
    /// refused before a byte is read.
    async fn open_backup(&self, catalog: &Catalog, m: &Manifest) -> EngineResult<Decoded> {
        let trust = self
            .trust()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        m.authenticate(&trust)?;
        crate::source::open_backup(catalog, m, self.read_identities()?, self.stall_timeout()).await
    }

    fn gsdr_call(&self, source: &str) -> EngineResult<GsdrCall> {
        // Only ever `Error::Invalid`: its message carries over unchanged.
        self.source_config(source)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        Ok(GsdrCall {
            policy_path: self.policy.path.clone(),
            identity_file: self.identity_file.clone(),
            primary_target: self.primary_target_name(source).ok(),
            allow_unsigned: self.allow_unsigned,
        })
    }
}
