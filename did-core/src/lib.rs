//! # did-core
//!
//! The pure heart of didmesh: everything that can be decided without a
//! clock, a socket or a disk. Time, randomness and peers are passed in, so
//! every function is deterministic and testable by simulation.
//!
//! ## Layout
//!
//! * [`keys`] — Ed25519 public keys in multibase (`z6Mk…`), `did:key`,
//!   base64url signatures.
//! * [`encoding`] — canonical JSON (RFC 8785 subset) and CIDs (CIDv1, raw,
//!   blake3).
//! * [`op`] — DID operations (`create`, `update`, `deactivate`), their
//!   limits and self-checks; `did:mesh` identifiers.
//! * [`ledger`] — the state machine: validation against `prev`, the fork
//!   rule, the orphan pool, resolution, audit logs, set digests, the
//!   index from link commitments to DIDs.
//! * [`ingest`] — whether bytes from a peer are an acceptable op (size,
//!   canonical parse, clock, known / new / orphan / invalid).
//! * [`client`] — OpenID relying parties registered in their owner's DID
//!   state; `client_id` and the secret hash.
//! * [`federation`] — links to accounts at external OpenID providers:
//!   the account commitment, member attestations and sign-in lookup.
//! * [`passkey`] — passkeys (WebAuthn ES256) as authentication keys and
//!   the check of an assertion over a login challenge.
//! * [`policy`] — a DID's login policy ("N of these factors"), phone
//!   commitments, device tags.
//! * [`member`] — network membership: members, quorum co-signatures.
//! * [`network`] — the network's genesis and the derivation of its id.
//! * [`document`] — W3C DID documents and resolution results.
//! * [`login`] — the EIP-4361-style challenge message (render and parse)
//!   and its verification.
//! * [`proto`] — the HTTP wire vocabulary: challenge, token and op-submit
//!   bodies, the error body, access-token [`Claims`].
//! * [`sync`] — anti-entropy: range-based set reconciliation over op CIDs
//!   (index, messages and their binary format, sessions) and the gossip
//!   dedupe set.
//! * [`sync_frame`] — the `/didmesh/sync/2` request and response bodies.
//! * [`time`] — RFC 3339 formatting of passed-in unix seconds.
//!
//! No tokio, axum, sled or libp2p here (ARCHITECTURE.md, "Crates"): every
//! rule of PROTOCOL.md that can be pure lives here, so the simulation tests
//! exercise it without IO.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod client;
pub mod document;
pub mod encoding;
pub mod federation;
pub mod ingest;
pub mod keys;
pub mod ledger;
pub mod login;
pub mod member;
pub mod network;
pub mod op;
pub mod passkey;
pub mod policy;
pub mod proto;
pub mod store;
pub mod sync;
pub mod sync_frame;
pub mod time;
pub mod verify;

pub use encoding::Cid;
pub use keys::PublicKey;
pub use ledger::{Check, DidView, Ledger, Validated};
pub use op::{
    DidState, Limits, OpError, OpKind, Operation, Relationship, Service, VerificationMethod,
};
pub use proto::Claims;
