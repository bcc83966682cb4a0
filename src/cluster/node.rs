//! One node's side of the cluster, as a socket-free state machine: what to
//! say to Redis, and what Redis's answers mean for the node's members.
//!
//! Two connections to Redis, as Centrifugo and socket.io's Redis adapter
//! keep them: the **subscriber** link only subscribes (a connection in
//! pub/sub mode can do nothing else) and receives the other nodes'
//! messages; the **commands** link carries publishes, name claims and
//! their refreshes and releases, whose replies come back in order, so a
//! FIFO of what each reply answers ([`Expect`]) is all the bookkeeping.
//!
//! The reactor owns the two sockets. It connects a link when
//! [`Cluster::connect_due`] says so, feeds what it reads to
//! [`Cluster::received`], writes [`Cluster::output`], and tells the
//! machine when a link connects or fails. Everything else is here, fed
//! the time: claims and their bounded wait, refreshing names while they
//! are held, subscribing rooms as their first local member joins and
//! unsubscribing a second after the last leaves, one publish per room per
//! turn, reconnecting with backoff and jitter, and claiming every name
//! again after a reconnect.
//!
//! Redis pub/sub is at-most-once: what is published while a node is cut
//! off from Redis is not delivered to it later. Publishes that cannot be
//! sent (Redis down, or its queue over [`MAX_QUEUED_BYTES`]) are dropped and
//! counted, never queued without bound and never a reason to cut a member.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use super::resp::{self, Reply};
use crate::parse::Status;
use crate::rooms::ConnId;

/// Bytes of commands (publishes, mostly) waiting for the commands link at
/// most; past it, publishes are dropped and counted. A Redis that reads
/// slowly cannot grow the node.
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of replies kept while one is incomplete: a pub/sub message holds
/// at most one turn's batch for one room (bounded by the read budget), so
/// this is generous.
const MAX_INBOX_BYTES: usize = 64 * 1024 * 1024;
/// A room with no local member stays subscribed this long, so a member who
/// leaves and comes back does not make the node unsubscribe and
/// resubscribe.
pub const UNSUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
/// Reconnect backoff: the first retry after about this long, doubling up
/// to [`MAX_BACKOFF`], each with ±50 % jitter so nodes that lost Redis
/// together do not come back in lockstep.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A commands link that owes replies and answers none for this long is
/// taken for dead (a Redis that stopped, or a network that lost it without
/// a reset) and connected again; any reply at all resets the clock.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The payload format's version, the first thing in every payload.
const PAYLOAD_VERSION: &str = "1";

/// Sets the name again (with a fresh expiry) if it is free or already
/// this node's; says 0 if another node holds it. Used to refresh held
/// names and to claim them again after a reconnect.
const RECLAIM_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
    if v == ARGV[1] or not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end \
    return 0";
/// Deletes the name only if this node holds it (compare and delete).
const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

/// Every room's channel starts with this, then the room's folded key.
const ROOM_CHANNEL_PREFIX: &str = "machat:room:";

fn room_channel(room: &str) -> String {
    format!("{ROOM_CHANNEL_PREFIX}{room}")
}

