//! Ctrl-C (SIGINT) and SIGTERM in `tmoe`: a long command stops at a point
//! it can stand behind and says what it left, instead of dying silently.
//!
//! Installed by the `tmoe` binary only (`src/bin/tmoe.rs`), never by the
//! library: a program using the C API or the crate owns its own signals.
//! The training loops do not read [`flag`] themselves; they take a
//! `&AtomicBool` (`pretrain_until`, `finetune_until`, `study::run_until`),
//! so tests and other callers pass their own.
//!
//! Two ways, one per kind of command:
//! - [`stop_at_safe_point`] (pretrain, finetune, study): the first signal
//!   sets [`flag`], which the loops poll at step boundaries, and is
//!   acknowledged on stderr at once; they save what they must and return,
//!   and `main` prints the [`Interrupted`] line and exits with
//!   [`exit_status`];
//! - [`exit_at_once`] (every other command): a waiting thread prints the
//!   command's line of what was and was not written, then exits.
//!
//! In both, a second signal while the first is handled takes the default
//! action (the process ends at once): every file is renamed into place
//! whole (`atomic_file.rs`), so none is left cut short by it.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first SIGINT or SIGTERM once a handler is installed.
static STOP: AtomicBool = AtomicBool::new(false);
/// Set by a SIGTERM: the exit status then says SIGTERM, not Ctrl-C.
static TERM: AtomicBool = AtomicBool::new(false);

/// The exit status of a command stopped by `signal`: 128 + its number, as
/// a shell reports a command the signal killed (130 for Ctrl-C, 143 for
/// SIGTERM), so scripts and service managers read it alike either way.
fn status_for(signal: i32) -> i32 {
    128 + signal
}

/// The exit status of a command [`flag`] stopped: 128 + the number of the
/// signal that set it.
pub fn exit_status() -> i32 {
    status_for(if TERM.load(Ordering::SeqCst) {
        SIGTERM
    } else {
        SIGINT
    })
}

/// The flag the first signal sets (false until then, and for ever when no
/// handler was installed).
pub fn flag() -> &'static AtomicBool {
    &STOP
}

/// Registers the flag, with the default action armed behind it: the
/// default action's registration comes first, so it runs only from the
/// second signal on, once the first has set the flag.
fn register_flag() -> std::io::Result<()> {
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_default(sig, &STOP)?;
        signal_hook::flag::register(sig, &STOP)?;
    }
    signal_hook::flag::register(SIGTERM, &TERM)?;
    Ok(())
}

/// For commands whose loops poll [`flag`]: the first signal sets it and
/// is acknowledged at once on stderr (one line naming the signal); the command's
/// own line follows when it reaches the safe point. Without the first line a
/// Ctrl-C inside a piece of work that polls nothing (a probe's fit on
/// hundreds of classes can take minutes) looked ignored.
pub fn stop_at_safe_point() -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    register_flag()?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            acknowledge(signal);
        }
    });
    Ok(())
}

/// Whether [`acknowledge`] has said its line: held while it says it, so the
/// command's own line ([`say_stopped`]) always comes after it, never before.
static ACKNOWLEDGED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

/// Says [`acknowledgement`] once, whoever comes first: the waiting thread
/// as the signal arrives, or [`say_stopped`] if it got there before it.
fn acknowledge(signal: i32) {
    let mut done = ACKNOWLEDGED.lock().unwrap_or_else(|e| e.into_inner());
    if !*done {
        say(&acknowledgement(signal));
        *done = true;
    }
}

/// The line of a command [`flag`] stopped at its safe point, after the
/// acknowledgement of the signal.
pub fn say_stopped(line: &str) {
    acknowledge(if TERM.load(Ordering::SeqCst) {
        SIGTERM
    } else {
        SIGINT
    });
    say(line);
}

/// What [`stop_at_safe_point`] says when the first signal arrives.
fn acknowledgement(signal: i32) -> String {
    let (name, again) = if signal == SIGTERM {
        ("SIGTERM", "a second signal")
    } else {
        ("Ctrl-C", "Ctrl-C again")
    };
    format!(
        "{name}: stopping where the work so far can be kept (the step or piece under way ends first); {again} ends at once"
    )
}

