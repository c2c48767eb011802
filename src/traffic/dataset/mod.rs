//! Token sequences in, labelled dataset shards out: where labels come from,
//! dedup and the stratified split, time-slice augmentation, the memory-mapped
//! shards and the packet metadata beside them; `build` runs the whole of
//! Traffic2Token in one call.

pub mod augment;
pub mod build;
pub mod labels;
pub mod packet_meta;
pub mod shard;
pub mod split;

/// Refuses a dataset file that exists but is not a regular file (a folder,
/// device or pipe): opening a named pipe blocks until a writer comes, so
/// it is refused unopened. A missing file is the caller's read to report.
pub(crate) fn refuse_special_file(path: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !path.exists() || path.is_file(),
        "{}: not a regular file (a folder, device or pipe)",
        path.display()
    );
    Ok(())
}
