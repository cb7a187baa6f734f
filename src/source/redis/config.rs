//! Settings of a `redis` source (`[sources.NAME.redis]` in a policy).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::SecretRef;
use crate::units::HumanDuration;

/// Settings of a `redis` source: either one node (`addr`) or a Sentinel
/// deployment (`sentinels` + `master_name`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// One node to snapshot, `host:port` (a replica preferably). Excludes `sentinels`.
    pub addr: Option<String>,
    /// Sentinel addresses, `host:port`; the first that answers is used. Needs `master_name`.
    pub sentinels: Vec<String>,
    /// Name of the monitored master (`sentinel monitor <name> …`).
    pub master_name: Option<String>,
    /// ACL user for the data nodes; unset = the `default` user.
    pub username: Option<String>,
    /// Password for the data nodes (`AUTH`), a secret reference.
    pub password: Option<SecretRef>,
    /// ACL user for the sentinels, if they require one.
    pub sentinel_username: Option<String>,
    /// Password for the sentinels (`sentinel requirepass`), a secret reference.
    pub sentinel_password: Option<SecretRef>,
    /// With Sentinel: snapshot the master when no healthy, in-sync replica exists.
    /// Off by default: a fork on the master costs memory and latency.
    pub allow_master_fallback: bool,
    /// Connect to the nodes and the sentinels with TLS (their `tls-port`).
    pub tls: bool,
    /// PEM file of the CA that signed the servers' certificates; unset = the
    /// system's trust store.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that authenticate clients
    /// (`tls-auth-clients yes`, Redis's default). Needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (a file only readable by gsdr).
    pub tls_key_file: Option<PathBuf>,
    /// Timeout of connecting and of each handshake reply.
    pub connect_timeout: HumanDuration,
    /// Longest silence tolerated while the node prepares or streams the
    /// snapshot (it sends keep-alives while forking and saving).
    pub read_timeout: HumanDuration,
    /// `redis-server` binary used for restores into a server and deep verification.
    pub redis_server: String,
    /// Continuous capture: gsdr stays attached as a replica after the full
    /// sync and stores the replication stream in segments (README,
    /// "Continuous capture"); restores then reach any time the log covers.
    pub continuous: bool,
    /// Longest time a capture segment stays open before it is stored.
    pub slice: HumanDuration,
    /// A segment is stored as soon as it holds this many bytes of commands
    /// (also the bound of the capture's slice buffer, plus one command).
    pub slice_max_bytes: u64,
}

/// Default `redis-server` binary (looked up on `PATH`).
pub fn default_redis_server() -> String {
    "redis-server".into()
}

impl Default for RedisConfig {
    /// No node, no credentials, no TLS; the timeouts and capture bounds a
    /// policy gets when it leaves them out.
    fn default() -> Self {
        RedisConfig {
            addr: None,
            sentinels: Vec::new(),
            master_name: None,
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            allow_master_fallback: false,
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            connect_timeout: HumanDuration(Duration::from_secs(10)),
            read_timeout: HumanDuration(Duration::from_secs(120)),
            redis_server: default_redis_server(),
            continuous: false,
            slice: HumanDuration(Duration::from_secs(10)),
            slice_max_bytes: 8 << 20,
        }
    }
}

impl RedisConfig {
    /// The stream is never silent by design.
    pub fn silent_wait(&self) -> Option<crate::source::SilentWait> {
        None
    }

    /// A config for one node at `addr` with default timeouts and no credentials.
    pub fn node(addr: impl Into<String>) -> Self {
        RedisConfig {
            addr: Some(addr.into()),
            ..Self::default()
        }
    }

