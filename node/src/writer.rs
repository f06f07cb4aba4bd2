//! The single writer: validates submitted ops against the ledger, appends
//! them to the log in group commits (one fsync per batch), then makes them
//! visible in the in-memory ledger and acknowledges them. An op is never
//! visible or acknowledged before it is durable.
//!
//! A writer thread that cannot start is a start-up error
//! ([`Writer::start`] fails, the node exits). A poisoned lock (some thread
//! panicked while holding the ledger or the store) stops the writer: the
//! requests in hand are answered with a storage error, later ones with
//! `Unavailable` (503), and the log says to restart, which re-verifies the
//! log and rebuilds the ledger from it.
//!
//! Signatures are checked once per op on this node (issue 12, item 1): an
//! op that arrives with a [`SigVerified`] proof (p2p ingest) or already
//! validated (gossip) is not checked again, and the ops of a round that
//! arrive without one (HTTP bursts) are checked together on all cores
//! ([`verify_on_all_cores`]) before the ledger lock is taken, not one by
//! one on this thread.

use crate::storage::Store;
use did_core::op::Form;
use did_core::verify::{verify_batch, SigVerified};
use did_core::{Check, Cid, Ledger, Limits, OpError, Operation, Validated};
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
    /// Signatures already checked on this node ([`Writer::submit_verified`]
    /// or the round's own check): validation skips them.
    proof: Option<SigVerified>,
    /// The op's canonical form, when the submitter has it
    /// ([`Writer::submit_formed`]): validation does not encode it again.
    form: Option<Form>,
}

/// Ops checked per thread at least: below, a thread costs more than it
/// saves.
const MIN_PER_THREAD: usize = 8;

/// Checks the signatures of `ops` spread over all cores (rayon's pool),
/// each op once.
/// Per op: its canonical form and the check's result, or `None` when the
/// op is not well-formed (validation then says why). Blocking: call it
/// from a blocking thread, never from an async task.
pub fn verify_on_all_cores(
    ops: &[&Operation],
    limits: &Limits,
) -> Vec<Option<(Form, Result<SigVerified, OpError>)>> {
    on_all_cores(ops, |part: &[&Operation]| {
        let forms: Vec<Option<Form>> = part.iter().map(|op| op.check_form(limits).ok()).collect();
        let items: Vec<(&Operation, &Form)> = part
            .iter()
            .zip(&forms)
            .filter_map(|(op, f)| Some((*op, f.as_ref()?)))
            .collect();
        let mut results = verify_batch(&items).into_iter();
        forms
            .into_iter()
            .map(|f| Some((f?, results.next()?)))
            .collect()
    })
}

/// [`verify_on_all_cores`] for ops whose canonical forms are known (each
/// must be its op's own, as parsed: [`did_core::ingest::Received`]): the
/// rules and the signatures are checked, nothing is encoded again. `None`
/// for an op that breaks a rule (validation then says why).
pub fn verify_formed_on_all_cores(
    items: &[(&Operation, &Form)],
    limits: &Limits,
) -> Vec<Option<Result<SigVerified, OpError>>> {
    on_all_cores(items, |part: &[(&Operation, &Form)]| {
        let good: Vec<bool> = part
            .iter()
            .map(|(op, form)| op.check_formed(form, limits).is_ok())
            .collect();
        let ok: Vec<(&Operation, &Form)> = part
            .iter()
            .zip(&good)
            .filter(|(_, g)| **g)
            .map(|(item, _)| *item)
            .collect();
        let mut results = verify_batch(&ok).into_iter();
        good.into_iter()
            .map(|g| if g { results.next() } else { None })
            .collect()
    })
}

/// `check` over `items`, split over rayon's pool (a thread per core, kept
/// for the node's life; at least [`MIN_PER_THREAD`] items each), results
/// in order.
fn on_all_cores<T: Sync, R: Send + Default>(
    items: &[T],
    check: impl Fn(&[T]) -> Vec<R> + Sync,
) -> Vec<R> {
    use rayon::prelude::*;
    let per = items
        .len()
        .div_ceil(rayon::current_num_threads())
        .max(MIN_PER_THREAD);
    if items.len() <= per {
        return check(items);
    }
    let parts: Vec<Vec<R>> = items
        .par_chunks(per)
        .map(|part| {
            // A panic in a check (none is expected) leaves those ops
            // unchecked (`R::default()`, one per op: the results stay in
            // step with the ops) to the writer's own validation.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(part)))
                .unwrap_or_else(|_| part.iter().map(|_| R::default()).collect())
        })
        .collect();
    parts.into_iter().flatten().collect()
}

