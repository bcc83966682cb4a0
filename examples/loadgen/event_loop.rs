//! The event loop: one mio poll over every socket, opening connections a
//! batch at a time, reading whatever arrives, and noticing connections that
//! close. What to do when is `phases`' business; this file only moves bytes.

use std::io::{ErrorKind, Read};
use std::net::Ipv4Addr;
use std::time::Duration;

use log::{info, warn};
use mio::{Events, Interest, Token};

use crate::connection::{CHUNK, ConnState, Role, connect_from};
use crate::flags::{Proto, Transport};
use crate::generator::LoadGenerator;
use crate::phases::RunPhase;
use crate::protocol::{machat, resp, websocket};
use crate::system::SystemSnapshot;
use crate::targets;
use crate::{Failure, exit_code, failure};

/// The signal pipe's token; connections use their index.
pub const SIGNAL_TOKEN: Token = Token(usize::MAX);

impl LoadGenerator {
    /// Runs until the last phase is done, or something fails.
    pub fn run(&mut self) -> Result<(), Failure> {
        let mut events = Events::with_capacity(1024);
        if self.flags.idle.is_some() {
            // Before the first connection: the RSS growth is what they cost.
            self.figures.system_before = SystemSnapshot::take(&self.pids);
        }
        info!(
            "connecting {} sockets to {} ({} source address{})",
            self.conns.len(),
            targets::describe(&self.targets),
            self.source_ips,
            if self.source_ips == 1 { "" } else { "es" }
        );
        loop {
            let now = self.clock.now_ns();
            let wake = self.tick(now)?;
            if let Some(f) = self.shared.failure.take() {
                return Err(f);
            }
            if self.phase == RunPhase::Done {
                return Ok(());
            }
            let timeout = Duration::from_nanos(wake.saturating_sub(self.clock.now_ns()));
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(failure(exit_code::CANNOT_CONNECT, format!("poll failed: {e}"))),
            }
            // A signal only wakes the loop: `tick` counts it.
            for event in events.iter().filter(|e| e.token() != SIGNAL_TOKEN) {
                self.on_event(event);
            }
            self.top_up_windows();
            if let Some(f) = self.shared.failure.take() {
                return Err(f);
            }
        }
    }

    /// Starts connects until `--connect-concurrency` are under way.
    pub fn open_more(&mut self) -> Result<(), Failure> {
        let limit = self.flags.connect_concurrency.max(1);
        while self.next_to_open < self.conns.len()
            && self.next_to_open - self.shared.stats.ready_connections < limit
        {
            let i = self.next_to_open;
            let source = (self.source_ips > 1)
                .then(|| Ipv4Addr::new(127, 0, 0, 1 + (i as u32 % self.source_ips) as u8));
            let addr = self.targets[self.conns[i].target].addr;
            let mut socket = connect_from(addr, source).map_err(|e| {
                // "Too many open files" says it all; this one does not.
                let hint = match e.kind() {
                    ErrorKind::AddrNotAvailable => " (out of ephemeral ports: try --source-ips)",
                    _ => "",
                };
                failure(exit_code::CANNOT_CONNECT, format!("cannot connect to {addr}: {e}{hint}"))
            })?;
            // Latency is the point: never hold a small write back.
            let _ = socket.set_nodelay(true);
            self.poll
                .registry()
                .register(&mut socket, Token(i), Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| failure(exit_code::CANNOT_CONNECT, format!("cannot register socket: {e}")))?;
            let tls = self.tls.as_ref().map(|client| client.connection()).transpose()?;
            let conn = &mut self.conns[i];
            conn.socket = Some(socket);
            conn.tls = tls;
            conn.state = ConnState::Connecting;
            self.next_to_open += 1;
        }
        Ok(())
    }

    /// Queues what the protocol says first, once the TCP connect is done.
    fn on_connected(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let shared = &mut self.shared;
        let room = &shared.encoder.room_names[conn.room as usize];
        match (shared.encoder.proto, shared.encoder.transport) {
            (Proto::Redis, _) if conn.role == Role::Publisher => conn.mark_ready(shared),
            (Proto::Redis, _) => {
                resp::write_subscribe(&mut conn.out, room.as_bytes());
                conn.state = ConnState::Subscribing;
            }
            (Proto::Machat, Transport::Tcp) => {
                let handshake = machat::handshake_json(&conn.name(), room);
                conn.out.extend_from_slice(handshake.as_bytes());
                conn.mark_ready(shared);
            }
            (Proto::Machat, Transport::Ws) => {
                let key = shared.encoder.websocket_key();
                let host = &self.targets[conn.target].text;
                let request = websocket::upgrade_request(&self.flags.ws_path, host, &key);
                conn.out.extend_from_slice(request.as_bytes());
                conn.state = ConnState::Upgrading;
            }
        }
    }

    fn on_event(&mut self, event: &mio::event::Event) {
        let i = event.token().0;
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        if conn.state == ConnState::Closed || conn.socket.is_none() {
            return;
        }
        if conn.state == ConnState::Connecting {
            let addr = self.targets[conn.target].addr;
            let socket = conn.socket.as_ref().expect("socket");
            let error = match socket.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => None,
            };
            if let Some(e) = error {
                let hint =
                    if e.kind() == ErrorKind::ConnectionRefused { " (is the server running?)" } else { "" };
                self.shared.fail(exit_code::CANNOT_CONNECT, format!("cannot connect to {addr}: {e}{hint}"));
                return;
            }
            // A writable event can come before the connect is done.
            match socket.peer_addr() {
                Ok(_) => self.on_connected(i),
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => {
                    self.shared.fail(exit_code::CANNOT_CONNECT, format!("cannot connect to {addr}: {e}"));
                    return;
                }
            }
        }
        let closing = event.is_read_closed() || event.is_error();
        if event.is_readable() || closing {
            self.on_readable(i, closing);
        }
        let conn = &mut self.conns[i];
        // A bursting sender writes through `fill_burst`, which accounts for
        // what its socket takes.
        if self.phase == RunPhase::Burst
            && (event.is_writable() || conn.unwritten() > 0)
            && conn.state == ConnState::Ready
            && matches!(conn.role, Role::Sender | Role::Publisher)
        {
            let sender = conn.sender;
            self.fill_burst(sender, self.clock.now_ns());
        } else if conn.state != ConnState::Closed
            && conn.wants_flush()
            && let Err(e) = conn.flush()
        {
            self.on_closed(i, e.to_string());
        }
    }

    /// Reads until the socket is drained, or this receiver's `--read-rate`
    /// budget is spent; `closing` (the peer has shut its side) means read on
    /// to the end of the stream.
    fn on_readable(&mut self, i: usize, closing: bool) {
        if self.conns[i].tls.is_some() {
            return self.on_readable_tls(i, closing);
        }
        let mut closed = None;
        {
            let LoadGenerator { conns, read_buffer, shared, clock, .. } = self;
            let conn = &mut conns[i];
            conn.peer_hung_up |= closing;
            let closing = conn.peer_hung_up;
            conn.read_paused_until = None;
            while let Some(socket) = conn.socket.as_mut() {
                let want = match conn.pacing.as_mut() {
                    None => CHUNK,
                    Some(pacing) => match pacing.allowance(clock.now_ns()).min(CHUNK) {
                        0 => {
                            conn.read_paused_until = Some(pacing.refilled_at());
                            break;
                        }
                        allowed => allowed,
                    },
                };
                let keep = conn.carry.len();
                if read_buffer.len() < keep + want {
                    read_buffer.resize(keep + want, 0);
                }
                read_buffer[..keep].copy_from_slice(&conn.carry);
                match socket.read(&mut read_buffer[keep..keep + want]) {
                    Ok(0) => {
                        closed = Some("connection closed by the server".to_string());
                        break;
                    }
                    Ok(n) => {
                        if let Some(pacing) = conn.pacing.as_mut() {
                            pacing.spend(n);
                        }
                        let now = clock.now_ns();
                        let total = keep + n;
                        let used = conn.process(&read_buffer[..total], now, shared);
                        conn.carry.clear();
                        conn.carry.extend_from_slice(&read_buffer[used..total]);
                        if let Some(why) = conn.peer_closed.take() {
                            closed = Some(why);
                            break;
                        }
                        // A short read took everything queued: epoll (edge
                        // triggered) reports anything that comes later. The
                        // end of the stream may already be here, though.
                        if (n < want && !closing) || shared.failure.is_some() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        closed = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        if let Some(why) = closed {
            self.on_closed(i, why);
        }
    }

    /// `on_readable` through TLS: plaintext rustls already holds is used
    /// first (no event would say it is there), then records are read from
    /// the socket until it is empty (edge triggered), each batch decrypted
    /// and its plaintext used, within this receiver's `--read-rate` budget.
    /// Records stay in the kernel while plaintext is left unread, so a paced
    /// receiver still shows the server a full socket.
    fn on_readable_tls(&mut self, i: usize, closing: bool) {
        let mut closed = None;
        {
            let LoadGenerator { conns, read_buffer, shared, clock, .. } = self;
            let conn = &mut conns[i];
            conn.peer_hung_up |= closing;
            conn.read_paused_until = None;
            'reading: loop {
                // The plaintext rustls holds.
                loop {
                    let want = match conn.pacing.as_mut() {
                        None => CHUNK,
                        Some(pacing) => match pacing.allowance(clock.now_ns()).min(CHUNK) {
                            0 => {
                                conn.read_paused_until = Some(pacing.refilled_at());
                                break 'reading;
                            }
                            allowed => allowed,
                        },
                    };
                    let Some(tls) = conn.tls.as_mut() else {
                        break 'reading;
                    };
                    let keep = conn.carry.len();
                    if read_buffer.len() < keep + want {
                        read_buffer.resize(keep + want, 0);
                    }
                    read_buffer[..keep].copy_from_slice(&conn.carry);
                    match tls.reader().read(&mut read_buffer[keep..keep + want]) {
                        Ok(0) => {
                            closed = Some("connection closed by the server (TLS close_notify)".to_string());
                            break 'reading;
                        }
                        Ok(n) => {
                            if let Some(pacing) = conn.pacing.as_mut() {
                                pacing.spend(n);
                            }
                            let now = clock.now_ns();
                            let total = keep + n;
                            let used = conn.process(&read_buffer[..total], now, shared);
                            conn.carry.clear();
                            conn.carry.extend_from_slice(&read_buffer[used..total]);
                            if let Some(why) = conn.peer_closed.take() {
                                closed = Some(why);
                                break 'reading;
                            }
                            if shared.failure.is_some() {
                                break 'reading;
                            }
                        }
                        // Nothing decrypted is left.
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                            closed =
                                Some("connection closed by the server (no TLS close_notify)".to_string());
                            break 'reading;
                        }
                        Err(e) => {
                            closed = Some(format!("TLS: {e}"));
                            break 'reading;
                        }
                    }
                }
                // More records from the socket.
                let (Some(socket), Some(tls)) = (conn.socket.as_mut(), conn.tls.as_mut()) else {
                    break;
                };
                match tls.read_tls(socket) {
                    // The end of the stream: what rustls still holds is read
                    // above, and then the reader says how it ended.
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        closed = Some(e.to_string());
                        break;
                    }
                }
                if let Err(e) = tls.process_new_packets() {
                    // The alert tells the server why.
                    let _ = tls.write_tls(socket);
                    closed = Some(format!("TLS: {e}"));
                    break;
                }
            }
        }
        if closed.is_none() && self.conns[i].wants_flush() {
            // Handshake messages, or a reply such as a pong.
            if let Err(e) = self.conns[i].flush() {
                closed = Some(e.to_string());
            }
        }
        if let Some(why) = closed {
            self.on_closed(i, why);
        }
    }

    /// Reads again from paced receivers whose budget has come back: no
    /// event would say their unread data is there. Returns when to call
    /// again.
    pub fn resume_paced_reads(&mut self, now: u64) -> u64 {
        let mut wake = u64::MAX;
        for k in 0..self.paced_readers.len() {
            let i = self.paced_readers[k];
            if self.conns[i].read_paused_until.is_some_and(|at| at <= now) {
                self.on_readable(i, false);
            }
            if let Some(at) = self.conns[i].read_paused_until {
                wake = wake.min(at);
            }
        }
        wake
    }

    pub fn on_closed(&mut self, i: usize, why: String) {
        let conn = &mut self.conns[i];
        if conn.state == ConnState::Closed {
            return;
        }
        let mut name = conn.name();
        if conn.state == ConnState::Upgrading && !conn.carry.is_empty() {
            // Whatever came instead of an HTTP response says what went wrong.
            let first = conn.carry.split(|&b| b == b'\n').next().unwrap_or(b"");
            let first = String::from_utf8_lossy(&first[..first.len().min(200)]).into_owned();
            name = format!("{name} (instead of an HTTP response: {first:?})");
        }
        if let Some(mut socket) = conn.socket.take() {
            let _ = self.poll.registry().deregister(&mut socket);
        }
        if conn.state == ConnState::Ready && conn.role != Role::Publisher && conn.role != Role::Idle {
            self.lost_members[conn.room as usize] += 1;
            self.shared.stats.received_by_lost_members += conn.received;
        }
        let was_ready = conn.state == ConnState::Ready;
        conn.state = ConnState::Closed;
        conn.tls = None;
        conn.carry = Vec::new();
        conn.out = Vec::new();
        conn.out_pos = 0;
        conn.read_paused_until = None;
        if self.phase == RunPhase::Done || self.shared.failure.is_some() {
            return;
        }
        if let Some(burst) = self.burst.as_mut()
            && was_ready
        {
            burst.on_closed(conn, &name, &why);
        }
        match self.phase {
            RunPhase::Warmup | RunPhase::Measure | RunPhase::Burst | RunPhase::Drain | RunPhase::Hold => {
                self.shared.stats.disconnects += 1;
                warn!("{name}: {why}");
            }
            _ => self
                .shared
                .fail(exit_code::CANNOT_CONNECT, format!("{name}: connection lost during setup: {why}")),
        }
    }
}