    /// Checks the combination of fields; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.addr, self.sentinels.is_empty(), &self.master_name) {
            (Some(_), true, None) => {}
            (None, false, Some(_)) => {}
            (Some(_), false, _) => {
                return Err(
                    "set either `addr` (one node) or `sentinels` + `master_name`, not both".into(),
                )
            }
            (None, false, None) => {
                return Err(
                    "`sentinels` needs `master_name` (the name in `sentinel monitor`)".into(),
                )
            }
            (_, true, Some(_)) => {
                return Err("`master_name` needs `sentinels` (their `host:port` addresses)".into())
            }
            (None, true, None) => {
                return Err("set `addr` (one node) or `sentinels` + `master_name`".into())
            }
        }
        if self.slice.0 < Duration::from_millis(100) || self.slice.0 > Duration::from_secs(3600) {
            return Err(format!(
                "`slice` is {}: set it between 100ms and 1h (10s by default)",
                self.slice
            ));
        }
        if !(4096..=(256 << 20)).contains(&self.slice_max_bytes) {
            return Err(format!(
                "`slice_max_bytes` is {}: set it between 4096 and 268435456 (8 MiB by default)",
                self.slice_max_bytes
            ));
        }
        for a in self.addr.iter().chain(self.sentinels.iter()) {
            split_addr(a)?;
        }
        let tls_files = [
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
        ];
        if !self.tls {
            if let Some((field, _)) = tls_files.iter().find(|(_, v)| v.is_some()) {
                return Err(format!(
                    "`{field}` is set but `tls` is not: set `tls = true`"
                ));
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(
                "`tls_cert_file` and `tls_key_file` go together: set both or neither".into(),
            );
        }
        Ok(())
    }
}

/// Splits `host:port` (IPv6 as `[::1]:6379`).
pub fn split_addr(a: &str) -> Result<(String, u16), String> {
    let (host, port) = a
        .rsplit_once(':')
        .ok_or_else(|| format!("`{a}` is not `host:port`"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{a}`: `{port}` is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{a}` has no host"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RedisConfig, String> {
        let c: RedisConfig = toml::from_str(s).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn node_and_sentinel_forms() {
        let c = parse("addr = \"10.0.0.1:6379\"\npassword = { env = \"REDIS_PW\" }").unwrap();
        assert_eq!(c.addr.as_deref(), Some("10.0.0.1:6379"));
        assert_eq!(c.read_timeout.0, Duration::from_secs(120));
        let c = parse("sentinels = [\"s1:26379\", \"s2:26379\"]\nmaster_name = \"mymaster\"\nconnect_timeout = \"3s\"").unwrap();
        assert_eq!(c.sentinels.len(), 2);
        assert_eq!(c.connect_timeout.0, Duration::from_secs(3));
    }

    #[test]
    fn bad_combinations_are_refused() {
        assert!(parse("").unwrap_err().contains("set `addr`"));
        assert!(parse("sentinels = [\"s:1\"]")
            .unwrap_err()
            .contains("master_name"));
        assert!(parse("addr = \"a:1\"\nsentinels = [\"s:1\"]\nmaster_name = \"m\"").is_err());
        assert!(parse("addr = \"nohost\"")
            .unwrap_err()
            .contains("host:port"));
        assert!(parse("addr = \"a:1\"\ntls_ca_file = \"/ca.pem\"")
            .unwrap_err()
            .contains("set `tls = true`"));
        assert!(
            parse("addr = \"a:1\"\ntls = true\ntls_cert_file = \"/c.pem\"")
                .unwrap_err()
                .contains("go together")
        );
        assert!(parse("addr = \"a:1\"\ntls = true\ntls_ca_file = \"/ca.pem\"").is_ok());
        assert!(parse("addr = \"a:1\"\npassword = \"plain\"")
            .unwrap_err()
            .contains("referenced"));
        assert!(parse("addr = \"a:1\"\nbogus = 1")
            .unwrap_err()
            .contains("unknown field"));
    }

    #[test]
    fn ipv6_addr() {
        assert_eq!(split_addr("[::1]:6380").unwrap(), ("::1".to_string(), 6380));
    }
}
