//! Files that appear whole or not at all under their real name.

use std::io::Write;
use std::path::Path;

/// Writes `path` through `tmp` (a `buffer`-byte writer given to `write`,
/// flushed, then renamed into place): a full disk leaves no file cut short
/// under the real name, and the partial temporary one is removed rather
/// than left to fill the disk. The shards, the packet metadata beside
/// them, the dataset's `dataset.json` and `vocab.txt` are written this way
/// (and, through [`write_whole`], a study's settings and results).
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
/// `PATH.tmp` is not ours to replace).
pub(crate) fn tmp_beside(path: &Path) -> std::path::PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    tmp.into()
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
