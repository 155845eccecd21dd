//! What Linux says about processes, threads and the machine: memory, CPU time, hardware.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Resident memory of a process: current (`VmRSS`) and peak (`VmHWM`), in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    pub current_kib: u64,
    pub peak_kib: u64,
}

pub fn rss(pid: u32) -> anyhow::Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok(Rss {
        current_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    })
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime of a `stat` line, in seconds, and the name in parentheses.
fn parse_stat(text: &str) -> Option<(String, f64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_string();
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let rest: Vec<&str> = text[close + 2..].split_whitespace().collect();
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / ticks_per_second()))
}

/// CPU seconds a whole process has used.
pub fn process_cpu(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text)
        .map(|(_, cpu)| cpu)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))
}

/// CPU seconds used by this process's threads, summed by thread name (tokio runtimes name
/// their worker and blocking threads, so the load generator and central are told apart).
pub fn own_threads_cpu() -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let path = task.path().join("stat");
        if let Some((name, cpu)) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            *by_name.entry(name).or_insert(0.0) += cpu;
        }
    }
    by_name
}

/// Busy and total jiffies of the whole machine, from the `cpu` line of /proc/stat.
pub fn machine_cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle + iowait
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU use sampled over a measurement window.
#[derive(Clone, Debug)]
pub struct CpuSnapshot {
    edge: Option<f64>,
    threads: BTreeMap<String, f64>,
    /// This whole process (threads that have exited included).
    own: f64,
    machine: (u64, u64),
}

impl CpuSnapshot {
    pub fn take(edge_pid: Option<u32>) -> Self {
        Self {
            edge: edge_pid.and_then(|pid| process_cpu(pid).ok()),
            threads: own_threads_cpu(),
            own: process_cpu(std::process::id()).unwrap_or(0.0),
            machine: machine_cpu(),
        }
    }
}

/// CPU seconds used between two snapshots.
#[derive(Clone, Debug, Default)]
pub struct CpuUse {
    pub edge: f64,
    pub loadgen: f64,
    pub central: f64,
    /// Fraction of the whole machine that was busy (1.0 = every core).
    pub machine_busy: f64,
    /// CPU seconds the machine spent on neither the edge nor this process: other programs on
    /// the machine, and kernel work (softirq) not charged to any process.
    pub rest: f64,
}

pub fn cpu_between(before: &CpuSnapshot, after: &CpuSnapshot) -> CpuUse {
    let group = |prefix: &str| -> f64 {
        let sum = |m: &BTreeMap<String, f64>| -> f64 {
            m.iter()
                .filter(|(name, _)| name.starts_with(prefix))
                .map(|(_, cpu)| cpu)
                .sum()
        };
        // Threads can exit between snapshots; never report a negative.
        (sum(&after.threads) - sum(&before.threads)).max(0.0)
    };
    let busy = after.machine.0.saturating_sub(before.machine.0);
    let total = after.machine.1.saturating_sub(before.machine.1);
    let machine_busy = if total == 0 {
        0.0
    } else {
        busy as f64 / total as f64
    };
    let edge = (after.edge.unwrap_or(0.0) - before.edge.unwrap_or(0.0)).max(0.0);
    let own = (after.own - before.own).max(0.0);
    // Jiffies of all cores together: seconds of wall time are total / cores / ticks.
    let busy_seconds = busy as f64 / ticks_per_second();
    CpuUse {
        edge,
        loadgen: group("loadgen"),
        central: group("central"),
        machine_busy,
        rest: (busy_seconds - edge - own).max(0.0),
    }
}

fn first_line_of(command: &str, args: &[&str]) -> String {
    Command::new(command)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The facts a benchmark result is meaningless without.
pub fn machine_description() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mhz = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let fs = Path::new("/tmp");
    vec![
        ("nproc", first_line_of("nproc", &[])),
        ("CPU", format!("{model} ({mhz} MHz)")),
        ("memory", mem),
        ("kernel", kernel),
        ("rustc", first_line_of("rustc", &["--version"])),
        (
            "temp dir filesystem",
            first_line_of(
                "sh",
                &[
                    "-c",
                    &format!("df -T {} | tail -1 | awk '{{print $2}}'", fs.display()),
                ],
            ),
        ),
        (
            "date",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        ),
    ]
}
