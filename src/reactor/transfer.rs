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

use std::io::{self, Read};
use std::net::Shutdown;

use mio::{Interest, Registry, Token};

use super::{Connection, Outputs, Reactor, ServerState};
use crate::output::{Appended, Flushed, OverCap, Tally};
use crate::pages;
use crate::rooms::{ConnId, RoomId, Transport};
use crate::session::Reading;
use crate::stats::Stats;

/// Bytes one connection may read per turn before others get their turn.
const READ_BUDGET: usize = 64 * 1024;

/// Why a connection could not take more output.
#[derive(Debug)]
enum Cut {
    /// Its queue would pass `--max-pending` even after writing what the
    /// socket takes.
    SlowConsumer,
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
            let Some(connection) = self.connections.get_mut(id.0) else { return };
            let reading = connection.session.reading();
            let discard = match (reading, self.state) {
                (Reading::Discarded, _) => true,
                (Reading::Wanted, ServerState::Serving) => false,
                // Shutting down: input is no longer read, except to drain.
                _ => return,
            };
            match connection.socket.read(&mut self.read_buffer) {
                Ok(0) => {
                    connection.session.peer_closed(self.now, &mut self.effects);
                    self.apply_effects(id);
                    return;
                }
                Ok(n) => {
                    self.stats.bytes_in += n as u64;
                    if !discard {
                        self.feed(id, n);
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.to_read.push(id);
                        return;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.close(id, &error.to_string());
                    return;
                }
            }
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
            if connection.session.reading() != Reading::Wanted {
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
        while let Some(request) = self.effects.join.take() {
            let connection = &mut self.connections[id.0];
            let claim = self.rooms.join(&request.room, &request.name, id, connection.transport);
            if claim.is_ok() {
                self.stats.joins += 1;
                log::debug!("connection {id}: {} joined {}", request.name, request.room);
            }
            connection.session.joined(request, claim, self.now, &self.config, &mut self.effects);
        }
        if let Some(room) = self.effects.room.take() {
            self.deliver(room);
        }
        if let Some(page) = self.effects.page.take() {
            self.refresh_gauges();
            let response = pages::render(page.page, &self.config.ws_path, &self.stats);
            response.encode(&mut self.effects.send, page.keep_alive, page.head_only);
            self.effects.http_status = Some(response.status);
        }
        if !self.effects.send.is_empty() {
            let connection = &mut self.connections[id.0];
            let appended = self.outputs.append(
                id,
                connection,
                &self.effects.send,
                &mut self.stats,
                self.poll.registry(),
            );
            self.effects.send.clear();
            if let Err(cut) = appended {
                self.close_cut(id, cut);
            }
        }
        if let Some(failure) = self.effects.failure.take() {
            if let Some(reason) = failure.handshake_reason() {
                self.stats.count_handshake_error(reason);
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
            self.rooms.leave(left.room, &left.name);
            log::debug!("connection {id}: {} left", left.name);
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
        let connection = &mut self.connections[id.0];
        self.deadlines.arm(id, &mut connection.armed, connection.session.deadline());
        debug_assert!(self.effects.is_empty(), "effects left unapplied: {:?}", self.effects);
    }

    /// Hands the batch to every member of `room`: one copy of the line
    /// bytes per TCP member, one of the frame bytes per WebSocket member.
    fn deliver(&mut self, room: RoomId) {
        let batch = &mut self.effects.messages;
        if batch.is_empty() {
            return;
        }
        let Some(members) = self.rooms.get(room) else {
            batch.clear();
            return;
        };
        if members.has_websocket_members() {
            batch.encode_frames();
        }
        let mut cuts = Vec::new();
        let registry = self.poll.registry();
        for member in members.members() {
            let connection = &mut self.connections[member.conn.0];
            let bytes = match member.transport {
                Transport::Tcp => batch.lines(),
                Transport::WebSocket => batch.frames(),
            };
            if let Err(cut) = self.outputs.append(member.conn, connection, bytes, &mut self.stats, registry) {
                cuts.push((member.conn, cut));
            }
        }
        let messages = batch.len() as u64;
        self.stats.messages_in += messages;
        self.stats.deliveries += messages * (members.len() - cuts.len()) as u64;
        batch.clear();
        for (id, cut) in cuts {
            self.close_cut(id, cut);
        }
    }

    /// Closes a connection that could not take its output.
    fn close_cut(&mut self, id: ConnId, cut: Cut) {
        match cut {
            Cut::SlowConsumer => {
                self.stats.slow_consumers += 1;
                log::warn!(
                    "connection {id}: slow consumer, more than {} bytes of output queued; disconnecting",
                    self.config.max_pending
                );
                self.close(id, "slow consumer");
            }
            Cut::Broken(error) => self.close(id, &error.to_string()),
        }
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
        if self.connections.get(id.0).is_some_and(|c| c.output.is_blocked()) {
            self.flush(id);
        }
    }

    /// Writes what the socket takes; a closing session whose output is now
    /// empty moves on.
    fn flush(&mut self, id: ConnId) {
        let connection = &mut self.connections[id.0];
        if let Err(error) = self.outputs.write(id, connection, &mut self.stats, self.poll.registry()) {
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
        if let Err(error) = self.connections[id.0].socket.shutdown(Shutdown::Write) {
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
        connection.session.close(&mut self.effects, "closed");
        self.effects.closed = None;
        connection.count_held_input(&mut self.stats);
        if let Some(left) = self.effects.left.take() {
            self.rooms.leave(left.room, &left.name);
            log::debug!("connection {id}: {} left", left.name);
        }
        let had_output = !connection.output.is_empty();
        let dropped = connection.output.discard(&mut self.outputs.pool);
        self.stats.queued_bytes -= dropped as u64;
        if had_output {
            self.stats.output_buffers -= 1;
        }
        log::debug!("connection {id}: closed ({why})");
        self.to_close.push(id);
    }

    /// Removes the connections closed this turn. Dropping a socket closes
    /// it, which also takes it out of epoll.
    pub(super) fn remove_closed(&mut self) {
        for id in std::mem::take(&mut self.to_close) {
            let Some(mut connection) = self.connections.try_remove(id.0) else { continue };
            self.deadlines.disarm(id, &mut connection.armed);
            match connection.transport {
                Transport::Tcp => self.stats.tcp_connections -= 1,
                Transport::WebSocket => self.stats.ws_connections -= 1,
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
    /// turn. If that would pass the cap, the socket gets a chance to take
    /// what it can first: the cap is for clients that do not read, not for
    /// a busy turn.
    fn append(
        &mut self,
        id: ConnId,
        connection: &mut Connection,
        bytes: &[u8],
        stats: &mut Stats,
        registry: &Registry,
    ) -> Result<(), Cut> {
        let appended = match connection.output.append(bytes, self.max_pending, &mut self.pool) {
            Err(OverCap) => {
                self.write(id, connection, stats, registry).map_err(Cut::Broken)?;
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
            Err(OverCap) => return Err(Cut::SlowConsumer),
        }
        stats.queued_bytes += bytes.len() as u64;
        stats.queued_bytes_peak = stats.queued_bytes_peak.max(stats.queued_bytes);
        Ok(())
    }

    /// Writes what the socket takes, and keeps WRITABLE interest registered
    /// exactly while output is blocked.
    fn write(
        &mut self,
        id: ConnId,
        connection: &mut Connection,
        stats: &mut Stats,
        registry: &Registry,
    ) -> io::Result<()> {
        if connection.output.is_empty() {
            return Ok(());
        }
        let was_blocked = connection.output.is_blocked();
        let mut tally = Tally::default();
        let flushed = connection.output.flush(&mut connection.socket, &mut self.pool, &mut tally);
        stats.bytes_out += tally.bytes as u64;
        stats.writes += tally.writes as u64;
        stats.queued_bytes -= tally.bytes as u64;
        match flushed? {
            Flushed::Drained => {
                stats.output_buffers -= 1;
                if was_blocked {
                    registry.reregister(&mut connection.socket, Token(id.0), Interest::READABLE)?;
                }
            }
            Flushed::Blocked if !was_blocked => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                registry.reregister(&mut connection.socket, Token(id.0), interest)?;
            }
            Flushed::Blocked => {}
        }
        Ok(())
    }
}

impl Connection {
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
