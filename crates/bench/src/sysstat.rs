//! CPU and memory of the generator, the machine and the server, so every figure is printed beside what it
//! cost: `getrusage(RUSAGE_SELF)`, `/proc/stat`, `/proc/<pid>/stat` and `/proc/<pid>/status` (Linux).
//!
//! The parsers are pure and tested on sample text; reading a file that is not there gives `None`.

use std::time::{Duration, Instant};

use serde::Serialize;

/// CPU time of this process (user + system).
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// The first line of `/proc/stat`: (busy, total) jiffies over all cores. Idle and iowait are not busy.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

/// utime + stime (in clock ticks) from `/proc/<pid>/stat`; the command name may hold spaces and parens.
pub fn parse_pid_stat(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the file; `after` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in KiB from `/proc/<pid>/status`.
pub fn parse_vm_rss_kib(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn server_rss_kib(pid: u32) -> Option<u64> {
    parse_vm_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn server_cpu(pid: u32) -> Option<Duration> {
    let ticks = parse_pid_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_s() as f64,
    ))
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// CPU counters at one instant.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    generator: Duration,
    machine: Option<(u64, u64)>,
    server: Option<Duration>,
    server_pid: Option<u32>,
}

impl CpuSnapshot {
    pub fn take(server_pid: Option<u32>) -> CpuSnapshot {
        CpuSnapshot {
            at: Instant::now(),
            generator: self_cpu(),
            machine: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| parse_proc_stat(&t)),
            server: server_pid.and_then(server_cpu),
            server_pid,
        }
    }

    /// What was spent between `self` (earlier) and now.
    pub fn until_now(&self) -> CpuReport {
        let now = CpuSnapshot::take(self.server_pid);
        let wall = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let generator_s = now.generator.saturating_sub(self.generator).as_secs_f64();
        let machine_busy_pct = match (self.machine, now.machine) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some(100.0 * cores() as f64 * (b1.saturating_sub(b0)) as f64 / (t1 - t0) as f64)
            }
            _ => None,
        };
        let server_s = match (self.server, now.server) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
            _ => None,
        };
        let generator_pct = 100.0 * generator_s / wall;
        let server_pct = server_s.map(|s| 100.0 * s / wall);
        CpuReport {
            wall_s: wall,
            cores: cores(),
            generator_cpu_s: generator_s,
            generator_pct,
            machine_busy_pct,
            server_cpu_s: server_s,
            server_pct,
            others_pct: machine_busy_pct
                .map(|m| (m - generator_pct - server_pct.unwrap_or(0.0)).max(0.0)),
        }
    }
}

/// CPU over a measured window. Percentages are of one core (a 2-core machine is 200% busy at most).
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    pub wall_s: f64,
    pub cores: usize,
    pub generator_cpu_s: f64,
    pub generator_pct: f64,
    pub machine_busy_pct: Option<f64>,
    pub server_cpu_s: Option<f64>,
    pub server_pct: Option<f64>,
    /// Machine busy minus generator minus server (when the server's pid is known): everything else.
    pub others_pct: Option<f64>,
}

impl CpuReport {
    pub fn one_line(&self) -> String {
        let mut s = format!(
            "generator {:.0}% ({:.2}s)",
            self.generator_pct, self.generator_cpu_s
        );
        if let (Some(p), Some(c)) = (self.server_pct, self.server_cpu_s) {
            s += &format!(", server {p:.0}% ({c:.2}s)");
        }
        if let Some(m) = self.machine_busy_pct {
            s += &format!(", machine {m:.0}% of {}%", self.cores * 100);
        }
        if let Some(o) = self.others_pct {
            s += &format!(" (others {o:.0}%)");
        }
        s
    }
}

/// Raises the soft limit on open files to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(lim.rlim_cur as u64)
    }
}

/// File descriptors this process has open now.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_excludes_idle_and_iowait() {
        let text = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        assert_eq!(parse_proc_stat(text), Some((161, 1181)));
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
    }

    #[test]
    fn pid_stat_survives_a_command_name_with_parens_and_spaces() {
        let text = "1234 (java (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 30 0";
        assert_eq!(parse_pid_stat(text), Some(325));
        assert_eq!(parse_pid_stat("1234 (x) S 1"), None);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let text = "Name:\toxkeeper\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_kib(text), Some(12345));
    }

    #[test]
    fn own_counters_are_readable_here() {
        let pid = std::process::id();
        assert!(server_rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(server_cpu(pid).is_some());
        let before = CpuSnapshot::take(Some(pid));
        let report = before.until_now();
        assert!(report.server_cpu_s.is_some());
    }
}
