use super::*;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(p, text).expect("write");
}

fn fake_proc(dir: &Path, cpu: [u64; 10], reads: u64, rx: u64) {
    let line = |name: &str| {
        format!(
            "{name} {}",
            cpu.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
        )
    };
    write(
        dir,
        "stat",
        &format!(
            "{}\n{}\nintr 1 2 3\nprocs_running 2\n",
            line("cpu"),
            line("cpu0")
        ),
    );
    write(
        dir,
        "meminfo",
        "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 400 kB\nBuffers: 50 kB\nCached: 100 kB\nActive: 300 kB\nInactive: 250 kB\nSwapTotal: 800 kB\nSwapFree: 600 kB\n",
    );
    write(
        dir,
        "diskstats",
        &format!(
            "   8       0 sda {reads} 0 {} 40 10 0 160 20 3 55 0 0 0 0\n   7       0 loop0 9 9 9 9 9 9 9 9 9 9 9\n",
            reads * 8
        ),
    );
    write(
        dir,
        "net/dev",
        &format!(
            "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n  eth0: {rx} 10 1 2 0 0 0 0 5000 20 0 0 0 0 0 0\n"
        ),
    );
    write(
        dir,
        "net/tcp",
        "  sl  local_address rem_address   st\n   0: 0:0 0:0 0A x\n   1: 0:0 0:0 01 x\n   2: 0:0 0:0 01 x\n",
    );
    write(dir, "net/udp", "  sl  local_address\n   0: 0:0 0:0 07 x\n");
    write(
        dir,
        "1/stat",
        "1 (init (a b)) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 3 0 0\n",
    );
    write(
        dir,
        "2/stat",
        "2 (zz) Z 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 0\n",
    );
    write(dir, "mounts", "");
}

fn value(ms: &[Datum], name: &str, dims: &[(&str, &str)]) -> f64 {
    ms.iter()
        .find(|d| {
            d.name == name
                && dims
                    .iter()
                    .all(|(k, v)| d.dimensions.iter().any(|(dk, dv)| dk == k && dv == v))
        })
        .map(|d| d.value)
        .unwrap_or_else(|| panic!("no {name} {dims:?}"))
}

#[test]
fn rates_and_percentages_come_from_deltas() {
    let dir = tempfile::tempdir().expect("tempdir");
    fake_proc(dir.path(), [100, 0, 50, 800, 50, 0, 0, 0, 0, 0], 10, 1000);
    let fs = ProcFs::at(dir.path());
    let first = fs.sample();
    let gauges = metrics(None, &first);
    assert!(
        gauges.iter().all(|d| !d.name.starts_with("cpu_")),
        "no rates from one sample"
    );
    // +60 user, +20 system, +100 idle, +20 iowait: 200 ticks.
    fake_proc(dir.path(), [160, 0, 70, 900, 70, 0, 0, 0, 0, 0], 25, 4000);
    let ms = metrics(Some(&first), &fs.sample());
    let total = [("cpu", "cpu-total")];
    assert_eq!(value(&ms, "cpu_usage_user", &total), 30.0);
    assert_eq!(value(&ms, "cpu_usage_system", &total), 10.0);
    assert_eq!(value(&ms, "cpu_usage_idle", &total), 50.0);
    assert_eq!(value(&ms, "cpu_usage_iowait", &total), 10.0);
    assert_eq!(value(&ms, "cpu_usage_active", &total), 40.0);
    assert_eq!(value(&ms, "cpu_time_user", &[("cpu", "cpu0")]), 60.0);
    assert_eq!(value(&ms, "diskio_reads", &[("name", "sda")]), 15.0);
    assert_eq!(
        value(&ms, "diskio_read_bytes", &[("name", "sda")]),
        15.0 * 8.0 * 512.0
    );
    assert!(
        ms.iter()
            .all(|d| d.dimensions.iter().all(|(_, v)| v != "loop0"))
    );
    assert_eq!(
        value(&ms, "net_bytes_recv", &[("interface", "eth0")]),
        3000.0
    );
    assert_eq!(value(&ms, "net_bytes_sent", &[("interface", "eth0")]), 0.0);
    assert_eq!(value(&ms, "mem_total", &[]), 1000.0 * 1024.0);
    assert_eq!(value(&ms, "mem_used_percent", &[]), 60.0);
    assert_eq!(value(&ms, "mem_available_percent", &[]), 40.0);
    assert_eq!(value(&ms, "swap_used", &[]), 200.0 * 1024.0);
    assert_eq!(value(&ms, "swap_used_percent", &[]), 25.0);
    assert_eq!(value(&ms, "netstat_tcp_listen", &[]), 1.0);
    assert_eq!(value(&ms, "netstat_tcp_established", &[]), 2.0);
    assert_eq!(value(&ms, "netstat_tcp_time_wait", &[]), 0.0);
    assert_eq!(value(&ms, "netstat_udp_socket", &[]), 1.0);
    assert_eq!(value(&ms, "processes_total", &[]), 2.0);
    assert_eq!(value(&ms, "processes_sleeping", &[]), 1.0);
    assert_eq!(value(&ms, "processes_zombies", &[]), 1.0);
    assert_eq!(value(&ms, "processes_total_threads", &[]), 4.0);
}

/// The real `/proc` and the real root file system, checked against independent readings.
#[test]
fn real_host_figures_match_independent_readings() {
    let fs = ProcFs::default();
    let a = fs.sample();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = fs.sample();
    let ms = metrics(Some(&a), &b);

    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let mem_total_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    assert_eq!(value(&ms, "mem_total", &[]), mem_total_kb * 1024.0);

    let shares: f64 = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ]
    .iter()
    .map(|f| value(&ms, &format!("cpu_usage_{f}"), &[("cpu", "cpu-total")]))
    .sum();
    assert!((shares - 100.0).abs() < 1e-6 || shares == 0.0, "{shares}");

    // `df` is the independent reading of the root file system.
    let df = std::process::Command::new("df")
        .args(["-B1", "--output=size,avail", "/"])
        .output()
        .expect("df");
    let text = String::from_utf8_lossy(&df.stdout);
    let nums: Vec<f64> = text
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    if let [size, avail] = nums[..] {
        let root = [("path", "/")];
        assert_eq!(value(&ms, "disk_total", &root), size);
        // Free space moves while other processes write; allow 64 MiB.
        assert!((value(&ms, "disk_free", &root) - avail).abs() < 64.0 * 1024.0 * 1024.0);
    }

    // Our own process is counted.
    assert!(std::path::Path::new(&format!("/proc/{}", std::process::id())).exists());
    assert!(value(&ms, "processes_total", &[]) >= 1.0);
    assert!(value(&ms, "processes_total_threads", &[]) >= value(&ms, "processes_total", &[]));
    assert!(
        ms.iter()
            .any(|d| d.name == "net_bytes_recv" && d.dimensions.iter().any(|(_, v)| v == "lo"))
    );
}