/// A cheap handle to submit ops; clone freely.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
    committed: broadcast::Sender<Arc<Validated>>,
}

impl Writer {
    /// Starts the writer thread over `store` and `ledger`; fails when the
    /// thread cannot be spawned.
    pub fn start(
        store: Store,
        ledger: Arc<RwLock<Ledger>>,
    ) -> std::io::Result<(Writer, Arc<RwLock<Store>>)> {
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
            .spawn(move || worker.run())?;
        Ok((Writer { tx, committed }, store))
    }

    /// Submits an op and waits until it is durable (or refused).
    pub async fn submit(
        &self,
        op: Operation,
        allow_orphan: bool,
    ) -> Result<Submitted, SubmitError> {
        self.send(op, None, None, allow_orphan).await
    }

    /// Submits an op whose signatures were checked on this node
    /// ([`did_core::verify`]): the writer validates everything else
    /// ([`Ledger::validate_verified`]), not the signatures again.
    pub async fn submit_verified(
        &self,
        op: Operation,
        proof: SigVerified,
        allow_orphan: bool,
    ) -> Result<Submitted, SubmitError> {
        self.send(op, Some(proof), None, allow_orphan).await
    }

    /// [`Writer::submit_verified`] for an op whose canonical `form` is
    /// known (it must be `op`'s own: [`Ledger::validate_formed`]).
    pub async fn submit_formed(
        &self,
        op: Operation,
        form: Form,
        proof: SigVerified,
        allow_orphan: bool,
    ) -> Result<Submitted, SubmitError> {
        self.send(op, Some(proof), Some(form), allow_orphan).await
    }

    /// Queues one op (with its signature proof, if any) and waits for the
    /// writer's answer.
    async fn send(
        &self,
        op: Operation,
        proof: Option<SigVerified>,
        form: Option<Form>,
        allow_orphan: bool,
    ) -> Result<Submitted, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request {
                op,
                allow_orphan,
                reply: Some(reply),
                pre: None,
                proof,
                form,
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
                proof: None,
                form: None,
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
            self.verify_unchecked(&mut pending);
            match self.round(std::mem::take(&mut pending)) {
                Ok(retry) => pending = retry,
                Err(Poisoned(what)) => {
                    tracing::error!(
                        "the {what} lock is poisoned; the ledger writer stops and the node \
                         refuses writes: restart it (the op log is verified on start)"
                    );
                    return;
                }
            }
        }
    }

    /// Checks, on all cores, the signatures of the requests that come
    /// without a proof (HTTP submissions, released orphans) and that the
    /// ledger does not hold; each gets its
    /// proof, so [`WriterLoop::round`] does not check it again. A failed
    /// check leaves the request without one: validation then refuses it
    /// with the reason.
    fn verify_unchecked(&self, pending: &mut [Request]) {
        let todo: Vec<usize> = (0..pending.len())
            .filter(|i| pending[*i].pre.is_none() && pending[*i].proof.is_none())
            .collect();
        if todo.is_empty() {
            return;
        }
        // A held op (a client's retry) needs no check: the round answers
        // it as known.
        let (limits, todo) = {
            let Ok(ledger) = self.ledger.read() else {
                return; // round() answers them with the poisoned-lock error
            };
            let todo: Vec<usize> = todo
                .into_iter()
                .filter(|i| !pending[*i].op.cid().is_ok_and(|c| ledger.contains(&c)))
                .collect();
            (*ledger.limits(), todo)
        };
        if todo.is_empty() {
            return;
        }
        let ops: Vec<&Operation> = todo.iter().map(|i| &pending[*i].op).collect();
        let checked = verify_on_all_cores(&ops, &limits);
        for (i, c) in todo.into_iter().zip(checked) {
            if let Some((form, Ok(proof))) = c {
                pending[i].proof = Some(proof);
                pending[i].form = Some(form);
            }
        }
    }

    /// One group commit. Returns requests to retry in the next round
    /// (children whose parent is in this batch, and released orphans), or
    /// [`Poisoned`] after answering every request in hand with an error.
    fn round(&mut self, requests: Vec<Request>) -> Result<Vec<Request>, Poisoned> {
        let mut batch: Vec<(Validated, Reply)> = vec![];
        let mut in_batch: HashSet<Cid> = HashSet::new();
        let mut later = vec![];
        let mut orphans = vec![];
        let mut dup_waiters = vec![];
        {
            let Ok(ledger) = self.ledger.read() else {
                fail(requests.into_iter().map(|r| r.reply), LEDGER_POISONED);
                return Err(Poisoned("ledger"));
            };
            for mut req in requests {
                let check = match req.pre.take() {
                    Some(v) if ledger.contains(&v.cid) => Ok(Check::Known(v.cid)),
                    Some(v) => Ok(Check::New(v)),
                    None => match (&req.proof, req.form.take()) {
                        (Some(proof), Some(form)) => {
                            ledger.validate_formed(&req.op, form, Some(proof))
                        }
                        (Some(proof), None) => ledger.validate_verified(&req.op, proof),
                        (None, _) => ledger.validate(&req.op),
                    },
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
                            orphans.push((req.op, req.reply));
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
            let Ok(mut ledger) = self.ledger.write() else {
                let replies = orphans.into_iter().map(|(_, r)| r);
                let rest = later.into_iter().map(|r| r.reply);
                let batch = batch.into_iter().map(|(_, r)| r);
                fail(replies.chain(rest).chain(batch), LEDGER_POISONED);
                return Err(Poisoned("ledger"));
            };
            for (op, r) in orphans {
                ledger.park_orphan(op);
                reply(r, Ok(Submitted::Orphaned));
            }
        }
        if batch.is_empty() {
            return Ok(later);
        }
        let written = {
            let entries: Vec<(Cid, &[u8])> = batch
                .iter()
                .map(|(v, _)| (v.cid, v.bytes.as_slice()))
                .collect();
            let Ok(mut store) = self.store.write() else {
                let rest = later.into_iter().map(|r| r.reply);
                fail(
                    batch.into_iter().map(|(_, r)| r).chain(rest),
                    "op log lock poisoned",
                );
                return Err(Poisoned("op log"));
            };
            store.append_durable(&entries)
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "op log write failed; ops not acknowledged");
            for (_, r) in batch {
                reply(r, Err(SubmitError::Storage(e.to_string())));
            }
            return Ok(later);
        }
        let mut retry = later;
        {
            let Ok(mut ledger) = self.ledger.write() else {
                // Durable in the log, so a restart makes them visible;
                // until then they are not acknowledged.
                let rest = retry.into_iter().map(|r| r.reply);
                fail(
                    batch.into_iter().map(|(_, r)| r).chain(rest),
                    "written to the op log but not applied: ledger lock poisoned",
                );
                return Err(Poisoned("ledger"));
            };
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
                        proof: None,
                        form: None,
                    });
                }
                let _ = self.committed.send(shared);
                reply(r, Ok(Submitted::Created(cid)));
            }
        }
        for (cid, r) in dup_waiters {
            reply(r, Ok(Submitted::Existing(cid)));
        }
        Ok(retry)
    }
}

