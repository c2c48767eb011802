//! Visible skips for the test suite, and `TMOE_CI=1`, under which a missing
//! prerequisite fails instead of skipping.
//!
//! A test that cannot run here calls [`skip`] (optional work: nothing is
//! promised, e.g. a demo that only `tools/sim-asan.sh` runs) or [`skip_or_fail`]
//! (a prerequisite that CI promises: the shared data, nvcc's fatbins, libclang),
//! then returns:
//!
//! ```no_run
//! # fn fatbins_present() -> bool { false }
//! if !fatbins_present() {
//!     return traffic_moe::testing::skip_or_fail("this build has no fatbins (nvcc was not found)");
//! }
//! ```
//!
//! Either prints `SKIP <test>: <reason>` (the test named after libtest's thread)
//! straight to the process's stderr handle: `eprintln!` goes through libtest's
//! output capture and is never shown for a passing test, a write to
//! `std::io::stderr()` is not captured, so the line shows in `cargo test`'s
//! default output.

use std::fmt::Display;
use std::io::Write;

/// The variable `.ci/run` exports: `TMOE_CI=1` turns [`skip_or_fail`] into a
/// failure. Ours, not `CI` (which other tools set for their own reasons).
pub const CI_VAR: &str = "TMOE_CI";

/// True when `TMOE_CI=1`: every prerequisite of the suite must be present.
pub fn ci() -> bool {
    std::env::var(CI_VAR).is_ok_and(|v| v == "1")
}

/// The running test's name (libtest names each test's thread after it).
fn current_test() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("test")
        .to_string()
}

/// Writes `SKIP <what>: <reason>` past libtest's capture (one write, so lines
/// of parallel tests do not interleave).
pub fn skip_line(what: &str, reason: impl Display) {
    let line = format!("SKIP {what}: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The running test skips for `reason`, visibly; never fails. For work that is
/// optional everywhere, CI included. The caller returns afterwards.
pub fn skip(reason: impl Display) {
    skip_line(&current_test(), reason);
}

/// A prerequisite is missing: under `TMOE_CI=1` the test fails (panics) with
/// `reason`; otherwise it skips visibly like [`skip`]. The caller returns
/// afterwards.
pub fn skip_or_fail(reason: impl Display) {
    let test = current_test();
    if ci() {
        panic!(
            "{test}: {reason} ({CI_VAR}=1: CI promises this prerequisite, so its absence fails)"
        );
    }
    skip_line(&test, reason);
}

/// Runs the test `test` (its path as `--exact` takes it) again, in a child
/// process of the running test binary with `var` set to `value` and the
/// files it writes capped at 1 KiB (`ulimit -f 2`: SIGXFSZ stops it
/// part-way through a bigger write, as a kill or a full disk would). The
/// test acts as the child where `var` is set. Returns the child's status.
pub fn rerun_with_file_limit(
    test: &str,
    var: &str,
    value: &std::ffi::OsStr,
) -> std::io::Result<std::process::ExitStatus> {
    std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 2 && exec \"$@\"")
        .arg("sh")
        .arg(std::env::current_exe()?)
        .args(["--exact", test])
        .env(var, value)
        .stdout(std::process::Stdio::null())
        .status()
}
