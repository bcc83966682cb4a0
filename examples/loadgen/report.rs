//! The report: a table for people (unless `--quiet`), then one JSON line for
//! `benches/summarize.py`, for each mode (load, idle, burst). JSON keys are
//! never renamed or given a new meaning: results files from older runs must
//! still summarize.

use std::io::{self, Write};

use serde_json::{Map, Value};

use crate::generator::LoadGenerator;
use crate::system::{self, process_rss_kb};
use crate::targets;

/// Rounds to 3 decimals (seconds to the millisecond).
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Rounds to 1 decimal.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Prints one table row.
fn row(key: &str, value: String) {
    println!("  {key:<22} {value}");
}

impl LoadGenerator {
    /// With several addresses, the table's row saying how many clients
    /// went to each.
    fn targets_row(&self) {
        if self.targets.len() > 1 {
            let spread: Vec<String> = self
                .targets
                .iter()
                .map(|target| format!("{} {} clients", target.addr, target.clients))
                .collect();
            row("clients per address", spread.join(", "));
        }
    }

    /// Keys every mode's JSON line starts with.
    fn base_json(&self) -> Map<String, Value> {
        let mut json = Map::new();
        let flags = &self.flags;
        json.insert("proto".into(), format!("{:?}", flags.proto).to_lowercase().into());
        json.insert("transport".into(), format!("{:?}", flags.transport).to_lowercase().into());
        json.insert("tls".into(), flags.tls.into());
        if !flags.label.is_empty() {
            json.insert("label".into(), flags.label.clone().into());
        }
        // Several addresses: all of them, comma-separated, and how many
        // clients each got.
        let addrs: Vec<String> = self.targets.iter().map(|target| target.addr.to_string()).collect();
        json.insert("addr".into(), addrs.join(",").into());
        let spread = self.targets.iter().map(|target| {
            serde_json::json!({
                "addr": target.addr.to_string(),
                "clients": target.clients,
                "connections": target.connections,
            })
        });
        json.insert("targets".into(), Value::Array(spread.collect()));
        json.insert("rooms".into(), flags.rooms.into());
        // Other work on the machine skews every figure: say how busy it was.
        json.insert("loadavg_1m".into(), system::load_average_1m().into());
        json
    }

