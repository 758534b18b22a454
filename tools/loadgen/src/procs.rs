//! The system's processes on this machine, read from `/proc`: each service's (and the
//! MongoDB stand-in's) CPU time and resident memory, so that a run reports what it cost
//! each of them.

use std::collections::BTreeMap;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// One sample of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub cpu_secs: f64,
    pub rss_mib: f64,
}

/// The processes of the system: `social-<service>` binaries and `nx-27017` (the MongoDB
/// stand-in), by name (several with one name are added up). Empty where there is no
/// `/proc` or the system runs elsewhere.
pub fn sample() -> BTreeMap<String, Sample> {
    let mut out: BTreeMap<String, Sample> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid.to_str().filter(|p| p.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let Some(name) = name_of(pid) else { continue };
        if let Some(s) = read(pid) {
            let total = out.entry(name).or_default();
            total.cpu_secs += s.cpu_secs;
            total.rss_mib += s.rss_mib;
        }
    }
    out
}

fn name_of(pid: &str) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|&b| b == 0).map(String::from_utf8_lossy);
    let exe = args.next()?;
    let exe = exe.rsplit('/').next().unwrap_or_default().to_owned();
    if exe.starts_with("social-") && exe != "social-loadgen" {
        return Some(exe);
    }
    // The stand-in runs as `.venv/bin/python .venv/bin/nx-27017 ...` or directly.
    let stand_in = std::iter::once(exe.clone())
        .chain(args.take(2).map(|a| a.rsplit('/').next().unwrap_or_default().to_owned()))
        .any(|a| a == "nx-27017");
    stand_in.then(|| "nx-27017 (MongoDB stand-in)".to_owned())
}

fn read(pid: &str) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the `(comm)` field, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Some(Sample { cpu_secs: (utime + stime) / TICKS, rss_mib: rss_kib / 1024.0 })
}

/// What each process cost over a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cost {
    /// Resident memory before the run.
    pub rss_idle_mib: f64,
    /// The most resident memory seen during the run (sampled every second).
    pub rss_max_mib: f64,
    /// CPU seconds used during the run.
    pub cpu_secs: f64,
    /// CPU time per request of the run (all requests, whichever service they went to).
    pub cpu_us_per_request: f64,
}

/// Follows the processes through a run.
#[derive(Default)]
pub struct Watch {
    start: BTreeMap<String, Sample>,
    max_rss: BTreeMap<String, f64>,
}

impl Watch {
    pub fn start() -> Self {
        let start = sample();
        let max_rss = start.iter().map(|(k, s)| (k.clone(), s.rss_mib)).collect();
        Self { start, max_rss }
    }

    /// One more memory sample.
    pub fn tick(&mut self) {
        for (name, s) in sample() {
            let max = self.max_rss.entry(name).or_default();
            *max = max.max(s.rss_mib);
        }
    }

    /// The cost of each process since [`Watch::start`], over `requests` requests.
    pub fn finish(mut self, requests: u64) -> BTreeMap<String, Cost> {
        self.tick();
        let end = sample();
        end.into_iter()
            .map(|(name, now)| {
                let before = self.start.get(&name).copied().unwrap_or_default();
                let cpu = (now.cpu_secs - before.cpu_secs).max(0.0);
                let cost = Cost {
                    rss_idle_mib: round(before.rss_mib),
                    rss_max_mib: round(self.max_rss.get(&name).copied().unwrap_or(now.rss_mib)),
                    cpu_secs: round(cpu),
                    cpu_us_per_request: if requests == 0 {
                        0.0
                    } else {
                        round(cpu * 1e6 / requests as f64)
                    },
                };
                (name, cost)
            })
            .collect()
    }
}

/// `x` to two decimals.
pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
