//! Settings of a `command` source (`[sources.NAME.command]`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Settings of a `command` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Program and arguments, run without a shell: `["pg_dumpall", "-h", "db"]`.
    pub argv: Vec<String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables (non-secret; secrets come from the pod's environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl CommandConfig {
    /// The stream is never silent by design.
    pub fn silent_wait(&self) -> Option<crate::source::SilentWait> {
        None
    }

    /// Checks what parsing cannot: a program to run.
    pub fn validate(&self) -> Result<(), String> {
        match self.argv.first() {
            None => Err("`argv` is empty: name the program to run, e.g. [\"pg_dumpall\"]".into()),
            Some(p) if p.trim().is_empty() => {
                Err("`argv[0]` is empty: name the program to run".into())
            }
            Some(_) => Ok(()),
        }
    }
}
