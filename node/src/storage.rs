//! Durable storage: an append-only, hash-chained op log in sled, the op
//! bodies beside it, and checkpoints of the ledger.
//!
//! Entry `n` of the log (tree `oplog`) is stored under `L` ‖ n (big-endian)
//! as `chain_hash(n-1)` ‖ `cid` ‖ `blake3(body)`, where
//! `chain_hash(n) = blake3(chain_hash(n-1) ‖ cid)`; the body (the op's
//! canonical bytes) is in the same tree under `B` ‖ CID. A CID names the
//! op's *signed* bytes (without `sig`), so the body hash is what pins the
//! stored bytes, signatures included. The head (`H`) holds the count and
//! the last chain hash. A batch of entries, their bodies and the new head
//! are written in one atomic sled batch on that one tree and flushed
//! (fsync) before any op of it is acknowledged. (One tree, not two: a sled
//! transaction over two trees cost the writer more than the rest of the
//! append, a quarter of the replication rate. Folders written before step
//! 9 kept the body inside the entry, and the first step 9 layout kept
//! bodies in a tree `ops`; both are converted on their first start, see
//! [`Store::open_checked`].)
//!
//! ## Start without re-verifying (issue 12, item 2)
//!
//! Signatures were checked before an op was appended, so a start does not
//! check them again. It walks the chain instead — no JSON decoding: each
//! entry's chain hash must follow from the previous one, and the set of
//! `(cid, body hash)` pairs of the log must equal the set of
//! `(cid, blake3(body))` pairs of the stored bodies (an order-free digest of
//! each side, and the counts), so an altered, dropped, reordered or added
//! entry or body makes the node refuse to start, naming the entry. Then the
//! newest [`Checkpoint`] of the ledger is loaded if it matches a prefix of
//! the log (its count, the chain hash and the op-set digest at that count
//! — both computed during the walk — MACed with a
//! node-local secret, `checkpoint.key`), and only the entries after it are
//! replayed ([`did_core::Ledger::replay_trusted`]: every rule but the
//! signature). A checkpoint that fails its MAC or does not match the log is
//! refused like a tampered log (it is part of the data folder): deleting
//! the file makes the node rebuild the ledger from the log.
//!
//! ## Losses sled does not report
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

use did_core::member::NetworkRules;
use did_core::store::OpBodies;
use did_core::{Cid, Ledger, Limits, OpError, Operation};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// The calls into did-core's ledger that a start and a checkpoint make,
/// in one place (issue 12: `Ledger::with_bodies`, `replay_trusted`,
/// `checkpoint`, `restore`).
mod ledger_api {
    use super::*;

    /// An empty ledger whose op bodies live in `bodies`.
    pub fn fresh(
        limits: Limits,
        network: Option<NetworkRules>,
        bodies: Arc<dyn OpBodies>,
    ) -> Ledger {
        let ledger = Ledger::new(limits);
        let ledger = match network {
            Some(rules) => ledger.with_network(rules),
            None => ledger,
        };
        ledger.with_bodies(bodies)
    }

    /// Applies an op of the node's own log, whose signatures were checked
    /// before it was appended.
    pub fn replay_trusted(
        ledger: &mut Ledger,
        op: Operation,
        cid: Cid,
        bytes: Vec<u8>,
    ) -> Result<(), OpError> {
        ledger.replay_trusted(op, cid, bytes)
    }

    pub fn checkpoint(ledger: &Ledger) -> Option<Vec<u8>> {
        Some(ledger.checkpoint())
    }

