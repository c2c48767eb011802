//! Device time per kernel, for `tmoe bench model --profile` on a GPU engine.
//!
//! The op profile (`autograd::profile`) measures host time, and on a GPU an
//! op only queues its kernels: there it shows launch cost. While this
//! profile is on, every launch, device copy and memset the executor queues
//! is timed on the device instead: a CUDA event before and after it on the
//! executor's one stream, read back when the profile stops (the events are
//! reused, and resolved every [`RESOLVE_EVERY`] launches so they do not pile
//! up). The simulator runs a launch when it is queued, so there the time is
//! the host's around it. The sum over kernels, set against a step's wall
//! time, shows how long the device sat idle waiting for the host, as a
//! lower bound: when the device is ahead of the host (small shapes), the
//! event before a launch fires as soon as it is queued, so the launch
//! call's own host time (microseconds) is counted as the kernel's.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Pending event pairs resolved at once, on a GPU.
pub const RESOLVE_EVERY: usize = 4096;

/// The names device copies and memsets are timed under (kernels go under
/// their own).
pub const COPY: &str = "(device copy)";
pub const MEMSET: &str = "(memset)";
pub const UPLOAD: &str = "(upload, pinned)";

/// One kernel's (or copy's) calls and device time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub calls: u64,
    pub seconds: f64,
}

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Vec<KernelTime>> = Mutex::new(Vec::new());

fn table() -> std::sync::MutexGuard<'static, Vec<KernelTime>> {
    // A panic while adding leaves plain sums behind: still usable.
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts (or restarts, from zero) timing what executors queue.
pub fn start() {
    table().clear();
    ON.store(true, Ordering::SeqCst);
}

/// Whether launches are being timed (one atomic load per launch).
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Stops timing new launches; [`take`] then returns the sums (after the
/// executor has resolved its pending events: `Executor::kernel_profile_stop`).
pub(crate) fn stop_timing() {
    ON.store(false, Ordering::SeqCst);
}

/// Adds one call of `kernel` that took `seconds` on the device.
pub(crate) fn add(kernel: &'static str, seconds: f64) {
    let mut t = table();
    match t.iter_mut().find(|e| e.kernel == kernel) {
        Some(e) => {
            e.calls += 1;
            e.seconds += seconds;
        }
        None => t.push(KernelTime {
            kernel,
            calls: 1,
            seconds,
        }),
    }
}

/// The sums so far, longest first, and clears them.
pub(crate) fn take() -> Vec<KernelTime> {
    let mut v = std::mem::take(&mut *table());
    v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.kernel.cmp(b.kernel)));
    v
}

/// A per-step table of kernel times: `steps` runs covered by the sums, each
/// of `step_s` seconds of wall time.
pub struct PerStep<'a> {
    pub kernels: &'a [KernelTime],
    pub steps: usize,
    pub step_s: f64,
}

impl fmt::Display for PerStep<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.steps.max(1) as f64;
        let share = |s: f64| 100.0 * s / self.step_s.max(f64::MIN_POSITIVE);
        writeln!(
            f,
            "  {:<28} {:>7} {:>10} {:>7}",
            "kernel (device time)", "calls", "ms/step", "share"
        )?;
        for k in self.kernels {
            writeln!(
                f,
                "  {:<28} {:>7} {:>10.3} {:>6.1}%",
                k.kernel,
                k.calls as f64 / n,
                1e3 * k.seconds / n,
                share(k.seconds / n)
            )?;
        }
        let busy: f64 = self.kernels.iter().map(|k| k.seconds).sum::<f64>() / n;
        write!(
            f,
            "  {:<28} {:>7} {:>10.3} {:>6.1}%",
            "(device idle, at least)",
            "",
            1e3 * (self.step_s - busy),
            share(self.step_s - busy)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_kernel_longest_first() {
        start();
        add("a", 1.0);
        add("b", 3.0);
        add("a", 1.5);
        stop_timing();
        assert!(!on());
        // Other tests in this binary may launch kernels meanwhile: only
        // this test's names count.
        let t: Vec<KernelTime> = take()
            .into_iter()
            .filter(|k| k.kernel == "a" || k.kernel == "b")
            .collect();
        assert_eq!(
            t,
            vec![
                KernelTime {
                    kernel: "b",
                    calls: 1,
                    seconds: 3.0
                },
                KernelTime {
                    kernel: "a",
                    calls: 2,
                    seconds: 2.5
                }
            ]
        );
        assert!(
            take().iter().all(|k| k.kernel != "a" && k.kernel != "b"),
            "take clears the sums"
        );
        let shown = PerStep {
            kernels: &t,
            steps: 2,
            step_s: 4.0,
        }
        .to_string();
        // b: 1.5 s a step of 4 s; idle: 4 - 2.75 = 1.25 s.
        assert!(shown.contains("1500.000   37.5%"), "{shown}");
        assert!(shown.contains("1250.000   31.2%"), "{shown}");
    }
}
