//! The backup of a `command` source: any program's stdout.
//!
//! The program runs without a shell, its stderr is kept (the last 4 KiB,
//! every secret value the policy references redacted: [`crate::secret::redact`])
//! for the error message, and a non-zero exit fails the backup: the pipeline
//! awaits the exit status before it lets the upload commit.

use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;

use super::CommandConfig;
use crate::fault::RetryClass;
use crate::source::{BackupSource, SourceError, SourceMeta, SourceStream};

/// A configured command source.
#[derive(Debug, Clone)]
pub struct CommandSource {
    name: String,
    config: CommandConfig,
}

impl CommandSource {
    /// A source named `name` running `config`.
    pub fn new(name: impl Into<String>, config: CommandConfig) -> Self {
        CommandSource {
            name: name.into(),
            config,
        }
    }
}

/// Checks that the program exists (on `PATH` or as a path).
pub fn probe(name: &str, c: &CommandConfig) -> Result<(), SourceError> {
    let prog = c.argv.first().map(String::as_str).unwrap_or("");
    let found = if prog.contains('/') {
        std::path::Path::new(prog).is_file()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
            .unwrap_or(false)
    };
    if found {
        Ok(())
    } else {
        Err(SourceError::Invalid {
            message: format!("source `{name}`: program `{prog}` not found on PATH"),
        })
    }
}

const STDERR_TAIL: usize = 4096;

/// Bytes kept before the tail: a secret cut by the tail's start is redacted
/// whole, then dropped with them.
const STDERR_MARGIN: usize = 4096;

/// The last [`STDERR_TAIL`] bytes of `raw` (which holds up to
/// [`STDERR_MARGIN`] more), with every known secret redacted.
fn stderr_tail(raw: &[u8]) -> String {
    let text = crate::secret::redact(&String::from_utf8_lossy(raw));
    let mut start = text.len().saturating_sub(STDERR_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim().to_string()
}

#[async_trait]
impl BackupSource for CommandSource {
    fn kind(&self) -> &'static str {
        "stdout"
    }

    async fn open(&self) -> Result<SourceStream, SourceError> {
        let (prog, args) = self
            .config
            .argv
            .split_first()
            .ok_or_else(|| SourceError::Connect {
                source_name: self.name.clone(),
                message: "no command configured".into(),
                cause: None,
            })?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .envs(&self.config.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = &self.config.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd.spawn().map_err(|e| SourceError::Connect {
            source_name: self.name.clone(),
            message: format!("cannot start `{prog}`: {e}"),
            cause: Some(Box::new(e)),
        })?;
        let stdout = child.stdout.take().expect("stdout piped");
        let mut stderr = child.stderr.take().expect("stderr piped");
        let stderr_task = tokio::spawn(async move {
            let mut tail = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL + STDERR_MARGIN {
                    tail.drain(..tail.len() - STDERR_TAIL - STDERR_MARGIN);
                }
            }
            stderr_tail(&tail)
        });
        let name = self.name.clone();
        let prog = prog.clone();
        let done = Box::pin(async move {
            let status = child.wait().await.map_err(|e| SourceError::Dump {
                source_name: name.clone(),
                message: format!("waiting for `{prog}` failed: {e}"),
                class: RetryClass::Temporary,
                cause: Some(Box::new(e)),
            })?;
            let stderr = stderr_task.await.unwrap_or_default();
            if !status.success() {
                return Err(SourceError::Dump {
                    source_name: name,
                    message: format!(
                        "`{prog}` exited with {status}{}",
                        if stderr.is_empty() {
                            String::new()
                        } else {
                            format!("; its stderr ends with: {stderr}")
                        }
                    ),
                    class: RetryClass::Temporary,
                    cause: None,
                });
            }
            Ok(SourceMeta {
                consistency_time: None,
                details: serde_json::json!({ "argv0": prog, "exit": 0 }),
            })
        });
        Ok(SourceStream {
            reader: Box::pin(stdout),
            done,
        })
    }
}