    pub fn report_load(&self) {
        let flags = &self.flags;
        let stats = &self.shared.stats;
        let figures = &self.figures;
        let secs = (figures.measure_end - figures.measure_start) as f64 / 1e9;
        let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let sent = figures.sent_at_end - figures.sent_at_start;
        let expected = self.expected();
        let loss = expected.saturating_sub(stats.received);
        let latency = &self.shared.latency;
        let us = |ns: u64| ns as f64 / 1e3;
        let (p50, p99, p999, max, mean) = (
            us(latency.quantile(0.5)),
            us(latency.quantile(0.99)),
            us(latency.quantile(0.999)),
            us(latency.max),
            us(latency.mean()),
        );
        let user = figures.own_cpu_after.user - figures.own_cpu_before.user;
        let sys = figures.own_cpu_after.sys - figures.own_cpu_before.sys;
        let gen_cpu = user + sys;
        let pct = |cpu: f64| if secs > 0.0 { 100.0 * cpu / secs } else { 0.0 };
        let ns_per = |cpu: f64| {
            if stats.measured > 0 { cpu * 1e9 / stats.measured as f64 } else { 0.0 }
        };
        let (before, after) = (&figures.system_before, &figures.system_after);
        let server_cpu = match (before.server_cpu, after.server_cpu) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let backend_cpu = match (before.backend_cpu, after.backend_cpu) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let mode = if flags.rate.is_some() { "paced" } else { "closed" };
        let gen_rss = process_rss_kb("self");
        let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        let drops = delta(before.net_drops, after.net_drops);
        let retrans = delta(before.retransmissions, after.retransmissions);
        let drain_s = (figures.drain_end - figures.measure_end) as f64 / 1e9;

        if !flags.quiet {
            let mode_text = match flags.rate {
                Some(r) => format!("paced {r} msg/s per sender"),
                None => format!("closed loop, window {}", flags.window),
            };
            println!(
                "loadgen {:?}/{:?} {}: {} rooms, {} receivers, {} senders, {} B payload, {mode_text}",
                flags.proto,
                flags.transport,
                targets::describe(&self.targets),
                flags.rooms,
                flags.receivers,
                flags.senders,
                flags.payload
            );
            self.targets_row();
            row(
                "setup",
                format!(
                    "connect {:.2} s, barrier {:.2} s",
                    figures.connected_at as f64 / 1e9,
                    (figures.barrier_at - figures.connected_at) as f64 / 1e9
                ),
            );
            row("timed phase", format!("{secs:.2} s"));
            let lag = match flags.rate {
                Some(_) => {
                    format!(", sends at most {:.0} us behind schedule", stats.pace_lag_max_ns as f64 / 1e3)
                }
                None => String::new(),
            };
            row("messages sent", format!("{sent} ({:.0}/s){lag}", per_s(sent)));
            row("deliveries", format!("{} ({:.0}/s)", stats.measured, per_s(stats.measured)));
            row(
                "loss / dups / reorders",
                format!(
                    "{loss} / {} / {}   (expected {expected}, got {}, drain {drain_s:.2} s{})",
                    stats.duplicates,
                    stats.reorders,
                    stats.received,
                    if figures.drain_complete { "" } else { ", timed out" }
                ),
            );
            row(
                "latency us",
                format!("p50 {p50:.1}  p99 {p99:.1}  p999 {p999:.1}  max {max:.1}  mean {mean:.1}"),
            );
            row(
                "generator CPU",
                format!(
                    "{user:.2} user + {sys:.2} sys = {gen_cpu:.2} s ({:.0}% of a core), {:.0} ns/delivery",
                    pct(gen_cpu),
                    ns_per(gen_cpu)
                ),
            );
            if let Some(c) = server_cpu {
                let servers = self.pids.servers.len();
                let key = if servers > 1 {
                    format!("server CPU ({servers} processes)")
                } else {
                    "server CPU".into()
                };
                row(&key, format!("{c:.2} s ({:.0}% of a core), {:.0} ns/delivery", pct(c), ns_per(c)));
            }
            if let Some(c) = backend_cpu {
                row(
                    "backend CPU",
                    format!("{c:.2} s ({:.0}% of a core), {:.0} ns/delivery", pct(c), ns_per(c)),
                );
            }
            if let (Some(b), Some(e)) = (before.server_rss_kb, after.server_rss_kb) {
                row("server RSS", format!("{b} kB before, {e} kB after"));
            }
            if drops.unwrap_or(0) > 0 || retrans.unwrap_or(0) > 0 {
                row(
                    "kernel (whole machine)",
                    format!(
                        "{} input-backlog drops, {} TCP retransmissions: tail latency includes \
                         retransmission timeouts (see net.core.netdev_max_backlog)",
                        drops.unwrap_or(0),
                        retrans.unwrap_or(0)
                    ),
                );
            }
            if stats.disconnects > 0 || stats.foreign > 0 {
                row(
                    "warnings",
                    format!("{} disconnects, {} foreign messages", stats.disconnects, stats.foreign),
                );
            }
            if flags.server_pid.is_some() && pct(gen_cpu) > 90.0 {
                row("note", "the generator used most of a core: it may be the limit".into());
            }
        }

        let mut json = self.base_json();
        let mut put = |k: &str, v: Value| {
            json.insert(k.to_string(), v);
        };
        put("mode", mode.into());
        put("receivers", flags.receivers.into());
        put("senders", flags.senders.into());
        put("payload", (flags.payload as u64).into());
        put("window", if flags.rate.is_none() { flags.window.into() } else { Value::Null });
        put("rate", flags.rate.map_or(Value::Null, |r| r.into()));
        put("connections", (self.conns.len() as u64).into());
        put("connect_s", round3(figures.connected_at as f64 / 1e9).into());
        put("barrier_s", round3((figures.barrier_at - figures.connected_at) as f64 / 1e9).into());
        put("warmup_s", flags.warmup.into());
        put("duration_s", round3(secs).into());
        put("sent", sent.into());
        put("sent_per_s", round1(per_s(sent)).into());
        put("deliveries", stats.measured.into());
        put("deliveries_per_s", round1(per_s(stats.measured)).into());
        put("deliveries_total", stats.deliveries.into());
        put("interrupted", (self.interrupts.counted() > 0).into());
        put("foreign", stats.foreign.into());
        put("expected_total", expected.into());
        put("received_total", stats.received.into());
        put("loss", loss.into());
        put("dups", stats.duplicates.into());
        put("reorders", stats.reorders.into());
        put("disconnects", stats.disconnects.into());
        put("drain_complete", figures.drain_complete.into());
        put(
            "pace_lag_max_us",
            if flags.rate.is_some() {
                round1(stats.pace_lag_max_ns as f64 / 1e3).into()
            } else {
                Value::Null
            },
        );
        put("drain_s", round3(drain_s).into());
        put("lat_p50_us", round1(p50).into());
        put("lat_p99_us", round1(p99).into());
        put("lat_p999_us", round1(p999).into());
        put("lat_max_us", round1(max).into());
        put("lat_mean_us", round1(mean).into());
        put("gen_cpu_user_s", round3(user).into());
        put("gen_cpu_sys_s", round3(sys).into());
        put("gen_cpu_s", round3(gen_cpu).into());
        put("gen_cpu_pct", round1(pct(gen_cpu)).into());
        put("gen_ns_per_delivery", round1(ns_per(gen_cpu)).into());
        put("gen_rss_kb", gen_rss.into());
        put("server_pid", flags.server_pid.into());
        put("server_cpu_s", server_cpu.map(round3).into());
        put("server_cpu_pct", server_cpu.map(|c| round1(pct(c))).into());
        put("server_ns_per_delivery", server_cpu.map(|c| round1(ns_per(c))).into());
        // Several servers (a cluster's nodes): server_cpu_s and the figures
        // from it are their sum; the backend (its Redis) is apart.
        if !flags.extra_server_pid.is_empty() {
            put("server_pids", self.pids.servers.clone().into());
        }
        if !flags.backend_pid.is_empty() {
            put("backend_pids", self.pids.backends.clone().into());
            put("backend_cpu_s", backend_cpu.map(round3).into());
            put("backend_cpu_pct", backend_cpu.map(|c| round1(pct(c))).into());
            put("backend_ns_per_delivery", backend_cpu.map(|c| round1(ns_per(c))).into());
        }
        put("server_rss_before_kb", before.server_rss_kb.into());
        put("server_rss_after_kb", after.server_rss_kb.into());
        put("net_backlog_drops", drops.into());
        put("tcp_retrans", retrans.into());
        println!("{}", Value::Object(json));
    }

