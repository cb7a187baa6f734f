//! A TCP relay in front of a real server (moto) that injects network faults
//! on demand: a server that stops answering (bytes held, sockets open), one
//! that answers every request with HTTP 503, and a cut connection; and a
//! rate cap, so that a stream of a few MB is still under way when the fault
//! is switched on.

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the relay does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Relays both ways.
    Pass = 0,
    /// Holds every byte: the server seems to stop answering, connections stay open.
    Stall = 1,
    /// New requests get `503 Service Unavailable`; open connections are cut.
    Fail503 = 2,
    /// Every connection is reset.
    Cut = 3,
}

/// The relay; faults apply to open connections too.
pub struct FaultProxy {
    port: u16,
    mode: Arc<AtomicU8>,
    rate: Arc<AtomicU64>,
    target: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Relays `127.0.0.1:<new port>` to `127.0.0.1:<target_port>`.
    pub async fn start(target_port: u16) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let rate = Arc::new(AtomicU64::new(0));
        let target = Arc::new(AtomicU16::new(target_port));
        let (m, r, t) = (mode.clone(), rate.clone(), target.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (m, r) = (m.clone(), r.clone());
                let to = t.load(Ordering::SeqCst);
                tokio::spawn(async move { relay(inbound, to, m, r).await });
            }
        });
        FaultProxy {
            port,
            mode,
            rate,
            target,
            task,
        }
    }

    /// Endpoint URL through the relay.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the fault.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// The port on 127.0.0.1 clients reach through the relay.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Relays new connections to `port` instead (a server restarted elsewhere).
    pub fn retarget(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }

    /// Caps each direction of each connection at `bytes_per_sec` (0: no cap).
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn mode_of(m: &AtomicU8) -> Mode {
    match m.load(Ordering::SeqCst) {
        1 => Mode::Stall,
        2 => Mode::Fail503,
        3 => Mode::Cut,
        _ => Mode::Pass,
    }
}

async fn relay(
    mut inbound: TcpStream,
    target_port: u16,
    mode: Arc<AtomicU8>,
    rate: Arc<AtomicU64>,
) {
    if mode_of(&mode) == Mode::Fail503 {
        let mut buf = [0u8; 4096];
        let _ = inbound.read(&mut buf).await;
        let _ = inbound
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target_port)).await else {
        return;
    };
    let (ir, iw) = inbound.into_split();
    let (or, ow) = outbound.into_split();
    // Either direction ending (a cut, EOF) drops all four halves: the client sees a reset.
    tokio::select! {
        _ = pump(ir, ow, mode.clone(), rate.clone()) => {}
        _ = pump(or, iw, mode, rate) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
    rate: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = wait_for_cut(&mode) => return,
        };
        loop {
            match mode_of(&mode) {
                Mode::Pass => break,
                Mode::Stall => tokio::time::sleep(Duration::from_millis(20)).await,
                Mode::Fail503 | Mode::Cut => return,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if let Some(us) = (n as u64 * 1_000_000).checked_div(rate.load(Ordering::SeqCst)) {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
    }
}

async fn wait_for_cut(mode: &AtomicU8) {
    while !matches!(mode_of(mode), Mode::Cut | Mode::Fail503) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
