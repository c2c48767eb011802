//! Packet metadata beside each token shard (`<part>.pkts`): per flow, the
//! size, direction and time offset of its first packets, in the shard's row
//! order, so that the classic baselines (`crate::baseline`) read exactly the
//! flows and splits the model sees. The tokens alone cannot give them back.
//!
//! Layout (little-endian):
//! ```text
//! header   40 bytes: magic "TMOEPKTS", version u32, cap u32, n_flows u64, dataset id u64,
//!          part u64 (the part's name, NUL-padded, as in the shards' headers)
//! rows     n_flows x (n u32, then cap x PacketSlot (8 bytes))   slots past n are zero
//! ```
//! `cap` is the reader's K (`--packets`): the packets a flow keeps. Version 1
//! files (a 32-byte header without the part) still read, as part 0.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use bytemuck::{Pod, Zeroable};

use crate::atomic_file::write_then_rename;
use crate::traffic::types::Flow;

pub const MAGIC: [u8; 8] = *b"TMOEPKTS";
/// 2: the header records its part (val.pkts copied as test.pkts, both of
/// one build and often of one flow count, would pass every other check).
pub const VERSION: u32 = 2;

/// One packet as the baselines see it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PacketSlot {
    /// IP length on the wire, saturated at 65,535.
    pub size: u16,
    /// 0: sent by the flow's initiator; 1: by the responder.
    pub from_responder: u8,
    pub reserved: u8,
    /// Microseconds since the flow's first packet (saturated).
    pub offset_us: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Header {
    magic: [u8; 8],
    version: u32,
    cap: u32,
    n_flows: u64,
    /// The build's id, as in its shards' headers (0: none recorded).
    dataset_id: u64,
    /// [`super::shard::part_tag`] of the part (0: none recorded, version 1).
    part: u64,
}

const _: () = assert!(std::mem::size_of::<Header>() == 40);
/// Version 1's header: [`Header`] without `part`.
const HEADER_V1: usize = 32;

/// A `.pkts` file as read: its header's ids and one slot list per flow.
#[derive(Debug)]
pub struct PacketMeta {
    /// The build's id (0: none recorded).
    pub dataset_id: u64,
    /// The part's tag, [`super::shard::part_tag`] (0: none recorded).
    pub part: u64,
    pub rows: Vec<Vec<PacketSlot>>,
}

/// A flow's first `cap` packets as slots.
pub fn slots_of(flow: &Flow, cap: usize) -> Vec<PacketSlot> {
    let t0 = flow.packets.first().map_or(0, |p| p.ts_ns);
    flow.packets
        .iter()
        .take(cap)
        .map(|p| PacketSlot {
            size: p.ip_len.min(u32::from(u16::MAX)) as u16,
            from_responder: u8::from(!p.from_initiator),
            reserved: 0,
            offset_us: (p.ts_ns.saturating_sub(t0) / 1000).min(u64::from(u32::MAX)) as u32,
        })
        .collect()
}

/// Writes `rows` (each at most `cap` slots) to `path`.
pub fn write(path: &Path, cap: usize, rows: &[Vec<PacketSlot>]) -> anyhow::Result<()> {
    write_tagged(path, cap, rows, 0, "")
}

/// [`write()`] with the id of the dataset build the file belongs to and
/// the name of its part ("train", "val", "test").
pub fn write_tagged(
    path: &Path,
    cap: usize,
    rows: &[Vec<PacketSlot>],
    dataset_id: u64,
    part: &str,
) -> anyhow::Result<()> {
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        cap: cap as u32,
        n_flows: rows.len() as u64,
        dataset_id,
        part: super::shard::part_tag(part),
    };
    // Written to `PATH.tmp`, then renamed, as shards are.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    write_then_rename(path, &tmp, 8 << 10, |w| {
        let werr = |e| anyhow::Error::new(e).context(format!("writing {}", tmp.display()));
        w.write_all(bytemuck::bytes_of(&header)).map_err(werr)?;
        let mut row = vec![PacketSlot::default(); cap];
        for r in rows {
            anyhow::ensure!(r.len() <= cap, "a flow has more than {cap} packet slots");
            row.fill(PacketSlot::default());
            row[..r.len()].copy_from_slice(r);
            w.write_all(&(r.len() as u32).to_le_bytes()).map_err(werr)?;
            w.write_all(bytemuck::cast_slice(&row)).map_err(werr)?;
        }
        Ok(())
    })
}

