//! The bodies of `/didmesh/sync/2` frames: reconciliation messages (the
//! [`crate::sync`] wire format, carried opaquely) and op fetches. Pure
//! encode and decode; the node's libp2p codec reads the length-prefixed
//! frames off a stream and hands the bodies here.
//!
//! ```text
//! frame     = len:u32be body                      one per stream direction
//! request   = 0x01 sync-message                   a reconciliation round
//!           | 0x02 n:u16be cid-digest[32]{n}      fetch these ops (n <= 256)
//!           | 0x03 code[1..=1024]                 consume this authorization code
//! response  = 0x01 sync-message                   the answer ("done" = [0x01])
//!           | 0x02 n:u16be (len:u32be op-bytes){n}  canonical op bytes, in
//!                                                 request order, unknown CIDs left out
//!           | 0x03                                busy: try again later
//!           | 0x04 verdict:u8                     0x00 first use, 0x01 already used,
//!                                                 0x02 refused (not the responder's
//!                                                 code, expired, or older than its start)
//! ```
//!
//! The consume pair makes authorization codes single-use across nodes
//! (node/src/oidc/consume.rs): the node redeeming a code another member
//! issued sends the whole code (its signed text, which names the issuer) to
//! that issuer, which alone remembers which of its codes were used. Frames
//! of the older kinds keep their bytes; a node that predates the consume
//! pair refuses tag 0x03 as an unknown request, which the redeemer treats as
//! a refusal (fail closed).
//!
//! Every count and length is checked against its limit before anything is
//! read; trailing bytes, unknown tags and counts above the limits are
//! errors. A body that decodes re-encodes to the same bytes (one encoding
//! per value), which the `sync_frame` fuzz target checks.

use crate::encoding::Cid;

/// Most CIDs in one fetch request. 256 ops of at most 8 KiB keep a response
/// under [`MAX_RESPONSE_BYTES`] and the writer's batches full.
pub const MAX_FETCH_CIDS: usize = 256;
/// Largest op accepted on the wire (the ledger's own limit is 8 KiB; this is
/// only the framing bound, the ledger still refuses anything above its limit).
pub const MAX_OP_WIRE_BYTES: usize = 16 * 1024;
/// Largest request frame: a reconciliation message at the sync limit, or a
/// full fetch list, plus the tag.
pub const MAX_REQUEST_BYTES: usize = crate::sync::MAX_MESSAGE_BYTES + 1;
/// Longest authorization code carried by a consume request (the node's
/// codes are a few hundred bytes; the bound only caps what a peer may send).
pub const MAX_CODE_BYTES: usize = 1024;
/// Largest response frame.
pub const MAX_RESPONSE_BYTES: usize = 3 + MAX_FETCH_CIDS * (4 + MAX_OP_WIRE_BYTES);

/// Most ops in one gossip bundle ([`encode_bundle`]).
pub const MAX_BUNDLE_OPS: usize = 64;
/// Largest gossip bundle. One op at the wire limit always fits alone.
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024;

const TAG_RECONCILE: u8 = 0x01;
const TAG_FETCH: u8 = 0x02;
const TAG_OPS: u8 = 0x02;
const TAG_BUSY: u8 = 0x03;
const TAG_CONSUME: u8 = 0x03;
const TAG_CONSUMED: u8 = 0x04;

/// The issuer's answer to a consume request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeVerdict {
    /// The code was not used before; it is now.
    FirstUse = 0x00,
    /// The code was consumed before: a replay.
    AlreadyUsed = 0x01,
    /// Not the responder's code, expired, issued before the responder's
    /// start (its memory of used codes begins there), or not a valid code.
    Refused = 0x02,
}

