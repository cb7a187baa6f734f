//! The replication handshake, written by hand, and the RDB stream it yields.
//!
//! As `redis-cli --rdb` does: `AUTH` (if configured), `REPLCONF capa eof`,
//! `REPLCONF rdb-only 1` — reading each `+OK` before the next command — then a
//! full sync. gsdr sends `PSYNC ? -1` rather than the legacy `SYNC`: the
//! transfer is the same, but the node also answers `+FULLRESYNC <replid>
//! <offset>`, the exact replication point the snapshot corresponds to.
//!
//! While the node forks and saves it sends bare `\n` keep-alives, skipped
//! here. The payload then comes either as `$<len>\r\n` + `len` bytes (disk
//! sync) or, diskless, as `$EOF:<40-byte mark>\r\n` + payload + the same
//! mark. The mark must not reach the backup, so [`RdbStream`] holds the last
//! 40 bytes back until it knows whether they are the mark.
//!
//! Memory: one read buffer ([`READ_BUFFER_BYTES`]) + 40 bytes of hold-back +
//! the validator's 9 bytes, whatever the snapshot size. Nothing touches disk.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::connect::{Access, NodeIo};
use super::rdb::{RdbSummary, RdbValidator};

/// Read buffer of the replication socket.
pub const READ_BUFFER_BYTES: usize = 256 << 10;
/// Length of the diskless end-of-payload mark.
pub const EOF_MARK_LEN: usize = 40;
/// Longest reply line accepted during the handshake.
const MAX_LINE: u64 = 64 << 10;
/// Largest `INFO` reply accepted.
const MAX_INFO: usize = 4 << 20;

