//! `FsStore`: a local folder as a target.
//!
//! Writes go to a hidden temp file in the destination folder, are fsynced,
//! then renamed into place (atomic on POSIX), and the folder is fsynced, so a
//! crash leaves either the whole object or a `.tmp-*` file that
//! [`Store::cleanup_incomplete`] removes. Conditional creates use a hard link
//! (`link(2)` fails if the name exists), which is atomic too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{BoxRead, ObjectMeta, PutCondition, PutOptions, PutResult, StorageError, Store};
use crate::error::RetryClass;

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
        std::fs::create_dir_all(&root).map_err(|e| StorageError::Config {
            store: format!("file://{}", root.display()),
            message: format!("cannot create the folder: {e}"),
        })?;
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
        if let Some(dir) = dest.parent() {
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
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
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| self.io("create folder for", key, e))?;
        }
        let tmp = Self::tmp_path(&dest);
        let result = async {
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| self.io("create", key, e))?;
            let mut buf = vec![0u8; crate::pipeline::CHUNK_BYTES];
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
        let root = self.root.clone();
        let prefix_owned = prefix.to_string();
        let store = self.describe();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &prefix_owned, &mut out).map_err(|e| StorageError::Io {
                op: "list",
                store: store.clone(),
                key: prefix_owned.clone(),
                class: RetryClass::Temporary,
                source: Box::new(e),
            })?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::Io {
            op: "list",
            store: self.describe(),
            key: prefix.to_string(),
            class: RetryClass::Temporary,
            source: Box::new(e),
        })?
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("delete", key, e)),
        }
        self.prune_empty_dirs(&path).await;
        Ok(())
    }

    async fn cleanup_incomplete(&self, older_than: Duration) -> Result<usize, StorageError> {
        let root = self.root.clone();
        let store = self.describe();
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            let cutoff = std::time::SystemTime::now() - older_than;
            clean(&root, cutoff, &mut n).map_err(|e| StorageError::Io {
                op: "clean up",
                store,
                key: String::new(),
                class: RetryClass::Temporary,
                source: Box::new(e),
            })?;
            Ok(n)
        })
        .await
        .unwrap_or(Ok(0))
    }
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
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
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(root, &path, prefix, out)?;
            }
        } else if ft.is_file() && rel.starts_with(prefix) {
            out.push(file_meta(&rel, &entry.metadata()?));
        }
    }
    Ok(())
}

fn clean(dir: &Path, cutoff: std::time::SystemTime, n: &mut usize) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            clean(&entry.path(), cutoff, n)?;
        } else if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX)
            && entry.metadata()?.modified()? < cutoff
        {
            std::fs::remove_file(entry.path())?;
            *n += 1;
        }
    }
    Ok(())
}