    pub fn report_idle(&self, now: u64) {
        let flags = &self.flags;
        let figures = &self.figures;
        let n = self.conns.len() as u64;
        let (before, after) = (figures.system_before.server_rss_kb, figures.system_after.server_rss_kb);
        let per_conn = match (before, after) {
            (Some(b), Some(e)) if n > 0 => Some((e as f64 - b as f64) * 1024.0 / n as f64),
            _ => None,
        };
        let gen_rss = process_rss_kb("self");
        let cpu = system::own_cpu();
        let verify_s = figures.barrier_at.saturating_sub(figures.connected_at) as f64 / 1e9;
        if !flags.quiet {
            println!(
                "loadgen idle {:?}/{:?} {}: {n} connections in {} rooms, all joined",
                flags.proto,
                flags.transport,
                targets::describe(&self.targets),
                flags.rooms
            );
            self.targets_row();
            row(
                "setup",
                format!("connect {:.2} s, verify {verify_s:.2} s", figures.connected_at as f64 / 1e9),
            );
            if let (Some(b), Some(e)) = (before, after) {
                row("server RSS", format!("{b} kB before, {e} kB after"));
            }
            if let Some(p) = per_conn {
                row("server bytes/conn", format!("{p:.0}"));
            }
            if let Some(g) = gen_rss {
                row("generator RSS", format!("{g} kB"));
            }
        }
        let mut json = self.base_json();
        json.insert("mode".into(), "idle".into());
        json.insert("connections".into(), n.into());
        json.insert("joined".into(), self.shared.stats.joined.into());
        json.insert("source_ips".into(), self.source_ips.into());
        json.insert("connect_s".into(), ((figures.connected_at as f64 / 1e6).round() / 1e3).into());
        let verify_ns = figures.barrier_at.saturating_sub(figures.connected_at);
        json.insert("verify_s".into(), ((verify_ns as f64 / 1e6).round() / 1e3).into());
        json.insert("server_pid".into(), flags.server_pid.into());
        json.insert("server_rss_before_kb".into(), before.into());
        json.insert("server_rss_after_kb".into(), after.into());
        json.insert("server_bytes_per_conn".into(), per_conn.map(|p| p.round()).into());
        json.insert("gen_rss_kb".into(), gen_rss.into());
        json.insert("gen_cpu_s".into(), round3(cpu.user + cpu.sys).into());
        json.insert("elapsed_s".into(), ((now as f64 / 1e6).round() / 1e3).into());
        println!("{}", Value::Object(json));
        // The connections are held after this: the line must be out now.
        let _ = io::stdout().flush();
    }
}