/// What went wrong talking to a node; `mod.rs` turns it into a `SourceError`.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// TCP-level failure.
    #[error("{what}: {source}")]
    Io {
        /// What gsdr was doing.
        what: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The node refused the credentials or requires some.
    #[error("{0}")]
    Auth(String),
    /// The node answered something the protocol does not allow here.
    #[error("{0}")]
    Protocol(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ReplError {
    let what = what.into();
    move |source| ReplError::Io { what, source }
}

/// How the payload is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// `$<len>`: a disk-based sync of this many bytes.
    Length(u64),
    /// `$EOF:<mark>`: a diskless sync ended by the mark.
    EofMark([u8; EOF_MARK_LEN]),
}

/// What the node told us before the payload.
#[derive(Debug, Clone)]
pub struct SyncInfo {
    /// The `INFO` reply's fields (`redis_version`, `role`, `db0`, …).
    pub info: Vec<(String, String)>,
    /// Replication id from `+FULLRESYNC`.
    pub replid: Option<String>,
    /// Replication offset from `+FULLRESYNC`.
    pub offset: Option<u64>,
    /// When the node accepted the full sync (its fork follows at once).
    pub synced_at: chrono::DateTime<chrono::Utc>,
    /// How the payload is delimited.
    pub framing: Framing,
}

impl SyncInfo {
    /// One `INFO` field.
    pub fn info_field(&self, key: &str) -> Option<&str> {
        self.info
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Timeouts of a sync.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting and each handshake reply.
    pub connect: Duration,
    /// Longest silence while the node prepares or streams the payload.
    pub read: Duration,
}

/// The replication connection: the socket and what was read ahead of the caller.
pub type Conn = BufReader<Box<dyn NodeIo>>;

/// What the handshake asks the node for.
#[derive(Debug, Clone)]
pub enum SyncMode {
    /// A snapshot only (`REPLCONF rdb-only 1`, Redis 7+): the backups.
    RdbOnly,
    /// A replica's link that stays open after the snapshot (continuous
    /// capture): `REPLCONF listening-port 0` (gsdr serves no replicas; a
    /// sentinel cannot reach port 0, so it never promotes gsdr),
    /// `capa eof capa psync2`, then `PSYNC ? -1` or, to continue a stream,
    /// `PSYNC <replid> <offset + 1>` with the offset of the last byte kept.
    Replica {
        /// The stream to continue: replication id and offset of the last byte stored.
        resume: Option<(String, u64)>,
    },
}

/// The node's answer to `PSYNC`.
#[derive(Debug, Clone)]
pub enum PsyncReply {
    /// `+FULLRESYNC`: a snapshot follows, then the command stream.
    Full(SyncInfo),
    /// `+CONTINUE [<new replid>]`: the command stream continues where asked.
    Continue {
        /// The node's `INFO` before the sync.
        info: Vec<(String, String)>,
        /// The node's replication id when it changed (a promoted replica).
        new_replid: Option<String>,
    },
}

/// Connects to `host:port`, authenticates and asks for a snapshot. Returns
/// the payload stream and a receiver that yields the validation result once
/// the stream reached its end (or failed).
pub async fn start_sync(
    host: &str,
    port: u16,
    creds: &Access,
    t: Timeouts,
) -> Result<
    (
        RdbStream,
        SyncInfo,
        oneshot::Receiver<Result<RdbSummary, String>>,
    ),
    ReplError,
> {
    let (conn, reply) = handshake(host, port, creds, t, &SyncMode::RdbOnly).await?;
    let PsyncReply::Full(sync) = reply else {
        return Err(ReplError::Protocol(
            "the node answered `PSYNC ? -1` with `+CONTINUE`".into(),
        ));
    };
    let (stream, rx) = rdb_stream(conn, &sync.framing, t.read);
    Ok((stream, sync, rx))
}

/// The RDB payload of a full sync read from `conn`, and the receiver of its
/// validation result.
pub fn rdb_stream(
    conn: Conn,
    framing: &Framing,
    read_timeout: Duration,
) -> (RdbStream, oneshot::Receiver<Result<RdbSummary, String>>) {
    let (tx, rx) = oneshot::channel();
    let stream = RdbStream {
        inner: conn,
        state: match framing {
            Framing::Length(n) => State::Length { remaining: *n },
            Framing::EofMark(m) => State::Mark {
                mark: *m,
                hold: Vec::with_capacity(2 * EOF_MARK_LEN),
            },
        },
        validator: Some(RdbValidator::new()),
        outcome: Some(tx),
        read_timeout,
        deadline: Box::pin(tokio::time::sleep(read_timeout)),
        finished: false,
        clean_end: false,
        give_back: None,
    };
    (stream, rx)
}

/// Connects to `host:port`, authenticates, runs the replication handshake
/// of `mode` and reads the node's answer to `PSYNC`; after a `Full` answer
/// the connection is positioned at the start of the payload, after
/// `Continue` at the start of the command stream.
pub async fn handshake(
    host: &str,
    port: u16,
    creds: &Access,
    t: Timeouts,
    mode: &SyncMode,
) -> Result<(Conn, PsyncReply), ReplError> {
    let io = creds
        .stream(host, port, t.connect)
        .await
        .map_err(io_err(format!("connecting to {host}:{port}")))?;
    let mut conn = BufReader::with_capacity(READ_BUFFER_BYTES, io);

    if let Some(pw) = &creds.password {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(u) = &creds.username {
            args.push(u.as_bytes());
        }
        args.push(pw.expose().as_bytes());
        send(&mut conn, &args).await?;
        let reply = read_line(&mut conn, t.connect, "AUTH").await?;
        if reply != "+OK" {
            return Err(ReplError::Auth(format!(
                "the node refused the credentials of user `{}`: {}; check username and password in the policy",
                creds.username.as_deref().unwrap_or("default"),
                reply.trim_start_matches('-')
            )));
        }
    }

    send(&mut conn, &[b"INFO"]).await?;
    let info = read_info(&mut conn, t.connect).await?;

    let confs: Vec<(Vec<&[u8]>, bool)> = match mode {
        SyncMode::RdbOnly => vec![
            (vec![&b"REPLCONF"[..], b"capa", b"eof"], false),
            (vec![&b"REPLCONF"[..], b"rdb-only", b"1"], true),
        ],
        SyncMode::Replica { .. } => vec![
            (vec![&b"REPLCONF"[..], b"listening-port", b"0"], false),
            (
                vec![&b"REPLCONF"[..], b"capa", b"eof", b"capa", b"psync2"],
                false,
            ),
        ],
    };
    for (args, optional) in &confs {
        send(&mut conn, args).await?;
        let what = String::from_utf8_lossy(&args[..2].join(&b' ')).into_owned();
        let reply = read_line(&mut conn, t.connect, &what).await?;
        if reply != "+OK" {
            if *optional && reply.contains("rdb-only") {
                tracing::warn!(event = "redis_rdb_only_unsupported", reply = %reply, "the node predates Redis 7.0; it will keep streaming after the snapshot, which gsdr ignores");
                continue;
            }
            return Err(ReplError::Protocol(format!(
                "`{what}` was answered `{reply}`"
            )));
        }
    }

    match mode {
        SyncMode::Replica {
            resume: Some((replid, offset)),
        } => {
            let next = (offset + 1).to_string();
            send(&mut conn, &[b"PSYNC", replid.as_bytes(), next.as_bytes()]).await?;
        }
        _ => send(&mut conn, &[b"PSYNC", b"?", b"-1"]).await?,
    }
    let mut replid = None;
    let mut offset = None;
    let mut synced_at = chrono::Utc::now();
    let framing = loop {
        let line = read_line(&mut conn, t.read, "PSYNC").await?;
        if line.is_empty() {
            continue; // keep-alive while the node forks and saves
        }
        if let Some(rest) = line.strip_prefix("+FULLRESYNC ") {
            let mut it = rest.split_whitespace();
            replid = it.next().map(str::to_string);
            offset = it.next().and_then(|o| o.parse().ok());
            synced_at = chrono::Utc::now();
            continue;
        }
        if replid.is_none() {
            if let Some(rest) = line.strip_prefix("+CONTINUE") {
                let new_replid = rest.split_whitespace().next().map(str::to_string);
                return Ok((conn, PsyncReply::Continue { info, new_replid }));
            }
        }
        if let Some(mark) = line.strip_prefix("$EOF:") {
            let mark: [u8; EOF_MARK_LEN] = mark.as_bytes().try_into().map_err(|_| {
                ReplError::Protocol(format!(
                    "the end-of-payload mark is {} bytes, not {EOF_MARK_LEN}",
                    mark.len()
                ))
            })?;
            break Framing::EofMark(mark);
        }
        if let Some(len) = line.strip_prefix('$') {
            let len = len
                .parse()
                .map_err(|_| ReplError::Protocol(format!("bad payload length line `{line}`")))?;
            break Framing::Length(len);
        }
        if line.starts_with("-NOAUTH") || line.starts_with("-NOPERM") {
            return Err(ReplError::Auth(auth_hint(&line)));
        }
        return Err(ReplError::Protocol(format!(
            "the full sync was answered `{line}`"
        )));
    };
    Ok((
        conn,
        PsyncReply::Full(SyncInfo {
            info,
            replid,
            offset,
            synced_at,
            framing,
        }),
    ))
}

/// Sends one command (`REPLCONF ACK <offset>` on a capture's link).
pub async fn send_command(conn: &mut Conn, args: &[&[u8]]) -> Result<(), ReplError> {
    send(conn, args).await
}

fn auth_hint(reply: &str) -> String {
    format!(
        "the node requires authentication or more rights ({}): set `password` (and `username` for an ACL user allowed `PSYNC`, `REPLCONF`, `INFO`) in the policy",
        reply.trim_start_matches('-')
    )
}

async fn send(conn: &mut Conn, args: &[&[u8]]) -> Result<(), ReplError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    let name = String::from_utf8_lossy(args[0]).into_owned();
    conn.get_mut()
        .write_all(&out)
        .await
        .map_err(io_err(format!("sending `{name}`")))
}

/// One reply line without its line end; `""` for a keep-alive.
async fn read_line(conn: &mut Conn, timeout: Duration, what: &str) -> Result<String, ReplError> {
    let mut line = Vec::new();
    let n = tokio::time::timeout(
        timeout,
        (&mut *conn).take(MAX_LINE).read_until(b'\n', &mut line),
    )
    .await
    .map_err(|_| ReplError::Io {
        what: format!("waiting for the reply to `{what}`"),
        source: io::Error::new(
            io::ErrorKind::TimedOut,
            format!("nothing within {timeout:?}"),
        ),
    })?
    .map_err(io_err(format!("reading the reply to `{what}`")))?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(ReplError::Io {
            what: format!("reading the reply to `{what}`"),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the node closed the connection",
            ),
        });
    }
    let s = String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string();
    if s.starts_with("-NOAUTH") || s.starts_with("-NOPERM") {
        return Err(ReplError::Auth(auth_hint(&s)));
    }
    Ok(s)
}