impl ConsumeVerdict {
    fn from_byte(b: u8) -> Option<ConsumeVerdict> {
        match b {
            0x00 => Some(ConsumeVerdict::FirstUse),
            0x01 => Some(ConsumeVerdict::AlreadyUsed),
            0x02 => Some(ConsumeVerdict::Refused),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncRequest {
    /// One reconciliation message ([`crate::sync`] wire format).
    Reconcile(Vec<u8>),
    /// Ops wanted, by CID.
    Fetch(Vec<Cid>),
    /// Consume this authorization code (its full text, 1 to
    /// [`MAX_CODE_BYTES`] bytes), sent to the member that issued it.
    Consume(Vec<u8>),
    /// Inbound only: a request that broke the framing rules, and which rule
    /// (never sent; the receiver punishes the sender).
    Malformed(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncResponse {
    Reconcile(Vec<u8>),
    /// Canonical bytes of the ops asked for that the responder holds.
    Ops(Vec<Vec<u8>>),
    /// The responder is at its limit of concurrent sessions.
    Busy,
    /// The answer to [`SyncRequest::Consume`].
    Consumed(ConsumeVerdict),
}

/// Why a frame body does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("sync frame ends early")]
    EndsEarly,
    #[error("trailing bytes in sync frame")]
    Trailing,
    #[error("fetch count out of bounds")]
    FetchCount,
    #[error("unknown sync request tag")]
    RequestTag,
    #[error("op count out of bounds")]
    OpCount,
    #[error("op length out of bounds")]
    OpLength,
    #[error("unknown sync response tag")]
    ResponseTag,
    #[error("authorization code length out of bounds")]
    CodeLength,
    #[error("unknown consume verdict")]
    Verdict,
    #[error("gossip bundle too large")]
    BundleLength,
}

impl FrameError {
    /// The rule broken, as a static string ([`SyncRequest::Malformed`]).
    pub fn reason(self) -> &'static str {
        match self {
            FrameError::EndsEarly => "sync frame ends early",
            FrameError::Trailing => "trailing bytes in sync frame",
            FrameError::FetchCount => "fetch count out of bounds",
            FrameError::RequestTag => "unknown sync request tag",
            FrameError::OpCount => "op count out of bounds",
            FrameError::OpLength => "op length out of bounds",
            FrameError::ResponseTag => "unknown sync response tag",
            FrameError::CodeLength => "authorization code length out of bounds",
            FrameError::Verdict => "unknown consume verdict",
            FrameError::BundleLength => "gossip bundle too large",
        }
    }
}

/// A cursor over a frame body that never reads past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::EndsEarly);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, FrameError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u32(&mut self) -> Result<usize, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn end(&self) -> Result<(), FrameError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Trailing)
        }
    }
}

impl SyncRequest {
    /// The frame body (empty for [`SyncRequest::Malformed`], which is never
    /// sent). A fetch of more than `u16::MAX` CIDs is cut there; callers
    /// send at most [`MAX_FETCH_CIDS`].
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SyncRequest::Reconcile(m) => [&[TAG_RECONCILE][..], m].concat(),
            SyncRequest::Consume(code) => [&[TAG_CONSUME][..], code].concat(),
            SyncRequest::Malformed(_) => vec![],
            SyncRequest::Fetch(cids) => {
                let cids = &cids[..cids.len().min(usize::from(u16::MAX))];
                let mut out = Vec::with_capacity(3 + 32 * cids.len());
                out.push(TAG_FETCH);
                out.extend_from_slice(&(cids.len() as u16).to_be_bytes());
                for c in cids {
                    out.extend_from_slice(c.digest());
                }
                out
            }
        }
    }

    pub fn decode(body: &[u8]) -> Result<SyncRequest, FrameError> {
        let mut r = Reader(body);
        match r.u8()? {
            TAG_RECONCILE => Ok(SyncRequest::Reconcile(r.0.to_vec())),
            TAG_FETCH => {
                let n = r.u16()?;
                if n == 0 || n > MAX_FETCH_CIDS {
                    return Err(FrameError::FetchCount);
                }
                let mut cids = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut d = [0u8; 32];
                    d.copy_from_slice(r.take(32)?);
                    cids.push(Cid(d));
                }
                r.end()?;
                Ok(SyncRequest::Fetch(cids))
            }
            TAG_CONSUME => {
                if r.0.is_empty() || r.0.len() > MAX_CODE_BYTES {
                    return Err(FrameError::CodeLength);
                }
                Ok(SyncRequest::Consume(r.0.to_vec()))
            }
            _ => Err(FrameError::RequestTag),
        }
    }
}