/// Where Redis is and how to log in: `redis://[[user]:password@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never reaches a log.
        write!(f, "redis://{}:{}/{}", self.host, self.port, self.db)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let rest = match url.split_once("://") {
            Some(("redis", rest)) => rest,
            Some(("rediss", _)) => {
                return Err("--cluster: rediss:// (TLS to Redis) is not supported yet; use redis://".into());
            }
            _ => return Err(format!("--cluster must be a redis:// URL (got {url:?})")),
        };
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (Some(credentials), rest),
            None => (None, rest),
        };
        let (address, db) = match rest.split_once('/') {
            Some((address, "")) => (address, 0),
            Some((address, db)) => {
                let db = db
                    .parse()
                    .map_err(|_| format!("--cluster: the database must be a number (got {db:?})"))?;
                (address, db)
            }
            None => (rest, 0),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port.parse().map_err(|_| format!("--cluster: bad port {port:?}"))?;
                (host, port)
            }
            _ => (address, 6379),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("--cluster: the URL has no host".into());
        }
        let (username, password) = match credentials {
            None => (None, None),
            Some(credentials) => match credentials.split_once(':') {
                Some((user, password)) => {
                    ((!user.is_empty()).then(|| user.to_owned()), Some(password.to_owned()))
                }
                None => (None, Some(credentials.to_owned())),
            },
        };
        Ok(RedisUrl { host: host.to_owned(), port, db, username, password })
    }

    /// Writes the commands that log a connection in (AUTH when the URL has
    /// a password, SELECT when it names a database and `select` says the
    /// link uses one) and returns how many replies they owe.
    pub fn encode_login(&self, out: &mut Vec<u8>, select: bool) -> usize {
        let mut commands = 0;
        if let Some(password) = &self.password {
            match &self.username {
                Some(user) => resp::encode_command(out, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => resp::encode_command(out, &[b"AUTH", password.as_bytes()]),
            }
            commands += 1;
        }
        if select && self.db != 0 {
            resp::encode_command(out, &[b"SELECT", self.db.to_string().as_bytes()]);
            commands += 1;
        }
        commands
    }

    /// `host:port`, for connecting.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What the cluster needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub url: RedisUrl,
    pub node_id: String,
    /// How long a claimed name lives in Redis without a refresh
    /// (`--cluster-name-ttl`): a crashed node's names are free after it.
    pub name_ttl: Duration,
    /// How long a join waits for Redis before `error: cluster unavailable`.
    pub join_wait: Duration,
}

/// One of the two connections to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkId {
    Subscriber,
    Commands,
}

/// Where a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Not connected; the reactor connects it at `retry_at`.
    Down { retry_at: Instant },
    /// The reactor is connecting it.
    Connecting,
    /// Commands link: connected, waiting for Redis's first answer (a PING
    /// after the login), so a Redis that accepts connections but does not
    /// answer (stopped) never counts as up.
    Greeting,
    /// Connected: commands written now are read by Redis in order, after
    /// the login commands written first.
    Up,
}

/// What a reply on the commands link answers, in the order sent.
#[derive(Debug)]
enum Expect {
    /// AUTH or SELECT: an error means the link cannot be used.
    Login,
    /// The PING after the login: its answer makes the commands link up.
    Greeting,
    /// A join's `SET ... NX`: `OK` claims the name, nil means another
    /// node (or member) holds it. Unanswered at `give_up_at` (a Redis that
    /// stopped reading), the join is told the cluster is unavailable and
    /// the claim becomes `Abandoned`.
    Claim { conn: ConnId, key: Box<str>, give_up_at: Instant },
    /// A claim whose join gave up waiting: if Redis grants it after all,
    /// the name is released at once.
    Abandoned { key: Box<str> },
    /// A refresh or re-claim of a held name: 0 means it was lost.
    Reclaim { key: Box<str> },
    /// A release, or a publish: nothing to do with the answer.
    Nothing,
}

#[derive(Debug)]
struct Link {
    state: LinkState,
    /// Bytes for Redis, not yet written.
    out: Vec<u8>,
    /// Bytes from Redis, not yet a complete reply.
    inbox: Vec<u8>,
    /// Connection attempts that failed in a row, for the backoff.
    failures: u32,
}

impl Link {
    fn new(now: Instant) -> Self {
        Link { state: LinkState::Down { retry_at: now }, out: Vec::new(), inbox: Vec::new(), failures: 0 }
    }

    fn is_up(&self) -> bool {
        self.state == LinkState::Up
    }
}

/// The answer to a join's claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The name is this member's across the cluster.
    Claimed,
    /// Another node's member (or a claim not yet expired) holds it.
    Taken,
    /// Redis could not be asked in time.
    Unavailable,
}

