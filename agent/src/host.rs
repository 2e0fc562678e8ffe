//! Host metrics from `/proc` and `statvfs`, named as the CloudWatch agent names them (namespace
//! `CWAgent`, `<plugin>_<measurement>`; reference section 6.2).
//!
//! Percentages and per-interval counts come from the difference between two samples, so the
//! first sample yields only the gauges (memory, swap, disk, netstat, processes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One datapoint: metric name, dimensions, value, CloudWatch unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// `cpu_usage_idle`, `mem_used_percent`, ...
    pub name: String,
    /// Dimensions besides `host` (cpu, path, device, fstype, interface, name).
    pub dimensions: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// A CloudWatch unit.
    pub unit: &'static str,
}

fn datum(name: String, dims: &[(&str, &str)], value: f64, unit: &'static str) -> Datum {
    Datum {
        name,
        dimensions: dims
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        value,
        unit,
    }
}

/// The ten `/proc/stat` CPU times, in hundredths of a second (USER_HZ).
const CPU_FIELDS: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

/// Everything read from `/proc` at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// `cpu` (`cpu-total`) and `cpuN` lines: the ten times.
    pub cpu: BTreeMap<String, [u64; 10]>,
    /// `/proc/meminfo`, in bytes.
    pub meminfo: BTreeMap<String, u64>,
    /// Per device: reads, read sectors, read ms, writes, write sectors, write ms, in progress, io ms.
    pub diskio: BTreeMap<String, [u64; 8]>,
    /// Per interface: bytes, packets, errs, drop received; then the same sent.
    pub net: BTreeMap<String, [u64; 8]>,
    /// TCP connections per state name, and `udp_socket`.
    pub netstat: BTreeMap<&'static str, u64>,
    /// Processes per state, `total` and `total_threads`.
    pub processes: BTreeMap<&'static str, u64>,
    /// Mounted file systems: path, device, type, and the statvfs figures.
    pub disks: Vec<Disk>,
}

/// One mounted file system.
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    /// Mount point.
    pub path: String,
    /// Device.
    pub device: String,
    /// File system type.
    pub fstype: String,
    /// Bytes in total.
    pub total: u64,
    /// Bytes available to unprivileged users.
    pub free: u64,
    /// Bytes used.
    pub used: u64,
    /// Inodes in total.
    pub inodes_total: u64,
    /// Free inodes.
    pub inodes_free: u64,
}

/// File system types that hold no user data; not reported (the CloudWatch agent's usual
/// `ignore_file_system_types`).
const PSEUDO_FS: [&str; 21] = [
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "cgroup",
    "cgroup2",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "squashfs",
];

/// Reads `/proc` (or a copy of it under `root`, for tests).
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/proc"),
        }
    }
}

fn numbers<const N: usize>(fields: &[&str]) -> [u64; N] {
    let mut out = [0u64; N];
    for (o, f) in out.iter_mut().zip(fields) {
        *o = f.parse().unwrap_or(0);
    }
    out
}

/// TCP states by the hex code of `/proc/net/tcp`.
fn tcp_state(code: &str) -> Option<&'static str> {
    Some(match code {
        "01" => "tcp_established",
        "02" => "tcp_syn_sent",
        "03" => "tcp_syn_recv",
        "04" => "tcp_fin_wait1",
        "05" => "tcp_fin_wait2",
        "06" => "tcp_time_wait",
        "07" => "tcp_close",
        "08" => "tcp_close_wait",
        "09" => "tcp_last_ack",
        "0A" => "tcp_listen",
        "0B" => "tcp_closing",
        _ => return None,
    })
}

const TCP_STATES: [&str; 12] = [
    "tcp_close",
    "tcp_close_wait",
    "tcp_closing",
    "tcp_established",
    "tcp_fin_wait1",
    "tcp_fin_wait2",
    "tcp_last_ack",
    "tcp_listen",
    "tcp_none",
    "tcp_syn_sent",
    "tcp_syn_recv",
    "tcp_time_wait",
];