    pub fn restore(
        bytes: &[u8],
        limits: Limits,
        network: Option<NetworkRules>,
        bodies: Arc<dyn OpBodies>,
    ) -> Result<Ledger, OpError> {
        Ledger::restore(bytes, limits, network, bodies)
    }
}

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
/// Where the first step 9 layout kept op bodies (CID → canonical bytes);
/// moved into the log's tree on start.
const OPS_TREE: &str = "ops";
/// The log's tree.
const LOG_TREE: &str = "oplog";
/// Length of a log entry: previous chain hash, CID, body hash.
const ENTRY_LEN: usize = 96;
/// The newest ledger checkpoint, in the data folder.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// The node-local secret that MACs checkpoints, in the data folder.
pub const CHECKPOINT_KEY_FILE: &str = "checkpoint.key";
/// Format tag at the start of a checkpoint file.
const CHECKPOINT_MAGIC: &[u8; 8] = b"DMCKPT01";
/// Default sled page cache (`--sled-cache-mb`).
pub const DEFAULT_CACHE_MB: u64 = 64;

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
/// Op bodies in the log's tree: `B` ‖ CID → canonical bytes.
const BODY_PREFIX: u8 = b'B';

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
    #[error(
        "the ledger checkpoint {path} {why}. It was altered or corrupted; refusing to start. \
         Delete it to rebuild the ledger from the op log (a slower start), or restore the \
         data folder from a backup."
    )]
    BadCheckpoint { path: String, why: String },
    #[error("cannot write the ledger checkpoint {path}: {why}")]
    CheckpointWrite { path: String, why: String },
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

fn tampered(entry: u64, why: &str) -> StorageError {
    StorageError::Tampered {
        entry,
        why: why.to_string(),
    }
}

/// How far a start has come, for `/healthz` and `/v1/status` while the
/// node loads (lock-free: the loader writes, handlers read).
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    loaded: AtomicU64,
    total: AtomicU64,
}

/// The phases of a start, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Opening the database, reading the checkpoint.
    Opening,
    /// Walking the hash chain and the op bodies (no decoding).
    VerifyingLog,
    /// Loading the checkpoint.
    LoadingCheckpoint,
    /// Replaying the log after the checkpoint.
    Replaying,
    /// Done.
    Ready,
}

impl Progress {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Opening,
            1 => Phase::VerifyingLog,
            2 => Phase::LoadingCheckpoint,
            3 => Phase::Replaying,
            _ => Phase::Ready,
        }
    }

    /// Ops handled in this phase, and how many there are.
    pub fn ops(&self) -> (u64, u64) {
        (
            self.loaded.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    fn enter(&self, phase: Phase, loaded: u64, total: u64) {
        self.loaded.store(loaded, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    fn set_loaded(&self, n: u64) {
        self.loaded.store(n, Ordering::Relaxed);
    }
}

/// Settings of the store.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// sled's page cache, bytes (`--sled-cache-mb`).
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: DEFAULT_CACHE_MB << 20,
        }
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
    /// `ledger.sled/didmesh-acked` (module doc), open for rewriting.
    acked: std::fs::File,
}

/// Op bodies read from the store's log tree ([`OpBodies`] for the
/// ledger). The writer puts a body there in the same atomic batch as its
/// log entry, before the ledger commits the op, so [`OpBodies::keep`] has
/// nothing to do.
#[derive(Clone)]
pub struct SledBodies {
    log: sled::Tree,
}

impl std::fmt::Debug for SledBodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBodies").finish_non_exhaustive()
    }
}

impl OpBodies for SledBodies {
    fn load(&self, cid: &Cid) -> Option<Vec<u8>> {
        match self.log.get(body_key(cid.digest())) {
            Ok(v) => v.map(|v| v.to_vec()),
            Err(e) => {
                tracing::error!(error = %e, "cannot read an op body from sled");
                None
            }
        }
    }

    fn keep(&self, _cid: &Cid, _bytes: &[u8]) {}
}

/// What the chain walk of [`Store::open_checked`] found.
#[derive(Debug, Clone)]
pub struct Walk {
    /// Entries in the log.
    pub count: u64,
    /// The chain hash after `at` entries, when asked for an `at` the log
    /// reaches.
    pub chain_at: Option<[u8; 32]>,
    /// The op-set digest of the first `at` entries, computed as
    /// `Ledger::op_set_digest` does (blake3 of the count, little-endian,
    /// and the XOR of the CIDs), to match a checkpoint's.
    pub digest_at: Option<[u8; 32]>,
}

