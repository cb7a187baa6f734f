//! Restores and deep verifies through the backup's engine, and the raw
//! stream to a file (every engine's escape hatch).

use std::path::Path;

use super::progress::Progress;
use super::Env;
use crate::catalog::{Catalog, Manifest};
use crate::error::{Error, Result};
use crate::source::{NsRename, RecoveryPoint, RestoreCtx, RestoreSpec, RestoreTarget};

pub use crate::source::RestoreOutcome;

/// What the operator asked a restore to do, as the CLI's flags say it.
/// [`RestoreRequest::spec`] turns it into the typed [`RestoreSpec`] engines
/// receive, refusing combinations no restore can honour.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// Write the raw stream (decrypted, decompressed) to this file; `-` is stdout.
    pub to_file: Option<std::path::PathBuf>,
    /// Restore into this running server (Mongo URI, Redis URL).
    pub to_uri: Option<String>,
    /// Restore into this directory (PostgreSQL data directory).
    pub to_dir: Option<std::path::PathBuf>,
    /// Namespace pattern to rename from (`db.*`).
    pub ns_from: Option<String>,
    /// Namespace pattern to rename to (`drill_db.*`).
    pub ns_to: Option<String>,
    /// Replace existing data (Mongo `--drop`, Redis `--flush`, a non-empty directory).
    pub replace: bool,
    /// Do not ask for confirmation.
    pub yes: bool,
    /// Point-in-time target.
    pub target_time: Option<chrono::DateTime<chrono::Utc>>,
    /// LSN target (PostgreSQL).
    pub target_lsn: Option<String>,
    /// Recover to the newest point available.
    pub latest: bool,
    /// The target the backup is read from when it is not the source's
    /// primary (the off-site copy): PostgreSQL then fetches WAL from it too.
    pub from_target: Option<String>,
    /// PostgreSQL: the restored cluster keeps archiving into the source's WAL
    /// archive once promoted (it replaces production). Unset, it does not
    /// archive at all (`archive_mode = off`).
    pub keep_archiving: bool,
    /// The password of a `to_uri` written without one (`--password-env`,
    /// `--password-file`); unset: the URI as written (a `--to` server is any
    /// server, often a fresh one without a password: the source's own policy
    /// password is taken only for an incident's endpoints, which replace the source).
    pub to_password: Option<crate::secret::Secret>,
}

