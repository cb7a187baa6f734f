//! What an S3 server can do, as far as gsdr depends on it, and which policy
//! settings need what.
//!
//! S3 servers differ exactly where gsdr relies on them (docs/s3-compat.md):
//! conditional writes (run leases are created with `If-None-Match: *` and
//! changed with `If-Match`; manifests, WAL files and capture segments are
//! created create-only as a guard against a second writer), multipart uploads, ranged reads,
//! versioning, Object Lock and lifecycle rules. [`Capabilities`] is what a
//! probe of one target found ([`crate::storage::Store::capabilities`]; the S3
//! probe is in `s3/capabilities.rs`), and [`check`] refuses a setting whose
//! capability the server lacks, with the reason and what to do instead,
//! rather than letting a backup, a lease or `gsdr storage init` fail later
//! (or, worse, seem to work: a server that ignores `If-Match` gives two
//! replicas the same lease).

use serde::Serialize;

use super::{S3Target, StorageError};

/// Whether the server has one capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    /// It works (the probe saw it work, or the server reported it).
    Yes,
    /// The server lacks it: it refused the request as not implemented, or
    /// ignored what was asked (e.g. a conditional write that did not hold).
    No,
    /// The probe could not tell (denied, or an unexpected answer): see the detail.
    Unknown,
}

/// The outcome of probing one capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Whether it is there.
    pub support: Support,
    /// What the server answered, in a few words (e.g. `412 for the second create`,
    /// `NotImplemented (HTTP 501)`, `enabled on the bucket`).
    pub detail: String,
}

impl Probe {
    /// The capability works; `detail` says how that was seen.
    pub fn yes(detail: impl Into<String>) -> Probe {
        Probe {
            support: Support::Yes,
            detail: detail.into(),
        }
    }

    /// The server lacks it; `detail` says what it answered.
    pub fn no(detail: impl Into<String>) -> Probe {
        Probe {
            support: Support::No,
            detail: detail.into(),
        }
    }

    /// The probe could not tell; `detail` says why.
    pub fn unknown(detail: impl Into<String>) -> Probe {
        Probe {
            support: Support::Unknown,
            detail: detail.into(),
        }
    }
}

/// One capability gsdr relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// A create-only write (`If-None-Match: *`) that refuses an existing key.
    ConditionalCreate,
    /// A compare-and-swap write (`If-Match: <etag>`) that refuses a changed object.
    ConditionalReplace,
    /// Multipart uploads (streams larger than one part).
    Multipart,
    /// Ranged reads (`Range: bytes=a-b`).
    RangedGet,
    /// Object versions (`ListObjectVersions`, bucket versioning).
    Versioning,
    /// Object Lock (write-once retention of versions).
    ObjectLock,
    /// Bucket lifecycle rules.
    Lifecycle,
}

impl Capability {
    /// Every capability, in the order the table shows them.
    pub const ALL: [Capability; 7] = [
        Capability::ConditionalCreate,
        Capability::ConditionalReplace,
        Capability::Multipart,
        Capability::RangedGet,
        Capability::Versioning,
        Capability::ObjectLock,
        Capability::Lifecycle,
    ];

    /// The name in tables and `--json` (`conditional_create`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Capability::ConditionalCreate => "conditional_create",
            Capability::ConditionalReplace => "conditional_replace",
            Capability::Multipart => "multipart",
            Capability::RangedGet => "ranged_get",
            Capability::Versioning => "versioning",
            Capability::ObjectLock => "object_lock",
            Capability::Lifecycle => "lifecycle",
        }
    }

    /// What it is on the wire, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Capability::ConditionalCreate => "conditional create (`If-None-Match: *`)",
            Capability::ConditionalReplace => "conditional replace (`If-Match`)",
            Capability::Multipart => "multipart upload",
            Capability::RangedGet => "ranged GET",
            Capability::Versioning => "object versioning",
            Capability::ObjectLock => "Object Lock",
            Capability::Lifecycle => "lifecycle rules",
        }
    }
}