/// What [`Store::walk_log`] found.
struct LogWalk {
    n: u64,
    running: [u8; 32],
    chain_at: Option<[u8; 32]>,
    digest_at: Option<[u8; 32]>,
    in_log: PairSet,
    converted: u64,
}

/// `Ledger::op_set_digest` of `count` ops whose CIDs XOR to `xor`.
fn op_set_digest(count: u64, xor: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&count.to_le_bytes());
    h.update(xor);
    *h.finalize().as_bytes()
}

/// Reads the acknowledged-watermark file: `None` when absent.
fn read_acked(path: &Path) -> Result<Option<(u64, [u8; 32])>, StorageError> {
    match std::fs::read(path) {
        // Created empty at open, before the first commit.
        Ok(v) if v.is_empty() => Ok(None),
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

fn body_key(cid: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(BODY_PREFIX);
    k.extend_from_slice(cid);
    k
}

fn chain(prev: &[u8; 32], cid: &Cid) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(cid.digest());
    *h.finalize().as_bytes()
}

fn arr32(b: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[..32]);
    a
}

/// An order-free digest of a set of (CID, body hash) pairs: the XOR of
/// each pair's hash, and the count.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct PairSet {
    xor: [u8; 32],
    count: u64,
}

impl PairSet {
    fn add(&mut self, cid: &[u8], body_hash: &[u8]) {
        let mut h = blake3::Hasher::new();
        h.update(cid);
        h.update(body_hash);
        for (x, y) in self.xor.iter_mut().zip(h.finalize().as_bytes()) {
            *x ^= y;
        }
        self.count += 1;
    }
}

/// Runs `f` with the [`opening`] flag set, turning a sled panic into
/// [`StorageError::Damaged`]. Nothing of a failed open is used afterwards
/// (the caller gets an error and stops), so unwind-safety is moot.
fn guarded<T>(f: impl FnOnce() -> Result<T, StorageError>) -> Result<T, StorageError> {
    struct Opening;
    impl Drop for Opening {
        fn drop(&mut self) {
            OPENING.with(|o| o.set(false));
        }
    }
    OPENING.with(|o| o.set(true));
    let _opening = Opening;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "sled failed reading it".into());
        Err(StorageError::Damaged(what))
    })
}

/// What a ledger is built from at start.
#[derive(Debug, Clone)]
pub struct LedgerBase {
    pub limits: Limits,
    pub network: Option<NetworkRules>,
}

/// What [`load`] did, for the start log line.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    /// Ops taken from the checkpoint (0: none used).
    pub from_checkpoint: u64,
    /// Ops replayed from the log.
    pub replayed: u64,
}

/// Opens the data folder `dir`: verifies the log ([`Store::open_checked`]),
/// loads the checkpoint if there is one and replays the rest (module doc).
pub fn load(
    dir: &Path,
    options: StoreOptions,
    base: LedgerBase,
    checkpoints: &Checkpoints,
    progress: &Progress,
) -> Result<(Store, Ledger, Loaded), StorageError> {
    guarded(|| {
        let checkpoint = checkpoints.read()?;
        let (store, walk) =
            Store::open_inner(dir, options, checkpoint.as_ref().map(|c| c.count), progress)?;
        let bodies: Arc<dyn OpBodies> = Arc::new(store.bodies());
        let (mut ledger, from) = match checkpoint {
            None => (ledger_api::fresh(base.limits, base.network, bodies), 0),
            Some(cp) => {
                let bad = |why: String| StorageError::BadCheckpoint {
                    path: checkpoints.path.display().to_string(),
                    why,
                };
                if cp.count > walk.count {
                    return Err(bad(format!(
                        "holds {} ops but the op log only {}",
                        cp.count, walk.count
                    )));
                }
                if walk.chain_at != Some(cp.chain) || walk.digest_at != Some(cp.digest) {
                    return Err(bad(format!(
                        "does not match the op log at entry {}",
                        cp.count
                    )));
                }
                progress.enter(Phase::LoadingCheckpoint, 0, cp.count);
                let ledger = ledger_api::restore(&cp.state, base.limits, base.network, bodies)
                    .map_err(|e| bad(format!("cannot be read: {e}")))?;
                if ledger.len() as u64 != cp.count || ledger.op_set_digest() != cp.digest {
                    return Err(bad("does not hold the ops it names".into()));
                }
                progress.set_loaded(cp.count);
                (ledger, cp.count)
            }
        };
        let replayed = store.replay(&mut ledger, from, progress)?;
        progress.enter(Phase::Ready, walk.count, walk.count);
        Ok((
            store,
            ledger,
            Loaded {
                from_checkpoint: from,
                replayed,
            },
        ))
    })
}

