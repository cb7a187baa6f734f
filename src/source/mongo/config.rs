//! Settings of a `mongo` source (`[sources.NAME.mongo]` in a policy).

use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;

use crate::secret::SecretRef;
use crate::units::{ByteSize, HumanDuration};

/// Settings of a `mongo` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string (`mongodb://user:pass@host1,host2/?replicaSet=rs0`), always a
    /// secret reference: `{ env = "MONGO_URI" }` or `{ file = "/secrets/mongo-uri" }`.
    pub uri: SecretRef,
    /// Which member to read from: `primary`, `primary_preferred`, `secondary`
    /// (default: keeps the dump's load off the primary), `secondary_preferred`, `nearest`.
    #[serde(default)]
    pub read_preference: ReadPreferenceMode,
    /// Namespaces to dump, as `db.collection` patterns where `*` matches anything
    /// (`"readings.*"`, `"*.predictions"`). Empty: every database but `local` and `config`.
    #[serde(default)]
    pub include: Vec<String>,
    /// Namespaces to leave out, same patterns; applied after `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Collections dumped (and restored) at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroUsize,
    /// Documents per cursor batch (`find` and `getMore` `batchSize`).
    #[serde(default = "default_batch_docs")]
    pub batch_docs: u32,
    /// Bytes of documents collected before a segment is written to the archive;
    /// dump memory is about `concurrency × 2 × segment_bytes` plus the driver's batches.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: ByteSize,
    /// Documents per `insertMany` on restore.
    #[serde(default = "default_insert_docs")]
    pub insert_batch_docs: usize,
    /// Bytes per `insertMany` on restore (a batch is sent at whichever limit comes first).
    #[serde(default = "default_insert_bytes")]
    pub insert_batch_bytes: ByteSize,
    /// Oplog capture: `true` (default) captures it during the dump on a
    /// replica set (`mongodump --oplog`), giving one consistency point;
    /// `"continuous"` also tails it between dumps into time-sliced segments
    /// (`<source>/log/oplog/…`), for restores to any time; `false` never.
    /// Ignored (and recorded as `oplog: false`) on a standalone server.
    #[serde(default)]
    pub oplog: OplogMode,
    /// Continuous capture: a slice is cut and stored at least this often (default 10s).
    #[serde(default = "default_slice")]
    pub slice: HumanDuration,
    /// Continuous capture: a slice is cut early when its entries reach this many bytes
    /// (default 16MiB; capture memory is about twice this).
    #[serde(default = "default_slice_bytes")]
    pub slice_bytes: ByteSize,
    /// Continuous capture: no oplog entry for this long (a replica set writes a noop
    /// every 10 s) counts as a stall: the cursor is reopened (default 60s).
    #[serde(default = "default_stall")]
    pub stall: HumanDuration,
    /// TEST HOOK, never set in production: read the oplog from this
    /// `db.collection` (an oplog-shaped collection whose `ts` is an int64
    /// `t << 32 | i`) instead of `local.oplog.rs`, polled with `find` — for
    /// servers without an oplog or a Timestamp type (nx-27017).
    #[serde(default)]
    pub oplog_namespace: Option<String>,
    /// TLS settings; unset: as the URI says (`tls=true` there enables TLS with system roots).
    #[serde(default)]
    pub tls: Option<MongoTls>,
    /// Seconds to wait for a server to be selected and to connect.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

/// TLS settings of a `mongo` source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoTls {
    /// PEM file of the CA that signed the server certificates (a mounted secret or config map).
    pub ca_file: Option<PathBuf>,
    /// PEM file holding the client certificate and its key, for x.509 authentication.
    pub cert_key_file: Option<PathBuf>,
    /// Accept any server certificate. Only for tests: it disables server authentication.
    pub allow_invalid_certificates: bool,
}

/// How the oplog is captured (`oplog = true | false | "continuous"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OplogMode {
    /// Never.
    Off,
    /// During each dump (the default).
    #[default]
    Dump,
    /// During each dump and continuously between them.
    Continuous,
}

impl OplogMode {
    /// Whether dumps capture their oplog window.
    pub fn in_dump(self) -> bool {
        self != OplogMode::Off
    }
}

impl<'de> Deserialize<'de> for OplogMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(OplogMode::Dump),
            Raw::Bool(false) => Ok(OplogMode::Off),
            Raw::Text(t) if t == "continuous" => Ok(OplogMode::Continuous),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "oplog = \"{t}\": expected true, false or \"continuous\""
            ))),
        }
    }
}

/// Read preference mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPreferenceMode {
    /// Only the primary.
    Primary,
    /// The primary, a secondary if there is none.
    PrimaryPreferred,
    /// Only secondaries.
    #[default]
    Secondary,
    /// A secondary, the primary if there is none.
    SecondaryPreferred,
    /// The member with the lowest latency.
    Nearest,
}

fn default_concurrency() -> NonZeroUsize {
    NonZeroUsize::new(4).expect("4 > 0")
}
fn default_batch_docs() -> u32 {
    1000
}
fn default_segment_bytes() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_insert_docs() -> usize {
    1000
}
fn default_insert_bytes() -> ByteSize {
    ByteSize(8 << 20)
}
fn default_slice() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}
fn default_slice_bytes() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_stall() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}
fn default_connect_timeout() -> u64 {
    30
}

impl MongoConfig {
    /// The stream is never silent by design.
    pub fn silent_wait(&self) -> Option<crate::source::SilentWait> {
        None
    }

