//! The command line: every flag, its default, and the checks that need no
//! network. `benches/compare.sh` depends on these names and meanings, so a
//! flag may be added but never renamed or given a new meaning.

use clap::{Parser, ValueEnum};

use crate::{Failure, exit_code, failure};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Line-framed TCP
    Tcp,
    /// WebSocket (machat only)
    Ws,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    /// machat: JSON handshake, then `text\n` lines, deliveries `name:text\n`
    Machat,
    /// Redis: SUBSCRIBE for receivers, PUBLISH for senders
    Redis,
}

/// Load generator for machat and Redis pub/sub (single thread, mio).
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about)]
pub struct Flags {
    /// Transport.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// Protocol spoken.
    #[arg(long, value_enum, default_value_t = Proto::Machat)]
    pub proto: Proto,
    /// Server address HOST:PORT (of the --transport's listener); give it
    /// several times, or as a comma-separated list, to spread the clients
    /// over several servers, such as cluster nodes: they are dealt
    /// round-robin within each room, and the report says how many went to
    /// each [default: 127.0.0.1:8989 for machat tcp, 127.0.0.1:8099 for
    /// machat ws, 127.0.0.1:6379 for redis].
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    pub addr: Vec<String>,
    /// WebSocket upgrade path.
    #[arg(long, default_value = "/mychat")]
    pub ws_path: String,
    /// Number of rooms (Redis channels); receivers and senders are spread
    /// evenly over them (member i goes to room i mod R).
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,
    /// Receiving connections.
    #[arg(long, default_value_t = 100)]
    pub receivers: u32,
    /// Sending connections; each is a member of its room and receives too
    /// (with redis: a PUBLISH connection plus a SUBSCRIBE connection).
    #[arg(long, default_value_t = 1)]
    pub senders: u32,
    /// Message text size in bytes (`s<id> <seq> <nanos> ` plus padding; never
    /// less than that header).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Length of the timed phase in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up before the timed phase in seconds (sending, not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Closed loop: most messages in flight per sender, counted against the
    /// sender's own echo.
    #[arg(long, default_value_t = 16)]
    pub window: u32,
    /// Paced (open-loop) mode: messages per second per sender; --window is
    /// then not used [default: none, closed loop].
    #[arg(long)]
    pub rate: Option<f64>,
    /// After the timed phase, longest wait in seconds for messages in flight.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Longest wait in seconds for the barrier (or, in idle mode, for every
    /// connection to be seen joined).
    #[arg(long, default_value_t = 30.0)]
    pub barrier_timeout: f64,
    /// Fail when no connection completes its setup for this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Loopback source addresses to spread connections over (bind to
    /// 127.0.0.1, 127.0.0.2, ... before connect), to pass the ~28k ephemeral
    /// port limit; 1 = let the kernel choose; 0 = auto (one address per
    /// 20,000 connections, no binding below that).
    #[arg(long, default_value_t = 0)]
    pub source_ips: u32,
    /// Server process id: its CPU (/proc/PID/stat) and RSS (/proc/PID/status)
    /// are read around the timed phase [default: none].
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// More server processes (the other nodes of a cluster): their CPU
    /// time is added to --server-pid's in the server CPU figures (not their
    /// RSS); give it several times or as a comma-separated list
    /// [default: none].
    #[arg(long, value_name = "PID", value_delimiter = ',', requires = "server_pid")]
    pub extra_server_pid: Vec<u32>,
    /// Processes the servers rely on (the Redis behind a cluster, or the
    /// Redis measured with --proto redis when it is also --server-pid):
    /// their CPU time over the timed phase is reported on its own, as
    /// "backend", never added to the server's [default: none].
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub backend_pid: Vec<u32>,
    /// Idle mode: open this many joined connections and hold them, and report
    /// the server's RSS per connection [default: none, load mode].
    #[arg(long)]
    pub idle: Option<u32>,
    /// Idle mode: seconds to hold the connections after measuring
    /// [default: none, until Ctrl-C].
    #[arg(long)]
    pub hold: Option<f64>,
    /// Idle mode: seconds to wait after every connection joined before
    /// reading the server's RSS.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Burst mode: each sender writes this many bytes of messages (of
    /// --payload bytes) into its room as fast as its socket takes them, while
    /// receivers read; the run ends when every member has every message (or
    /// after --drain-timeout) [default: none, load mode].
    #[arg(long, value_name = "BYTES")]
    pub burst: Option<u64>,
    /// Receivers read at most this many bytes per second, leaving the rest in
    /// the kernel, like a slow client [default: none, as fast as they can].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub read_rate: Option<f64>,
    /// With --read-rate: only the first N receivers (r0, r1, ...) are paced
    /// [default: all].
    #[arg(long, value_name = "N")]
    pub slow_receivers: Option<u32>,
    /// Room names are this prefix followed by the room number.
    #[arg(long, default_value = "lg")]
    pub room_prefix: String,
    /// Free text copied into the JSON line as "label".
    #[arg(long, default_value = "")]
    pub label: String,
    /// Print only the JSON line on stdout (no table).
    #[arg(long)]
    pub quiet: bool,
    /// Speak TLS: to machat's --tcp-tls with --transport tcp, or wss:// to
    /// its --wss with --transport ws (give --addr: the ports differ).
    #[arg(long)]
    pub tls: bool,
    /// With --tls: PEM file of the certificates to trust (the server's own,
    /// when self-signed) [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// With --tls: the name the server's certificate must carry (a DNS name
    /// or an IP address), also sent as SNI.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    pub server_name: String,
}

