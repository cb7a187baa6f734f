//! The `mongo` engine: streaming dumps in the mongodump archive format,
//! restores, oplog capture and deep verification.
//!
//! - [`archive`]: the archive format (writer and reader, CRC-64/XZ checked).
//! - [`MongoSource`]: the dump, a [`crate::source::BackupSource`]. Collections are
//!   read as raw BSON, several at once, and interleaved in the archive.
//!   Memory: `concurrency × (2 × segment_bytes + the driver's batch)` plus the
//!   pipeline's own bound, whatever the collection sizes (a single document is
//!   at most 16 MiB).
//! - [`restore()`] and [`verify_deep`]: the archive back into a server.
//!
//! Per-collection document counts and content digests ([`ContentDigest`]) go
//! into the manifest (`consistency.details.collections`), so a restore can be
//! checked without the source.

pub mod archive;
mod config;
mod digest;
mod dump;
mod restore;

pub use config::{MongoConfig, MongoTls, ReadPreferenceMode};
pub use digest::ContentDigest;
pub use dump::{DumpDetails, MongoSource, NsSummary};
pub use restore::{
    describe_overwrite, list_indexes, restore, restore_archive, verify_deep, DeepVerifyReport,
    NsCheck, RestoreOptions, RestoreSummary,
};

use std::time::Duration;

use mongodb::options::{
    ClientOptions, ReadPreference, ReadPreferenceOptions, SelectionCriteria, Tls, TlsOptions,
};

use crate::source::SourceError;

/// Opens a driver client for `uri` with the source's settings and pings it.
/// Errors never contain the URI (it may hold a password).
pub async fn connect(
    source_name: &str,
    uri: &str,
    cfg: &MongoConfig,
) -> Result<mongodb::Client, SourceError> {
    let mut opts = ClientOptions::parse(uri)
        .await
        .map_err(|e| SourceError::Connect {
            source_name: source_name.to_string(),
            message: format!(
                "the MongoDB connection string is invalid ({}); check the secret it is read from",
                redact(&e.to_string(), uri)
            ),
            cause: None,
        })?;
    opts.app_name = Some("gsdr".into());
    let timeout = Duration::from_secs(cfg.connect_timeout_secs.max(1));
    opts.server_selection_timeout = Some(timeout);
    opts.connect_timeout = Some(timeout);
    let rp_opts = Some(ReadPreferenceOptions::default());
    let rp = match cfg.read_preference {
        ReadPreferenceMode::Primary => ReadPreference::Primary,
        ReadPreferenceMode::PrimaryPreferred => {
            ReadPreference::PrimaryPreferred { options: rp_opts }
        }
        ReadPreferenceMode::Secondary => ReadPreference::Secondary { options: rp_opts },
        ReadPreferenceMode::SecondaryPreferred => {
            ReadPreference::SecondaryPreferred { options: rp_opts }
        }
        ReadPreferenceMode::Nearest => ReadPreference::Nearest { options: rp_opts },
    };
    opts.selection_criteria = Some(SelectionCriteria::ReadPreference(rp));
    if let Some(t) = &cfg.tls {
        let mut o = TlsOptions::default();
        o.ca_file_path = t.ca_file.clone();
        o.cert_key_file_path = t.cert_key_file.clone();
        o.allow_invalid_certificates = Some(t.allow_invalid_certificates);
        opts.tls = Some(Tls::Enabled(o));
    }
    let hosts = hosts_of(&opts);
    let client = mongodb::Client::with_options(opts).map_err(|e| SourceError::Connect {
        source_name: source_name.to_string(),
        message: format!(
            "cannot set up a MongoDB client for {hosts}: {}",
            redact(&e.to_string(), uri)
        ),
        cause: None,
    })?;
    client
        .database("admin")
        .run_command(mongodb::bson::doc! {"ping": 1})
        .await
        .map_err(|e| {
            classify(
                source_name,
                &format!("cannot reach MongoDB at {hosts}"),
                e,
                uri,
            )
        })?;
    Ok(client)
}

/// `host:port,…` of a client's seed list (no credentials).
pub(crate) fn hosts_of(opts: &ClientOptions) -> String {
    opts.hosts
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Removes the URI (and so any password) from a driver message.
pub(crate) fn redact(msg: &str, uri: &str) -> String {
    if uri.is_empty() {
        msg.to_string()
    } else {
        msg.replace(uri, "<uri>")
    }
}

/// Maps a driver error to a source error, keeping auth failures apart.
pub(crate) fn classify(
    source_name: &str,
    what: &str,
    e: mongodb::error::Error,
    uri: &str,
) -> SourceError {
    let text = redact(&e.to_string(), uri);
    if matches!(*e.kind, mongodb::error::ErrorKind::Authentication { .. }) {
        return SourceError::Auth {
            source_name: source_name.to_string(),
            message: format!(
                "{what}: {text}; check the user and password in the connection string secret"
            ),
        };
    }
    SourceError::Connect {
        source_name: source_name.to_string(),
        message: format!("{what}: {text}"),
        cause: Some(Box::new(e)),
    }
}

/// Checks that the source can be reached (`gsdr policy check --connect`).
pub async fn probe(name: &str, cfg: &MongoConfig) -> Result<(), crate::Error> {
    let uri = read_uri(name, cfg)?;
    connect(name, uri.expose(), cfg).await?;
    Ok(())
}

/// Reads the URI secret of source `name`.
pub(crate) fn read_uri(
    name: &str,
    cfg: &MongoConfig,
) -> Result<crate::secret::Secret, SourceError> {
    cfg.uri.read().map_err(|m| SourceError::Connect {
        source_name: name.to_string(),
        message: format!("cannot read the MongoDB connection string: {m}"),
        cause: None,
    })
}
