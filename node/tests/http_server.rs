//! The node's accept loop on real sockets: a client that sends its headers
//! slowly is cut off after `--header-read-timeout`, and at
//! `--max-connections` further clients wait until a slot frees.

use didmesh_tests::router::RouterNode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A node served by its own accept loop on a free loopback port (the
/// testkit's [`RouterNode`]); its address, and the node to keep alive.
async fn start(extra: &[&str]) -> (SocketAddr, RouterNode) {
    let node = RouterNode::start_with(extra).await;
    (node.addr, node)
}

/// Reads until the peer closes (or the deadline); returns what came and
/// whether the connection was closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut got = vec![];
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

async fn get_healthz(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_slow_header_connection_is_closed_within_the_timeout() {
    let (addr, _node) = start(&["--header-read-timeout", "2"]).await;
    assert!(get_healthz(addr).await.starts_with("HTTP/1.1 200"));

    // Slowloris: a request line, then one header byte every 200 ms.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let trickle = async {
        for _ in 0..100 {
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // A silent connection, too.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (_, (_, silent_closed)) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(6), trickle),
        read_until_closed(&mut silent, Duration::from_secs(6)),
    );
    let (_, slow_closed) = read_until_closed(&mut slow, Duration::from_millis(500)).await;
    let elapsed = started.elapsed();
    println!("slow-header connection closed after {elapsed:?}; silent one closed: {silent_closed}");
    assert!(
        slow_closed,
        "the slow-header connection is still open after {elapsed:?}"
    );
    assert!(silent_closed, "the silent connection is still open");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // The node still serves.
    assert!(get_healthz(addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn at_the_connection_cap_clients_wait_for_a_free_slot() {
    let (addr, _node) = start(&["--header-read-timeout", "2", "--max-connections", "2"]).await;
    // Two silent connections take both slots…
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // …so a third client is served only once the header timeout frees one.
    let started = Instant::now();
    let answer = get_healthz(addr).await;
    let waited = started.elapsed();
    println!("third client answered after {waited:?}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(waited >= Duration::from_millis(1200), "{waited:?}");
    assert!(waited < Duration::from_secs(6), "{waited:?}");
}
