//! The reactor's side of cluster mode: the two Redis sockets on the same
//! poll as the clients, and what the cluster machine (`cluster/node.rs`)
//! asks for, applied to connections and rooms.
//!
//! Like a client connection, a Redis link is read until `WouldBlock` and
//! written once per turn, with WRITABLE interest only while the socket is
//! full. Connecting is non-blocking too: the socket is registered for
//! WRITABLE and the connect's outcome is read when it fires.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::Reactor;
use crate::cluster::{Claim, Cluster, ClusterState, LinkId};
use crate::failure::Failure;
use crate::handshake::JoinRequest;
use crate::rooms::ConnId;
use crate::session::JoinRefused;

pub(crate) const REDIS_SUBSCRIBER: Token = Token(usize::MAX - 5);
pub(crate) const REDIS_COMMANDS: Token = Token(usize::MAX - 6);

/// One Redis socket as the reactor holds it.
#[derive(Debug)]
struct Socket {
    stream: TcpStream,
    /// The connect has not completed yet.
    connecting: bool,
    /// WRITABLE is registered (connecting, or output waits).
    write_interest: bool,
}

/// Cluster mode's state in the reactor.
#[derive(Debug)]
pub(super) struct ClusterLinks {
    pub(super) machine: Cluster,
    /// Redis's address, resolved at start (the loop does no DNS).
    address: SocketAddr,
    subscriber: Option<Socket>,
    commands: Option<Socket>,
    /// Joins whose name is being claimed in Redis, with the claim's key.
    claiming: HashMap<ConnId, (JoinRequest, Box<str>)>,
}

impl ClusterLinks {
    pub(super) fn new(machine: Cluster, address: SocketAddr) -> Self {
        ClusterLinks { machine, address, subscriber: None, commands: None, claiming: HashMap::new() }
    }

    fn socket(&mut self, link: LinkId) -> &mut Option<Socket> {
        self.parts(link).1
    }

    /// The machine and one link's socket, borrowed apart.
    fn parts(&mut self, link: LinkId) -> (&mut Cluster, &mut Option<Socket>) {
        match link {
            LinkId::Subscriber => (&mut self.machine, &mut self.subscriber),
            LinkId::Commands => (&mut self.machine, &mut self.commands),
        }
    }

    pub(super) fn state(&self) -> ClusterState {
        self.machine.state()
    }
}

fn token(link: LinkId) -> Token {
    match link {
        LinkId::Subscriber => REDIS_SUBSCRIBER,
        LinkId::Commands => REDIS_COMMANDS,
    }
}

pub(super) fn link_of(token: Token) -> Option<LinkId> {
    match token {
        REDIS_SUBSCRIBER => Some(LinkId::Subscriber),
        REDIS_COMMANDS => Some(LinkId::Commands),
        _ => None,
    }
}

const LINKS: [LinkId; 2] = [LinkId::Subscriber, LinkId::Commands];

impl Reactor {
    /// A Redis socket is ready.
    pub(super) fn redis_event(&mut self, link: LinkId, event: &mio::event::Event) {
        let Some(cluster) = &mut self.cluster else { return };
        let Some(socket) = cluster.socket(link) else { return };
        if socket.connecting {
            if !(event.is_writable() || event.is_error() || event.is_write_closed()) {
                return;
            }
            // The connect finished: it worked if the socket has no error
            // and a peer.
            let outcome = match socket.stream.take_error() {
                Ok(Some(error)) | Err(error) => Err(error),
                Ok(None) => socket.stream.peer_addr().map(|_| ()),
            };
            match outcome {
                Ok(()) => {
                    socket.connecting = false;
                    cluster.machine.connected(link);
                }
                Err(error) => {
                    self.redis_failed(link, &error.to_string());
                    return;
                }
            }
        }
        self.redis_read(link);
        self.redis_write(link);
        self.apply_cluster_effects();
    }

