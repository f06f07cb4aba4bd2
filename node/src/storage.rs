//! Durable storage: an append-only, hash-chained op log in sled.
//!
//! Entry `n` is stored under `L` ‖ n (big-endian) as
//! `chain_hash(n-1)` ‖ `cid` ‖ canonical op bytes, where
//! `chain_hash(n) = blake3(chain_hash(n-1) ‖ cid)` and `cid = blake3(bytes)`.
//! The head (`H`) holds the count and the last chain hash. A batch of entries
//! and the new head are written in one atomic sled batch and flushed
//! (fsync) before any op of it is acknowledged. On start every entry is
//! re-hashed and the chain re-walked, so an altered, dropped or reordered
//! entry makes the node refuse to start.
//!
//! sled can also lose data without an error: a `db` file cut short with no
//! snapshot is recovered as an empty (or shorter) log. So after every group
//! commit the store records what it has acknowledged — the count and chain
//! hash — in a small file next to sled's own (`ledger.sled/didmesh-acked`,
//! written by rename after sled's fsync, so it is never ahead of sled). On
//! start a log shorter than that record, or whose chain differs at that
//! point, is refused as damaged instead of silently serving less.
//!
//! A damaged sled folder (a truncated or garbled file) is refused with the
//! same message: sled's own corruption errors are reported as damage, and
//! a panic inside sled while it opens or reads the folder is caught and
//! reported the same way (the binary's panic hook stays quiet meanwhile,
//! see [`opening`]), instead of a panic message and backtrace.

use did_core::{Cid, Ledger, Operation};
use std::path::Path;

