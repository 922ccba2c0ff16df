//! Pure helpers of the benchmark: latency percentiles, counting SSE events
//! across read boundaries, and parsing `/proc` files. No I/O happens here
//! except in the thin `read_*` wrappers at the bottom, so everything else is
//! unit-tested.

use std::time::Duration;

/// Latency percentiles of one run, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    /// Percentiles of `samples` (nanoseconds; sorted in place). All zero when
    /// there are no samples.
    pub(crate) fn of(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        let us = |ns: u64| ns as f64 / 1_000.0;
        Self {
            p50: us(percentile(samples, 50.0)),
            p90: us(percentile(samples, 90.0)),
            p99: us(percentile(samples, 99.0)),
            max: us(samples.last().copied().unwrap_or(0)),
        }
    }
}

/// The nearest-rank percentile `p` (0–100) of an ascending slice: the
/// smallest sample such that at least `p`% of the samples are ≤ it. Zero for
/// an empty slice.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Counts occurrences of a byte pattern in a stream fed in arbitrary pieces,
/// so an SSE event name split across two reads is still counted once.
#[derive(Debug)]
pub(crate) struct PatternCounter {
    pattern: &'static [u8],
    /// The last `pattern.len() - 1` bytes seen, which may start a match.
    tail: Vec<u8>,
}

impl PatternCounter {
    pub(crate) fn new(pattern: &'static [u8]) -> Self {
        Self {
            pattern,
            tail: Vec::with_capacity(pattern.len()),
        }
    }

    /// Feeds the next piece; returns how many matches end inside it.
    pub(crate) fn feed(&mut self, piece: &[u8]) -> usize {
        let n = self.pattern.len();
        if n == 0 {
            return 0;
        }
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(piece);
        let count = window.windows(n).filter(|w| *w == self.pattern).count();
        let keep = window.len().min(n - 1);
        window.drain(..window.len() - keep);
        self.tail = window;
        count
    }
}

/// CPU time of a process in clock ticks, split as `/proc/<pid>/stat` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CpuTicks {
    pub(crate) user: u64,
    pub(crate) system: u64,
}

impl CpuTicks {
    pub(crate) fn total(self) -> u64 {
        self.user + self.system
    }

