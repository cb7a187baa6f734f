//! The MongoDB scratch server: a MongoDB-wire server on a free loopback port for drills, started
//! from `drills.mongo_scratch_argv` (`{port}` and `{dir}` are substituted);
//! killed by [`ScratchMongo::stop`] or, as a last resort, on drop.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::source::error::{EngineError as Error, EngineResult as Result};

/// Longest wait for the server to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running scratch server.
#[derive(Debug)]
pub struct ScratchMongo {
    child: tokio::process::Child,
    /// Port on 127.0.0.1.
    pub port: u16,
}

impl ScratchMongo {
    /// Starts `argv` in `dir` and waits until it accepts connections.
    pub async fn start(argv: &[String], dir: &Path) -> Result<ScratchMongo> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::LocalIo {
                what: "finding a free port for a scratch MongoDB for",
                path: dir.to_path_buf(),
                source: e,
            })?;
        let args: Vec<String> = argv
            .iter()
            .map(|a| {
                a.replace("{port}", &port.to_string())
                    .replace("{dir}", &dir.display().to_string())
            })
            .collect();
        let (prog, rest) = args.split_first().ok_or_else(|| {
            Error::Invalid("drills.mongo_scratch_argv is empty: name the server program".into())
        })?;
        let child = tokio::process::Command::new(prog)
            .args(rest)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::Invalid(format!(
                    "cannot start `{prog}` for a scratch MongoDB: {e}; install it or set drills.mongo_scratch_argv"
                ))
            })?;
        let mut s = ScratchMongo { child, port };
        let start = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                // It holds production data and has no password (see
                // docs/security.md): loopback only, or it is not used.
                if let Some(addr) = exposed_listener(port) {
                    let _ = s.child.kill().await;
                    return Err(Error::Invalid(format!(
                        "the scratch MongoDB `{prog}` listens on {addr} port {port}, not only on loopback: it would serve production data, without a password, to the network; bind it to 127.0.0.1 in drills.mongo_scratch_argv (`--bind_ip 127.0.0.1` for mongod, `--host 127.0.0.1` for nx-27017)"
                    )));
                }
                return Ok(s);
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                return Err(Error::Invalid(format!(
                    "the scratch MongoDB `{prog}` exited with {st} before listening on port {port}"
                )));
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(Error::Invalid(format!(
                    "the scratch MongoDB `{prog}` did not listen on port {port} within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Connection string of the server.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Kills the server and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[async_trait::async_trait]
impl crate::source::Scratch for ScratchMongo {
    fn uri(&self) -> String {
        ScratchMongo::uri(self)
    }

    async fn stop(self: Box<Self>) {
        ScratchMongo::stop(*self).await;
    }

    fn detach(self: Box<Self>) {
        // The server outlives gsdr: its process is not killed on drop.
        std::mem::forget(self);
    }
}

/// A listening TCP socket on `port` bound to anything but loopback (its
/// address), from `/proc/net/tcp` and `/proc/net/tcp6` of gsdr's network
/// namespace; `None` when there is none (or the tables cannot be read:
/// not Linux, where the check is skipped).
fn exposed_listener(port: u16) -> Option<String> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        text.lines().skip(1).find_map(|l| exposed_in(l, port))
    })
}

/// [`exposed_listener`] for one line of a `/proc/net/tcp{,6}` table.
fn exposed_in(line: &str, port: u16) -> Option<String> {
    const LISTEN: &str = "0A";
    let mut cols = line.split_whitespace();
    let local = cols.nth(1)?;
    let state = cols.nth(1)?;
    let (addr, p) = local.split_once(':')?;
    if state != LISTEN || u16::from_str_radix(p, 16).ok()? != port {
        return None;
    }
    // The kernel prints each 32-bit word of the address in host order.
    let bytes: Vec<u8> = (0..addr.len() / 8)
        .filter_map(|w| u32::from_str_radix(&addr[w * 8..w * 8 + 8], 16).ok())
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    let ip: std::net::IpAddr = match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into(),
        16 => {
            let a: [u8; 16] = bytes.try_into().ok()?;
            let v6 = std::net::Ipv6Addr::from(a);
            v6.to_ipv4_mapped().map_or(v6.into(), Into::into)
        }
        _ => return None,
    };
    (!ip.is_loopback()).then(|| ip.to_string())
}

/// Documents in `db.collection` of the server at `uri`.
pub async fn count(uri: &str, namespace: &str) -> Result<u64> {
    let (db, coll) = namespace.split_once('.').ok_or_else(|| {
        Error::Invalid(format!(
            "`{namespace}` is not a namespace like db.collection"
        ))
    })?;
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .map_err(|e| Error::Invalid(format!("restored MongoDB: cannot connect: {e}")))?;
    let n = client
        .database(db)
        .collection::<mongodb::bson::Document>(coll)
        .count_documents(mongodb::bson::doc! {})
        .await
        .map_err(|e| Error::Invalid(format!("restored MongoDB: counting `{namespace}`: {e}")))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::exposed_in;

    #[test]
    fn only_a_listener_on_the_port_bound_beyond_loopback_is_exposed() {
        // Lines as /proc/net/tcp{,6} print them on a little-endian machine.
        let l4 = |addr: &str, st: &str| {
            format!("   0: {addr}:6989 00000000:0000 {st} 00000000:00000000 00:00000000 00000000     0        0 1 1")
        };
        assert_eq!(exposed_in(&l4("0100007F", "0A"), 0x6989), None);
        assert_eq!(exposed_in(&l4("00000000", "0A"), 0x6989).as_deref(), Some("0.0.0.0"));
        assert_eq!(exposed_in(&l4("0A00A8C0", "0A"), 0x6989).as_deref(), Some("192.168.0.10"));
        // Another port, or a connection rather than a listener.
        assert_eq!(exposed_in(&l4("00000000", "0A"), 27018), None);
        assert_eq!(exposed_in(&l4("00000000", "01"), 0x6989), None);
        let l6 = |addr: &str| format!("   0: {addr}:6989 00000000000000000000000000000000:0000 0A 0 0 0 0 0 1 1");
        assert_eq!(exposed_in(&l6("00000000000000000000000001000000"), 0x6989), None);
        assert_eq!(exposed_in(&l6("0000000000000000FFFF00000100007F"), 0x6989), None);
        assert_eq!(
            exposed_in(&l6("00000000000000000000000000000000"), 0x6989).as_deref(),
            Some("::")
        );
    }
}
