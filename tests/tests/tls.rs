//! The node's API over HTTPS (`--tls-cert`/`--tls-key`), from outside: a
//! real `didmesh-node` with a certificate from `sidecars/testkit/local-ca.sh`
//! serves its JWKS and discovery document to a client that trusts only that
//! CA; a client that does not trust it, or speaks plain HTTP, gets nothing;
//! the auth routes (rate-limited per client address, so they need the
//! connection's peer address) still answer.
//!
//! The client is tokio-rustls with a hand-written HTTP/1.1 request: reqwest is
//! built without TLS in this workspace, and one GET is all a JWKS needs.

use didmesh_tests::NodeCommand;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// `sidecars/testkit/local-ca.sh DIR`: DIR/ca.pem, DIR/node.pem, DIR/node-key.pem.
fn local_ca(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sidecars/testkit/local-ca.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "local-ca.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

fn client_config(trusted_ca: Option<&Path>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = trusted_ca {
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// One HTTP/1.1 request over TLS to 127.0.0.1:`port`, the server checked
/// against `config`'s roots under the name `host`. Returns status and body.
async fn https(
    config: Arc<ClientConfig>,
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> io::Result<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name =
        ServerName::try_from(host.to_string()).map_err(|e| io::Error::other(e.to_string()))?;
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw).await {
        Ok(_) => {}
        // A server that closes without close_notify still sent a whole answer.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no HTTP answer: {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status line: {head:?}")))?;
    Ok((status, body.to_string()))
}

#[test]
fn node_serves_its_jwks_over_https_to_clients_that_trust_its_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = local_ca(&tmp.path().join("ca"));
    // Spawned without waiting: the kit's health check speaks plain HTTP.
    let node = NodeCommand::new(&tmp.path().join("data"))
        .arg("--no-p2p")
        .arg("--tls-cert")
        .arg(ca.join("node.pem"))
        .arg("--tls-key")
        .arg(ca.join("node-key.pem"))
        .env("RUST_LOG", "info")
        .stderr_to(&tmp.path().join("node.log"))
        .spawn();
    let port = node.port;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let trusting = client_config(Some(&ca.join("ca.pem")));
    let get =
        |host: &str, path: &str| rt.block_on(https(trusting.clone(), host, port, "GET", path, ""));

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match get("localhost", "/healthz") {
            Ok((200, _)) => break,
            other if Instant::now() > deadline => {
                let log = std::fs::read_to_string(tmp.path().join("node.log")).unwrap_or_default();
                panic!("no https /healthz within 20 s: {other:?}\n{log}");
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }

    // The JWKS, by the certificate's DNS name and by its IP address.
    for host in ["localhost", "127.0.0.1"] {
        let (status, body) = get(host, "/.well-known/jwks.json").unwrap();
        assert_eq!(status, 200, "{body}");
        let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
        // One member: its Ed25519, RSA and P-256 token keys.
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 3, "{jwks}");
        let algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
        assert_eq!(algs, ["EdDSA", "RS256", "ES256"], "{jwks}");
    }

    // With TLS on, the default public URL is https, so discovery points
    // wallets at this node's https login endpoints (the provider endpoints
    // and the JWKS hang off the issuer, the network's one public name).
    let (status, body) = get("localhost", "/.well-known/openid-configuration").unwrap();
    assert_eq!(status, 200, "{body}");
    let discovery: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        discovery["didmesh_challenge_endpoint"],
        format!("https://127.0.0.1:{port}/v1/auth/challenge")
    );

    // The auth routes sit behind the per-address rate limiter, which reads
    // ConnectInfo<SocketAddr>: a 400 for a bad DID (not a 500) shows the
    // peer address still reaches the handlers over TLS.
    let (status, body) = rt
        .block_on(https(
            trusting.clone(),
            "localhost",
            port,
            "POST",
            "/v1/auth/challenge",
            r#"{"did":"did:mesh:nope"}"#,
        ))
        .unwrap();
    assert_eq!(status, 400, "{body}");

    // A client that does not trust the test CA, and a name the certificate
    // does not carry: the handshake fails.
    for (config, host, why) in [
        (client_config(None), "localhost", "UnknownIssuer"),
        (trusting.clone(), "didmesh.invalid", "NotValidForName"),
    ] {
        let err = rt
            .block_on(https(config, host, port, "GET", "/healthz", ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(why) || err.contains("certificate"),
            "{host}: {err}"
        );
    }

    // Plain HTTP to the HTTPS port gets no HTTP answer, and the node keeps serving.
    let plain = rt.block_on(async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw)).await;
        io::Result::Ok(raw)
    });
    assert!(!String::from_utf8_lossy(&plain.unwrap()).starts_with("HTTP/1.1 200"));
    assert_eq!(get("localhost", "/healthz").unwrap().0, 200);
}
