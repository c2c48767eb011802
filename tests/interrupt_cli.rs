//! Ctrl-C (a real SIGINT, sent with `kill -INT`) in a long `tmoe` command:
//! pretraining stops at its step with a checkpoint that `--resume`
//! continues exactly, fine-tuning keeps its best epoch (marked
//! unfinished) and LP-FT's head fit nothing, a study stops (in its
//! pretraining or its dataset build) and continues, tokenize and classify
//! say what they left; each says so in one line and
//! exits with 130 (SIGTERM alike, with 143). No timing is assumed: each test waits for a file the run
//! writes (polled, with a generous limit) before it sends the signal.

mod common;

use common::{synth_captures, synth_dataset, tmoe};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Starts `tmoe args` in `dir`, its output kept.
fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `ready` holds (a loaded machine may take minutes), then
/// sends the child SIGINT as Ctrl-C would, and returns its output.
fn interrupt_when(child: Child, ready: impl Fn() -> bool) -> Output {
    signal_when(child, "INT", ready)
}

/// [`interrupt_when`] with another signal (`kill -SIGNAL`).
fn signal_when(mut child: Child, signal: &str, ready: impl Fn() -> bool) -> Output {
    let limit = Instant::now() + Duration::from_secs(900);
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "tmoe ended ({status}) before it was interrupted:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if Instant::now() > limit {
            child.kill().unwrap();
            panic!("tmoe did not get going in 900 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    child.wait_with_output().unwrap()
}

/// Lines in `path` (none when it is not there yet).
fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// A checkpoint's tensors (name, dtype, shape, bytes) and metadata, in an
/// order of their own (the file's metadata map is written in any order).
type Contents = (
    Vec<(String, String, Vec<usize>, Vec<u8>)>,
    Vec<(String, String)>,
);

fn contents(path: &Path) -> Contents {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let shape = v.shape().to_vec();
            (name, format!("{:?}", v.dtype()), shape, v.data().to_vec())
        })
        .collect();
    tensors.sort();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta: Vec<_> = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    meta.sort();
    (tensors, meta)
}

/// The first Ctrl-C ends a pretraining at the end of its step, with the
/// checkpoint and optimizer state of that step, one line saying so and
/// the command that continues it, and status 130; that command (here told
/// to stop two steps later) gives the very checkpoint an uninterrupted run
/// gives. The old `tmoe` had no handler: Ctrl-C killed it (no status,
/// nothing saved since the last --save-every).
#[test]
fn ctrl_c_in_pretrain_saves_its_step_and_resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth_dataset(d, "6", "1");
    // --steps far beyond what a test runs: only the signal ends it.
    let args = [
        "pretrain", "--data", "data", "--out", "pt", "--steps", "100000", "--warmup", "10",
        "--batch", "4", "--quiet",
    ];
    let log = d.join("pt/pretrain_log.jsonl");
    let out = interrupt_when(spawn(d, &args), || lines(&log) >= 1);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{}: {stderr}", out.status);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("interrupted at step "))
        .unwrap_or_else(|| panic!("no interruption line: {stderr}"));
    let step: u64 = line["interrupted at step ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (said, command) = line.split_once("; continue with: ").unwrap();
    assert_eq!(
        said,
        format!("interrupted at step {step} of 100000: checkpoint and optimizer state saved in pt")
    );
    let mut resume = shell_words::split(command).unwrap();
    assert_eq!(resume[0], env!("CARGO_BIN_EXE_tmoe"), "{line}");
    assert_eq!(resume[1..], [&args[..], &["--resume"]].concat(), "{line}");
    // The checkpoint is of that step, and the log stops there too.
    let ckpt = d.join("pt/model.safetensors");
    let meta = traffic_moe::model::checkpoint::read_meta(&ckpt).unwrap();
    assert_eq!(meta.step, step, "{line}");
    assert_eq!(lines(&log) as u64, step, "{line}");

    // Continued as it said, two steps on; and a run never interrupted.
    let until = (step + 2).to_string();
    resume.extend(["--stop-after".into(), until.clone()]);
    let resume: Vec<&str> = resume[1..].iter().map(String::as_str).collect();
    let text = tmoe(d, &resume);
    assert!(
        text.contains(&format!("resumed pt/model.safetensors at step {step}")),
        "{text}"
    );
    let mut whole = args.to_vec();
    whole[4] = "whole";
    whole.extend(["--stop-after", &until]);
    tmoe(d, &whole);
    for file in ["model.safetensors", "model.optim.safetensors"] {
        let (a, b) = (
            contents(&d.join("pt").join(file)),
            contents(&d.join("whole").join(file)),
        );
        assert!(!a.0.is_empty(), "{file}");
        assert!(a == b, "{file} differs from the uninterrupted run's");
    }
}

