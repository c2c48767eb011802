//! Token shards: one file of fixed-length token rows plus per-flow metadata,
//! opened zero-copy through a memory map.
//!
//! Layout (little-endian, every section 8-byte aligned):
//! ```text
//! ShardHeader                      64 bytes (magic "TMOESHRD", version, sizes, vocab hash, dataset id)
//! u32 tokens [n_flows, seq_len]    row i = flow i, padded with 0 ([PAD])
//! (zero padding to a multiple of 8)
//! FlowMeta [n_flows]               64 bytes each
//! ```
//! `FlowMeta::file_id` indexes the `files` list of the dataset's `dataset.json`.

use crate::atomic_file::write_then_rename;
use bytemuck::{Pod, Zeroable};
use memmap2::Mmap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const MAGIC: [u8; 8] = *b"TMOESHRD";
pub const VERSION: u32 = 1;
/// `FlowMeta::label` of an unlabelled flow.
pub const NO_LABEL: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ShardHeader {
    pub magic: [u8; 8],
    pub version: u32,
    pub seq_len: u32,
    pub n_flows: u64,
    pub vocab_hash: u64,
    /// Size of the vocabulary the ids come from (ids are below it).
    pub vocab_size: u32,
    pub meta_size: u32,
    /// The build's [`DatasetInfo::dataset_id`](crate::traffic::dataset::build::DatasetInfo::dataset_id),
    /// the same in every part of one build; 0 in shards written before it
    /// existed (or by [`write_shard`]).
    pub dataset_id: u64,
    /// The part this shard is (`train`, `val`, `test`: [`part_tag`]), so a
    /// part renamed as another is refused; 0 in shards written before it.
    pub part: u64,
    pub reserved: u64,
}

/// A part's name as a header field: its first 8 bytes, little-endian,
/// zero-padded (0: no part recorded).
pub fn part_tag(name: &str) -> u64 {
    let mut b = [0u8; 8];
    let n = name.len().min(8);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    u64::from_le_bytes(b)
}

/// Refuses `path`, whose header records the part `tag`, when it is read as
/// the part `part` and records another (0: none recorded, accepted). A part
/// copied over another (val as test) would report validation flows, or
/// training flows, as test figures.
pub fn ensure_part(path: &std::path::Path, tag: u64, part: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        tag == 0 || tag == part_tag(part),
        "{}: is the {:?} part of its build, not {part:?} (a part copied or renamed over another?)",
        path.display(),
        String::from_utf8_lossy(&tag.to_le_bytes()).trim_end_matches('\0')
    );
    Ok(())
}

/// Per-flow metadata (not seen by the model; for reports and leakage checks).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowMeta {
    /// Class id, or [`NO_LABEL`].
    pub label: u32,
    /// Index into dataset.json's `files`.
    pub file_id: u32,
    /// Initiator address (IPv4 as IPv4-mapped IPv6).
    pub src_ip: [u8; 16],
    /// Responder address.
    pub dst_ip: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// 0 for a whole flow, k >= 1 for the k-th time-slice sub-flow (augmentation).
    pub slice: u16,
    pub first_ts_ns: u64,
    /// Packets in the flow (all of them, not only the tokenised ones).
    pub packet_count: u32,
    /// Valid (non-pad) tokens of the row.
    pub n_tokens: u32,
}

const _: () = assert!(std::mem::size_of::<ShardHeader>() == 64);
const _: () = assert!(std::mem::size_of::<FlowMeta>() == 64);

/// IP address as 16 bytes plus its version.
pub fn ip_bytes(ip: IpAddr) -> ([u8; 16], u8) {
    match ip {
        IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), 4),
        IpAddr::V6(a) => (a.octets(), 6),
    }
}

impl FlowMeta {
    pub fn src_addr(&self) -> IpAddr {
        to_ip(self.src_ip, self.ip_version)
    }
    pub fn dst_addr(&self) -> IpAddr {
        to_ip(self.dst_ip, self.ip_version)
    }
    pub fn label(&self) -> Option<u32> {
        (self.label != NO_LABEL).then_some(self.label)
    }
}

