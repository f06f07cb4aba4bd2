//! The one task that owns the libp2p swarm, and the [`Client`] the rest of
//! the node uses to talk to it (the shape of rust-libp2p's file-sharing
//! example). The event loop turns swarm events into messages for the
//! validator ([`super::ingest`]) and anti-entropy, and the client's calls
//! into swarm calls. Those calls travel as a `Command`, private to this
//! module: the client's typed methods are the only way to send one. The
//! loop never awaits anything but its channels and the swarm, so a slow
//! disk or a burst of signature checks cannot stall the network.
//!
//! Inbound `/didmesh/sync/2` requests go to anti-entropy, except consume
//! requests (single use of authorization codes across nodes), which go to
//! [`crate::oidc::consume`] on a channel of their own, so a busy
//! reconciliation never delays a sign-in and the reverse.

use super::budget::{ban_key, BannedAddrs, Budgets};
use super::codec::{SyncCodec, SyncRequest, SyncResponse, PROTOCOL};
use super::gossip::{self, BAN_DURATION};
use super::peers::{BannedPeer, PeerInfo, PeerView};
use crate::metrics::P2pMetrics;
use did_core::sync::Seen;
use did_core::Cid;
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, kad, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Gossiped ops waiting for validation (at most ~9 KiB each, so ~9 MiB).
/// When full, new messages are ignored (anti-entropy fetches them later)
/// rather than queued without bound.
pub const GOSSIP_CHANNEL: usize = 1024;
/// Sync events (new connections, inbound requests) waiting for
/// anti-entropy. When full, inbound requests are answered `Busy`.
pub const SYNC_EVENT_CHANNEL: usize = 256;
/// Inbound consume requests waiting for [`crate::oidc::consume`]. When
/// full, they are answered `Busy` (the redeemer then refuses the code:
/// fail closed).
pub const CONSUME_CHANNEL: usize = 256;
/// Most peers kept connected; inbound connections beyond are closed.
pub const MAX_PEERS: usize = 50;
/// Banned peer ids remembered; when full, the ban that ends soonest is
/// dropped (its address stays distrusted, so a comeback is banned at its
/// first invalid op anyway).
pub const MAX_BANNED_PEERS: usize = 4096;
/// Application-score penalty for each invalid op or malformed frame a peer
/// sent over `/didmesh/sync/2` (gossipsub's P5; weight 1).
pub const SYNC_PENALTY: f64 = -30.0;
/// Streams of `/didmesh/sync/2` open at once per connection.
pub const MAX_SYNC_STREAMS: usize = 16;
/// A sync request that takes longer fails (a large fetch response included).
pub const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A Kademlia walk for our own id this often while fewer than
/// [`DISCOVERY_TARGET`] peers are connected, to learn more peers...
const KAD_WALK_INTERVAL: Duration = Duration::from_secs(5);
/// ...and every this many intervals once enough are.
const KAD_WALK_EVERY_WHEN_ENOUGH: u32 = 12;
/// Below this many peers, discovery walks more often.
const DISCOVERY_TARGET: usize = 8;
/// How often scores are checked and the status snapshot refreshed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// Op CIDs gossip handled recently (validated, or published by us): a
/// duplicate is ignored without a second signature check. About 80 bytes
/// each with the set's overhead, so ~4 MiB.
const SEEN_CAPACITY: usize = 50_000;
/// Connections with no stream open close after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) const IDENTIFY_PROTOCOL: &str = "/didmesh/id/1.0.0";
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/didmesh/kad/1.0.0");

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    sync: request_response::Behaviour<SyncCodec>,
}

/// Commands queued for the event loop. Sized for a burst of commits being
/// published (each is one command) without blocking the publisher for long;
/// when full, senders wait (back-pressure), nothing is dropped.
pub const COMMAND_CHANNEL: usize = 1024;

