//! `tmoe classify` run as a binary on a small trained classifier: the
//! summary counts skipped frames by reason, a repeated capture is read
//! once, and wrong arguments get an error that says what is wrong.

mod common;
mod tiny_train;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};

use tiny_train::classifier::{Fixture, SEC, fixture};
use traffic_moe::traffic::capture::pcap_writer::{PcapWriter, eth_ipv4, ethernet, udp};
use traffic_moe::traffic::types::PROTO_UDP;

/// `tmoe classify --checkpoint CKPT --data DATA --quiet args`.
fn classify(f: &Fixture, args: &[&Path], extra: &[&str]) -> Output {
    classify_with(f, &f.ckpt, args, extra)
}

/// [`classify`] with another `--checkpoint`.
fn classify_with(f: &Fixture, checkpoint: &Path, args: &[&Path], extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .arg("classify")
        .arg("--checkpoint")
        .arg(checkpoint)
        .arg("--data")
        .arg(&f.data)
        .arg("--quiet")
        .args(args)
        .args(extra)
        .output()
        .unwrap()
}

/// A DNS-like flow of four packets, the last cut by the snaplen, among two
/// ARP frames.
fn mixed_capture(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(std::io::BufWriter::new(file), 1).unwrap();
    let (cli, srv) = (Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(192, 168, 1, 53));
    let t = 1_700_000_000 * SEC;
    let arp = ethernet([2; 6], [0xff; 6], &[], 0x0806, &[0u8; 28]);
    w.write_frame(t, &arp).unwrap();
    for i in 0..4u64 {
        let (s, d, sp, dp) = if i % 2 == 0 {
            (cli, srv, 40_000, 53)
        } else {
            (srv, cli, 53, 40_000)
        };
        let frame = eth_ipv4(
            s,
            d,
            PROTO_UDP,
            &udp(sp, dp, b"\x12\x34\x01\0\0\x01qx.example.com"),
        );
        if i == 3 {
            w.write_frame_truncated(
                t + i * 20_000_000,
                &frame[..frame.len() - 3],
                frame.len() as u32,
            )
            .unwrap();
        } else {
            w.write_frame(t + i * 20_000_000, &frame).unwrap();
        }
    }
    w.write_frame(t + 100_000_000, &arp).unwrap();
}

