//! Heartbeat canaries: a small timestamped record gsdr writes into each source
//! on a schedule, so that after a restore the newest canary found in the
//! restored data is the point actually recovered (the RPO is measured from
//! data, not from what a manifest claims).
//!
//! Per engine: a row in table [`SQL_TABLE`] (PostgreSQL), a document in
//! collection [`MONGO_COLLECTION`] (MongoDB), the key [`REDIS_KEY`] (Redis).
//! A `command` source is an opaque stream: no canary can exist there, and the
//! drill falls back to the manifest's recovery point and says so.

use chrono::{DateTime, Utc};

use crate::policy::Engine;

/// PostgreSQL canary table: `(id bigserial, written_at timestamptz)`.
pub const SQL_TABLE: &str = "gsdr_canary";
/// MongoDB canary database.
pub const MONGO_DB: &str = "gsdr";
/// MongoDB canary collection (in [`MONGO_DB`]): documents `{written_at: "<RFC 3339, UTC, ms>"}`.
pub const MONGO_COLLECTION: &str = "gsdr_canary";
/// Redis canary key: the RFC 3339 time of the last heartbeat.
pub const REDIS_KEY: &str = "gsdr:canary";

/// Why the recovered point of a source comes from its manifest.
pub const COMMAND_FALLBACK_NOTE: &str =
    "command sources are opaque streams and cannot hold a heartbeat canary: the RPO uses the manifest's recovery point";

/// How a recovered point was measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recovered {
    /// The newest point recovered.
    pub point: DateTime<Utc>,
    /// `canary` or `manifest`.
    pub measured_by: String,
    /// Why the manifest was used, if it was.
    pub note: Option<String>,
}

/// Whether sources of `engine` can hold a canary.
pub fn supported(engine: Engine) -> bool {
    !matches!(engine, Engine::Command)
}

/// Writes a heartbeat canary into the source named `source` now; returns its time.
pub async fn write(env: &crate::job::Env, source: &str) -> Result<DateTime<Utc>, crate::Error> {
    let cfg = env.source_config(source)?;
    match cfg.kind {
        Engine::Command => Err(crate::Error::Invalid(format!(
            "source `{source}`: {COMMAND_FALLBACK_NOTE}"
        ))),
        Engine::Postgres => {
            let pc = cfg.postgres.as_ref().ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "source `{source}` has no [sources.{source}.postgres] table"
                ))
            })?;
            write_postgres(source, pc).await
        }
        Engine::Mongo => {
            let mc = cfg.mongo.as_ref().ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "source `{source}` has no [sources.{source}.mongo] table"
                ))
            })?;
            write_mongo(source, mc).await
        }
        Engine::Redis => {
            let rc = cfg.redis.as_ref().ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "source `{source}` has no [sources.{source}.redis] table"
                ))
            })?;
            let client = redis_primary_client(source, rc).await?;
            let now = Utc::now();
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| canary_err(source, "connecting to write the canary", e))?;
            redis::cmd("SET")
                .arg(REDIS_KEY)
                .arg(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .query_async::<()>(&mut c)
                .await
                .map_err(|e| canary_err(source, "SET gsdr:canary", e))?;
            Ok(now)
        }
    }
}

fn canary_err(source: &str, what: &str, e: redis::RedisError) -> crate::Error {
    crate::Error::Source(crate::source::SourceError::Connect {
        source_name: source.to_string(),
        message: format!("heartbeat canary: {what}: {e}"),
        cause: Some(Box::new(e)),
    })
}

/// A client of the Redis primary of a source (the node in `addr` mode, the
/// master Sentinel names otherwise): canaries are written where clients write.
async fn redis_primary_client(
    source: &str,
    rc: &crate::source::redis::RedisConfig,
) -> Result<redis::Client, crate::Error> {
    let src = crate::source::redis::RedisSource::new(source, rc.clone())?;
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

/// The newest canary in the restored Redis at `uri` (database 0).
pub async fn read_redis(uri: &str) -> Result<Recovered, crate::Error> {
    let client = redis::Client::open(uri)
        .map_err(|e| crate::Error::Invalid(format!("restored Redis: not a Redis URL: {e}")))?;
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| crate::Error::Invalid(format!("restored Redis: cannot connect: {e}")))?;
    let v: Option<String> = redis::cmd("GET")
        .arg(REDIS_KEY)
        .query_async(&mut c)
        .await
        .map_err(|e| crate::Error::Invalid(format!("restored Redis: GET {REDIS_KEY}: {e}")))?;
    let v = v.ok_or_else(|| {
        crate::Error::Invalid(format!(
            "no heartbeat canary `{REDIS_KEY}` in the restored Redis: schedule `gsdr canary` for this source so drills can measure the RPO from data"
        ))
    })?;
    let point = DateTime::parse_from_rfc3339(&v)
        .map_err(|e| {
            crate::Error::Invalid(format!(
                "canary `{REDIS_KEY}` = `{v}` is not an RFC 3339 time: {e}"
            ))
        })?
        .with_timezone(&Utc);
    Ok(Recovered {
        point,
        measured_by: "canary".into(),
        note: None,
    })
}

/// Keys in every database of the Redis at `uri` (`INFO keyspace`).
pub async fn redis_key_count(uri: &str) -> Result<u64, crate::Error> {
    let client = redis::Client::open(uri)
        .map_err(|e| crate::Error::Invalid(format!("restored Redis: not a Redis URL: {e}")))?;
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| crate::Error::Invalid(format!("restored Redis: cannot connect: {e}")))?;
    let text: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut c)
        .await
        .map_err(|e| crate::Error::Invalid(format!("restored Redis: INFO keyspace: {e}")))?;
    let ks = crate::source::redis::replication::keyspace(
        &crate::source::redis::replication::parse_info(&text),
    );
    Ok(ks.values().map(|(keys, _)| keys).sum())
}

