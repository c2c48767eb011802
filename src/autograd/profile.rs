//! Where a step's time goes, op by op: host wall time per op kind, forward
//! and backward, plus the optimizer, summed while profiling is on for the
//! calling thread (`tmoe bench model --profile`). A forward op's time runs
//! from the previous op's end to its own (its compute, and any model code
//! between the two); a backward op's is its own call.
//!
//! On the CPU engines an op returns when its work is done, so these are the
//! ops' times. A GPU engine's ops only queue kernels: there they are launch
//! (host) times, and the device's work shows up wherever the host waits.

use std::cell::RefCell;
use std::fmt;
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

thread_local! {
    static TABLE: RefCell<Option<Vec<Entry>>> = const { RefCell::new(None) };
}

/// Starts (or restarts, from zero) profiling on this thread.
pub fn start() {
    TABLE.with(|t| *t.borrow_mut() = Some(Vec::new()));
}

/// Stops profiling on this thread and returns what it summed, in the order
/// ops first ran (forward, then backward, then the optimizer's part).
pub fn stop() -> Profile {
    let mut entries = TABLE.with(|t| t.borrow_mut().take()).unwrap_or_default();
    entries.sort_by_key(|e| e.pass as u8);
    Profile { entries }
}

/// Whether this thread is profiling (a thread-local read: cheap enough per op).
pub fn on() -> bool {
    TABLE.with(|t| t.borrow().is_some())
}

/// Adds one call of `op` in `pass`; a no-op when profiling is off.
pub fn add(op: &'static str, pass: Pass, took: Duration) {
    TABLE.with(|t| {
        if let Some(entries) = t.borrow_mut().as_mut() {
            match entries.iter_mut().find(|e| e.op == op && e.pass == pass) {
                Some(e) => {
                    e.calls += 1;
                    e.seconds += took.as_secs_f64();
                }
                None => entries.push(Entry {
                    op,
                    pass,
                    calls: 1,
                    seconds: took.as_secs_f64(),
                }),
            }
        }
    });
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
        let share = |s: f64| 100.0 * s / self.step_s.max(f64::MIN_POSITIVE);
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

    #[test]
    fn sums_per_op_and_pass_only_while_on() {
        add("linear", Pass::Forward, Duration::from_millis(5));
        assert!(!on());
        start();
        add("linear", Pass::Forward, Duration::from_millis(2));
        add("linear", Pass::Backward, Duration::from_millis(3));
        add("linear", Pass::Forward, Duration::from_millis(4));
        add("optimizer", Pass::Optimizer, Duration::from_millis(1));
        let p = stop();
        assert!(!on());
        assert_eq!(p.entries.len(), 3);
        let fwd = &p.entries[0];
        assert_eq!((fwd.op, fwd.pass, fwd.calls), ("linear", Pass::Forward, 2));
        assert!((fwd.seconds - 0.006).abs() < 1e-12);
        assert_eq!(p.entries[1].pass, Pass::Backward);
        assert_eq!(p.entries[2].pass, Pass::Optimizer);
        assert!((p.total() - 0.010).abs() < 1e-12);
        // Two steps of 10 ms each: 5 ms a step attributed, 5 unattributed.
        let table = p.per_step(2, 0.010).to_string();
        assert!(table.contains("(unattributed)"), "{table}");
        assert!(table.contains("3.000"), "linear forward, ms/step: {table}");
        assert!(table.contains("50.0%"), "unattributed share: {table}");
    }
}
