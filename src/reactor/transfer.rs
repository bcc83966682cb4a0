//! Moving bytes: reading sockets into sessions, applying what sessions ask
//! for (fan-out into members' outputs included), writing outputs to
//! sockets, and closing.
//!
//! One chat line, from `read` to `write`: [`Reactor::read_from`] reads it
//! into the shared read buffer and hands it to the session
//! (`session/mod.rs`), whose member stage frames it (`line_framing.rs`)
//! into the [`Effects`]' batch; [`Reactor::apply_effects`] copies the batch
//! into each member's [`Output`] (`output.rs`); at the end of the turn
//! [`Reactor::flush_pending`] writes each output once.
//!
//! [`Effects`]: crate::session::Effects
//! [`Output`]: crate::output::Output

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::{Interest, Registry, Token};

use std::time::Instant;

use super::{Connection, Outputs, Reactor, ServerState, history};
use crate::failure::Failure;
use crate::flow::{Allowance, CutReason, Pause, Sender};
use crate::handshake::JoinRequest;
use crate::output::{Appended, Flushed, OverCap, Tally};
use crate::pages;
use crate::rooms::{ConnId, RoomId, Transport};
use crate::session::{Effects, JoinRefused, Left, Reading};
use crate::stats::Stats;
use crate::tls::TlsFailure;

/// Bytes one connection may read per turn before others get their turn.
const READ_BUDGET: usize = 64 * 1024;

/// What one read from a connection gave (after TLS, when it has TLS).
enum Received {
    Bytes(usize),
    WouldBlock,
    /// The peer closed its side (with or without TLS close_notify).
    Eof,
    Failed(String),
}

/// Where a batch being delivered came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A member of this node: other nodes get it too.
    Local,
    /// Another node, through Redis: delivered here only.
    Remote,
}

/// Why a connection could not take more output.
#[derive(Debug)]
pub(super) enum Refused {
    /// Its queue would pass `--max-pending` even after writing what the
    /// socket takes.
    OverCap,
    /// Writing to it failed.
    Broken(io::Error),
}

impl Reactor {
    /// Serves the connections that had input left over after last turn.
    pub(super) fn read_carried_over(&mut self) {
        if self.to_read.is_empty() {
            return;
        }
        let mut carried = std::mem::take(&mut self.to_read);
        carried.sort_unstable();
        carried.dedup();
        for &id in &carried {
            self.read_from(id);
        }
        carried.clear();
        if self.to_read.is_empty() {
            self.to_read = carried;
        }
    }