/// For commands with no safe point to reach: on the first signal, `line`
/// (run on a waiting thread: it may look at the files and tidy this
/// process's temporary ones) says what was and was not written, and the
/// process exits with 128 + that signal's number.
pub fn exit_at_once(line: impl FnOnce() -> String + Send + 'static) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    register_flag()?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            say(&line());
            std::process::exit(status_for(signal));
        }
    });
    Ok(())
}

/// Prints `line` on stderr, on a line of its own: on a terminal, a
/// progress bar may be drawn where the cursor is (and the `^C` echo).
pub fn say(line: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    eprintln!("{line}");
}

/// A command stopped by the flag at a safe point: its line (where it
/// stopped, what it saved, how to go on), which `main` prints before
/// exiting with [`EXIT_STATUS`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// This process's command line, with `--force` left out and `--resume`
/// put at its end, quoted for a shell: the command that continues an
/// interrupted pretraining exactly (same --steps and settings).
pub fn resume_command() -> String {
    resume_command_of(std::env::args_os())
}

/// [`resume_command`] of `args` (the program first).
fn resume_command_of(args: impl IntoIterator<Item = OsString>) -> String {
    let mut args: Vec<OsString> = args
        .into_iter()
        .filter(|a| a != "--force" && a != "--resume")
        .collect();
    args.push("--resume".into());
    shell_join(&args)
}

/// `args` quoted for a shell, space separated: shell-words' POSIX quoting
/// for UTF-8 ones; the others (a path with byte 0xff) in ANSI-C quoting,
/// `$'..\xff..'`, which bash, zsh and ksh (not a plain POSIX sh) read back
/// to the same bytes. A lossy conversion printed U+FFFD in their place: the
/// command named another path.
fn shell_join(args: &[OsString]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| match a.to_str() {
            Some(s) => shell_words::quote(s).into_owned(),
            // On Unix, an OsStr's encoded bytes are its raw bytes.
            None => ansi_c_quoted(a.as_encoded_bytes()),
        })
        .collect();
    quoted.join(" ")
}

/// `bytes` as `$'...'`: printable ASCII as itself (`'` and `\` escaped),
/// every other byte as `\xHH` (at most two hex digits are read, so a
/// digit after one stays itself).
fn ansi_c_quoted(bytes: &[u8]) -> String {
    let mut q = String::from("$'");
    for &b in bytes {
        match b {
            b'\'' | b'\\' => {
                q.push('\\');
                q.push(b as char);
            }
            0x20..=0x7e => q.push(b as char),
            _ => q.push_str(&format!("\\x{b:02x}")),
        }
    }
    q.push('\'');
    q
}

#[cfg(all(test, unix))]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    /// The resume command, run by bash, gives the program the very bytes
    /// of each argument back (bash prints its argv, NUL-separated): a path
    /// with bytes that are not UTF-8 came back with U+FFFD in their place,
    /// another path. UTF-8 arguments keep shell-words' plain quoting.
    #[test]
    fn the_resume_command_gives_bash_every_argument_s_bytes_back() {
        let bytes: [&[u8]; 7] = [
            b"tmoe",
            b"pretrain",
            b"--out",
            b"runs/caf\xe9 \xff1'x\\y\x01\xc3",
            "donn\u{e9}es d'\u{e9}t\u{e9}".as_bytes(),
            b"--force",
            b"",
        ];
        let args: Vec<OsString> = bytes
            .iter()
            .map(|b| OsString::from_vec(b.to_vec()))
            .collect();
        let command = super::resume_command_of(args);
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("printf '%s\\0' {command}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {out:?}");
        // Each argument but --force, then --resume, each ended by a NUL.
        let mut kept: Vec<&[u8]> = bytes.into_iter().filter(|b| b != b"--force").collect();
        kept.push(b"--resume");
        let want: Vec<u8> = kept.iter().flat_map(|b| [*b, b"\0"].concat()).collect();
        assert_eq!(out.stdout, want, "{command}");
        // Plain POSIX quoting where the argument is UTF-8.
        assert!(
            command.starts_with("tmoe pretrain --out $'runs/caf\\xe9 \\xff1\\'x\\\\y\\x01\\xc3' "),
            "{command}"
        );
        assert!(
            command.contains(&*shell_words::quote("donn\u{e9}es d'\u{e9}t\u{e9}")),
            "{command}"
        );
    }
}
