//! Point-in-time restore into a data directory.
//!
//! Picks the newest base backup whose end lies before the target, streams it
//! back (decrypt, decompress, verify) straight into a tar extractor — nothing
//! staged — then writes the recovery settings into `postgresql.auto.conf`:
//! `restore_command` calling `gsdr wal-fetch`, the target (time, LSN, or none
//! for the end of the archive), `recovery_target_timeline = 'latest'`,
//! `recovery_target_action = 'promote'` (PostgreSQL's default is `pause`),
//! and `recovery.signal`. Starting the directory with `pg_ctl` replays the
//! archived WAL up to the target and promotes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::base::BaseDetails;
use super::{parse_lsn, PostgresConfig};
use crate::catalog::{Catalog, Manifest};
use crate::error::{Error, Result};
use crate::job::{Env, Progress, RestoreOutcome};
use crate::pipeline::{Ends, StreamError};
use crate::source::RestoreRequest;

/// Marker line opening the settings gsdr appends to `postgresql.auto.conf`.
pub const SETTINGS_MARKER: &str = "# --- recovery settings written by gsdr restore ---";

fn details(m: &Manifest) -> Result<BaseDetails> {
    serde_json::from_value(m.consistency.details.clone()).map_err(|e| {
        Error::Invalid(format!(
            "backup `{}` is not a PostgreSQL base backup gsdr can restore (details: {e})",
            m.id
        ))
    })
}

/// Picks the base backup to restore for `req`: `chosen` if it fits the target, else the newest that does.
pub async fn pick_base(
    catalog: &Catalog,
    source: &str,
    chosen: Option<&Manifest>,
    req: &RestoreRequest,
) -> Result<Manifest> {
    let target_lsn = match &req.target_lsn {
        Some(s) => Some(
            parse_lsn(s)
                .ok_or_else(|| Error::Invalid(format!("`{s}` is not an LSN like 0/16B3748")))?,
        ),
        None => None,
    };
    let fits = |m: &Manifest| -> bool {
        if m.kind != "base" {
            return false;
        }
        if let Some(t) = req.target_time {
            if m.recovery_point() > t {
                return false;
            }
        }
        if let Some(l) = target_lsn {
            match details(m).ok().and_then(|d| parse_lsn(&d.stop_lsn)) {
                Some(stop) if stop <= l => {}
                _ => return false,
            }
        }
        true
    };
    if let Some(m) = chosen {
        if fits(m) {
            return Ok(m.clone());
        }
    }
    catalog
        .list(Some(source))
        .await?
        .into_iter()
        .filter(|m| fits(m))
        .max_by(|a, b| (a.recovery_point(), &a.id).cmp(&(b.recovery_point(), &b.id)))
        .ok_or_else(|| {
            crate::catalog::CatalogError::NoBackup {
                source_name: source.to_string(),
                store: catalog.store().describe(),
                detail: match (&req.target_time, &req.target_lsn) {
                    (Some(t), _) => format!(" (base backup ending before {})", t.to_rfc3339()),
                    (_, Some(l)) => format!(" (base backup ending before LSN {l})"),
                    _ => " (base backup)".into(),
                },
            }
            .into()
        })
}

