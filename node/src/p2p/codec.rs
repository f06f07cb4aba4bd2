//! The `/didmesh/sync/1` request-response protocol: reconciliation
//! messages (did-core's [`did_core::sync`] wire format, carried opaquely) and
//! op fetches.
//!
//! ```text
//! frame     = len:u32be body                      one per stream direction
//! request   = 0x01 sync-message                   a reconciliation round
//!           | 0x02 n:u16be cid-digest[32]{n}      fetch these ops (n <= 256)
//! response  = 0x01 sync-message                   the answer ("done" = [0x01])
//!           | 0x02 n:u16be (len:u32be op-bytes){n}  canonical op bytes, in
//!                                                 request order, unknown CIDs left out
//!           | 0x03                                busy: try again later
//! ```
//!
//! Every length is checked against a limit before anything is read, and a
//! frame is read incrementally (at most [`READ_CHUNK`] bytes reserved ahead
//! of what arrived), so a hostile peer cannot make the node allocate more
//! than it actually sends, nor more than the limits. Trailing bytes, unknown
//! tags and counts above the limits are protocol errors. An inbound request
//! that breaks them is delivered as [`SyncRequest::Malformed`] rather than
//! an error, because request-response does not report failed reads with the
//! peer's id, and the event loop must know whom to punish.

use super::metrics::P2pMetrics;
use async_trait::async_trait;
use did_core::Cid;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use std::io;
use std::sync::Arc;

/// Protocol name of anti-entropy.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/didmesh/sync/1");
/// Most CIDs in one fetch request. 256 ops of at most 8 KiB keep a response
/// under [`MAX_RESPONSE_BYTES`] and the writer's batches full.
pub const MAX_FETCH_CIDS: usize = 256;
/// Largest op accepted on the wire (the ledger's own limit is 8 KiB; this is
/// only the framing bound, the ledger still refuses anything above its limit).
pub const MAX_OP_WIRE_BYTES: usize = 16 * 1024;
/// Largest request frame: a reconciliation message at did-core's limit, or a
/// full fetch list, plus the tag.
pub const MAX_REQUEST_BYTES: usize = did_core::sync::MAX_MESSAGE_BYTES + 1;
/// Largest response frame.
pub const MAX_RESPONSE_BYTES: usize = 3 + MAX_FETCH_CIDS * (4 + MAX_OP_WIRE_BYTES);
/// Bytes reserved ahead of the data while a frame is read.
const READ_CHUNK: usize = 64 * 1024;

const TAG_RECONCILE: u8 = 0x01;
const TAG_FETCH: u8 = 0x02;
const TAG_OPS: u8 = 0x02;
const TAG_BUSY: u8 = 0x03;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncRequest {
    /// One reconciliation message (did-core sync wire format).
    Reconcile(Vec<u8>),
    /// Ops wanted, by CID.
    Fetch(Vec<Cid>),
    /// Inbound only: a request that broke the framing rules (never sent).
    Malformed(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncResponse {
    Reconcile(Vec<u8>),
    /// Canonical bytes of the ops asked for that the responder holds.
    Ops(Vec<Vec<u8>>),
    /// The responder is at its limit of concurrent sessions.
    Busy,
}

/// The codec; clones share the byte counters.
#[derive(Clone)]
pub struct SyncCodec {
    pub(crate) metrics: Arc<P2pMetrics>,
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// The reason of an [`invalid`] error, for [`SyncRequest::Malformed`].
fn reason(e: &io::Error) -> Option<&'static str> {
    if e.kind() != io::ErrorKind::InvalidData {
        return None;
    }
    let text = e
        .get_ref()
        .map(|inner| inner.to_string())
        .unwrap_or_default();
    Some(match text.as_str() {
        "sync frame length out of bounds" => "sync frame length out of bounds",
        "fetch count out of bounds" => "fetch count out of bounds",
        "unknown sync request tag" => "unknown sync request tag",
        "trailing bytes in sync frame" => "trailing bytes in sync frame",
        "sync frame ends early" => "sync frame ends early",
        _ => "malformed sync request",
    })
}

/// Reads one length-prefixed frame of at most `max` bytes.
async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > max {
        return Err(invalid("sync frame length out of bounds"));
    }
    let mut buf = Vec::with_capacity(len.min(READ_CHUNK));
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| invalid("frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.close().await
}

/// A cursor over a frame body that never reads past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(invalid("sync frame ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self) -> io::Result<usize> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u32(&mut self) -> io::Result<usize> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn end(&self) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(invalid("trailing bytes in sync frame"))
        }
    }
}

