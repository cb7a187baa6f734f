//! Scratch targets of a drill: one temporary directory per run (restored
//! files, the data directories of scratch servers).

use std::path::Path;

use super::DrillError;
use crate::error::Error;

/// Scratch targets of a drill: a directory and the scratch servers started in it.
pub(super) struct Scratch {
    pub(super) dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates the directory below `root` (default: the system temp dir).
    pub(super) fn new(root: Option<&Path>, scenario: &str) -> Result<Scratch, DrillError> {
        let root = root
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&root).ok();
        let dir = tempfile::Builder::new()
            .prefix(&format!("gsdr-drill-{scenario}-"))
            .tempdir_in(&root)
            .map_err(|e| {
                DrillError::Gsdr(Error::LocalIo {
                    what: "creating the scratch directory in",
                    path: root.clone(),
                    source: e,
                })
            })?;
        // Traversable (not listable) by other users: a scratch server may run
        // as its own user (PostgreSQL as `postgres`) below this directory.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711));
        }
        Ok(Scratch { dir })
    }

    /// Removes everything; true when nothing is left.
    pub(super) async fn cleanup(self) -> bool {
        let path = self.dir.path().to_path_buf();
        if let Err(e) = tokio::fs::remove_dir_all(&path).await {
            tracing::warn!(event = "drill_scratch_cleanup_failed", path = %path.display(), error = %e);
        }
        drop(self.dir); // the guard retries synchronously if anything is left
        !path.exists()
    }
}