/// Quotes `s` for `sh -c` (the shell PostgreSQL runs `restore_command` with).
fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@%,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The `restore_command` for `source`, fetching WAL from `from_target` when
/// that is not the source's primary target (a restore from the off-site copy).
pub fn restore_command(
    env: &Env,
    cfg: &PostgresConfig,
    source: &str,
    from_target: Option<&str>,
) -> Result<String> {
    let bin = match &cfg.gsdr_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|e| Error::LocalIo {
            what: "finding the gsdr executable for restore_command",
            path: PathBuf::from("/proc/self/exe"),
            source: e,
        })?,
    };
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut parts = vec![
        sh_quote(&bin.display().to_string()),
        "--policy".into(),
        sh_quote(&abs(&env.policy.path).display().to_string()),
    ];
    if let Some(id) = &env.identity_file {
        parts.push("--identity".into());
        parts.push(sh_quote(&abs(id).display().to_string()));
    }
    parts.extend([
        "-q".into(),
        "wal-fetch".into(),
        "--source".into(),
        sh_quote(source),
    ]);
    if let Some(t) =
        from_target.filter(|t| env.primary_target_name(source).ok().as_deref() != Some(*t))
    {
        parts.extend(["--target".into(), sh_quote(t)]);
    }
    parts.extend([
        "%f".into(),
        // %p is relative to the data directory, which the `cd` below leaves.
        "\"$d/%p\"".into(),
    ]);
    // Relative paths in the policy (folder targets, key files) are relative to
    // gsdr's working directory, not to the data directory PostgreSQL runs this in.
    // The server's user may not be allowed into that directory (a restore run
    // as root from /root): then gsdr runs from the data directory, which is
    // fine for a policy with absolute paths, and a relative path fails loudly
    // (an unreadable policy stops recovery, exit 255), never silently.
    let cwd = std::env::current_dir().map_err(|e| Error::LocalIo {
        what: "reading the working directory for restore_command",
        path: PathBuf::from("."),
        source: e,
    })?;
    Ok(format!(
        "d=\"$PWD\"; cd {} 2>/dev/null; {}",
        sh_quote(&cwd.display().to_string()),
        parts.join(" ")
    ))
}