    /// Reads until `WouldBlock`, end of input, an error, or the read
    /// budget is spent (then the connection is read first next turn: mio
    /// is edge-triggered, so input left unread would get no new event).
    pub(super) fn read_from(&mut self, id: ConnId) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(connection) = self.connections.get(id.0) else { return };
            let (discard, limit) = match (connection.session.reading(), self.state) {
                (Reading::Discarded, _) => (true, self.read_buffer.len()),
                (Reading::Wanted, ServerState::Serving) => match self.allowance(id) {
                    Allowance::Read(bytes) => (false, bytes.min(self.read_buffer.len())),
                    Allowance::Paused(pause) => {
                        self.defer(id, pause);
                        return;
                    }
                },
                // Shutting down: input is no longer read, except to drain.
                _ => return,
            };
            let connection = &mut self.connections[id.0];
            match connection.receive(&mut self.read_buffer[..limit], &mut self.stats, self.now) {
                Received::Eof => {
                    connection.session.peer_closed(self.now, &mut self.effects);
                    self.apply_effects(id);
                    return;
                }
                Received::Bytes(n) => {
                    if !discard {
                        self.feed(id, n);
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.to_read.push(id);
                        self.send_tls_records(id);
                        return;
                    }
                }
                Received::WouldBlock => {
                    self.send_tls_records(id);
                    return;
                }
                Received::Failed(why) => {
                    self.close(id, &why);
                    return;
                }
            }
        }
    }

    /// A TLS session may have records to send that no output asked for
    /// (its handshake, an alert): they go out now, or wait for WRITABLE.
    fn send_tls_records(&mut self, id: ConnId) {
        if self
            .connections
            .get(id.0)
            .is_some_and(|c| c.tls.as_ref().is_some_and(|tls| tls.connection.wants_write()))
        {
            self.flush(id);
        }
    }

    /// How much the connection may read now (flow control).
    fn allowance(&self, id: ConnId) -> Allowance {
        let sender = match self.connections[id.0].session.sender_profile() {
            None => Sender::Newcomer,
            Some(profile) => Sender::Member {
                room: profile.room,
                members: self.rooms.get(profile.room).map_or(1, |room| room.len()),
                name_bytes: profile.name_bytes,
                held: profile.held,
            },
        };
        self.outputs.flow.allowance(sender, self.stats.queued_bytes as usize)
    }

    /// Leaves a sender unread until its pause ends; its input waits in the
    /// kernel, and TCP flow control slows it down.
    fn defer(&mut self, id: ConnId, pause: Pause) {
        if pause == Pause::Global && !self.outputs.flow.is_saturated() {
            self.outputs.flow.wait_for_drain(self.stats.queued_bytes as usize);
        }
        if self.deferred.insert(id) {
            self.stats.sender_pauses += 1;
        }
    }

    /// After a pause ended: the senders left unread are read again (next
    /// turn, first), and those still paused are deferred again.
    pub(super) fn resume_deferred(&mut self) {
        if self.outputs.flow.take_resumed() {
            self.to_read.extend(self.deferred.drain());
        }
    }

    /// Hands the first `len` bytes of the read buffer to the session. A
    /// stage may end part-way (a handshake followed by chat lines), so the
    /// rest goes round again, after the effects are applied, while the
    /// session still reads.
    fn feed(&mut self, id: ConnId, len: usize) {
        let mut offset = 0;
        while offset < len {
            let connection = &mut self.connections[id.0];
            // A join waiting for its claim (cluster mode) keeps the rest
            // of this read; others that stopped reading drop it.
            if connection.session.reading() != Reading::Wanted && !connection.session.is_joining() {
                return;
            }
            let input = &self.read_buffer[offset..len];
            let taken = connection.session.input(input, self.now, &self.config, &mut self.effects);
            self.apply_effects(id);
            debug_assert!(taken > 0, "a reading session took nothing");
            if taken == 0 {
                return;
            }
            offset += taken;
        }
    }

    /// Applies what the session of `id` asked for, in order: the join
    /// (whose answer may ask for more), the messages to its room, the
    /// bytes for itself, the page, the leave, the close. Then the session
    /// is armed at its deadline.
    pub(super) fn apply_effects(&mut self, id: ConnId) {
        while let Some(mut request) = self.effects.join.take() {
            // A room that comes back keeps the spelling its history has.
            if self.rooms.find(&request.room).is_none()
                && let Some(display) = self.history.ring.display_of(&request.room.key)
                && *display != *request.room.display
            {
                request.room.display = display.into();
            }
            // Held here: refused at once, with the holder's spelling.
            if let Some(holder) = self.rooms.holder(&request.room, &request.name) {
                let refused = self.taken_by(holder);
                self.finish_join(id, request, Err(refused));
                continue;
            }
            // In a cluster, Redis is asked first; the answer comes later
            // (`reactor/cluster.rs`).
            let Some(request) = self.claim_in_cluster(id, request) else { continue };
            let transport = self.connections[id.0].transport;
            let claim = self
                .rooms
                .join(&request.room, &request.name, id, transport)
                .map_err(|taken| self.taken_by(taken.holder));
            self.finish_join(id, request, claim);
        }
        if let Some(room) = self.effects.room.take() {
            self.deliver(room, Origin::Local);
        }
        if let Some(page) = self.effects.page.take() {
            self.refresh_gauges();
            let lookup = history::Lookup { rooms: &self.rooms, history: &self.history.ring };
            // A response is one append to the output: it must fit the cap.
            let max_bytes = self.config.max_pending / 2;
            // Asking for more than --history would get every join from the
            // page refused; with history off the page asks for 0.
            let page_history = self.config.history.min(pages::PAGE_HISTORY_LINES);
            let response =
                pages::render(page.page, &self.config.ws_path, page_history, &self.stats, &lookup, max_bytes);
            response.encode(&mut self.effects.send, page.keep_alive, page.head_only);
            self.effects.http_status = Some(response.status);
        }
        if !self.effects.send.is_empty() {
            let connection = &mut self.connections[id.0];
            let room = connection.session.room();
            let appended = self.outputs.append(
                id,
                room,
                connection,
                &self.effects.send,
                &mut self.stats,
                self.poll.registry(),
                self.now,
            );
            self.effects.send.clear();
            if let Err(refused) = appended {
                self.refused_own_output(id, refused);
            }
        }
        if let Some(failure) = self.effects.failure.take() {
            if let Some(reason) = failure.handshake_reason() {
                self.stats.count_handshake_error(reason);
            }
            if failure == Failure::PingTimeout {
                self.stats.ping_timeouts += 1;
            }
            if self.effects.http_status.is_none() {
                log::info!("connection {id}: error: {failure}");
            }
        }
        if let Some(status) = self.effects.http_status.take() {
            self.stats.count_http_response(status);
            if status >= 400 {
                log::info!("connection {id}: HTTP {status}");
            }
        }
        if let Some(left) = self.effects.left.take() {
            self.leave_room(id, left);
        }
        if let Some(why) = self.effects.closed.take() {
            self.close(id, why);
        }
        let connection = &mut self.connections[id.0];
        connection.count_held_input(&mut self.stats);
        if connection.session.is_closing() && connection.output.is_empty() {
            connection.session.output_drained(self.now, &mut self.effects);
        }
        if std::mem::take(&mut self.effects.shutdown_write) {
            self.shutdown_write(id);
        }
        self.arm(id);
        debug_assert!(self.effects.is_empty(), "effects left unapplied: {:?}", self.effects);
    }

    /// The refusal of a join whose name `holder` has, in its spelling.
    pub(super) fn taken_by(&self, holder: ConnId) -> JoinRefused {
        let spelling = self.connections.get(holder.0).and_then(|holder| holder.session.name());
        JoinRefused::Taken { holder: spelling.unwrap_or_default().into() }
    }

    /// Answers a join: the session becomes a member (or fails), and a new
    /// member gets its history replayed in this turn, before the room's
    /// next batch (its own lines included) can reach it.
    pub(super) fn finish_join(
        &mut self,
        id: ConnId,
        request: JoinRequest,
        claim: Result<RoomId, JoinRefused>,
    ) {
        if claim.is_ok() {
            self.stats.joins += 1;
            log::debug!("connection {id}: {} joined {}", request.name.display, request.room.display);
            self.cluster_member_joined(&request.room.key);
        }
        let joined_room = claim.as_ref().ok().copied();
        let asked = request.history;
        let connection = &mut self.connections[id.0];
        connection.session.joined(request, claim, self.now, &self.config, &mut self.effects);
        if let Some(room) = joined_room
            && self.connections[id.0].session.room() == Some(room)
        {
            self.replay_history(id, room, asked);
        }
    }

    /// A connection's own output (replies, a replay) did not fit or could
    /// not be written: nothing clean can be said.
    pub(super) fn refused_own_output(&mut self, id: ConnId, refused: Refused) {
        match refused {
            Refused::OverCap => {
                self.stats.count_cut(CutReason::HardCap);
                self.close(id, "its own replies passed --max-pending");
            }
            Refused::Broken(error) => self.close(id, &error.to_string()),
        }
    }

    /// Makes sure the connection is woken at its session's deadline, or
    /// when its congested output must have made progress.
    pub(super) fn arm(&mut self, id: ConnId) {
        let connection = &mut self.connections[id.0];
        let stall = self.outputs.flow.stall_deadline(id);
        let wanted = match (connection.session.deadline(), stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.deadlines.arm(id, &mut connection.armed, wanted);
    }

    /// A member left its room: the name is free, and its output no longer
    /// holds the room back.
    fn leave_room(&mut self, id: ConnId, left: Left) {
        if let Some(room_key) = self.rooms.get(left.room).map(|room| room.key().to_owned()) {
            self.cluster_member_left(&room_key, &left.key);
        }
        self.rooms.leave(left.room, &left.key);
        self.outputs.flow.left_room(id, self.now);
        log::debug!("connection {id}: {} left", left.name);
    }

    /// Hands the batch to every member of `room`: one copy of the line
    /// bytes per TCP member, one of the frame bytes per WebSocket member.
    pub(super) fn deliver(&mut self, room: RoomId, origin: Origin) {
        if self.effects.messages.is_empty() {
            return;
        }
        self.record_history(room);
        if origin == Origin::Local
            && let Some(cluster) = &mut self.cluster
            && let Some(members) = self.rooms.get(room)
        {
            // Other nodes get the turn's lines for a room in one publish.
            cluster.machine.publish(members.key(), self.effects.messages.lines());
        }
        let batch = &mut self.effects.messages;
        let Some(members) = self.rooms.get(room) else {
            batch.clear();
            return;
        };
        if members.has_websocket_members() {
            batch.encode_frames();
        }
        let mut refused = Vec::new();
        let registry = self.poll.registry();
        for member in members.members() {
            let connection = &mut self.connections[member.conn.0];
            let bytes = match member.transport {
                Transport::Tcp => batch.lines(),
                Transport::WebSocket => batch.frames(),
            };
            let appended = self.outputs.append(
                member.conn,
                Some(room),
                connection,
                bytes,
                &mut self.stats,
                registry,
                self.now,
            );
            if let Err(refusal) = appended {
                refused.push((member.conn, refusal));
            }
        }
        let messages = batch.len() as u64;
        self.stats.messages_in += messages;
        self.stats.deliveries += messages * (members.len() - refused.len()) as u64;
        batch.clear();
        // Outputs that became congested are woken if they stall.
        while let Some(id) = self.outputs.newly_congested.pop() {
            self.arm(id);
        }
        if refused.is_empty() {
            return;
        }
        // Cutting a member applies its own effects; the sender's are not
        // finished yet, so they wait aside.
        let sender_effects = std::mem::take(&mut self.effects);
        for (id, refusal) in refused {
            match refusal {
                Refused::OverCap => self.cut(id, CutReason::HardCap),
                Refused::Broken(error) => self.close(id, &error.to_string()),
            }
        }
        self.effects = sender_effects;
    }

    /// Cuts a slow consumer cleanly: its queue is cut at a message
    /// boundary and followed by `error: slow consumer` (WebSocket: that
    /// text and Close 1008); the connection closes once that is written,
    /// or after the linger if it never is. It leaves its room at once.
    pub(super) fn cut(&mut self, id: ConnId, reason: CutReason) {
        self.stats.count_cut(reason);
        let connection = &mut self.connections[id.0];
        log::warn!(
            "connection {id}: slow consumer ({}), {} bytes queued; disconnecting",
            reason.label(),
            connection.output.len()
        );
        let dropped = connection.output.cut_at_message_boundary();
        self.stats.queued_bytes -= dropped as u64;
        connection.session.disconnect(Failure::SlowConsumer, self.now, &mut self.effects);
        self.apply_effects(id);
    }

    // ----- writing ---------------------------------------------------------

    /// Writes every output that became pending this turn: one `write` per
    /// connection for everything it was sent.
    pub(super) fn flush_pending(&mut self) {
        while let Some(id) = self.outputs.to_flush.pop() {
            if self
                .connections
                .get(id.0)
                .is_some_and(|c| matches!(c.output, crate::output::Output::Pending(_)))
            {
                self.flush(id);
            }
        }
    }

    /// A blocked socket can take more.
    pub(super) fn writable(&mut self, id: ConnId) {
        if self.connections.get(id.0).is_some_and(Connection::waits_to_write) {
            self.flush(id);
        }
    }

    /// Writes what the socket takes; a closing session whose output is now
    /// empty moves on.
    fn flush(&mut self, id: ConnId) {
        let connection = &mut self.connections[id.0];
        if let Err(error) =
            self.outputs.write(id, connection, &mut self.stats, self.poll.registry(), self.now)
        {
            self.close(id, &error.to_string());
            return;
        }
        if connection.session.is_closing() && connection.output.is_empty() {
            connection.session.output_drained(self.now, &mut self.effects);
            self.apply_effects(id);
        }
    }

    /// Everything owed was written: send FIN. Input may have arrived while
    /// closing, and its readiness edge is gone, so the connection is read
    /// next turn rather than waiting for an event that will not come.
    fn shutdown_write(&mut self, id: ConnId) {
        let connection = &mut self.connections[id.0];
        if let Some(tls) = &mut connection.tls {
            // TLS says goodbye first; best effort, as the FIN itself is.
            tls.connection.send_close_notify();
            let _ = TlsSink { tls: &mut tls.connection, socket: &mut connection.socket }.send_records();
        }
        if let Err(error) = connection.socket.shutdown(Shutdown::Write) {
            self.close(id, &error.to_string());
            return;
        }
        self.to_read.push(id);
    }

    // ----- closing ---------------------------------------------------------

    /// Ends a connection now: its session closes (a member leaves its room
    /// at once), what it had queued is dropped, and the socket is closed
    /// at the end of the turn. Nothing after this needs to check on it:
    /// a closed session reads nothing and is in no room.
    pub(super) fn close(&mut self, id: ConnId, why: &str) {
        let connection = &mut self.connections[id.0];
        // Whatever the session was doing, it is over; only its leaving the
        // room is applied.
        let mut closing = Effects::default();
        connection.session.close(&mut closing, "closed");
        connection.count_held_input(&mut self.stats);
        let had_output = !connection.output.is_empty();
        let dropped = connection.output.discard(&mut self.outputs.pool);
        self.stats.queued_bytes -= dropped as u64;
        if let ServerState::ShuttingDown { cut, .. } = &mut self.state {
            cut.count(dropped);
        }
        if had_output {
            self.stats.output_buffers -= 1;
        }
        if let Some(left) = closing.left.take() {
            self.leave_room(id, left);
        }
        self.outputs.flow.forget(id, self.now);
        self.deferred.remove(&id);
        log::debug!("connection {id}: closed ({why})");
        self.to_close.push(id);
    }

    /// Removes the connections closed this turn. Dropping a socket closes
    /// it, which also takes it out of epoll.
    pub(super) fn remove_closed(&mut self) {
        for id in std::mem::take(&mut self.to_close) {
            let Some(mut connection) = self.connections.try_remove(id.0) else { continue };
            self.cluster_forget(id);
            self.deadlines.disarm(id, &mut connection.armed);
            match connection.transport {
                Transport::Tcp => self.stats.tcp_connections -= 1,
                Transport::WebSocket => self.stats.ws_connections -= 1,
            }
            if let Some(tls) = &connection.tls {
                self.stats.tls_connections[tls.listener as usize] -= 1;
            }
            // A descriptor was freed: a paused listener can try again now.
            for listener in &mut self.listeners {
                listener.descriptor_freed(self.now);
            }
        }
    }
}