    /// A configuration with every default and this URI (tests, tools).
    pub fn with_uri(uri: SecretRef) -> Self {
        MongoConfig {
            uri,
            read_preference: ReadPreferenceMode::default(),
            include: Vec::new(),
            exclude: Vec::new(),
            concurrency: default_concurrency(),
            batch_docs: default_batch_docs(),
            segment_bytes: default_segment_bytes(),
            insert_batch_docs: default_insert_docs(),
            insert_batch_bytes: default_insert_bytes(),
            oplog: OplogMode::Dump,
            slice: default_slice(),
            slice_bytes: default_slice_bytes(),
            stall: default_stall(),
            oplog_namespace: None,
            tls: None,
            connect_timeout_secs: default_connect_timeout(),
        }
    }

    /// Checks values serde cannot; the message names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.batch_docs == 0 {
            return Err(("batch_docs", "must be at least 1".into()));
        }
        if self.insert_batch_docs == 0 {
            return Err(("insert_batch_docs", "must be at least 1".into()));
        }
        if !(4096..=(256 << 20)).contains(&self.segment_bytes.0) {
            return Err(("segment_bytes", "must be between 4KiB and 256MiB".into()));
        }
        if !(4096..=(48 << 20)).contains(&self.insert_batch_bytes.0) {
            return Err((
                "insert_batch_bytes",
                "must be between 4KiB and 48MiB (the server's message limit)".into(),
            ));
        }
        if self.slice.0 < std::time::Duration::from_secs(1) {
            return Err(("slice", "must be at least 1s".into()));
        }
        if !((64 << 10)..=(256 << 20)).contains(&self.slice_bytes.0) {
            return Err(("slice_bytes", "must be between 64KiB and 256MiB".into()));
        }
        if self.stall.0 < std::time::Duration::from_secs(5) {
            return Err(("stall", "must be at least 5s".into()));
        }
        if let Some(ns) = &self.oplog_namespace {
            if !ns.contains('.') {
                return Err((
                    "oplog_namespace",
                    format!("`{ns}` is not a `db.collection` namespace"),
                ));
            }
        }
        for p in self.include.iter().chain(&self.exclude) {
            if !p.contains('.') {
                return Err((
                    "include",
                    format!(
                        "`{p}` is not a `db.collection` pattern (use `db.*` for a whole database)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether the namespace `db.coll` is selected by `include` / `exclude`.
    pub fn selects(&self, ns: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob(p, ns)))
            && !self.exclude.iter().any(|p| glob(p, ns))
    }
}

/// Renames `ns` by `from` → `to` (`*` captures any text); unmatched namespaces stay.
pub(crate) fn rename(from: Option<&str>, to: Option<&str>, ns: &str) -> String {
    let (Some(from), Some(to)) = (from, to) else {
        return ns.to_string();
    };
    match from.split_once('*') {
        None if from == ns => to.to_string(),
        None => ns.to_string(),
        Some((pre, post)) => {
            if ns.len() >= pre.len() + post.len() && ns.starts_with(pre) && ns.ends_with(post) {
                let mid = &ns[pre.len()..ns.len() - post.len()];
                to.replacen('*', mid, 1)
            } else {
                ns.to_string()
            }
        }
    }
}

/// `*`-only glob matching over the whole text.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("*", "a.b", true)]
    #[case("a.*", "a.b", true)]
    #[case("a.*", "ab.c", false)]
    #[case("*.b", "x.b", true)]
    #[case("a.b", "a.b", true)]
    #[case("a.b", "a.bc", false)]
    #[case("a.*x*", "a.yxz", true)]
    #[case("a*a", "a", false)]
    fn globs(#[case] p: &str, #[case] t: &str, #[case] want: bool) {
        assert_eq!(glob(p, t), want);
    }

    #[test]
    fn parses_with_defaults_and_rejects_inline_uri_and_unknown_fields() {
        let c: MongoConfig = toml::from_str(r#"uri = { env = "MONGO_URI" }"#).unwrap();
        assert_eq!(c.read_preference, ReadPreferenceMode::Secondary);
        assert_eq!(c.concurrency.get(), 4);
        assert_eq!(c.oplog, OplogMode::Dump);
        assert_eq!(c.slice.0.as_secs(), 10);
        let c: MongoConfig =
            toml::from_str("uri = { env = \"X\" }\noplog = \"continuous\"\nslice = \"2s\"")
                .unwrap();
        assert_eq!(c.oplog, OplogMode::Continuous);
        assert_eq!(c.slice.0.as_secs(), 2);
        assert!(toml::from_str::<MongoConfig>("uri = { env = \"X\" }\noplog = \"always\"").is_err());
        let c: MongoConfig = toml::from_str("uri = { env = \"X\" }\noplog = false").unwrap();
        assert!(!c.oplog.in_dump());
        c.validate().unwrap();
        assert!(toml::from_str::<MongoConfig>(r#"uri = "mongodb://u:p@h""#).is_err());
        assert!(toml::from_str::<MongoConfig>("uri = { env = \"X\" }\nbogus = 1").is_err());
        let c: MongoConfig = toml::from_str(
            "uri = { file = \"/s\" }\ninclude = [\"readings.*\"]\nexclude = [\"readings.tmp_*\"]\nread_preference = \"primary\"\n[tls]\nca_file = \"/ca.pem\"",
        )
        .unwrap();
        assert!(c.selects("readings.glucose"));
        assert!(!c.selects("readings.tmp_1"));
        assert!(!c.selects("other.x"));
        assert_eq!(c.tls.unwrap().ca_file.unwrap(), PathBuf::from("/ca.pem"));
    }
}
