//! The process and the board, read at scrape time: CPU time, memory, threads and open files
//! from `/proc/self` (the usual `process_*` names, so existing dashboards work), the SoC's
//! temperatures from `/sys/class/thermal`, and on a Raspberry Pi the firmware's throttling
//! flags (`get_throttled`: under-voltage, frequency capped, throttled, soft temperature limit,
//! each now and since boot). A file that is missing leaves its metric out: a PC has no
//! `get_throttled`, and 0 there would read as "not throttled".
//!
//! The flags come from the firmware's sysfs file when the kernel has it, else from `vcgencmd
//! get_throttled` (Raspberry Pi OS); a `vcgencmd` that fails once (no access to `/dev/vchiq`)
//! is not run again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Scrape, Source};

/// Where the Raspberry Pi firmware driver publishes `get_throttled`, under the root.
const THROTTLED_SYSFS: &str = "sys/devices/platform/soc/soc:firmware/get_throttled";

/// The `get_throttled` bits: name, bit when it holds now (+16: has held since boot).
const THROTTLE_FLAGS: [(&str, u32); 4] = [
    ("under_voltage", 0),
    ("freq_capped", 1),
    ("throttled", 2),
    ("soft_temp_limit", 3),
];

/// The process and board figures (see the module docs).
#[derive(Debug)]
pub struct System {
    root: PathBuf,
    vcgencmd_failed: AtomicBool,
}

impl Default for System {
    fn default() -> Self {
        Self::new()
    }
}

impl System {
    /// Reads the real `/proc` and `/sys`.
    pub fn new() -> System {
        Self::with_root("/")
    }

    /// Reads `/sys` (thermal zones, `get_throttled`) under `root` instead (tests); the process
    /// figures always come from this process's `/proc/self`.
    pub fn with_root(root: impl Into<PathBuf>) -> System {
        System {
            root: root.into(),
            vcgencmd_failed: AtomicBool::new(false),
        }
    }

    fn process(&self, out: &mut Scrape) {
        // SAFETY: sysconf only reads configuration values.
        let (tck, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let (tck, page) = (tck.max(1) as f64, page.max(1) as f64);
        if let Some(st) = read("/proc/self/stat").as_deref().and_then(parse_stat) {
            out.counter(
                "process_cpu_seconds",
                "CPU time used by faced (user and system), seconds.",
                &[],
                (st.utime + st.stime) as f64 / tck,
            );
            out.gauge(
                "process_threads",
                "Threads of the faced process.",
                &[],
                st.threads as f64,
            );
            let btime = read("/proc/stat").and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
            });
            if let Some(b) = btime {
                out.gauge(
                    "process_start_time_seconds",
                    "When faced started, Unix seconds.",
                    &[],
                    b as f64 + st.start as f64 / tck,
                );
            }
        }
        if let Some((virt, rss)) = read("/proc/self/statm").and_then(|s| {
            let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            Some((f.next()??, f.next()??))
        }) {
            out.gauge(
                "process_resident_memory_bytes",
                "Resident memory of the faced process, bytes.",
                &[],
                rss as f64 * page,
            );
            out.gauge(
                "process_virtual_memory_bytes",
                "Virtual memory of the faced process, bytes.",
                &[],
                virt as f64 * page,
            );
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries.
            let n = d.count().saturating_sub(1);
            out.gauge(
                "process_open_fds",
                "Open file descriptors of the faced process.",
                &[],
                n as f64,
            );
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            out.gauge(
                "process_max_fds",
                "The open file limit of the faced process (soft).",
                &[],
                lim.rlim_cur as f64,
            );
        }
    }

    fn temperatures(&self, out: &mut Scrape) {
        let Ok(dir) = std::fs::read_dir(self.root.join("sys/class/thermal")) else {
            return;
        };
        let mut zones: Vec<(String, PathBuf)> = dir
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(n, _)| n.starts_with("thermal_zone"))
            .collect();
        zones.sort();
        for (zone, path) in zones {
            let Some(milli) = read(path.join("temp")).and_then(|t| t.trim().parse::<i64>().ok())
            else {
                continue;
            };
            let kind = read(path.join("type")).unwrap_or_default();
            out.gauge(
                "faced_soc_temperature_celsius",
                "Temperature of a thermal zone of the board (/sys/class/thermal), degrees Celsius.",
                &[("zone", &zone), ("type", kind.trim())],
                milli as f64 / 1000.0,
            );
        }
    }

    /// The firmware's `get_throttled` word, if this board has one.
    fn throttled(&self) -> Option<u32> {
        if let Some(s) = read(self.root.join(THROTTLED_SYSFS)) {
            return parse_throttled(&s);
        }
        let bin = self.root.join("usr/bin/vcgencmd");
        if self.vcgencmd_failed.load(Ordering::Relaxed) || !bin.is_file() {
            return None;
        }
        let word = run_briefly(&bin, &["get_throttled"], Duration::from_secs(2))
            .and_then(|s| parse_throttled(&s));
        if word.is_none() {
            tracing::info!(
                "`vcgencmd get_throttled` gave no answer (is faced in the video group?): the \
                 throttling metrics are left out"
            );
            self.vcgencmd_failed.store(true, Ordering::Relaxed);
        }
        word
    }
}

