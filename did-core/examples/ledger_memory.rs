//! Bytes the ledger holds in memory per op (issue 12, item 3):
//! `cargo run -p did-core --release --example ledger_memory [N]` applies N
//! creates (default 100,000) and prints the growth of resident memory per
//! op, with op bodies in a file (as a node keeps them in sled, on disk):
//! the file store's own in-memory index is subtracted. Linux only (reads
//! /proc/self/statm).

use did_core::keys::public_of;
use did_core::ledger::Ledger;
use did_core::store::OpBodies;
use did_core::{Cid, DidState, Operation};
use ed25519_dalek::SigningKey;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

/// Resident bytes of this process.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// CID → (offset, length) in the file.
type Index = HashMap<Cid, (u64, u32)>;

/// Op bodies appended to a file; an index (CID → offset, length) in memory.
#[derive(Debug)]
struct FileBodies {
    inner: Mutex<(File, Index)>,
}

impl FileBodies {
    fn index_bytes(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.capacity() * 8 / 7 * (std::mem::size_of::<(Cid, (u64, u32))>() + 1)
    }
}

impl OpBodies for FileBodies {
    fn load(&self, cid: &Cid) -> Option<Vec<u8>> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (at, len) = *g.1.get(cid)?;
        let mut buf = vec![0; len as usize];
        g.0.seek(SeekFrom::Start(at)).ok()?;
        g.0.read_exact(&mut buf).ok()?;
        Some(buf)
    }
    fn keep(&self, cid: &Cid, bytes: &[u8]) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(at) = g.0.seek(SeekFrom::End(0)) else {
            return;
        };
        if g.0.write_all(bytes).is_ok() {
            g.1.insert(*cid, (at, bytes.len() as u32));
        }
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let path = std::env::temp_dir().join(format!("ledger_memory.{}", std::process::id()));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("temp file");
    let bodies = Arc::new(FileBodies {
        inner: Mutex::new((file, HashMap::new())),
    });
    let before = rss();
    let mut ledger = Ledger::default().with_bodies(bodies.clone());
    let mut body_bytes = 0usize;
    for i in 0..n {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&i.to_le_bytes());
        let key = SigningKey::from_bytes(&seed);
        let op = Operation::create(
            DidState::single_key(public_of(&key)),
            1_750_000_000 + i,
            &key,
        )
        .expect("sign");
        body_bytes += op.canonical_bytes().expect("bytes").len();
        ledger.apply(op).expect("valid");
    }
    let grown = rss()
        .saturating_sub(before)
        .saturating_sub(bodies.index_bytes());
    let per = |b: usize| b as f64 / n as f64;
    println!(
        "{n} creates, {} DIDs; op bodies {:.0} B/op on disk",
        ledger.did_count(),
        per(body_bytes)
    );
    println!(
        "resident memory: {:.0} B/op (with {} decoded ops cached); ledger structures \
         estimated from capacities: {:.0} B/op",
        per(grown),
        ledger.cached_ops(),
        per(ledger.heap_estimate())
    );
    let _ = std::fs::remove_file(path);
}