#[test]
fn summary_counts_skips_by_reason_and_a_repeated_capture_is_read_once() {
    let f = fixture();
    let cap = f.root.join("mixed.pcap");
    mixed_capture(&cap);
    // Twice as given, and once more as another spelling of it.
    let again = f.caps.join("..").join("mixed.pcap");
    let out = classify(&f, &[&cap, &cap, &again], &[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        1 + 1,
        "header + one flow:\n{stdout}"
    );
    assert!(
        stderr.contains("classified 1 flow from 1 capture in"),
        "{stderr}"
    );
    assert!(stderr.contains("skipped 2 frames: ARP 2;"), "{stderr}");
    assert!(
        stderr.contains("used with care: 1 truncated packets (snaplen), 0 first IP fragments"),
        "{stderr}"
    );
}

#[test]
fn wrong_arguments_are_refused_saying_what_is_expected() {
    let f = fixture();
    let dns = f.caps.join("dns");
    // A folder without a classifier as --checkpoint (a run folder stands
    // for its classifier.safetensors: `tests/pipeline_cli.rs`).
    let not_a_run = f.caps.as_path();
    let out = classify_with(&f, not_a_run, &[&dns], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}: is a folder; expected a checkpoint file",
            not_a_run.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("os error"), "{stderr}");
    // --early without --stream.
    let out = classify(&f, &[&dns], &["--early"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--early needs --stream"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_folder_without_captures_writes_nothing_to_stdout() {
    let f = fixture();
    let empty = f.root.join("emptyd");
    std::fs::create_dir_all(&empty).unwrap();
    let bad = f.root.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("x.pcap"), "not a capture").unwrap();
    for (input, why) in [
        (
            &empty,
            format!("no capture to classify in {}", empty.display()),
        ),
        (&bad, "none of the given captures could be read".to_string()),
    ] {
        let out = classify(&f, &[input], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&why), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn a_checkpoint_that_is_not_a_plain_file_is_named_and_refused() {
    let f = fixture();
    let dns = f.caps.join("dns");
    // `--checkpoint /dev/null` (here a link to it: only read) said "No such
    // device"; a pipe was opened and waited on for a writer for ever.
    let null = f.root.join("null.safetensors");
    std::os::unix::fs::symlink("/dev/null", &null).unwrap();
    let pipe = f.root.join("pipe.safetensors");
    assert!(
        Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap()
            .success()
    );
    for ckpt in [&null, &pipe] {
        let out = classify_with(&f, ckpt, &[&dns], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(&format!("{}: not a regular file", ckpt.display())),
            "{stderr}"
        );
        assert!(!stderr.contains("os error"), "{stderr}");
    }
}

#[test]
fn an_out_that_is_one_of_the_captures_is_refused_and_kept() {
    let f = fixture();
    let cap = f.caps.join("dns").join("dns0.pcap");
    let before = std::fs::read(&cap).unwrap();
    // Given by name, and found in a folder under another spelling: --out
    // was emptied before the captures were read, then (none readable)
    // removed.
    let other = f.caps.join("web").join("..").join("dns").join("dns0.pcap");
    for (input, out) in [(&cap, &cap), (&f.caps, &other)] {
        let run = classify(
            &f,
            &[input.as_path()],
            &["--out", out.to_str().unwrap(), "--force"],
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{stderr}");
        assert!(stderr.contains("is one of the captures given"), "{stderr}");
        assert_eq!(std::fs::read(&cap).unwrap(), before, "{stderr}");
    }
}

#[test]
fn an_out_that_is_the_checkpoint_or_the_vocabulary_is_refused_and_kept() {
    let f = fixture();
    // --out --force over a file the run reads: emptied before it was read,
    // then removed by the failed run (the checkpoint was lost).
    let vocab = f.data.join("vocab.txt");
    let ckpt_other = f
        .ckpt
        .parent()
        .unwrap()
        .join(".")
        .join("classifier.safetensors");
    for (out, says) in [
        (
            ckpt_other.clone(),
            format!("(--checkpoint: {})", f.ckpt.display()),
        ),
        (vocab.clone(), format!("(--data: {})", vocab.display())),
    ] {
        let (ckpt_before, vocab_before) = (
            std::fs::read(&f.ckpt).unwrap(),
            std::fs::read(&vocab).unwrap(),
        );
        let run = classify(
            &f,
            &[f.caps.as_path()],
            &["--out", out.to_str().unwrap(), "--force"],
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "error: --out {} is a file this run reads {says}; choose another --out",
                out.display()
            )),
            "{stderr}"
        );
        assert_eq!(std::fs::read(&f.ckpt).unwrap(), ckpt_before, "{stderr}");
        assert_eq!(std::fs::read(&vocab).unwrap(), vocab_before, "{stderr}");
    }
}

#[test]
fn a_capture_from_a_pipe_is_classified() {
    let f = fixture();
    // `tmoe classify <(zcat x.pcap.gz)` names a pipe (/dev/fd/63): it was
    // skipped as "no such file or folder". Here a FIFO fed by a thread.
    let cap = f.caps.join("dns").join("dns0.pcap");
    let fifo = f.root.join("capture fifo");
    let writer = common::fifo_with(&fifo, std::fs::read(&cap).unwrap());
    let from_pipe = classify(&f, &[&fifo], &[]);
    let stderr = String::from_utf8_lossy(&from_pipe.stderr);
    assert!(from_pipe.status.success(), "{stderr}");
    writer.join().unwrap();
    let from_file = classify(&f, &[&cap], &[]);
    let rows = |o: &Output| -> Vec<String> {
        // The rows without their first column, the file name.
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .map(|l| l.split_once(',').unwrap().1.to_string())
            .collect()
    };
    assert!(!rows(&from_file).is_empty());
    assert_eq!(rows(&from_pipe), rows(&from_file), "{stderr}");
}

#[test]
fn a_full_disk_is_named_by_the_out_file() {
    let f = fixture();
    // --out a link to /dev/full (only written to): "writing the results:
    // No space left on device" named no file.
    let full = f.root.join("verdicts.csv");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    let extra = ["--out", full.to_str().unwrap(), "--force"];
    let says = format!("writing {}: No space left on device", full.display());
    // More rows than the output's buffer holds: the error comes from a row.
    let out = classify(&f, &[&f.caps], &extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&says), "{stderr}");
    // --stream flushes after each batch.
    let out = Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .arg("classify")
        .arg("--checkpoint")
        .arg(&f.ckpt)
        .arg("--data")
        .arg(&f.data)
        .args(["--quiet", "--stream"])
        .args(extra)
        .stdin(std::fs::File::open(f.caps.join("dns").join("dns0.pcap")).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&says), "{stderr}");
    assert!(std::fs::symlink_metadata(&full).is_ok());
}

