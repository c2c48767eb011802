//! Streaming pcap / pcapng container reader: yields raw link-layer frames.
//!
//! Built on pcap-parser's streaming readers (64 KiB circular buffer, grown on
//! demand for large blocks), so a file is never loaded whole. The pcapng
//! interface table (link type and timestamp resolution per interface) is kept
//! here, per section, because pcap-parser leaves that to its caller.

use std::fmt;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pcap_parser::pcapng::Block;
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader};

/// Initial size of the streaming buffer.
const BUFFER_BYTES: usize = 64 * 1024;
/// A block larger than this is taken as a corrupt length field, not a frame.
const MAX_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// The largest classic-pcap record accepted past the file's snaplen: what
/// libpcap and Wireshark allow for the link types read here (a 64 KiB IP
/// packet with its link headers fits many times over).
const MAX_PCAP_RECORD: u32 = 262_144;

/// Container format, as told by the file's magic number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFormat {
    Pcap { big_endian: bool, nanosecond: bool },
    PcapNg,
}

/// One captured frame, borrowed from the reader's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawFrame<'a> {
    /// LINKTYPE_* value of the interface that captured the frame.
    pub link_type: u32,
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Bytes captured (== `data.len()`).
    pub caplen: u32,
    /// Length of the frame on the wire.
    pub orig_len: u32,
    pub data: &'a [u8],
    /// Byte offset of the frame's record (pcap) or block (pcapng) in the file.
    pub offset: u64,
}

/// Why a capture could not be read (further).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaptureErrorKind {
    /// The file could not be opened or read.
    Io,
    /// The file has no bytes at all.
    Empty,
    /// The file does not start with a pcap or pcapng header.
    NotCapture,
    /// The file ends in the middle of a header, record or block.
    Truncated,
    /// A record or block is malformed (bad length, bad magic, garbage).
    Corrupt,
}

impl CaptureErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureErrorKind::Io => "I/O error",
            CaptureErrorKind::Empty => "empty file",
            CaptureErrorKind::NotCapture => "not a pcap/pcapng capture",
            CaptureErrorKind::Truncated => "truncated",
            CaptureErrorKind::Corrupt => "corrupt record/block",
        }
    }
}

/// A container-level error at a byte offset of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureError {
    pub kind: CaptureErrorKind,
    /// Byte offset in the file where the bad record/block starts.
    pub offset: u64,
    pub detail: String,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte offset {}", self.kind.as_str(), self.offset)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for CaptureError {}

/// A `Read` whose first call delivers `first` bytes (the file header)
/// unless the input ends: pcap-parser parses its header from a single
/// `read`, which a chained reader would answer with only the 4 peeked
/// bytes. Later calls return what one read gives, so frames arriving on a
/// live pipe are parsed as they come rather than once a 64 KiB buffer has
/// filled (a quiet link's verdicts waited for that). A read that times out
/// (`ErrorKind::TimedOut`: the input is quiet) is retried within the
/// header, and after it raises `quiet` for [`CaptureReader`] to see, as
/// pcap-parser turns every read error into the same `ReadError`.
struct HeaderRead<R> {
    inner: R,
    first: usize,
    quiet: Arc<AtomicBool>,
}

impl<R: Read> Read for HeaderRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let header = self.first > 0;
        let want = std::mem::take(&mut self.first).clamp(1, buf.len().max(1));
        let mut got = 0;
        while got < want.min(buf.len()) {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if retry(&e) || (header && e.kind() == ErrorKind::TimedOut) => {}
                Err(e) if got == 0 => {
                    if e.kind() == ErrorKind::TimedOut {
                        self.quiet.store(true, Ordering::Relaxed);
                    }
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        Ok(got)
    }
}

/// A read to try again at once: interrupted by a signal.
fn retry(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::Interrupted
}