    /// Ticks spent between `earlier` and `self`.
    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// User and system CPU time of a process from the text of
/// `/proc/<pid>/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted after its last `)`.
pub(crate) fn parse_stat_cpu_ticks(stat: &str) -> Option<CpuTicks> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: state(3) ppid(4) ... utime(14) stime(15).
    let mut fields = after.split_whitespace();
    let user: u64 = fields.nth(11)?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

/// `VmRSS` of `/proc/<pid>/status`, in kB.
pub(crate) fn parse_status_rss_kb(status: &str) -> Option<u64> {
    status_field_kb(status, "VmRSS:")
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status` or `/proc/meminfo`.
fn status_field_kb(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft "Max open files" limit from `/proc/<pid>/limits`.
pub(crate) fn parse_limits_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The first `model name` of `/proc/cpuinfo`.
pub(crate) fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// `MemTotal` of `/proc/meminfo`, in kB.
pub(crate) fn parse_meminfo_total_kb(meminfo: &str) -> Option<u64> {
    status_field_kb(meminfo, "MemTotal:")
}

/// CPU time per request in microseconds, from a tick delta.
pub(crate) fn cpu_per_request_us(ticks: u64, ticks_per_sec: u64, requests: u64) -> f64 {
    if requests == 0 || ticks_per_sec == 0 {
        return 0.0;
    }
    ticks as f64 * 1e6 / ticks_per_sec as f64 / requests as f64
}

/// Requests per second over `elapsed`.
pub(crate) fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        count as f64 / secs
    }
}

/// The median of a few measurements (the lower middle for an even count).
pub(crate) fn median(values: &mut [Duration]) -> Duration {
    values.sort_unstable();
    match values.len() {
        0 => Duration::ZERO,
        n => values[(n - 1) / 2],
    }
}

// ---- thin readers ----

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// CPU ticks of `pid`.
pub(crate) fn cpu_ticks(pid: u32) -> Option<CpuTicks> {
    parse_stat_cpu_ticks(&read(&format!("/proc/{pid}/stat"))?)
}

/// CPU ticks of this process.
pub(crate) fn self_cpu_ticks() -> Option<CpuTicks> {
    parse_stat_cpu_ticks(&read("/proc/self/stat")?)
}

/// Resident set size of `pid`, in kB.
pub(crate) fn rss_kb(pid: u32) -> Option<u64> {
    parse_status_rss_kb(&read(&format!("/proc/{pid}/status"))?)
}

/// Open file descriptors of `pid`.
pub(crate) fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// This process's soft open-files limit.
pub(crate) fn nofile_limit() -> Option<u64> {
    parse_limits_nofile(&read("/proc/self/limits")?)
}

/// CPU model name.
pub(crate) fn cpu_model() -> Option<String> {
    parse_cpu_model(&read("/proc/cpuinfo")?)
}

/// Total memory in kB.
pub(crate) fn mem_total_kb() -> Option<u64> {
    parse_meminfo_total_kb(&read("/proc/meminfo")?)
}

/// The 1/5/15-minute load averages as printed in `/proc/loadavg`.
pub(crate) fn loadavg() -> Option<String> {
    let text = read("/proc/loadavg")?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), 50);
        assert_eq!(percentile(&sorted, 90.0), 90);
        assert_eq!(percentile(&sorted, 99.0), 99);
        assert_eq!(percentile(&sorted, 100.0), 100);
        assert_eq!(percentile(&sorted, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // Ten samples: p99 is the largest, p50 the fifth.
        let ten = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&ten, 99.0), 10);
        assert_eq!(percentile(&ten, 50.0), 5);
    }

    #[test]
    fn percentiles_sort_and_convert_to_micros() {
        let mut samples = vec![3_000, 1_000, 2_000, 4_000];
        let p = Percentiles::of(&mut samples);
        assert_eq!(samples, [1_000, 2_000, 3_000, 4_000]);
        assert_eq!(p.p50, 2.0);
        assert_eq!(p.p99, 4.0);
        assert_eq!(p.max, 4.0);
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }

    #[test]
    fn counts_patterns_split_across_pieces() {
        let mut c = PatternCounter::new(b"event: chunk\n");
        assert_eq!(c.feed(b"event: start\ndata: {}\n\nevent: ch"), 0);
        assert_eq!(c.feed(b"unk\ndata: {}\n\nevent: chunk\n"), 2);
        assert_eq!(c.feed(b"e"), 0);
        assert_eq!(c.feed(b"vent: chunk"), 0);
        assert_eq!(c.feed(b"\n"), 1);
        assert_eq!(c.feed(b""), 0);
        let mut d = PatternCounter::new(b"aa");
        assert_eq!(d.feed(b"aaa"), 2);
        assert_eq!(d.feed(b"a"), 1);
    }

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let stat = "4242 (wombat (x) srv) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    150 37 0 0 20 0 6 0 123456 1000000 2000 18446744073709551615";
        let t = parse_stat_cpu_ticks(stat).expect("parses");
        assert_eq!(
            t,
            CpuTicks {
                user: 150,
                system: 37
            }
        );
        assert_eq!(t.total(), 187);
        let later = CpuTicks {
            user: 160,
            system: 40,
        };
        assert_eq!(
            later.since(t),
            CpuTicks {
                user: 10,
                system: 3
            }
        );
        assert_eq!(t.since(later).total(), 0);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn parses_status_limits_cpuinfo_meminfo() {
        let status =
            "Name:\twombat-server\nVmPeak:\t  50000 kB\nVmRSS:\t    9876 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss_kb(status), Some(9876));
        assert_eq!(parse_status_rss_kb("Name: x\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            20000                40000                files     \n";
        assert_eq!(parse_limits_nofile(limits), Some(20000));
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(parse_cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        let meminfo = "MemTotal:       24684000 kB\nMemFree:        100 kB\n";
        assert_eq!(parse_meminfo_total_kb(meminfo), Some(24_684_000));
    }

    #[test]
    fn rates_and_medians() {
        assert_eq!(cpu_per_request_us(50, 100, 10_000), 50.0);
        assert_eq!(cpu_per_request_us(5, 100, 0), 0.0);
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(rate(1, Duration::ZERO), 0.0);
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(30), ms(10), ms(20)]), ms(20));
        assert_eq!(median(&mut [ms(40), ms(10), ms(30), ms(20)]), ms(20));
        assert_eq!(median(&mut []), Duration::ZERO);
    }
}
