//! The HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the process
//! answers and no job is past its deadline), `/readyz` (that, and the
//! scheduler runs and is not shutting down).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

/// Readiness flag shared by the scheduler and the server.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Marks the daemon ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        super::global().encode(chrono::Utc::now()),
    )
}

async fn healthz() -> (StatusCode, String) {
    match super::jobs::overdue_message() {
        None => (StatusCode::OK, "ok\n".into()),
        Some(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    if let Some(m) = super::jobs::overdue_message() {
        return (StatusCode::SERVICE_UNAVAILABLE, m);
    }
    if h.is_ready() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
    }
}

/// The router (tests call it in-process too).
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours.
    #[error("cannot listen on {addr} for /metrics: {source}; change daemon.metrics_addr")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bound socket has no address (should not happen).
    #[error("cannot read the metrics listener's address: {0}")]
    Address(#[source] std::io::Error),
}

/// Binds `addr` and serves until `shutdown`; returns the bound address and the server task.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(ServeError::Address)?;
    let task = tokio::spawn(async move {
        let r = axum::serve(listener, router(health))
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(event = "metrics_server_failed", error = %e);
        }
    });
    tracing::info!(event = "metrics_listening", addr = %bound);
    Ok((bound, task))
}
