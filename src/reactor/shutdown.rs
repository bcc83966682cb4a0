//! Graceful shutdown: `Handle::shutdown` sets a flag and fires the waker;
//! the reactor stops accepting and reading, tells every session (WebSocket
//! clients get Close 1001), and keeps turning until every connection has
//! been written all it was owed and its FIN, or the grace period is over.

use std::sync::atomic::Ordering;

use super::{Reactor, ServerState};
use crate::rooms::ConnId;
use crate::session::deadline_after;

impl Reactor {
    /// The waker fired: start shutting down if that is what was asked.
    pub(super) fn check_shutdown_request(&mut self) {
        if self.state == ServerState::Serving && self.shutdown_requested.load(Ordering::Acquire) {
            self.begin_shutdown();
        }
    }

    fn begin_shutdown(&mut self) {
        let deadline = deadline_after(self.now, self.config.shutdown_grace);
        self.state = ServerState::ShuttingDown { deadline, cut: Cut::default() };
        for listener in &mut self.listeners {
            listener.deregister(self.poll.registry());
        }
        self.listeners.clear();
        log::info!(
            "shutting down: {} connections, {} bytes queued, up to {:?} to flush",
            self.connections.len(),
            self.stats.queued_bytes,
            self.config.shutdown_grace
        );
        let ids: Vec<ConnId> = self.connections.iter().map(|(key, _)| ConnId(key)).collect();
        for id in ids {
            self.connections[id.0].session.shutdown(deadline, &mut self.effects);
            self.apply_effects(id);
        }
    }

    /// Whether every connection has been sent all it was owed and its FIN
    /// (it is draining, or gone). Peers that have not closed their side
    /// yet are not waited for.
    pub(super) fn everything_written(&self) -> bool {
        self.connections.iter().all(|(_, connection)| connection.session.is_finished())
    }

    pub(super) fn finish_shutdown(&mut self) {
        // Whatever is still open is closed now; `close` counts what each
        // drops, as it did for connections closed by their deadline.
        let ids: Vec<ConnId> = self.connections.iter().map(|(key, _)| ConnId(key)).collect();
        for id in ids {
            self.close(id, "shutdown");
        }
        self.remove_closed();
        // The last members' names are released in Redis now, not after
        // their TTL: a node restarting at once lets them join again.
        self.cluster_flush();
        let (cut, deadline) = match self.state {
            ServerState::ShuttingDown { cut, deadline } => (cut, deadline),
            ServerState::Serving => (Cut::default(), self.now),
        };
        // Nothing has been read since shutdown began, so nothing more is
        // recorded: the writer finishes what it has, within the grace.
        self.history.close_store(deadline);
        log::info!(
            "shutdown complete: {} connections served, {} messages in, {} deliveries; \
             {} connections cut with {} bytes unsent",
            self.stats.accepted,
            self.stats.messages_in,
            self.stats.deliveries,
            cut.connections,
            cut.bytes
        );
        self.publish_stats();
    }
}

/// What shutdown could not deliver: connections closed with output still
/// queued, and those bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cut {
    connections: u64,
    bytes: u64,
}

impl Cut {
    /// A connection was closed with `dropped` bytes unsent.
    pub(super) fn count(&mut self, dropped: usize) {
        if dropped > 0 {
            self.connections += 1;
            self.bytes += dropped as u64;
        }
    }
}
