//! The backup of a Redis source: an RDB snapshot streamed over the
//! replication protocol from one node (`addr`) or the replica Sentinel points to.

use async_trait::async_trait;

use super::connect::{self, Access, TlsMaterial};
use super::replication::{self, Framing, ReplError, Timeouts};
use super::{config, sentinel, RedisConfig};
use crate::fault::RetryClass;
use crate::source::{BackupSource, SourceError, SourceMeta, SourceStream};

/// A configured Redis source.
#[derive(Debug, Clone)]
pub struct RedisSource {
    name: String,
    config: RedisConfig,
}

impl RedisSource {
    /// A source named `name`; the config is validated here.
    pub fn new(name: impl Into<String>, config: RedisConfig) -> Result<Self, SourceError> {
        let name = name.into();
        config.validate().map_err(|m| SourceError::Config {
            message: format!("source `{name}`: {m}"),
        })?;
        Ok(RedisSource { name, config })
    }

    fn tls(&self) -> Result<Option<std::sync::Arc<TlsMaterial>>, SourceError> {
        TlsMaterial::load(&self.config)
            .map(|t| t.map(std::sync::Arc::new))
            .map_err(|m| self.connect_err(m, None))
    }

    /// Credentials and TLS for the data nodes.
    pub fn access(&self) -> Result<Access, SourceError> {
        let c = &self.config;
        self.access_as(&c.username, c.password.as_ref(), "password")
    }

    /// Credentials and TLS for the sentinels.
    fn sentinel_access(&self) -> Result<Access, SourceError> {
        let c = &self.config;
        self.access_as(&c.sentinel_username, c.sentinel_password.as_ref(), "sentinel password")
    }

    /// `username`, the secret `password` refers to (read now; `what` names it
    /// in the error, never its value) and the source's TLS material.
    fn access_as(
        &self,
        username: &Option<String>,
        password: Option<&crate::secret::SecretRef>,
        what: &str,
    ) -> Result<Access, SourceError> {
        let password = match password {
            Some(r) => Some(r.read().map_err(|m| SourceError::Auth {
                source_name: self.name.clone(),
                message: format!("cannot read the {what}: {m}"),
            })?),
            None => None,
        };
        Ok(Access {
            username: username.clone(),
            password,
            tls: self.tls()?,
        })
    }

    /// The one node `addr` names, if the source names one (no Sentinel).
    fn fixed_node(&self) -> Result<Option<(String, u16, serde_json::Value)>, SourceError> {
        let Some(a) = &self.config.addr else {
            return Ok(None);
        };
        let (h, p) = config::split_addr(a).map_err(|m| self.connect_err(m, None))?;
        Ok(Some((h, p, serde_json::json!({ "mode": "node" }))))
    }

    /// The node to snapshot: `addr`, or the replica Sentinel points to.
    pub async fn resolve_node(&self) -> Result<(String, u16, serde_json::Value), SourceError> {
        if let Some(node) = self.fixed_node()? {
            return Ok(node);
        }
        let c = &self.config;
        let access = self.sentinel_access()?;
        let chosen = sentinel::choose(
            &c.sentinels,
            c.master_name.as_deref().unwrap_or_default(),
            &access,
            c.allow_master_fallback,
            c.connect_timeout.0,
        )
        .await
        .map_err(|m| self.connect_err(m, None))?;
        sentinel::confirm(&chosen, &self.access()?, c.connect_timeout.0)
            .await
            .map_err(|m| self.connect_err(m, None))?;
        tracing::info!(event = "redis_node_chosen", source = %self.name, node = %format!("{}:{}", chosen.host, chosen.port), role = chosen.role, master = %chosen.master);
        Ok((
            chosen.host,
            chosen.port,
            serde_json::json!({
                "mode": "sentinel",
                "role_chosen": chosen.role,
                "master_addr": chosen.master,
                "sentinel": chosen.sentinel,
            }),
        ))
    }

