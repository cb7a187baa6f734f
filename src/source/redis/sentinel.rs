//! Sentinel discovery: find the master, then pick the replica to snapshot.
//!
//! A replica is eligible when Sentinel reports it healthy (no `s_down`,
//! `o_down` or `disconnected` flag), its link to the master is `ok`, and it
//! is not hidden from clients (`replica-announced` not `0`). Among eligible
//! ones the most caught-up (largest `slave-repl-offset`, i.e. smallest lag)
//! wins. The master is used only when none is eligible and the policy sets
//! `allow_master_fallback`.

use std::collections::HashMap;
use std::time::Duration;

use super::config::split_addr;
use super::connect::Access;

/// The node chosen for a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `replica` or `master`.
    pub role: &'static str,
    /// The master Sentinel reported, `host:port`.
    pub master: String,
    /// The sentinel that answered.
    pub sentinel: String,
}

/// One replica as `SENTINEL replicas` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Flags (`slave`, `s_down`, `disconnected`…).
    pub flags: Vec<String>,
    /// `master-link-status`.
    pub link_ok: bool,
    /// `slave-repl-offset`.
    pub offset: u64,
    /// `replica-announced`.
    pub announced: bool,
}

impl ReplicaState {
    /// Parses one entry of `SENTINEL replicas`.
    pub fn from_fields(f: &HashMap<String, String>) -> Option<Self> {
        Some(ReplicaState {
            host: f.get("ip")?.clone(),
            port: f.get("port")?.parse().ok()?,
            flags: f
                .get("flags")
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            link_ok: f.get("master-link-status").map(String::as_str) == Some("ok"),
            offset: f
                .get("slave-repl-offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0),
            announced: f.get("replica-announced").map(String::as_str) != Some("0"),
        })
    }

    /// Healthy and in sync.
    pub fn eligible(&self) -> bool {
        self.link_ok
            && self.announced
            && !self
                .flags
                .iter()
                .any(|f| matches!(f.as_str(), "s_down" | "o_down" | "disconnected"))
    }
}

/// The most caught-up eligible replica.
pub fn pick_replica(replicas: &[ReplicaState]) -> Option<&ReplicaState> {
    replicas
        .iter()
        .filter(|r| r.eligible())
        .max_by_key(|r| r.offset)
}

/// Asks the sentinels, in order, for the master and its replicas, and picks the node.
pub async fn choose(
    sentinels: &[String],
    master_name: &str,
    access: &Access,
    allow_master_fallback: bool,
    timeout: Duration,
) -> Result<Chosen, String> {
    let mut errors = Vec::new();
    for s in sentinels {
        match ask(s, master_name, access, timeout).await {
            Ok((master, replicas)) => {
                let master_s = format!("{}:{}", master.0, master.1);
                if let Some(r) = pick_replica(&replicas) {
                    return Ok(Chosen {
                        host: r.host.clone(),
                        port: r.port,
                        role: "replica",
                        master: master_s,
                        sentinel: s.clone(),
                    });
                }
                if allow_master_fallback {
                    tracing::warn!(event = "redis_master_fallback", master = %master_s, "no healthy in-sync replica: snapshotting the master");
                    return Ok(Chosen {
                        host: master.0,
                        port: master.1,
                        role: "master",
                        master: master_s,
                        sentinel: s.clone(),
                    });
                }
                return Err(format!(
                    "sentinel {s}: master `{master_name}` at {master_s} has no healthy, in-sync replica ({} known); fix the replicas or set allow_master_fallback = true",
                    replicas.len()
                ));
            }
            Err(e) => errors.push(format!("{s}: {e}")),
        }
    }
    Err(format!(
        "no sentinel could name master `{master_name}`: {}",
        errors.join("; ")
    ))
}

/// The master the sentinels name now, asking them in order: host, port and
/// the sentinel that answered.
pub async fn master(
    sentinels: &[String],
    master_name: &str,
    access: &Access,
    timeout: Duration,
) -> Result<(String, u16, String), String> {
    let mut errors = Vec::new();
    for s in sentinels {
        match ask(s, master_name, access, timeout).await {
            Ok(((h, p), _)) => return Ok((h, p, s.clone())),
            Err(e) => errors.push(format!("{s}: {e}")),
        }
    }
    Err(format!(
        "no sentinel could name master `{master_name}`: {}",
        errors.join("; ")
    ))
}

type Discovery = ((String, u16), Vec<ReplicaState>);

async fn ask(
    sentinel: &str,
    master_name: &str,
    access: &Access,
    timeout: Duration,
) -> Result<Discovery, String> {
    let (host, port) = split_addr(sentinel)?;
    let client = access.client(&host, port).map_err(|e| e.to_string())?;
    let work = async {
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let addr: Option<Vec<String>> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master_name)
            .query_async(&mut c)
            .await
            .map_err(|e| format!("SENTINEL get-master-addr-by-name: {e}"))?;
        let addr =
            addr.ok_or_else(|| format!("it does not monitor a master named `{master_name}`"))?;
        let [mh, mp] = addr.as_slice() else {
            return Err(format!("unexpected master address {addr:?}"));
        };
        let mp: u16 = mp
            .parse()
            .map_err(|_| format!("unexpected master port `{mp}`"))?;
        let raw: Vec<HashMap<String, String>> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(master_name)
            .query_async(&mut c)
            .await
            .map_err(|e| format!("SENTINEL replicas: {e}"))?;
        let replicas = raw.iter().filter_map(ReplicaState::from_fields).collect();
        Ok(((mh.clone(), mp), replicas))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(port: u16, flags: &str, link: &str, offset: u64) -> ReplicaState {
        let f: HashMap<String, String> = [
            ("ip", "10.0.0.1".to_string()),
            ("port", port.to_string()),
            ("flags", flags.to_string()),
            ("master-link-status", link.to_string()),
            ("slave-repl-offset", offset.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        ReplicaState::from_fields(&f).unwrap()
    }

    #[test]
    fn picks_the_most_caught_up_healthy_replica() {
        let rs = vec![
            r(1, "slave", "ok", 100),
            r(2, "slave,s_down", "ok", 500),
            r(3, "slave", "err", 400),
            r(4, "slave", "ok", 300),
            r(5, "slave,disconnected", "ok", 600),
        ];
        assert_eq!(pick_replica(&rs).unwrap().port, 4);
        assert!(pick_replica(&rs[1..3]).is_none());
    }
}
