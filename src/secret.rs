//! Secrets: policy files hold references (`{ env = "NAME" }`, `{ file = "/path" }`), never values.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A reference to a secret: `{ env = "NAME" }` or `{ file = "/path" }`. Never the value itself.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// Read from this environment variable.
    Env(String),
    /// Read from this file (a mounted Kubernetes secret); trailing newline trimmed.
    File(PathBuf),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({self})")
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "environment variable {n}"),
            SecretRef::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// A secret value; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Wraps a value (tests, values read by code).
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl SecretRef {
    /// Reads the secret. Errors name the reference, never the value.
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Env(n) => std::env::var(n)
                .map(Secret)
                .map_err(|_| format!("environment variable {n} is not set")),
            SecretRef::File(p) => std::fs::read_to_string(p)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("cannot read secret file {}: {e}", p.display())),
        }
        .inspect(|s| remember(s.expose()))
    }
}

/// What replaces a known secret value in text gsdr passes on ([`redact`]).
pub const REDACTED: &str = "<redacted>";

/// Values shorter than this are not redacted: they would also hide ordinary
/// words and numbers (and a secret this short is no secret).
const MIN_REDACTED_LEN: usize = 4;

/// Every secret value this process has read (through [`SecretRef::read`]),
/// and the password of each that is a URI: what [`redact`] removes.
static KNOWN: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Adds `value` (and, for a URI, its password) to the values [`redact`] removes.
pub fn remember(value: &str) {
    let mut add = vec![value.to_string()];
    add.extend(uri_password(value));
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    for v in add {
        if v.len() >= MIN_REDACTED_LEN && !known.contains(&v) {
            known.push(v);
        }
    }
    // Longest first: a URI goes before the password inside it.
    known.sort_by_key(|v| std::cmp::Reverse(v.len()));
}

/// Reads every reference (failures ignored: the job that needs one reports
/// it) so that [`redact`] knows each value before any output is written.
pub fn remember_all<'a>(refs: impl IntoIterator<Item = &'a SecretRef>) {
    for r in refs {
        let _ = r.read();
    }
}

/// `text` with every known secret value replaced by [`REDACTED`]: the one
/// filter for text from outside gsdr (a command's stderr) before it goes
/// into an error, a log line, a job record or a webhook.
pub fn redact(text: &str) -> String {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for v in known.iter() {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), REDACTED);
        }
    }
    out
}

