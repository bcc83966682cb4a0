//! Live counters. The loop keeps a plain [`Stats`] and publishes it into
//! atomics once per turn, so counting costs the hot path nothing and any
//! thread (tests, a metrics page) can read a recent [`Stats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::flow::CutReason;
use crate::handshake::HandshakeReason;
use crate::tls::{TlsFailure, TlsListener};

/// Handshake failure kinds counted in [`Stats::handshake_errors`].
const HANDSHAKE_REASONS: usize = HandshakeReason::ALL.len();
/// Reasons a slow consumer is cut, counted in [`Stats::cuts`].
const CUT_REASONS: usize = CutReason::ALL.len();
/// TLS listeners, counted in [`Stats::tls_connections`].
const TLS_LISTENERS: usize = TlsListener::ALL.len();
/// Kinds of TLS handshake failure, counted in [`Stats::tls_failures`].
const TLS_FAILURES: usize = TlsFailure::ALL.len();

/// HTTP statuses counted in [`Stats::http_responses`], which has one more
/// slot at the end for any other status.
pub const HTTP_STATUSES: [u16; 10] = [101, 200, 400, 401, 403, 404, 405, 408, 431, 503];
const HTTP_SLOTS: usize = HTTP_STATUSES.len() + 1;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A snapshot of the server's counters. Gauges say how things are
        /// now; totals only grow.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Stats {
            $($(#[$doc])* pub $name: u64,)*
            /// Handshake failures by reason, in [`Stats::HANDSHAKE_ERROR_LABELS`] order.
            pub handshake_errors: [u64; HANDSHAKE_REASONS],
            /// HTTP responses by status, in [`HTTP_STATUSES`] order.
            pub http_responses: [u64; HTTP_SLOTS],
            /// Slow consumers cut, by reason, in [`Stats::CUT_LABELS`] order.
            pub cuts: [u64; CUT_REASONS],
            /// Gauge: open TLS connections by listener (`wss`, `tcp_tls`).
            pub tls_connections: [u64; TLS_LISTENERS],
            /// TLS handshakes that failed, by kind, in [`Stats::TLS_FAILURE_LABELS`] order.
            pub tls_failures: [u64; TLS_FAILURES],
        }

        /// The published copy, readable from any thread.
        #[derive(Debug, Default)]
        pub(crate) struct SharedStats {
            $($name: AtomicU64,)*
            handshake_errors: [AtomicU64; HANDSHAKE_REASONS],
            http_responses: [AtomicU64; HTTP_SLOTS],
            cuts: [AtomicU64; CUT_REASONS],
            tls_connections: [AtomicU64; TLS_LISTENERS],
            tls_failures: [AtomicU64; TLS_FAILURES],
        }

        impl SharedStats {
            pub(crate) fn publish(&self, stats: &Stats) {
                $(self.$name.store(stats.$name, Ordering::Relaxed);)*
                for (shared, &value) in self.handshake_errors.iter().zip(&stats.handshake_errors) {
                    shared.store(value, Ordering::Relaxed);
                }
                for (shared, &value) in self.http_responses.iter().zip(&stats.http_responses) {
                    shared.store(value, Ordering::Relaxed);
                }
                for (shared, &value) in self.cuts.iter().zip(&stats.cuts) {
                    shared.store(value, Ordering::Relaxed);
                }
                for (shared, &value) in self.tls_connections.iter().zip(&stats.tls_connections) {
                    shared.store(value, Ordering::Relaxed);
                }
                for (shared, &value) in self.tls_failures.iter().zip(&stats.tls_failures) {
                    shared.store(value, Ordering::Relaxed);
                }
            }

            pub(crate) fn snapshot(&self) -> Stats {
                Stats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    handshake_errors: self.handshake_errors.each_ref().map(|v| v.load(Ordering::Relaxed)),
                    http_responses: self.http_responses.each_ref().map(|v| v.load(Ordering::Relaxed)),
                    cuts: self.cuts.each_ref().map(|v| v.load(Ordering::Relaxed)),
                    tls_connections: self.tls_connections.each_ref().map(|v| v.load(Ordering::Relaxed)),
                    tls_failures: self.tls_failures.each_ref().map(|v| v.load(Ordering::Relaxed)),
                }
            }
        }
    };
}

