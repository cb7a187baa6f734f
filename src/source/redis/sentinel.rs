//! Sentinel discovery: find the master, then pick the replica to snapshot.
//!
//! Every configured sentinel is asked at once; the master is taken only
//! when more than half of the *configured* sentinels name the same address
//! (a partitioned or stale sentinel alone never decides), and the chosen
//! node's `INFO replication` must confirm its role (a replica's link to its
//! master up) before anything is read from it.
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

/// Asks every sentinel for the master and its replicas, takes the master a
/// majority of them agree on ([`agree`]), and picks the node.
pub async fn choose(
    sentinels: &[String],
    master_name: &str,
    access: &Access,
    allow_master_fallback: bool,
    timeout: Duration,
) -> Result<Chosen, String> {
    let a = agree(sentinels, master_name, access, timeout).await?;
    let master_s = format!("{}:{}", a.master.0, a.master.1);
    if let Some(r) = pick_replica(&a.replicas) {
        return Ok(Chosen {
            host: r.host.clone(),
            port: r.port,
            role: "replica",
            master: master_s,
            sentinel: a.sentinels.join(","),
        });
    }
    if allow_master_fallback {
        tracing::warn!(event = "redis_master_fallback", master = %master_s, "no healthy in-sync replica: snapshotting the master");
        return Ok(Chosen {
            host: a.master.0,
            port: a.master.1,
            role: "master",
            master: master_s,
            sentinel: a.sentinels.join(","),
        });
    }
    Err(format!(
        "sentinels {}: master `{master_name}` at {master_s} has no healthy, in-sync replica ({} known); fix the replicas or set allow_master_fallback = true",
        a.sentinels.join(", "),
        a.replicas.len()
    ))
}

/// The master a majority of the sentinels name now: host, port and the
/// sentinels that agree (comma-separated).
pub async fn master(
    sentinels: &[String],
    master_name: &str,
    access: &Access,
    timeout: Duration,
) -> Result<(String, u16, String), String> {
    let a = agree(sentinels, master_name, access, timeout).await?;
    Ok((a.master.0, a.master.1, a.sentinels.join(",")))
}

/// What a majority of the configured sentinels agree on.
#[derive(Debug)]
struct Agreement {
    /// The master they name.
    master: (String, u16),
    /// Its replicas, as the first agreeing sentinel describes them.
    replicas: Vec<ReplicaState>,
    /// The agreeing sentinels.
    sentinels: Vec<String>,
}

/// Asks every configured sentinel at once and takes the master only when
/// more than half of them (of those configured, not of those answering)
/// name the same address: a partitioned or stale sentinel alone never
/// points gsdr at an old master.
async fn agree(
    sentinels: &[String],
    master_name: &str,
    access: &Access,
    timeout: Duration,
) -> Result<Agreement, String> {
    let answers =
        futures::future::join_all(sentinels.iter().map(|s| ask(s, master_name, access, timeout)))
            .await;
    let (need, said) = majority(sentinels, &answers);
    let mut votes: Vec<((String, u16), Vec<usize>)> = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        if let Ok((m, _)) = a {
            match votes.iter_mut().find(|(v, _)| v == m) {
                Some((_, who)) => who.push(i),
                None => votes.push((m.clone(), vec![i])),
            }
        }
    }
    let Some((m, who)) = votes.into_iter().find(|(_, who)| who.len() >= need) else {
        return Err(format!(
            "no majority of the {} configured sentinels ({need} needed) names the same master `{master_name}`: {said}; gsdr trusts no minority (a partitioned sentinel may name an old master): bring the sentinels back or fix `sentinels`",
            sentinels.len()
        ));
    };
    let replicas = match answers.into_iter().nth(who[0]) {
        Some(Ok((_, r))) => r,
        _ => Vec::new(),
    };
    Ok(Agreement {
        master: m,
        replicas,
        sentinels: who.iter().map(|&i| sentinels[i].clone()).collect(),
    })
}

