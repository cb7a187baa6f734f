//! `FsStore`: a local folder as a target.
//!
//! Writes go to a hidden temp file in the destination folder, are fsynced,
//! then renamed into place (atomic on POSIX), and the folder is fsynced, so a
//! crash leaves either the whole object or a `.tmp-*` file that
//! `gsdr storage gc` ([`Store::incomplete_writes`]) removes. Conditional
//! creates use a hard link (`link(2)` fails if the name exists), which is
//! atomic too.
//!
//! Durability: a write returns only once the file, its directory entry and
//! every directory it had to create (each one's entry in its parent) are on
//! disk, so an object a caller was told is stored — a WAL segment in a new
//! timeline folder included — survives a power cut. Deletes fsync the folder
//! too, so a backup's manifest is gone for good before its data is deleted.
//! A failing fsync is an error, never ignored.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{
    BoxRead, IncompleteKind, IncompleteWrite, ObjectMeta, PutCondition, PutOptions, PutResult,
    StorageError, Store,
};
use crate::fault::RetryClass;

const TMP_PREFIX: &str = ".tmp-";

/// A folder holding objects as files under their keys.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// A store rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        let existed = root.is_dir();
        let cannot = |e: std::io::Error| StorageError::Config {
            store: format!("file://{}", root.display()),
            message: format!("cannot create the folder: {e}"),
        };
        std::fs::create_dir_all(&root).map_err(cannot)?;
        if !existed {
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir_blocking(parent).map_err(cannot)?;
            }
        }
        Ok(FsStore { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        if key.is_empty()
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with(TMP_PREFIX))
        {
            return Err(StorageError::Config {
                store: self.describe(),
                message: format!("invalid object key `{key}`"),
            });
        }
        Ok(self.root.join(key))
    }

    fn io(&self, op: &'static str, key: &str, e: std::io::Error) -> StorageError {
        if e.kind() == std::io::ErrorKind::NotFound {
            return StorageError::NotFound {
                store: self.describe(),
                key: key.to_string(),
            };
        }
        // A full disk or a read-only mount does not heal by retrying at once.
        let class = match e.raw_os_error() {
            Some(28) | Some(30) | Some(13) => RetryClass::Permanent,
            _ => RetryClass::Temporary,
        };
        StorageError::Io {
            op,
            store: self.describe(),
            key: key.to_string(),
            class,
            source: Box::new(e),
        }
    }

    /// Runs the directory walk `scan` over the root on a blocking thread;
    /// its failure (or the thread's) is `op` on `key` failing, worth a retry.
    async fn scan<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        scan: impl FnOnce(&Path) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let root = self.root.clone();
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| StorageError::Io {
            op,
            store: self.describe(),
            key: key.to_string(),
            class: RetryClass::Temporary,
            source,
        };
        match tokio::task::spawn_blocking(move || scan(&root)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(failed(Box::new(e))),
            Err(e) => Err(failed(Box::new(e))),
        }
    }

    fn tmp_path(dest: &Path) -> PathBuf {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rnd: u64 = rand::random();
        dest.with_file_name(format!("{TMP_PREFIX}{rnd:016x}-{name}"))
    }

    async fn commit(
        &self,
        key: &str,
        tmp: &Path,
        dest: &Path,
        if_absent: bool,
    ) -> Result<(), StorageError> {
        let res = if if_absent {
            tokio::fs::hard_link(tmp, dest).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    StorageError::PreconditionFailed {
                        store: self.describe(),
                        key: key.to_string(),
                    }
                } else {
                    self.io("commit", key, e)
                }
            })
        } else {
            tokio::fs::rename(tmp, dest)
                .await
                .map_err(|e| self.io("commit", key, e))
        };
        let _ = tokio::fs::remove_file(tmp).await;
        res?;
        // The new name is durable only once its folder is synced.
        if let Some(dir) = dest.parent() {
            self.sync_dir(key, dir).await?;
        }
        Ok(())
    }

    /// fsyncs folder `dir` (its entries: new, renamed and removed names).
    async fn sync_dir(&self, key: &str, dir: &Path) -> Result<(), StorageError> {
        let d = dir.to_path_buf();
        tokio::task::spawn_blocking(move || sync_dir_blocking(&d))
            .await
            .map_err(|e| self.io("sync the folder of", key, std::io::Error::other(e)))?
            .map_err(|e| self.io("sync the folder of", key, e))
    }

    /// Creates `dir` and any missing folder above it (up to the root), fsyncing
    /// the parent of each one created so that the new folders survive a crash.
    async fn create_dirs(&self, key: &str, dir: &Path) -> Result<(), StorageError> {
        let mut missing = Vec::new();
        let mut d = Some(dir);
        while let Some(cur) = d {
            if tokio::fs::try_exists(cur)
                .await
                .map_err(|e| self.io("create folder for", key, e))?
            {
                break;
            }
            missing.push(cur.to_path_buf());
            d = cur.parent();
        }
        for m in missing.iter().rev() {
            match tokio::fs::create_dir(m).await {
                Ok(()) => {}
                // Another writer made it meanwhile; its entry is synced below all the same.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.io("create folder for", key, e)),
            }
            if let Some(parent) = m.parent() {
                self.sync_dir(key, parent).await?;
            }
        }
        Ok(())
    }

    /// Removes now-empty folders above `path` up to the root, so listings stay cheap.
    async fn prune_empty_dirs(&self, path: &Path) {
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || tokio::fs::remove_dir(&d).await.is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }

    async fn meta(&self, key: &str, path: &Path) -> Result<Option<ObjectMeta>, StorageError> {
        match tokio::fs::metadata(path).await {
            Ok(m) if m.is_file() => Ok(Some(file_meta(key, &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("head", key, e)),
        }
    }
}

fn file_meta(key: &str, m: &std::fs::Metadata) -> ObjectMeta {
    use std::os::unix::fs::MetadataExt;
    let modified = m.modified().ok().map(chrono::DateTime::<chrono::Utc>::from);
    ObjectMeta {
        key: key.to_string(),
        size: m.len(),
        // inode + mtime identifies a version: every write is a new file renamed into place.
        etag: Some(format!("{:x}-{:x}", m.ino(), m.mtime_nsec() ^ m.mtime())),
        last_modified: modified,
    }
}

#[async_trait]
impl Store for FsStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn probe(&self) -> Result<(), StorageError> {
        // A folder that cannot take a new file cannot take a backup.
        let tmp = Self::tmp_path(&self.root.join("probe"));
        tokio::fs::write(&tmp, b"gsdr probe")
            .await
            .map_err(|e| self.io("write a probe file in", "", e))?;
        tokio::fs::remove_file(&tmp)
            .await
            .map_err(|e| self.io("remove the probe file in", "", e))?;
        Ok(())
    }

    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        opts: PutOptions,
    ) -> Result<PutResult, StorageError> {
        let dest = self.path(key)?;
        if let Some(dir) = dest.parent() {
            self.create_dirs(key, dir).await?;
        }
        let tmp = Self::tmp_path(&dest);
        let result = async {
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| self.io("create", key, e))?;
            let mut buf = vec![0u8; crate::stream::CHUNK_BYTES];
            let mut size = 0u64;
            loop {
                let n = body
                    .read(&mut buf)
                    .await
                    .map_err(|source| StorageError::Body {
                        store: self.describe(),
                        key: key.to_string(),
                        source,
                    })?;
                if n == 0 {
                    break;
                }
                f.write_all(&buf[..n])
                    .await
                    .map_err(|e| self.io("write", key, e))?;
                size += n as u64;
            }
            f.sync_all().await.map_err(|e| self.io("sync", key, e))?;
            drop(f);
            self.commit(key, &tmp, &dest, opts.if_absent).await?;
            Ok(size)
        }
        .await;
        match result {
            Ok(size) => {
                let meta = self.meta(key, &dest).await?;
                Ok(PutResult {
                    size,
                    etag: meta.and_then(|m| m.etag),
                })
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                self.prune_empty_dirs(&dest).await;
                Err(e)
            }
        }
    }

    async fn put_small(
        &self,
        key: &str,
        body: Bytes,
        cond: PutCondition,
    ) -> Result<PutResult, StorageError> {
        let dest = self.path(key)?;
        if let PutCondition::IfMatch(etag) = &cond {
            // Not atomic against a concurrent writer on the same folder; the S3 store is.
            let cur = self.meta(key, &dest).await?;
            if cur.and_then(|m| m.etag).as_deref() != Some(etag.as_str()) {
                return Err(StorageError::PreconditionFailed {
                    store: self.describe(),
                    key: key.to_string(),
                });
            }
        }
        let mut reader: &[u8] = &body;
        self.put_stream(
            key,
            &mut reader,
            PutOptions {
                size_hint: Some(body.len() as u64),
                if_absent: cond == PutCondition::IfAbsent,
            },
        )
        .await
    }

    async fn get_stream(&self, key: &str) -> Result<BoxRead, StorageError> {
        let path = self.path(key)?;
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.io("get", key, e))?;
        Ok(Box::pin(tokio::io::BufReader::with_capacity(256 * 1024, f)))
    }

    async fn get_small(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> Result<(Bytes, ObjectMeta), StorageError> {
        let path = self.path(key)?;
        let meta = self
            .meta(key, &path)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                store: self.describe(),
                key: key.to_string(),
            })?;
        if meta.size > max_bytes {
            return Err(StorageError::TooLarge {
                store: self.describe(),
                key: key.to_string(),
                size: meta.size,
                max: max_bytes,
            });
        }
        let data = tokio::fs::read(&path)
            .await
            .map_err(|e| self.io("get", key, e))?;
        Ok((Bytes::from(data), meta))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let path = self.path(key)?;
        self.meta(key, &path).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.list_after(prefix, "").await
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let (prefix_owned, after) = (prefix.to_string(), start_after.to_string());
        let mut out = self
            .scan("list", prefix, move |root| {
                let mut out = Vec::new();
                walk(root, root, &prefix_owned, &after, &mut out)?;
                Ok(out)
            })
            .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let dir = match prefix.strip_suffix('/') {
            None if prefix.is_empty() => self.root.clone(),
            Some(p) => self.path(p)?,
            None => {
                return Err(StorageError::Config {
                    store: self.describe(),
                    message: format!("folder prefix `{prefix}` does not end in `/`"),
                })
            }
        };
        let mut out = self
            .scan("list folders of", prefix, move |_| {
                let mut out = Vec::new();
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.starts_with(TMP_PREFIX) && entry.file_type()?.is_dir() {
                        out.push(name);
                    }
                }
                Ok(out)
            })
            .await?;
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                // Durable before the caller goes on (prune deletes the data after the manifest).
                if let Some(dir) = path.parent() {
                    self.sync_dir(key, dir).await?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("delete", key, e)),
        }
        self.prune_empty_dirs(&path).await;
        Ok(())
    }

    async fn incomplete_writes(&self) -> Result<Vec<IncompleteWrite>, StorageError> {
        let mut out = self
            .scan("list temp files in", "", |root| {
                let mut out = Vec::new();
                temp_files(root, root, &mut out)?;
                Ok(out)
            })
            .await?;
        out.sort_by(|a, b| a.handle.cmp(&b.handle));
        Ok(out)
    }

    async fn remove_incomplete(&self, w: &IncompleteWrite) -> Result<(), StorageError> {
        // Only ever a temp file inside the folder, whatever the handle says.
        let rel = Path::new(&w.handle);
        let is_temp = rel
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(TMP_PREFIX));
        let inside = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if w.kind != IncompleteKind::TempFile || !is_temp || !inside {
            return Err(StorageError::Config {
                store: self.describe(),
                message: format!("`{}` is not a temp file of this folder", w.handle),
            });
        }
        let path = self.root.join(rel);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("remove temp file of", &w.key, e)),
        }
        self.prune_empty_dirs(&path).await;
        Ok(())
    }
}