/// The cluster's state, for `/healthz` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Both links are up.
    Connected,
    /// Never connected yet.
    Connecting,
    /// A link was lost; retrying.
    Reconnecting,
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStats {
    /// Publishes written to Redis (one per room per turn).
    pub publishes_sent: u64,
    /// Publishes dropped: Redis down, or its queue full.
    pub publishes_dropped: u64,
    /// Chat lines in the dropped publishes.
    pub lines_dropped: u64,
    /// Payloads received from other nodes.
    pub payloads_received: u64,
    /// Payloads refused as malformed.
    pub payloads_refused: u64,
    /// Names claimed for joins.
    pub claims: u64,
    /// Joins refused because the name was held elsewhere.
    pub claim_conflicts: u64,
    /// Members who lost their name to another node during an outage.
    pub names_lost: u64,
    /// Joins refused because Redis did not answer in time.
    pub claims_unavailable: u64,
    /// Links connected again after a loss.
    pub reconnects: u64,
    /// Rooms subscribed now.
    pub subscriptions: u64,
}

/// What the reactor must do after a call; emptied by [`Cluster::take_effects`].
#[derive(Debug, Default)]
pub struct ClusterEffects {
    /// Answers to claims, with the claim's Redis key.
    pub claims: Vec<(ConnId, Box<str>, Claim)>,
    /// Members whose name another node took while Redis was unreachable.
    pub lost: Vec<ConnId>,
    /// Batches from other nodes: the room's key and `name:text\n` lines.
    pub remote: Vec<(Box<str>, Vec<u8>)>,
}

/// A claim waiting for the commands link.
#[derive(Debug)]
struct Waiting {
    conn: ConnId,
    key: Box<str>,
    give_up_at: Instant,
}

/// A room with local members, or that had some less than
/// [`UNSUBSCRIBE_AFTER`] ago.
#[derive(Debug)]
struct RoomSub {
    members: usize,
    /// When the last local member left.
    empty_since: Option<Instant>,
    /// SUBSCRIBE was written on the current subscriber connection.
    subscribed: bool,
}

/// The node's cluster state machine; see the module docs.
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    subscriber: Link,
    commands: Link,
    /// Replies the commands link owes, in order.
    expected: VecDeque<Expect>,
    /// Replies received on the commands link, ever (for [`Cluster::watch`]).
    answered: u64,
    /// While replies are owed: when the link was last seen answering, and
    /// `answered` then.
    progress: Option<(Instant, u64)>,
    waiting: VecDeque<Waiting>,
    /// Names held by local members: Redis key to holder.
    held: HashMap<Box<str>, ConnId>,
    rooms: HashMap<Box<str>, RoomSub>,
    /// This turn's lines per room, published once at its end.
    outbox: HashMap<Box<str>, Vec<u8>>,
    /// Rooms in `outbox`, in the order they first got lines (publishing in
    /// that order keeps the turn's order across rooms too).
    outbox_order: Vec<Box<str>>,
    next_refresh: Instant,
    /// Both links have been up at least once.
    ever_connected: bool,
    /// A drop was logged during this outage (logged once per outage).
    drop_logged: bool,
    jitter: u64,
    stats: ClusterStats,
    effects: ClusterEffects,
    limits: resp::Limits,
}

