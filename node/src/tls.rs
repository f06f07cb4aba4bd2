//! HTTPS for the node's API: rustls (ring provider) through tokio-rustls,
//! served by the same `axum::serve` and the same router as plain HTTP.
//!
//! `didmesh-node --tls-cert FILE --tls-key FILE` (PEM; env `DIDMESH_TLS_CERT`
//! / `DIDMESH_TLS_KEY`) turns it on; the default `--public-url` then becomes
//! `https://<http-addr>`, so the discovery document's DID-login endpoints name the
//! scheme clients really use.
//!
//! * [`server_config`] reads the certificate chain and key and builds a
//!   rustls [`ServerConfig`]: TLS 1.3 and 1.2 (rustls' safe defaults), no
//!   client certificates, ALPN `http/1.1` only (the axum build has HTTP/1
//!   only).
//! * [`TlsListener`] is an [`axum::serve::Listener`]: a task accepts TCP
//!   connections and runs each handshake in its own task, bounded by
//!   [`HANDSHAKE_TIMEOUT`] and [`MAX_HANDSHAKES`], so a client that connects
//!   and never says hello cannot hold up anyone else; finished handshakes are
//!   handed to axum.
//! * [`serve_tls`] is [`crate::serve`] over TLS: the same accept loop
//!   ([`crate::server`]: header timeout, connection cap), fed with finished
//!   handshakes. Handlers still get `ConnectInfo<SocketAddr>` (the rate
//!   limiters key on it): the listener's address type is the peer's
//!   `SocketAddr`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::NodeState;

/// A handshake not done by then is dropped (a client that connects and
/// stays silent would otherwise keep its socket and task forever).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further connections wait in the kernel's
/// accept backlog. Each costs a task and a few KiB of rustls state.
pub const MAX_HANDSHAKES: usize = 256;

/// Finished handshakes waiting for axum to take them. axum takes them as
/// fast as it can spawn a task; this only smooths bursts.
const READY_QUEUE: usize = 64;

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file is missing, unreadable or not PEM.
    #[error("{path}: {source}")]
    Pem {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(String),
    /// rustls refused the pair (e.g. the key does not match the certificate,
    /// or its type is not supported).
    #[error("certificate {cert} with key {key}: {source}")]
    Config {
        cert: String,
        key: String,
        source: rustls::Error,
    },
}

/// Reads a PEM certificate chain (leaf first) and its private key (PKCS#8,
/// PKCS#1 or SEC1) and builds the server configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem = |path: &Path| {
        let path = path.display().to_string();
        move |source| TlsError::Pem { path, source }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    let config_error = |source| TlsError::Config {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        source,
    };
    // The provider is chosen explicitly: rustls is built without a default
    // one (no aws-lc), and ring is already in the tree through libp2p.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A connection whose TLS handshake is done, and its peer.
type Ready = (TlsStream<TcpStream>, SocketAddr);

/// TCP listener that hands axum only connections whose TLS handshake is
/// done. Dropping it stops accepting.
pub struct TlsListener {
    /// Finished handshakes, from [`accept_loop`].
    ready: mpsc::Receiver<Ready>,
    /// Where the TCP listener is bound (reported by `local_addr`).
    local_addr: SocketAddr,
    /// The accept loop; aborted on drop so the port is released with us.
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` (must run inside a tokio runtime).
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let local_addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            ready,
            local_addr,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            None => {
                // Only if the accept loop panicked: nothing more will come.
                tracing::error!("TLS accept loop ended; no new connections");
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Accepts TCP connections and runs each handshake in a task of its own.
/// Ends when the [`TlsListener`] is dropped.
async fn accept_loop(tcp: TcpListener, acceptor: TlsAcceptor, ready: mpsc::Sender<Ready>) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_error(error).await;
                    continue;
                }
            },
            () = ready.closed() => return,
        };
        // Small responses: without this, Nagle plus delayed ACKs can add
        // tens of milliseconds to a TLS record split over two writes.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(tls)) => {
                    // The permit is held until the HTTP loop takes the
                    // connection: when that loop is at its connection cap,
                    // finished handshakes cannot pile up without bound.
                    let _ = ready.send((tls, peer)).await;
                    drop(permit);
                }
                // A client's failure (wrong CA, plain HTTP to the HTTPS
                // port): theirs to see, not ours to shout about.
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// As axum's own TCP listener does: errors of one connection are skipped;
/// others (e.g. out of file descriptors) are logged and retried after a
/// pause, so the loop does not spin.
async fn accept_error(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves the API over TLS on `listener` until `shutdown` completes; the
/// HTTPS twin of [`crate::serve`].
pub async fn serve_tls(
    state: Arc<NodeState>,
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let options = state.serve_options;
    let listener = TlsListener::new(listener, config)?;
    crate::server::serve_on(listener, crate::api::router(state), options, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn missing_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            server_config(&dir.path().join("nope.pem"), &dir.path().join("key.pem")).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cert = write(dir.path(), "cert.pem", "not pem at all\n");
        let key = write(dir.path(), "key.pem", "");
        let err = server_config(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");
    }

    #[test]
    fn a_certificate_without_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Any well-formed CERTIFICATE block gets past the PEM stage.
        let cert = write(
            dir.path(),
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let key = write(
            dir.path(),
            "key.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let err = server_config(&cert, &key).unwrap_err();
        assert!(
            matches!(err, TlsError::Pem { ref path, .. } if path.ends_with("key.pem")),
            "{err}"
        );
    }
}