impl Store {
    /// Opens the store and replays every entry into `ledger` (no
    /// checkpoint; the default sled cache). For tools and tests.
    pub fn open(dir: &Path, ledger: &mut Ledger) -> Result<Store, StorageError> {
        guarded(|| {
            let progress = Progress::default();
            let (store, _) = Self::open_inner(dir, StoreOptions::default(), None, &progress)?;
            store.replay(ledger, 0, &progress)?;
            Ok(store)
        })
    }

    /// Opens the store and walks it (module doc): the chain, the acked
    /// record, the head, and the bodies against the log, without decoding
    /// an op. `at`: also report the chain hash after that many entries.
    pub fn open_checked(
        dir: &Path,
        options: StoreOptions,
        at: Option<u64>,
        progress: &Progress,
    ) -> Result<(Store, Walk), StorageError> {
        guarded(|| Self::open_inner(dir, options, at, progress))
    }

    fn open_inner(
        dir: &Path,
        options: StoreOptions,
        at: Option<u64>,
        progress: &Progress,
    ) -> Result<(Store, Walk), StorageError> {
        let db = sled::Config::new()
            .path(dir.join("ledger.sled"))
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(options.cache_bytes)
            .open()
            .map_err(read_error)?;
        let log = db.open_tree(LOG_TREE).map_err(read_error)?;
        Self::move_ops_tree(&db, &log)?;
        let acked_path = dir.join("ledger.sled").join(ACKED_FILE);
        let acked = read_acked(&acked_path)?;

        let (want_count, want_head) = match log.get(HEAD_KEY).map_err(read_error)? {
            None => (0, [0u8; 32]),
            Some(v) if v.len() == 40 => {
                let mut count = [0u8; 8];
                count.copy_from_slice(&v[..8]);
                (u64::from_be_bytes(count), arr32(&v[8..]))
            }
            Some(_) => return Err(tampered(0, "head record has the wrong size")),
        };
        progress.enter(Phase::VerifyingLog, 0, want_count);

        // The two walks are independent: the bodies are hashed on a
        // second thread while this one follows the chain.
        let stop = AtomicBool::new(false);
        let (walked, bodies) = std::thread::scope(|s| {
            let bodies = s.spawn(|| guarded(|| Self::hash_bodies(&log, &stop)));
            let walked = Self::walk_log(&db, &log, at, acked, progress);
            if walked.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            let bodies = bodies
                .join()
                .unwrap_or_else(|_| Err(StorageError::Damaged("sled failed reading it".into())));
            (walked, bodies)
        });
        let LogWalk {
            n,
            running,
            chain_at,
            digest_at,
            in_log,
            converted,
        } = walked?;
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
        // Bodies moved beside their entries by the walk may have been
        // missed by the concurrent hashing: hash them again, alone.
        let in_ops = match bodies? {
            Some(in_ops) if converted == 0 => in_ops,
            _ => Self::hash_bodies(&log, &AtomicBool::new(false))?.unwrap_or_default(),
        };
        if in_ops != in_log {
            return Err(Self::body_mismatch(&log));
        }
        let acked = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&acked_path)
            .map_err(|e| StorageError::Write(sled::Error::Io(e)))?;
        let store = Store {
            db,
            log,
            count: n,
            head: running,
            acked,
        };
        Ok((
            store,
            Walk {
                count: n,
                chain_at,
                digest_at,
            },
        ))
    }

    /// The chain walk of the log entries (module doc): order, chain
    /// hashes, the acked record, the chain hash and op-set digest at
    /// `at`; old-layout entries converted on the way.
    fn walk_log(
        db: &sled::Db,
        log: &sled::Tree,
        at: Option<u64>,
        acked: Option<(u64, [u8; 32])>,
        progress: &Progress,
    ) -> Result<LogWalk, StorageError> {
        let mut running = [0u8; 32];
        let mut n = 0u64;
        let mut chain_at = (at == Some(0)).then_some(running);
        let mut cid_xor = [0u8; 32];
        let mut digest_at = (at == Some(0)).then(|| op_set_digest(0, &cid_xor));
        let mut in_log = PairSet::default();
        // Entries of a folder written before step 9 (body inside the
        // entry), converted in batches as the walk meets them.
        let mut convert = sled::Batch::default();
        let mut converting = 0usize;
        let mut converted = 0u64;
        for item in log.scan_prefix([LOG_PREFIX]) {
            let (key, value) = item.map_err(read_error)?;
            if key.as_ref() != log_key(n) {
                return Err(tampered(n, "entries are missing or out of order"));
            }
            if value.len() < ENTRY_LEN {
                return Err(tampered(n, "entry is truncated"));
            }
            if value[..32] != running {
                return Err(tampered(n, "chain hash does not match the previous entry"));
            }
            let cid = Cid(arr32(&value[32..64]));
            let body_hash = if value.len() == ENTRY_LEN {
                arr32(&value[64..])
            } else {
                // The old layout: decoded once, to check the body names
                // its CID, then moved beside the entry.
                let bytes = &value[64..];
                let (_, named) = Operation::from_canonical_json(bytes)
                    .map_err(|e| tampered(n, &e.to_string()))?;
                if named != cid {
                    return Err(tampered(n, "op bytes do not match their CID"));
                }
                let body_hash = *blake3::hash(bytes).as_bytes();
                let mut entry = value[..64].to_vec();
                entry.extend_from_slice(&body_hash);
                convert.insert(key.as_ref(), entry);
                convert.insert(body_key(cid.digest()), bytes);
                converting += 1;
                if converting == 4096 {
                    Self::convert(db, log, &mut convert)?;
                    converted += converting as u64;
                    converting = 0;
                }
                body_hash
            };
            in_log.add(cid.digest(), &body_hash);
            running = chain(&running, &cid);
            for (x, y) in cid_xor.iter_mut().zip(cid.digest()) {
                *x ^= y;
            }
            n += 1;
            if Some(n) == at {
                chain_at = Some(running);
                digest_at = Some(op_set_digest(n, &cid_xor));
            }
            if n % 4096 == 0 {
                progress.set_loaded(n);
            }
            if let Some((count, head)) = acked {
                if n == count && running != head {
                    return Err(StorageError::Damaged(format!(
                        "the op log differs from what this node acknowledged at entry {count}"
                    )));
                }
            }
        }
        if converting > 0 {
            Self::convert(db, log, &mut convert)?;
            converted += converting as u64;
        }
        if converted > 0 {
            tracing::info!(
                entries = converted,
                "op log converted to the step 9 layout (bodies beside the entries)"
            );
        }
        Ok(LogWalk {
            n,
            running,
            chain_at,
            digest_at,
            in_log,
            converted,
        })
    }

    /// The bodies, each hashed once, in key order (a sequential read);
    /// `None` when `stop` was set before the end.
    fn hash_bodies(log: &sled::Tree, stop: &AtomicBool) -> Result<Option<PairSet>, StorageError> {
        let mut in_ops = PairSet::default();
        for item in log.scan_prefix([BODY_PREFIX]) {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let (key, value) = item.map_err(read_error)?;
            in_ops.add(&key[1..], blake3::hash(&value).as_bytes());
        }
        Ok(Some(in_ops))
    }

    /// Writes a batch of converted old-layout entries with their bodies
    /// (one atomic batch).
    fn convert(
        db: &sled::Db,
        log: &sled::Tree,
        batch: &mut sled::Batch,
    ) -> Result<(), StorageError> {
        let batch = std::mem::take(batch);
        gated(|| {
            log.apply_batch(batch)?;
            db.flush()
        })
        .map_err(StorageError::Write)?;
        Ok(())
    }

    /// Moves the bodies of the first step 9 layout (tree `ops`) into the
    /// log's tree, then drops `ops`. A crash in between leaves every body
    /// in `ops` still (it is dropped last), so the next start moves them
    /// again; the same bytes under the same key.
    fn move_ops_tree(db: &sled::Db, log: &sled::Tree) -> Result<(), StorageError> {
        let exists = db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == OPS_TREE.as_bytes());
        if !exists {
            return Ok(());
        }
        let ops = db.open_tree(OPS_TREE).map_err(read_error)?;
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        let mut moved = 0u64;
        for item in ops.iter() {
            let (key, value) = item.map_err(read_error)?;
            batch.insert(body_key(&key), value);
            pending += 1;
            if pending == 4096 {
                Self::convert(db, log, &mut batch)?;
                moved += pending as u64;
                pending = 0;
            }
        }
        if pending > 0 {
            Self::convert(db, log, &mut batch)?;
            moved += pending as u64;
        }
        gated(|| {
            db.drop_tree(OPS_TREE)?;
            db.flush()
        })
        .map_err(StorageError::Write)?;
        if moved > 0 {
            tracing::info!(bodies = moved, "op bodies moved into the op log's tree");
        }
        Ok(())
    }

    /// The bodies differ from the log: finds the first entry to blame (a
    /// second walk, on this failure path only).
    fn body_mismatch(log: &sled::Tree) -> StorageError {
        let mut seen = std::collections::HashSet::new();
        for (n, item) in log.scan_prefix([LOG_PREFIX]).enumerate() {
            let n = n as u64;
            let Ok((_, value)) = item else {
                return StorageError::Damaged("the op log became unreadable".into());
            };
            let cid = arr32(&value[32..64]);
            if !seen.insert(cid) {
                return tampered(n, "op appears twice");
            }
            match log.get(body_key(&cid)) {
                Ok(Some(body)) if blake3::hash(&body).as_bytes()[..] == value[64..96] => {}
                Ok(Some(_)) => return tampered(n, "op bytes do not match the log"),
                Ok(None) => return tampered(n, "op body is missing"),
                Err(e) => return read_error(e),
            }
        }
        StorageError::Damaged("the op store holds ops the log does not list".into())
    }

    /// Replays entries `from..` into `ledger` (bodies read from `ops`,
    /// decoded, every ledger rule but the signature checked). Returns how
    /// many.
    fn replay(
        &self,
        ledger: &mut Ledger,
        from: u64,
        progress: &Progress,
    ) -> Result<u64, StorageError> {
        progress.enter(Phase::Replaying, from, self.count);
        let mut n = from;
        for item in self.log.range(log_key(from)..log_key(self.count)) {
            let (_, value) = item.map_err(read_error)?;
            let cid = Cid(arr32(&value[32..64]));
            let bytes = self
                .log
                .get(body_key(cid.digest()))
                .map_err(read_error)?
                .ok_or_else(|| tampered(n, "op body is missing"))?;
            // The ledger checks the canonical form and the CID.
            let op = Operation::from_json(&bytes).map_err(|e| tampered(n, &e.to_string()))?;
            ledger_api::replay_trusted(ledger, op, cid, bytes.to_vec())
                .map_err(|e| tampered(n, &format!("op no longer validates: {e}")))?;
            n += 1;
            if n % 1024 == 0 {
                progress.set_loaded(n);
            }
        }
        Ok(n - from)
    }

    /// The op bodies, for the ledger.
    pub fn bodies(&self) -> SledBodies {
        SledBodies {
            log: self.log.clone(),
        }
    }

    /// The chain hash after `n` entries (`n` ≤ [`Self::count`]).
    pub fn chain_at(&self, n: u64) -> Result<[u8; 32], StorageError> {
        if n == self.count {
            return Ok(self.head);
        }
        if n == 0 {
            return Ok([0u8; 32]);
        }
        // Entry n starts with the chain hash after n entries.
        match self.log.get(log_key(n)).map_err(read_error)? {
            Some(v) if v.len() >= 32 && n < self.count => Ok(arr32(&v)),
            _ => Err(tampered(n, "entry is missing")),
        }
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
            let mut value = Vec::with_capacity(ENTRY_LEN);
            value.extend_from_slice(&running);
            value.extend_from_slice(cid.digest());
            value.extend_from_slice(blake3::hash(bytes).as_bytes());
            batch.insert(&log_key(n), value);
            batch.insert(body_key(cid.digest()), *bytes);
            running = chain(&running, cid);
            n += 1;
        }
        let mut head = Vec::with_capacity(40);
        head.extend_from_slice(&n.to_be_bytes());
        head.extend_from_slice(&running);
        batch.insert(HEAD_KEY, head);
        // One atomic batch on one tree: an entry is never durable without
        // its body, nor a body without its entry.
        gated(|| {
            self.log.apply_batch(batch)?;
            self.db.flush()
        })
        .map_err(StorageError::Write)?;
        self.count = n;
        self.head = running;
        self.record_acked()
    }

    /// Writes the acknowledged watermark (module doc): 40 bytes over the
    /// old ones, in one `pwrite` to a file kept open (inside one disk
    /// sector, so never torn; a temporary file and a rename per commit
    /// cost the writer more than sled's append). No fsync: the file may
    /// lag sled after a power cut, which only weakens the check, never
    /// refuses a good log.
    fn record_acked(&self) -> Result<(), StorageError> {
        use std::os::unix::fs::FileExt as _;
        let mut v = [0u8; 40];
        v[..8].copy_from_slice(&self.count.to_be_bytes());
        v[8..].copy_from_slice(&self.head);
        self.acked
            .write_all_at(&v, 0)
            .map_err(|e| StorageError::Write(sled::Error::Io(e)))
    }

    /// A named sled tree of this store's database, next to the op log, for
    /// node-local state that must survive a restart (the passkey sign
    /// counters of [`crate::oidc::counters`]). Never the log's own trees.
    pub fn side_tree(&self, name: &str) -> Result<sled::Tree, StorageError> {
        if [LOG_TREE, OPS_TREE, "__sled__default"].contains(&name) {
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

    /// Bytes the database takes on disk (sled's estimate).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// A checkpoint of the ledger: its state after the first `count` log
/// entries (module doc).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Log entries (= ledger ops) it covers.
    pub count: u64,
    /// The chain hash after `count` entries.
    pub chain: [u8; 32],
    /// The ledger's `op_set_digest` then.
    pub digest: [u8; 32],
    /// `Ledger::checkpoint` bytes.
    pub state: Vec<u8>,
}

/// The checkpoint file of a data folder and the secret that MACs it.
pub struct Checkpoints {
    path: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Checkpoints")
            .field("path", &self.path)
            .finish()
    }
}

