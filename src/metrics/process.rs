//! The standard `process_*` series (the names every Prometheus client library uses), read from
//! `/proc/self` at scrape time. Linux only, as the daemon is; a file that cannot be read drops
//! its series from that scrape rather than failing it.

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{count_gauge, single};

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`). The kernel reports
/// them in this unit whatever its internal `HZ`, and it is 100 on every architecture this
/// daemon targets (Prometheus' own procfs reader assumes the same); reading it properly would
/// take `sysconf`, i.e. unsafe code.
const USER_HZ: f64 = 100.0;

/// What one scrape read.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    start_time: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

/// Writes the process families.
pub(super) fn encode(enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let s = read();
    if let Some(v) = s.cpu_seconds {
        single(
            enc,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            MetricType::Counter,
            ConstCounter::new(v),
        )?;
    }
    if let Some(t) = s.start_time {
        single(
            enc,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            MetricType::Gauge,
            ConstGauge::new(t),
        )?;
    }
    let counts = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            s.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            s.virtual_bytes,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors",
            s.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors (the soft limit)",
            s.max_fds,
        ),
    ];
    for (name, help, value) in counts {
        if let Some(n) = value {
            single(enc, name, help, MetricType::Gauge, count_gauge(n))?;
        }
    }
    Ok(())
}

/// Reads `/proc` once.
fn read() -> Sample {
    let text = |path: &str| std::fs::read_to_string(path).ok();
    let stat = text("/proc/self/stat").and_then(|s| parse_stat(&s));
    let boot_time = text("/proc/stat").and_then(|s| parse_boot_time(&s));
    Sample {
        cpu_seconds: stat.as_ref().map(|s| s.cpu_ticks as f64 / USER_HZ),
        resident_bytes: text("/proc/self/status").and_then(|s| parse_vm_rss(&s)),
        virtual_bytes: stat.as_ref().map(|s| s.vsize),
        start_time: stat
            .as_ref()
            .zip(boot_time)
            .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / USER_HZ),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64),
        max_fds: text("/proc/self/limits").and_then(|s| parse_max_open_files(&s)),
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, PartialEq)]
struct Stat {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// Start after boot, in clock ticks.
    start_ticks: u64,
    /// Virtual memory size, bytes.
    vsize: u64,
}

/// Parses `/proc/<pid>/stat` (proc(5)). The command name in field 2 may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field n is rest[n - 3].
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
    })
}

/// `btime` of `/proc/stat`: boot time, Unix seconds.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes (the file gives kB).
fn parse_vm_rss(text: &str) -> Option<u64> {
    let value = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits` (`None` when unlimited).
fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (mta (sts) d) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 130 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 380,
                start_ticks: 123_456,
                vsize: 987_654_321,
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1"), None);
    }

    #[test]
    fn status_limits_and_boot_time() {
        assert_eq!(
            parse_vm_rss("Name:\tmta-stsd\nVmSize:\t  100 kB\nVmRSS:\t   12345 kB\n"),
            Some(12_345 * 1024)
        );
        assert_eq!(parse_vm_rss("Name:\tkthread\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_reads_whole() {
        let s = read();
        assert!(s.cpu_seconds.is_some());
        assert!(s.resident_bytes.is_some_and(|b| b > 0));
        assert!(s.virtual_bytes.is_some_and(|b| b > 0));
        assert!(s.open_fds.is_some_and(|n| n > 0));
        assert!(s.max_fds.is_some_and(|n| n > 0));
        let now = crate::util::unix_now() as f64;
        assert!(
            s.start_time
                .is_some_and(|t| t <= now + 1.0 && t > now - 86_400.0)
        );
    }
}
