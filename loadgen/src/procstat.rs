//! CPU time and memory of server processes and of the machine, read from /proc.

use serde::Serialize;

/// A process to sample, named for the report.
#[derive(Clone)]
pub struct Proc {
    pub name: String,
    pub pid: u32,
}

/// Parses `NAME=PID` or `PID`.
pub fn parse(specs: &[String]) -> anyhow::Result<Vec<Proc>> {
    specs
        .iter()
        .map(|s| {
            let (name, pid) = s.split_once('=').unwrap_or(("server", s.as_str()));
            let pid = pid
                .parse()
                .map_err(|_| anyhow::anyhow!("--pid {s}: expected NAME=PID or PID"))?;
            Ok(Proc {
                name: name.to_string(),
                pid,
            })
        })
        .collect()
}

/// One reading of one process.
#[derive(Clone, Copy, Default)]
pub struct Sample {
    /// User + system CPU seconds so far.
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Clock ticks per second of `/proc/PID/stat`, asked once.
fn ticks_per_sec() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; zeros when the process is gone.
pub fn sample(pid: u32) -> Sample {
    let hz = ticks_per_sec();
    let cpu_s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / hz)
        })
        .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Sample {
        cpu_s,
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// Clock ticks per second of `/proc/stat` and `/proc/PID/stat` (USER_HZ, 100 on Linux).
pub const HZ: f64 = 100.0;

/// One reading of the whole machine: its idle time (`/proc/stat`), its cores, and when.
#[derive(Clone, Copy)]
pub struct MachineSample {
    /// Idle and iowait seconds of all cores together.
    idle_s: f64,
    cpus: usize,
    at: std::time::Instant,
}

/// Reads the machine's idle time now.
pub fn machine() -> MachineSample {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut lines = s.lines();
    let nums: Vec<u64> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let cpus = lines.filter(|l| l.starts_with("cpu")).count().max(1);
    let idle = nums.get(3).copied().unwrap_or(0) + nums.get(4).copied().unwrap_or(0);
    MachineSample {
        idle_s: idle as f64 / HZ,
        cpus,
        at: std::time::Instant::now(),
    }
}

/// The machine's busy CPU seconds between two readings, and the share of all cores.
///
/// Busy is the wall time of all cores less their idle time, not the sum of the user and
/// system fields: with a tickless kernel the idle time is kept exactly while those fields
/// are sampled at each tick, and they miss busy spells shorter than a tick (seen here as
/// a machine "busy" for less CPU than its server processes alone used, up to 12% of the
/// window short).
pub fn machine_busy(from: &MachineSample, to: &MachineSample) -> (f64, f64) {
    let capacity = to.at.duration_since(from.at).as_secs_f64() * to.cpus as f64;
    let busy = (capacity - (to.idle_s - from.idle_s)).clamp(0.0, capacity);
    (busy, busy / capacity.max(1e-9))
}

/// Per-process figures over a window.
#[derive(Serialize)]
pub struct ProcReport {
    pub name: String,
    pub pid: u32,
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

pub fn window(procs: &[Proc], before: &[Sample], after: &[Sample]) -> Vec<ProcReport> {
    procs
        .iter()
        .zip(before.iter().zip(after))
        .map(|(p, (b, a))| ProcReport {
            name: p.name.clone(),
            pid: p.pid,
            cpu_s: a.cpu_s - b.cpu_s,
            rss_kib: a.rss_kib,
            peak_rss_kib: a.hwm_kib,
        })
        .collect()
}

pub fn sample_all(procs: &[Proc]) -> Vec<Sample> {
    procs.iter().map(|p| sample(p.pid)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_process() {
        let s = super::sample(std::process::id());
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        let a = super::machine();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (busy, share) = super::machine_busy(&a, &super::machine());
        assert!(a.cpus >= 1 && busy >= 0.0 && (0.0..=1.0).contains(&share));
    }
}
