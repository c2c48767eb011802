//! Progress bars for long work: on a terminal, a bar redrawn in place; in a
//! log (stderr sent to a file, `nohup`, a CI job), one plain line every 30
//! seconds once the work has run that long, so a long run's log still says
//! how far it is and when it will end, and short work adds nothing.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, TermLike};

/// Where [`LogLines`] writes (stderr; a buffer in tests).
pub type Sink = Arc<Mutex<dyn Write + Send>>;

/// How often a log gets a progress line.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// A bar of `len` steps on stderr, drawn as [`draw_target`] says.
pub fn new_bar(len: u64) -> ProgressBar {
    ProgressBar::with_draw_target(Some(len), draw_target())
}

/// Stderr as a terminal when it is one, else as [`LogLines`].
pub fn draw_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        let sink: Sink = Arc::new(Mutex::new(std::io::stderr()));
        ProgressDrawTarget::term_like(Box::new(LogLines::new(LOG_EVERY, sink)))
    }
}

/// A progress bar with loss and tokens/s in its message (hidden when not
/// asked for).
pub fn progress_bar(len: u64, what: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = new_bar(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// `style` with a `{rate}` key: items a second, whole (indicatif's
/// `{per_sec}` wrote `321,374.0449/s`).
pub fn with_rate(style: indicatif::ProgressStyle) -> indicatif::ProgressStyle {
    style.with_key(
        "rate",
        |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}", s.per_sec());
        },
    )
}

/// A spinner with `what` and the time so far, for work of unknown length
/// that reports nothing while it runs (one library call: a random forest's
/// fit); redrawn by a timer, so a log still gets its line every
/// [`LOG_EVERY`].
pub fn spinner(what: String) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, draw_target());
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
            .expect("valid template"),
    );
    pb.set_message(what);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A terminal for indicatif that writes each redraw as one plain line
/// (no cursor moves, no padding), at most one per `every`, the first once
/// `every` has passed since it was made.
pub struct LogLines {
    every: Duration,
    start: Instant,
    last: Mutex<Option<Instant>>,
    line: Mutex<String>,
    sink: Sink,
}

impl LogLines {
    pub fn new(every: Duration, sink: Sink) -> LogLines {
        LogLines {
            every,
            start: Instant::now(),
            last: Mutex::new(None),
            line: Mutex::new(String::new()),
            sink,
        }
    }

    fn due(&self) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let since = last.unwrap_or(self.start);
        if now.duration_since(since) < self.every {
            return false;
        }
        *last = Some(now);
        true
    }
}

impl std::fmt::Debug for LogLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLines")
            .field("every", &self.every)
            .finish()
    }
}

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        // Wide enough that indicatif never wraps a line.
        400
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.line
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    /// The end of a redraw: its text becomes one line, when one is due.
    fn flush(&self) -> std::io::Result<()> {
        let text = std::mem::take(&mut *self.line.lock().unwrap_or_else(|e| e.into_inner()));
        let text = text.replace('\r', "");
        let text = text.trim();
        if text.is_empty() || !self.due() {
            return Ok(());
        }
        let mut out = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(out, "{text}")?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> (Arc<Mutex<Vec<u8>>>, Sink) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        (buf.clone(), buf)
    }

    fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(buf.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn each_redraw_is_one_plain_line() {
        let (buf, out) = sink();
        let log = LogLines::new(Duration::ZERO, out);
        for step in ["3/10", "7/10"] {
            log.move_cursor_up(1).unwrap();
            log.write_str("\r").unwrap();
            log.clear_line().unwrap();
            log.write_str(&format!("pretrain [==> ] {step}")).unwrap();
            log.write_str("      ").unwrap();
            log.flush().unwrap();
        }
        assert_eq!(text(&buf), "pretrain [==> ] 3/10\npretrain [==> ] 7/10\n");
    }

    #[test]
    fn short_work_writes_nothing() {
        let (buf, out) = sink();
        let log = LogLines::new(Duration::from_secs(3600), out);
        log.write_str("pretrain 1/10").unwrap();
        log.flush().unwrap();
        assert_eq!(text(&buf), "");
    }

    #[test]
    fn an_indicatif_bar_draws_through_it() {
        let (buf, out) = sink();
        let target = ProgressDrawTarget::term_like(Box::new(LogLines::new(Duration::ZERO, out)));
        let pb = ProgressBar::with_draw_target(Some(10), target);
        pb.set_style(indicatif::ProgressStyle::with_template("steps {pos}/{len}").unwrap());
        pb.inc(10);
        pb.finish();
        let t = text(&buf);
        assert!(t.lines().last() == Some("steps 10/10"), "{t:?}");
    }

    #[test]
    fn the_rate_is_a_whole_number() {
        let (buf, out) = sink();
        let target = ProgressDrawTarget::term_like(Box::new(LogLines::new(Duration::ZERO, out)));
        let pb = ProgressBar::with_draw_target(Some(1_000_000), target);
        pb.set_style(with_rate(
            indicatif::ProgressStyle::with_template("{pos} flows {rate}/s").unwrap(),
        ));
        pb.inc(999_999);
        std::thread::sleep(Duration::from_millis(20));
        pb.inc(1);
        pb.finish();
        let t = text(&buf);
        let last = t.lines().last().unwrap_or_default();
        let rate = last
            .strip_prefix("1000000 flows ")
            .and_then(|r| r.strip_suffix("/s"))
            .unwrap_or_else(|| panic!("{t:?}"));
        assert!(
            !rate.is_empty() && rate.bytes().all(|b| b.is_ascii_digit()),
            "{t:?}"
        );
    }
}