impl SyncResponse {
    /// The frame body. More than [`MAX_FETCH_CIDS`] ops are cut there.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SyncResponse::Reconcile(m) => [&[TAG_RECONCILE][..], m].concat(),
            SyncResponse::Ops(ops) => {
                let ops = &ops[..ops.len().min(MAX_FETCH_CIDS)];
                let mut out = vec![TAG_OPS];
                write_ops(&mut out, ops);
                out
            }
            SyncResponse::Busy => vec![TAG_BUSY],
            SyncResponse::Consumed(v) => vec![TAG_CONSUMED, *v as u8],
        }
    }

    pub fn decode(body: &[u8]) -> Result<SyncResponse, FrameError> {
        let mut r = Reader(body);
        match r.u8()? {
            TAG_RECONCILE => Ok(SyncResponse::Reconcile(r.0.to_vec())),
            TAG_OPS => {
                let ops = read_ops(&mut r, 0..=MAX_FETCH_CIDS)?;
                r.end()?;
                Ok(SyncResponse::Ops(
                    ops.into_iter().map(<[u8]>::to_vec).collect(),
                ))
            }
            TAG_BUSY => {
                r.end()?;
                Ok(SyncResponse::Busy)
            }
            TAG_CONSUMED => {
                let v = ConsumeVerdict::from_byte(r.u8()?).ok_or(FrameError::Verdict)?;
                r.end()?;
                Ok(SyncResponse::Consumed(v))
            }
            _ => Err(FrameError::ResponseTag),
        }
    }
}

/// `n:u16be (len:u32be op-bytes){n}`: the op list of a fetch response and
/// of a gossip bundle.
fn write_ops<B: AsRef<[u8]>>(out: &mut Vec<u8>, ops: &[B]) {
    out.reserve(2 + ops.iter().map(|o| 4 + o.as_ref().len()).sum::<usize>());
    out.extend_from_slice(&(ops.len() as u16).to_be_bytes());
    for op in ops {
        let op = op.as_ref();
        out.extend_from_slice(&(op.len() as u32).to_be_bytes());
        out.extend_from_slice(op);
    }
}

/// Reads an op list whose count lies in `count`; each op is a borrowed
/// slice of the body.
fn read_ops<'a>(
    r: &mut Reader<'a>,
    count: std::ops::RangeInclusive<usize>,
) -> Result<Vec<&'a [u8]>, FrameError> {
    let n = r.u16()?;
    if !count.contains(&n) {
        return Err(FrameError::OpCount);
    }
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u32()?;
        if len == 0 || len > MAX_OP_WIRE_BYTES {
            return Err(FrameError::OpLength);
        }
        ops.push(r.take(len)?);
    }
    Ok(ops)
}

/// A gossip message: a bundle of 1 to [`MAX_BUNDLE_OPS`] ops' canonical
/// bytes, at most [`MAX_BUNDLE_BYTES`] in all (PROTOCOL.md §5):
///
/// ```text
/// bundle = n:u16be (len:u32be op-bytes){n}       1 <= n <= 64
/// ```
///
/// The caller keeps within the limits ([`bundles`] cuts a list to fit).
pub fn encode_bundle<B: AsRef<[u8]>>(ops: &[B]) -> Vec<u8> {
    let mut out = Vec::new();
    write_ops(&mut out, ops);
    out
}

/// The ops of a gossip bundle, borrowed from it; a bundle that breaks a
/// rule of [`encode_bundle`] is an error.
pub fn decode_bundle(body: &[u8]) -> Result<Vec<&[u8]>, FrameError> {
    if body.len() > MAX_BUNDLE_BYTES {
        return Err(FrameError::BundleLength);
    }
    let mut r = Reader(body);
    let ops = read_ops(&mut r, 1..=MAX_BUNDLE_OPS)?;
    r.end()?;
    Ok(ops)
}

/// The number of ops a bundle says it holds (its first two bytes), for
/// charging a sender before the bundle is read; 1 for a body too short
/// to say, at most [`MAX_BUNDLE_OPS`].
pub fn bundle_len_hint(body: &[u8]) -> usize {
    match body {
        [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])).clamp(1, MAX_BUNDLE_OPS),
        _ => 1,
    }
}

