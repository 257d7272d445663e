//! The worker's HTTP endpoints: `/metrics` (Prometheus text format),
//! `/healthz` (the process is alive), `/readyz` (every assigned partition is
//! restored and consuming), and a read-only admin view of one customer.

use crate::metrics::Metrics;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// What `/readyz` reports. The worker flips these as partitions come and go.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The consumer has joined its group and received an assignment.
    pub assigned: AtomicBool,
    /// Every assigned partition's state is restored and it is consuming.
    pub consuming: AtomicBool,
    /// What the worker has waited for longer than `processing.stall_timeout`
    /// (the broker's answers to fetches, output acknowledgements, the group),
    /// set by the watchdog (`crate::liveness`).
    stalled: Mutex<Option<String>>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed) && self.consuming.load(Ordering::Relaxed) && self.stalled().is_none()
    }

    pub fn set_stalled(&self, reason: Option<String>) {
        *self.stalled.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    pub fn stalled(&self) -> Option<String> {
        self.stalled.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Looks a customer up for the admin API; the worker provides it.
pub trait CustomerLookup: Send + Sync + 'static {
    /// The customer's state as JSON, or `None` when unknown.
    fn customer_json(&self, customer: &str) -> Result<Option<String>, String>;
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Arc<Readiness>,
    lookup: Option<Arc<dyn CustomerLookup>>,
}

/// Binds `addr` and serves until `shutdown` completes. Returns the bound
/// address (useful with port 0) once listening.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    readiness: Arc<Readiness>,
    lookup: Option<Arc<dyn CustomerLookup>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(AppState { metrics, readiness, lookup });
    let handle = tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await });
    Ok((bound, handle))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/admin/customers/{id}", get(customer))
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render()).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if let Some(reason) = s.readiness.stalled() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response()
    } else if !s.readiness.assigned.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no partitions assigned yet\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: restoring assigned partitions\n").into_response()
    }
}

async fn customer(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(lookup) = s.lookup.clone() else {
        return (StatusCode::NOT_FOUND, "no customer store in this process\n").into_response();
    };
    match tokio::task::spawn_blocking(move || lookup.customer_json(&id)).await {
        Ok(Ok(Some(json))) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Ok(None)) => (StatusCode::NOT_FOUND, "unknown customer\n").into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