/// What the node needs to join the network.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Where to listen for peers.
    pub listen: Multiaddr,
    /// Peers dialled at start and redialled while disconnected, by address
    /// or by DNS name ([`super::bootstrap`]).
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses peers are told to dial (`--announce`); empty: the listen
    /// addresses.
    pub announce: Vec<Multiaddr>,
    /// Time between anti-entropy rounds with a random peer.
    pub sync_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error(transparent)]
    Key(#[from] crate::identity::IdentityError),
    #[error("cannot set up the p2p transport: {0}")]
    Transport(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(Multiaddr, String),
    #[error("the p2p event loop has stopped")]
    Stopped,
    #[error("request to {peer} failed: {why}")]
    Request { peer: PeerId, why: String },
}

/// A cheap, clonable handle to the p2p layer.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<PeerView>>,
    metrics: Arc<P2pMetrics>,
    budgets: Arc<Budgets>,
    peer_id: PeerId,
    /// Fetched ops not to republish, and the catch-up progress.
    replication: Arc<super::anti_entropy::Replication>,
}

impl Client {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Fetched ops not to republish, and the catch-up progress (see
    /// [`super::anti_entropy::Replication`]).
    pub(crate) fn replication(&self) -> &super::anti_entropy::Replication {
        &self.replication
    }

    /// A catch-up in progress (ops/s, ETA), for `/v1/status` `"catch_up"`;
    /// `None` when this node is not fetching a backlog.
    pub fn catch_up(&self) -> Option<super::anti_entropy::CatchUpStatus> {
        self.replication.catch_up.status()
    }

    /// The latest snapshot of peers and addresses.
    pub fn view(&self) -> Arc<PeerView> {
        self.view.borrow().clone()
    }

    pub fn metrics(&self) -> &P2pMetrics {
        &self.metrics
    }

    /// Orphans parked for peers now, charged to their budgets.
    pub fn orphans_held(&self) -> usize {
        self.budgets.orphans_held()
    }

    /// The per-peer budgets.
    pub(crate) fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    async fn send(&self, cmd: Command) -> Result<(), P2pError> {
        self.commands.send(cmd).await.map_err(|_| P2pError::Stopped)
    }

    /// Publishes a bundle of ops ([`did_core::sync_frame::encode_bundle`])
    /// on the topic.
    pub(crate) async fn publish(&self, bundle: Vec<u8>) -> Result<(), P2pError> {
        self.send(Command::Publish { bundle }).await
    }

    /// Tells gossipsub what validation made of message `id` from `source`
    /// (forward it, drop it, or drop it and score `source` down).
    pub(crate) async fn report_validation(
        &self,
        id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    ) -> Result<(), P2pError> {
        self.send(Command::Report {
            id,
            source,
            acceptance,
        })
        .await
    }

    /// Asks `peer`, the member that issued an authorization code, to
    /// consume it. Unlike [`Self::request`], the peer need not be connected
    /// now: request-response dials it with the addresses discovery learnt.
    /// No timeout here beyond the protocol's; the caller bounds the wait.
    pub(crate) async fn consume(
        &self,
        peer: PeerId,
        code: Vec<u8>,
    ) -> Result<SyncResponse, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Consume { peer, code, reply }).await?;
        rx.await.map_err(|_| P2pError::Stopped)?
    }

    /// Dials `addrs` (already resolved: IP addresses), as the peer `peer`
    /// when known; nothing happens if that peer is connected or banned.
    pub(crate) async fn dial(
        &self,
        peer: Option<PeerId>,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), P2pError> {
        self.send(Command::Dial { peer, addrs }).await
    }

    /// Sends a sync request and waits for the answer.
    pub(crate) async fn request(
        &self,
        peer: PeerId,
        request: SyncRequest,
    ) -> Result<SyncResponse, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request {
            peer,
            request,
            reply,
        })
        .await?;
        rx.await.map_err(|_| P2pError::Stopped)?
    }

    /// Answers an inbound sync request.
    pub(crate) async fn respond(
        &self,
        channel: ResponseChannel<SyncResponse>,
        response: SyncResponse,
    ) -> Result<(), P2pError> {
        self.send(Command::Respond { channel, response }).await
    }

    /// Currently connected peers.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ConnectedPeers { reply }).await?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// Reports that `peer` misbehaved on the sync path (a malformed
    /// message, an invalid or unrequested op): its score goes down.
    pub(crate) async fn punish(&self, peer: PeerId) -> Result<(), P2pError> {
        self.send(Command::Punish { peer }).await
    }
}