impl ProcFs {
    /// Reads from a directory laid out like `/proc`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_default()
    }

    /// Takes one sample. Files that cannot be read give no figures, never an error: a
    /// container may hide some of them.
    pub fn sample(&self) -> Sample {
        let mut s = Sample::default();
        for line in self.read("stat").lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.first() {
                Some(&"cpu") => {
                    s.cpu.insert("cpu-total".into(), numbers(&f[1..]));
                }
                Some(c) if c.starts_with("cpu") => {
                    s.cpu.insert((*c).to_string(), numbers(&f[1..]));
                }
                _ => {}
            }
        }
        for line in self.read("meminfo").lines() {
            if let Some((k, rest)) = line.split_once(':') {
                let mut it = rest.split_whitespace();
                let v: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let mult = if it.next() == Some("kB") { 1024 } else { 1 };
                s.meminfo.insert(k.to_string(), v * mult);
            }
        }
        for line in self.read("diskstats").lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 14 {
                continue;
            }
            let name = f[2];
            if name.starts_with("loop") || name.starts_with("ram") {
                continue;
            }
            // reads, merged, sectors read, ms reading, writes, merged, sectors written,
            // ms writing, in progress, ms doing io
            let n: [u64; 11] = numbers(&f[3..14]);
            s.diskio.insert(
                name.to_string(),
                [n[0], n[2], n[3], n[4], n[6], n[7], n[8], n[9]],
            );
        }
        for line in self.read("net/dev").lines().skip(2) {
            let Some((iface, rest)) = line.split_once(':') else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() < 12 {
                continue;
            }
            let n: [u64; 16] = numbers(&f);
            s.net.insert(
                iface.trim().to_string(),
                [n[0], n[1], n[2], n[3], n[8], n[9], n[10], n[11]],
            );
        }
        for state in TCP_STATES {
            s.netstat.insert(state, 0);
        }
        for file in ["net/tcp", "net/tcp6"] {
            for line in self.read(file).lines().skip(1) {
                let state = line.split_whitespace().nth(3).and_then(tcp_state);
                if let Some(st) = state {
                    *s.netstat.entry(st).or_default() += 1;
                }
            }
        }
        let udp = ["net/udp", "net/udp6"]
            .iter()
            .map(|f| {
                self.read(f)
                    .lines()
                    .skip(1)
                    .filter(|l| !l.trim().is_empty())
                    .count() as u64
            })
            .sum();
        s.netstat.insert("udp_socket", udp);
        self.processes(&mut s);
        s.disks = self.disks();
        s
    }

    fn processes(&self, s: &mut Sample) {
        for k in [
            "blocked",
            "dead",
            "paging",
            "running",
            "sleeping",
            "stopped",
            "total",
            "total_threads",
            "wait",
            "zombies",
            "idle",
        ] {
            s.processes.insert(k, 0);
        }
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let stat = self.read(&format!("{name}/stat"));
            // The state follows the `)` that closes the command name (which may hold spaces).
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            let state = match f.first() {
                Some(&"R") => "running",
                Some(&"S") => "sleeping",
                Some(&"D") => "blocked",
                Some(&"Z") => "zombies",
                Some(&"T") | Some(&"t") => "stopped",
                Some(&"X") | Some(&"x") => "dead",
                Some(&"W") => "paging",
                Some(&"I") => "idle",
                _ => continue,
            };
            *s.processes.entry(state).or_default() += 1;
            *s.processes.entry("total").or_default() += 1;
            // Field 20 of stat is num_threads; after the `)` it is the 18th.
            let threads: u64 = f.get(17).and_then(|t| t.parse().ok()).unwrap_or(1);
            *s.processes.entry("total_threads").or_default() += threads;
        }
    }

    fn disks(&self) -> Vec<Disk> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for line in self.read("mounts").lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [device, path, fstype, ..] = f[..] else {
                continue;
            };
            if PSEUDO_FS.contains(&fstype) || !seen.insert(path.to_string()) {
                continue;
            }
            // Mount points escape spaces as \040.
            let path = path.replace("\\040", " ");
            if let Some(d) = statvfs(Path::new(&path)) {
                out.push(Disk {
                    path,
                    device: device.trim_start_matches("/dev/").to_string(),
                    fstype: fstype.to_string(),
                    ..d
                });
            }
        }
        out
    }
}

/// `statvfs(2)` of a mount point, as the `df` figures.
// The field types are u64 on 64-bit Linux but narrower elsewhere, hence the conversions.
#[allow(clippy::useless_conversion)]
fn statvfs(path: &Path) -> Option<Disk> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let frsize = u64::from(st.f_frsize);
    let total = u64::from(st.f_blocks) * frsize;
    let free = u64::from(st.f_bavail) * frsize;
    let used = u64::from(st.f_blocks).saturating_sub(u64::from(st.f_bfree)) * frsize;
    Some(Disk {
        path: String::new(),
        device: String::new(),
        fstype: String::new(),
        total,
        free,
        used,
        inodes_total: u64::from(st.f_files),
        inodes_free: u64::from(st.f_ffree),
    })
}

fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole * 100.0
    } else {
        0.0
    }
}

