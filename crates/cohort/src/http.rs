//! The worker's HTTP endpoints: `/metrics` (Prometheus text format),
//! `/healthz` (the process is alive), `/readyz` (every assigned partition is
//! restored and consuming), and the admin API: one customer
//! (`/admin/customers/{id}`, `.../explain`) and a candidate rules file's
//! preview (`POST /admin/preview`).

use crate::metrics::Metrics;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
    /// The customer's state as JSON, with every segment and offer
    /// explained if `explain`, or `None` when unknown.
    fn customer_json(&self, customer: &str, explain: bool) -> Result<Option<String>, String>;

    /// A candidate rules file's preview over the customers of the
    /// partitions this worker owns (`crate::preview`): JSON, or a table.
    fn preview(&self, _candidate: &str, _samples: usize, _table: bool) -> Result<String, AdminError> {
        Err(AdminError::NotHere)
    }
}

/// Why an admin request failed.
#[derive(Debug)]
pub enum AdminError {
    /// The request is wrong (a candidate that does not compile): 400.
    BadRequest(String),
    /// This process has no store to answer from: 404.
    NotHere,
    /// Reading the store failed: 500.
    Failed(String),
}

/// The value of `key` in a query string such as `format=table&samples=3`.
fn query_value<'a>(query: &'a Option<String>, key: &str) -> Option<&'a str> {
    query.as_deref()?.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
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
        .route("/admin/customers/{id}/explain", get(explain))
        .route("/admin/preview", post(preview))
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
    customer_answer(s, id, false).await
}

/// `GET /admin/customers/{id}/explain`: the customer with every segment's
/// condition atom by atom and every offer's verdict.
async fn explain(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    customer_answer(s, id, true).await
}

async fn customer_answer(s: AppState, id: String, explain: bool) -> Response {
    let Some(lookup) = s.lookup.clone() else {
        return (StatusCode::NOT_FOUND, "no customer store in this process\n").into_response();
    };
    match tokio::task::spawn_blocking(move || lookup.customer_json(&id, explain)).await {
        Ok(Ok(Some(json))) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Ok(None)) => (StatusCode::NOT_FOUND, "unknown customer\n").into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// `POST /admin/preview`: the body is the candidate rules file; query
/// `format` (`json`, the default, or `table`) and `samples` (default 5).
async fn preview(State(s): State<AppState>, RawQuery(q): RawQuery, body: String) -> Response {
    let Some(lookup) = s.lookup.clone() else {
        return (StatusCode::NOT_FOUND, "no customer store in this process\n").into_response();
    };
    let table = match query_value(&q, "format") {
        None | Some("json") => false,
        Some("table") => true,
        Some(other) => {
            return (StatusCode::BAD_REQUEST, format!("format `{other}`: expected json or table\n")).into_response()
        }
    };
    let samples = match query_value(&q, "samples").map(str::parse::<usize>) {
        None => 5,
        Some(Ok(n)) => n,
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "samples: expected a whole number\n").into_response(),
    };
    match tokio::task::spawn_blocking(move || lookup.preview(&body, samples, table)).await {
        Ok(Ok(text)) => {
            let kind = if table { "text/plain; charset=utf-8" } else { "application/json" };
            ([(header::CONTENT_TYPE, kind)], text).into_response()
        }
        Ok(Err(AdminError::BadRequest(e))) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Ok(Err(AdminError::NotHere)) => (StatusCode::NOT_FOUND, "no customer store in this process\n").into_response(),
        Ok(Err(AdminError::Failed(e))) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
