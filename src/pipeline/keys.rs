//! age keys: recipients (public, in policies) and identities (private, in files).

use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use super::PipelineError;

/// Identities read from an identity file, boxed for age.
pub struct Identities(Vec<Box<dyn age::Identity + Send + Sync>>);

impl Identities {
    /// Iterator in the form age wants.
    pub fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.0.iter().map(|i| i.as_ref() as &dyn age::Identity)
    }

    /// Wraps identities made in code (tests, generated keys).
    pub fn from_x25519(ids: Vec<age::x25519::Identity>) -> Self {
        Identities(
            ids.into_iter()
                .map(|i| Box::new(i) as Box<dyn age::Identity + Send + Sync>)
                .collect(),
        )
    }
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} keys, redacted)", self.0.len())
    }
}

/// Parses an `age1…` recipient string.
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, PipelineError> {
    age::x25519::Recipient::from_str(s.trim()).map_err(|e| {
        PipelineError::Key(format!(
            "`{}` is not an age X25519 recipient: {e}",
            s.trim()
        ))
    })
}

/// Reads an identity file (as `age-keygen` writes it). The key itself never
/// appears in an error: only the path does.
pub fn read_identity_file(path: &Path) -> Result<Identities, PipelineError> {
    crate::secret::check_private_file(path).map_err(|e| {
        PipelineError::Key(format!(
            "identity file `{}` is refused: {e}",
            path.display()
        ))
    })?;
    let file = std::fs::File::open(path).map_err(|e| {
        PipelineError::Key(format!(
            "cannot open identity file `{}`: {e}",
            path.display()
        ))
    })?;
    let parsed = age::IdentityFile::from_buffer(std::io::BufReader::new(file)).map_err(|_| {
        PipelineError::Key(format!(
            "identity file `{}` is not an age identity file (expected lines starting with AGE-SECRET-KEY-1)",
            path.display()
        ))
    })?;
    let ids = parsed.into_identities().map_err(|_| {
        PipelineError::Key(format!(
            "identity file `{}` holds an unsupported identity",
            path.display()
        ))
    })?;
    if ids.is_empty() {
        return Err(PipelineError::Key(format!(
            "identity file `{}` holds no identity",
            path.display()
        )));
    }
    Ok(Identities(ids))
}

/// Writes a new X25519 identity to `path` (mode 0600, never overwriting) and returns its recipient.
pub fn keygen(path: &Path) -> Result<String, PipelineError> {
    use std::os::unix::fs::OpenOptionsExt;
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            PipelineError::Key(format!(
                "cannot create identity file `{}`: {e}",
                path.display()
            ))
        })?;
    let secret = {
        use age::secrecy::ExposeSecret;
        id.to_string().expose_secret().to_string()
    };
    let body = format!(
        "# created: {}\n# public key: {recipient}\n{secret}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    f.write_all(body.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| {
            PipelineError::Key(format!(
                "cannot write identity file `{}`: {e}",
                path.display()
            ))
        })?;
    Ok(recipient)
}