/// A lock the writer needs is poisoned; names it.
struct Poisoned(&'static str);

const LEDGER_POISONED: &str = "ledger lock poisoned";

/// Answers every `replies` with a storage error.
fn fail(replies: impl Iterator<Item = Reply>, why: &str) {
    for r in replies {
        reply(r, Err(SubmitError::Storage(why.into())));
    }
}

fn reply(to: Reply, r: Result<Submitted, SubmitError>) {
    if let Some(tx) = to {
        let _ = tx.send(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use did_core::keys::public_of;
    use did_core::DidState;
    use ed25519_dalek::SigningKey;

    fn op(seed: u8) -> Operation {
        let k = SigningKey::from_bytes(&[seed; 32]);
        Operation::create(DidState::single_key(public_of(&k)), 1_800_000_000, &k).unwrap()
    }

    /// A poisoned ledger lock is an error the submitter sees, naming the
    /// lock, and the writer stops (later submissions: unavailable), rather
    /// than a dropped request and a writer carrying on with a ledger in an
    /// unknown state.
    #[tokio::test]
    async fn a_poisoned_ledger_stops_the_writer_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::default();
        let store = Store::open(dir.path(), &mut ledger).unwrap();
        let ledger = Arc::new(RwLock::new(ledger));
        let (writer, _store) = Writer::start(store, ledger.clone()).unwrap();
        assert!(matches!(
            writer.submit(op(1), false).await,
            Ok(Submitted::Created(_))
        ));
        let poison = ledger.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poison.write().unwrap();
            panic!("poison the ledger lock");
        })
        .join();
        match writer.submit(op(2), false).await {
            Err(SubmitError::Storage(why)) => assert!(why.contains("ledger lock"), "{why}"),
            other => panic!("expected a storage error, got {other:?}"),
        }
        assert!(matches!(
            writer.submit(op(3), false).await,
            Err(SubmitError::Unavailable)
        ));
    }
}