/// The first Ctrl-C in a fine-tuning abandons the epoch under way and
/// leaves the best finished epoch's checkpoint, still marked unfinished
/// (eval and classify warn of it), with one line saying so and status 130.
#[test]
fn ctrl_c_in_finetune_leaves_its_best_epoch_marked_unfinished() {
    finetune_stopped_by("INT", 130);
}

/// SIGTERM (a service manager's stop, `kill`) stops a fine-tuning as
/// Ctrl-C does, with status 143 (128 + SIGTERM, as a shell reports a
/// command SIGTERM ended; it said 130, Ctrl-C's, before).
#[test]
fn sigterm_in_finetune_stops_it_alike_with_its_own_status() {
    finetune_stopped_by("TERM", 143);
}

fn finetune_stopped_by(signal: &str, status: i32) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth_dataset(d, "6", "1");
    let args = [
        "finetune",
        "--data",
        "data",
        "--from-scratch",
        "--out",
        "ft",
        "--epochs",
        "1000",
        "--patience",
        "1000",
        "--batch",
        "4",
        "--quiet",
    ];
    let log = d.join("ft/finetune_log.jsonl");
    let out = signal_when(spawn(d, &args), signal, || lines(&log) >= 1);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(status), "{}: {stderr}", out.status);
    let ckpt = d.join("ft/classifier.safetensors");
    let meta = traffic_moe::model::checkpoint::read_meta(&ckpt).unwrap();
    // Marked as the run left it: its best epoch, of the 1000 asked for.
    let mark = &meta.extra[traffic_moe::model::checkpoint::UNFINISHED_KEY];
    let best: usize = mark
        .strip_prefix("epoch ")
        .and_then(|m| m.strip_suffix(" of 1000"))
        .unwrap_or_else(|| panic!("{mark:?}"))
        .parse()
        .unwrap();
    assert!(best >= 1 && best <= lines(&log), "{mark}: {stderr}");
    // Stopped in the epoch after the last one logged.
    let epoch = lines(&log) + 1;
    let said = format!(
        "interrupted in epoch {epoch} of 1000: the best checkpoint so far (epoch {best}, marked unfinished) is in ft/classifier.safetensors"
    );
    assert!(stderr.lines().any(|l| l == said), "{said}\n{stderr}");
    // The signal was acknowledged at once, before that line, by its name.
    let ack = match signal {
        "TERM" => "SIGTERM: stopping where the work so far can be kept",
        _ => "Ctrl-C: stopping where the work so far can be kept",
    };
    let acked = stderr.lines().position(|l| l.starts_with(ack));
    let stopped = stderr.lines().position(|l| l == said);
    assert!(
        matches!((acked, stopped), (Some(a), Some(s)) if a < s),
        "{ack}\n{stderr}"
    );
}

/// The first Ctrl-C in LP-FT's head fit (`--head-epochs`, here more than a
/// test could wait for) stops it there: no epoch had finished, so nothing is
/// saved, and the line says so, with 130. The old head fit polled nothing:
/// it ran to its end (minutes here), saved epoch 0's checkpoint and stopped
/// only at epoch 1's first step.
#[test]
fn ctrl_c_in_the_head_fit_saves_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth_dataset(d, "6", "1");
    let args = [
        "finetune",
        "--data",
        "data",
        "--from-scratch",
        "--out",
        "ft",
        "--epochs",
        "1000",
        "--head-epochs",
        "100000",
        "--batch",
        "4",
        "--quiet",
    ];
    // The run folder is made just before the head fit begins.
    let ft = d.join("ft");
    let out = interrupt_when(spawn(d, &args), || ft.exists());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{}: {stderr}", out.status);
    let said = "interrupted in the head fit (--head-epochs), before epoch 1 of 1000: no epoch had \
                finished, nothing was saved";
    assert!(stderr.lines().any(|l| l == said), "{said}\n{stderr}");
    assert!(
        common::names_in(&ft).is_empty(),
        "{:?}",
        common::names_in(&ft)
    );
}

/// Ctrl-C while tokenize waits on its capture (a FIFO nobody writes yet)
/// ends it with status 130 and a line saying nothing was written.
#[test]
fn ctrl_c_in_tokenize_says_what_it_left() {
    tokenize_stopped_by("INT", 130);
}

/// SIGTERM in a command that stops at once: the same line, status 143.
#[test]
fn sigterm_in_tokenize_says_what_it_left_with_its_own_status() {
    tokenize_stopped_by("TERM", 143);
}