impl SyncRequest {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SyncRequest::Reconcile(m) => [&[TAG_RECONCILE][..], m].concat(),
            SyncRequest::Malformed(_) => vec![],
            SyncRequest::Fetch(cids) => {
                let mut out = Vec::with_capacity(3 + 32 * cids.len());
                out.push(TAG_FETCH);
                out.extend_from_slice(
                    &(cids.len().min(usize::from(u16::MAX)) as u16).to_be_bytes(),
                );
                for c in cids.iter().take(usize::from(u16::MAX)) {
                    out.extend_from_slice(c.digest());
                }
                out
            }
        }
    }

    pub fn decode(body: &[u8]) -> io::Result<SyncRequest> {
        let mut r = Reader(body);
        match r.take(1)?[0] {
            TAG_RECONCILE => Ok(SyncRequest::Reconcile(r.0.to_vec())),
            TAG_FETCH => {
                let n = r.u16()?;
                if n == 0 || n > MAX_FETCH_CIDS {
                    return Err(invalid("fetch count out of bounds"));
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
            _ => Err(invalid("unknown sync request tag")),
        }
    }
}

impl SyncResponse {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SyncResponse::Reconcile(m) => [&[TAG_RECONCILE][..], m].concat(),
            SyncResponse::Ops(ops) => {
                let ops = &ops[..ops.len().min(MAX_FETCH_CIDS)];
                let mut out =
                    Vec::with_capacity(3 + ops.iter().map(|o| 4 + o.len()).sum::<usize>());
                out.push(TAG_OPS);
                out.extend_from_slice(&(ops.len() as u16).to_be_bytes());
                for op in ops {
                    out.extend_from_slice(&(op.len() as u32).to_be_bytes());
                    out.extend_from_slice(op);
                }
                out
            }
            SyncResponse::Busy => vec![TAG_BUSY],
        }
    }

    pub fn decode(body: &[u8]) -> io::Result<SyncResponse> {
        let mut r = Reader(body);
        match r.take(1)?[0] {
            TAG_RECONCILE => Ok(SyncResponse::Reconcile(r.0.to_vec())),
            TAG_OPS => {
                let n = r.u16()?;
                if n > MAX_FETCH_CIDS {
                    return Err(invalid("op count out of bounds"));
                }
                let mut ops = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = r.u32()?;
                    if len == 0 || len > MAX_OP_WIRE_BYTES {
                        return Err(invalid("op length out of bounds"));
                    }
                    ops.push(r.take(len)?.to_vec());
                }
                r.end()?;
                Ok(SyncResponse::Ops(ops))
            }
            TAG_BUSY => {
                r.end()?;
                Ok(SyncResponse::Busy)
            }
            _ => Err(invalid("unknown sync response tag")),
        }
    }
}

impl SyncCodec {
    fn count(&self, reconcile: bool, n: usize) {
        let bytes = 4 + n as u64;
        if reconcile {
            self.metrics.sync_reconcile_bytes.add(bytes);
        } else {
            self.metrics.sync_fetch_bytes.add(bytes);
        }
    }
}

