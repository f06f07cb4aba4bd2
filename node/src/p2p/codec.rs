//! The `/didmesh/sync/2` request-response protocol: the libp2p codec that
//! reads and writes length-prefixed frames (`len:u32be body`, one per
//! stream direction). The bodies — reconciliation messages, op fetches and
//! authorization-code consumes — are did-core's [`did_core::sync_frame`] (pure, fuzzed there); their
//! format is documented with them.
//!
//! A frame's length is checked against its limit before anything is read,
//! and a frame is read incrementally (at most [`READ_CHUNK`] bytes reserved
//! ahead of what arrived), so a hostile peer cannot make the node allocate
//! more than it actually sends, nor more than the limits. An inbound
//! request that breaks the framing rules is delivered as
//! [`SyncRequest::Malformed`] rather than an error, because
//! request-response does not report failed reads with the peer's id, and
//! the event loop must know whom to punish.

use crate::metrics::P2pMetrics;
use async_trait::async_trait;
pub use did_core::sync_frame::{
    ConsumeVerdict, FrameError, SyncRequest, SyncResponse, MAX_CODE_BYTES, MAX_FETCH_CIDS,
    MAX_OP_WIRE_BYTES, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use std::io;
use std::sync::Arc;

/// Protocol name of anti-entropy.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/didmesh/sync/2");
/// Bytes reserved ahead of the data while a frame is read.
const READ_CHUNK: usize = 64 * 1024;
/// The reason given for a frame whose length prefix is 0 or above the limit.
const LENGTH_OUT_OF_BOUNDS: &str = "sync frame length out of bounds";

/// The codec; clones share the byte counters.
#[derive(Clone)]
pub struct SyncCodec {
    pub(crate) metrics: Arc<P2pMetrics>,
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Reads one length-prefixed frame of at most `max` bytes.
async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > max {
        return Err(invalid(LENGTH_OUT_OF_BOUNDS));
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

impl SyncCodec {
    /// Counts a frame's bytes as reconciliation or fetch traffic. Consume
    /// frames (a few hundred bytes per sign-in) are neither and not counted.
    fn count_request(&self, req: &SyncRequest, n: usize) {
        match req {
            SyncRequest::Reconcile(_) => self.count(true, n),
            SyncRequest::Fetch(_) => self.count(false, n),
            SyncRequest::Consume(_) | SyncRequest::Malformed(_) => {}
        }
    }

    fn count_response(&self, resp: &SyncResponse, n: usize) {
        match resp {
            SyncResponse::Ops(_) => self.count(false, n),
            SyncResponse::Consumed(_) => {}
            SyncResponse::Reconcile(_) | SyncResponse::Busy => self.count(true, n),
        }
    }

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
        let body = match read_frame(io, MAX_REQUEST_BYTES).await {
            Ok(body) => body,
            // The peer broke the framing rules: its fault, reported by name.
            // Any other error (the stream ended, say) may be no one's.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let why = if e.to_string() == LENGTH_OUT_OF_BOUNDS {
                    LENGTH_OUT_OF_BOUNDS
                } else {
                    "malformed sync request"
                };
                return Ok(SyncRequest::Malformed(why));
            }
            Err(e) => return Err(e),
        };
        match SyncRequest::decode(&body) {
            Ok(req) => {
                self.count_request(&req, body.len());
                Ok(req)
            }
            Err(e) => Ok(SyncRequest::Malformed(e.reason())),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_RESPONSE_BYTES).await?;
        let resp = SyncResponse::decode(&body).map_err(|e| invalid(e.reason()))?;
        self.count_response(&resp, body.len());
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
        self.count_request(&req, body.len());
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
        self.count_response(&resp, body.len());
        write_frame(io, &body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use did_core::Cid;
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
            let mut body = vec![0x02];
            body.extend_from_slice(&1000u16.to_be_bytes());
            assert!(malformed(
                codec()
                    .read_request(&p, &mut Cursor::new(frame(&body)))
                    .await
            ));
            let mut body = vec![0x02];
            body.extend_from_slice(&2u16.to_be_bytes());
            body.extend_from_slice(&[0; 40]);
            assert!(malformed(
                codec()
                    .read_request(&p, &mut Cursor::new(frame(&body)))
                    .await
            ));
            // An op longer than the wire limit; an op running past the frame.
            let mut body = vec![0x02, 0, 1];
            body.extend_from_slice(&((MAX_OP_WIRE_BYTES + 1) as u32).to_be_bytes());
            assert!(codec()
                .read_response(&p, &mut Cursor::new(frame(&body)))
                .await
                .is_err());
            let mut body = vec![0x02, 0, 1];
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
                .read_response(&p, &mut Cursor::new(frame(&[0x03, 0])))
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