/// How many sentinels must agree, and what each said (for the error).
fn majority(sentinels: &[String], answers: &[Result<Discovery, String>]) -> (usize, String) {
    let said = sentinels
        .iter()
        .zip(answers)
        .map(|(s, a)| match a {
            Ok(((h, p), _)) => format!("{s} names {h}:{p}"),
            Err(e) => format!("{s}: {e}"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    (sentinels.len() / 2 + 1, said)
}

/// Checks the chosen node is what the sentinels say before anything is
/// read from it: `INFO replication` reports its role, and a replica's link
/// to its master is up (a replica cut off from its master holds stale data).
pub async fn confirm(chosen: &Chosen, access: &Access, timeout: Duration) -> Result<(), String> {
    let node = format!("{}:{}", chosen.host, chosen.port);
    let client = access
        .client(&chosen.host, chosen.port)
        .map_err(|e| e.to_string())?;
    let work = async {
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("cannot connect to {node}: {e}"))?;
        redis::cmd("INFO")
            .arg("replication")
            .query_async::<String>(&mut c)
            .await
            .map_err(|e| format!("{node}: INFO replication: {e}"))
    };
    let text = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{node}: no answer within {timeout:?}"))??;
    role_matches(chosen, &super::replication::parse_info(&text))
}

/// Whether `INFO replication` fields agree with what the sentinels chose.
fn role_matches(chosen: &Chosen, info: &[(String, String)]) -> Result<(), String> {
    let get = |k: &str| {
        info.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let node = format!("{}:{}", chosen.host, chosen.port);
    let role = get("role").unwrap_or("unknown");
    match (chosen.role, role) {
        ("master", "master") => Ok(()),
        ("replica", "slave") => match get("master_link_status") {
            Some("up") => Ok(()),
            other => Err(format!(
                "{node} is a replica whose link to its master is {}: its data may be stale; not snapshotted (the sentinels may not have noticed yet: retry, or check the replica)",
                other.unwrap_or("unknown")
            )),
        },
        (want, got) => Err(format!(
            "the sentinels chose {node} as {want}, but it reports role:{got} (a failover under way, or a stale sentinel); not snapshotted: retry once the sentinels agree"
        )),
    }
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

    fn chosen(role: &'static str) -> Chosen {
        Chosen {
            host: "10.0.0.2".into(),
            port: 6379,
            role,
            master: "10.0.0.1:6379".into(),
            sentinel: "s1".into(),
        }
    }

    fn info(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_chosen_node_must_report_the_role_and_a_live_link() {
        assert!(role_matches(&chosen("master"), &info(&[("role", "master")])).is_ok());
        assert!(role_matches(
            &chosen("replica"),
            &info(&[("role", "slave"), ("master_link_status", "up")])
        )
        .is_ok());
        let e = role_matches(
            &chosen("replica"),
            &info(&[("role", "slave"), ("master_link_status", "down")]),
        )
        .unwrap_err();
        assert!(e.contains("link to its master is down"), "{e}");
        let e = role_matches(&chosen("replica"), &info(&[("role", "master")])).unwrap_err();
        assert!(e.contains("reports role:master"), "{e}");
        let e = role_matches(&chosen("master"), &info(&[("role", "slave")])).unwrap_err();
        assert!(e.contains("reports role:slave"), "{e}");
    }

    #[test]
    fn a_majority_of_the_configured_sentinels_is_needed() {
        let s: Vec<String> = ["a", "b", "c"].map(String::from).into();
        let ok = |p: u16| Ok((("10.0.0.1".to_string(), p), Vec::new()));
        let (need, said) = majority(&s, &[ok(1), Err("refused".into()), ok(2)]);
        assert_eq!(need, 2);
        assert_eq!(said, "a names 10.0.0.1:1; b: refused; c names 10.0.0.1:2");
        assert_eq!(majority(&s[..2], &[ok(1), ok(1)]).0, 2);
        assert_eq!(majority(&s[..1], &[ok(1)]).0, 1);
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