/// The CloudWatch agent's metrics from a sample, and the previous one for rates.
pub fn metrics(prev: Option<&Sample>, cur: &Sample) -> Vec<Datum> {
    let mut out = Vec::new();
    // cpu: times since the previous sample, as percentages; per cpu and cpu-total.
    if let Some(prev) = prev {
        for (cpu, now) in &cur.cpu {
            let Some(before) = prev.cpu.get(cpu) else {
                continue;
            };
            let d: Vec<f64> = now
                .iter()
                .zip(before)
                .map(|(a, b)| a.saturating_sub(*b) as f64)
                .collect();
            // guest and guest_nice are already counted in user and nice.
            let total: f64 = d[..8].iter().sum();
            let dims = [("cpu", cpu.as_str())];
            for (i, f) in CPU_FIELDS.iter().enumerate() {
                out.push(datum(
                    format!("cpu_usage_{f}"),
                    &dims,
                    pct(d[i], total),
                    "Percent",
                ));
                out.push(datum(format!("cpu_time_{f}"), &dims, d[i], "None"));
            }
            let idle = d[3] + d[4];
            out.push(datum(
                "cpu_usage_active".into(),
                &dims,
                pct(total - idle, total),
                "Percent",
            ));
            out.push(datum("cpu_time_active".into(), &dims, total - idle, "None"));
        }
    }
    // mem
    let m = |k: &str| cur.meminfo.get(k).copied().unwrap_or(0) as f64;
    if m("MemTotal") > 0.0 {
        let total = m("MemTotal");
        let available = if cur.meminfo.contains_key("MemAvailable") {
            m("MemAvailable")
        } else {
            m("MemFree") + m("Buffers") + m("Cached")
        };
        let used = total - available;
        for (name, v) in [
            ("mem_total", total),
            ("mem_available", available),
            ("mem_used", used),
            ("mem_free", m("MemFree")),
            ("mem_buffered", m("Buffers")),
            ("mem_cached", m("Cached")),
            ("mem_active", m("Active")),
            ("mem_inactive", m("Inactive")),
        ] {
            out.push(datum(name.into(), &[], v, "Bytes"));
        }
        out.push(datum(
            "mem_used_percent".into(),
            &[],
            pct(used, total),
            "Percent",
        ));
        out.push(datum(
            "mem_available_percent".into(),
            &[],
            pct(available, total),
            "Percent",
        ));
        let (st, sf) = (m("SwapTotal"), m("SwapFree"));
        out.push(datum("swap_free".into(), &[], sf, "Bytes"));
        out.push(datum("swap_used".into(), &[], st - sf, "Bytes"));
        out.push(datum(
            "swap_used_percent".into(),
            &[],
            pct(st - sf, st),
            "Percent",
        ));
    }
    // disk
    for d in &cur.disks {
        let dims = [
            ("path", d.path.as_str()),
            ("device", d.device.as_str()),
            ("fstype", d.fstype.as_str()),
        ];
        for (name, v, unit) in [
            ("disk_total", d.total as f64, "Bytes"),
            ("disk_free", d.free as f64, "Bytes"),
            ("disk_used", d.used as f64, "Bytes"),
            ("disk_inodes_total", d.inodes_total as f64, "Count"),
            ("disk_inodes_free", d.inodes_free as f64, "Count"),
            (
                "disk_inodes_used",
                d.inodes_total.saturating_sub(d.inodes_free) as f64,
                "Count",
            ),
        ] {
            out.push(datum(name.into(), &dims, v, unit));
        }
        // As df: used / (used + available to users).
        let used_pct = pct(d.used as f64, (d.used + d.free) as f64);
        out.push(datum(
            "disk_used_percent".into(),
            &dims,
            used_pct,
            "Percent",
        ));
    }
    // diskio and net: counts since the previous sample.
    if let Some(prev) = prev {
        for (dev, now) in &cur.diskio {
            let Some(before) = prev.diskio.get(dev) else {
                continue;
            };
            let d = |i: usize| now[i].saturating_sub(before[i]) as f64;
            let dims = [("name", dev.as_str())];
            for (name, v, unit) in [
                ("diskio_reads", d(0), "Count"),
                ("diskio_read_bytes", d(1) * 512.0, "Bytes"),
                ("diskio_read_time", d(2), "Milliseconds"),
                ("diskio_writes", d(3), "Count"),
                ("diskio_write_bytes", d(4) * 512.0, "Bytes"),
                ("diskio_write_time", d(5), "Milliseconds"),
                ("diskio_iops_in_progress", now[6] as f64, "Count"),
                ("diskio_io_time", d(7), "Milliseconds"),
            ] {
                out.push(datum(name.into(), &dims, v, unit));
            }
        }
        for (iface, now) in &cur.net {
            let Some(before) = prev.net.get(iface) else {
                continue;
            };
            let d = |i: usize| now[i].saturating_sub(before[i]) as f64;
            let dims = [("interface", iface.as_str())];
            for (name, v, unit) in [
                ("net_bytes_recv", d(0), "Bytes"),
                ("net_packets_recv", d(1), "Count"),
                ("net_err_in", d(2), "Count"),
                ("net_drop_in", d(3), "Count"),
                ("net_bytes_sent", d(4), "Bytes"),
                ("net_packets_sent", d(5), "Count"),
                ("net_err_out", d(6), "Count"),
                ("net_drop_out", d(7), "Count"),
            ] {
                out.push(datum(name.into(), &dims, v, unit));
            }
        }
    }
    for (k, v) in &cur.netstat {
        out.push(datum(format!("netstat_{k}"), &[], *v as f64, "Count"));
    }
    for (k, v) in &cur.processes {
        out.push(datum(format!("processes_{k}"), &[], *v as f64, "Count"));
    }
    out
}

#[cfg(test)]
mod tests;
