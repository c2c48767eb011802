//! The limit the heap meter holds a `tmoe` run to: `TMOE_MEMORY_LIMIT` when
//! it is set (a size such as `16G`, `512M`, `1048576`, or `off`), otherwise
//! 90 % of the memory the machine had available when the run began (Linux's
//! `MemAvailable`, and the cgroup's limit where a container sets one lower).
//! The meter counts the bytes asked for, not the process's pages (the
//! binary, thread stacks and the allocator's slack come on top): hence the
//! 10 % left over.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the limit in force came from, for the out-of-memory message.
static SOURCE: AtomicU8 = AtomicU8::new(NONE);
const NONE: u8 = 0;
const ENV: u8 = 1;
const MACHINE: u8 = 2;

/// The share of the available memory a run may hold.
const SHARE_OF_AVAILABLE: f64 = 0.9;

/// The environment variable that sets the limit.
pub const ENV_VAR: &str = "TMOE_MEMORY_LIMIT";

/// Reads `TMOE_MEMORY_LIMIT`, or the machine's available memory, and says
/// the limit (`None`: none, as on a machine that does not say what it has).
pub fn from_environment() -> Result<Option<usize>, String> {
    match std::env::var(ENV_VAR) {
        Ok(v) => {
            let limit = parse_size(&v).map_err(|e| format!("{ENV_VAR}: {e}"))?;
            SOURCE.store(if limit.is_some() { ENV } else { NONE }, Ordering::Relaxed);
            Ok(limit)
        }
        Err(_) => {
            let limit = machine_available().map(of_available);
            SOURCE.store(
                if limit.is_some() { MACHINE } else { NONE },
                Ordering::Relaxed,
            );
            Ok(limit)
        }
    }
}

/// The limit for `available` bytes.
pub fn of_available(available: u64) -> usize {
    usize::try_from((available as f64 * SHARE_OF_AVAILABLE) as u64).unwrap_or(usize::MAX)
}

/// Where the limit came from, in words.
pub fn source() -> &'static str {
    match SOURCE.load(Ordering::Relaxed) {
        ENV => "set by TMOE_MEMORY_LIMIT",
        MACHINE => "90 % of the memory available when the run began",
        _ => "no limit",
    }
}

/// A size in bytes: digits with an optional K, M, G or T (powers of 1024,
/// with or without a trailing `B` or `iB`); `off` (or `none`, `0`): no limit.
pub fn parse_size(s: &str) -> Result<Option<usize>, String> {
    let t = s.trim();
    if ["off", "none", "0"]
        .iter()
        .any(|w| t.eq_ignore_ascii_case(w))
    {
        return Ok(None);
    }
    let bad = || format!("cannot read {s:?} as a size (e.g. 16G, 512M, 1048576, or off)");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(1 << shift).ok_or_else(bad)?;
    Ok(Some(usize::try_from(bytes).map_err(|_| bad())?))
}

/// The memory this process can use now: the least of `MemAvailable` and the
/// memory cgroup's limit (v2 `memory.max`, v1 `memory.limit_in_bytes`).
/// The cgroup's usage is not subtracted: it counts page cache the kernel
/// would reclaim. `None` where the machine does not say (not Linux).
pub fn machine_available() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let mem = read("/proc/meminfo").and_then(|t| meminfo_available(&t));
    let own = read("/proc/self/cgroup").unwrap_or_default();
    let mut limits = vec![];
    for (controller, file) in [("", "memory.max"), ("memory", "memory.limit_in_bytes")] {
        let root = if controller.is_empty() {
            "/sys/fs/cgroup".to_string()
        } else {
            format!("/sys/fs/cgroup/{controller}")
        };
        // The process's own group first; inside a container's namespace
        // the mount's root is the container's group.
        let mut paths = vec![format!("{root}/{file}")];
        if let Some(p) = cgroup_path(&own, controller) {
            paths.insert(0, format!("{root}{p}/{file}"));
        }
        limits.extend(
            paths
                .iter()
                .find_map(|p| read(p))
                .and_then(|t| cgroup_limit(&t)),
        );
    }
    mem.into_iter().chain(limits).min()
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// A cgroup memory limit file's value; `None` for no limit (`max`, or v1's
/// "unlimited", a page-rounded `i64::MAX`).
pub fn cgroup_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v < 1 << 60).then_some(v)
}

/// The process's group for `controller` in `/proc/self/cgroup` (`""`: the
/// v2 unified hierarchy, the `0::` line).
fn cgroup_path<'a>(own: &'a str, controller: &str) -> Option<&'a str> {
    own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, names, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if controller.is_empty() {
            names.is_empty()
        } else {
            names.split(',').any(|n| n == controller)
        };
        (hit && path != "/").then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_a_user_writes_them() {
        assert_eq!(parse_size("16G"), Ok(Some(16 << 30)));
        assert_eq!(parse_size("512M"), Ok(Some(512 << 20)));
        assert_eq!(parse_size("512MiB"), Ok(Some(512 << 20)));
        assert_eq!(parse_size(" 2 gb "), Ok(Some(2 << 30)));
        assert_eq!(parse_size("1048576"), Ok(Some(1 << 20)));
        assert_eq!(parse_size("off"), Ok(None));
        assert_eq!(parse_size("0"), Ok(None));
        for bad in ["", "G", "1.5G", "16X", "-1", "99999999999999999999T"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("cannot read"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_machine_says_what_it_has() {
        let meminfo = "MemTotal:       24683784 kB\nMemFree:  1 kB\nMemAvailable:   24158436 kB\n";
        assert_eq!(meminfo_available(meminfo), Some(24158436 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
        assert_eq!(cgroup_limit("max\n"), None);
        assert_eq!(cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(cgroup_limit("8589934592\n"), Some(8 << 30));
        assert_eq!(of_available(10 << 30), 9 << 30);
    }

    #[test]
    fn the_process_group_is_found_per_hierarchy() {
        let own = "4:memory:/box/a\n1:cpu:/\n0::/user.slice/x\n";
        assert_eq!(cgroup_path(own, "memory"), Some("/box/a"));
        assert_eq!(cgroup_path(own, ""), Some("/user.slice/x"));
        assert_eq!(cgroup_path("0::/\n", ""), None);
        assert_eq!(cgroup_path(own, "pids"), None);
    }
}