fn to_ip(b: [u8; 16], version: u8) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(b);
    match (version, v6.to_ipv4_mapped()) {
        (4, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        /// In the message, not `source()`: printed once in an error chain.
        cause: std::io::Error,
    },
    #[error("{path}: not a token shard (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: shard version {found}, this build reads version {expected}")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: file is {actual} bytes, its header needs {expected} (truncated or corrupt)")]
    Size {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: {what}")]
    Corrupt { path: PathBuf, what: String },
}

fn layout(seq_len: u64, n: u64) -> Option<(u64, u64, u64)> {
    let tok_off = 64u64;
    let tok_bytes = n.checked_mul(seq_len)?.checked_mul(4)?;
    let meta_off = (tok_off.checked_add(tok_bytes)?).checked_add(7)? & !7;
    let total = meta_off.checked_add(n.checked_mul(64)?)?;
    Some((tok_off, meta_off, total))
}

/// A memory-mapped shard.
pub struct Shard {
    map: Mmap,
    header: ShardHeader,
    meta_off: usize,
    path: PathBuf,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("path", &self.path)
            .field("n_flows", &self.header.n_flows)
            .field("seq_len", &self.header.seq_len)
            .finish()
    }
}

impl Shard {
    pub fn open(path: &Path) -> Result<Shard, ShardError> {
        let io = |cause| ShardError::Io {
            path: path.to_path_buf(),
            cause,
        };
        // Opening a pipe blocks until a writer comes: refused unopened.
        if !std::fs::metadata(path).map_err(io)?.is_file() {
            return Err(io(std::io::Error::other(
                "not a regular file (a folder, device or pipe); a shard is a file",
            )));
        }
        let file = std::fs::File::open(path).map_err(io)?;
        let actual = file.metadata().map_err(io)?.len();
        if actual < 64 {
            return Err(ShardError::Size {
                path: path.into(),
                expected: 64,
                actual,
            });
        }
        // SAFETY: the file is opened read-only; concurrent truncation by another
        // process is outside what we guard against (as with every mmap reader).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let header: ShardHeader = *bytemuck::from_bytes(&map[..64]);
        if header.magic != MAGIC {
            return Err(ShardError::BadMagic { path: path.into() });
        }
        if header.version != VERSION {
            return Err(ShardError::Version {
                path: path.into(),
                found: header.version,
                expected: VERSION,
            });
        }
        if header.meta_size as usize != std::mem::size_of::<FlowMeta>() || header.seq_len == 0 {
            return Err(ShardError::Corrupt {
                path: path.into(),
                what: format!(
                    "header has seq_len {} and metadata size {}",
                    header.seq_len, header.meta_size
                ),
            });
        }
        let (_, meta_off, total) =
            layout(header.seq_len as u64, header.n_flows).ok_or_else(|| ShardError::Corrupt {
                path: path.into(),
                what: "header sizes overflow".into(),
            })?;
        if total != actual {
            return Err(ShardError::Size {
                path: path.into(),
                expected: total,
                actual,
            });
        }
        let shard = Shard {
            map,
            header,
            meta_off: meta_off as usize,
            path: path.into(),
        };
        for i in 0..shard.len() {
            let m = shard.meta(i);
            if m.n_tokens as usize > shard.seq_len() {
                return Err(ShardError::Corrupt {
                    path: path.into(),
                    what: format!(
                        "flow {i} claims {} tokens > seq_len {}",
                        m.n_tokens,
                        shard.seq_len()
                    ),
                });
            }
        }
        // The model's embedding table has vocab_size rows: an id past it is
        // damage, refused here, where the file can be named.
        let vocab = shard.header.vocab_size;
        if let Some(at) = shard.all_tokens().iter().position(|&t| t >= vocab) {
            let s = shard.seq_len();
            return Err(ShardError::Corrupt {
                path: path.into(),
                what: format!(
                    "flow {} has token id {} at position {}, past the vocabulary's {vocab} entries",
                    at / s,
                    shard.all_tokens()[at],
                    at % s
                ),
            });
        }
        Ok(shard)
    }

