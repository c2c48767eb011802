//! Where a study is in its runs, and about how long the rest will take: a
//! grid or a budget curve runs for an hour on 2 cores, one run after
//! another, each with bars of its own, so each run starts with one line
//! saying which it is of how many.

use std::time::{Duration, Instant};

/// The runs of one phase, in order; `K` says which runs take about as long
/// as each other (a row at a fraction; another seed takes about the same).
pub struct RunClock<K> {
    plan: Vec<K>,
    start: Instant,
    /// The latest time each kind of run took when this call made it.
    took: Vec<(K, Duration)>,
    made: Duration,
    n_made: u32,
}

impl<K: PartialEq + Copy> RunClock<K> {
    /// `start`: when the study began (the time so far counts from it).
    pub fn new(plan: Vec<K>, start: Instant) -> Self {
        RunClock {
            plan,
            start,
            took: Vec::new(),
            made: Duration::ZERO,
            n_made: 0,
        }
    }

    /// Run `i` (from 0) and the rest: each kind's own time where this call
    /// made one, the mean of every run made otherwise; None before any.
    fn left(&self, i: usize) -> Option<Duration> {
        let mean = self.made.checked_div(self.n_made)?;
        Some(
            self.plan[i..]
                .iter()
                .map(|k| {
                    self.took
                        .iter()
                        .find(|(t, _)| t == k)
                        .map_or(mean, |&(_, d)| d)
                })
                .sum(),
        )
    }

    /// Makes run `i` (from 0) with `make`, saying so first when `progress`
    /// (`what` names it), and keeps its time for the estimates. Called only
    /// for a run not found done (inside `cached`'s closure).
    pub fn make<T>(&mut self, i: usize, what: &str, progress: bool, make: impl FnOnce() -> T) -> T {
        if progress {
            eprintln!("{}", self.line(i, what));
        }
        let started = Instant::now();
        let r = make();
        self.made(i, started.elapsed());
        r
    }

    /// The line to print as run `i` (from 0) starts: `what` names it.
    fn line(&self, i: usize, what: &str) -> String {
        run_line(
            i + 1,
            self.plan.len(),
            what,
            self.start.elapsed(),
            self.left(i),
        )
    }

    /// Run `i` was made (not found done) and took `d`.
    fn made(&mut self, i: usize, d: Duration) {
        let k = self.plan[i];
        self.made += d;
        self.n_made += 1;
        self.took.retain(|(t, _)| *t != k);
        self.took.push((k, d));
    }
}

/// "study: run 17 of 66: WHAT (12 minutes so far, about 20 minutes left)".
pub fn run_line(
    index: usize,
    total: usize,
    what: &str,
    elapsed: Duration,
    left: Option<Duration>,
) -> String {
    let human = |d: Duration| indicatif::HumanDuration(d).to_string();
    let left = left
        .map(|d| format!(", about {} left", human(d)))
        .unwrap_or_default();
    format!(
        "study: run {index} of {total}: {what} ({} so far{left})",
        human(elapsed)
    )
}

/// A run's training flows, as the lines say it.
pub fn flows(fraction: f64) -> String {
    if fraction < 1.0 {
        format!("{} % of the training flows", fraction * 100.0)
    } else {
        "all training flows".into()
    }
}

#[cfg(test)]
mod tests {
    use super::{RunClock, flows, run_line};
    use std::time::{Duration, Instant};

    #[test]
    fn a_line_says_where_the_study_is_and_what_is_left() {
        let m = Duration::from_secs(60);
        assert_eq!(
            run_line(
                1,
                66,
                "knn, all training flows, seed 1",
                Duration::ZERO,
                None
            ),
            "study: run 1 of 66: knn, all training flows, seed 1 (0 seconds so far)"
        );
        assert_eq!(
            run_line(57, 66, "x", m * 30, Some(m * 10)),
            "study: run 57 of 66: x (30 minutes so far, about 10 minutes left)"
        );
        assert_eq!(flows(0.25), "25 % of the training flows");
        assert_eq!(flows(1.0), "all training flows");
    }

    #[test]
    fn what_is_left_counts_each_kind_at_its_own_time() {
        // Two kinds, three seeds: a b a b a b.
        let mut c = RunClock::new(vec!['a', 'b', 'a', 'b', 'a', 'b'], Instant::now());
        assert_eq!(c.left(0), None);
        c.made(0, Duration::from_secs(10));
        // b unknown yet: the mean of what was made (10 s) for it.
        assert_eq!(c.left(1), Some(Duration::from_secs(50)));
        c.made(1, Duration::from_secs(30));
        // b a b: each at its own time, not the mean (20 s).
        assert_eq!(c.left(3), Some(Duration::from_secs(70)));
        // A run found done is not made: run 2 skipped, run 3 made slower;
        // the latest time of a kind counts.
        c.made(3, Duration::from_secs(50));
        assert_eq!(c.left(5), Some(Duration::from_secs(50)));
    }
}
