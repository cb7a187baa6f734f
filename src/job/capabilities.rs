//! The capabilities of a policy's targets, and what the policy asks of them:
//! `gsdr policy check --connect` prints the table, the daemon refuses to
//! start on a target that lacks what it needs (docs/s3-compat.md).

use std::collections::BTreeSet;

use serde::Serialize;

use super::Env;
use crate::error::Result;
use crate::storage::capabilities::{self, Capabilities, Refusal, Uses};
use crate::storage::TargetConfig;

/// What one target can do and what of it the policy lacks.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCapabilities {
    /// The target's name in the policy.
    pub target: String,
    /// What the probe found; `None` for a folder (no S3 server to probe).
    pub capabilities: Option<Capabilities>,
    /// The daemon keeps run leases on this target.
    pub run_leases: bool,
    /// The settings of the policy the server cannot serve (empty: none).
    pub refusals: Vec<Refusal>,
}

impl Env {
    /// The targets the daemon keeps run leases on: the primary target of
    /// every scheduled source and the home target of the policy-wide jobs.
    pub fn run_lease_targets(&self) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for (name, cfg) in &self.policy.sources {
            if cfg.schedule.is_some() {
                out.insert(self.primary_target_name(name)?);
            }
        }
        if !self.policy.targets.is_empty() {
            out.insert(self.home_target_name()?);
        }
        Ok(out)
    }

    /// Probes target `name` ([`crate::storage::Store::capabilities`]) and
    /// lists what the policy needs of it that it lacks. An error when the
    /// target cannot be reached or written at all.
    pub async fn target_capabilities(
        &self,
        name: &str,
        run_leases: bool,
    ) -> Result<TargetCapabilities> {
        let store = self.store(name).await?;
        let caps = store.capabilities().await?;
        let refusals = match (&caps, self.policy.targets.get(name)) {
            (Some(c), Some(TargetConfig::S3(t))) => {
                capabilities::refusals(t, Uses { run_leases }, c)
            }
            _ => Vec::new(),
        };
        Ok(TargetCapabilities {
            target: name.to_string(),
            capabilities: caps,
            run_leases,
            refusals,
        })
    }

    /// What the daemon checks before it plans a job: every S3 target's
    /// capabilities against what the policy needs of it. A target that lacks
    /// one is an error naming the capability, the setting and the
    /// alternative; a target that cannot be probed now (down, denied) is
    /// only logged — the jobs report it when they run, as they always have.
    ///
    /// `replicas`: whether several processes may race for the run leases (the
    /// daemon); `gsdr run --once` from one CronJob with `concurrencyPolicy:
    /// Forbid` is the only runner by construction, so conditional replace is
    /// not demanded there.
    pub async fn check_capabilities(&self, replicas: bool) -> Result<()> {
        let leases = if replicas {
            self.run_lease_targets()?
        } else {
            BTreeSet::new()
        };
        for (name, cfg) in &self.policy.targets {
            let TargetConfig::S3(t) = cfg else { continue };
            let store = self.store(name).await?;
            let caps = match store.capabilities().await {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(event = "capability_probe_failed", target = %name, error = %e);
                    continue;
                }
            };
            let uses = Uses {
                run_leases: leases.contains(name),
            };
            capabilities::check(name, &store.describe(), t, uses, &caps)?;
        }
        Ok(())
    }
}