/// sled 0.34 can deadlock the whole process when an explicit flush
/// overlaps a batch: a flush holds sled's global concurrency-control lock
/// for reading while it waits for the log to become stable, a batch
/// (`apply_batch`, transactions) waits for that lock for writing, and the
/// waiting writer keeps sled's own log flusher from taking it for reading,
/// so the flush never finishes (seen here: the SMS guard's batches and
/// flushes from two request threads hung a node with no CPU use). Every
/// batch and every explicit flush in the node goes through this gate, so
/// the two never overlap.
static SLED_GATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` (a sled batch and/or flush) alone ([`SLED_GATE`]).
pub fn gated<T>(f: impl FnOnce() -> T) -> T {
    let _held = SLED_GATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f()
}

/// [`gated`] for async callers: the flush blocks, so it runs on the
/// blocking pool.
pub async fn gated_flush(tree: sled::Tree) -> sled::Result<usize> {
    tokio::task::spawn_blocking(move || gated(|| tree.flush()))
        .await
        .unwrap_or_else(|e| {
            Err(sled::Error::Io(std::io::Error::other(format!(
                "flush task failed: {e}"
            ))))
        })
}

const HEAD_KEY: &[u8] = b"H";
/// What the node has acknowledged (count ‖ chain hash), inside the sled folder.
const ACKED_FILE: &str = "didmesh-acked";

thread_local! {
    /// Set while [`Store::open`] runs on this thread.
    static OPENING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is opening a store: a panic now is sled failing on
/// a damaged folder, which [`Store::open`] reports itself, so a panic hook
/// may stay quiet.
pub fn opening() -> bool {
    OPENING.with(|o| o.get())
}

/// The text shown for a folder that fails verification.
const REFUSAL: &str = "It was altered or corrupted; refusing to start. Restore it from a \
     backup or move it away and let the node resync from its peers.";
const LOG_PREFIX: u8 = b'L';

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the data folder's database: {0}")]
    Open(sled::Error),
    #[error("database write failed: {0}")]
    Write(sled::Error),
    #[error("the data folder failed verification at log entry {entry}: {why}. {REFUSAL}")]
    Tampered { entry: u64, why: String },
    #[error("the data folder's database is damaged: {0}. {REFUSAL}")]
    Damaged(String),
}

/// A sled error while opening or reading: damage if sled says the data is
/// corrupt or unreadable, else a plain open failure (permissions, a lock
/// held by another process).
fn read_error(e: sled::Error) -> StorageError {
    use std::io::ErrorKind;
    match &e {
        // sled's own text ends in "backtrace ()": say it plainly instead.
        sled::Error::Corruption { at, .. } => StorageError::Damaged(match at {
            Some(at) => format!("sled found corrupted data at {at:?}"),
            None => "sled found corrupted data".into(),
        }),
        sled::Error::ReportableBug(_) => StorageError::Damaged(e.to_string()),
        sled::Error::Io(io)
            if matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof) =>
        {
            StorageError::Damaged(e.to_string())
        }
        _ => StorageError::Open(e),
    }
}

/// The node's op log.
pub struct Store {
    db: sled::Db,
    log: sled::Tree,
    /// Entries written so far.
    count: u64,
    /// Chain hash after the last entry.
    head: [u8; 32],
    /// `ledger.sled/didmesh-acked` (module doc).
    acked_path: std::path::PathBuf,
}

/// Reads the acknowledged-watermark file: `None` when absent.
fn read_acked(path: &Path) -> Result<Option<(u64, [u8; 32])>, StorageError> {
    match std::fs::read(path) {
        Ok(v) if v.len() == 40 => {
            let mut count = [0u8; 8];
            count.copy_from_slice(&v[..8]);
            let mut head = [0u8; 32];
            head.copy_from_slice(&v[8..]);
            Ok(Some((u64::from_be_bytes(count), head)))
        }
        Ok(_) => Err(StorageError::Damaged(format!(
            "{} has the wrong size",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::Damaged(format!("{}: {e}", path.display()))),
    }
}

fn log_key(n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LOG_PREFIX;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

fn chain(prev: &[u8; 32], cid: &Cid) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(cid.digest());
    *h.finalize().as_bytes()
}

impl Store {
    /// Opens the store and replays it into `ledger`, verifying every entry.
    pub fn open(dir: &Path, ledger: &mut Ledger) -> Result<Store, StorageError> {
        struct Opening;
        impl Drop for Opening {
            fn drop(&mut self) {
                OPENING.with(|o| o.set(false));
            }
        }
        OPENING.with(|o| o.set(true));
        let _opening = Opening;
        // sled may panic on a damaged file; nothing of a failed open is
        // used afterwards (the caller gets an error and stops), so
        // unwind-safety is moot.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_inner(dir, ledger)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "sled failed reading it".into());
            Err(StorageError::Damaged(what))
        })
    }

    fn open_inner(dir: &Path, ledger: &mut Ledger) -> Result<Store, StorageError> {
        let db = sled::Config::new()
            .path(dir.join("ledger.sled"))
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(read_error)?;
        let log = db.open_tree("oplog").map_err(read_error)?;
        let acked_path = dir.join("ledger.sled").join(ACKED_FILE);
        let acked = read_acked(&acked_path)?;
        let tampered = |entry: u64, why: &str| StorageError::Tampered {
            entry,
            why: why.to_string(),
        };

        let (want_count, want_head) = match log.get(HEAD_KEY).map_err(read_error)? {
            None => (0, [0u8; 32]),
            Some(v) if v.len() == 40 => {
                let mut count = [0u8; 8];
                count.copy_from_slice(&v[..8]);
                let mut head = [0u8; 32];
                head.copy_from_slice(&v[8..]);
                (u64::from_be_bytes(count), head)
            }
            Some(_) => return Err(tampered(0, "head record has the wrong size")),
        };

        let mut running = [0u8; 32];
        let mut n = 0u64;
        for item in log.scan_prefix([LOG_PREFIX]) {
            let (key, value) = item.map_err(read_error)?;
            if key.as_ref() != log_key(n) {
                return Err(tampered(n, "entries are missing or out of order"));
            }
            if value.len() < 64 {
                return Err(tampered(n, "entry is truncated"));
            }
            if value[..32] != running {
                return Err(tampered(n, "chain hash does not match the previous entry"));
            }
            let bytes = &value[64..];
            let (op, cid) =
                Operation::from_canonical_json(bytes).map_err(|e| tampered(n, &e.to_string()))?;
            if value[32..64] != cid.0 {
                return Err(tampered(n, "op bytes do not match their CID"));
            }
            match ledger.validate(&op) {
                Ok(did_core::Check::New(v)) => {
                    ledger.commit(*v);
                }
                Ok(did_core::Check::Known(_)) => return Err(tampered(n, "op appears twice")),
                Err(e) => return Err(tampered(n, &format!("op no longer validates: {e}"))),
            }
            running = chain(&running, &cid);
            n += 1;
            if let Some((count, head)) = acked {
                if n == count && running != head {
                    return Err(StorageError::Damaged(format!(
                        "the op log differs from what this node acknowledged at entry {count}"
                    )));
                }
            }
        }
        if let Some((count, _)) = acked {
            if n < count {
                return Err(StorageError::Damaged(format!(
                    "the op log has {n} entries but this node acknowledged {count}: sled lost data"
                )));
            }
        }
        if n != want_count || running != want_head {
            return Err(tampered(
                n,
                &format!("log has {n} entries but the head record says {want_count}, or its hash differs"),
            ));
        }
        Ok(Store {
            db,
            log,
            count: n,
            head: running,
            acked_path,
        })
    }

    /// Appends ops (canonical bytes with their CIDs) atomically and flushes
    /// them to disk. Returns only once they are durable.
    pub fn append_durable(&mut self, entries: &[(Cid, &[u8])]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut running = self.head;
        let mut n = self.count;
        for (cid, bytes) in entries {
            let mut value = Vec::with_capacity(64 + bytes.len());
            value.extend_from_slice(&running);
            value.extend_from_slice(cid.digest());
            value.extend_from_slice(bytes);
            batch.insert(&log_key(n), value);
            running = chain(&running, cid);
            n += 1;
        }
        let mut head = Vec::with_capacity(40);
        head.extend_from_slice(&n.to_be_bytes());
        head.extend_from_slice(&running);
        batch.insert(HEAD_KEY, head);
        gated(|| {
            self.log.apply_batch(batch)?;
            self.db.flush()
        })
        .map_err(StorageError::Write)?;
        self.count = n;
        self.head = running;
        self.record_acked()
    }

    /// Writes the acknowledged watermark (module doc). No fsync: the file
    /// may lag sled after a power cut, which only weakens the check, never
    /// refuses a good log.
    fn record_acked(&self) -> Result<(), StorageError> {
        let mut v = Vec::with_capacity(40);
        v.extend_from_slice(&self.count.to_be_bytes());
        v.extend_from_slice(&self.head);
        let tmp = self.acked_path.with_extension("tmp");
        std::fs::write(&tmp, &v)
            .and_then(|()| std::fs::rename(&tmp, &self.acked_path))
            .map_err(|e| StorageError::Write(sled::Error::Io(e)))
    }

    /// A named sled tree of this store's database, next to the op log, for
    /// node-local state that must survive a restart (the passkey sign
    /// counters of [`crate::oidc::counters`]). Never the log's own tree.
    pub fn side_tree(&self, name: &str) -> Result<sled::Tree, StorageError> {
        if name.as_bytes() == b"oplog" || name.as_bytes() == b"__sled__default" {
            return Err(StorageError::Damaged(format!("{name} is not a side tree")));
        }
        self.db.open_tree(name).map_err(read_error)
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The chain hash of the last entry (hex), shown in `/v1/status`.
    pub fn head_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.head)
    }
}