/// Reads until `buf` is full or the input ends (a quiet input's timed-out
/// reads are retried); the bytes read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if retry(&e) || e.kind() == ErrorKind::TimedOut => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Bytes of a pcap file header.
const PCAP_HEADER_BYTES: usize = 24;
/// Bytes of the smallest pcapng section header block: pcap-parser parses
/// it from the first read, so a shorter length field must not make that
/// read shorter (the file was then said to end inside its header).
const SHB_MIN_BYTES: usize = 28;

/// pcapng interface as described by its IDB.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link_type: u32,
    /// Timestamp units per second.
    units_per_sec: u64,
    /// Seconds added to every timestamp (if_tsoffset).
    offset_sec: i64,
}

/// Timestamp units per second for a pcapng `if_tsresol` byte: 10^n, or 2^n
/// when the top bit is set. (pcap-parser's own helper rejects every 2^n value.)
/// A pcap-parser error in words: its Display shows parser internals
/// (`Internal parser error Tag, input [..]`) and Debug shows variant names.
fn pcap_error_words<I>(e: &PcapError<I>) -> String {
    match e {
        PcapError::NomError(_, k) | PcapError::OwnedNomError(_, k) => {
            format!("unparsable data ({})", k.description().to_lowercase())
        }
        PcapError::HeaderNotRecognized => "header not recognized as pcap or pcapng".into(),
        PcapError::BufferTooSmall => "a block larger than the read buffer".into(),
        PcapError::Incomplete(_) | PcapError::Eof | PcapError::UnexpectedEof => {
            "unexpected end of file".into()
        }
        PcapError::ReadError => "read failed".into(),
    }
}

fn tsresol_units(tsresol: u8) -> Option<u64> {
    let n = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(n)
    } else {
        1u64.checked_shl(n).filter(|_| n < 64)
    }
}

/// pcapng timestamp (units since epoch) -> nanoseconds, without overflow.
fn ng_ts_ns(raw: u64, iface: &Interface) -> u64 {
    let ns = (raw as u128) * 1_000_000_000 / (iface.units_per_sec.max(1) as u128);
    let ns = ns as i128 + (iface.offset_sec as i128) * 1_000_000_000;
    ns.clamp(0, u64::MAX as i128) as u64
}

/// Link type from a classic pcap header: the low 16 bits (the upper bits may
/// carry FCS information).
fn pcap_link_type(network: i32) -> u32 {
    (network as u32) & 0xffff
}

/// Streaming reader over one capture file.
pub struct CaptureReader {
    inner: Box<dyn PcapReaderIterator + Send>,
    format: CaptureFormat,
    /// Classic pcap: link type and timestamp precision from the file header.
    pcap_link: u32,
    pcap_nanos: bool,
    /// Classic pcap, once its header is read: its byte order, and the
    /// largest record it may hold (see [`Self::pcap_record_len`]).
    pcap_big_endian: bool,
    pcap_max_record: Option<u32>,
    /// pcapng: interfaces of the current section, in IDB order.
    interfaces: Vec<Interface>,
    /// Frames whose interface id had no IDB (counted, skipped).
    pub unknown_interface_frames: u64,
    /// pcapng: the byte order of the current section.
    ng_big_endian: bool,
    buffer_size: usize,
    done: bool,
    /// The last read timed out (see [`HeaderRead`]).
    quiet: Arc<AtomicBool>,
}

/// The compression format whose magic number `head` starts with.
fn compression(head: &[u8]) -> Option<&'static str> {
    const MAGICS: [(&[u8], &str); 7] = [
        (&[0x1f, 0x8b], "gzip"),
        (&[0xfd, b'7', b'z', b'X'], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"BZh", "bzip2"),
        (&[0x04, 0x22, 0x4d, 0x18], "lz4"),
        (b"PK\x03\x04", "zip"),
        (&[b'7', b'z', 0xbc, 0xaf], "7z"),
    ];
    MAGICS
        .iter()
        .find(|(m, _)| head.starts_with(m))
        .map(|&(_, name)| name)
}