/// What the [`Client`] asks of the event loop.
enum Command {
    Publish {
        bundle: Vec<u8>,
    },
    Report {
        id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    },
    Request {
        peer: PeerId,
        request: SyncRequest,
        reply: oneshot::Sender<Result<SyncResponse, P2pError>>,
    },
    Respond {
        channel: ResponseChannel<SyncResponse>,
        response: SyncResponse,
    },
    Consume {
        peer: PeerId,
        code: Vec<u8>,
        reply: oneshot::Sender<Result<SyncResponse, P2pError>>,
    },
    Punish {
        peer: PeerId,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Dial {
        peer: Option<PeerId>,
        addrs: Vec<Multiaddr>,
    },
}

/// A gossiped bundle of ops to validate.
pub(crate) struct GossipMessage {
    pub id: MessageId,
    pub source: PeerId,
    pub data: Vec<u8>,
}

/// What anti-entropy is told.
pub(crate) enum SyncEvent {
    /// A first connection to `peer`: reconcile with it now.
    Connected(PeerId),
    Request {
        peer: PeerId,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    },
}

/// A peer asks this node to consume an authorization code it issued
/// ([`SyncRequest::Consume`]); answer on `channel` with
/// [`Client::respond`].
pub(crate) struct ConsumeRequest {
    pub peer: PeerId,
    pub code: Vec<u8>,
    pub channel: ResponseChannel<SyncResponse>,
}

/// The receiving ends handed to the tasks around the event loop.
pub(crate) struct Inbound {
    pub gossip: mpsc::Receiver<GossipMessage>,
    pub sync: mpsc::Receiver<SyncEvent>,
    pub consume: mpsc::Receiver<ConsumeRequest>,
}

struct PeerEntry {
    addr: Multiaddr,
    /// Addresses of this node's outbound connections to the peer (how
    /// [`super::bootstrap`] knows which peer an address without /p2p is).
    dialed: Vec<Multiaddr>,
    connections: usize,
    agent: Option<String>,
    rejected: u64,
}

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    gossip_tx: mpsc::Sender<GossipMessage>,
    sync_tx: mpsc::Sender<SyncEvent>,
    consume_tx: mpsc::Sender<ConsumeRequest>,
    view_tx: watch::Sender<Arc<PeerView>>,
    metrics: Arc<P2pMetrics>,
    topic: IdentTopic,
    /// Outbound sync requests waiting for their answer.
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<SyncResponse, P2pError>>>,
    /// Connected peers.
    peers: HashMap<PeerId, PeerEntry>,
    /// Per-peer budgets and penalties (the gossipsub application score).
    budgets: Arc<Budgets>,
    /// Peers refused until the given instant.
    banned: HashMap<PeerId, Instant>,
    /// Addresses of banned peers: new peer ids from there start distrusted.
    banned_addrs: BannedAddrs,
    seen: Seen,
    listen_addrs: Vec<Multiaddr>,
}

impl EventLoop {
    /// Builds the swarm and starts listening. Returns the loop (to spawn),
    /// its client, and the receivers for the validator and anti-entropy.
    pub(crate) fn new(
        keypair: Keypair,
        network_id: &str,
        config: &P2pConfig,
        metrics: Arc<P2pMetrics>,
        budgets: Arc<Budgets>,
    ) -> Result<(EventLoop, Client, Inbound), P2pError> {
        let transport = |e: &dyn std::fmt::Display| P2pError::Transport(e.to_string());
        let topic = gossip::topic(network_id);
        let peer_id = keypair.public().to_peer_id();
        let codec = SyncCodec {
            metrics: metrics.clone(),
        };
        let announce = !config.announce.is_empty();
        macro_rules! tcp {
            () => {
                libp2p::SwarmBuilder::with_existing_identity(keypair.clone())
                    .with_tokio()
                    .with_tcp(
                        tcp::Config::default().nodelay(true),
                        noise::Config::new,
                        yamux::Config::default,
                    )
                    .map_err(|e| transport(&e))?
            };
        }
        // `/dns4/NAME` addresses peers announce are resolved by libp2p's DNS
        // transport (hickory, configured from /etc/resolv.conf). Bootstrap
        // names are resolved by `super::bootstrap` with the system resolver
        // instead (hickory reads /etc/hosts only once). The two transports
        // have different types, hence the macro for the rest of the build.
        macro_rules! finish {
            ($builder:expr) => {
                $builder
                    .with_behaviour(|key| behaviour(key, &topic, codec, announce))
                    .map_err(|e| transport(&e))?
                    .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
                    .build()
            };
        }
        let mut swarm = match tcp!().with_dns() {
            Ok(b) => finish!(b),
            Err(e) => {
                // No usable /etc/resolv.conf (a minimal container): names
                // from the hosts file only.
                tracing::warn!(error = %e, "no DNS servers configured: peers' /dns addresses resolve from the hosts file only");
                finish!(tcp!().with_dns_config(
                    libp2p::dns::ResolverConfig::new(),
                    libp2p::dns::ResolverOpts::default(),
                ))
            }
        };
        for addr in &config.announce {
            swarm.add_external_address(addr.clone());
        }
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| transport(&e))?;
        swarm
            .listen_on(config.listen.clone())
            .map_err(|e| P2pError::Listen(config.listen.clone(), e.to_string()))?;