impl Flags {
    /// Rejects combinations that cannot run, with exit code 2.
    pub fn check(&self) -> Result<(), Failure> {
        let bad = |message: &str| Err(failure(exit_code::BAD_FLAGS, message));
        if self.rooms == 0 {
            return bad("--rooms must be at least 1");
        }
        if self.proto == Proto::Redis && self.transport == Transport::Ws {
            return bad("--proto redis works over --transport tcp only");
        }
        if let Some(rate) = self.rate
            && !(rate > 0.0 && rate.is_finite())
        {
            return bad("--rate must be a positive number");
        }
        if self.idle.is_none() && self.senders == 0 {
            return bad("--senders must be at least 1 (or use --idle N)");
        }
        if self.idle.is_none() && self.rate.is_none() && self.window == 0 {
            return bad("--window must be at least 1");
        }
        if let Some(bytes) = self.burst {
            if bytes == 0 {
                return bad("--burst must be at least 1 byte");
            }
            if self.idle.is_some() || self.rate.is_some() {
                return bad("--burst cannot go with --idle or --rate");
            }
        }
        if let Some(rate) = self.read_rate {
            if !(rate > 0.0 && rate.is_finite()) {
                return bad("--read-rate must be a positive number");
            }
            if self.idle.is_some() {
                return bad("--read-rate cannot go with --idle");
            }
        }
        if self.slow_receivers.is_some() && self.read_rate.is_none() {
            return bad("--slow-receivers needs --read-rate");
        }
        if self.ca.is_some() && !self.tls {
            return bad("--ca needs --tls");
        }
        if self.addr.iter().any(|addr| addr.trim().is_empty()) {
            return bad("--addr must not be empty (nor have an empty item in its list)");
        }
        Ok(())
    }

    /// The CPU-time readings taken around the timed phase: the servers
    /// (`--server-pid` then `--extra-server-pid`) and the backends.
    pub fn pids(&self) -> crate::system::Pids {
        crate::system::Pids {
            servers: self.server_pid.iter().chain(&self.extra_server_pid).copied().collect(),
            rss: self.server_pid,
            backends: self.backend_pid.clone(),
        }
    }