    /// Reads until `WouldBlock`, handing every byte to the machine.
    fn redis_read(&mut self, link: LinkId) {
        loop {
            let Some(cluster) = &mut self.cluster else { return };
            let Some(socket) = cluster.socket(link) else { return };
            match socket.stream.read(&mut self.read_buffer) {
                Ok(0) => return self.redis_failed(link, "Redis closed the connection"),
                Ok(n) => {
                    if let Err(error) = cluster.machine.received(link, &self.read_buffer[..n]) {
                        return self.redis_failed(link, &error);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return self.redis_failed(link, &error.to_string()),
            }
        }
    }

    /// Writes what the machine has for `link` until the socket is full,
    /// keeping WRITABLE interest exactly while bytes wait.
    fn redis_write(&mut self, link: LinkId) {
        let Some(cluster) = &mut self.cluster else { return };
        let registry = self.poll.registry();
        let (machine, socket) = cluster.parts(link);
        let Some(socket) = socket.as_mut() else { return };
        if socket.connecting {
            return;
        }
        let failure = loop {
            let output = machine.output(link);
            if output.is_empty() {
                break None;
            }
            match socket.stream.write(output) {
                Ok(0) => break Some("Redis took no bytes".to_owned()),
                Ok(n) => machine.wrote(link, n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break None,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break Some(error.to_string()),
            }
        };
        if let Some(why) = failure {
            return self.redis_failed(link, &why);
        }
        let waiting = !machine.output(link).is_empty();
        if waiting != socket.write_interest {
            let interest = if waiting { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            if registry.reregister(&mut socket.stream, token(link), interest).is_ok() {
                socket.write_interest = waiting;
            }
        }
    }

    /// Drops the link's socket; the machine schedules a reconnect.
    fn redis_failed(&mut self, link: LinkId, why: &str) {
        let Some(cluster) = &mut self.cluster else { return };
        if let Some(mut socket) = cluster.socket(link).take() {
            let _ = self.poll.registry().deregister(&mut socket.stream);
        }
        cluster.machine.link_failed(link, self.now, why);
        self.apply_cluster_effects();
    }

    /// Once a turn, after the events: the machine's timers, connects that
    /// are due, and what they asked for.
    pub(super) fn cluster_tick(&mut self) {
        let Some(cluster) = &mut self.cluster else { return };
        if cluster.machine.next_deadline().is_some_and(|deadline| deadline <= self.now) {
            cluster.machine.tick(self.now);
        }
        cluster.machine.watch(self.now);
        // A link the machine gave up on (it stopped answering) loses its
        // socket here; it is connected again when its retry is due.
        for link in LINKS {
            if cluster.machine.is_down(link)
                && let Some(mut socket) = cluster.socket(link).take()
            {
                let _ = self.poll.registry().deregister(&mut socket.stream);
            }
        }
        for link in LINKS {
            let Some(cluster) = &mut self.cluster else { return };
            if cluster.socket(link).is_some() || !cluster.machine.connect_due(link, self.now) {
                continue;
            }
            cluster.machine.connecting(link);
            let registry = self.poll.registry();
            let started = TcpStream::connect(cluster.address).and_then(|mut stream| {
                let _ = stream.set_nodelay(true);
                registry.register(&mut stream, token(link), Interest::READABLE | Interest::WRITABLE)?;
                Ok(stream)
            });
            match started {
                Ok(stream) => {
                    *cluster.socket(link) = Some(Socket { stream, connecting: true, write_interest: true });
                }
                Err(error) => self.redis_failed(link, &error.to_string()),
            }
        }
        self.apply_cluster_effects();
    }

    /// Before the flush: this turn's publishes, and every link's output.
    pub(super) fn cluster_flush(&mut self) {
        let Some(cluster) = &mut self.cluster else { return };
        cluster.machine.end_turn(self.now);
        for link in LINKS {
            self.redis_write(link);
        }
    }

    /// The earliest time the cluster machine needs the loop.
    pub(super) fn cluster_deadline(&self) -> Option<Instant> {
        self.cluster.as_ref().and_then(|cluster| cluster.machine.next_deadline())
    }

    /// Parks a join while Redis is asked for its name (the session stays
    /// in its joining stage; its input waits in the kernel). Returns the
    /// request back when there is no cluster.
    pub(super) fn claim_in_cluster(&mut self, id: ConnId, request: JoinRequest) -> Option<JoinRequest> {
        let Some(cluster) = &mut self.cluster else { return Some(request) };
        let key = Cluster::name_key(&request.room.key, &request.name.key);
        cluster.machine.claim(id, &request.room.key, &request.name.key, self.now);
        cluster.claiming.insert(id, (request, key));
        None
    }

    /// A connection is gone: a claim it was waiting for is not wanted.
    pub(super) fn cluster_forget(&mut self, id: ConnId) {
        if let Some(cluster) = &mut self.cluster
            && cluster.claiming.remove(&id).is_some()
        {
            cluster.machine.forget_claim(id);
        }
    }

    /// A member joined or left a room: the cluster subscribes and
    /// releases accordingly.
    pub(super) fn cluster_member_joined(&mut self, room_key: &str) {
        if let Some(cluster) = &mut self.cluster {
            cluster.machine.member_joined(room_key);
        }
    }

    pub(super) fn cluster_member_left(&mut self, room_key: &str, name_key: &str) {
        if let Some(cluster) = &mut self.cluster {
            cluster.machine.release(&Cluster::name_key(room_key, name_key));
            cluster.machine.member_left(room_key, self.now);
        }
    }

    /// Applies what the machine decided: claim answers, lost names, and
    /// batches from other nodes.
    pub(super) fn apply_cluster_effects(&mut self) {
        loop {
            let Some(cluster) = &mut self.cluster else { return };
            if !cluster.machine.has_effects() {
                return;
            }
            let effects = cluster.machine.take_effects();
            for (id, key, claim) in effects.claims {
                self.claim_answered(id, &key, claim);
            }
            for id in effects.lost {
                if self.connections.contains(id.0) {
                    log::warn!("connection {id}: its name was taken on another node during a Redis outage");
                    self.connections[id.0].session.disconnect(
                        Failure::NameTakenElsewhere,
                        self.now,
                        &mut self.effects,
                    );
                    self.apply_effects(id);
                }
            }
            for (room_key, lines) in effects.remote {
                self.deliver_remote(&room_key, &lines);
            }
        }
    }

    fn claim_answered(&mut self, id: ConnId, key: &str, claim: Claim) {
        let Some(cluster) = &mut self.cluster else { return };
        let joining = self.connections.get(id.0).is_some_and(|connection| connection.session.is_joining());
        let waiting = match cluster.claiming.remove(&id) {
            Some((request, waiting_key)) if joining && *waiting_key == *key => Some(request),
            Some(other) => {
                // Not this claim's connection (its slot was reused).
                cluster.claiming.insert(id, other);
                None
            }
            None => None,
        };
        let Some(request) = waiting else {
            // Nobody waits for it any more (the connection went, or timed
            // out): a name claimed for nobody is given back.
            if claim == Claim::Claimed {
                cluster.machine.release(key);
            }
            return;
        };
        let answer = match claim {
            Claim::Claimed => {
                let transport = self.connections[id.0].transport;
                match self.rooms.join(&request.room, &request.name, id, transport) {
                    Ok(room) => Ok(room),
                    // Held here although Redis granted it (one key for both,
                    // so not expected): refused, and the key left to its
                    // holder.
                    Err(taken) => Err(self.taken_by(taken.holder)),
                }
            }
            Claim::Taken => Err(JoinRefused::Taken { holder: "".into() }),
            Claim::Unavailable => Err(JoinRefused::ClusterUnavailable),
        };
        self.finish_join(id, request, answer);
        self.apply_effects(id);
        // Input that came while the claim was out waits in the kernel, and
        // its readiness edge is gone: read it next turn.
        self.to_read.push(id);
    }

    /// Another node's batch for a room with local members: fanned out
    /// exactly like a local one (encoded once per transport), and not
    /// published again.
    fn deliver_remote(&mut self, room_key: &str, lines: &[u8]) {
        let Some(room) = self.rooms.id_of_key(room_key) else { return };
        let mut batch = std::mem::take(&mut self.remote_batch);
        batch.push_encoded(lines);
        std::mem::swap(&mut self.effects.messages, &mut batch);
        self.deliver(room, super::transfer::Origin::Remote);
        std::mem::swap(&mut self.effects.messages, &mut batch);
        self.remote_batch = batch;
    }
}

impl Reactor {
    /// Copies the cluster's counters into the published stats.
    pub(super) fn publish_cluster_stats(&mut self) {
        let Some(cluster) = &self.cluster else { return };
        let stats = cluster.machine.stats();
        self.stats.cluster_state = match cluster.state() {
            ClusterState::Connected => 1,
            ClusterState::Connecting => 2,
            ClusterState::Reconnecting => 3,
        };
        self.stats.cluster_publishes_sent = stats.publishes_sent;
        self.stats.cluster_publishes_dropped = stats.publishes_dropped;
        self.stats.cluster_lines_dropped = stats.lines_dropped;
        self.stats.cluster_payloads_received = stats.payloads_received;
        self.stats.cluster_payloads_refused = stats.payloads_refused;
        self.stats.cluster_claims = stats.claims;
        self.stats.cluster_claim_conflicts = stats.claim_conflicts;
        self.stats.cluster_claims_unavailable = stats.claims_unavailable;
        self.stats.cluster_names_lost = stats.names_lost;
        self.stats.cluster_reconnects = stats.reconnects;
        self.stats.cluster_subscriptions = stats.subscriptions;
    }
}