counters! {
    /// Gauge: open client connections, in any state.
    connections,
    /// Gauge: open connections accepted on the TCP listener.
    tcp_connections,
    /// Gauge: open connections accepted on the WebSocket listener.
    ws_connections,
    /// Gauge: rooms with at least one member.
    rooms,
    /// Gauge: members over all rooms.
    members,
    /// Gauge: bytes queued for clients and not yet written.
    queued_bytes,
    /// The most bytes ever queued at once (a high-water mark).
    queued_bytes_peak,
    /// Gauge: connections holding an output buffer.
    output_buffers,
    /// Gauge: connections holding an input buffer (a partial line,
    /// handshake or HTTP request).
    input_buffers,
    /// Total: connections accepted.
    accepted,
    /// Total: connections refused because the server was full.
    refused_full,
    /// Total: successful joins.
    joins,
    /// Total: chat messages received.
    messages_in,
    /// Total: messages delivered (one per recipient).
    deliveries,
    /// Total: bytes read from clients.
    bytes_in,
    /// Total: bytes written to clients.
    bytes_out,
    /// Total: `write` calls that sent bytes to clients.
    writes,
    /// Total: members cut off as slow consumers, whatever the reason (see
    /// [`Stats::cuts`]).
    slow_consumers,
    /// Gauge: connections whose output is above the high-water mark.
    congested,
    /// Gauge: rooms not read because a member is congested.
    paused_rooms,
    /// Gauge: 1 while the global budget of queued output is spent.
    saturated,
    /// Gauge: connections waiting to be read until a pause ends.
    paused_senders,
    /// Total: times a sender was left unread because of a pause.
    sender_pauses,
    /// Total: milliseconds rooms (or the whole server) spent paused.
    paused_ms,
    /// Total: WebSocket members closed for not answering a ping.
    ping_timeouts,
    /// Total: connections closed because TCP keepalive found the peer gone.
    keepalive_closes,
    /// Gauge: entries in the deadline set (at most one per connection).
    timers,
    /// Gauge: the largest single connection's queued output (refreshed
    /// at most four times a second).
    largest_queue,
    /// Total: TLS handshakes completed.
    tls_handshakes,
    /// Total: milliseconds from accept to a completed TLS handshake, over
    /// all of them (divide by `tls_handshakes` for the mean).
    tls_handshake_ms,
    /// Total: times accepting paused because descriptors ran out.
    accept_pauses,
    /// Total: loop turns (wake-ups from poll).
    loop_turns,
    /// Total: chat lines recorded into the history.
    history_recorded,
    /// Total: lines replayed to joining members.
    history_replayed,
    /// Total: lines restored from the database at start.
    history_restored,
    /// Total: lines evicted to keep a room within `--history` lines.
    history_evicted_count,
    /// Total: lines evicted to keep a room within its byte cap.
    history_evicted_room_bytes,
    /// Total: lines evicted with their room to keep within `--history-memory`.
    history_evicted_budget,
    /// Gauge: rooms holding history.
    history_rooms,
    /// Gauge: lines held in memory.
    history_lines,
    /// Gauge: bytes the history holds, as counted against `--history-memory`.
    history_bytes,
    /// Total: lines committed to the database.
    history_persisted,
    /// Total: lines not persisted because the writer's queue was full.
    history_dropped,
    /// Total: lines lost in database transactions that failed.
    history_failed,
    /// Gauge: batches waiting for the database writer.
    history_queue,
    /// Gauge: lines in the writer's last committed transaction.
    history_last_batch_lines,
    /// Gauge: microseconds the writer's last committed transaction took.
    history_last_batch_micros,
    /// Total: failed database transactions.
    history_writer_errors,
}