    /// Every `--addr`, in the order given, or the usual port of the server
    /// spoken to.
    pub fn addr_texts(&self) -> Vec<String> {
        if !self.addr.is_empty() {
            return self.addr.iter().map(|addr| addr.trim().to_string()).collect();
        }
        let usual = match (self.proto, self.transport) {
            (Proto::Redis, _) => "127.0.0.1:6379",
            (Proto::Machat, Transport::Tcp) => "127.0.0.1:8989",
            (Proto::Machat, Transport::Ws) => "127.0.0.1:8099",
        };
        vec![usual.to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied())).expect("flags parse")
    }

    #[test]
    fn defaults_pick_the_servers_usual_port() {
        assert_eq!(parse(&[]).addr_texts(), ["127.0.0.1:8989"]);
        assert_eq!(parse(&["--transport", "ws"]).addr_texts(), ["127.0.0.1:8099"]);
        assert_eq!(parse(&["--proto", "redis"]).addr_texts(), ["127.0.0.1:6379"]);
        assert_eq!(parse(&["--addr", "10.0.0.1:1"]).addr_texts(), ["10.0.0.1:1"]);
    }

    #[test]
    fn several_addresses_repeated_or_comma_separated() {
        let expected = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"];
        for args in [
            &["--addr", "10.0.0.1:1", "--addr", "10.0.0.2:1", "--addr", "10.0.0.3:1"][..],
            &["--addr", "10.0.0.1:1,10.0.0.2:1,10.0.0.3:1"],
            &["--addr", "10.0.0.1:1, 10.0.0.2:1", "--addr=10.0.0.3:1"],
        ] {
            let flags = parse(args);
            flags.check().expect("valid");
            assert_eq!(flags.addr_texts(), expected, "{args:?}");
        }
        for args in [&["--addr", ""][..], &["--addr", "10.0.0.1:1,,10.0.0.2:1"], &["--addr", "a:1,"]] {
            let error = parse(args).check().expect_err(&format!("{args:?} accepted"));
            assert_eq!(error.code, 2, "{args:?}");
        }
    }

    #[test]
    fn impossible_combinations_exit_with_code_2() {
        for args in [
            &["--rooms", "0"][..],
            &["--proto", "redis", "--transport", "ws"],
            &["--rate", "0"],
            &["--rate", "inf"],
            &["--senders", "0"],
            &["--window", "0"],
            &["--burst", "0"],
            &["--burst", "100", "--idle", "1"],
            &["--burst", "100", "--rate", "1"],
            &["--read-rate", "0"],
            &["--read-rate", "NaN"],
            &["--read-rate", "100", "--idle", "1"],
            &["--slow-receivers", "1"],
            &["--ca", "ca.pem"],
        ] {
            let error = parse(args).check().expect_err(&format!("{args:?} accepted"));
            assert_eq!(error.code, 2, "{args:?}");
        }
        parse(&[]).check().expect("defaults are valid");
        let cluster = parse(&["--server-pid", "1", "--extra-server-pid", "2,3", "--backend-pid", "4"]);
        let pids = cluster.pids();
        assert_eq!((pids.servers, pids.rss, pids.backends), (vec![1, 2, 3], Some(1), vec![4]));
        assert!(
            Flags::try_parse_from(["loadgen", "--extra-server-pid", "2"]).is_err(),
            "--extra-server-pid needs --server-pid"
        );
        parse(&["--idle", "10", "--senders", "0"]).check().expect("idle mode needs no sender");
        parse(&["--rate", "100", "--window", "0"]).check().expect("paced mode has no window");
        parse(&["--burst", "16000000", "--read-rate", "1e6", "--slow-receivers", "1"])
            .check()
            .expect("burst");
        let tls = parse(&["--tls", "--ca", "ca.pem", "--transport", "ws"]);
        tls.check().expect("wss");
        assert_eq!((tls.tls, tls.server_name.as_str()), (true, "localhost"));
        assert!(!parse(&[]).tls, "plaintext unless asked");
    }
}