/// Every secret reference in policy text: each table that is exactly
/// `{ env = "…" }` or `{ file = "…" }`, wherever it sits.
pub fn refs_in_toml(text: &str) -> Vec<SecretRef> {
    fn walk(v: &toml::Value, out: &mut Vec<SecretRef>) {
        match v {
            toml::Value::Table(t) => {
                if t.len() == 1 {
                    match t.iter().next() {
                        Some((k, toml::Value::String(s))) if k == "env" => {
                            out.push(SecretRef::Env(s.clone()))
                        }
                        Some((k, toml::Value::String(s))) if k == "file" => {
                            out.push(SecretRef::File(s.into()))
                        }
                        _ => {}
                    }
                }
                t.values().for_each(|v| walk(v, out));
            }
            toml::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(t) = text.parse::<toml::Table>() {
        walk(&toml::Value::Table(t), &mut out);
    }
    out
}

/// Refuses a private key file that others may read or write, or that a
/// group may write or read, with the `chmod` to run (a key the whole host can
/// read is no secret). One exception: read access for the process's own
/// group, which is how Kubernetes mounts a secret under `fsGroup` (`0440`,
/// group = the pod's group, whatever `defaultMode` says).
pub fn check_private_file(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    let own_group_reads = mode & 0o070 == 0o040 && meta.gid() == nix::unistd::getegid().as_raw();
    if mode & 0o007 != 0 || (mode & 0o070 != 0 && !own_group_reads) {
        return Err(format!(
            "mode {mode:04o} lets group or others read it: run `chmod 600 {}`",
            path.display()
        ));
    }
    Ok(())
}

/// The `user:password@` part of a URI (`scheme://userinfo@host…`), if it has one.
fn userinfo(uri: &str) -> Option<(usize, usize)> {
    let s = uri.find("://")? + 3;
    // The authority ends at the first `/`, `?` or `#` after the scheme; a
    // password may hold `@`, so the last `@` before that end separates it.
    let end = uri[s..].find(['/', '?', '#']).map_or(uri.len(), |i| s + i);
    let at = uri[s..end].rfind('@')? + s;
    Some((s, at))
}

/// The password in a URI's userinfo (`redis://:pw@host`, `mongodb://u:pw@h`),
/// percent-decoded, if any.
pub fn uri_password(uri: &str) -> Option<String> {
    let (s, at) = userinfo(uri)?;
    let raw = uri[s..at].split_once(':').map(|(_, p)| p)?;
    (!raw.is_empty()).then(|| percent_decode(raw))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let (h, l) = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        );
        match (b[i], h, l) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URI without its password (`mongodb://u:pw@h` → `mongodb://u@h`,
/// `redis://:pw@h` → `redis://h`): what may be written to disk or shown.
pub fn strip_uri_password(uri: &str) -> String {
    let Some((s, at)) = userinfo(uri) else {
        return uri.to_string();
    };
    match uri[s..at].split_once(':') {
        None => uri.to_string(),
        Some(("", _)) => format!("{}{}", &uri[..s], &uri[at + 1..]),
        Some((user, _)) => format!("{}{user}{}", &uri[..s], &uri[at..]),
    }
}

/// `uri` with `password` in its userinfo, keeping its user; a URI that
/// already holds a password is returned as it is. The password is
/// percent-encoded where a URI needs it.
pub fn uri_with_password(uri: &str, password: &Secret) -> String {
    if uri_password(uri).is_some() {
        return uri.to_string();
    }
    let Some(s) = uri.find("://").map(|i| i + 3) else {
        return uri.to_string();
    };
    let pw = percent_encode_userinfo(password.expose());
    match userinfo(uri) {
        Some((_, at)) => {
            let user = uri[s..at].trim_end_matches(':');
            format!("{}{user}:{pw}{}", &uri[..s], &uri[at..])
        }
        None => format!("{}:{pw}@{}", &uri[..s], &uri[s..]),
    }
}

fn percent_encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out += &format!("%{b:02X}"),
        }
    }
    out
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, then a
/// rename), readable and writable by the owner only (mode 0600) from the
/// first byte: for gsdr's local state files.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // A temporary file left by a crash keeps its old mode: set it again.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The error of a secret written as a plain string in the policy.
pub(crate) const INLINE_SECRET: &str =
    "secrets are referenced, never written in the policy: use { env = \"NAME\" } or { file = \"/path\" }";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret reference: { env = \"NAME\" } or { file = \"/path\" }")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut out = None;
                while let Some(k) = map.next_key::<String>()? {
                    if out.is_some() {
                        return Err(de::Error::custom(
                            "a secret reference takes exactly one of `env` or `file`",
                        ));
                    }
                    out = Some(match k.as_str() {
                        "env" => SecretRef::Env(map.next_value()?),
                        "file" => SecretRef::File(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, &["env", "file"])),
                    });
                }
                out.ok_or_else(|| de::Error::custom("a secret reference needs `env` or `file`"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }

    #[test]
    fn uri_passwords_are_found_stripped_and_filled() {
        assert_eq!(uri_password("redis://:pw@h:1/0").as_deref(), Some("pw"));
        assert_eq!(
            uri_password("mongodb://u:p@ss@h/?x=1").as_deref(),
            Some("p@ss")
        );
        assert_eq!(uri_password("mongodb://u:a%2Fb@h/").as_deref(), Some("a/b"));
        assert_eq!(uri_password("mongodb://u@h/"), None);
        assert_eq!(uri_password("redis://h:1/0?a=b@c"), None);
        assert_eq!(strip_uri_password("redis://:pw@h:1/0"), "redis://h:1/0");
        assert_eq!(
            strip_uri_password("mongodb://u:p@ss@h/x"),
            "mongodb://u@h/x"
        );
        assert_eq!(strip_uri_password("/data/dir"), "/data/dir");
        let pw = Secret::new("a b/@:");
        assert_eq!(
            uri_with_password("mongodb://u@h/x", &pw),
            "mongodb://u:a%20b%2F%40%3A@h/x"
        );
        assert_eq!(
            uri_with_password("redis://h:1/0", &pw),
            "redis://:a%20b%2F%40%3A@h:1/0"
        );
        assert_eq!(uri_with_password("redis://:old@h", &pw), "redis://:old@h");
    }

    #[test]
    fn known_secrets_are_redacted_uris_and_their_passwords() {
        let refs = refs_in_toml(
            "[a]\npassword = { env = \"GSDR_T_PW\" }\n[[b]]\nuri = { file = \"/nonexistent\" }\nx = { env = 1 }\n",
        );
        assert_eq!(
            refs,
            vec![
                SecretRef::Env("GSDR_T_PW".into()),
                SecretRef::File("/nonexistent".into())
            ]
        );
        std::env::set_var("GSDR_T_PW", "mongodb://u:zq-pw-77@h/");
        remember_all(&refs);
        remember("ab");
        assert_eq!(
            redact("uri mongodb://u:zq-pw-77@h/ then zq-pw-77 and ab"),
            "uri <redacted> then <redacted> and ab"
        );
    }

    #[test]
    fn private_files_are_written_0600_even_over_a_stale_temporary() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        std::fs::write(p.with_extension("tmp"), "old").unwrap();
        std::fs::set_permissions(
            p.with_extension("tmp"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        write_private(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
