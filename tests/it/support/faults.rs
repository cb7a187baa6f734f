//! A TCP relay in front of a real server (moto) that injects network faults
//! on demand: a server that stops answering (bytes held, sockets open), one
//! that answers every request with HTTP 503, and a cut connection.

use std::sync::atomic::{AtomicU8, Ordering};
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
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Relays `127.0.0.1:<new port>` to `127.0.0.1:<target_port>`.
    pub async fn start(target_port: u16) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let m = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let m = m.clone();
                tokio::spawn(async move { relay(inbound, target_port, m).await });
            }
        });
        FaultProxy { port, mode, task }
    }

    /// Endpoint URL through the relay.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the fault.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
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

async fn relay(mut inbound: TcpStream, target_port: u16, mode: Arc<AtomicU8>) {
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
        _ = pump(ir, ow, mode.clone()) => {}
        _ = pump(or, iw, mode) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
) {
    let mut buf = vec![0u8; 64 << 10];
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
    }
}

async fn wait_for_cut(mode: &AtomicU8) {
    while !matches!(mode_of(mode), Mode::Cut | Mode::Fail503) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
