//! Writing captures by hand: a classic pcap writer, a small pcapng builder,
//! and frame builders for Ethernet / IPv4 / IPv6 / TCP / UDP. Used by the
//! synthetic traffic generator and the tests (pcap-parser's own writer pulls
//! in async dependencies, and the formats are simple).

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Writes a classic pcap file (little-endian).
pub struct PcapWriter<W: Write> {
    out: W,
    nanosecond: bool,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header. `link_type` is a LINKTYPE_* value (1 = Ethernet).
    pub fn new(out: W, link_type: u32) -> io::Result<Self> {
        Self::with_precision(out, link_type, false)
    }

    /// As `new`, with nanosecond timestamps when `nanosecond` is set.
    pub fn with_precision(mut out: W, link_type: u32, nanosecond: bool) -> io::Result<Self> {
        out.write_all(&pcap_header(link_type, nanosecond, false))?;
        Ok(PcapWriter { out, nanosecond })
    }

    /// Writes one frame (captured in full).
    pub fn write_frame(&mut self, ts_ns: u64, frame: &[u8]) -> io::Result<()> {
        self.write_frame_truncated(ts_ns, frame, frame.len() as u32)
    }

    /// Writes one frame whose original length was `orig_len` (snaplen cut).
    pub fn write_frame_truncated(
        &mut self,
        ts_ns: u64,
        frame: &[u8],
        orig_len: u32,
    ) -> io::Result<()> {
        self.out.write_all(&pcap_record_header(
            ts_ns,
            frame.len() as u32,
            orig_len,
            self.nanosecond,
            false,
        ))?;
        self.out.write_all(frame)
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The 24-byte classic pcap file header.
pub fn pcap_header(link_type: u32, nanosecond: bool, big_endian: bool) -> Vec<u8> {
    let magic: u32 = if nanosecond { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    let mut h = Vec::with_capacity(24);
    let put32 = |h: &mut Vec<u8>, v: u32| {
        h.extend_from_slice(&if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        })
    };
    let put16 = |h: &mut Vec<u8>, v: u16| {
        h.extend_from_slice(&if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        })
    };
    put32(&mut h, magic);
    put16(&mut h, 2);
    put16(&mut h, 4);
    put32(&mut h, 0); // thiszone
    put32(&mut h, 0); // sigfigs
    put32(&mut h, 262_144); // snaplen
    put32(&mut h, link_type);
    h
}

/// The 16-byte record header of a classic pcap frame.
pub fn pcap_record_header(
    ts_ns: u64,
    caplen: u32,
    orig_len: u32,
    nanosecond: bool,
    big_endian: bool,
) -> Vec<u8> {
    let sec = (ts_ns / 1_000_000_000) as u32;
    let frac = if nanosecond {
        (ts_ns % 1_000_000_000) as u32
    } else {
        ((ts_ns % 1_000_000_000) / 1000) as u32
    };
    let mut h = Vec::with_capacity(16);
    for v in [sec, frac, caplen, orig_len] {
        h.extend_from_slice(&if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    h
}

/// Builds pcapng files in memory (little- or big-endian), block by block.
pub struct PcapNgBuilder {
    pub bytes: Vec<u8>,
    big_endian: bool,
}

impl PcapNgBuilder {
    /// Starts a file with its first section header.
    pub fn new(big_endian: bool) -> Self {
        let mut b = PcapNgBuilder {
            bytes: Vec::new(),
            big_endian,
        };
        b.section();
        b
    }

    fn u32b(&self, v: u32) -> [u8; 4] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn u16b(&self, v: u16) -> [u8; 2] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn block(&mut self, block_type: u32, body: &[u8]) {
        let padded = body.len().div_ceil(4) * 4;
        let total = (12 + padded) as u32;
        let (t, l) = (self.u32b(block_type), self.u32b(total));
        self.bytes.extend_from_slice(&t);
        self.bytes.extend_from_slice(&l);
        self.bytes.extend_from_slice(body);
        self.bytes.resize(self.bytes.len() + padded - body.len(), 0);
        self.bytes.extend_from_slice(&l);
    }

    /// Starts a new section (its interface table starts empty).
    pub fn section(&mut self) {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32b(0x1a2b_3c4d));
        body.extend_from_slice(&self.u16b(1));
        body.extend_from_slice(&self.u16b(0));
        body.extend_from_slice(&[0xff; 8]); // section length unknown
        self.block(0x0a0d_0d0a, &body);
    }

    /// Adds an interface; `tsresol` is the if_tsresol byte (6 = µs, 9 = ns).
    pub fn interface(&mut self, link_type: u16, tsresol: u8) {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u16b(link_type));
        body.extend_from_slice(&self.u16b(0));
        body.extend_from_slice(&self.u32b(262_144));
        // if_tsresol option (code 9, length 1, padded), then opt_endofopt.
        body.extend_from_slice(&self.u16b(9));
        body.extend_from_slice(&self.u16b(1));
        body.extend_from_slice(&[tsresol, 0, 0, 0]);
        body.extend_from_slice(&[0; 4]);
        self.block(1, &body);
    }

    /// Adds an enhanced packet block; `ts_units` is in the interface's resolution.
    pub fn enhanced_packet(&mut self, if_id: u32, ts_units: u64, data: &[u8], orig_len: u32) {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32b(if_id));
        body.extend_from_slice(&self.u32b((ts_units >> 32) as u32));
        body.extend_from_slice(&self.u32b(ts_units as u32));
        body.extend_from_slice(&self.u32b(data.len() as u32));
        body.extend_from_slice(&self.u32b(orig_len));
        body.extend_from_slice(data);
        body.resize(body.len().div_ceil(4) * 4, 0);
        self.block(6, &body);
    }

