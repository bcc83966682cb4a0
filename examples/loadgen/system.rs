//! Figures about processes and the machine, read around the timed phase:
//! CPU time and RSS of the server and of the generator itself, the kernel's
//! packet drops and TCP retransmissions, the load average; and the open-file
//! limit, which bounds how many connections one generator can hold.

/// utime + stime of a process, in seconds.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
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

/// The generator's own CPU time so far, in seconds.
pub fn own_cpu() -> CpuTimes {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    CpuTimes { user: tv(ru.ru_utime), sys: tv(ru.ru_stime) }
}

/// Raises the soft open-file limit to the hard one; returns the soft limit.
pub fn raise_open_file_limit() -> u64 {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1024;
    }
    if rl.rlim_cur < rl.rlim_max {
        let want = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    rl.rlim_cur
}

/// A snapshot of the server process (when --server-pid is given) and of the
/// machine's packet drops and TCP retransmissions.
#[derive(Clone, Copy, Default)]
pub struct SystemSnapshot {
    pub server_cpu: Option<f64>,
    pub server_rss_kb: Option<u64>,
    pub net_drops: Option<u64>,
    pub retransmissions: Option<u64>,
}

impl SystemSnapshot {
    pub fn take(server_pid: Option<u32>) -> Self {
        SystemSnapshot {
            server_cpu: server_pid.and_then(process_cpu_seconds),
            server_rss_kb: server_pid.and_then(|p| process_rss_kb(&p.to_string())),
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
