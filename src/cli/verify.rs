//! `gsdr verify`: stream backups back and check them.

use serde::Serialize;

use super::output::{bytes, emit};
use super::{Ctx, Outcome};

/// Arguments of `gsdr verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backup ids to verify; with none, the newest backup of every source (or of --source).
    ids: Vec<String>,
    /// Only backups of this source.
    #[arg(long, short = 's', value_name = "NAME")]
    source: Option<String>,
    /// Read from this target instead of the source's primary target.
    #[arg(long, value_name = "TARGET")]
    target: Option<String>,
    /// Also restore into a scratch server and compare counts and digests with the manifest
    /// (Redis: a throwaway redis-server; MongoDB: the server given by --scratch).
    #[arg(long)]
    deep: bool,
    /// Scratch MongoDB server for --deep (a drill server; gsdr restores into fresh databases there and drops them).
    #[arg(long, value_name = "URI")]
    scratch: Option<String>,
}

#[derive(Serialize)]
struct Report {
    results: Vec<gsdr::job::VerifyReport>,
    /// Deep verification results (engine-specific), with --deep.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    deep: Vec<serde_json::Value>,
}

/// Runs `gsdr verify`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    let mut results = Vec::new();
    let sources: Vec<String> = match &args.source {
        Some(s) => vec![s.clone()],
        None => env.policy.sources.keys().cloned().collect(),
    };
    let mut todo = Vec::new();
    for s in &sources {
        let target = match &args.target {
            Some(t) => t.clone(),
            None => env.primary_target_name(s)?,
        };
        let cat = env.catalog(&target).await?;
        let list = cat.list(Some(s)).await?;
        if args.ids.is_empty() {
            if let Some(m) = list.into_iter().max_by_key(|m| m.started_at) {
                todo.push((cat.clone(), m));
            }
        } else {
            todo.extend(
                list.into_iter()
                    .filter(|m| args.ids.contains(&m.id))
                    .map(|m| (cat.clone(), m)),
            );
        }
    }
    // An asked-for id that is not there is reported with the others, not instead of them.
    for id in &args.ids {
        if !todo.iter().any(|(_, m)| &m.id == id) {
            results.push(gsdr::job::VerifyReport::failed(
                id,
                "",
                format!("no backup `{id}` found; `gsdr list` shows the backups"),
                gsdr::ErrorKind::NotFound,
            ));
        }
    }
    if todo.is_empty() && results.is_empty() {
        anyhow::bail!("no backups to verify");
    }
    let mut deep = Vec::new();
    let mut deep_ok = true;
    let mut deep_worst = 0u8;
    for (cat, m) in &todo {
        match gsdr::job::verify(&env, cat, m).await {
            Ok(r) => results.push(r),
            Err(e) => {
                let kind = e.kind();
                results.push(gsdr::job::VerifyReport::failed(
                    &m.id,
                    &m.source,
                    e.to_string(),
                    kind,
                ));
                continue;
            }
        }
        if !args.deep {
            continue;
        }
        let noop = gsdr::job::NoProgress;
        let (ok, value) = match gsdr::job::verify_deep(&env, cat, m, args.scratch.as_deref(), &noop)
            .await
        {
            Ok(d) => (d.ok, d.report),
            Err(gsdr::Error::Source(e)) if e.is_not_supported() => {
                tracing::warn!(event = "deep_verify_skipped", id = %m.id, engine = %m.engine, "no deep verification for this engine; the stream checks above apply");
                continue;
            }
            Err(e) => {
                // One id's deep check failing to run is reported with the
                // others, not instead of them; its class counts for the exit code.
                let kind = e.kind();
                deep_worst = deep_worst.max(kind.exit_code());
                (
                    false,
                    serde_json::json!({
                        "id": m.id,
                        "ok": false,
                        "error": e.to_string(),
                        "error_kind": kind,
                    }),
                )
            }
        };
        deep_ok &= ok;
        deep.push(value);
    }
    // The worst class wins: an error that stopped a check (2) over damage found (1).
    let code = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.error_kind.map_or(1, gsdr::ErrorKind::exit_code))
        .chain((!deep_ok).then_some(1))
        .chain((deep_worst > 0).then_some(deep_worst))
        .max()
        .unwrap_or(0);
    emit(ctx.json, &Report { results, deep }, |r| {
        let mut s = String::new();
        for v in &r.results {
            if v.ok {
                s += &format!(
                    "ok      {:<20} {}  {} read, {} restored in {:.1}s\n",
                    v.source,
                    v.id,
                    bytes(v.stored_bytes),
                    bytes(v.raw_bytes),
                    v.duration_secs
                );
            } else {
                s += &format!(
                    "FAILED  {:<20} {}  {}\n",
                    v.source,
                    v.id,
                    v.error.as_deref().unwrap_or("unknown error")
                );
            }
        }
        for d in &r.deep {
            let ok = d["ok"].as_bool().unwrap_or(false);
            s += &format!(
                "{}  deep {}{}{}\n",
                if ok { "ok     " } else { "FAILED " },
                d["id"].as_str().unwrap_or(""),
                d["summary"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(|t| format!(": {t}"))
                    .unwrap_or_default(),
                d["error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        s
    })?;
    Ok(match code {
        0 => Outcome::Ok,
        1 => Outcome::CheckFailed,
        c => Outcome::Exit(c),
    })
}