impl Outputs {
    /// Queues `bytes` for a connection, to be written at the end of the
    /// turn, and tells flow control how full its queue is. If the bytes
    /// would pass the cap, the socket gets a chance to take what it can
    /// first: the cap is for clients that do not read, not for a busy turn.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn append(
        &mut self,
        id: ConnId,
        room: Option<RoomId>,
        connection: &mut Connection,
        bytes: &[u8],
        stats: &mut Stats,
        registry: &Registry,
        now: Instant,
    ) -> Result<(), Refused> {
        let appended = match connection.output.append(bytes, self.max_pending, &mut self.pool) {
            Err(OverCap) => {
                self.write(id, connection, stats, registry, now).map_err(Refused::Broken)?;
                connection.output.append(bytes, self.max_pending, &mut self.pool)
            }
            appended => appended,
        };
        match appended {
            Ok(Appended::Started) => {
                self.to_flush.push(id);
                stats.output_buffers += 1;
            }
            Ok(Appended::Behind) => {}
            Err(OverCap) => return Err(Refused::OverCap),
        }
        stats.queued_bytes += bytes.len() as u64;
        stats.queued_bytes_peak = stats.queued_bytes_peak.max(stats.queued_bytes);
        if self.flow.grew(id, room, connection.output.len(), now) {
            self.newly_congested.push(id);
        }
        self.flow.total_is(stats.queued_bytes as usize, now);
        Ok(())
    }

    /// Writes what the socket takes, tells flow control about progress,
    /// and keeps WRITABLE interest registered exactly while output is
    /// blocked.
    fn write(
        &mut self,
        id: ConnId,
        connection: &mut Connection,
        stats: &mut Stats,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<()> {
        if !connection.output.is_pending() && !connection.waits_to_write() {
            return Ok(());
        }
        let queued_before = connection.output.len();
        let mut tally = Tally::default();
        let flushed = match &mut connection.tls {
            None => connection.output.flush(&mut connection.socket, &mut self.pool, &mut tally),
            Some(tls) => {
                // Output is encrypted now, once per connection per turn:
                // many messages to a record, not a record per message.
                let mut sink = TlsSink { tls: &mut tls.connection, socket: &mut connection.socket };
                let flushed = connection.output.flush(&mut sink, &mut self.pool, &mut tally);
                flushed.and_then(|flushed| sink.send_records().map(|()| flushed))
            }
        };
        stats.bytes_out += tally.bytes as u64;
        stats.writes += tally.writes as u64;
        stats.queued_bytes -= tally.bytes as u64;
        if tally.bytes > 0 && self.flow.may_be_congested(queued_before) {
            self.flow.shrank(id, connection.output.len(), now);
        }
        self.flow.total_is(stats.queued_bytes as usize, now);
        if flushed? == Flushed::Drained && queued_before > 0 {
            stats.output_buffers -= 1;
        }
        // WRITABLE interest exactly while bytes wait for the socket.
        let waits = connection.waits_to_write();
        if waits != connection.write_interest {
            let interest = if waits { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            registry.reregister(&mut connection.socket, Token(id.0), interest)?;
            connection.write_interest = waits;
        }
        Ok(())
    }
}

impl Connection {
    /// Reads once: from the socket, or, on a TLS port, the plaintext rustls
    /// has decrypted, reading and decrypting more first when it has none.
    /// rustls is drained before the socket is read again, and the socket
    /// until `WouldBlock` (edge-triggered: plaintext left inside rustls, or
    /// bytes in the kernel, would get no new event).
    fn receive(&mut self, buffer: &mut [u8], stats: &mut Stats, now: Instant) -> Received {
        let Some(tls) = &mut self.tls else {
            return loop {
                match self.socket.read(buffer) {
                    Ok(0) => break Received::Eof,
                    Ok(n) => {
                        stats.bytes_in += n as u64;
                        break Received::Bytes(n);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break Received::WouldBlock,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => break Received::Failed(error_text(&error, stats)),
                }
            };
        };
        loop {
            match tls.connection.reader().read(buffer) {
                Ok(0) => return Received::Eof,
                Ok(n) => return Received::Bytes(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                // No close_notify before the end: an ordinary disconnect.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Received::Eof,
                Err(error) => return Received::Failed(error.to_string()),
            }
            match tls.connection.read_tls(&mut self.socket) {
                Ok(0) => {
                    if tls.connection.is_handshaking() {
                        stats.tls_failures[TlsFailure::Closed as usize] += 1;
                    }
                    return Received::Eof;
                }
                Ok(n) => {
                    stats.bytes_in += n as u64;
                    let handshaking = tls.connection.is_handshaking();
                    if let Err(error) = tls.connection.process_new_packets() {
                        if handshaking {
                            stats.tls_failures[TlsFailure::classify(&error) as usize] += 1;
                        }
                        // The alert rustls made goes out, best effort.
                        let _ = tls.connection.write_tls(&mut self.socket);
                        return Received::Failed(format!("TLS: {error}"));
                    }
                    if handshaking && !tls.connection.is_handshaking() {
                        stats.tls_handshakes += 1;
                        stats.tls_handshake_ms +=
                            now.saturating_duration_since(tls.accepted).as_millis() as u64;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Received::WouldBlock,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Received::Failed(error_text(&error, stats)),
            }
        }
    }

    /// Keeps the `input_buffers` gauge right after the session may have
    /// taken or released an input buffer of its own.
    fn count_held_input(&mut self, stats: &mut Stats) {
        let holds = self.session.held_input() > 0;
        match (self.counted_as_holding_input, holds) {
            (false, true) => stats.input_buffers += 1,
            (true, false) => stats.input_buffers -= 1,
            _ => {}
        }
        self.counted_as_holding_input = holds;
    }
}

/// Why a read failed, for the log; a keepalive timeout is also counted.
fn error_text(error: &io::Error, stats: &mut Stats) -> String {
    if error.raw_os_error() == Some(libc::ETIMEDOUT) {
        // Keepalive probes went unanswered: the peer is gone.
        stats.keepalive_closes += 1;
    }
    error.to_string()
}

/// The socket as `Output::flush` sees it on a TLS port: what is written is
/// encrypted by rustls, whose records go to the socket. Nothing new is
/// encrypted while earlier records still wait for the socket, so rustls
/// never holds more than one chunk of ciphertext.
struct TlsSink<'a> {
    tls: &'a mut rustls::ServerConnection,
    socket: &'a mut mio::net::TcpStream,
}

/// Plaintext encrypted per step: a few full records.
const ENCRYPT_CHUNK: usize = 64 * 1024;

impl TlsSink<'_> {
    /// Sends the records rustls holds until the socket would block.
    fn send_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(self.socket) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

impl Write for TlsSink<'_> {
    fn write(&mut self, plaintext: &[u8]) -> io::Result<usize> {
        self.send_records()?;
        if self.tls.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = self.tls.writer().write(&plaintext[..plaintext.len().min(ENCRYPT_CHUNK)])?;
        if taken == 0 {
            // rustls's own buffer is full (during the handshake): wait.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.send_records()?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_records()
    }
}
