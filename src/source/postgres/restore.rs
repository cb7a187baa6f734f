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
use crate::pipeline::{Ends, StreamError};
use crate::source::error::{EngineError as Error, EngineResult as Result};
use crate::source::{
    download_label, not_supported, GsdrCall, Overwrite, RecoveryPoint, RestoreHost, RestoreOutcome,
    RestoreSpec, RestoreTarget,
};
use crate::stream::progress::Progress;

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

/// Picks the base backup to restore for `point`: `chosen` if it fits the target, else the newest that does.
pub async fn pick_base(
    catalog: &Catalog,
    source: &str,
    chosen: Option<&Manifest>,
    point: &RecoveryPoint,
) -> Result<Manifest> {
    let target_lsn = match point.lsn() {
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
        if let Some(t) = point.time() {
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
                detail: match (point.time(), point.lsn()) {
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

/// `d="$PWD"; cd <gsdr's working dir>; <gsdr> --policy P [--identity I] <tail…>`:
/// a command PostgreSQL runs with `sh -c` from the data directory.
fn gsdr_command(
    call: &GsdrCall,
    cfg: &PostgresConfig,
    with_identity: bool,
    tail: Vec<String>,
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
        sh_quote(&abs(&call.policy_path).display().to_string()),
    ];
    if let (true, Some(id)) = (with_identity, &call.identity_file) {
        parts.push("--identity".into());
        parts.push(sh_quote(&abs(id).display().to_string()));
    }
    // The restore's own `--allow-unsigned` reaches the WAL it replays.
    if with_identity && call.allow_unsigned {
        parts.push("--allow-unsigned".into());
    }
    parts.extend(tail);
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

/// The `restore_command` for `source`, fetching WAL from `from_target` when
/// that is not the source's primary target (a restore from the off-site copy).
pub fn restore_command(
    call: &GsdrCall,
    cfg: &PostgresConfig,
    source: &str,
    from_target: Option<&str>,
) -> Result<String> {
    let mut tail: Vec<String> = vec![
        "-q".into(),
        "wal-fetch".into(),
        "--source".into(),
        sh_quote(source),
    ];
    if let Some(t) = from_target.filter(|t| call.primary_target.as_deref() != Some(*t)) {
        tail.extend(["--target".into(), sh_quote(t)]);
    }
    // %p is relative to the data directory, which the `cd` leaves.
    tail.extend(["%f".into(), "\"$d/%p\"".into()]);
    gsdr_command(call, cfg, true, tail)
}

/// The `archive_command` of a restored cluster that replaces production
/// (`--keep-archiving`): `wal-push --allow-branch`, so that the new timeline
/// it starts on promotion is accepted even when it branches off before the
/// end of the archive (a point-in-time restore). `wal_push_args` are the
/// arguments after the policy, for messages (`%p` left for PostgreSQL).
pub fn archive_command(call: &GsdrCall, cfg: &PostgresConfig, source: &str) -> Result<String> {
    gsdr_command(
        call,
        cfg,
        false,
        vec![
            "-q".into(),
            "wal-push".into(),
            "--source".into(),
            sh_quote(source),
            "--allow-branch".into(),
            "\"$d/%p\"".into(),
        ],
    )
}

/// What a restored cluster does with its WAL once it promotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Archiving {
    /// `archive_mode = off`: it can never write into the source's archive.
    /// Holds the `archive_command` the comment tells the operator to set
    /// after a real failover.
    Off {
        /// Source whose archive it stays out of.
        source: String,
        /// The command to set when it replaces production.
        archive_command: String,
    },
    /// It continues the source's archive on a new timeline (it replaces production).
    Keep {
        /// `archive_command` written into the configuration.
        archive_command: String,
    },
}

fn pg_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The recovery settings for `point` (lines for `postgresql.auto.conf`).
pub fn recovery_settings(
    restore_command: &str,
    point: &RecoveryPoint,
    archiving: &Archiving,
) -> String {
    let mut s = format!("\n{SETTINGS_MARKER}\n");
    s += &format!("restore_command = {}\n", pg_string(restore_command));
    if let Some(t) = point.time() {
        let t: DateTime<Utc> = t;
        s += &format!(
            "recovery_target_time = {}\n",
            pg_string(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        );
    } else if let Some(l) = point.lsn() {
        s += &format!("recovery_target_lsn = {}\n", pg_string(l));
    }
    s += "recovery_target_timeline = 'latest'\n";
    s += "recovery_target_action = 'promote'\n";
    match archiving {
        Archiving::Off {
            source,
            archive_command,
        } => {
            s += &format!(
                "# Archiving is OFF in this restored copy: it shares the system identifier of\n\
                 # the cluster of source `{source}`, and once promoted it would push a new\n\
                 # timeline into that cluster's WAL archive (later restores would follow it,\n\
                 # and production's own next failover would be refused there).\n\
                 # If this copy replaces production (a real failover):\n\
                 #   1. replace the line below with these two, and restart it:\n\
                 #        archive_mode = 'on'\n\
                 #        archive_command = {}\n\
                 #   2. archive the history file of its new timeline, written while archiving\n\
                 #      was off: run that command from the data directory with %p replaced by\n\
                 #      pg_wal/<new timeline>.history (SELECT timeline_id FROM pg_control_checkpoint())\n\
                 #   3. take a base backup at once (gsdr backup --source {source}): the WAL\n\
                 #      written while archiving was off is not in the archive.\n\
                 # Or restore again with `gsdr restore --keep-archiving`, which archives from\n\
                 # the first promotion on. See docs/postgres.md, \"Restored copies\".\n\
                 archive_mode = 'off'\n",
                pg_string(archive_command)
            );
        }
        Archiving::Keep { archive_command } => {
            s += "# Archiving KEPT (restore --keep-archiving): once promoted this cluster continues\n\
                  # the source's WAL archive on a new timeline, as the cluster that replaces\n\
                  # production. --allow-branch lets wal-push accept that timeline although it\n\
                  # branches off before the end of the archive; see docs/postgres.md.\n\
                  archive_mode = 'on'\n";
            s += &format!("archive_command = {}\n", pg_string(archive_command));
        }
    }
    s
}

/// The pid in `dir/postmaster.pid` if that process is alive (or the file
/// cannot be read: a server may be starting), `None` when there is no file
/// or its process is gone (a crashed server's leftover).
fn live_postmaster(dir: &Path) -> Result<Option<String>> {
    let f = dir.join("postmaster.pid");
    let text = match std::fs::read_to_string(&f) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(local("reading", &f)(e)),
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
    else {
        return Ok(Some(format!("unknown (unreadable {})", f.display())));
    };
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    match kill(Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => Ok(None),
        // Alive, or alive and not ours (EPERM).
        _ => Ok(Some(pid.to_string())),
    }
}

/// What a restore into `dir` would overwrite, for incident plans.
pub fn describe_overwrite(dir: &Path) -> Overwrite {
    match live_postmaster(dir) {
        // Nothing is destroyed: the restore refuses to run.
        Ok(Some(pid)) => {
            return Overwrite::nothing(format!(
                "REFUSED: a PostgreSQL server (pid {pid}) runs on {}; stop it first",
                dir.display()
            ))
        }
        Ok(None) => {}
        Err(e) => return Overwrite::destroys(format!("cannot check {}: {e}", dir.display())),
    }
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Overwrite::nothing(format!(
            "{} does not exist: nothing is overwritten",
            dir.display()
        )),
        Err(e) => Overwrite::destroys(format!("cannot read {}: {e}", dir.display())),
        Ok(rd) => {
            let n = rd
                .filter_map(|e| e.ok())
                .filter(|e| !kept_in_place(&e.file_name()))
                .count();
            if n == 0 {
                Overwrite::nothing(format!(
                    "{} is empty: nothing is overwritten",
                    dir.display()
                ))
            } else {
                Overwrite::destroys(format!(
                    "replaces the {n} entries of {} (moved aside, deleted only once the restore succeeded)",
                    dir.display()
                ))
            }
        }
    }
}

/// Entries of the data directory a restore leaves where they are.
fn kept_in_place(name: &std::ffi::OsStr) -> bool {
    name == "lost+found"
}

const STAGING_PREFIX: &str = ".gsdr-restore-";
const ASIDE_PREFIX: &str = ".gsdr-replaced-";

fn local<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::LocalIo {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Restores source `source` into `spec`'s data directory as of its recovery point. `manifest`
/// is the backup the operator picked (used if it fits the target).
///
/// Nothing in the directory is touched until the backup has been read end to
/// end: it is unpacked into a staging directory inside the target (same
/// filesystem, so a mount point works), every check of the stream passed
/// (age, zstd, size and SHA-256 against the manifest, the tar's end) and the
/// result looks like a data directory. Only then are the old contents moved
/// aside (`.gsdr-replaced-<time>/`), the new ones moved in, and the old ones
/// deleted. A directory with a live postmaster is refused.
pub async fn restore(
    host: &dyn RestoreHost,
    cfg: Option<&PostgresConfig>,
    catalog: &Catalog,
    source: &str,
    manifest: Option<&Manifest>,
    spec: &RestoreSpec,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    let start = Instant::now();
    let dir =
        match &spec.target {
            RestoreTarget::DataDir(d) => d.clone(),
            RestoreTarget::Server(_) => return Err(not_supported(
                source,
                "--to, --ns-from and --ns-to do not apply to PostgreSQL restores (use --to-dir)",
            )
            .into()),
            RestoreTarget::Origin | RestoreTarget::File(_) => {
                return Err(Error::Invalid(
                    "a PostgreSQL restore goes into a data directory: pass --to-dir PGDATA".into(),
                ))
            }
        };
    if spec.rename.is_some() {
        return Err(not_supported(
            source,
            "--to, --ns-from and --ns-to do not apply to PostgreSQL restores (use --to-dir)",
        )
        .into());
    }
    let call = host.gsdr_call(source)?;
    let cfg = cfg
        .cloned()
        .ok_or_else(|| Error::Invalid(format!("source `{source}` is not a postgres source")))?;
    // The key first: a missing or unreadable identity fails before anything else.
    host.identities()?;
    let m = pick_base(catalog, source, manifest, &spec.point).await?;
    let d = details(&m)?;
    let command = restore_command(&call, &cfg, source, spec.from_target.as_deref())?;
    let push = archive_command(&call, &cfg, source)?;
    let archiving = if spec.keep_archiving {
        Archiving::Keep {
            archive_command: push,
        }
    } else {
        Archiving::Off {
            source: source.to_string(),
            archive_command: push,
        }
    };

    // The directory: absent or empty, or replaced when the operator said so,
    // never while a server runs on it.
    let mut old_entries = Vec::new();
    if dir.exists() {
        for e in std::fs::read_dir(&dir).map_err(local("reading target directory", &dir))? {
            let e = e.map_err(local("reading target directory", &dir))?;
            let name = e.file_name();
            if name.to_string_lossy().starts_with(ASIDE_PREFIX) {
                return Err(Error::Invalid(format!(
                    "`{}` holds `{}`, the old contents an interrupted restore moved aside; move them back or delete them, then restore again",
                    dir.display(),
                    e.path().display()
                )));
            }
            if name.to_string_lossy().starts_with(STAGING_PREFIX) {
                // A staging directory of an interrupted restore: nothing else refers to it.
                let _ = std::fs::remove_dir_all(e.path());
                continue;
            }
            if !kept_in_place(&name) {
                old_entries.push(name);
            }
        }
    }
    if !old_entries.is_empty() {
        if let Some(pid) = live_postmaster(&dir)? {
            return Err(Error::Invalid(format!(
                "a PostgreSQL server (pid {pid}) is running on `{}`; stop it before restoring over it (if none runs, delete its stale postmaster.pid)",
                dir.display()
            )));
        }
        if !spec.replace {
            return Err(Error::Invalid(format!(
                "`{}` is not empty; refusing to restore over it (pass --replace to replace its contents: they are moved aside and deleted only once the restore succeeded)",
                dir.display()
            )));
        }
    }
    let created = !dir.exists();
    std::fs::create_dir_all(&dir).map_err(local("creating data directory", &dir))?;
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(&dir)
        .map_err(local("creating a staging directory in", &dir))?;
    let res = unpack_checked(host, catalog, &m, staging.path(), progress).await;
    let stats = match res {
        Ok(s) => s,
        Err(e) => {
            drop(staging); // removes what was unpacked
            if created {
                let _ = std::fs::remove_dir(&dir);
            }
            return Err(e);
        }
    };
    let new_dir = staging.path();
    for f in ["postmaster.pid", "postmaster.opts", "standby.signal"] {
        let _ = std::fs::remove_file(new_dir.join(f));
    }
    let status = new_dir.join("pg_wal").join("archive_status");
    std::fs::create_dir_all(&status).map_err(local("creating", &status))?;
    let auto = new_dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    if let Some(i) = text.find(SETTINGS_MARKER) {
        text.truncate(i);
    }
    text += &recovery_settings(&command, &spec.point, &archiving);
    std::fs::write(&auto, text).map_err(local("writing recovery settings to", &auto))?;
    let signal = new_dir.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(local("writing", &signal))?;

    // Swap: old contents aside, new ones in, then the old ones go.
    let aside = if old_entries.is_empty() {
        None
    } else {
        let a = dir.join(format!(
            "{ASIDE_PREFIX}{}",
            Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        ));
        std::fs::create_dir(&a).map_err(local("creating", &a))?;
        for n in &old_entries {
            std::fs::rename(dir.join(n), a.join(n))
                .map_err(local("moving the old contents aside into", &a))?;
        }
        Some(a)
    };
    for e in std::fs::read_dir(new_dir).map_err(local("reading", new_dir))? {
        let e = e.map_err(local("reading", new_dir))?;
        let to = dir.join(e.file_name());
        std::fs::rename(e.path(), &to).map_err(local("moving the restored files into", &dir))?;
    }
    drop(staging);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(local("setting mode 0700 on", &dir))?;
    }
    let mut leftover = None;
    if let Some(a) = &aside {
        if let Err(e) = std::fs::remove_dir_all(a) {
            tracing::warn!(event = "postgres_old_contents_not_deleted", path = %a.display(), error = %e);
            leftover = Some(a.display().to_string());
        }
    }

    let target = match (spec.point.time(), spec.point.lsn()) {
        (Some(t), _) => format!("time {}", t.to_rfc3339()),
        (_, Some(l)) => format!("lsn {l}"),
        _ => "latest".into(),
    };
    let archiving_word = match &archiving {
        Archiving::Off { .. } => "off",
        Archiving::Keep { .. } => "kept",
    };
    tracing::info!(event = "postgres_restore_prepared", source, id = %m.id, dir = %dir.display(), recovery_target = %target, archiving = archiving_word, replaced = old_entries.len());
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
            "archiving": archiving_word,
            "replaced_entries": old_entries.len(),
            "old_contents_left_at": leftover,
            "next_step": format!("start it: pg_ctl -D {} start (recovery replays WAL and promotes{})", dir.display(), match &archiving {
                Archiving::Off { .. } => "; it does not archive: see postgresql.auto.conf to re-enable after a real failover",
                Archiving::Keep { .. } => "; it then archives into the source's WAL archive on a new timeline",
            }),
        }),
    })
}