impl Checkpoints {
    /// The checkpoints of `dir`; creates the secret on first use
    /// (`checkpoint.key`, 32 random bytes, owner-only).
    pub fn open(dir: &Path) -> Result<Checkpoints, StorageError> {
        let key_path = dir.join(CHECKPOINT_KEY_FILE);
        let path = dir.join(CHECKPOINT_FILE);
        let key = match std::fs::read(&key_path) {
            Ok(k) if k.len() == 32 => arr32(&k),
            Ok(_) => {
                return Err(StorageError::BadCheckpoint {
                    path: key_path.display().to_string(),
                    why: "(the checkpoint secret) has the wrong size".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                write_private(&key_path, &key).map_err(|e| StorageError::CheckpointWrite {
                    path: key_path.display().to_string(),
                    why: e.to_string(),
                })?;
                key
            }
            Err(e) => {
                return Err(StorageError::Damaged(format!(
                    "{}: {e}",
                    key_path.display()
                )))
            }
        };
        Ok(Checkpoints { path, key })
    }

    /// The checkpoint file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.key, bytes).as_bytes()
    }

    /// Reads the checkpoint: `None` when there is none; an error when it
    /// fails its MAC or its format.
    pub fn read(&self) -> Result<Option<Checkpoint>, StorageError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StorageError::BadCheckpoint {
                    path: self.path.display().to_string(),
                    why: format!("cannot be read ({e})"),
                })
            }
        };
        let bad = |why: &str| StorageError::BadCheckpoint {
            path: self.path.display().to_string(),
            why: why.to_string(),
        };
        // magic ‖ count ‖ chain ‖ digest ‖ state ‖ MAC
        let fixed = 8 + 8 + 32 + 32;
        if bytes.len() < fixed + 32 || &bytes[..8] != CHECKPOINT_MAGIC {
            return Err(bad("is not a didmesh checkpoint"));
        }
        let (body, mac) = bytes.split_at(bytes.len() - 32);
        let want = self.mac(body);
        // Constant time is moot for a local file, but costs nothing.
        if !subtle_eq(&want, mac) {
            return Err(bad("fails its integrity check (MAC)"));
        }
        let mut count = [0u8; 8];
        count.copy_from_slice(&body[8..16]);
        Ok(Some(Checkpoint {
            count: u64::from_be_bytes(count),
            chain: arr32(&body[16..48]),
            digest: arr32(&body[48..80]),
            state: body[fixed..].to_vec(),
        }))
    }

    /// Writes `cp` as the newest checkpoint (temporary file, fsync,
    /// rename: a crash leaves the old one or the new one).
    pub fn write(&self, cp: &Checkpoint) -> Result<(), StorageError> {
        let mut bytes = Vec::with_capacity(8 + 8 + 64 + cp.state.len() + 32);
        bytes.extend_from_slice(CHECKPOINT_MAGIC);
        bytes.extend_from_slice(&cp.count.to_be_bytes());
        bytes.extend_from_slice(&cp.chain);
        bytes.extend_from_slice(&cp.digest);
        bytes.extend_from_slice(&cp.state);
        let mac = self.mac(&bytes);
        bytes.extend_from_slice(&mac);
        let tmp = self.path.with_extension("tmp");
        write_private(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| StorageError::CheckpointWrite {
                path: self.path.display().to_string(),
                why: e.to_string(),
            })
    }
}