impl CaptureReader {
    /// Opens a capture file and reads its header.
    pub fn open(path: &Path) -> Result<CaptureReader, CaptureError> {
        let file = File::open(path).map_err(|e| CaptureError {
            kind: CaptureErrorKind::Io,
            offset: 0,
            detail: e.to_string(),
        })?;
        CaptureReader::from_read(file)
    }

    /// Reads a capture from any byte stream (a file, a `&[u8]` in tests).
    pub fn from_read<R: Read + Send + 'static>(
        mut input: R,
    ) -> Result<CaptureReader, CaptureError> {
        // Peek at the magic ourselves: pcap-parser cannot tell "empty" from
        // "too short" and we want the byte order for reporting.
        let io_error = |e: std::io::Error| CaptureError {
            kind: CaptureErrorKind::Io,
            offset: 0,
            detail: e.to_string(),
        };
        // 12 bytes for pcapng: its header's length and byte order.
        let mut magic = [0u8; 12];
        let got = read_up_to(&mut input, &mut magic[..4]).map_err(io_error)?;
        if got == 0 {
            return Err(CaptureError {
                kind: CaptureErrorKind::Empty,
                offset: 0,
                detail: "zero-length file".into(),
            });
        }
        let format = match u32::from_le_bytes(magic[..4].try_into().expect("4 bytes")) {
            _ if got < 4 => None,
            0xa1b2_c3d4 | 0xa1b2_cd34 => Some(CaptureFormat::Pcap {
                big_endian: false,
                nanosecond: false,
            }),
            0xa1b2_3c4d => Some(CaptureFormat::Pcap {
                big_endian: false,
                nanosecond: true,
            }),
            0xd4c3_b2a1 => Some(CaptureFormat::Pcap {
                big_endian: true,
                nanosecond: false,
            }),
            0x4d3c_b2a1 => Some(CaptureFormat::Pcap {
                big_endian: true,
                nanosecond: true,
            }),
            0x0a0d_0d0a => Some(CaptureFormat::PcapNg),
            _ => None,
        };
        let Some(format) = format else {
            let hex = magic[..got]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ");
            // A compressed capture given by name (a folder's are left out
            // with a warning) is said to be one, not an unknown format.
            let detail = match compression(&magic[..got]) {
                Some(c) => format!(
                    "{c}-compressed (magic number {hex}): decompress it (gunzip, unxz, ...) to read it"
                ),
                None => format!("unknown magic number {hex}"),
            };
            return Err(CaptureError {
                kind: CaptureErrorKind::NotCapture,
                offset: 0,
                detail,
            });
        };
        let (peeked, first) = match format {
            CaptureFormat::Pcap { .. } => (4, PCAP_HEADER_BYTES),
            CaptureFormat::PcapNg => {
                // The section header block: type, total length, byte-order
                // magic; the length's byte order is the magic's.
                let more = read_up_to(&mut input, &mut magic[4..]).map_err(io_error)?;
                let length: [u8; 4] = magic[4..8].try_into().expect("4 bytes");
                let length = match magic[8..12] {
                    [0x4d, 0x3c, 0x2b, 0x1a] => u32::from_le_bytes(length),
                    _ => u32::from_be_bytes(length),
                };
                (4 + more, (length as usize).max(SHB_MIN_BYTES))
            }
        };
        let quiet = Arc::new(AtomicBool::new(false));
        let stream = HeaderRead {
            inner: std::io::Cursor::new(magic[..peeked].to_vec()).chain(input),
            first,
            quiet: quiet.clone(),
        };
        // The reader of the format found above: pcap-parser's
        // `create_reader` would read twice before the first frame, and on
        // a live pipe the second read waits for bytes that may not come.
        let inner = match format {
            CaptureFormat::Pcap { .. } => LegacyPcapReader::new(BUFFER_BYTES, stream)
                .map(|r| Box::new(r) as Box<dyn PcapReaderIterator + Send>),
            CaptureFormat::PcapNg => PcapNGReader::new(BUFFER_BYTES, stream)
                .map(|r| Box::new(r) as Box<dyn PcapReaderIterator + Send>),
        }
        .map_err(|e| {
            let (kind, detail) = match e {
                PcapError::Incomplete(_) | PcapError::Eof | PcapError::UnexpectedEof => (
                    CaptureErrorKind::Truncated,
                    "file ends inside its header".to_string(),
                ),
                PcapError::ReadError => (CaptureErrorKind::Io, "read failed".to_string()),
                other => (
                    CaptureErrorKind::NotCapture,
                    format!("bad file header ({})", pcap_error_words(&other)),
                ),
            };
            CaptureError {
                kind,
                offset: 0,
                detail,
            }
        })?;
        Ok(CaptureReader {
            inner,
            format,
            pcap_link: 1,
            pcap_nanos: false,
            pcap_big_endian: false,
            pcap_max_record: None,
            interfaces: Vec::new(),
            unknown_interface_frames: 0,
            ng_big_endian: false,
            buffer_size: BUFFER_BYTES,
            done: false,
            quiet,
        })
    }

    pub fn format(&self) -> CaptureFormat {
        self.format
    }

    /// Byte offset in the file of the next unread record.
    pub fn position(&self) -> u64 {
        self.inner.consumed() as u64
    }

    /// Calls `on_frame` for every frame until the end of the file. Stops at the
    /// first container error and returns it; frames before it were delivered.
    pub fn for_each_frame(
        &mut self,
        mut on_frame: impl FnMut(&RawFrame<'_>),
    ) -> Result<(), CaptureError> {
        self.for_each_frame_while(|f| {
            on_frame(f);
            true
        })
    }

    /// [`Self::for_each_frame`] that also stops (without an error) once
    /// `on_frame` returns false: a consumer that failed stops reading a live
    /// pipe instead of draining it.
    pub fn for_each_frame_while(
        &mut self,
        keep_going: impl FnMut(&RawFrame<'_>) -> bool,
    ) -> Result<(), CaptureError> {
        self.for_each_frame_or_quiet(keep_going, || true)
    }

    /// [`Self::for_each_frame_while`] over an input whose reads time out
    /// while it is quiet (`ErrorKind::TimedOut`, e.g. `classify --stream`'s
    /// standard input): `on_quiet` is called at each such timeout, and the
    /// reading goes on unless it returns false. (Without a timeout, a read
    /// on a quiet pipe just waits.)
    pub fn for_each_frame_or_quiet(
        &mut self,
        mut keep_going: impl FnMut(&RawFrame<'_>) -> bool,
        mut on_quiet: impl FnMut() -> bool,
    ) -> Result<(), CaptureError> {
        let go = std::cell::Cell::new(true);
        let mut on_frame = |f: &RawFrame<'_>| {
            if go.get() {
                go.set(keep_going(f));
            }
        };
        while !self.done && go.get() {
            let offset = self.inner.consumed() as u64;
            if let Some(len) = self.ng_block_len().filter(|&len| len < 12) {
                self.done = true;
                return Err(CaptureError {
                    kind: CaptureErrorKind::Corrupt,
                    offset,
                    detail: format!("block length {len} is below the 12-byte minimum"),
                });
            }
            if let Some((len, max)) = self.pcap_record_len().filter(|&(len, max)| len > max) {
                self.done = true;
                return Err(CaptureError {
                    kind: CaptureErrorKind::Corrupt,
                    offset,
                    detail: format!(
                        "record claims {len} captured bytes, above the file's snaplen and the {MAX_PCAP_RECORD} bytes any frame needs ({max}; corrupt length field?)"
                    ),
                });
            }
            match self.inner.next() {
                Ok((len, block)) => {
                    match block {
                        PcapBlockOwned::LegacyHeader(h) => {
                            self.pcap_link = pcap_link_type(h.network.0);
                            self.pcap_nanos = h.is_nanosecond_precision();
                            self.pcap_big_endian = h.is_bigendian();
                            self.pcap_max_record = Some(h.snaplen.max(MAX_PCAP_RECORD));
                        }
                        PcapBlockOwned::Legacy(b) => {
                            let frac_ns = if self.pcap_nanos {
                                u64::from(b.ts_usec) // holds nanoseconds in ns files
                            } else {
                                u64::from(b.ts_usec) * 1000
                            };
                            let frame = RawFrame {
                                link_type: self.pcap_link,
                                ts_ns: u64::from(b.ts_sec) * 1_000_000_000 + frac_ns,
                                caplen: b.data.len() as u32,
                                orig_len: b.origlen,
                                data: b.data,
                                offset,
                            };
                            on_frame(&frame);
                        }
                        PcapBlockOwned::NG(block) => {
                            if let Block::SectionHeader(shb) = &block {
                                self.ng_big_endian = shb.big_endian();
                            }
                            handle_ng_block(
                                &block,
                                offset,
                                &mut self.interfaces,
                                &mut self.unknown_interface_frames,
                                &mut on_frame,
                            );
                        }
                    }
                    self.inner.consume(len);
                }
                Err(PcapError::Eof) => self.done = true,
                Err(PcapError::Incomplete(_)) => {
                    if let Some(e) = self.malformed_ng_block(offset) {
                        self.done = true;
                        return Err(e);
                    }
                    if self.refill(offset)? {
                        go.set(on_quiet());
                    }
                }
                Err(PcapError::BufferTooSmall) => {
                    if let Some(e) = self.malformed_ng_block(offset) {
                        self.done = true;
                        return Err(e);
                    }
                    if self.buffer_size >= MAX_BUFFER_BYTES {
                        self.done = true;
                        return Err(CaptureError {
                            kind: CaptureErrorKind::Corrupt,
                            offset,
                            detail: format!(
                                "record/block claims more than {} MiB (corrupt length field?)",
                                MAX_BUFFER_BYTES >> 20
                            ),
                        });
                    }
                    self.buffer_size *= 2;
                    self.inner.grow(self.buffer_size);
                    if self.refill(offset)? {
                        go.set(on_quiet());
                    }
                }
                Err(PcapError::UnexpectedEof) => {
                    if let Some(e) = self.malformed_ng_block(offset) {
                        self.done = true;
                        return Err(e);
                    }
                    self.done = true;
                    let left = self.inner.data().len();
                    return Err(CaptureError {
                        kind: CaptureErrorKind::Truncated,
                        offset,
                        detail: format!("last record/block is incomplete ({left} bytes left)"),
                    });
                }
                Err(PcapError::ReadError) => {
                    self.done = true;
                    return Err(CaptureError {
                        kind: CaptureErrorKind::Io,
                        offset,
                        detail: "read failed".into(),
                    });
                }
                Err(e) => {
                    self.done = true;
                    let detail = pcap_error_words(&e);
                    return Err(CaptureError {
                        kind: CaptureErrorKind::Corrupt,
                        offset,
                        detail,
                    });
                }
            }
        }
        Ok(())
    }

    /// Classic pcap: the captured length the next record declares, once
    /// its 16-byte header is buffered, beside the largest the file may hold.
    /// Without this check a corrupt length grew the buffer to the rest of
    /// the file (up to MAX_BUFFER_BYTES) before it was found out.
    fn pcap_record_len(&self) -> Option<(u32, u32)> {
        let max = self.pcap_max_record?;
        let head = self.inner.data().get(..16)?;
        let len: [u8; 4] = head[8..12].try_into().expect("4 bytes");
        let len = if self.pcap_big_endian {
            u32::from_be_bytes(len)
        } else {
            u32::from_le_bytes(len)
        };
        Some((len, max))
    }

    /// pcapng: the declared length of the next block, once its first 8
    /// bytes are buffered (section headers, which carry their own byte
    /// order, left out). A length below 12 bytes (type and two lengths) is
    /// corrupt: pcap-parser 0.17 subtracts 12 from a process information
    /// block's (type 0x80000001) unchecked, a panic where overflow is
    /// checked and a 4 GiB block elsewhere.
    fn ng_block_len(&self) -> Option<u32> {
        if self.format != CaptureFormat::PcapNg {
            return None;
        }
        let head = self.inner.data().get(..8)?;
        if head[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
            return None;
        }
        let len: [u8; 4] = head[4..8].try_into().expect("4 bytes");
        Some(if self.ng_big_endian {
            u32::from_be_bytes(len)
        } else {
            u32::from_le_bytes(len)
        })
    }

    /// pcap-parser asked for more bytes, but the next pcapng block is all
    /// in the buffer: a length inside it (an EPB's captured length, an
    /// option's) runs past its end. That is a corrupt block, not a
    /// truncated file, and reading on would only fill the buffer (up to
    /// MAX_BUFFER_BYTES) before saying otherwise.
    fn malformed_ng_block(&self, offset: u64) -> Option<CaptureError> {
        let len = self.ng_block_len()?;
        (len as usize <= self.inner.data().len()).then(|| CaptureError {
            kind: CaptureErrorKind::Corrupt,
            offset,
            detail: format!(
                "block of {len} bytes is malformed: a length inside it (captured length, option) runs past its end"
            ),
        })
    }

    /// Reads more of the input; true when the read timed out on a quiet
    /// input (nothing read: the caller tries again).
    fn refill(&mut self, offset: u64) -> Result<bool, CaptureError> {
        match self.inner.refill() {
            Ok(()) => Ok(false),
            Err(_) if self.quiet.swap(false, Ordering::Relaxed) => Ok(true),
            Err(_) => {
                self.done = true;
                Err(CaptureError {
                    kind: CaptureErrorKind::Io,
                    offset,
                    detail: "read failed".into(),
                })
            }
        }
    }
}

fn handle_ng_block(
    block: &Block<'_>,
    offset: u64,
    interfaces: &mut Vec<Interface>,
    unknown_interface_frames: &mut u64,
    on_frame: &mut impl FnMut(&RawFrame<'_>),
) {
    match block {
        // A new section starts a new interface table.
        Block::SectionHeader(_) => interfaces.clear(),
        Block::InterfaceDescription(idb) => interfaces.push(Interface {
            link_type: u32::from(idb.linktype.0 as u16),
            units_per_sec: tsresol_units(idb.if_tsresol).unwrap_or(1_000_000),
            offset_sec: idb.if_tsoffset,
        }),
        Block::EnhancedPacket(epb) => {
            let Some(iface) = interfaces.get(epb.if_id as usize) else {
                *unknown_interface_frames += 1;
                return;
            };
            // EPB data carries 32-bit padding: cut to caplen.
            let data = epb.packet_data();
            let raw_ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
            on_frame(&RawFrame {
                link_type: iface.link_type,
                ts_ns: ng_ts_ns(raw_ts, iface),
                caplen: data.len() as u32,
                orig_len: epb.origlen,
                data,
                offset,
            });
        }
        Block::SimplePacket(spb) => {
            // SPBs belong to the section's first interface and have no timestamp.
            let Some(iface) = interfaces.first() else {
                *unknown_interface_frames += 1;
                return;
            };
            let data = spb.packet_data();
            on_frame(&RawFrame {
                link_type: iface.link_type,
                ts_ns: 0,
                caplen: data.len() as u32,
                orig_len: spb.origlen,
                data,
                offset,
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsresol_decimal_and_binary() {
        assert_eq!(tsresol_units(6), Some(1_000_000));
        assert_eq!(tsresol_units(9), Some(1_000_000_000));
        assert_eq!(tsresol_units(0x80 | 10), Some(1024));
        assert_eq!(tsresol_units(30), None);
    }

    #[test]
    fn ng_timestamp_to_ns() {
        let iface = Interface {
            link_type: 1,
            units_per_sec: 1000,
            offset_sec: 10,
        };
        assert_eq!(ng_ts_ns(1500, &iface), 11_500_000_000);
    }
}
