//! Where a step's time goes, op by op: host wall time per op kind, forward
//! and backward, plus the optimizer, summed over the tapes of every thread
//! while profiling is on (`tmoe bench model --profile`). A forward op's
//! time runs from the previous op's end on its tape to its own (its compute,
//! and any model code between the two); a backward op's is its own call.
//!
//! On the CPU engines an op returns when its work is done, so these are the
//! ops' times. A GPU engine's ops only queue kernels: there they are launch
//! (host) times, and the device's work shows up wherever the host waits.
//! When tapes ran on several threads at once (the CPU inference forward
//! splits its batch), the sums are thread time, not wall time.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;
use std::time::Duration;

use serde::Serialize;

/// Which part of a training step a time belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pass {
    Forward,
    Backward,
    /// Zeroing the gradients, clipping, AdamW.
    Optimizer,
}

/// One op kind's total in one pass.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub op: &'static str,
    pub pass: Pass,
    pub calls: u64,
    pub seconds: f64,
}

/// The sums so far, and the threads they came from.
struct Table {
    entries: Vec<Entry>,
    threads: Vec<ThreadId>,
}

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Table> = Mutex::new(Table {
    entries: Vec::new(),
    threads: Vec::new(),
});

fn table() -> std::sync::MutexGuard<'static, Table> {
    // A panic while adding leaves plain sums behind: still usable.
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts (or restarts, from zero) profiling, for tapes on every thread.
pub fn start() {
    let mut t = table();
    t.entries.clear();
    t.threads.clear();
    ON.store(true, Ordering::SeqCst);
}

/// Stops profiling and returns what it summed, forward first, then the
/// backward, then the optimizer's part (each in the order ops first ran).
pub fn stop() -> Profile {
    ON.store(false, Ordering::SeqCst);
    let mut t = table();
    let mut entries = std::mem::take(&mut t.entries);
    entries.sort_by_key(|e| e.pass as u8);
    Profile {
        entries,
        threads: std::mem::take(&mut t.threads).len(),
    }
}

/// Whether profiling is on (one atomic load: cheap enough per op).
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Adds one call of `op` in `pass`; a no-op when profiling is off.
pub fn add(op: &'static str, pass: Pass, took: Duration) {
    if !on() {
        return;
    }
    let mut t = table();
    let me = std::thread::current().id();
    if !t.threads.contains(&me) {
        t.threads.push(me);
    }
    match t.entries.iter_mut().find(|e| e.op == op && e.pass == pass) {
        Some(e) => {
            e.calls += 1;
            e.seconds += took.as_secs_f64();
        }
        None => t.entries.push(Entry {
            op,
            pass,
            calls: 1,
            seconds: took.as_secs_f64(),
        }),
    }
}

/// `f()`, its time added to `op` in `pass` when profiling.
pub fn timed<R>(op: &'static str, pass: Pass, f: impl FnOnce() -> R) -> R {
    if !on() {
        return f();
    }
    let t = std::time::Instant::now();
    let r = f();
    add(op, pass, t.elapsed());
    r
}

/// The summed times of a profiled run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Profile {
    pub entries: Vec<Entry>,
    /// Threads whose tapes added to it: above 1, the sums are thread time.
    pub threads: usize,
}

impl Profile {
    /// Seconds over every entry.
    pub fn total(&self) -> f64 {
        self.entries.iter().map(|e| e.seconds).sum()
    }

    /// A table per step: `steps` is how many steps the totals cover, and
    /// `step_s` the measured mean wall time of one (the rest of it is
    /// unattributed: batch staging, the loss read-back, the tape's own
    /// upkeep).
    pub fn per_step(&self, steps: usize, step_s: f64) -> PerStep<'_> {
        PerStep {
            profile: self,
            steps: steps.max(1),
            step_s,
        }
    }
}

/// [`Profile::per_step`]'s table.
pub struct PerStep<'a> {
    profile: &'a Profile,
    steps: usize,
    step_s: f64,
}

