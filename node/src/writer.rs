//! The single writer: validates submitted ops against the ledger, appends
//! them to the log in group commits (one fsync per batch), then makes them
//! visible in the in-memory ledger and acknowledges them. An op is never
//! visible or acknowledged before it is durable.

use crate::storage::{StorageError, Store};
use did_core::{Check, Cid, Ledger, OpError, Operation, Validated};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Submissions waiting for the writer. Bounded so a flood of writes gets
/// back-pressure (503) instead of unbounded memory.
pub const SUBMIT_QUEUE: usize = 4096;
/// Most ops written in one group commit.
pub const MAX_BATCH: usize = 512;
/// Committed-op notifications kept for slow subscribers (gossip).
pub const COMMITTED_CHANNEL: usize = 8192;

/// What happened to a submitted op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Newly stored (durable).
    Created(Cid),
    /// Already held.
    Existing(Cid),
    /// Parent unknown; parked in the orphan pool (only when allowed).
    Orphaned,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Op(#[from] OpError),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the node is shutting down or overloaded")]
    Unavailable,
}

/// Where a submission's outcome goes (`None`: nobody waits, e.g. a
/// released orphan).
type Reply = Option<oneshot::Sender<Result<Submitted, SubmitError>>>;

struct Request {
    op: Operation,
    allow_orphan: bool,
    reply: Reply,
    /// Already validated against this ledger (gossip validation): the
    /// writer skips a second signature check.
    pre: Option<Box<Validated>>,
}

/// A cheap handle to submit ops; clone freely.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
    committed: broadcast::Sender<Arc<Validated>>,
}

impl Writer {
    /// Starts the writer thread over `store` and `ledger`.
    pub fn start(store: Store, ledger: Arc<RwLock<Ledger>>) -> (Writer, Arc<RwLock<Store>>) {
        let (tx, rx) = mpsc::channel(SUBMIT_QUEUE);
        let (committed, _) = broadcast::channel(COMMITTED_CHANNEL);
        let store = Arc::new(RwLock::new(store));
        let worker = WriterLoop {
            rx,
            ledger,
            store: store.clone(),
            committed: committed.clone(),
        };
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || worker.run())
            .map_err(|e| tracing::error!(error = %e, "cannot start the writer thread"))
            .ok();
        (Writer { tx, committed }, store)
    }

    /// Submits an op and waits until it is durable (or refused).
    pub async fn submit(
        &self,
        op: Operation,
        allow_orphan: bool,
    ) -> Result<Submitted, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request {
                op,
                allow_orphan,
                reply: Some(reply),
                pre: None,
            })
            .map_err(|_| SubmitError::Unavailable)?;
        rx.await.map_err(|_| SubmitError::Unavailable)?
    }

    /// Submits an op that [`Ledger::validate`] already accepted on this
    /// node's ledger. Validity depends only on the parent, and parents are
    /// never removed, so the verdict still holds; the writer only dedupes.
    pub async fn submit_validated(&self, v: Validated) -> Result<Submitted, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request {
                op: v.op.clone(),
                allow_orphan: true,
                reply: Some(reply),
                pre: Some(Box::new(v)),
            })
            .map_err(|_| SubmitError::Unavailable)?;
        rx.await.map_err(|_| SubmitError::Unavailable)?
    }

    /// Ops as they become durable, for replication.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Validated>> {
        self.committed.subscribe()
    }
}

struct WriterLoop {
    rx: mpsc::Receiver<Request>,
    ledger: Arc<RwLock<Ledger>>,
    store: Arc<RwLock<Store>>,
    committed: broadcast::Sender<Arc<Validated>>,
}

impl WriterLoop {
    fn run(mut self) {
        let mut pending: Vec<Request> = Vec::new();
        loop {
            if pending.is_empty() {
                match self.rx.blocking_recv() {
                    Some(r) => pending.push(r),
                    None => return,
                }
            }
            while pending.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(r) => pending.push(r),
                    Err(_) => break,
                }
            }
            pending = self.round(std::mem::take(&mut pending));
        }
    }

    /// One group commit. Returns requests to retry in the next round
    /// (children whose parent is in this batch, and released orphans).
    fn round(&mut self, requests: Vec<Request>) -> Vec<Request> {
        let mut batch: Vec<(Validated, Reply)> = vec![];
        let mut in_batch: HashSet<Cid> = HashSet::new();
        let mut later = vec![];
        let mut orphans = vec![];
        let mut dup_waiters = vec![];
        {
            let Ok(ledger) = self.ledger.read() else {
                return vec![];
            };
            for mut req in requests {
                let check = match req.pre.take() {
                    Some(v) if ledger.contains(&v.cid) => Ok(Check::Known(v.cid)),
                    Some(v) => Ok(Check::New(v)),
                    None => ledger.validate(&req.op),
                };
                match check {
                    Ok(Check::Known(cid)) => reply(req.reply, Ok(Submitted::Existing(cid))),
                    Ok(Check::New(v)) => {
                        if in_batch.insert(v.cid) {
                            batch.push((*v, req.reply));
                        } else {
                            dup_waiters.push((v.cid, req.reply));
                        }
                    }
                    Err(OpError::UnknownPrev(p)) => {
                        let parent_in_batch = req.op.prev.is_some_and(|p| in_batch.contains(&p));
                        if parent_in_batch {
                            later.push(req);
                        } else if req.allow_orphan {
                            orphans.push(req.op);
                            reply(req.reply, Ok(Submitted::Orphaned));
                        } else {
                            reply(req.reply, Err(OpError::UnknownPrev(p).into()));
                        }
                    }
                    Err(e) => reply(req.reply, Err(e.into())),
                }
            }
        }
        // Orphans wait in the ledger's bounded pool for their parent.
        if !orphans.is_empty() {
            if let Ok(mut ledger) = self.ledger.write() {
                for op in orphans {
                    ledger.park_orphan(op);
                }
            }
        }
        if batch.is_empty() {
            return later;
        }
        let written = {
            let entries: Vec<(Cid, &[u8])> = batch
                .iter()
                .map(|(v, _)| (v.cid, v.bytes.as_slice()))
                .collect();
            match self.store.write() {
                Ok(mut store) => store.append_durable(&entries),
                Err(_) => Err(StorageError::Tampered {
                    entry: 0,
                    why: "store lock poisoned".into(),
                }),
            }
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "op log write failed; ops not acknowledged");
            for (_, r) in batch {
                reply(r, Err(SubmitError::Storage(e.to_string())));
            }
            return later;
        }
        let mut retry = later;
        if let Ok(mut ledger) = self.ledger.write() {
            for (v, r) in batch {
                let cid = v.cid;
                let shared = Arc::new(v.clone());
                ledger.commit(v);
                for orphan in ledger.release_orphans(&cid) {
                    retry.push(Request {
                        op: orphan,
                        allow_orphan: true,
                        reply: None,
                        pre: None,
                    });
                }
                let _ = self.committed.send(shared);
                reply(r, Ok(Submitted::Created(cid)));
            }
        }
        for (cid, r) in dup_waiters {
            reply(r, Ok(Submitted::Existing(cid)));
        }
        retry
    }
}

fn reply(to: Reply, r: Result<Submitted, SubmitError>) {
    if let Some(tx) = to {
        let _ = tx.send(r);
    }
}