    fn bytes(&self) -> &[u8] {
        &self.map
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn header(&self) -> &ShardHeader {
        &self.header
    }
    pub fn len(&self) -> usize {
        self.header.n_flows as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn seq_len(&self) -> usize {
        self.header.seq_len as usize
    }
    pub fn vocab_hash(&self) -> u64 {
        self.header.vocab_hash
    }
    pub fn vocab_size(&self) -> usize {
        self.header.vocab_size as usize
    }
    /// The build this shard belongs to (0: none recorded).
    pub fn dataset_id(&self) -> u64 {
        self.header.dataset_id
    }
    /// The part this shard was written as ([`part_tag`]; 0: none recorded).
    pub fn part_tag(&self) -> u64 {
        self.header.part
    }
    /// All token rows, `[len, seq_len]` row-major.
    pub fn all_tokens(&self) -> &[u32] {
        let n = self.len() * self.seq_len();
        bytemuck::cast_slice(&self.bytes()[64..64 + 4 * n])
    }
    /// Row `i`, `seq_len` ids padded with 0.
    pub fn tokens(&self, i: usize) -> &[u32] {
        let s = self.seq_len();
        &self.all_tokens()[i * s..(i + 1) * s]
    }
    pub fn n_tokens(&self, i: usize) -> usize {
        self.meta(i).n_tokens as usize
    }
    pub fn label(&self, i: usize) -> Option<u32> {
        self.meta(i).label()
    }
    pub fn metas(&self) -> &[FlowMeta] {
        bytemuck::cast_slice(&self.bytes()[self.meta_off..self.meta_off + 64 * self.len()])
    }
    pub fn meta(&self, i: usize) -> &FlowMeta {
        &self.metas()[i]
    }
}

/// Writes a shard (to `PATH.tmp`, then renamed, so a crash never leaves a
/// half-written shard under the real name). `rows` are unpadded token lists of
/// at most `seq_len` ids; `metas[i].n_tokens` is set from `rows[i]`.
pub fn write_shard(
    path: &Path,
    seq_len: usize,
    vocab_hash: u64,
    vocab_size: usize,
    rows: &[Vec<u32>],
    metas: &[FlowMeta],
) -> anyhow::Result<()> {
    write_dataset_shard(path, seq_len, vocab_hash, vocab_size, (0, ""), rows, metas)
}

/// [`write_shard`] with the dataset id of the build it belongs to and the
/// part it is (`build`: id, part name).
pub fn write_dataset_shard(
    path: &Path,
    seq_len: usize,
    vocab_hash: u64,
    vocab_size: usize,
    (dataset_id, part): (u64, &str),
    rows: &[Vec<u32>],
    metas: &[FlowMeta],
) -> anyhow::Result<()> {
    use anyhow::Context;
    anyhow::ensure!(
        rows.len() == metas.len(),
        "rows and metadata differ in length"
    );
    let header = ShardHeader {
        magic: MAGIC,
        version: VERSION,
        seq_len: seq_len as u32,
        n_flows: rows.len() as u64,
        vocab_hash,
        vocab_size: vocab_size as u32,
        meta_size: std::mem::size_of::<FlowMeta>() as u32,
        dataset_id,
        part: part_tag(part),
        reserved: 0,
    };
    let (tok_off, meta_off, _) =
        layout(seq_len as u64, rows.len() as u64).context("shard too large")?;
    let tmp = path.with_extension("tmoe.tmp");
    write_then_rename(path, &tmp, 1 << 20, |w| {
        let werr = |e| anyhow::Error::new(e).context(format!("writing {}", tmp.display()));
        w.write_all(bytemuck::bytes_of(&header)).map_err(werr)?;
        let mut row = vec![0u32; seq_len];
        for (i, r) in rows.iter().enumerate() {
            anyhow::ensure!(
                r.len() <= seq_len,
                "row {i} has {} tokens > seq_len {seq_len}",
                r.len()
            );
            // What Shard::open would refuse is never written.
            if let Some(t) = r.iter().find(|&&t| t as usize >= vocab_size) {
                anyhow::bail!(
                    "row {i} has token id {t}, past the vocabulary's {vocab_size} entries"
                );
            }
            row[..r.len()].copy_from_slice(r);
            row[r.len()..].fill(0);
            w.write_all(bytemuck::cast_slice(&row)).map_err(werr)?;
        }
        let pad = (meta_off - tok_off - 4 * (seq_len * rows.len()) as u64) as usize;
        w.write_all(&[0u8; 8][..pad]).map_err(werr)?;
        for (m, r) in metas.iter().zip(rows) {
            let mut m = *m;
            m.n_tokens = r.len() as u32;
            w.write_all(bytemuck::bytes_of(&m)).map_err(werr)?;
        }
        Ok(())
    })
}