impl Stats {
    /// The `reason` labels of `machat_handshake_errors_total`, in the order
    /// of [`Stats::handshake_errors`].
    pub const HANDSHAKE_ERROR_LABELS: [&str; HANDSHAKE_REASONS] = {
        let mut labels = [""; HANDSHAKE_REASONS];
        let mut slot = 0;
        while slot < HANDSHAKE_REASONS {
            labels[slot] = HandshakeReason::ALL[slot].label();
            slot += 1;
        }
        labels
    };

    pub(crate) fn count_handshake_error(&mut self, reason: HandshakeReason) {
        self.handshake_errors[reason as usize] += 1;
    }

    /// The `reason` labels of `machat_slow_consumer_cuts_total`, in the
    /// order of [`Stats::cuts`].
    pub const CUT_LABELS: [&str; CUT_REASONS] = {
        let mut labels = [""; CUT_REASONS];
        let mut slot = 0;
        while slot < CUT_REASONS {
            labels[slot] = CutReason::ALL[slot].label();
            slot += 1;
        }
        labels
    };

    /// The `reason` labels of `machat_tls_handshake_failures_total`, in
    /// the order of [`Stats::tls_failures`].
    pub const TLS_FAILURE_LABELS: [&str; TLS_FAILURES] = {
        let mut labels = [""; TLS_FAILURES];
        let mut slot = 0;
        while slot < TLS_FAILURES {
            labels[slot] = TlsFailure::ALL[slot].label();
            slot += 1;
        }
        labels
    };

    /// TLS handshake failures labelled `label` (see [`Stats::TLS_FAILURE_LABELS`]).
    pub fn tls_failures_for(&self, label: &str) -> u64 {
        Self::TLS_FAILURE_LABELS
            .iter()
            .position(|&known| known == label)
            .map_or(0, |slot| self.tls_failures[slot])
    }

    pub(crate) fn count_cut(&mut self, reason: CutReason) {
        self.slow_consumers += 1;
        self.cuts[reason as usize] += 1;
    }

    /// Slow consumers cut for the reason labelled `label` (see
    /// [`Stats::CUT_LABELS`]).
    pub fn cuts_for(&self, label: &str) -> u64 {
        Self::CUT_LABELS.iter().position(|&known| known == label).map_or(0, |slot| self.cuts[slot])
    }

    pub(crate) fn count_http_response(&mut self, status: u16) {
        let slot = HTTP_STATUSES.iter().position(|&known| known == status).unwrap_or(HTTP_STATUSES.len());
        self.http_responses[slot] += 1;
    }

    /// Handshake failures with the given label (see [`Stats::HANDSHAKE_ERROR_LABELS`]).
    pub fn handshake_errors_for(&self, label: &str) -> u64 {
        Self::HANDSHAKE_ERROR_LABELS
            .iter()
            .position(|&known| known == label)
            .map_or(0, |slot| self.handshake_errors[slot])
    }

    /// HTTP responses sent with `status`.
    pub fn http_responses_for(&self, status: u16) -> u64 {
        HTTP_STATUSES.iter().position(|&known| known == status).map_or(0, |slot| self.http_responses[slot])
    }
}

