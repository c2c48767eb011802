//! The main path's commands one after another as a new user runs them
//! (synth -> tokenize -> pretrain -> finetune, demo, model-info, bench
//! model), and what each says when it meets a file the step before did not
//! make: every message names the file and what to do, and no output
//! contradicts itself.

mod common;

use common::tmoe_outcome as run;

#[test]
fn a_demo_out_that_is_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine\n").unwrap();
    for (out, says) in [
        ("notes.txt", "error: notes.txt exists and is not a folder"),
        ("notes.txt/sub", "error: creating notes.txt/sub: "),
    ] {
        let (ok, text) = run(dir.path(), &["demo", "--out", out, "--quiet"]);
        assert!(!ok, "{text}");
        assert!(text.contains(says), "{text}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine\n"
    );
}