/// Cuts `ops` (each at most [`MAX_OP_WIRE_BYTES`]) into bundles within
/// [`MAX_BUNDLE_OPS`] and [`MAX_BUNDLE_BYTES`], in order.
pub fn bundles<B: AsRef<[u8]>>(ops: &[B]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 2);
    for (i, op) in ops.iter().enumerate() {
        let len = 4 + op.as_ref().len();
        if i > start && (i - start == MAX_BUNDLE_OPS || bytes + len > MAX_BUNDLE_BYTES) {
            out.push(encode_bundle(&ops[start..i]));
            (start, bytes) = (i, 2);
        }
        bytes += len;
    }
    if start < ops.len() {
        out.push(encode_bundle(&ops[start..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let reqs = [
            SyncRequest::Reconcile(vec![1, 2, 3]),
            SyncRequest::Fetch(vec![Cid::of(b"a"), Cid::of(b"b")]),
            SyncRequest::Consume(b"code".to_vec()),
            SyncRequest::Consume(vec![7; MAX_CODE_BYTES]),
        ];
        for r in reqs {
            assert_eq!(SyncRequest::decode(&r.encode()).unwrap(), r);
        }
        let resps = [
            SyncResponse::Reconcile(vec![1]),
            SyncResponse::Ops(vec![b"{}".to_vec(), vec![7; 300]]),
            SyncResponse::Ops(vec![]),
            SyncResponse::Busy,
            SyncResponse::Consumed(ConsumeVerdict::FirstUse),
            SyncResponse::Consumed(ConsumeVerdict::AlreadyUsed),
            SyncResponse::Consumed(ConsumeVerdict::Refused),
        ];
        for r in resps {
            assert_eq!(SyncResponse::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn hostile_bodies_are_refused() {
        let fetch = |n: u16, digests: usize| {
            let mut b = vec![TAG_FETCH];
            b.extend_from_slice(&n.to_be_bytes());
            b.extend_from_slice(&vec![0u8; 32 * digests]);
            b
        };
        assert_eq!(SyncRequest::decode(&[]), Err(FrameError::EndsEarly));
        assert_eq!(
            SyncRequest::decode(&fetch(1000, 0)),
            Err(FrameError::FetchCount)
        );
        assert_eq!(
            SyncRequest::decode(&fetch(0, 0)),
            Err(FrameError::FetchCount)
        );
        assert_eq!(
            SyncRequest::decode(&fetch(2, 1)),
            Err(FrameError::EndsEarly)
        );
        let mut trailing = fetch(1, 1);
        trailing.push(0);
        assert_eq!(SyncRequest::decode(&trailing), Err(FrameError::Trailing));
        assert_eq!(SyncRequest::decode(&[9]), Err(FrameError::RequestTag));
        let mut big = vec![TAG_OPS, 0, 1];
        big.extend_from_slice(&((MAX_OP_WIRE_BYTES + 1) as u32).to_be_bytes());
        assert_eq!(SyncResponse::decode(&big), Err(FrameError::OpLength));
        let mut short = vec![TAG_OPS, 0, 1];
        short.extend_from_slice(&10u32.to_be_bytes());
        short.extend_from_slice(b"abc");
        assert_eq!(SyncResponse::decode(&short), Err(FrameError::EndsEarly));
        assert_eq!(
            SyncResponse::decode(&[TAG_OPS, 0x01, 0x01]),
            Err(FrameError::OpCount)
        );
        assert_eq!(
            SyncResponse::decode(&[TAG_BUSY, 0]),
            Err(FrameError::Trailing)
        );
        assert_eq!(SyncResponse::decode(&[7]), Err(FrameError::ResponseTag));
    }

    #[test]
    fn bundles_round_trip_and_are_cut_to_the_limits() {
        let ops: Vec<Vec<u8>> = (0..150u8).map(|i| vec![i; 1 + usize::from(i)]).collect();
        let b = encode_bundle(&ops[..3]);
        assert_eq!(&b[..2], &[0, 3]);
        assert_eq!(
            decode_bundle(&b).unwrap(),
            vec![&ops[0][..], &ops[1], &ops[2]]
        );
        assert_eq!(bundle_len_hint(&b), 3);
        // By count: 150 small ops make 64 + 64 + 22, in order.
        let cut = bundles(&ops);
        let back: Vec<Vec<&[u8]>> = cut.iter().map(|b| decode_bundle(b).unwrap()).collect();
        assert_eq!(back.iter().map(Vec::len).collect::<Vec<_>>(), [64, 64, 22]);
        let flat: Vec<&[u8]> = back.into_iter().flatten().collect();
        assert_eq!(flat, ops.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // By bytes: ops at the wire limit, as many as fit, one alone at least.
        let big = vec![vec![b'x'; MAX_OP_WIRE_BYTES]; 9];
        let cut = bundles(&big);
        assert!(cut.iter().all(|b| b.len() <= MAX_BUNDLE_BYTES));
        let counts: Vec<usize> = cut
            .iter()
            .map(|b| decode_bundle(b).unwrap().len())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 9);
        assert_eq!(counts[0], (MAX_BUNDLE_BYTES - 2) / (4 + MAX_OP_WIRE_BYTES));
        assert!(bundles::<Vec<u8>>(&[]).is_empty());
    }

    #[test]
    fn hostile_bundles_are_refused() {
        let one = encode_bundle(&[b"op"]);
        assert_eq!(decode_bundle(&[]), Err(FrameError::EndsEarly));
        assert_eq!(decode_bundle(&[0, 0]), Err(FrameError::OpCount));
        assert_eq!(decode_bundle(&[0, 65]), Err(FrameError::OpCount));
        assert_eq!(decode_bundle(&[0xff, 0xff]), Err(FrameError::OpCount));
        assert_eq!(
            decode_bundle(&[0, 1, 0, 0, 0, 0]),
            Err(FrameError::OpLength)
        );
        let over = (MAX_OP_WIRE_BYTES as u32 + 1).to_be_bytes();
        assert_eq!(
            decode_bundle(&[&[0, 1][..], &over].concat()),
            Err(FrameError::OpLength)
        );
        // A length past the end, a second op promised and missing, a tail.
        assert_eq!(
            decode_bundle(&[0, 1, 0, 0, 0, 9, 1]),
            Err(FrameError::EndsEarly)
        );
        let mut two = one.clone();
        two[1] = 2;
        assert_eq!(decode_bundle(&two), Err(FrameError::EndsEarly));
        assert_eq!(
            decode_bundle(&[&one[..], &[0]].concat()),
            Err(FrameError::Trailing)
        );
        // Too large in all, before anything is read.
        let huge = vec![0u8; MAX_BUNDLE_BYTES + 1];
        assert_eq!(decode_bundle(&huge), Err(FrameError::BundleLength));
        // The hint never promises more than a bundle may hold.
        assert_eq!(bundle_len_hint(&[0xff, 0xff]), MAX_BUNDLE_OPS);
        assert_eq!(bundle_len_hint(&[0, 0]), 1);
        assert_eq!(bundle_len_hint(&[7]), 1);
    }

    /// The consume pair added for single-use authorization codes must not
    /// change a byte of the frames nodes already exchange.
    #[test]
    fn older_frames_keep_their_bytes() {
        let cid = Cid([0xab; 32]);
        let mut fetch = vec![0x02, 0x00, 0x01];
        fetch.extend_from_slice(&[0xab; 32]);
        assert_eq!(SyncRequest::Fetch(vec![cid]).encode(), fetch);
        assert_eq!(
            SyncRequest::Reconcile(vec![1, 9]).encode(),
            vec![0x01, 1, 9]
        );
        assert_eq!(SyncResponse::Reconcile(vec![1]).encode(), vec![0x01, 1]);
        assert_eq!(
            SyncResponse::Ops(vec![b"{}".to_vec()]).encode(),
            vec![0x02, 0x00, 0x01, 0, 0, 0, 2, b'{', b'}']
        );
        assert_eq!(SyncResponse::Busy.encode(), vec![0x03]);
        assert_eq!(
            SyncRequest::Consume(b"ab".to_vec()).encode(),
            vec![0x03, b'a', b'b']
        );
        assert_eq!(
            SyncResponse::Consumed(ConsumeVerdict::AlreadyUsed).encode(),
            vec![0x04, 0x01]
        );
    }

    #[test]
    fn hostile_consume_frames_are_refused() {
        assert_eq!(SyncRequest::decode(&[0x03]), Err(FrameError::CodeLength));
        let mut long = vec![0x03];
        long.extend_from_slice(&[b'a'; MAX_CODE_BYTES + 1]);
        assert_eq!(SyncRequest::decode(&long), Err(FrameError::CodeLength));
        assert_eq!(SyncResponse::decode(&[0x04]), Err(FrameError::EndsEarly));
        assert_eq!(SyncResponse::decode(&[0x04, 3]), Err(FrameError::Verdict));
        assert_eq!(
            SyncResponse::decode(&[0x04, 0, 0]),
            Err(FrameError::Trailing)
        );
    }
}