fn tokenize_stopped_by(signal: &str, status: i32) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("cap.pcap");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let child = spawn(
        d,
        &[
            "tokenize", "cap.pcap", "--out", "data", "--labels", "prefix", "--quiet",
        ],
    );
    // Opening the FIFO for writing waits for tokenize to open it: by then
    // it is reading, its handler long installed. Held open, unwritten.
    let writer = std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo));
    let out = signal_when(child, signal, || writer.is_finished());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(status), "{}: {stderr}", out.status);
    assert!(
        stderr
            .lines()
            .any(|l| l == "interrupted: nothing was written to data"),
        "{stderr}"
    );
}

/// Ctrl-C in a study stops inside its run (here the row's pretraining,
/// which saves its step), says how many runs are done and that the same
/// command continues, with status 130; the same command resumes that
/// pretraining from its step rather than starting it afresh.
#[test]
fn ctrl_c_in_study_stops_and_the_same_command_continues() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth_captures(d, "6", "1");
    let args = [
        "study",
        "caps",
        "--out",
        "st",
        "--rows",
        "moe-pretrained",
        "--seeds",
        "1",
        "--pretrain-steps",
        "100000",
        "--batch",
        "4",
        "--seq-len",
        "32",
        "--vocab-size",
        "600",
        "--quiet",
    ];
    let log = d.join("st/pretrain-moe-s1/pretrain_log.jsonl");
    let out = interrupt_when(spawn(d, &args), || lines(&log) >= 1);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{}: {stderr}", out.status);
    let said = "interrupted: 0 study runs are done in st (0 of them now), each stored as it \
                ended; no report yet. Run the same command again to continue: it skips the \
                finished runs (and resumes an interrupted pretraining)";
    assert!(stderr.lines().any(|l| l == said), "{stderr}");
    assert!(!d.join("st/report.md").exists());
    let ckpt = d.join("st/pretrain-moe-s1/model.safetensors");
    let step = traffic_moe::model::checkpoint::read_meta(&ckpt)
        .unwrap()
        .step;
    assert_eq!(lines(&log) as u64, step);

    // Again: it goes on from that step (and is stopped once it has).
    let out = interrupt_when(spawn(d, &args), || lines(&log) as u64 > step);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{}: {stderr}", out.status);
    assert!(
        stderr.contains(&format!(
            "resumed st/pretrain-moe-s1/model.safetensors at step {step}"
        )),
        "{stderr}"
    );
    assert!(
        traffic_moe::model::checkpoint::read_meta(&ckpt)
            .unwrap()
            .step
            > step
    );
}