/// Streams base backup `m` into `dir` and checks it end to end: every check
/// of the stream (decrypt, zstd, size, SHA-256), the tar read to its end, and
/// the files every data directory has.
async fn unpack_checked(
    host: &dyn RestoreHost,
    catalog: &Catalog,
    m: &Manifest,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<crate::pipeline::DecodeStats> {
    let decoded = host.open_backup(catalog, m).await?;
    progress.start(&format!("restore {}", m.id), Some(m.raw_bytes));
    let handle = tokio::runtime::Handle::current();
    let unpack_dir = dir.to_path_buf();
    let input = download_label(catalog, m);
    let output = format!("unpacking into `{}`", dir.display());
    let ended = decoded
        .finish(
            Ends::new(&input, &output),
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
        Err(StreamError::Sink(e)) => return Err(local("unpacking the base backup into", dir)(e)),
        Ok((s, ())) => s,
    };
    progress.advance(stats.raw_bytes);
    progress.finish();
    for f in ["PG_VERSION", "global/pg_control", "backup_label"] {
        if !dir.join(f).is_file() {
            return Err(Error::Invalid(format!(
                "base backup {} unpacked without `{f}`: it is not a PostgreSQL base backup gsdr can restore",
                m.id
            )));
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_quote_and_target() {
        let req = RecoveryPoint::Time("2026-11-29T01:02:03.5Z".parse().unwrap());
        let off = Archiving::Off {
            source: "pg".into(),
            archive_command: "gsdr wal-push --allow-branch %p".into(),
        };
        let s = recovery_settings("gsdr --policy '/a b' wal-fetch %f %p", &req, &off);
        assert!(s.contains("restore_command = 'gsdr --policy ''/a b'' wal-fetch %f %p'"));
        assert!(s.contains("recovery_target_time = '2026-11-29 01:02:03.500000+00'"));
        assert!(s.contains("recovery_target_action = 'promote'"));
        assert!(s.contains("\narchive_mode = 'off'\n"));
        assert!(s.contains("#        archive_command = 'gsdr wal-push --allow-branch %p'"));
        let keep = Archiving::Keep {
            archive_command: "gsdr wal-push --allow-branch %p".into(),
        };
        let s = recovery_settings("x", &req, &keep);
        assert!(s.contains(
            "\narchive_mode = 'on'\narchive_command = 'gsdr wal-push --allow-branch %p'\n"
        ));
        assert_eq!(sh_quote("/usr/bin/gsdr"), "/usr/bin/gsdr");
        assert_eq!(sh_quote("/a b"), "'/a b'");
    }

    #[test]
    fn allow_unsigned_reaches_wal_fetch_not_wal_push() {
        let cfg = PostgresConfig {
            gsdr_bin: Some("/usr/bin/gsdr".into()),
            ..serde_json::from_value(serde_json::json!({})).unwrap()
        };
        let mut call = GsdrCall {
            policy_path: "/p.toml".into(),
            identity_file: None,
            primary_target: None,
            allow_unsigned: false,
        };
        let fetch = restore_command(&call, &cfg, "pg", None).unwrap();
        assert!(!fetch.contains("--allow-unsigned"), "{fetch}");
        call.allow_unsigned = true;
        let fetch = restore_command(&call, &cfg, "pg", None).unwrap();
        assert!(
            fetch.contains("/usr/bin/gsdr --policy /p.toml --allow-unsigned -q wal-fetch"),
            "{fetch}"
        );
        let push = archive_command(&call, &cfg, "pg").unwrap();
        assert!(!push.contains("--allow-unsigned"), "{push}");
    }
}