/// Equality of two byte strings without an early exit.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Writes `bytes` to `path` readable by the owner only, and fsyncs it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Takes a checkpoint of `ledger`, whose ops are the first `ledger.len()`
/// entries of `store`'s log. `None` when the ledger cannot make one.
/// The ledger lock is held only while the state is serialized.
pub fn take_checkpoint(
    ledger: &std::sync::RwLock<Ledger>,
    store: &std::sync::RwLock<Store>,
) -> Result<Option<Checkpoint>, StorageError> {
    let poisoned = |what: &str| StorageError::CheckpointWrite {
        path: CHECKPOINT_FILE.into(),
        why: format!("the {what} lock is poisoned"),
    };
    // The writer appends to the log, then commits to the ledger under its
    // write lock in log order: under the read lock the ledger's ops are a
    // prefix of the log.
    let (state, count, digest) = {
        let l = ledger.read().map_err(|_| poisoned("ledger"))?;
        let Some(state) = ledger_api::checkpoint(&l) else {
            return Ok(None);
        };
        (state, l.len() as u64, l.op_set_digest())
    };
    let chain = store
        .read()
        .map_err(|_| poisoned("op log"))?
        .chain_at(count)?;
    Ok(Some(Checkpoint {
        count,
        chain,
        digest,
        state,
    }))
}