/// Reads a `.pkts` file: one slot list per flow, in shard row order.
pub fn read(path: &Path) -> anyhow::Result<Vec<Vec<PacketSlot>>> {
    Ok(read_tagged(path)?.rows)
}

/// [`read()`], with the dataset id and part of its header.
pub fn read_tagged(path: &Path) -> anyhow::Result<PacketMeta> {
    super::refuse_special_file(path)?;
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading {} (datasets written before packet metadata existed have none: run `tmoe tokenize` again)",
            path.display()
        )
    })?;
    if bytes.len() < HEADER_V1 {
        bail!("{}: too short for a header", path.display());
    }
    if bytes[..8] != MAGIC {
        bail!("{}: not a packet metadata file", path.display());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let hs = match version {
        1 => HEADER_V1,
        VERSION => std::mem::size_of::<Header>(),
        v => bail!(
            "{}: version {v} (this build reads 1 and {VERSION})",
            path.display()
        ),
    };
    if bytes.len() < hs {
        bail!("{}: too short for a header", path.display());
    }
    // Version 1's header is version 2's without the part, which reads as 0.
    let mut header = [0u8; std::mem::size_of::<Header>()];
    header[..hs].copy_from_slice(&bytes[..hs]);
    let h: Header = bytemuck::pod_read_unaligned(&header);
    let cap = h.cap as usize;
    let row_bytes = 4 + cap * std::mem::size_of::<PacketSlot>();
    let want = (h.n_flows as usize)
        .checked_mul(row_bytes)
        .and_then(|n| n.checked_add(hs));
    if want != Some(bytes.len()) {
        bail!(
            "{}: {} bytes, but the header says {} flows of {} slots",
            path.display(),
            bytes.len(),
            h.n_flows,
            cap
        );
    }
    let rows = bytes[hs..]
        .chunks_exact(row_bytes)
        .map(|r| {
            let n = (u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize).min(cap);
            r[4..]
                .chunks_exact(8)
                .take(n)
                .map(bytemuck::pod_read_unaligned)
                .collect()
        })
        .collect();
    Ok(PacketMeta {
        dataset_id: h.dataset_id,
        part: h.part,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.pkts");
        let s = |size, from_responder, offset_us| PacketSlot {
            size,
            from_responder,
            reserved: 0,
            offset_us,
        };
        let rows = vec![
            vec![s(60, 0, 0), s(1500, 1, 250)],
            vec![],
            vec![s(40, 1, 7)],
        ];
        write(&p, 3, &rows).unwrap();
        assert_eq!(read(&p).unwrap(), rows);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.pop();
        std::fs::write(&p, &bytes).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("header says"));
        std::fs::write(&p, b"TMOESHRDxxxxxxxxxxxxxxxxxxxxxxxxxxxx").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("not a packet"));
        assert!(write(&p, 1, &rows).is_err(), "a row longer than the cap");
    }

    #[test]
    fn records_its_part_and_still_reads_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("val.pkts");
        let slot = PacketSlot {
            size: 60,
            from_responder: 1,
            reserved: 0,
            offset_us: 9,
        };
        let rows = vec![vec![slot], vec![slot, slot]];
        write_tagged(&p, 2, &rows, 0xfeed, "val").unwrap();
        let m = read_tagged(&p).unwrap();
        assert_eq!((m.dataset_id, m.rows), (0xfeed, rows.clone()));
        assert_eq!(m.part, super::super::shard::part_tag("val"));
        // The same file as version 1 wrote it: no part field.
        let mut v1 = std::fs::read(&p).unwrap();
        v1.drain(32..40);
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        std::fs::write(&p, &v1).unwrap();
        let m = read_tagged(&p).unwrap();
        assert_eq!((m.dataset_id, m.part, m.rows), (0xfeed, 0, rows));
        v1[8..12].copy_from_slice(&3u32.to_le_bytes());
        std::fs::write(&p, &v1).unwrap();
        let e = read_tagged(&p).unwrap_err().to_string();
        assert!(e.contains("version 3"), "{e}");
    }
}