impl RestoreRequest {
    /// The typed restore: one destination (`--to-file` wins, as the escape
    /// hatch), one recovery point, a rename only as a pair.
    pub fn spec(&self) -> Result<RestoreSpec> {
        let target = match (&self.to_file, &self.to_uri, &self.to_dir) {
            (Some(f), _, _) => RestoreTarget::File(f.clone()),
            (None, Some(_), Some(_)) => {
                return Err(Error::Invalid(
                    "give one destination: --to URI or --to-dir DIR, not both".into(),
                ))
            }
            (None, Some(u), None) => RestoreTarget::Server(u.clone()),
            (None, None, Some(d)) => RestoreTarget::DataDir(d.clone()),
            (None, None, None) => RestoreTarget::Origin,
        };
        let point = match (&self.target_time, &self.target_lsn, self.latest) {
            (Some(_), Some(_), _) => {
                return Err(Error::Invalid(
                    "give either --target-time or --target-lsn, not both".into(),
                ))
            }
            (Some(t), None, _) => RecoveryPoint::Time(*t),
            (None, Some(l), _) => RecoveryPoint::Lsn(l.clone()),
            (None, None, true) => RecoveryPoint::Latest,
            (None, None, false) => RecoveryPoint::Backup,
        };
        let rename = match (&self.ns_from, &self.ns_to) {
            (Some(from), Some(to)) => Some(NsRename {
                from: from.clone(),
                to: to.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(Error::Invalid(
                    "pass both --ns-from and --ns-to, or neither".into(),
                ))
            }
        };
        Ok(RestoreSpec {
            target,
            point,
            rename,
            replace: self.replace,
            from_target: self.from_target.clone(),
            keep_archiving: self.keep_archiving,
        })
    }
}

/// An incident's `endpoint` (a URI or a path) with its password: as it is
/// when it holds one or is a path, else with `explicit` (`--password-env` /
/// `--password-file`), else with the password the policy gives the source
/// `source` ([`crate::source::Engine::policy_password`]: the endpoint
/// replaces the source and keeps its credentials). The password thus never
/// has to be written in argv; the result is for connecting only, never for
/// showing.
pub fn endpoint_with_password(
    env: &Env,
    source: &str,
    endpoint: &str,
    explicit: Option<&crate::secret::Secret>,
) -> String {
    if !endpoint.contains("://") || crate::secret::uri_password(endpoint).is_some() {
        return endpoint.to_string();
    }
    let from_policy = || {
        let cfg = env.policy.sources.get(source)?.engine_config(source).ok()?;
        cfg.engine(source).ok()?.policy_password()
    };
    match explicit.cloned().or_else(from_policy) {
        Some(pw) => crate::secret::uri_with_password(endpoint, &pw),
        None => endpoint.to_string(),
    }
}

/// The typed restore of `req`, its server target given its password.
fn spec_for(req: &RestoreRequest) -> Result<RestoreSpec> {
    let mut spec = req.spec()?;
    if let (RestoreTarget::Server(u), Some(pw)) = (&spec.target, &req.to_password) {
        spec.target = RestoreTarget::Server(crate::secret::uri_with_password(u, pw));
    }
    Ok(spec)
}

/// The engine of backup `m`, from the policy's settings of its source.
pub fn engine_for(env: &Env, m: &Manifest) -> Result<std::sync::Arc<dyn crate::source::Engine>> {
    let cfg = env
        .policy
        .sources
        .get(&m.source)
        .and_then(|c| c.engine_config(&m.source).ok());
    Ok(crate::source::engine_for_manifest(m, cfg.as_ref())?)
}

/// Restores `m` as `req` asks, through the backup's engine.
pub async fn restore(
    env: &Env,
    catalog: &Catalog,
    m: &Manifest,
    req: &RestoreRequest,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    restore_spec(env, catalog, m, &spec_for(req)?, progress).await
}

/// Restores `m` as `spec` asks, through the backup's engine.
pub async fn restore_spec(
    env: &Env,
    catalog: &Catalog,
    m: &Manifest,
    spec: &RestoreSpec,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    // Every engine's raw stream can be written to a file: the operator's escape hatch.
    if let RestoreTarget::File(path) = &spec.target {
        return restore_raw_to_file(env, catalog, m, path, spec.replace, progress).await;
    }
    let ctx = RestoreCtx {
        host: env,
        catalog,
        manifest: m,
        progress,
    };
    Ok(engine_for(env, m)?.restore(&ctx, spec).await?)
}

/// What restoring `m` as `req` asks would destroy at its destination (a
/// `--replace` into a server or a data directory); `None` when the restore
/// cannot destroy anything (no `--replace`, or a file, which is renamed into
/// place only after every check).
pub async fn describe_overwrite(
    env: &Env,
    m: &Manifest,
    req: &RestoreRequest,
) -> Option<crate::source::Overwrite> {
    let spec = spec_for(req).ok()?;
    if !spec.replace || matches!(spec.target, RestoreTarget::File(_)) {
        return None;
    }
    engine_for(env, m).ok()?.describe_overwrite(m, &spec).await
}

/// Deep-verifies `m` through its engine (`scratch`: a server the operator
/// gave, for engines that cannot start their own).
pub async fn verify_deep(
    env: &Env,
    catalog: &Catalog,
    m: &Manifest,
    scratch: Option<&str>,
    progress: &dyn Progress,
) -> Result<crate::source::DeepVerify> {
    let ctx = RestoreCtx {
        host: env,
        catalog,
        manifest: m,
        progress,
    };
    Ok(engine_for(env, m)?.verify_deep(&ctx, scratch).await?)
}

/// Writes the raw stream of `m` to `path` (`-` for stdout). A file is written
/// under a temporary name and renamed only once every check passed, so a
/// failed restore never leaves a file that looks complete.
pub async fn restore_raw_to_file(
    env: &Env,
    catalog: &Catalog,
    m: &Manifest,
    path: &Path,
    replace: bool,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    Ok(crate::source::restore_raw_to_file(env, catalog, m, path, replace, progress).await?)
}