fn pg_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The recovery settings for `req` (lines for `postgresql.auto.conf`).
pub fn recovery_settings(
    restore_command: &str,
    req: &RestoreRequest,
    disable_archiving: bool,
) -> String {
    let mut s = format!("\n{SETTINGS_MARKER}\n");
    s += &format!("restore_command = {}\n", pg_string(restore_command));
    if let Some(t) = req.target_time {
        let t: DateTime<Utc> = t;
        s += &format!(
            "recovery_target_time = {}\n",
            pg_string(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        );
    } else if let Some(l) = &req.target_lsn {
        s += &format!("recovery_target_lsn = {}\n", pg_string(l));
    }
    s += "recovery_target_timeline = 'latest'\n";
    s += "recovery_target_action = 'promote'\n";
    if disable_archiving {
        s += "archive_mode = 'off'\n";
    }
    s
}

fn local<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::LocalIo {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Restores source `source` into `req.to_dir` as of `req`'s target. `manifest`
/// is the backup the operator picked (used if it fits the target).
pub async fn restore(
    env: &Env,
    catalog: &Catalog,
    source: &str,
    manifest: Option<&Manifest>,
    req: &RestoreRequest,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    let start = Instant::now();
    let dir = req.to_dir.clone().ok_or_else(|| {
        Error::Invalid(
            "a PostgreSQL restore goes into a data directory: pass --to-dir PGDATA".into(),
        )
    })?;
    if req.to_uri.is_some() || req.ns_from.is_some() || req.ns_to.is_some() {
        return Err(Error::Invalid(
            "--to, --ns-from and --ns-to do not apply to PostgreSQL restores (use --to-dir)".into(),
        ));
    }
    if req.target_time.is_some() && req.target_lsn.is_some() {
        return Err(Error::Invalid(
            "give either --target-time or --target-lsn, not both".into(),
        ));
    }
    let cfg = env
        .source_config(source)?
        .postgres
        .clone()
        .ok_or_else(|| Error::Invalid(format!("source `{source}` is not a postgres source")))?;
    let m = pick_base(catalog, source, manifest, req).await?;
    let d = details(&m)?;
    let command = restore_command(env, &cfg, source, req.from_target.as_deref())?;

    // The directory: absent or empty, or emptied when the operator said so.
    if dir.exists() {
        let non_empty = std::fs::read_dir(&dir)
            .map_err(local("reading target directory", &dir))?
            .next()
            .is_some();
        if non_empty {
            if !req.replace {
                return Err(Error::Invalid(format!(
                    "`{}` is not empty; refusing to restore over it (pass --replace to delete its contents first)",
                    dir.display()
                )));
            }
            for e in std::fs::read_dir(&dir).map_err(local("reading target directory", &dir))? {
                let p = e.map_err(local("reading target directory", &dir))?.path();
                let r = if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                r.map_err(local("emptying target directory", &p))?;
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(local("creating data directory", &dir))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(local("setting mode 0700 on", &dir))?;
    }

    // Stream: store → decode → tar extraction, on a blocking thread.
    let decoded = env.open_backup(catalog, &m).await?;
    progress.start(&format!("restore {}", m.id), Some(m.raw_bytes));
    let handle = tokio::runtime::Handle::current();
    let unpack_dir = dir.clone();
    let input = format!(
        "the download of `{}` from {}",
        m.data_key,
        catalog.store().describe()
    );
    let output = format!("unpacking into `{}`", dir.display());
    let ended = decoded
        .finish(
            Ends {
                input: &input,
                output: &output,
            },
            None,
            |reader| async move {
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    use std::io::Read;
                    let bridge = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
                    // 1 MiB reads: the tar extractor's small reads would each cross into the runtime.
                    let mut ar =
                        tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, bridge));
                    ar.set_preserve_permissions(true);
                    ar.set_overwrite(true);
                    ar.unpack(&unpack_dir)?;
                    // Drain the zero blocks after the end marker so the decoder checks the whole stream.
                    let mut rest = ar.into_inner();
                    let mut buf = vec![0u8; 64 << 10];
                    while rest.read(&mut buf)? > 0 {}
                    Ok(())
                })
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
            },
        )
        .await;
    let stats = match ended {
        Err(StreamError::Pipeline(e)) => return Err(e.into()),
        Err(StreamError::Sink(e)) => return Err(local("unpacking the base backup into", &dir)(e)),
        Ok((s, ())) => s,
    };
    progress.advance(stats.raw_bytes);
    progress.finish();

    for f in ["postmaster.pid", "postmaster.opts", "standby.signal"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let status = dir.join("pg_wal").join("archive_status");
    std::fs::create_dir_all(&status).map_err(local("creating", &status))?;
    let auto = dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    if let Some(i) = text.find(SETTINGS_MARKER) {
        text.truncate(i);
    }
    text += &recovery_settings(&command, req, cfg.restore_disable_archiving);
    std::fs::write(&auto, text).map_err(local("writing recovery settings to", &auto))?;
    let signal = dir.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(local("writing", &signal))?;

    let target = match (&req.target_time, &req.target_lsn) {
        (Some(t), _) => format!("time {}", t.to_rfc3339()),
        (_, Some(l)) => format!("lsn {l}"),
        _ => "latest".into(),
    };
    tracing::info!(event = "postgres_restore_prepared", source, id = %m.id, dir = %dir.display(), target = %target);
    Ok(RestoreOutcome {
        id: m.id.clone(),
        source: source.to_string(),
        destination: dir.display().to_string(),
        raw_bytes: stats.raw_bytes,
        duration_secs: start.elapsed().as_secs_f64(),
        details: serde_json::json!({
            "base_backup": m.id,
            "target": target,
            "start_lsn": d.start_lsn,
            "stop_lsn": d.stop_lsn,
            "timeline": d.timeline,
            "first_segment": d.first_segment,
            "restore_command": command,
            "next_step": format!("start it: pg_ctl -D {} start (recovery replays WAL and promotes)", dir.display()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_quote_and_target() {
        let req = RestoreRequest {
            target_time: Some("2026-11-29T01:02:03.5Z".parse().unwrap()),
            ..Default::default()
        };
        let s = recovery_settings("gsdr --policy '/a b' wal-fetch %f %p", &req, true);
        assert!(s.contains("restore_command = 'gsdr --policy ''/a b'' wal-fetch %f %p'"));
        assert!(s.contains("recovery_target_time = '2026-11-29 01:02:03.500000+00'"));
        assert!(s.contains("recovery_target_action = 'promote'"));
        assert!(s.contains("archive_mode = 'off'"));
        assert_eq!(sh_quote("/usr/bin/gsdr"), "/usr/bin/gsdr");
        assert_eq!(sh_quote("/a b"), "'/a b'");
    }
}