async fn read_info(conn: &mut Conn, timeout: Duration) -> Result<Vec<(String, String)>, ReplError> {
    let head = read_line(conn, timeout, "INFO").await?;
    let len: usize = head
        .strip_prefix('$')
        .and_then(|l| l.parse().ok())
        .filter(|l| *l <= MAX_INFO)
        .ok_or_else(|| ReplError::Protocol(format!("`INFO` was answered `{head}`")))?;
    let mut body = vec![0u8; len + 2];
    tokio::time::timeout(timeout, conn.read_exact(&mut body))
        .await
        .map_err(|_| ReplError::Io {
            what: "reading the reply to `INFO`".into(),
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing within {timeout:?}"),
            ),
        })?
        .map_err(io_err("reading the reply to `INFO`"))?;
    Ok(parse_info(&String::from_utf8_lossy(&body[..len])))
}

/// `key:value` lines of an `INFO` reply.
pub fn parse_info(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Keys per database from `INFO keyspace` lines (`db0:keys=3,expires=1,…`).
pub fn keyspace(info: &[(String, String)]) -> std::collections::BTreeMap<u32, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in info {
        let Some(db) = k.strip_prefix("db").and_then(|d| d.parse::<u32>().ok()) else {
            continue;
        };
        let field = |name: &str| {
            v.split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.insert(db, (field("keys"), field("expires")));
    }
    out
}

enum State {
    Length {
        remaining: u64,
    },
    Mark {
        mark: [u8; EOF_MARK_LEN],
        hold: Vec<u8>,
    },
}

/// The RDB payload of a sync, as an `AsyncRead` that ends exactly at the
/// payload's end (the diskless mark stripped) and fails if the connection
/// breaks, stalls longer than the read timeout, or the payload is invalid.
pub struct RdbStream {
    inner: Conn,
    state: State,
    validator: Option<RdbValidator>,
    outcome: Option<oneshot::Sender<Result<RdbSummary, String>>>,
    read_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    finished: bool,
    /// The payload ended and checked out.
    clean_end: bool,
    /// Where the connection goes when the stream is dropped after a clean end.
    give_back: Option<oneshot::Sender<Conn>>,
}

impl RdbStream {
    /// Keeps the link: once the payload ended cleanly and the stream is
    /// dropped (the pipeline is done with it), the connection — positioned
    /// right after the payload, read-ahead included — is sent to the receiver.
    pub fn keep_link(&mut self) -> oneshot::Receiver<Conn> {
        let (tx, rx) = oneshot::channel();
        self.give_back = Some(tx);
        rx
    }

    fn fail(&mut self, kind: io::ErrorKind, msg: String) -> io::Error {
        self.finished = true;
        self.validator = None;
        if let Some(tx) = self.outcome.take() {
            let _ = tx.send(Err(msg.clone()));
        }
        io::Error::new(kind, msg)
    }

    /// The payload ended: check it and report.
    fn complete(&mut self) -> io::Result<()> {
        self.finished = true;
        let v = self.validator.take().expect("validator until finished");
        let r = v.finish();
        let err = r.as_ref().err().cloned();
        if let Some(tx) = self.outcome.take() {
            let _ = tx.send(r);
        }
        match err {
            Some(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            None => {
                self.clean_end = true;
                Ok(())
            }
        }
    }

    /// Buffered bytes from the socket, with the stall timeout.
    fn poll_avail(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_fill_buf(cx) {
            Poll::Ready(Ok(b)) => {
                let n = b.len();
                let next = Instant::now() + self.read_timeout;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => {
                let msg = format!("the connection broke during the transfer: {e}");
                Poll::Ready(Err(self.fail(e.kind(), msg)))
            }
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    let msg = format!(
                        "the node sent nothing for {:?} during the transfer; raise read_timeout if it is slow",
                        self.read_timeout
                    );
                    return Poll::Ready(Err(self.fail(io::ErrorKind::TimedOut, msg)));
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for RdbStream {
    fn drop(&mut self) {
        if let Some(tx) = self.give_back.take() {
            if self.clean_end {
                let placeholder: Box<dyn NodeIo> = Box::new(tokio::io::duplex(1).0);
                let conn = std::mem::replace(&mut self.inner, BufReader::new(placeholder));
                let _ = tx.send(conn);
            }
        }
    }
}

impl AsyncRead for RdbStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.finished || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if let State::Length { remaining: 0 } = this.state {
                return Poll::Ready(this.complete());
            }
            let avail_len = ready!(this.poll_avail(cx))?;
            if avail_len == 0 {
                let msg = match &this.state {
                    State::Length { remaining } => format!(
                        "the node closed the connection with {remaining} payload bytes still to come: truncated"
                    ),
                    State::Mark { .. } => {
                        "the node closed the connection before the end-of-payload mark: truncated".to_string()
                    }
                };
                return Poll::Ready(Err(this.fail(io::ErrorKind::UnexpectedEof, msg)));
            }
            let avail = this.inner.buffer();
            let start = buf.filled().len();
            let (consumed, at_end) = match &mut this.state {
                State::Length { remaining } => {
                    let n = (avail_len as u64)
                        .min(*remaining)
                        .min(buf.remaining() as u64) as usize;
                    buf.put_slice(&avail[..n]);
                    *remaining -= n as u64;
                    (n, *remaining == 0)
                }
                State::Mark { mark, hold } => {
                    let total = hold.len() + avail_len;
                    let n = total.saturating_sub(EOF_MARK_LEN).min(buf.remaining());
                    let from_hold = n.min(hold.len());
                    let from_avail = n - from_hold;
                    buf.put_slice(&hold[..from_hold]);
                    buf.put_slice(&avail[..from_avail]);
                    hold.drain(..from_hold);
                    let keep = (EOF_MARK_LEN - hold.len()).min(avail_len - from_avail);
                    let consumed = from_avail + keep;
                    hold.extend_from_slice(&avail[from_avail..consumed]);
                    (
                        consumed,
                        consumed == avail_len && hold.as_slice() == mark.as_slice(),
                    )
                }
            };
            Pin::new(&mut this.inner).consume(consumed);
            let emitted = &buf.filled()[start..];
            let n = emitted.len();
            if n > 0 {
                if let Err(e) = this.validator.as_mut().expect("validator").update(emitted) {
                    return Poll::Ready(Err(this.fail(io::ErrorKind::InvalidData, e)));
                }
            }
            if at_end {
                return Poll::Ready(this.complete());
            }
            if n > 0 {
                return Poll::Ready(Ok(()));
            }
            // Everything went into the hold-back: read more.
        }
    }
}