#[async_trait]
impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let decoded = match read_frame(io, MAX_REQUEST_BYTES).await {
            Ok(body) => SyncRequest::decode(&body).map(|req| (req, body.len())),
            Err(e) => Err(e),
        };
        match decoded {
            Ok((req, len)) => {
                self.count(matches!(req, SyncRequest::Reconcile(_)), len);
                Ok(req)
            }
            Err(e) => reason(&e).map(SyncRequest::Malformed).ok_or(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_RESPONSE_BYTES).await?;
        let resp = SyncResponse::decode(&body)?;
        self.count(!matches!(resp, SyncResponse::Ops(_)), body.len());
        Ok(resp)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let body = req.encode();
        if body.is_empty() || body.len() > MAX_REQUEST_BYTES {
            return Err(invalid("sync request empty or above the limit"));
        }
        self.count(matches!(req, SyncRequest::Reconcile(_)), body.len());
        write_frame(io, &body).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: SyncResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let body = resp.encode();
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(invalid("sync response above the limit"));
        }
        self.count(!matches!(resp, SyncResponse::Ops(_)), body.len());
        write_frame(io, &body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    fn codec() -> SyncCodec {
        SyncCodec {
            metrics: Arc::new(P2pMetrics::default()),
        }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        [&(body.len() as u32).to_be_bytes()[..], body].concat()
    }

    #[test]
    fn round_trips() {
        let reqs = [
            SyncRequest::Reconcile(vec![1, 2, 3]),
            SyncRequest::Fetch(vec![Cid::of(b"a"), Cid::of(b"b")]),
        ];
        for r in reqs {
            assert_eq!(SyncRequest::decode(&r.encode()).unwrap(), r);
        }
        let resps = [
            SyncResponse::Reconcile(vec![1]),
            SyncResponse::Ops(vec![b"{}".to_vec(), vec![7; 300]]),
            SyncResponse::Ops(vec![]),
            SyncResponse::Busy,
        ];
        for r in resps {
            assert_eq!(SyncResponse::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn hostile_frames_are_refused_without_allocating_their_claims() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let p = PROTOCOL;
            let malformed = |r: io::Result<SyncRequest>| matches!(r, Ok(SyncRequest::Malformed(_)));
            // A length far above the limit: refused before any read.
            let mut io = Cursor::new(u32::MAX.to_be_bytes().to_vec());
            assert!(malformed(codec().read_request(&p, &mut io).await));
            // A length within the limit but the bytes never come: an IO
            // error (the connection may just have dropped), not misconduct.
            let mut io = Cursor::new(1000u32.to_be_bytes().to_vec());
            assert!(codec().read_request(&p, &mut io).await.is_err());
            // Fetch count above the limit, count larger than the data.
            let mut body = vec![TAG_FETCH];
            body.extend_from_slice(&1000u16.to_be_bytes());
            assert!(malformed(
                codec()
                    .read_request(&p, &mut Cursor::new(frame(&body)))
                    .await
            ));
            let mut body = vec![TAG_FETCH];
            body.extend_from_slice(&2u16.to_be_bytes());
            body.extend_from_slice(&[0; 40]);
            assert!(malformed(
                codec()
                    .read_request(&p, &mut Cursor::new(frame(&body)))
                    .await
            ));
            // An op longer than the wire limit; an op running past the frame.
            let mut body = vec![TAG_OPS, 0, 1];
            body.extend_from_slice(&((MAX_OP_WIRE_BYTES + 1) as u32).to_be_bytes());
            assert!(codec()
                .read_response(&p, &mut Cursor::new(frame(&body)))
                .await
                .is_err());
            let mut body = vec![TAG_OPS, 0, 1];
            body.extend_from_slice(&10u32.to_be_bytes());
            body.extend_from_slice(b"abc");
            assert!(codec()
                .read_response(&p, &mut Cursor::new(frame(&body)))
                .await
                .is_err());
            // Unknown tag, trailing bytes.
            assert!(malformed(
                codec()
                    .read_request(&p, &mut Cursor::new(frame(&[9])))
                    .await
            ));
            assert!(codec()
                .read_response(&p, &mut Cursor::new(frame(&[TAG_BUSY, 0])))
                .await
                .is_err());
            // And a well-formed one is read.
            let ok = SyncRequest::Fetch(vec![Cid::of(b"x")]);
            let got = codec()
                .read_request(&p, &mut Cursor::new(frame(&ok.encode())))
                .await
                .unwrap();
            assert_eq!(got, ok);
        });
    }
}