    /// Adds a simple packet block (first interface, no timestamp).
    pub fn simple_packet(&mut self, data: &[u8]) {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32b(data.len() as u32));
        body.extend_from_slice(data);
        self.block(3, &body);
    }
}

/// EtherTypes the frame builders use.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// Ethernet II header + payload, with optional VLAN tags (outermost first;
/// each tag is (TPID, VLAN id)).
pub fn ethernet(
    src: [u8; 6],
    dst: [u8; 6],
    vlans: &[(u16, u16)],
    ether_type: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * vlans.len() + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for &(tpid, vid) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Internet checksum over `data` starting from `sum`.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 header fields a builder may want to set.
#[derive(Clone, Debug)]
pub struct Ipv4Opts {
    pub ttl: u8,
    pub id: u16,
    /// Header options (padded to 4 bytes).
    pub options: Vec<u8>,
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units.
    pub fragment_offset: u16,
}

impl Default for Ipv4Opts {
    fn default() -> Self {
        Ipv4Opts {
            ttl: 64,
            id: 0,
            options: Vec::new(),
            more_fragments: false,
            fragment_offset: 0,
        }
    }
}

/// IPv4 header (with checksum) + payload.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8], opts: &Ipv4Opts) -> Vec<u8> {
    let mut options = opts.options.clone();
    options.resize(options.len().div_ceil(4) * 4, 0);
    let hdr_len = 20 + options.len();
    let total = (hdr_len + payload.len()) as u16;
    let mut p = Vec::with_capacity(total as usize);
    p.push(0x40 | (hdr_len / 4) as u8);
    p.push(0);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&opts.id.to_be_bytes());
    let frag = (opts.fragment_offset & 0x1fff) | if opts.more_fragments { 0x2000 } else { 0 };
    p.extend_from_slice(&frag.to_be_bytes());
    p.push(opts.ttl);
    p.push(proto);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&options);
    let sum = checksum(&p[..hdr_len], 0);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// IPv6 header + extension headers + payload. Each extension header is
/// (its next-header number, its bytes: already laid out, length byte included);
/// `proto` is the final upper-layer protocol.
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    proto: u8,
    ext: &[(u8, Vec<u8>)],
    payload: &[u8],
) -> Vec<u8> {
    let ext_len: usize = ext.iter().map(|(_, b)| b.len()).sum();
    let mut p = Vec::with_capacity(40 + ext_len + payload.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&((ext_len + payload.len()) as u16).to_be_bytes());
    p.push(ext.first().map_or(proto, |(nh, _)| *nh));
    p.push(64);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    for (i, (_, bytes)) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map_or(proto, |(nh, _)| *nh);
        let mut b = bytes.clone();
        if let Some(first) = b.first_mut() {
            *first = next;
        }
        p.extend_from_slice(&b);
    }
    p.extend_from_slice(payload);
    p
}

/// A TCP header (20 bytes, no options, checksum left 0) + payload.
pub fn tcp(
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + payload.len());
    s.extend_from_slice(&src_port.to_be_bytes());
    s.extend_from_slice(&dst_port.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.push(5 << 4);
    s.push(flags);
    s.extend_from_slice(&window.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(payload);
    s
}

/// A UDP header (checksum 0 = none) + payload.
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(8 + payload.len());
    s.extend_from_slice(&src_port.to_be_bytes());
    s.extend_from_slice(&dst_port.to_be_bytes());
    s.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    s
}

/// Convenience: an Ethernet/IPv4 frame around a TCP or UDP segment.
pub fn eth_ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> Vec<u8> {
    let ip = ipv4(src, dst, proto, segment, &Ipv4Opts::default());
    ethernet(mac_for(src), mac_for(dst), &[], ETHERTYPE_IPV4, &ip)
}

/// A stable locally administered MAC derived from an IPv4 address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}