fn split_addr(a: &str) -> Result<(String, u16), crate::Error> {
    a.rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)))
        .ok_or_else(|| crate::Error::Invalid(format!("`{a}` is not a host:port address")))
}

/// SQL that reads the newest canary as RFC 3339 text.
pub const SQL_NEWEST: &str = "SELECT to_char(max(written_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM gsdr_canary";

async fn write_postgres(
    source: &str,
    pc: &crate::source::postgres::PostgresConfig,
) -> Result<DateTime<Utc>, crate::Error> {
    let mut c = tokio_postgres::Config::new();
    c.host(&pc.host)
        .port(pc.port)
        .user(&pc.user)
        .dbname(&pc.dbname);
    if let Some(p) = &pc.password {
        let secret = p.read().map_err(|m| {
            crate::Error::Invalid(format!(
                "source `{source}`: cannot read the PostgreSQL password: {m}"
            ))
        })?;
        c.password(secret.expose());
    }
    let err = |what: &str, e: tokio_postgres::Error| {
        crate::Error::Source(crate::source::SourceError::Connect {
            source_name: source.to_string(),
            message: format!("heartbeat canary: {what}: {e}"),
            cause: Some(Box::new(e)),
        })
    };
    let (client, connection) = c
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| err("connecting", e))?;
    let h = tokio::spawn(connection);
    let r = async {
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {SQL_TABLE} (id bigserial PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ))
            .await
            .map_err(|e| err("creating the canary table", e))?;
        let row = client
            .query_one(
                &format!("INSERT INTO {SQL_TABLE} DEFAULT VALUES RETURNING to_char(written_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"),
                &[],
            )
            .await
            .map_err(|e| err("inserting the canary row", e))?;
        let text: String = row.get(0);
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| crate::Error::Invalid(format!("canary time `{text}`: {e}")))
    }
    .await;
    drop(client);
    let _ = h.await;
    r
}

/// The newest canary in the restored PostgreSQL reachable with `conn`.
pub async fn read_postgres(conn: &tokio_postgres::Config) -> Result<Recovered, crate::Error> {
    let text = super::scratch_pg::query_text(conn, SQL_NEWEST)
        .await?
        .ok_or_else(|| {
            crate::Error::Invalid(format!(
                "no heartbeat canary in table `{SQL_TABLE}` of the restored PostgreSQL: schedule `gsdr canary` for this source so drills can measure the RPO from data"
            ))
        })?;
    let point = DateTime::parse_from_rfc3339(&text)
        .map_err(|e| crate::Error::Invalid(format!("canary time `{text}`: {e}")))?
        .with_timezone(&Utc);
    Ok(Recovered {
        point,
        measured_by: "canary".into(),
        note: None,
    })
}

fn mongo_err(source: &str, what: &str, e: mongodb::error::Error) -> crate::Error {
    crate::Error::Source(crate::source::SourceError::Connect {
        source_name: source.to_string(),
        message: format!("heartbeat canary: {what}: {e}"),
        cause: Some(Box::new(e)),
    })
}

async fn write_mongo(
    source: &str,
    mc: &crate::source::mongo::MongoConfig,
) -> Result<DateTime<Utc>, crate::Error> {
    use mongodb::bson::doc;
    let uri = mc.uri.read().map_err(|m| {
        crate::Error::Invalid(format!(
            "source `{source}`: cannot read the MongoDB URI: {m}"
        ))
    })?;
    let mut cfg = mc.clone();
    cfg.read_preference = crate::source::mongo::ReadPreferenceMode::Primary;
    let client = crate::source::mongo::connect(source, uri.expose(), &cfg).await?;
    let coll = client
        .database(MONGO_DB)
        .collection::<mongodb::bson::Document>(MONGO_COLLECTION);
    let now = Utc::now();
    let text = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    coll.insert_one(doc! { "written_at": &text })
        .await
        .map_err(|e| mongo_err(source, "inserting the canary document", e))?;
    // Keep the collection small: older heartbeats are not needed.
    if let Err(e) = coll
        .delete_many(doc! { "written_at": { "$lt": &text } })
        .await
    {
        tracing::warn!(event = "canary_prune_failed", source, error = %e);
    }
    Ok(DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now))
}

/// The newest canary in the restored MongoDB at `uri`.
pub async fn read_mongo(uri: &str) -> Result<Recovered, crate::Error> {
    use futures::TryStreamExt;
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .map_err(|e| crate::Error::Invalid(format!("restored MongoDB: cannot connect: {e}")))?;
    let docs: Vec<mongodb::bson::Document> = client
        .database(MONGO_DB)
        .collection::<mongodb::bson::Document>(MONGO_COLLECTION)
        .find(mongodb::bson::doc! {})
        .await
        .map_err(|e| {
            crate::Error::Invalid(format!(
                "restored MongoDB: reading {MONGO_DB}.{MONGO_COLLECTION}: {e}"
            ))
        })?
        .try_collect()
        .await
        .map_err(|e| {
            crate::Error::Invalid(format!(
                "restored MongoDB: reading {MONGO_DB}.{MONGO_COLLECTION}: {e}"
            ))
        })?;
    let newest = docs
        .iter()
        .filter_map(|d| d.get_str("written_at").ok())
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .max()
        .ok_or_else(|| {
            crate::Error::Invalid(format!(
                "no heartbeat canary in {MONGO_DB}.{MONGO_COLLECTION} of the restored MongoDB: schedule `gsdr canary` for this source so drills can measure the RPO from data"
            ))
        })?;
    Ok(Recovered {
        point: newest,
        measured_by: "canary".into(),
        note: None,
    })
}