/// Ctrl-C while a study tokenizes its captures (here while it reads one,
/// a FIFO held open, which is filled only once the signal is sent) stops
/// it there with 130: no dataset and no run is recorded as done, and the
/// same command, once the capture is a file, makes the report an
/// uninterrupted study makes. The old build polled nothing: the study
/// built the dataset, ran its row, wrote the report and ended with 0.
#[test]
fn ctrl_c_in_a_study_s_dataset_build_records_nothing_and_it_resumes() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth_captures(d, "6", "1");
    let mut captures: Vec<String> = common::names_in(&d.join("caps"))
        .into_iter()
        .flat_map(|class| {
            common::names_in(&d.join("caps").join(&class))
                .into_iter()
                .map(move |f| format!("caps/{class}/{f}"))
        })
        .collect();
    captures.sort();
    let study = |out: &'static str| -> Vec<String> {
        let mut a: Vec<String> = vec!["study".into()];
        a.extend(captures.iter().cloned());
        for x in [
            "--labels",
            "prefix",
            "--split-by",
            "flow",
            "--out",
            out,
            "--rows",
            "knn",
            "--seeds",
            "1",
            "--quiet",
        ] {
            a.push(x.into());
        }
        a
    };
    let (st, whole) = (study("st"), study("whole"));
    let st: Vec<&str> = st.iter().map(String::as_str).collect();
    let whole: Vec<&str> = whole.iter().map(String::as_str).collect();
    // The last capture becomes a FIFO, its bytes held back.
    let late = d.join(&captures[captures.len() - 1]);
    let bytes = std::fs::read(&late).unwrap();
    std::fs::remove_file(&late).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(&late)
            .status()
            .unwrap()
            .success()
    );
    let (opened_tx, opened) = std::sync::mpsc::channel();
    let (sent, sent_rx) = std::sync::mpsc::channel::<()>();
    let fifo = late.clone();
    let held = bytes.clone();
    // Opening for writing waits for the study to open it to read.
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        opened_tx.send(()).unwrap();
        sent_rx.recv().unwrap();
        f.write_all(&held).unwrap();
    });
    let child = spawn(d, &st);
    let limit = Instant::now() + Duration::from_secs(900);
    while opened.try_recv().is_err() {
        assert!(Instant::now() < limit, "the study did not open its capture");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    sent.send(()).unwrap();
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{}: {stderr}", out.status);
    let said = "interrupted: 0 study runs are done in st (0 of them now), each stored as it \
                ended; no report yet. Run the same command again to continue: it skips the \
                finished runs (and resumes an interrupted pretraining)";
    assert!(stderr.lines().any(|l| l == said), "{stderr}");
    // Nothing recorded as done: no dataset.json (nor the partial build's
    // files), no run, no report.
    assert_eq!(common::names_in(&d.join("st")), ["runs", "study.json"]);
    assert!(common::names_in(&d.join("st/runs")).is_empty());

    // The capture a file again: the same command, and one never stopped.
    std::fs::remove_file(&late).unwrap();
    std::fs::write(&late, &bytes).unwrap();
    tmoe(d, &st);
    tmoe(d, &whole);
    // Alike but for the last line's wall time ("in 0 s" against "in 1 s"
    // failed a CI run whose two calls straddled half a second).
    let report = |out: &str| {
        let text = std::fs::read_to_string(d.join(out).join("report.md")).unwrap();
        let (body, timing) = text.rsplit_once("\nThis call ran ").unwrap();
        let counts = timing.rsplit_once(", in ").unwrap().0.to_string();
        (body.to_string(), counts)
    };
    assert_eq!(report("st"), report("whole"));
    // The run's result alike, but for its wall time.
    let run = |out: &str| {
        let text = std::fs::read_to_string(d.join(out).join("runs/knn-s1.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        v
    };
    assert_eq!(run("st"), run("whole"));
}

/// Ctrl-C while classify waits on its capture (a FIFO held open, unwritten)
/// leaves no `--out` (its verdicts go to a temporary file renamed into
/// place only at the end; that file is removed), and says so, with 130.
#[test]
fn ctrl_c_in_classify_writes_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth_dataset(d, "6", "1");
    tmoe(
        d,
        &[
            "finetune",
            "--data",
            "data",
            "--from-scratch",
            "--out",
            "ft",
            "--epochs",
            "1",
            "--quiet",
        ],
    );
    let fifo = d.join("cap.pcap");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let child = spawn(
        d,
        &[
            "classify",
            "--checkpoint",
            "ft/classifier.safetensors",
            "--data",
            "data",
            "cap.pcap",
            "--out",
            "v.csv",
        ],
    );
    let tmp = d.join(format!("v.csv.tmp{}", child.id()));
    let writer = std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo));
    let out = interrupt_when(child, || writer.is_finished() && tmp.exists());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{}: {stderr}", out.status);
    let said = "interrupted: nothing was written to v.csv (the verdicts are renamed into place \
                only once all are written)";
    assert!(stderr.lines().any(|l| l == said), "{stderr}");
    assert_eq!(common::names_in(d), ["cap.pcap", "caps", "data", "ft"]);
}

/// What tokenize's line says of a folder a build left part-way (its
/// vocabulary and a shard, no dataset.json), and of a finished one.
#[test]
fn tokenize_s_line_names_a_partial_dataset() {
    use traffic_moe::cli::tokenize::interrupted_line;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    std::fs::create_dir(&out).unwrap();
    for name in ["vocab.txt", "train.tmoe.tmp"] {
        std::fs::write(out.join(name), "x").unwrap();
    }
    assert_eq!(
        interrupted_line(&out),
        format!(
            "interrupted: {} holds a partial dataset (train.tmoe.tmp, vocab.txt) without \
             dataset.json, which is written last: nothing reads it as a dataset; run tokenize \
             again with --force to rebuild it",
            out.display()
        )
    );
    std::fs::write(out.join("dataset.json"), "{}").unwrap();
    assert_eq!(
        interrupted_line(&out),
        format!(
            "interrupted: {} was already written, the dataset is whole",
            out.join("dataset.json").display()
        )
    );
}

/// Ctrl-C in a demo (here while it pretrains) ends it with status 130 and a
/// line saying its folder holds the steps done and how to start over.
#[test]
fn ctrl_c_in_demo_says_what_its_folder_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("dm/pretrain/pretrain_log.jsonl");
    let out = interrupt_when(spawn(d, &["demo", "--out", "dm", "--quiet"]), || {
        lines(&log) >= 1
    });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{}: {stderr}", out.status);
    let said = "interrupted: dm holds the demo's steps finished so far (their files whole); run \
                it again with --force to start over";
    assert!(stderr.lines().any(|l| l == said), "{stderr}");
}
