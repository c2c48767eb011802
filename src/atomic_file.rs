//! Files that appear whole or not at all under their real name.

use std::io::Write;
use std::path::Path;

/// Writes `path` through `tmp` (a `buffer`-byte writer given to `write`,
/// flushed, then renamed into place): a full disk leaves no file cut short
/// under the real name, and the partial temporary one is removed rather
/// than left to fill the disk. The shards, the packet metadata beside
/// them and the dataset's `dataset.json` are written this way (and, through
/// [`write_whole`], `vocab.txt`, a study's settings, results and report,
/// eval's report, the fine-tuning logs, `dump-logits` and `bench` output).
pub(crate) fn write_then_rename(
    path: &Path,
    tmp: &Path,
    buffer: usize,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let f = std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = (|| -> anyhow::Result<()> {
        let mut w = std::io::BufWriter::with_capacity(buffer, f);
        write(&mut w)?;
        w.flush()
            .with_context(|| format!("writing {}", tmp.display()))?;
        // On the disk before the rename: after a crash (power loss, a
        // reboot) the rename could otherwise expose an empty file.
        w.get_ref()
            .sync_all()
            .with_context(|| format!("writing {}", tmp.display()))?;
        drop(w);
        std::fs::rename(tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// `PATH.tmp<pid>`: the temporary name a file is written under beside its
/// real one (this process's own: `--out` may be any name, and a user's
/// `PATH.tmp` is not ours to replace). Those a killed run left beside the
/// same file are removed first ([`remove_stale_tmps`]).
pub(crate) fn tmp_beside(path: &Path) -> std::path::PathBuf {
    let name = path.file_name().unwrap_or_default();
    remove_stale_tmps(path, name, std::ffi::OsStr::new(""));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    tmp.into()
}

/// Removes the temporary files `STEM.tmp<pid>SUFFIX` beside `path` whose
/// process is gone: what a run killed mid-write (`kill -9`, the OOM
/// killer, a power cut) left, which no command reads and which would stay
/// for ever (a base checkpoint's is 1.4 GB). Only regular files, and only
/// where the process is known gone (Linux: no `/proc/<pid>`); a pid that
/// lives again keeps its file (a run in another pid namespace writing the
/// same file at the same moment would lose its own). Best effort: a failure
/// to list or remove is no reason to fail the write.
pub(crate) fn remove_stale_tmps(path: &Path, stem: &std::ffi::OsStr, suffix: &std::ffi::OsStr) {
    // Without a mounted /proc every process would look gone.
    if !cfg!(target_os = "linux") || !Path::new("/proc/self").exists() {
        return;
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (Some(stem), Some(suffix)) = (stem.to_str(), suffix.to_str()) else {
        return; // a name that is not UTF-8: left alone
    };
    let prefix = format!("{stem}.tmp");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(suffix))
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let gone = pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists();
        if gone && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `bytes` to `path` through [`tmp_beside`] (see
/// [`write_then_rename`]): a killed run or a full disk leaves the earlier
/// file, or none, under the real name, never one cut short.
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    write_then_rename(path, &tmp_beside(path), 0, |w| {
        w.write_all(bytes)
            .with_context(|| format!("writing {}", path.display()))
    })
}

/// Whether an output the user names must be written through rather than
/// renamed into place: something is there that is not a plain file
/// (`/dev/stdout`, a link, a pipe), which a rename would replace itself.
pub(crate) fn written_through(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file())
}

/// [`write_whole`] for a file the user names (`--out`), or straight
/// through where [`written_through`] says so.
pub(crate) fn write_out(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    if written_through(path) {
        return std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()));
    }
    write_whole(path, bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::write_out;

    /// Set in the child that [`a_killed_write_keeps_the_earlier_file`]
    /// starts: the file it writes.
    const CHILD: &str = "TMOE_WRITE_OUT_CHILD";

    /// `dump-logits --out X --force` and `bench --out X` wrote X in place: a
    /// run killed mid-write (here by SIGXFSZ: `ulimit -f` caps the size of
    /// a file it writes, as a full disk would) left it cut short.
    #[test]
    fn a_killed_write_keeps_the_earlier_file() {
        if let Some(path) = std::env::var_os(CHILD) {
            let _ = write_out(std::path::Path::new(&path), &[b'y'; 4096]);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("logits.json");
        write_out(&out, b"earlier\n").unwrap();
        let status = crate::testing::rerun_with_file_limit(
            "atomic_file::tests::a_killed_write_keeps_the_earlier_file",
            CHILD,
            out.as_os_str(),
        )
        .unwrap();
        assert!(!status.success(), "the child was not stopped: {status:?}");
        let left = std::fs::read(&out).unwrap();
        assert!(
            left == b"earlier\n",
            "the file was cut: {} bytes",
            left.len()
        );
    }

    /// A link given as the output is written through, not replaced by a
    /// file of its name.
    #[test]
    fn a_link_is_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let (target, link) = (dir.path().join("target.json"), dir.path().join("link.json"));
        std::fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_out(&link, b"new").unwrap();
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }

    /// A pid whose process has ended (a child waited for).
    pub(crate) fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    /// What a `kill -9` left beside a file (`NAME.tmp<pid>` of a process that
    /// is gone) is removed when the file is next written, and nothing else:
    /// a live process's, this one's, another file's, a name that is not a
    /// pid, a folder. Before, they stayed for ever (a base checkpoint's is
    /// 1.4 GB).
    #[test]
    fn a_killed_run_s_temporary_file_goes_when_the_file_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = d.join("report.json");
        let dead = dead_pid();
        let stale = d.join(format!("report.json.tmp{dead}"));
        // pid 1 lives as long as the system does.
        let kept = [
            "report.json.tmp1".to_string(),
            format!("other.json.tmp{dead}"),
            "report.json.tmpabc".to_string(),
            format!("report.json.tmp{dead}x"),
        ];
        std::fs::write(&stale, b"cut sh").unwrap();
        for k in &kept {
            std::fs::write(d.join(k), b"x").unwrap();
        }
        let dead_dir = dead_pid();
        std::fs::create_dir(d.join(format!("report.json.tmp{dead_dir}"))).unwrap();
        super::write_whole(&out, b"{}").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"{}");
        assert!(
            !stale.exists(),
            "the dead run's temporary file is still there"
        );
        for k in &kept {
            assert!(d.join(k).exists(), "{k} was removed");
        }
        assert!(d.join(format!("report.json.tmp{dead_dir}")).is_dir());
    }
}
