//! Figures about processes and the machine, read around the timed phase:
//! CPU time and RSS of the server and of the generator itself, the kernel's
//! packet drops and TCP retransmissions, the load average; and the open-file
//! limit, which bounds how many connections one generator can hold.

/// Clock ticks per second of the CPU times in `/proc/<pid>/stat`: USER_HZ,
/// which Linux fixes at 100 for user space whatever the kernel's own HZ
/// (it is what `sysconf(_SC_CLK_TCK)` returns), so a constant replaces the
/// libc call. Ticks are 10 ms: small against a timed phase of seconds.
const USER_HZ: f64 = 100.0;

/// utime and stime from the text of `/proc/<pid>/stat`, in seconds.
fn parse_stat_cpu(stat: &str) -> Option<CpuTimes> {
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from the last `)`.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    let ticks = |i: usize| Some(fields.get(i)?.parse::<u64>().ok()? as f64 / USER_HZ);
    Some(CpuTimes { user: ticks(11)?, sys: ticks(12)? })
}

/// CPU time of a process (a pid or `self`) so far.
fn process_cpu(pid: &str) -> Option<CpuTimes> {
    parse_stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime of a process, in seconds.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    process_cpu(&pid.to_string()).map(|cpu| cpu.user + cpu.sys)
}

/// VmRSS of a process (a pid or `self`) in KiB.
pub fn process_rss_kb(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Clone, Copy, Default)]
pub struct CpuTimes {
    pub user: f64,
    pub sys: f64,
}

/// The generator's own CPU time so far, in seconds (zero if /proc cannot
/// be read, as getrusage would never fail).
pub fn own_cpu() -> CpuTimes {
    process_cpu("self").unwrap_or_default()
}

/// Raises the soft open-file limit to the hard one; returns the soft limit.
pub fn raise_open_file_limit() -> u64 {
    let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return 1024;
    };
    if soft < hard && rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The processes a snapshot reads: the servers, whose CPU times are summed
/// (one, or every node of a cluster), the one whose RSS is read, and the
/// backends (a cluster's Redis), summed apart from the servers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pids {
    pub servers: Vec<u32>,
    pub rss: Option<u32>,
    pub backends: Vec<u32>,
}

/// The summed CPU seconds of `pids`: `None` when there are none, or when
/// one cannot be read (a figure missing a process would mislead).
fn summed_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| process_cpu_seconds(pid)).sum()
}

/// A snapshot of the server processes (when --server-pid is given), of the
/// backends (--backend-pid), and of the machine's packet drops and TCP
/// retransmissions.
#[derive(Clone, Copy, Default)]
pub struct SystemSnapshot {
    /// Every server's CPU time, summed.
    pub server_cpu: Option<f64>,
    pub server_rss_kb: Option<u64>,
    /// Every backend's CPU time, summed.
    pub backend_cpu: Option<f64>,
    pub net_drops: Option<u64>,
    pub retransmissions: Option<u64>,
}

impl SystemSnapshot {
    pub fn take(pids: &Pids) -> Self {
        SystemSnapshot {
            server_cpu: summed_cpu(&pids.servers),
            server_rss_kb: pids.rss.and_then(|p| process_rss_kb(&p.to_string())),
            backend_cpu: summed_cpu(&pids.backends),
            net_drops: softnet_drops(),
            retransmissions: tcp_retransmissions(),
        }
    }
}

/// Packets the kernel dropped from its input backlog (all CPUs): on loopback
/// these become TCP retransmissions, i.e. stalls of 200 ms or more.
fn softnet_drops() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/softnet_stat").ok()?;
    s.lines().map(|l| l.split_whitespace().nth(1).and_then(|v| u64::from_str_radix(v, 16).ok())).sum()
}

/// TCP segments retransmitted, machine-wide.
fn tcp_retransmissions() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut tcp = s.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let at = names.split_whitespace().position(|n| n == "RetransSegs")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// The machine's load average over the last minute.
pub fn load_average_1m() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_counts_fields_after_the_command_name() {
        // A command name with spaces and a `)` must not shift the fields.
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 1234 0 0 20 0 1 0 99 1000 200";
        let cpu = parse_stat_cpu(stat).unwrap();
        assert_eq!((cpu.user, cpu.sys), (2.5, 12.34));
        assert!(parse_stat_cpu("4242 (x) S 1 2").is_none());
        assert!(parse_stat_cpu("no parenthesis").is_none());
    }

    #[test]
    fn own_cpu_reads_this_process() {
        assert!(process_cpu("self").is_some(), "/proc/self/stat unreadable");
        assert!(process_cpu_seconds(std::process::id()).is_some());
        assert!(process_rss_kb("self").is_some_and(|kb| kb > 0));
    }

    #[test]
    fn cpu_of_several_processes_is_summed_or_missing() {
        let me = std::process::id();
        assert_eq!(summed_cpu(&[]), None);
        let one = summed_cpu(&[me]).expect("own stat");
        let two = summed_cpu(&[me, me]).expect("own stat twice");
        assert!(two >= 2.0 * one, "{two} < 2 × {one}");
        assert_eq!(summed_cpu(&[me, u32::MAX]), None, "an unreadable pid spoils the sum");
    }
}