impl Stats {
    /// The counters in Prometheus' text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(4096);
        /// One metric family: its help and type lines, then its samples.
        fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(impl AsRef<str>, u64)]) {
            let _ = writeln!(out, "# HELP machat_{name} {help}\n# TYPE machat_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "machat_{name}{} {value}", labels.as_ref());
            }
        }
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            family(&mut out, name, kind, help, samples)
        };
        let tcp = "{transport=\"tcp\"}";
        let ws = "{transport=\"websocket\"}";
        metric(
            "connections",
            "gauge",
            "Open client connections by the listener that accepted them.",
            &[(tcp, self.tcp_connections), (ws, self.ws_connections)],
        );
        metric("rooms", "gauge", "Rooms with at least one member.", &[("", self.rooms)]);
        metric("room_members", "gauge", "Members over all rooms.", &[("", self.members)]);
        metric(
            "queued_output_bytes",
            "gauge",
            "Bytes queued for clients, not yet written.",
            &[("", self.queued_bytes)],
        );
        metric(
            "queued_output_bytes_peak",
            "gauge",
            "The most bytes ever queued for clients at once.",
            &[("", self.queued_bytes_peak)],
        );
        metric(
            "buffers",
            "gauge",
            "Connections holding a buffer of their own.",
            &[("{kind=\"output\"}", self.output_buffers), ("{kind=\"input\"}", self.input_buffers)],
        );
        metric("connections_accepted_total", "counter", "Connections accepted.", &[("", self.accepted)]);
        metric(
            "connections_refused_total",
            "counter",
            "Connections refused because the server was full.",
            &[("", self.refused_full)],
        );
        metric("joins_total", "counter", "Successful joins.", &[("", self.joins)]);
        metric("messages_received_total", "counter", "Chat messages received.", &[("", self.messages_in)]);
        metric(
            "deliveries_total",
            "counter",
            "Messages delivered, one per recipient.",
            &[("", self.deliveries)],
        );
        metric("received_bytes_total", "counter", "Bytes read from clients.", &[("", self.bytes_in)]);
        metric("sent_bytes_total", "counter", "Bytes written to clients.", &[("", self.bytes_out)]);
        metric("writes_total", "counter", "Write calls that sent bytes to clients.", &[("", self.writes)]);
        metric(
            "slow_consumer_disconnects_total",
            "counter",
            "Members cut off as slow consumers (any reason).",
            &[("", self.slow_consumers)],
        );
        metric(
            "congested_connections",
            "gauge",
            "Connections whose queued output is above the high-water mark.",
            &[("", self.congested)],
        );
        metric(
            "paused_rooms",
            "gauge",
            "Rooms not read because a member is congested.",
            &[("", self.paused_rooms)],
        );
        metric(
            "queued_output_budget_spent",
            "gauge",
            "1 while queued output for all clients is at --max-queued-total.",
            &[("", self.saturated)],
        );
        metric(
            "paused_senders",
            "gauge",
            "Connections left unread until a pause ends.",
            &[("", self.paused_senders)],
        );
        metric(
            "sender_pauses_total",
            "counter",
            "Times a sender was left unread because of a pause.",
            &[("", self.sender_pauses)],
        );
        metric(
            "queued_output_bytes_max",
            "gauge",
            "The largest queued output of a single connection.",
            &[("", self.largest_queue)],
        );
        metric(
            "ping_timeouts_total",
            "counter",
            "WebSocket members closed for not answering a ping.",
            &[("", self.ping_timeouts)],
        );
        metric(
            "keepalive_closes_total",
            "counter",
            "Connections closed because TCP keepalive found the peer gone.",
            &[("", self.keepalive_closes)],
        );
        metric("timers", "gauge", "Deadline entries (at most one per connection).", &[("", self.timers)]);
        metric(
            "accept_pauses_total",
            "counter",
            "Times accepting paused for lack of descriptors.",
            &[("", self.accept_pauses)],
        );
        metric("loop_turns_total", "counter", "Event loop wake-ups.", &[("", self.loop_turns)]);
        metric(
            "history_lines_recorded_total",
            "counter",
            "Chat lines recorded into the room history.",
            &[("", self.history_recorded)],
        );
        metric(
            "history_lines_replayed_total",
            "counter",
            "History lines replayed to joining members.",
            &[("", self.history_replayed)],
        );
        metric(
            "history_lines_restored_total",
            "counter",
            "History lines restored from the database at start.",
            &[("", self.history_restored)],
        );
        metric(
            "history_lines_evicted_total",
            "counter",
            "History lines evicted, by the bound that evicted them.",
            &[
                ("{reason=\"count\"}", self.history_evicted_count),
                ("{reason=\"room_bytes\"}", self.history_evicted_room_bytes),
                ("{reason=\"memory\"}", self.history_evicted_budget),
            ],
        );
        metric("history_rooms", "gauge", "Rooms holding history in memory.", &[("", self.history_rooms)]);
        metric("history_lines", "gauge", "History lines held in memory.", &[("", self.history_lines)]);
        metric(
            "history_memory_bytes",
            "gauge",
            "Bytes the history holds, as counted against --history-memory.",
            &[("", self.history_bytes)],
        );
        metric(
            "history_lines_persisted_total",
            "counter",
            "History lines committed to the database.",
            &[("", self.history_persisted)],
        );
        metric(
            "history_lines_dropped_total",
            "counter",
            "History lines not persisted because the database writer's queue was full.",
            &[("", self.history_dropped)],
        );
        metric(
            "history_lines_failed_total",
            "counter",
            "History lines lost in database transactions that failed.",
            &[("", self.history_failed)],
        );
        metric(
            "history_writer_queue",
            "gauge",
            "Batches of lines waiting for the database writer.",
            &[("", self.history_queue)],
        );
        metric(
            "history_writer_last_batch_lines",
            "gauge",
            "Lines in the database writer's last transaction.",
            &[("", self.history_last_batch_lines)],
        );
        metric(
            "history_writer_errors_total",
            "counter",
            "Database transactions that failed.",
            &[("", self.history_writer_errors)],
        );
        let _ = writeln!(
            out,
            "# HELP machat_history_writer_last_batch_seconds How long the database writer's last transaction took.\n\
             # TYPE machat_history_writer_last_batch_seconds gauge\nmachat_history_writer_last_batch_seconds {}.{:06}",
            self.history_last_batch_micros / 1_000_000,
            self.history_last_batch_micros % 1_000_000
        );
        let reasons: Vec<(String, u64)> = Self::HANDSHAKE_ERROR_LABELS
            .iter()
            .zip(self.handshake_errors)
            .map(|(label, value)| (format!("{{reason=\"{label}\"}}"), value))
            .collect();
        family(&mut out, "handshake_errors_total", "counter", "Failed handshakes by reason.", &reasons);
        let cut_reasons: Vec<(String, u64)> = Self::CUT_LABELS
            .iter()
            .zip(self.cuts)
            .map(|(label, value)| (format!("{{reason=\"{label}\"}}"), value))
            .collect();
        family(
            &mut out,
            "slow_consumer_cuts_total",
            "counter",
            "Slow consumers cut, by reason.",
            &cut_reasons,
        );
        let _ = writeln!(
            out,
            "# HELP machat_pause_seconds_total Time rooms (or the whole server) spent paused by back-pressure.\n\
             # TYPE machat_pause_seconds_total counter\nmachat_pause_seconds_total {}.{:03}",
            self.paused_ms / 1000,
            self.paused_ms % 1000
        );
        let statuses: Vec<(String, u64)> = HTTP_STATUSES
            .iter()
            .map(|status| status.to_string())
            .chain(["other".to_owned()])
            .zip(self.http_responses)
            .map(|(status, value)| (format!("{{status=\"{status}\"}}"), value))
            .collect();
        family(&mut out, "http_responses_total", "counter", "HTTP responses by status.", &statuses);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_handshake_reason_is_counted_under_its_own_label() {
        for (slot, reason) in HandshakeReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, slot, "ALL is in declaration order");
            assert_eq!(Stats::HANDSHAKE_ERROR_LABELS[slot], reason.label());
            let mut stats = Stats::default();
            stats.count_handshake_error(reason);
            assert_eq!(stats.handshake_errors_for(reason.label()), 1);
            assert!(
                stats
                    .to_prometheus()
                    .contains(&format!("machat_handshake_errors_total{{reason=\"{}\"}} 1\n", reason.label()))
            );
        }
    }
}