        let (cmd_tx, commands) = mpsc::channel(COMMAND_CHANNEL);
        let (gossip_tx, gossip_rx) = mpsc::channel(GOSSIP_CHANNEL);
        let (sync_tx, sync_rx) = mpsc::channel(SYNC_EVENT_CHANNEL);
        let (consume_tx, consume_rx) = mpsc::channel(CONSUME_CHANNEL);
        let view = PeerView {
            peer_id: peer_id.to_string(),
            ..Default::default()
        };
        let (view_tx, view_rx) = watch::channel(Arc::new(view));
        let client = Client {
            commands: cmd_tx,
            view: view_rx,
            metrics: metrics.clone(),
            budgets: budgets.clone(),
            peer_id,
            replication: Arc::default(),
        };
        let event_loop = EventLoop {
            swarm,
            commands,
            gossip_tx,
            sync_tx,
            consume_tx,
            view_tx,
            metrics,
            topic,
            pending: HashMap::new(),
            peers: HashMap::new(),
            budgets,
            banned: HashMap::new(),
            banned_addrs: BannedAddrs::default(),
            seen: Seen::new(SEEN_CAPACITY),
            listen_addrs: vec![],
        };
        Ok((
            event_loop,
            client,
            Inbound {
                gossip: gossip_rx,
                sync: sync_rx,
                consume: consume_rx,
            },
        ))
    }

    /// Runs until every [`Client`] is dropped.
    pub async fn run(mut self) {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        let mut kad_walk = tokio::time::interval(KAD_WALK_INTERVAL);
        let mut walks = 0u32;
        for t in [&mut housekeeping, &mut kad_walk] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => return,
                },
                _ = housekeeping.tick() => self.housekeeping(),
                _ = kad_walk.tick() => {
                    walks = walks.wrapping_add(1);
                    let wanted = self.peers.len() < DISCOVERY_TARGET || walks % KAD_WALK_EVERY_WHEN_ENOUGH == 0;
                    if wanted && !self.peers.is_empty() {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
            }
        }
    }

    /// Dials a bootstrap peer at `addrs` ([`super::bootstrap`] resolved
    /// them): as `peer` if its id is known, else each address on its own.
    fn dial(&mut self, peer: Option<PeerId>, addrs: Vec<Multiaddr>) {
        let opts = match peer {
            Some(peer) if self.peers.contains_key(&peer) || self.banned.contains_key(&peer) => {
                return
            }
            Some(peer) => vec![DialOpts::peer_id(peer).addresses(addrs.clone()).build()],
            None => addrs
                .iter()
                .map(|a| DialOpts::unknown_peer_id().address(a.clone()).build())
                .collect(),
        };
        for o in opts {
            if let Err(e) = self.swarm.dial(o) {
                tracing::debug!(?addrs, error = %e, "bootstrap dial failed");
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish { bundle } => {
                // Only ops that became durable here by HTTP or a released
                // orphan are published (`publish::run_publisher`); an echo
                // of our own bundle is ignored on arrival.
                let id = super::gossip::message_cid(&bundle);
                let ops = did_core::sync_frame::bundle_len_hint(&bundle) as u64;
                self.seen.insert(id);
                match self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), bundle)
                {
                    Ok(_) => {
                        self.metrics.published.inc();
                        self.metrics.published_ops.add(ops);
                    }
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                    Err(gossipsub::PublishError::Duplicate) => {}
                    Err(e) => tracing::debug!(bundle = %id, error = %e, "publish failed"),
                }
            }
            Command::Report {
                id,
                source,
                acceptance,
            } => {
                let reject = matches!(acceptance, MessageAcceptance::Reject);
                if reject {
                    if let Some(p) = self.peers.get_mut(&source) {
                        p.rejected += 1;
                    }
                }
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
                if reject && self.budgets.is_distrusted(&source) {
                    self.ban(source, "invalid op from a peer at a banned address");
                }
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                if !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(P2pError::Request {
                        peer,
                        why: "not connected".into(),
                    }));
                    return;
                }
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                self.pending.insert(id, reply);
            }
            Command::Consume { peer, code, reply } => {
                if self.banned.contains_key(&peer) {
                    let _ = reply.send(Err(P2pError::Request {
                        peer,
                        why: "banned".into(),
                    }));
                    return;
                }
                // Dials the peer if needed (addresses from Kademlia and
                // identify): the issuer of a code is a member, but not
                // necessarily among our connections right now.
                let id = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, SyncRequest::Consume(code));
                self.pending.insert(id, reply);
            }
            Command::Respond { channel, response } => {
                // Fails only if the peer went away meanwhile.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
            }
            Command::Punish { peer } => self.punish(peer),
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.peers.keys().copied().collect());
            }
            Command::Dial { peer, addrs } => self.dial(peer, addrs),
        }
    }

    /// Lowers a peer's application score for misbehaving on the sync path.
    fn punish(&mut self, peer: PeerId) {
        self.budgets.add_sync_penalty(peer, SYNC_PENALTY);
        self.refresh_score(&peer);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.rejected += 1;
        }
        if self.budgets.is_distrusted(&peer) {
            self.ban(
                peer,
                "misbehaviour on the sync protocol from a peer at a banned address",
            );
        }
    }

    /// Hands gossipsub the application score (P5) the budgets hold.
    fn refresh_score(&mut self, peer: &PeerId) {
        let score = self.budgets.score(peer);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(peer, score);
    }

    /// Disconnects and bans `peer` for [`BAN_DURATION`], and remembers its
    /// address for as long.
    fn ban(&mut self, peer: PeerId, why: &str) {
        if self.banned.contains_key(&peer) {
            return;
        }
        let now = Instant::now();
        let until = now + BAN_DURATION;
        tracing::warn!(%peer, reason = why, "disconnecting and banning a peer");
        self.metrics.banned.inc();
        if self.banned.len() >= MAX_BANNED_PEERS {
            if let Some(first) = self.banned.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p) {
                self.banned.remove(&first);
            }
        }
        self.banned.insert(peer, until);
        if let Some(ip) = self.peers.get(&peer).and_then(|p| ban_key(&p.addr)) {
            self.banned_addrs.insert(ip, until);
        }
        // Readers see the ban before the peer sees its connection close.
        self.publish_view();
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => self.on_sync(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let first = self.peers.get(&peer_id).is_some_and(|p| p.agent.is_none());
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.agent = Some(info.agent_version);
                }
                if info.protocols.contains(&KAD_PROTOCOL) {
                    for addr in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                    if first {
                        // Ask the new peer (and its neighbours) for peers near us.
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                addresses,
                ..
            })) => {
                let known = self.peers.contains_key(&peer) || self.banned.contains_key(&peer);
                if !known && self.peers.len() < MAX_PEERS {
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addresses.iter().cloned().collect())
                        .build();
                    let _ = self.swarm.dial(opts);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "p2p listening");
                self.listen_addrs.push(address);
                self.publish_view();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
                self.publish_view();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                connection_id,
                ..
            } => {
                let refuse = self.banned.contains_key(&peer_id)
                    || (num_established.get() == 1
                        && endpoint.is_listener()
                        && self.peers.len() >= MAX_PEERS);
                if refuse {
                    let _ = self.swarm.close_connection(connection_id);
                    return;
                }
                if num_established.get() == 1 && !self.peers.contains_key(&peer_id) {
                    let remote = endpoint.get_remote_address();
                    let distrusted = ban_key(remote)
                        .is_some_and(|ip| self.banned_addrs.contains(&ip, Instant::now()));
                    if distrusted {
                        tracing::info!(peer = %peer_id, addr = %remote, "new peer from the address of a banned one: distrusted");
                        self.metrics.distrusted.inc();
                    }
                    self.budgets.connected(peer_id, distrusted);
                    self.refresh_score(&peer_id);
                }
                let entry = self.peers.entry(peer_id).or_insert_with(|| PeerEntry {
                    addr: endpoint.get_remote_address().clone(),
                    dialed: vec![],
                    connections: 0,
                    agent: None,
                    rejected: 0,
                });
                entry.connections += 1;
                if endpoint.is_dialer()
                    && entry.dialed.len() < super::bootstrap::MAX_DIALED_PER_PEER
                {
                    entry.dialed.push(endpoint.get_remote_address().clone());
                }
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                    // The dialer reconciles at once; the listener's turn
                    // comes with its periodic rounds (two sessions on
                    // every connection would list the difference twice).
                    if endpoint.is_dialer() {
                        let _ = self.sync_tx.try_send(SyncEvent::Connected(peer_id));
                    }
                    self.publish_view();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                if num_established == 0 && self.peers.remove(&peer_id).is_some() {
                    tracing::info!(peer = %peer_id, "peer disconnected");
                    self.budgets.disconnected(peer_id);
                    self.publish_view();
                } else if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.connections = p.connections.saturating_sub(1);
                    let gone = endpoint.get_remote_address();
                    if let Some(i) = p.dialed.iter().position(|a| a == gone) {
                        p.dialed.swap_remove(i);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        self.metrics.gossip_received.inc();
        let ignore = |this: &mut EventLoop, id: &MessageId| {
            this.metrics.gossip_ignored.inc();
            this.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(
                    id,
                    &propagation_source,
                    MessageAcceptance::Ignore,
                );
        };
        // Message ids are blake3 hashes of the bundle (see `gossip::behaviour`).
        let cid = <[u8; 32]>::try_from(message_id.0.as_slice()).map(Cid);
        let Ok(cid) = cid else {
            return ignore(self, &message_id);
        };
        if !self.seen.insert(cid) {
            // Handled before (validated, or we published it ourselves).
            return ignore(self, &message_id);
        }
        // Each op validated costs a signature check: within the sender's
        // rate only (the budget penalises it beyond), charged for as many
        // ops as the bundle says it holds.
        let ops = did_core::sync_frame::bundle_len_hint(&message.data);
        if !self.budgets.admit_gossip(propagation_source, ops) {
            return ignore(self, &message_id);
        }
        let msg = GossipMessage {
            id: message_id.clone(),
            source: propagation_source,
            data: message.data,
        };
        if self.gossip_tx.try_send(msg).is_err() {
            // Overloaded: anti-entropy will bring the op if it is valid.
            ignore(self, &message_id);
        }
    }

    fn on_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request: SyncRequest::Malformed(why),
                        ..
                    },
                ..
            } => {
                tracing::info!(%peer, reason = why, "malformed sync request");
                self.metrics.rejected.inc();
                self.punish(peer);
            }
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                if self.banned.contains_key(&peer) {
                    return; // dropping the channel fails the request
                }
                if let SyncRequest::Consume(code) = request {
                    let busy = match self.consume_tx.try_send(ConsumeRequest {
                        peer,
                        code,
                        channel,
                    }) {
                        Ok(()) => None,
                        Err(mpsc::error::TrySendError::Full(r))
                        | Err(mpsc::error::TrySendError::Closed(r)) => Some(r.channel),
                    };
                    if let Some(channel) = busy {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, SyncResponse::Busy);
                    }
                    return;
                }
                if let Err(mpsc::error::TrySendError::Full(SyncEvent::Request {
                    channel, ..
                })) = self.sync_tx.try_send(SyncEvent::Request {
                    peer,
                    request,
                    channel,
                }) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, SyncResponse::Busy);
                }
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(P2pError::Request {
                        peer,
                        why: error.to_string(),
                    }));
                }
            }
            _ => {}
        }
    }

    /// Refreshes application scores from the budgets, bans peers whose
    /// score fell below the graylist threshold, lifts expired bans (and
    /// the distrust of peers whose address is no longer banned), and
    /// refreshes the status snapshot.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.banned.retain(|peer, until| {
            let keep = *until > now;
            if !keep {
                tracing::info!(%peer, "ban lifted");
            }
            keep
        });
        self.banned_addrs.expire(now);
        let connected: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in &connected {
            if self.budgets.is_distrusted(peer) {
                let still = self
                    .peers
                    .get(peer)
                    .and_then(|p| ban_key(&p.addr))
                    .is_some_and(|ip| self.banned_addrs.contains(&ip, now));
                if !still {
                    self.budgets.trust(peer);
                }
            }
            self.refresh_score(peer);
        }
        let gs = &self.swarm.behaviour().gossipsub;
        let low: Vec<PeerId> = self
            .peers
            .keys()
            .filter(|p| {
                gs.peer_score(p)
                    .is_some_and(|s| s < gossip::GRAYLIST_THRESHOLD)
            })
            .copied()
            .collect();
        for peer in low {
            self.ban(peer, "score below the graylist threshold");
        }
        self.publish_view();
    }

    fn publish_view(&mut self) {
        let local = *self.swarm.local_peer_id();
        let gs = &self.swarm.behaviour().gossipsub;
        let budgets = &self.budgets;
        let mut peers: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(id, p)| {
                let account = budgets.view(id);
                PeerInfo {
                    peer_id: id.to_string(),
                    addr: p.addr.to_string(),
                    dialed: p.dialed.iter().map(|a| a.to_string()).collect(),
                    agent: p.agent.clone(),
                    score: gs.peer_score(id).unwrap_or(0.0),
                    rejected: p.rejected,
                    orphans: account.orphans,
                    orphans_capped: account.capped,
                    distrusted: account.distrusted,
                }
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let now = Instant::now();
        let banned = self
            .banned
            .iter()
            .map(|(p, until)| BannedPeer {
                peer_id: p.to_string(),
                seconds_left: until.saturating_duration_since(now).as_secs(),
                score: gs.peer_score(p).unwrap_or(0.0),
            })
            .collect();
        let listen_addrs = self
            .listen_addrs
            .iter()
            .map(|a| {
                a.clone()
                    .with(libp2p::multiaddr::Protocol::P2p(local))
                    .to_string()
            })
            .collect();
        let view = PeerView {
            peer_id: local.to_string(),
            listen_addrs,
            peers,
            banned,
            banned_addrs: self.banned_addrs.len(),
        };
        self.view_tx.send_replace(Arc::new(view));
    }
}