impl Cluster {
    pub fn new(config: ClusterConfig, now: Instant) -> Self {
        // Jitter only needs to differ between nodes: seed it from the id.
        let jitter = config.node_id.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
        }) | 1;
        Cluster {
            subscriber: Link::new(now),
            commands: Link::new(now),
            expected: VecDeque::new(),
            answered: 0,
            progress: None,
            waiting: VecDeque::new(),
            held: HashMap::new(),
            rooms: HashMap::new(),
            outbox: HashMap::new(),
            outbox_order: Vec::new(),
            next_refresh: now + config.name_ttl / 3,
            ever_connected: false,
            drop_logged: false,
            jitter,
            stats: ClusterStats::default(),
            effects: ClusterEffects::default(),
            limits: resp::Limits::default(),
            config,
        }
    }

    pub fn state(&self) -> ClusterState {
        if self.subscriber.is_up() && self.commands.is_up() {
            ClusterState::Connected
        } else if self.ever_connected {
            ClusterState::Reconnecting
        } else {
            ClusterState::Connecting
        }
    }

    pub fn stats(&self) -> ClusterStats {
        ClusterStats {
            subscriptions: self.rooms.values().filter(|room| room.subscribed).count() as u64,
            ..self.stats
        }
    }

    pub fn take_effects(&mut self) -> ClusterEffects {
        std::mem::take(&mut self.effects)
    }

    pub fn has_effects(&self) -> bool {
        !self.effects.claims.is_empty() || !self.effects.lost.is_empty() || !self.effects.remote.is_empty()
    }

    // ----- links -----------------------------------------------------------

    fn link(&mut self, id: LinkId) -> &mut Link {
        match id {
            LinkId::Subscriber => &mut self.subscriber,
            LinkId::Commands => &mut self.commands,
        }
    }

    fn link_ref(&self, id: LinkId) -> &Link {
        match id {
            LinkId::Subscriber => &self.subscriber,
            LinkId::Commands => &self.commands,
        }
    }

    /// Whether the reactor should start connecting `id` now.
    pub fn connect_due(&self, id: LinkId, now: Instant) -> bool {
        matches!(self.link_ref(id).state, LinkState::Down { retry_at } if retry_at <= now)
    }

    /// The reactor started connecting `id`.
    pub fn connecting(&mut self, id: LinkId) {
        self.link(id).state = LinkState::Connecting;
    }

    /// `id` is connected: log in, then say what the link is for.
    pub fn connected(&mut self, id: LinkId) {
        let was_connected = self.ever_connected;
        let link = self.link(id);
        link.state = match id {
            LinkId::Commands => LinkState::Greeting,
            LinkId::Subscriber => LinkState::Up,
        };
        link.failures = 0;
        link.out.clear();
        link.inbox.clear();
        if was_connected {
            self.stats.reconnects += 1;
        }
        // Pub/sub channels are not per database: only the commands link
        // selects one.
        let out = match id {
            LinkId::Subscriber => &mut self.subscriber.out,
            LinkId::Commands => &mut self.commands.out,
        };
        let logins = self.config.url.encode_login(out, id == LinkId::Commands);
        match id {
            LinkId::Commands => {
                self.expected.extend((0..logins).map(|_| Expect::Login));
                resp::encode_command(&mut self.commands.out, &[b"PING"]);
                self.expected.push_back(Expect::Greeting);
            }
            LinkId::Subscriber => {
                // A pub/sub connection answers AUTH like any other; its
                // replies are read as they come (see `on_push`).
                let rooms: Vec<Box<str>> = self
                    .rooms
                    .iter()
                    .filter(|(_, room)| room.members > 0)
                    .map(|(key, _)| key.clone())
                    .collect();
                self.rooms.retain(|_, room| room.members > 0);
                for key in rooms {
                    self.subscribe(&key);
                }
            }
        }
        self.note_connected();
    }

    /// Both links are up: say so once per outage.
    fn note_connected(&mut self) {
        if self.subscriber.is_up() && self.commands.is_up() {
            if !self.ever_connected || self.drop_logged {
                log::info!(
                    "cluster: connected to Redis at {} as node {}",
                    self.config.url,
                    self.config.node_id
                );
            }
            self.ever_connected = true;
            self.drop_logged = false;
        }
    }

    /// `id` failed to connect or was lost: retry after a backoff.
    pub fn link_failed(&mut self, id: LinkId, now: Instant, why: &str) {
        let was_up = self.link(id).is_up();
        let failures = self.link(id).failures;
        let backoff = FIRST_BACKOFF.saturating_mul(1 << failures.min(16)).min(MAX_BACKOFF);
        // ±50 %: xorshift, seeded per node.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let factor = 0.5 + (self.jitter % 1000) as f64 / 1000.0;
        let retry_at = now + backoff.mul_f64(factor);
        if id == LinkId::Commands {
            self.progress = None;
        }
        let link = self.link(id);
        link.state = LinkState::Down { retry_at };
        link.failures = failures.saturating_add(1);
        link.out.clear();
        link.inbox.clear();
        if was_up || failures == 0 {
            log::warn!("cluster: Redis {id:?} link lost ({why}); retrying");
        }
        match id {
            LinkId::Commands => {
                // What was in flight is unanswered: a claim is answered
                // "unavailable" (its SET may have taken effect; the name
                // then frees itself within --cluster-name-ttl).
                for expect in std::mem::take(&mut self.expected) {
                    if let Expect::Claim { conn, key, .. } = expect {
                        self.stats.claims_unavailable += 1;
                        self.effects.claims.push((conn, key, Claim::Unavailable));
                    }
                }
            }
            LinkId::Subscriber => {
                for room in self.rooms.values_mut() {
                    room.subscribed = false;
                }
            }
        }
    }

    /// Bytes waiting for `id`'s socket.
    pub fn output(&self, id: LinkId) -> &[u8] {
        &self.link_ref(id).out
    }

    /// The socket took `n` bytes of [`output`](Cluster::output).
    pub fn wrote(&mut self, id: LinkId, n: usize) {
        self.link(id).out.drain(..n);
    }

    /// Bytes read from `id`. An error means the link must be closed (the
    /// reply stream is not RESP, or login failed); the caller then calls
    /// [`link_failed`](Cluster::link_failed).
    pub fn received(&mut self, id: LinkId, bytes: &[u8]) -> Result<(), String> {
        let link = self.link(id);
        link.inbox.extend_from_slice(bytes);
        let mut offset = 0;
        let result = loop {
            match resp::parse(&self.link_ref(id).inbox[offset..], &self.limits) {
                Ok(Status::Complete { value, consumed }) => {
                    offset += consumed;
                    let handled = match id {
                        LinkId::Commands => self.on_reply(value),
                        LinkId::Subscriber => self.on_push(value),
                    };
                    if let Err(error) = handled {
                        break Err(error);
                    }
                }
                Ok(Status::Partial) => break Ok(()),
                Err(error) => break Err(format!("not RESP: {error}")),
            }
        };
        let link = self.link(id);
        link.inbox.drain(..offset.min(link.inbox.len()));
        if result.is_ok() && link.inbox.len() > MAX_INBOX_BYTES {
            return Err(format!("a reply over {MAX_INBOX_BYTES} bytes"));
        }
        result
    }

    fn on_reply(&mut self, reply: Reply) -> Result<(), String> {
        self.answered += 1;
        let Some(expect) = self.expected.pop_front() else {
            return Err(format!("an unexpected reply: {reply:?}"));
        };
        match (expect, reply) {
            (Expect::Login, Reply::Error(error)) => Err(format!("login refused: {error}")),
            (Expect::Login, _) => Ok(()),
            (Expect::Greeting, Reply::Error(error)) => Err(format!("Redis refused a PING: {error}")),
            (Expect::Greeting, _) => {
                self.commands.state = LinkState::Up;
                // Names held through an outage are claimed again (another
                // node may have taken some meanwhile), and joins that waited
                // for the link are sent (those past their wait are given up
                // by `tick`, in flight).
                let keys: Vec<Box<str>> = self.held.keys().cloned().collect();
                for key in keys {
                    self.send_reclaim(key);
                }
                while let Some(waiting) = self.waiting.pop_front() {
                    self.send_claim(waiting.conn, waiting.key, waiting.give_up_at);
                }
                self.note_connected();
                Ok(())
            }
            (Expect::Abandoned { key }, Reply::Simple(ok)) if ok == "OK" => {
                self.release(&key);
                Ok(())
            }
            (Expect::Abandoned { .. }, _) => Ok(()),
            (Expect::Claim { conn, key, .. }, Reply::Simple(ok)) if ok == "OK" => {
                self.stats.claims += 1;
                self.held.insert(key.clone(), conn);
                self.effects.claims.push((conn, key, Claim::Claimed));
                Ok(())
            }
            (Expect::Claim { conn, key, .. }, Reply::Nil) => {
                self.stats.claim_conflicts += 1;
                self.effects.claims.push((conn, key, Claim::Taken));
                Ok(())
            }
            (Expect::Claim { conn, key, .. }, other) => {
                log::warn!("cluster: claim answered {other:?}");
                self.stats.claims_unavailable += 1;
                self.effects.claims.push((conn, key, Claim::Unavailable));
                Ok(())
            }
            (Expect::Reclaim { key }, Reply::Integer(0)) => {
                if let Some(conn) = self.held.remove(&key) {
                    self.stats.names_lost += 1;
                    self.effects.lost.push(conn);
                }
                Ok(())
            }
            (Expect::Reclaim { .. }, Reply::Error(error)) | (Expect::Nothing, Reply::Error(error)) => {
                log::warn!("cluster: Redis said: {error}");
                Ok(())
            }
            (Expect::Reclaim { .. } | Expect::Nothing, _) => Ok(()),
        }
    }

    fn on_push(&mut self, push: Reply) -> Result<(), String> {
        let parts = match push {
            Reply::Array(parts) => parts,
            Reply::Error(error) => return Err(format!("Redis refused the subscriber link: {error}")),
            // AUTH's OK.
            _ => return Ok(()),
        };
        let mut parts = parts.into_iter();
        let (Some(Reply::Bulk(kind)), Some(Reply::Bulk(channel))) = (parts.next(), parts.next()) else {
            return Ok(());
        };
        if kind != b"message" {
            return Ok(());
        }
        let Some(Reply::Bulk(payload)) = parts.next() else { return Ok(()) };
        let Some(room) = channel
            .strip_prefix(ROOM_CHANNEL_PREFIX.as_bytes())
            .and_then(|room| std::str::from_utf8(room).ok())
        else {
            return Ok(());
        };
        let Some(lines) = self.payload_lines(&payload) else {
            return Ok(());
        };
        let lines = lines.to_vec();
        if !lines.is_empty() {
            self.stats.payloads_received += 1;
            self.effects.remote.push((room.into(), lines));
        }
        Ok(())
    }

    /// The lines of another node's payload; `None` for this node's own
    /// (already delivered here) or one that is not well formed.
    fn payload_lines<'p>(&mut self, payload: &'p [u8]) -> Option<&'p [u8]> {
        let newline = memchr::memchr(b'\n', payload)?;
        let header = std::str::from_utf8(&payload[..newline]).ok();
        let lines = &payload[newline + 1..];
        let well_formed = header
            .and_then(|header| header.split_once(' '))
            .filter(|(version, _)| *version == PAYLOAD_VERSION);
        let Some((_, node)) = well_formed else {
            self.stats.payloads_refused += 1;
            return None;
        };
        if node == self.config.node_id {
            return None;
        }
        if (!lines.is_empty() && !lines.ends_with(b"\n")) || std::str::from_utf8(lines).is_err() {
            self.stats.payloads_refused += 1;
            return None;
        }
        Some(lines)
    }

    // ----- names -----------------------------------------------------------

    /// The Redis key of `name` (folded) in `room` (folded). Names have no
    /// `:`, so the key splits unambiguously at its last one.
    pub fn name_key(room_key: &str, name_key: &str) -> Box<str> {
        format!("machat:name:{room_key}:{name_key}").into_boxed_str()
    }

    /// A join asks for its name across the cluster; the answer comes as a
    /// [`Claim`] in the effects, after Redis replies, or `Unavailable`
    /// once `join_wait` has passed without a commands link.
    pub fn claim(&mut self, conn: ConnId, room_key: &str, name_key: &str, now: Instant) {
        let key = Self::name_key(room_key, name_key);
        let give_up_at = now + self.config.join_wait;
        if self.commands.is_up() {
            self.send_claim(conn, key, give_up_at);
        } else {
            self.waiting.push_back(Waiting { conn, key, give_up_at });
        }
    }

    /// A claiming connection went away before its answer: forget it if it
    /// is still waiting. (One already sent is answered; the reactor
    /// releases it then.)
    pub fn forget_claim(&mut self, conn: ConnId) {
        self.waiting.retain(|waiting| waiting.conn != conn);
    }

    fn send_claim(&mut self, conn: ConnId, key: Box<str>, give_up_at: Instant) {
        let ttl = self.config.name_ttl.as_millis().to_string();
        resp::encode_command(
            &mut self.commands.out,
            &[b"SET", key.as_bytes(), self.config.node_id.as_bytes(), b"NX", b"PX", ttl.as_bytes()],
        );
        self.expected.push_back(Expect::Claim { conn, key, give_up_at });
    }

    fn send_reclaim(&mut self, key: Box<str>) {
        let ttl = self.config.name_ttl.as_millis().to_string();
        resp::encode_command(
            &mut self.commands.out,
            &[
                b"EVAL",
                RECLAIM_SCRIPT.as_bytes(),
                b"1",
                key.as_bytes(),
                self.config.node_id.as_bytes(),
                ttl.as_bytes(),
            ],
        );
        self.expected.push_back(Expect::Reclaim { key });
    }

    /// A claimed name is no longer wanted (its member left, or its
    /// connection went before it joined): delete it if it is still ours.
    pub fn release(&mut self, key: &str) {
        self.held.remove(key);
        if self.commands.is_up() {
            resp::encode_command(
                &mut self.commands.out,
                &[b"EVAL", RELEASE_SCRIPT.as_bytes(), b"1", key.as_bytes(), self.config.node_id.as_bytes()],
            );
            self.expected.push_back(Expect::Nothing);
        }
        // Down: the claim expires by itself within the TTL.
    }

    // ----- rooms -----------------------------------------------------------

    /// A local member joined `room` (its key): the node listens to the
    /// room from its first member on.
    pub fn member_joined(&mut self, room: &str) {
        let entry = self.rooms.entry(room.into()).or_insert(RoomSub {
            members: 0,
            empty_since: None,
            subscribed: false,
        });
        entry.members += 1;
        entry.empty_since = None;
        if !entry.subscribed && self.subscriber.is_up() {
            self.subscribe(room);
        }
    }

    /// A local member left `room`; the room is unsubscribed a while after
    /// its last local member is gone.
    pub fn member_left(&mut self, room: &str, now: Instant) {
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.members = entry.members.saturating_sub(1);
            if entry.members == 0 {
                entry.empty_since = Some(now);
            }
        }
    }

    fn subscribe(&mut self, room: &str) {
        let channel = room_channel(room);
        resp::encode_command(&mut self.subscriber.out, &[b"SUBSCRIBE", channel.as_bytes()]);
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.subscribed = true;
        }
    }

    // ----- messages --------------------------------------------------------

    /// Lines delivered locally to `room` (its key) this turn, to publish
    /// at its end.
    pub fn publish(&mut self, room: &str, lines: &[u8]) {
        match self.outbox.get_mut(room) {
            Some(queued) => queued.extend_from_slice(lines),
            None => {
                self.outbox.insert(room.into(), lines.to_vec());
                self.outbox_order.push(room.into());
            }
        }
    }

    /// The end of a turn: one PUBLISH per room that had lines, or, if they
    /// cannot be sent, dropped and counted.
    pub fn end_turn(&mut self, now: Instant) {
        self.end_turn_publishes();
        self.watch(now);
    }

    /// Whether `id` is down (the reactor drops its socket if it still has
    /// one: the machine gave up on a link that did not answer).
    pub fn is_down(&self, id: LinkId) -> bool {
        matches!(self.link_ref(id).state, LinkState::Down { .. })
    }

    /// Cheap, once a turn: a commands link that owes replies and has
    /// answered none for [`REPLY_TIMEOUT`] is failed, so the node says it
    /// is reconnecting, drops publishes instead of queueing them for a
    /// Redis that does not read, and connects again.
    pub fn watch(&mut self, now: Instant) {
        let answering = matches!(self.commands.state, LinkState::Up | LinkState::Greeting);
        if !answering || self.expected.is_empty() {
            self.progress = None;
            return;
        }
        match self.progress {
            Some((since, answered)) if answered == self.answered => {
                if since + REPLY_TIMEOUT <= now {
                    let silent = REPLY_TIMEOUT.as_secs();
                    self.link_failed(LinkId::Commands, now, &format!("Redis did not answer for {silent} s"));
                }
            }
            _ => self.progress = Some((now, self.answered)),
        }
    }

    fn end_turn_publishes(&mut self) {
        if self.outbox_order.is_empty() {
            return;
        }
        let mut header = String::with_capacity(PAYLOAD_VERSION.len() + 1 + self.config.node_id.len() + 1);
        header.push_str(PAYLOAD_VERSION);
        header.push(' ');
        header.push_str(&self.config.node_id);
        header.push('\n');
        let mut payload = Vec::new();
        for room in std::mem::take(&mut self.outbox_order) {
            let Some(lines) = self.outbox.remove(&room) else { continue };
            if !self.commands.is_up() || self.commands.out.len() + lines.len() > MAX_QUEUED_BYTES {
                self.stats.publishes_dropped += 1;
                self.stats.lines_dropped += memchr::memchr_iter(b'\n', &lines).count() as u64;
                if !self.drop_logged {
                    self.drop_logged = true;
                    log::warn!(
                        "cluster: Redis cannot take publishes now; they are dropped (and counted) until it can"
                    );
                }
                continue;
            }
            payload.clear();
            payload.extend_from_slice(header.as_bytes());
            payload.extend_from_slice(&lines);
            let channel = room_channel(&room);
            resp::encode_command(&mut self.commands.out, &[b"PUBLISH", channel.as_bytes(), &payload]);
            self.expected.push_back(Expect::Nothing);
            self.stats.publishes_sent += 1;
        }
    }

    // ----- time ------------------------------------------------------------

    /// The next time [`tick`](Cluster::tick) has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let retries = [&self.subscriber, &self.commands].into_iter().filter_map(|link| match link.state {
            LinkState::Down { retry_at } => Some(retry_at),
            _ => None,
        });
        let waiting = self.waiting.front().map(|waiting| waiting.give_up_at);
        let in_flight = self.expected.iter().find_map(|expect| match expect {
            Expect::Claim { give_up_at, .. } => Some(*give_up_at),
            _ => None,
        });
        let unsubscribe = self
            .rooms
            .values()
            .filter_map(|room| room.empty_since)
            .min()
            .map(|since| since + UNSUBSCRIBE_AFTER);
        let refresh = (!self.held.is_empty()).then_some(self.next_refresh);
        let silence = self.progress.map(|(since, _)| since + REPLY_TIMEOUT);
        retries.chain(waiting).chain(in_flight).chain(unsubscribe).chain(refresh).chain(silence).min()
    }

    /// Time passed: give up on claims that waited too long, refresh held
    /// names, unsubscribe rooms empty for long enough.
    pub fn tick(&mut self, now: Instant) {
        while self.waiting.front().is_some_and(|waiting| waiting.give_up_at <= now) {
            let waiting = self.waiting.pop_front().expect("checked");
            self.stats.claims_unavailable += 1;
            self.effects.claims.push((waiting.conn, waiting.key, Claim::Unavailable));
        }
        // Claims Redis has not answered in time (it stopped reading): their
        // joins are told now; the replies, if they ever come, are matched.
        for expect in &mut self.expected {
            if let Expect::Claim { conn, key, give_up_at } = expect
                && *give_up_at <= now
            {
                let (conn, key) = (*conn, std::mem::take(key));
                self.stats.claims_unavailable += 1;
                self.effects.claims.push((conn, key.clone(), Claim::Unavailable));
                *expect = Expect::Abandoned { key };
            }
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.config.name_ttl / 3;
            if self.commands.is_up() {
                let keys: Vec<Box<str>> = self.held.keys().cloned().collect();
                for key in keys {
                    self.send_reclaim(key);
                }
            }
        }
        let due: Vec<Box<str>> = self
            .rooms
            .iter()
            .filter(|(_, room)| room.empty_since.is_some_and(|since| since + UNSUBSCRIBE_AFTER <= now))
            .map(|(key, _)| key.clone())
            .collect();
        for room in due {
            if let Some(entry) = self.rooms.remove(&room)
                && entry.subscribed
                && self.subscriber.is_up()
            {
                let channel = room_channel(&room);
                resp::encode_command(&mut self.subscriber.out, &[b"UNSUBSCRIBE", channel.as_bytes()]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