/// A checkpoint whose weights are NaN (a diverged run) is refused, naming
/// it: every flow got the first class with a probability of NaN (CSV; null
/// in JSON lines), written as verdicts, and the run succeeded.
#[test]
fn a_checkpoint_with_non_finite_outputs_gives_no_verdicts() {
    let f = fixture();
    let (_, mut params, meta) = traffic_moe::model::checkpoint::load_classifier(&f.ckpt).unwrap();
    for p in params.iter_mut().filter(|p| p.name.contains("head")) {
        p.value.fill(f32::NAN);
    }
    let nan = f.root.join("nan.safetensors");
    traffic_moe::model::checkpoint::save(&nan, &meta, &params, true).unwrap();
    for format in ["csv", "jsonl"] {
        let out = classify_with(&f, &nan, &[&f.caps], &["--format", format]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(1), "{format}: {stderr}\n{stdout}");
        assert!(
            stderr.contains("nan.safetensors: the model's outputs are not finite for"),
            "{stderr}"
        );
        assert!(
            !stdout.contains("NaN") && !stdout.contains("null"),
            "{stdout}"
        );
    }
}

/// `--stream`'s summary counts what the file path's does: skipped frames
/// by reason and the packets used with care (a truncated packet was not
/// reported in the stream, only from a file).
#[test]
fn the_stream_summary_counts_truncated_packets_as_the_file_path_does() {
    let f = fixture();
    let cap = f.root.join("mixed.pcap");
    mixed_capture(&cap);
    let from_file = classify(&f, &[&cap], &[]);
    let from_stdin = Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .args(["classify", "--stream", "--quiet", "--checkpoint"])
        .arg(&f.ckpt)
        .arg("--data")
        .arg(&f.data)
        .stdin(std::fs::File::open(&cap).unwrap())
        .output()
        .unwrap();
    for out in [&from_file, &from_stdin] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("skipped 2 frames: ARP 2;"), "{stderr}");
        assert!(
            stderr.contains("used with care: 1 truncated packets (snaplen), 0 first IP fragments"),
            "{stderr}"
        );
    }
}

/// A run killed while writing its verdicts (here by SIGXFSZ: `ulimit -f`
/// caps the size of any file it writes, as a full disk would) left the
/// rows so far under `--out`'s name, a list cut short that a reader took
/// for the whole, and the next run refused to replace it; with `--force`
/// the earlier file was already cut. Now they are renamed into place once
/// all are written.
#[test]
fn a_run_killed_while_writing_leaves_no_list_cut_short() {
    let f = fixture();
    let whole = f.root.join("whole.csv");
    let out = classify(&f, &[&f.caps], &["--out", whole.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read(&whole).unwrap();
    assert!(text.len() > 4096, "{} bytes", text.len());
    let killed = |out: &Path, extra: &[&str]| {
        let status = Command::new("sh")
            .arg("-c")
            .arg("ulimit -f 2 && exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_tmoe"))
            .arg("classify")
            .arg("--checkpoint")
            .arg(&f.ckpt)
            .arg("--data")
            .arg(&f.data)
            .arg("--quiet")
            .arg(&f.caps)
            .arg("--out")
            .arg(out)
            .args(extra)
            .status()
            .unwrap();
        assert!(!status.success(), "{status:?}");
    };
    let cut = f.root.join("cut.csv");
    killed(&cut, &[]);
    assert!(!cut.exists(), "a killed run left {}", cut.display());
    let out = classify(&f, &[&f.caps], &["--out", cut.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&cut).unwrap(), text);
    // --force replaces the earlier file only with a whole one.
    killed(&whole, &["--force"]);
    assert_eq!(std::fs::read(&whole).unwrap(), text);
}