/// What a probe of one S3 target found, one [`Probe`] per [`Capability`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// `If-None-Match: *` on PutObject.
    pub conditional_create: Probe,
    /// `If-Match` on PutObject.
    pub conditional_replace: Probe,
    /// Create, upload a part, complete.
    pub multipart: Probe,
    /// `Range` on GetObject.
    pub ranged_get: Probe,
    /// `ListObjectVersions` and the bucket's versioning status.
    pub versioning: Probe,
    /// The bucket's Object Lock configuration.
    pub object_lock: Probe,
    /// The bucket's lifecycle configuration.
    pub lifecycle: Probe,
}

impl Capabilities {
    /// The probe of `c`.
    pub fn get(&self, c: Capability) -> &Probe {
        match c {
            Capability::ConditionalCreate => &self.conditional_create,
            Capability::ConditionalReplace => &self.conditional_replace,
            Capability::Multipart => &self.multipart,
            Capability::RangedGet => &self.ranged_get,
            Capability::Versioning => &self.versioning,
            Capability::ObjectLock => &self.object_lock,
            Capability::Lifecycle => &self.lifecycle,
        }
    }

    /// Each capability with its probe, in table order.
    pub fn rows(&self) -> impl Iterator<Item = (Capability, &Probe)> {
        Capability::ALL.into_iter().map(|c| (c, self.get(c)))
    }
}

/// What a target is used for, beyond storing backups: decides which
/// capabilities [`check`] demands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uses {
    /// The daemon keeps run leases on it (a source's primary target, or the
    /// home target of the policy-wide jobs).
    pub run_leases: bool,
}

/// A capability a policy setting needs and the server lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The capability.
    pub capability: Capability,
    /// The setting or use that needs it.
    pub needed_by: String,
    /// Why it needs it and what to do instead.
    pub alternative: String,
}

/// The capabilities that `target` (used as `uses` says) needs and `caps`
/// lacks. A capability the probe could not determine is not refused: the
/// probe's own failure is reported beside it.
pub fn refusals(target: &S3Target, uses: Uses, caps: &Capabilities) -> Vec<Refusal> {
    let mut out = Vec::new();
    let mut need = |c: Capability, needed_by: &str, alternative: &str| {
        if caps.get(c).support == Support::No {
            out.push(Refusal {
                capability: c,
                needed_by: needed_by.to_string(),
                alternative: alternative.to_string(),
            });
        }
    };
    if uses.run_leases {
        // A lease is created with `If-None-Match: *` and changed with
        // `If-Match`: a server that ignores either lets two replicas hold it.
        let alternative = "without them two daemon replicas can both take a source's run lease and run it twice; keep the leases on a target whose server honours both (make it the source's `target` and `defaults.target`), or, instead of the daemon, run `gsdr run --once` from one CronJob with `concurrencyPolicy: Forbid` (one runner, no race; a Kubernetes `Lease` backend for the daemon is not built yet)";
        need(
            Capability::ConditionalCreate,
            "the daemon's run leases",
            alternative,
        );
        need(
            Capability::ConditionalReplace,
            "the daemon's run leases",
            alternative,
        );
    }
    if let Some(l) = target.lifecycle.as_deref() {
        need(
            Capability::Lifecycle,
            "`[…lifecycle]` (the bucket rules `gsdr storage init` installs)",
            "remove the `lifecycle` table from the target: `gsdr storage gc` removes interrupted uploads and `gsdr prune` old backups without bucket rules",
        );
        if l.versioning {
            need(
                Capability::Versioning,
                "`lifecycle.versioning = true`",
                "set `versioning = false` (and drop `object_lock`); to keep deleted backups recoverable, replicate to an off-site target on a server with versioning",
            );
        }
        if l.object_lock.is_some() {
            need(
                Capability::ObjectLock,
                "`lifecycle.object_lock`",
                "drop `object_lock`: this server cannot make backups immutable; keep an off-site replica on a server with Object Lock (AWS S3, MinIO, Ceph RGW) and separate credentials, so that one stolen key cannot delete both copies",
            );
        }
    }
    out
}