/// The network behaviour: gossipsub, identify, Kademlia and the sync
/// protocol. `hide_listen_addrs`: identify tells peers only the external
/// addresses (`--announce`), not the interfaces behind a NAT.
fn behaviour(
    key: &Keypair,
    topic: &IdentTopic,
    codec: SyncCodec,
    hide_listen_addrs: bool,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let gossipsub = gossip::behaviour(topic)?;
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
            .with_agent_version(format!("didmesh-node/{}", env!("CARGO_PKG_VERSION")))
            .with_hide_listen_addrs(hide_listen_addrs),
    );
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    // Walks are started by the event loop (on a peer's first
    // identify, then every KAD_WALK_INTERVAL), not by a
    // timer that fires before any peer is known.
    kad_config.set_periodic_bootstrap_interval(None);
    let mut kad = kad::Behaviour::with_config(
        key.public().to_peer_id(),
        kad::store::MemoryStore::new(key.public().to_peer_id()),
        kad_config,
    );
    // Nodes are servers: they listen and answer queries.
    kad.set_mode(Some(kad::Mode::Server));
    let sync = request_response::Behaviour::with_codec(
        codec,
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(SYNC_REQUEST_TIMEOUT)
            .with_max_concurrent_streams(MAX_SYNC_STREAMS),
    );
    Ok(Behaviour {
        gossipsub,
        identify,
        kad,
        sync,
    })
}