    /// The node a continuous capture attaches to: `addr`, or the master
    /// Sentinel names now (it follows a failover).
    pub async fn resolve_master(&self) -> Result<(String, u16, serde_json::Value), SourceError> {
        if let Some(node) = self.fixed_node()? {
            return Ok(node);
        }
        let c = &self.config;
        let access = self.sentinel_access()?;
        let (host, port, sentinel) = sentinel::master(
            &c.sentinels,
            c.master_name.as_deref().unwrap_or_default(),
            &access,
            c.connect_timeout.0,
        )
        .await
        .map_err(|m| self.connect_err(m, None))?;
        Ok((
            host.clone(),
            port,
            serde_json::json!({
                "mode": "sentinel",
                "role_chosen": "master",
                "master_addr": format!("{host}:{port}"),
                "sentinel": sentinel,
            }),
        ))
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The error of failing to reach the source.
    pub(super) fn connect_err(&self, message: String, cause: Option<ReplError>) -> SourceError {
        SourceError::Connect {
            source_name: self.name.clone(),
            message: connect::with_tls_hint(message, self.config.tls),
            cause: cause.map(|c| Box::new(c) as _),
        }
    }

    /// The source's error for a failure of the replication client at `node`.
    pub(super) fn repl_err(&self, node: &str, e: ReplError) -> SourceError {
        match e {
            ReplError::Auth(m) => SourceError::Auth {
                source_name: self.name.clone(),
                message: format!("{node}: {m}"),
            },
            ReplError::Protocol(m) => SourceError::Dump {
                source_name: self.name.clone(),
                message: format!("{node}: {m}"),
                class: RetryClass::Temporary,
                cause: None,
            },
            e @ ReplError::Io { .. } => self.connect_err(format!("{node}: {e}"), Some(e)),
        }
    }
}

/// Checks that the source's node (or its sentinels) can be reached and
/// authenticated, without taking a snapshot (`gsdr policy check --connect`).
pub async fn probe(name: &str, c: &RedisConfig) -> Result<(), SourceError> {
    let src = RedisSource::new(name, c.clone())?;
    let (host, port, _) = src.resolve_node().await?;
    let info = src
        .access()?
        .client(&host, port)
        .map_err(|e| src.connect_err(format!("{host}:{port}: {e}"), None))?;
    let ping = async {
        let mut conn = info.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(c.connect_timeout.0, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == redis::ErrorKind::AuthenticationFailed => {
            Err(SourceError::Auth {
                source_name: name.to_string(),
                message: format!("{host}:{port}: {e}"),
            })
        }
        Ok(Err(e)) => Err(src.connect_err(format!("{host}:{port}: {e}"), None)),
        Err(_) => Err(src.connect_err(
            format!("{host}:{port}: no answer within {}", c.connect_timeout),
            None,
        )),
    }
}

#[async_trait]
impl BackupSource for RedisSource {
    fn kind(&self) -> &'static str {
        "rdb"
    }

    async fn open(&self) -> Result<SourceStream, SourceError> {
        let creds = self.access()?;
        let (host, port, discovery) = self.resolve_node().await?;
        let node = format!("{host}:{port}");
        let (stream, sync, outcome) = replication::start_sync(
            &host,
            port,
            &creds,
            Timeouts {
                connect: self.config.connect_timeout.0,
                read: self.config.read_timeout.0,
            },
        )
        .await
        .map_err(|e| self.repl_err(&node, e))?;
        tracing::info!(event = "redis_sync_started", source = %self.name, node = %node, replid = sync.replid.as_deref().unwrap_or(""), offset = sync.offset.unwrap_or(0), diskless = matches!(sync.framing, Framing::EofMark(_)));
        Ok(synced_stream(
            self.name.clone(),
            node,
            discovery,
            stream,
            sync,
            outcome,
            false,
        ))
    }
}

/// The backup stream of a started sync: the payload, and the `done` future
/// that checks it and writes the manifest's details (`capture`: the base of
/// a continuous capture, whose log continues from its offset).
pub(super) fn synced_stream(
    name: String,
    node: String,
    discovery: serde_json::Value,
    stream: replication::RdbStream,
    sync: replication::SyncInfo,
    outcome: tokio::sync::oneshot::Receiver<Result<crate::source::redis::rdb::RdbSummary, String>>,
    capture: bool,
) -> SourceStream {
        let done = Box::pin(async move {
            let summary = match outcome.await {
                Ok(Ok(s)) => s,
                Ok(Err(m)) => {
                    return Err(SourceError::Dump {
                        source_name: name,
                        message: format!("snapshot from {node}: {m}"),
                        class: if m.contains("CRC") || m.contains("header") {
                            RetryClass::Permanent
                        } else {
                            RetryClass::Temporary
                        },
                        cause: None,
                    })
                }
                Err(_) => {
                    return Err(SourceError::Dump {
                        source_name: name,
                        message: format!(
                            "snapshot from {node}: the stream was dropped before its end"
                        ),
                        class: RetryClass::Temporary,
                        cause: None,
                    })
                }
            };
            let keys: serde_json::Map<String, serde_json::Value> =
                replication::keyspace(&sync.info)
                    .into_iter()
                    .map(|(db, (keys, expires))| {
                        (
                            db.to_string(),
                            serde_json::json!({ "keys": keys, "expires": expires }),
                        )
                    })
                    .collect();
            let mut details = serde_json::json!({
                    "node": node,
                    "discovery": discovery,
                    "role": sync.info_field("role"),
                    "master_replid": sync.replid,
                    "master_repl_offset": sync.offset,
                    "keys_per_db": keys,
                    "redis_version": sync.info_field("redis_version"),
                    "rdb_version": summary.version,
                    "rdb_bytes": summary.bytes,
                    "rdb_crc64": summary.checksum.map(|c| format!("{c:016x}")),
                    "framing": match sync.framing { Framing::Length(_) => "length", Framing::EofMark(_) => "eof-mark" },
            });
            if capture {
                details["capture"] = true.into();
            }
            Ok(SourceMeta {
                consistency_time: Some(sync.synced_at),
                details,
            })
        });
    SourceStream {
        reader: Box::pin(stream),
        done,
    }
}