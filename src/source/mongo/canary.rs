//! Heartbeat canaries in MongoDB: documents `{written_at: "<RFC 3339, UTC, ms>"}`
//! in [`COLLECTION`] of database [`DB`], written on the primary; a restore's
//! newest one is the point actually recovered.

use chrono::{DateTime, Utc};

use super::{MongoConfig, ReadPreferenceMode};
use crate::source::EngineError;

/// The canary database.
pub const DB: &str = "gsdr";
/// The canary collection (in [`DB`]).
pub const COLLECTION: &str = "gsdr_canary";

fn mongo_err(source: &str, what: &str, e: mongodb::error::Error) -> EngineError {
    EngineError::Source(crate::source::SourceError::Connect {
        source_name: source.to_string(),
        message: format!("heartbeat canary: {what}: {e}"),
        cause: Some(Box::new(e)),
    })
}

/// Writes a heartbeat canary into source `source` now; returns its time.
pub async fn write(source: &str, mc: &MongoConfig) -> Result<DateTime<Utc>, EngineError> {
    use mongodb::bson::doc;
    let uri = mc.uri.read().map_err(|m| {
        EngineError::Invalid(format!(
            "source `{source}`: cannot read the MongoDB URI: {m}"
        ))
    })?;
    let mut cfg = mc.clone();
    cfg.read_preference = ReadPreferenceMode::Primary;
    let client = super::connect(source, uri.expose(), &cfg).await?;
    let coll = client
        .database(DB)
        .collection::<mongodb::bson::Document>(COLLECTION);
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
pub async fn read(uri: &str) -> Result<DateTime<Utc>, EngineError> {
    use futures::TryStreamExt;
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .map_err(|e| EngineError::Invalid(format!("restored MongoDB: cannot connect: {e}")))?;
    let docs: Vec<mongodb::bson::Document> = client
        .database(DB)
        .collection::<mongodb::bson::Document>(COLLECTION)
        .find(mongodb::bson::doc! {})
        .await
        .map_err(|e| {
            EngineError::Invalid(format!("restored MongoDB: reading {DB}.{COLLECTION}: {e}"))
        })?
        .try_collect()
        .await
        .map_err(|e| {
            EngineError::Invalid(format!("restored MongoDB: reading {DB}.{COLLECTION}: {e}"))
        })?;
    let newest = docs
        .iter()
        .filter_map(|d| d.get_str("written_at").ok())
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .max()
        .ok_or_else(|| {
            EngineError::Invalid(format!(
                "no heartbeat canary in {DB}.{COLLECTION} of the restored MongoDB: schedule `gsdr canary` for this source so drills can measure the RPO from data"
            ))
        })?;
    Ok(newest)
}