impl fmt::Display for PerStep<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.steps as f64;
        // Concurrent tapes: their sums are thread time, so shares are of
        // the attributed total, and no wall-time rest can be named.
        let parallel = self.profile.threads > 1;
        let whole = if parallel {
            self.profile.total() / n
        } else {
            self.step_s
        };
        let share = |s: f64| 100.0 * s / whole.max(f64::MIN_POSITIVE);
        if parallel {
            writeln!(
                f,
                "  (tapes on {} threads at once: ms/step is thread time, the share is of all ops)",
                self.profile.threads
            )?;
        }
        writeln!(
            f,
            "  {:<14} {:<9} {:>7} {:>10} {:>7}",
            "op", "pass", "calls", "ms/step", "share"
        )?;
        let mut rows: Vec<&Entry> = self.profile.entries.iter().collect();
        rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        for e in rows {
            writeln!(
                f,
                "  {:<14} {:<9} {:>7} {:>10.3} {:>6.1}%",
                e.op,
                format!("{:?}", e.pass).to_lowercase(),
                e.calls as f64 / n,
                1e3 * e.seconds / n,
                share(e.seconds / n)
            )?;
        }
        if parallel {
            return Ok(());
        }
        let rest = self.step_s - self.profile.total() / n;
        write!(
            f,
            "  {:<14} {:<9} {:>7} {:>10.3} {:>6.1}%",
            "(unattributed)",
            "",
            "",
            1e3 * rest,
            share(rest)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Profiling is process-wide and other tests' tapes may add while this
    /// one profiles, so it checks only its own op names.
    #[test]
    fn sums_per_op_and_pass_only_while_on() {
        add("unit_op", Pass::Forward, Duration::from_millis(5));
        start();
        add("unit_op", Pass::Forward, Duration::from_millis(2));
        add("unit_op", Pass::Backward, Duration::from_millis(3));
        add("unit_op", Pass::Forward, Duration::from_millis(4));
        add("unit_opt", Pass::Optimizer, Duration::from_millis(1));
        let p = stop();
        add("unit_op", Pass::Forward, Duration::from_millis(7));
        let get = |op: &str, pass: Pass| {
            p.entries
                .iter()
                .find(|e| e.op == op && e.pass == pass)
                .map(|e| (e.calls, e.seconds))
        };
        let (calls, secs) = get("unit_op", Pass::Forward).unwrap();
        assert_eq!(calls, 2, "only the calls while on");
        assert!((secs - 0.006).abs() < 1e-12);
        assert_eq!(get("unit_op", Pass::Backward).unwrap().0, 1);
        assert_eq!(get("unit_opt", Pass::Optimizer).unwrap().0, 1);
        assert!(p.threads >= 1);
    }

    fn entry(op: &'static str, pass: Pass, ms: f64) -> Entry {
        Entry {
            op,
            pass,
            calls: 2,
            seconds: ms / 1e3,
        }
    }

    #[test]
    fn the_table_gives_per_step_times_and_shares() {
        let p = Profile {
            entries: vec![
                entry("linear", Pass::Forward, 6.0),
                entry("linear", Pass::Backward, 3.0),
                entry("adamw", Pass::Optimizer, 1.0),
            ],
            threads: 1,
        };
        // Two steps of 10 ms each: 5 ms a step attributed, 5 unattributed.
        let table = p.per_step(2, 0.010).to_string();
        assert!(table.contains("(unattributed)"), "{table}");
        assert!(table.contains("3.000"), "linear forward, ms/step: {table}");
        assert!(table.contains("50.0%"), "unattributed share: {table}");
        // On concurrent threads: shares of the attributed total, no rest.
        let p = Profile { threads: 2, ..p };
        let table = p.per_step(2, 0.010).to_string();
        assert!(!table.contains("(unattributed)"), "{table}");
        assert!(table.contains("60.0%"), "linear forward of 10 ms: {table}");
    }
}
