//! Link headers of Wi-Fi and Linux firewall captures, down to what follows
//! them: IEEE 802.11 data frames (LINKTYPE_IEEE802_11, 105) with their
//! LLC/SNAP EtherType, behind a radiotap (127) or PPI (192) header, and
//! NFLOG (239), whose IP packet sits in a TLV.
//!
//! 802.11 frames that cannot hold IP are counted apart, so a capture of an
//! encrypted network says so instead of "unsupported link type":
//! management and control frames, data frames without a body (null data),
//! protected (encrypted) frames, and aggregates (A-MSDU) of several packets.

use super::decode::SkipReason;

/// What an 802.11 frame carries: the EtherType of its LLC/SNAP header, the
/// bytes after it, how many header bytes came before them, and the frame's
/// (source, destination) addresses.
pub struct Dot11Payload<'a> {
    pub ether_type: u16,
    pub data: &'a [u8],
    pub header_len: usize,
    pub macs: ([u8; 6], [u8; 6]),
}

/// `fcs`: the frame ends in a 4-byte frame check sequence (radiotap says
/// so; bare 802.11 captures leave it out), dropped here when captured.
pub fn dot11(frame: &[u8], fcs: bool) -> Result<Dot11Payload<'_>, SkipReason> {
    let fc = frame.get(..2).ok_or(SkipReason::TruncatedHeader)?;
    let (kind, subtype, flags) = ((fc[0] >> 2) & 3, fc[0] >> 4, fc[1]);
    if fc[0] & 3 != 0 || kind == 3 {
        return Err(SkipReason::Malformed);
    }
    // Data frames (type 2) with a body: subtypes with bit 2 set are null
    // data (power save, keep-alive).
    if kind != 2 || subtype & 0x4 != 0 {
        return Err(SkipReason::Wifi80211NotData);
    }
    if flags & 0x40 != 0 {
        return Err(SkipReason::Wifi80211Encrypted);
    }
    let (to_ds, from_ds) = (flags & 1 != 0, flags & 2 != 0);
    let qos = subtype & 0x8 != 0;
    // 24 bytes (frame control, duration, three addresses, sequence), a
    // fourth address between access points, QoS control, and HT control
    // when a QoS frame has the order bit.
    let len = 24
        + if to_ds && from_ds { 6 } else { 0 }
        + if qos { 2 } else { 0 }
        + if qos && flags & 0x80 != 0 { 4 } else { 0 };
    // An A-MSDU (QoS control's bit 7) aggregates several packets, each
    // with its own header: one frame gives one packet here, so it is
    // counted, not cut to its first.
    if qos
        && frame
            .get(len - 2 - if flags & 0x80 != 0 { 4 } else { 0 })
            .is_some_and(|q| q & 0x80 != 0)
    {
        return Err(SkipReason::Wifi80211Aggregate);
    }
    let end = frame.len() - if fcs && frame.len() >= len + 4 { 4 } else { 0 };
    let body = frame.get(len..end).ok_or(SkipReason::TruncatedHeader)?;
    let addr = |at: usize| -> [u8; 6] { frame[at..at + 6].try_into().expect("6 bytes") };
    // Address 1 is the receiver, 2 the transmitter; the frame's own source
    // and destination depend on the direction bits.
    let (src, dst) = match (to_ds, from_ds) {
        (false, false) => (addr(10), addr(4)),
        (true, false) => (addr(10), addr(16)),
        (false, true) => (addr(16), addr(4)),
        (true, true) => (addr(24), addr(16)),
    };
    let (ether_type, data) = llc_snap(body)?;
    Ok(Dot11Payload {
        ether_type,
        data,
        header_len: len + 8,
        macs: (src, dst),
    })
}

/// An LLC/SNAP header (AA AA 03, an OUI, then the EtherType), as 802.11
/// and FDDI carry IP: the EtherType and the bytes after its 8 bytes.
pub fn llc_snap(body: &[u8]) -> Result<(u16, &[u8]), SkipReason> {
    let snap = body.get(..8).ok_or(SkipReason::TruncatedHeader)?;
    if snap[..3] != [0xaa, 0xaa, 0x03] {
        return Err(SkipReason::NonIpEtherType);
    }
    Ok((u16::from_be_bytes([snap[6], snap[7]]), &body[8..]))
}

/// A radiotap header: its length, and whether the 802.11 frame after it
/// ends in a frame check sequence (the Flags field's bit 0x10).
pub fn radiotap(data: &[u8]) -> Result<(usize, bool), SkipReason> {
    let head = data.get(..8).ok_or(SkipReason::TruncatedHeader)?;
    if head[0] != 0 {
        return Err(SkipReason::Malformed);
    }
    let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
    if len < 8 {
        return Err(SkipReason::Malformed);
    }
    if data.len() < len {
        return Err(SkipReason::TruncatedHeader);
    }
    let word = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
    let present = word(4);
    // Further presence words follow while bit 31 is set; the fields start
    // after the last one.
    let mut fields = 8;
    let mut last = present;
    while last & (1 << 31) != 0 {
        if fields + 4 > len {
            return Err(SkipReason::Malformed);
        }
        last = word(fields);
        fields += 4;
    }
    // Flags (field 1) follows TSFT (field 0: 8 bytes, 8-byte aligned).
    let mut at = fields;
    if present & 1 != 0 {
        at = at.next_multiple_of(8) + 8;
    }
    let fcs = present & 2 != 0 && at < len && data[at] & 0x10 != 0;
    Ok((len, fcs))
}

/// A PPI header: its length and the link type of the frame after it.
pub fn ppi(data: &[u8]) -> Result<(usize, u32), SkipReason> {
    let head = data.get(..8).ok_or(SkipReason::TruncatedHeader)?;
    if head[0] != 0 {
        return Err(SkipReason::Malformed);
    }
    let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
    let dlt = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    if len < 8 {
        return Err(SkipReason::Malformed);
    }
    Ok((len, dlt))
}

/// NFLOG: the address family (2 IPv4, 10 IPv6) and where the logged packet
/// (the NFULA_PAYLOAD TLV, type 9) starts and ends as its TLV declares it
/// (past the captured bytes when `cut`: the snaplen took its end). TLV
/// lengths and types are in the writing host's byte order: little-endian
/// is tried first, and big-endian where that does not fit.
pub fn nflog(data: &[u8], cut: bool) -> Result<(u8, std::ops::Range<usize>), SkipReason> {
    let head = data.get(..4).ok_or(SkipReason::TruncatedHeader)?;
    if head[1] != 0 {
        return Err(SkipReason::Malformed);
    }
    let family = head[0];
    let read = |little: bool, at: usize| -> Option<(usize, u16)> {
        let b = data.get(at..at + 4)?;
        let (len, kind) = if little {
            (
                u16::from_le_bytes([b[0], b[1]]),
                u16::from_le_bytes([b[2], b[3]]),
            )
        } else {
            (
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]),
            )
        };
        let (len, kind) = (usize::from(len), kind & 0x7fff);
        // Only the packet, the last TLV, may run past a cut capture.
        let fits = at + len <= data.len() || (cut && kind == 9);
        (len >= 4 && fits).then_some((len, kind))
    };
    let little = read(true, 4).is_some_and(|(_, kind)| kind < 0x100);
    let mut at = 4;
    // Bounded: a TLV is at least 4 bytes.
    while at + 4 <= data.len() {
        let (len, kind) = read(little, at).ok_or(SkipReason::Malformed)?;
        if kind == 9 {
            return Ok((family, at + 4..at + len));
        }
        at += len.next_multiple_of(4);
    }
    Err(SkipReason::TruncatedHeader)
}