fn sync_dir_blocking(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Every `.tmp-*` file under `dir`, with the key it was being written for.
fn temp_files(root: &Path, dir: &Path, out: &mut Vec<IncompleteWrite>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let ft = entry.file_type()?;
        let path = entry.path();
        if ft.is_dir() {
            temp_files(root, &path, out)?;
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
            continue;
        };
        if !ft.is_file() {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            // Renamed into place or removed since it was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // `.tmp-<16 hex>-<name>`: the name the file was to be renamed to.
        let target = match rest.split_once('-') {
            Some((rnd, n)) if rnd.len() == 16 && rnd.bytes().all(|b| b.is_ascii_hexdigit()) => n,
            _ => rest,
        };
        let rel_dir = dir
            .strip_prefix(root)
            .unwrap_or(dir)
            .to_string_lossy()
            .replace('\\', "/");
        let rel = |n: &str| {
            if rel_dir.is_empty() {
                n.to_string()
            } else {
                format!("{rel_dir}/{n}")
            }
        };
        out.push(IncompleteWrite {
            key: rel(target),
            kind: IncompleteKind::TempFile,
            handle: rel(&name),
            started: meta
                .modified()
                .ok()
                .map(chrono::DateTime::<chrono::Utc>::from),
            bytes: Some(meta.len()),
        });
    }
    Ok(())
}

/// Every file under `dir` whose key starts with `prefix` and sorts after
/// `after` (a subfolder whose keys all sort before `after` is not entered,
/// a file before it not looked up).
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    after: &str,
    out: &mut Vec<ObjectMeta>,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        let ft = entry.file_type()?;
        if ft.is_dir() {
            let as_dir = format!("{rel}/");
            // Every key inside starts with `as_dir`: all sort before `after`
            // when `as_dir` does and is not a prefix of it.
            let all_before = as_dir.as_str() < after && !after.starts_with(&as_dir);
            if (as_dir.starts_with(prefix) || prefix.starts_with(&as_dir)) && !all_before {
                walk(root, &path, prefix, after, out)?;
            }
        } else if ft.is_file() && rel.starts_with(prefix) && rel.as_str() > after {
            out.push(file_meta(&rel, &entry.metadata()?));
        }
    }
    Ok(())
}
