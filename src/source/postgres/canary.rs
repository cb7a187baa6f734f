//! Heartbeat canaries in PostgreSQL: a row in [`TABLE`]
//! (`id bigserial, written_at timestamptz`); a restore's newest row is the
//! point actually recovered.

use chrono::{DateTime, Utc};

use super::tls::PgConn;
use super::PostgresConfig;
use crate::source::EngineError;

/// The canary table: `(id bigserial, written_at timestamptz)`.
pub const TABLE: &str = "gsdr_canary";

/// SQL that reads the newest canary as RFC 3339 text.
pub const SQL_NEWEST: &str = "SELECT to_char(max(written_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM gsdr_canary";

/// Writes a heartbeat canary into source `source` now; returns its time.
pub async fn write(source: &str, pc: &PostgresConfig) -> Result<DateTime<Utc>, EngineError> {
    let mut c = tokio_postgres::Config::new();
    c.host(&pc.host)
        .port(pc.port)
        .user(&pc.user)
        .dbname(&pc.dbname);
    if let Some(p) = &pc.password {
        let secret = p.read().map_err(|m| {
            EngineError::Invalid(format!(
                "source `{source}`: cannot read the PostgreSQL password: {m}"
            ))
        })?;
        c.password(secret.expose());
    }
    let err = |what: &str, e: tokio_postgres::Error| {
        // The server's own words ("permission denied for table …"), not
        // the driver's bare "db error".
        let detail = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string());
        EngineError::Source(crate::source::SourceError::Connect {
            source_name: source.to_string(),
            message: format!("heartbeat canary: {what}: {detail}"),
            cause: Some(Box::new(e)),
        })
    };
    let conn = PgConn::new(c, pc).map_err(|m| {
        EngineError::Invalid(format!("[sources.{source}.postgres]: {m}"))
    })?;
    let (client, h) = conn.connect().await.map_err(|e| {
        let all = super::tls::chain(&e);
        match super::tls::hint(pc, source, &all) {
            Some(h) => EngineError::Invalid(format!(
                "source `{source}`: heartbeat canary: connecting: {}; {h}",
                crate::fault::root_cause(&e)
            )),
            None => err("connecting", e),
        }
    })?;
    let r = async {
        // Created only when absent: a least-privilege role has no CREATE on
        // the schema, and PostgreSQL checks that even for IF NOT EXISTS.
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&TABLE])
            .await
            .map_err(|e| err("looking up the canary table", e))?
            .get(0);
        if !exists {
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
                ))
                .await
                .map_err(|e| {
                    err(
                        "creating the canary table (or let the DBA create it and grant SELECT, INSERT on it and USAGE on its sequence: docs/security.md)",
                        e,
                    )
                })?;
        }
        let row = client
            .query_one(
                &format!("INSERT INTO {TABLE} DEFAULT VALUES RETURNING to_char(written_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"),
                &[],
            )
            .await
            .map_err(|e| err("inserting the canary row", e))?;
        let text: String = row.get(0);
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| EngineError::Invalid(format!("canary time `{text}`: {e}")))
    }
    .await;
    drop(client);
    let _ = h.await;
    r
}

/// The newest canary in the restored PostgreSQL reachable with `conn`.
pub async fn read(conn: &PgConn) -> Result<DateTime<Utc>, EngineError> {
    let text = super::scratch::query_text(conn, SQL_NEWEST)
        .await?
        .ok_or_else(|| {
            EngineError::Invalid(format!(
                "no heartbeat canary in table `{TABLE}` of the restored PostgreSQL: schedule `gsdr canary` for this source so drills can measure the RPO from data"
            ))
        })?;
    Ok(DateTime::parse_from_rfc3339(&text)
        .map_err(|e| EngineError::Invalid(format!("canary time `{text}`: {e}")))?
        .with_timezone(&Utc))
}

/// Connection settings for the restored server at `uri`, with the source's
/// password and TLS (the restored copy serves the source's certificate).
pub fn restored_conn(
    source: &str,
    uri: &str,
    pc: Option<&PostgresConfig>,
) -> Result<PgConn, EngineError> {
    let mut c: tokio_postgres::Config = uri
        .parse()
        .map_err(|e| EngineError::Invalid(format!("restored PostgreSQL `{uri}`: {e}")))?;
    if let Some(p) = pc.and_then(|p| p.password.as_ref()) {
        let pw = p.read().map_err(|m| {
            EngineError::Invalid(format!("source `{source}`: cannot read the password: {m}"))
        })?;
        c.password(pw.expose());
    }
    match pc {
        Some(pc) => PgConn::new(c, pc).map_err(|m| {
            EngineError::Invalid(format!("[sources.{source}.postgres]: {m}"))
        }),
        None => Ok(PgConn { config: c, tls: None }),
    }
}