impl Source for System {
    fn collect(&self, out: &mut Scrape) {
        self.process(out);
        self.temperatures(out);
        if let Some(word) = self.throttled() {
            for (flag, bit) in THROTTLE_FLAGS {
                out.gauge(
                    "faced_soc_throttled_now",
                    "Raspberry Pi firmware flag (get_throttled) that holds now: 1 or 0.",
                    &[("flag", flag)],
                    f64::from((word >> bit) & 1),
                );
            }
            for (flag, bit) in THROTTLE_FLAGS {
                out.gauge(
                    "faced_soc_throttled_since_boot",
                    "Raspberry Pi firmware flag (get_throttled) that has held since boot: 1 or 0.",
                    &[("flag", flag)],
                    f64::from((word >> (bit + 16)) & 1),
                );
            }
        }
    }
}

fn read(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// The figures of `/proc/self/stat` used here, in clock ticks.
#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    start: u64,
}

fn parse_stat(s: &str) -> Option<Stat> {
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i)?.parse::<u64>().ok();
    // Field 3 (state) is f[0]: utime is field 14, stime 15, num_threads 20, starttime 22.
    Some(Stat {
        utime: n(11)?,
        stime: n(12)?,
        threads: n(17)?,
        start: n(19)?,
    })
}

/// `throttled=0x50005` (vcgencmd) or `50005` (sysfs), hexadecimal.
fn parse_throttled(s: &str) -> Option<u32> {
    let s = s.trim();
    let s = s.strip_prefix("throttled=").unwrap_or(s);
    let s = s.strip_prefix("0x").unwrap_or(s);
    u32::from_str_radix(s, 16).ok()
}

/// The standard output of `bin args`, if it exits successfully within `limit` (killed after).
fn run_briefly(bin: &Path, args: &[&str], limit: Duration) -> Option<String> {
    use std::io::Read;
    let mut child = std::process::Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_end_of_the_command_name() {
        let s = "4242 (faced (x) y) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15 16 9 18 12345 20";
        assert_eq!(
            parse_stat(s),
            Some(Stat {
                utime: 111,
                stime: 222,
                threads: 9,
                start: 12345
            })
        );
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn throttled_word_from_sysfs_or_vcgencmd() {
        assert_eq!(parse_throttled("50005\n"), Some(0x50005));
        assert_eq!(parse_throttled("throttled=0x50005\n"), Some(0x50005));
        assert_eq!(parse_throttled("throttled=0x0"), Some(0));
        assert_eq!(parse_throttled("error"), None);
    }

    #[test]
    fn a_pi_reports_temperature_and_flags_and_a_pc_leaves_the_flags_out() {
        let root = tempfile::tempdir().unwrap();
        let zone = root.path().join("sys/class/thermal/thermal_zone0");
        std::fs::create_dir_all(&zone).unwrap();
        std::fs::write(zone.join("temp"), "61850\n").unwrap();
        std::fs::write(zone.join("type"), "cpu-thermal\n").unwrap();
        // A cooling device beside the zones is not a zone.
        std::fs::create_dir_all(root.path().join("sys/class/thermal/cooling_device0")).unwrap();
        let pc = System::with_root(root.path());
        let mut out = Scrape::default();
        pc.collect(&mut out);
        let text = out.render();
        assert!(
            text.contains(
                "faced_soc_temperature_celsius{zone=\"thermal_zone0\",type=\"cpu-thermal\"} 61.85\n"
            ),
            "{text}"
        );
        assert!(!text.contains("throttled"), "{text}");
        for m in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(m), "{m} missing: {text}");
        }

        // Under-voltage now, and throttling and under-voltage since boot.
        let fw = root.path().join(THROTTLED_SYSFS);
        std::fs::create_dir_all(fw.parent().unwrap()).unwrap();
        std::fs::write(&fw, "50001\n").unwrap();
        let mut out = Scrape::default();
        pc.collect(&mut out);
        let text = out.render();
        for (line, v) in [
            ("faced_soc_throttled_now{flag=\"under_voltage\"}", 1),
            ("faced_soc_throttled_now{flag=\"throttled\"}", 0),
            ("faced_soc_throttled_since_boot{flag=\"under_voltage\"}", 1),
            ("faced_soc_throttled_since_boot{flag=\"throttled\"}", 1),
            ("faced_soc_throttled_since_boot{flag=\"freq_capped\"}", 0),
        ] {
            assert!(text.contains(&format!("{line} {v}.0\n")), "{line}: {text}");
        }
    }
}
