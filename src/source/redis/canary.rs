//! Heartbeat canaries in Redis: the key [`KEY`] holds the RFC 3339 time of
//! the last heartbeat, written on the primary (where clients write), so a
//! restore's newest canary is the point actually recovered.

use chrono::{DateTime, Utc};

use super::{RedisConfig, RedisSource};
use crate::source::SourceError;

/// The canary key: the RFC 3339 time of the last heartbeat.
pub const KEY: &str = "gsdr:canary";

fn canary_err(source: &str, what: &str, e: redis::RedisError) -> SourceError {
    SourceError::Connect {
        source_name: source.to_string(),
        message: format!("heartbeat canary: {what}: {e}"),
        cause: Some(Box::new(e)),
    }
}

fn invalid(message: String) -> SourceError {
    SourceError::Invalid { message }
}

/// Writes a heartbeat canary into source `source` now; returns its time.
pub async fn write(source: &str, rc: &RedisConfig) -> Result<DateTime<Utc>, SourceError> {
    let client = primary_client(source, rc).await?;
    let now = Utc::now();
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| canary_err(source, "connecting to write the canary", e))?;
    redis::cmd("SET")
        .arg(KEY)
        .arg(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .query_async::<()>(&mut c)
        .await
        .map_err(|e| canary_err(source, "SET gsdr:canary", e))?;
    Ok(now)
}

/// A client of the Redis primary of a source (the node in `addr` mode, the
/// master Sentinel names otherwise): canaries are written where clients write.
async fn primary_client(source: &str, rc: &RedisConfig) -> Result<redis::Client, SourceError> {
    let src = RedisSource::new(source, rc.clone())?;
    let (host, port) = match &rc.addr {
        Some(a) => split_addr(a)?,
        None => {
            let (_, _, details) = src.resolve_node().await?;
            let master = details["master_addr"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            split_addr(&master)?
        }
    };
    src.access()?
        .client(&host, port)
        .map_err(|e| canary_err(source, "client", e))
}

/// A connection to the restored Redis at `uri`.
async fn restored(uri: &str) -> Result<redis::aio::MultiplexedConnection, SourceError> {
    let client = redis::Client::open(uri)
        .map_err(|e| invalid(format!("restored Redis: not a Redis URL: {e}")))?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| invalid(format!("restored Redis: cannot connect: {e}")))
}

/// The newest canary in the restored Redis at `uri` (database 0).
pub async fn read(uri: &str) -> Result<DateTime<Utc>, SourceError> {
    let mut c = restored(uri).await?;
    let v: Option<String> = redis::cmd("GET")
        .arg(KEY)
        .query_async(&mut c)
        .await
        .map_err(|e| invalid(format!("restored Redis: GET {KEY}: {e}")))?;
    let v = v.ok_or_else(|| SourceError::NotFound {
        message: format!(
            "no heartbeat canary `{KEY}` in the restored Redis: schedule `gsdr canary` for this source so drills can measure the RPO from data"
        ),
    })?;
    Ok(DateTime::parse_from_rfc3339(&v)
        .map_err(|e| {
            invalid(format!(
                "canary `{KEY}` = `{v}` is not an RFC 3339 time: {e}"
            ))
        })?
        .with_timezone(&Utc))
}

/// Keys in every database of the Redis at `uri` (`INFO keyspace`).
pub async fn key_count(uri: &str) -> Result<u64, SourceError> {
    let mut c = restored(uri).await?;
    let text: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut c)
        .await
        .map_err(|e| invalid(format!("restored Redis: INFO keyspace: {e}")))?;
    let ks = super::replication::keyspace(&super::replication::parse_info(&text));
    Ok(ks.values().map(|(keys, _)| keys).sum())
}

fn split_addr(a: &str) -> Result<(String, u16), SourceError> {
    a.rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)))
        .ok_or_else(|| invalid(format!("`{a}` is not a host:port address")))
}