/// Refuses `target` (named `name` in messages) if [`refusals`] finds any:
/// a [`StorageError::Unsupported`] for the first, naming the capability,
/// what needs it and the alternative.
pub fn check(
    name: &str,
    store: &str,
    target: &S3Target,
    uses: Uses,
    caps: &Capabilities,
) -> Result<(), StorageError> {
    match refusals(target, uses, caps).into_iter().next() {
        None => Ok(()),
        Some(r) => Err(StorageError::Unsupported {
            store: format!("`{name}` ({store})"),
            capability: r.capability.what(),
            needed_by: r.needed_by,
            detail: caps.get(r.capability).detail.clone(),
            alternative: r.alternative,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(no: &[Capability]) -> Capabilities {
        let p = |c: Capability| {
            if no.contains(&c) {
                Probe::no("NotImplemented (HTTP 501)")
            } else {
                Probe::yes("ok")
            }
        };
        Capabilities {
            conditional_create: p(Capability::ConditionalCreate),
            conditional_replace: p(Capability::ConditionalReplace),
            multipart: p(Capability::Multipart),
            ranged_get: p(Capability::RangedGet),
            versioning: p(Capability::Versioning),
            object_lock: p(Capability::ObjectLock),
            lifecycle: p(Capability::Lifecycle),
        }
    }

    fn target(lifecycle: &str) -> S3Target {
        toml::from_str(&format!("bucket = \"b\"\n{lifecycle}")).unwrap()
    }

    #[test]
    fn leases_need_both_conditional_writes_and_only_leases_do() {
        let garage = caps(&[
            Capability::ConditionalCreate,
            Capability::ConditionalReplace,
            Capability::Versioning,
            Capability::ObjectLock,
        ]);
        let t = target("");
        assert!(refusals(&t, Uses::default(), &garage).is_empty());
        let r = refusals(&t, Uses { run_leases: true }, &garage);
        let names: Vec<_> = r.iter().map(|r| r.capability).collect();
        assert_eq!(
            names,
            [
                Capability::ConditionalCreate,
                Capability::ConditionalReplace
            ]
        );
        let e = check("t", "s3://b", &t, Uses { run_leases: true }, &garage).unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("target `t` (s3://b): the server lacks conditional create")
                && m.contains("NotImplemented (HTTP 501)")
                && m.contains("concurrencyPolicy: Forbid"),
            "{m}"
        );
    }

    #[test]
    fn bucket_settings_are_refused_only_when_asked_for() {
        let garage = caps(&[Capability::Versioning, Capability::ObjectLock]);
        let plain = target("[lifecycle]\nabort_incomplete_after = \"2d\"\n");
        assert!(refusals(&plain, Uses::default(), &garage).is_empty());
        let locked = target(
            "[lifecycle]\nversioning = true\nobject_lock = { mode = \"compliance\", retention = \"7d\" }\n",
        );
        let r: Vec<_> = refusals(&locked, Uses::default(), &garage)
            .into_iter()
            .map(|r| r.capability)
            .collect();
        assert_eq!(r, [Capability::Versioning, Capability::ObjectLock]);
        // An undetermined capability is never refused.
        let mut unknown = caps(&[]);
        unknown.object_lock = Probe::unknown("denied");
        assert!(refusals(&locked, Uses { run_leases: true }, &unknown).is_empty());
        // No lifecycle rules at all: the lifecycle table is refused first.
        let none = caps(&[Capability::Lifecycle]);
        assert_eq!(
            refusals(&plain, Uses::default(), &none)[0].capability,
            Capability::Lifecycle
        );
    }
}
