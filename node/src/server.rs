//! The HTTP/1.1 accept loop shared by plain HTTP ([`crate::serve`]) and
//! HTTPS ([`crate::tls::serve_tls`]).
//!
//! `axum::serve` offers no header-read timeout and no connection cap, so a
//! few hundred clients that send their headers a byte at a time would hold
//! their sockets and tasks forever. Here each connection is served by
//! hyper's HTTP/1 server with:
//!
//! * a header read timeout ([`ServeOptions::header_read_timeout`]): a
//!   request whose headers are not all in by then closes its connection;
//!   hyper arms the same timer while a keep-alive connection waits for its
//!   next request, so idle connections are closed after it too;
//! * a cap on connections served at once ([`ServeOptions::max_connections`]):
//!   at the cap the loop stops accepting and further clients wait in the
//!   kernel's accept queue;
//! * a cap per client network ([`ServeOptions::max_connections_per_network`],
//!   networks as in [`crate::limits::client_prefix`]): a connection beyond
//!   it is closed at once, so a few networks holding idle connections
//!   cannot take every slot of the global cap (the count lives only while
//!   the network has connections open, so it is bounded by the cap);
//! * graceful shutdown: on the shutdown signal the loop stops accepting,
//!   lets requests in flight finish (at most [`SHUTDOWN_GRACE`]) and
//!   returns.
//!
//! Handlers see the peer's address as `ConnectInfo<SocketAddr>`, as with
//! `into_make_service_with_connect_info` (the rate limiters key on it).
//!
//! The routes can be swapped while serving ([`Routes::set`]): a node opens
//! its listener before it loads the ledger and answers with the routes of
//! [`starting_router`] meanwhile, then with the full API, on the same
//! listener and even the same keep-alive connections (issue 12, item 4).

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// How long requests in flight may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Limits of the accept loop (`--header-read-timeout`, `--max-connections`).
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_network: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
            max_connections_per_network: 64,
        }
    }
}

/// The router requests are handed to; swappable while serving.
#[derive(Clone)]
pub struct Routes(Arc<std::sync::RwLock<Router>>);

impl Routes {
    pub fn new(router: Router) -> Routes {
        Routes(Arc::new(std::sync::RwLock::new(router)))
    }

    /// From now on, requests go to `router` (requests in flight finish
    /// where they started).
    pub fn set(&self, router: Router) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = router;
    }

    fn current(&self) -> Router {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl From<Router> for Routes {
    fn from(router: Router) -> Routes {
        Routes::new(router)
    }
}

/// Serves `router` on the connections `listener` hands out until
/// `shutdown` completes.
pub async fn serve_on<L>(
    mut listener: L,
    router: impl Into<Routes>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
    let routes: Routes = router.into();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let per_network = Arc::new(NetworkCounts::default());
    let network_cap = options.max_connections_per_network.max(1);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout.max(Duration::from_millis(100)));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
        };
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Some(counted) = per_network.clone().enter(peer.ip(), network_cap) else {
            // Over its network's share: closed now, its slot freed.
            tracing::debug!(%peer, "connection refused: its network is at its connection cap");
            continue;
        };
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            routes.current().oneshot(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                // A client's own failure (reset, header timeout): theirs.
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(counted);
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("connections still open after the shutdown grace period");
        }
    }
    Ok(())
}

/// Open connections per client network.
#[derive(Default)]
struct NetworkCounts(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of a network; leaving is on drop.
struct Counted {
    counts: Arc<NetworkCounts>,
    network: IpAddr,
}

impl NetworkCounts {
    /// Counts a connection from `ip` in, unless its network has `cap` open.
    fn enter(self: Arc<Self>, ip: IpAddr, cap: usize) -> Option<Counted> {
        let network = crate::limits::client_prefix(ip);
        let mut map = self.0.lock().ok()?;
        let n = map.entry(network).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        drop(map);
        Some(Counted {
            counts: self,
            network,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Ok(mut map) = self.counts.0.lock() {
            if let Some(n) = map.get_mut(&self.network) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.network);
                }
            }
        }
    }
}

/// The routes served while the node loads its ledger (issue 12, item 4):
/// `GET /healthz` answers 503 with the progress (so a health check sees
/// the node alive but not ready), `GET /v1/status` answers 200 with
/// `"starting": true` and the progress, everything else 503
/// `{"error":"starting"}` with `Retry-After`.
pub fn starting_router(progress: Arc<crate::storage::Progress>) -> Router {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse as _;
    use axum::routing::get;
    use axum::Json;
    fn view(p: &crate::storage::Progress) -> serde_json::Value {
        let (loaded, total) = p.ops();
        serde_json::json!({
            "phase": p.phase(),
            "ops_loaded": loaded,
            "ops_total": total,
        })
    }
    let health = progress.clone();
    let status = progress.clone();
    Router::new()
        .route(
            "/healthz",
            get(move || async move {
                let body = serde_json::json!({"status": "starting", "progress": view(&health)});
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    Json(body),
                )
            }),
        )
        .route(
            "/v1/status",
            get(move || async move {
                Json(serde_json::json!({"starting": true, "progress": view(&status)}))
            }),
        )
        .fallback(move || async move {
            let (loaded, total) = progress.ops();
            let body = serde_json::json!({
                "error": "starting",
                "reason": format!(
                    "the node is loading its ledger ({loaded} of {total} ops, {:?}); retry shortly",
                    progress.phase()
                ),
            });
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                Json(body),
            )
                .into_response()
        })
}