impl LoadGenerator {
    /// Burst mode's report: the keys load mode shares keep their meaning
    /// (over the whole burst and its drain); the rest start with `burst_`.
    pub fn report_burst(&self) {
        let flags = &self.flags;
        let stats = &self.shared.stats;
        let figures = &self.figures;
        let Some(burst) = self.burst.as_ref() else { return };
        let expected = self.expected();
        let loss = expected.saturating_sub(stats.received);
        let sent = figures.sent_at_end;
        let latency = &self.shared.latency;
        let us = |ns: u64| ns as f64 / 1e3;
        let (p50, p99, p999, max, mean) = (
            us(latency.quantile(0.5)),
            us(latency.quantile(0.99)),
            us(latency.quantile(0.999)),
            us(latency.max),
            us(latency.mean()),
        );
        let user = figures.own_cpu_after.user - figures.own_cpu_before.user;
        let sys = figures.own_cpu_after.sys - figures.own_cpu_before.sys;
        let (before, after) = (&figures.system_before, &figures.system_after);
        let server_cpu = match (before.server_cpu, after.server_cpu) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        let drops = delta(before.net_drops, after.net_drops);
        let retrans = delta(before.retransmissions, after.retransmissions);
        let bytes_sent = self.burst_bytes_written();
        let send_s = burst.send_seconds();
        let delivered_s = burst.delivered_seconds();
        let stall_ms = burst.stall_max_ns as f64 / 1e6;
        let drain_s = (figures.drain_end - figures.measure_end) as f64 / 1e9;
        let slow =
            flags.read_rate.map(|_| flags.slow_receivers.unwrap_or(flags.receivers).min(flags.receivers));

        if !flags.quiet {
            let reading = match (flags.read_rate, slow) {
                (Some(rate), Some(n)) => format!(" ({n} reading at {rate} B/s)"),
                _ => String::new(),
            };
            println!(
                "loadgen burst {:?}/{:?} {}: {} rooms, {} receivers{reading}, {} senders, {} B payload, {} B per sender",
                flags.proto,
                flags.transport,
                targets::describe(&self.targets),
                flags.rooms,
                flags.receivers,
                flags.senders,
                flags.payload,
                burst.bytes_per_sender
            );
            self.targets_row();
            row(
                "setup",
                format!(
                    "connect {:.2} s, barrier {:.2} s",
                    figures.connected_at as f64 / 1e9,
                    (figures.barrier_at - figures.connected_at) as f64 / 1e9
                ),
            );
            let sending = match send_s {
                Some(s) => format!("in {s:.3} s"),
                None => format!(
                    "unfinished after {:.3} s",
                    (burst.sending_ended_at - burst.started_at) as f64 / 1e9
                ),
            };
            row(
                "sent",
                format!("{bytes_sent} B, {sent} messages, {sending} (longest sender stall {stall_ms:.1} ms)"),
            );
            let delivery = match delivered_s {
                Some(s) => format!("everything to every member still connected in {s:.3} s"),
                None => format!("not all: drain gave up after {drain_s:.2} s"),
            };
            row("delivered", delivery);
            row(
                "loss / dups / reorders",
                format!(
                    "{loss} / {} / {}   (expected {expected}, got {})",
                    stats.duplicates, stats.reorders, stats.received
                ),
            );
            if burst.closed_count > 0 {
                row(
                    "server closed",
                    format!("{} connections: {}", burst.closed_count, burst.closed.join("; ")),
                );
            }
            if self.shared.server_error_count > 0 {
                row(
                    "server errors",
                    format!("{}: {}", self.shared.server_error_count, self.shared.server_errors.join("; ")),
                );
            }
            row(
                "latency us",
                format!("p50 {p50:.1}  p99 {p99:.1}  p999 {p999:.1}  max {max:.1}  mean {mean:.1}"),
            );
            row("generator CPU", format!("{user:.2} user + {sys:.2} sys = {:.2} s", user + sys));
            if let Some(c) = server_cpu {
                row("server CPU", format!("{c:.2} s"));
            }
            if let (Some(b), Some(e)) = (before.server_rss_kb, after.server_rss_kb) {
                row("server RSS", format!("{b} kB before, {e} kB after"));
            }
        }

        let mut json = self.base_json();
        let mut put = |k: &str, v: Value| {
            json.insert(k.to_string(), v);
        };
        put("mode", "burst".into());
        put("receivers", flags.receivers.into());
        put("senders", flags.senders.into());
        put("payload", (flags.payload as u64).into());
        put("connections", (self.conns.len() as u64).into());
        put("connect_s", round3(figures.connected_at as f64 / 1e9).into());
        put("barrier_s", round3((figures.barrier_at - figures.connected_at) as f64 / 1e9).into());
        put("deliveries_total", stats.deliveries.into());
        put("interrupted", (self.interrupts.counted() > 0).into());
        put("foreign", stats.foreign.into());
        put("expected_total", expected.into());
        put("received_total", stats.received.into());
        put("loss", loss.into());
        put("dups", stats.duplicates.into());
        put("reorders", stats.reorders.into());
        put("disconnects", stats.disconnects.into());
        put("drain_complete", figures.drain_complete.into());
        put("drain_s", round3(drain_s).into());
        put("lat_p50_us", round1(p50).into());
        put("lat_p99_us", round1(p99).into());
        put("lat_p999_us", round1(p999).into());
        put("lat_max_us", round1(max).into());
        put("lat_mean_us", round1(mean).into());
        put("gen_cpu_user_s", round3(user).into());
        put("gen_cpu_sys_s", round3(sys).into());
        put("gen_cpu_s", round3(user + sys).into());
        put("gen_rss_kb", process_rss_kb("self").into());
        put("server_pid", flags.server_pid.into());
        put("server_cpu_s", server_cpu.map(round3).into());
        put("server_rss_before_kb", before.server_rss_kb.into());
        put("server_rss_after_kb", after.server_rss_kb.into());
        put("net_backlog_drops", drops.into());
        put("tcp_retrans", retrans.into());
        put("read_rate", flags.read_rate.into());
        put("slow_receivers", slow.into());
        put("burst_bytes", burst.bytes_per_sender.into());
        put("burst_bytes_sent", bytes_sent.into());
        put("burst_messages_sent", sent.into());
        put("burst_send_complete", send_s.is_some().into());
        put("burst_send_s", send_s.map(round3).into());
        put("burst_delivered_s", delivered_s.map(round3).into());
        put("burst_sender_stall_max_ms", round1(stall_ms).into());
        put("burst_server_closed", burst.closed_count.into());
        put("burst_closed_connections", burst.closed.clone().into());
        put("burst_server_errors", self.shared.server_error_count.into());
        put("burst_server_error_lines", self.shared.server_errors.clone().into());
        println!("{}", Value::Object(json));
    }
}
