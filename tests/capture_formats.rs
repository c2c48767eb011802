//! Container formats: pcap in both byte orders and both precisions, pcapng
//! with several interfaces / resolutions / sections, EPB and SPB, and bad
//! input reported with file name and byte offset.

use std::io::Cursor;
use std::net::Ipv4Addr;
use std::path::Path;

use traffic_moe::traffic::capture::container::{CaptureErrorKind, CaptureFormat, CaptureReader};
use traffic_moe::traffic::capture::decode::link;
use traffic_moe::traffic::capture::pcap_writer::{
    Ipv4Opts, PcapNgBuilder, PcapWriter, eth_ipv4, ipv4, pcap_header, pcap_record_header, tcp, udp,
};
use traffic_moe::traffic::capture::reader::{ReadConfig, read_capture};
use traffic_moe::traffic::capture::stats::FileStatus;
use traffic_moe::traffic::types::{Flow, PROTO_TCP, PROTO_UDP, tcp_flags};

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const TS0: u64 = 1_700_000_000_123_456_789;

#[derive(Debug, PartialEq)]
struct Seen {
    link_type: u32,
    ts_ns: u64,
    caplen: u32,
    orig_len: u32,
    data: Vec<u8>,
    offset: u64,
}

fn frames_of(
    bytes: Vec<u8>,
) -> (
    Vec<Seen>,
    Result<(), traffic_moe::traffic::capture::container::CaptureError>,
    CaptureFormat,
) {
    let mut r = CaptureReader::from_read(Cursor::new(bytes)).expect("header parses");
    let mut seen = Vec::new();
    let res = r.for_each_frame(|f| {
        seen.push(Seen {
            link_type: f.link_type,
            ts_ns: f.ts_ns,
            caplen: f.caplen,
            orig_len: f.orig_len,
            data: f.data.to_vec(),
            offset: f.offset,
        })
    });
    (seen, res, r.format())
}

fn udp_frame(i: u8) -> Vec<u8> {
    eth_ipv4(
        A,
        B,
        PROTO_UDP,
        &udp(1000 + u16::from(i), 53, &vec![i; usize::from(i) + 1]),
    )
}

/// A classic pcap with 3 frames in the given byte order / precision.
fn classic(big_endian: bool, nanosecond: bool) -> Vec<u8> {
    let mut out = pcap_header(link::ETHERNET, nanosecond, big_endian);
    for i in 0..3u8 {
        let f = udp_frame(i);
        let ts = TS0 + u64::from(i) * 1_000;
        out.extend(pcap_record_header(
            ts,
            f.len() as u32,
            f.len() as u32,
            nanosecond,
            big_endian,
        ));
        out.extend(&f);
    }
    out
}

#[test]
fn pcap_byte_orders_and_precisions() {
    for big_endian in [false, true] {
        for nanosecond in [false, true] {
            let (seen, res, format) = frames_of(classic(big_endian, nanosecond));
            res.unwrap();
            assert_eq!(
                format,
                CaptureFormat::Pcap {
                    big_endian,
                    nanosecond
                }
            );
            assert_eq!(seen.len(), 3);
            let mut offset = 24;
            for (i, s) in seen.iter().enumerate() {
                let f = udp_frame(i as u8);
                let ts = TS0 + i as u64 * 1_000;
                let want_ts = if nanosecond { ts } else { ts / 1000 * 1000 };
                assert_eq!(s.ts_ns, want_ts, "be={big_endian} ns={nanosecond}");
                assert_eq!(s.link_type, link::ETHERNET);
                assert_eq!(s.data, f);
                assert_eq!((s.caplen, s.orig_len), (f.len() as u32, f.len() as u32));
                assert_eq!(s.offset, offset);
                offset += 16 + f.len() as u64;
            }
        }
    }
}

#[test]
fn pcap_writer_round_trip_and_large_frame() {
    // A 200 KB frame forces the 64 KiB stream buffer to grow.
    let big = vec![0x5a; 200_000];
    let mut w = PcapWriter::with_precision(Vec::new(), link::ETHERNET, true).unwrap();
    w.write_frame(TS0, &udp_frame(1)).unwrap();
    w.write_frame(TS0 + 1, &big).unwrap();
    w.write_frame_truncated(TS0 + 2, &udp_frame(2)[..20], 70)
        .unwrap();
    let (seen, res, _) = frames_of(w.into_inner());
    res.unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].data.len(), 200_000);
    assert_eq!(seen[1].ts_ns, TS0 + 1);
    assert_eq!((seen[2].caplen, seen[2].orig_len), (20, 70));
}

#[test]
fn pcapng_interfaces_resolutions_sections_epb_spb() {
    for big_endian in [false, true] {
        let mut ng = PcapNgBuilder::new(big_endian);
        ng.interface(link::ETHERNET as u16, 6); // µs
        ng.interface(link::RAW as u16, 9); // ns
        ng.interface(link::LINUX_SLL2 as u16, 0x80 | 10); // 1/1024 s
        let eth = udp_frame(3); // odd length: EPB padding must be cut
        assert_eq!(eth.len() % 4, 2);
        let raw = ipv4(
            A,
            B,
            PROTO_TCP,
            &tcp(1, 2, 0, 0, tcp_flags::SYN, 0, b""),
            &Ipv4Opts::default(),
        );
        let first = ng.bytes.len() as u64;
        ng.enhanced_packet(0, 1_700_000_000_000_001, &eth, eth.len() as u32);
        let second = ng.bytes.len() as u64;
        ng.enhanced_packet(1, 1_700_000_000_000_000_007, &raw, 1500);
        ng.enhanced_packet(2, 1024 * 5 + 512, &raw, raw.len() as u32);
        ng.simple_packet(&eth);
        // Second section: a fresh interface table.
        ng.section();
        ng.interface(link::NULL as u16, 3); // ms
        let third_section = ng.bytes.len() as u64;
        ng.enhanced_packet(0, 42, &raw, raw.len() as u32);
        let (seen, res, format) = frames_of(ng.bytes);
        res.unwrap();
        assert_eq!(format, CaptureFormat::PcapNg);
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0].link_type, link::ETHERNET);
        assert_eq!(seen[0].ts_ns, 1_700_000_000_000_001_000);
        assert_eq!(seen[0].data, eth);
        assert_eq!(seen[0].offset, first);
        assert_eq!(seen[1].link_type, link::RAW);
        assert_eq!(seen[1].ts_ns, 1_700_000_000_000_000_007);
        assert_eq!((seen[1].caplen, seen[1].orig_len), (raw.len() as u32, 1500));
        assert_eq!(seen[1].offset, second);
        assert_eq!(seen[2].link_type, link::LINUX_SLL2);
        assert_eq!(seen[2].ts_ns, 5_500_000_000);
        // SPB: first interface, no timestamp.
        assert_eq!((seen[3].link_type, seen[3].ts_ns), (link::ETHERNET, 0));
        assert_eq!(seen[3].data, eth);
        assert_eq!((seen[4].link_type, seen[4].ts_ns), (link::NULL, 42_000_000));
        assert_eq!(seen[4].offset, third_section);
    }
}

/// A pcapng like `classic`: 3 frames on one Ethernet interface.
fn ng_three(big_endian: bool) -> Vec<u8> {
    let mut ng = PcapNgBuilder::new(big_endian);
    ng.interface(link::ETHERNET as u16, 9);
    for i in 0..3u8 {
        let f = udp_frame(i);
        ng.enhanced_packet(0, TS0 + u64::from(i), &f, f.len() as u32);
    }
    ng.bytes
}

/// Hands out its bytes one `read` of `step` bytes at a time, as a pipe may.
struct Trickle {
    bytes: Cursor<Vec<u8>>,
    step: usize,
}

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step);
        self.bytes.read(&mut buf[..n])
    }
}

/// A capture arriving on a pipe: its frames are read as they come, in
/// reads of any size, not once a 64 KiB buffer has filled (on a quiet
/// link, `classify --stream` gave no verdict until then).
#[test]
fn frames_on_a_live_pipe_are_read_as_they_come() {
    use std::io::Write;
    let captures = [
        classic(false, false),
        classic(true, true),
        ng_three(false),
        ng_three(true),
    ];
    for bytes in &captures {
        let want = frames_of(bytes.clone()).0;
        for step in [1, 5, 1000] {
            let trickle = Trickle {
                bytes: Cursor::new(bytes.clone()),
                step,
            };
            let mut r = CaptureReader::from_read(trickle).expect("header parses");
            let mut n = 0;
            r.for_each_frame(|f| {
                assert_eq!(f.data, want[n].data, "step {step}");
                assert_eq!(f.offset, want[n].offset, "step {step}");
                n += 1;
            })
            .unwrap();
            assert_eq!(n, 3, "step {step}");
        }
        // The pipe stays open: the 3 frames must come through anyway. (The
        // wait bounds a hang; it times nothing.)
        let (pipe_r, mut pipe_w) = std::io::pipe().unwrap();
        pipe_w.write_all(bytes).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = CaptureReader::from_read(pipe_r).expect("header parses");
            let _ = r.for_each_frame(|f| {
                let _ = tx.send(f.data.to_vec());
            });
        });
        for f in &want {
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("a frame on the open pipe");
            assert_eq!(got, f.data);
        }
        drop(pipe_w);
    }
}

/// Times out once (`ErrorKind::TimedOut`: a quiet input) when `at` bytes
/// have been read, as `classify --stream`'s standard input does.
struct QuietOnce {
    bytes: Cursor<Vec<u8>>,
    at: u64,
    done: bool,
}

impl std::io::Read for QuietOnce {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.at.saturating_sub(self.bytes.position()) as usize;
        if left == 0 && !self.done {
            self.done = true;
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let n = if self.done {
            buf.len()
        } else {
            buf.len().min(left)
        };
        self.bytes.read(&mut buf[..n])
    }
}

/// A quiet spell inside the 24-byte header is waited out; after it, it is reported
/// once (`on_quiet`) and the reading goes on: every frame, in order.
#[test]
fn a_quiet_input_is_reported_and_read_on() {
    let bytes = classic(false, false);
    let want = frames_of(bytes.clone()).0;
    for at in [2u64, 10, 24, 30, bytes.len() as u64 - 3] {
        let input = QuietOnce {
            bytes: Cursor::new(bytes.clone()),
            at,
            done: false,
        };
        let mut r = CaptureReader::from_read(input).expect("header parses");
        let (mut frames, mut quiet) = (Vec::new(), 0);
        r.for_each_frame_or_quiet(
            |f| {
                frames.push(f.data.to_vec());
                true
            },
            || {
                quiet += 1;
                true
            },
        )
        .unwrap();
        let got: Vec<_> = want.iter().map(|f| f.data.clone()).collect();
        assert_eq!(frames, got, "quiet at byte {at}");
        assert_eq!(quiet, u32::from(at >= 24), "quiet at byte {at}");
    }
}

fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn read_all(path: &Path) -> (traffic_moe::traffic::capture::stats::FileStats, Vec<Flow>) {
    let mut flows = Vec::new();
    let st = read_capture(path, 7, &ReadConfig::default(), &mut |f| flows.push(f));
    (st, flows)
}

#[test]
fn read_capture_on_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_temp(dir.path(), "good.pcap", &classic(true, true));
    let (st, flows) = read_all(&p);
    assert_eq!(st.status(), FileStatus::Ok);
    assert_eq!((st.frames, st.packets, st.flows), (3, 3, 3));
    assert_eq!(flows.len(), 3);
    assert!(
        flows
            .iter()
            .all(|f| f.file_index == 7 && f.total_packets == 1)
    );
}

#[test]
fn bad_inputs_report_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();

    let p = write_temp(
        dir.path(),
        "notes.pcap",
        b"this is not a capture, just some text\n",
    );
    let (st, flows) = read_all(&p);
    assert_eq!(st.status(), FileStatus::Failed);
    let e = st.error.clone().unwrap();
    assert_eq!((e.kind, e.offset), (CaptureErrorKind::NotCapture, 0));
    assert!(e.to_string().contains("notes.pcap"), "{e}");
    assert!(flows.is_empty());

    let p = write_temp(dir.path(), "empty.pcap", b"");
    let (st, _) = read_all(&p);
    assert_eq!(st.status(), FileStatus::Failed);
    assert_eq!(st.error.unwrap().kind, CaptureErrorKind::Empty);

    let p = write_temp(dir.path(), "short.pcap", &classic(false, false)[..10]);
    let (st, _) = read_all(&p);
    assert_eq!(st.error.unwrap().kind, CaptureErrorKind::Truncated);

    // Truncated last record: the first two frames survive, the warning names
    // the offset of the third record.
    let full = classic(false, false);
    let third = 24 + (16 + udp_frame(0).len()) + (16 + udp_frame(1).len());
    let p = write_temp(dir.path(), "cut.pcap", &full[..full.len() - 3]);
    let (st, flows) = read_all(&p);
    assert_eq!(st.status(), FileStatus::Warned);
    assert_eq!((st.frames, flows.len()), (2, 2));
    let w = &st.warnings[0];
    assert_eq!(
        (w.kind, w.offset),
        (CaptureErrorKind::Truncated, third as u64)
    );
    assert!(w.to_string().contains("cut.pcap") && w.to_string().contains(&third.to_string()));

    // Garbage in the middle of a pcap: a record header with an absurd length.
    let mut g = full[..third].to_vec();
    g.extend_from_slice(&[0xff; 40]);
    g.extend_from_slice(&full[third..]);
    let p = write_temp(dir.path(), "garbage.pcap", &g);
    let (st, flows) = read_all(&p);
    assert_eq!(st.status(), FileStatus::Warned);
    assert_eq!(flows.len(), 2);
    assert_eq!(st.warnings[0].offset, third as u64);

    // Garbage in the middle of a pcapng: a block with a bad length field.
    let mut ng = PcapNgBuilder::new(false);
    ng.interface(link::ETHERNET as u16, 6);
    ng.enhanced_packet(0, 1, &udp_frame(1), 60);
    let bad_at = ng.bytes.len();
    ng.bytes
        .extend_from_slice(&[6, 0, 0, 0, 13, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    ng.enhanced_packet(0, 2, &udp_frame(2), 60);
    let p = write_temp(dir.path(), "garbage.pcapng", &ng.bytes);
    let (st, flows) = read_all(&p);
    assert_eq!(st.status(), FileStatus::Warned);
    assert_eq!(flows.len(), 1);
    assert_eq!(st.warnings[0].kind, CaptureErrorKind::Corrupt);
    assert_eq!(st.warnings[0].offset, bad_at as u64);

    let (st, _) = read_all(&dir.path().join("missing.pcap"));
    assert_eq!(st.error.unwrap().kind, CaptureErrorKind::Io);
}

/// A pcapng block whose length is below the 12 bytes of its type and two
/// lengths is corrupt. pcap-parser subtracted 12 from a process information
/// block's (type 0x80000001) unchecked: a panic (overflow checks, as in the
/// tests), which took the whole run over many files down with it.
#[test]
fn a_pcapng_block_shorter_than_its_header_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    for big_endian in [false, true] {
        for len in [4u32, 8, 11, 0] {
            let mut ng = PcapNgBuilder::new(big_endian);
            ng.interface(link::ETHERNET as u16, 6);
            ng.enhanced_packet(0, 1, &udp_frame(1), 60);
            let bad_at = ng.bytes.len();
            let u32b = |v: u32| {
                if big_endian {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                }
            };
            ng.bytes.extend_from_slice(&u32b(0x8000_0001));
            ng.bytes.extend_from_slice(&u32b(len));
            ng.bytes.extend_from_slice(&[0; 8]);
            ng.enhanced_packet(0, 2, &udp_frame(2), 60);
            let p = write_temp(dir.path(), "short-block.pcapng", &ng.bytes);
            let (st, flows) = read_all(&p);
            assert_eq!(st.status(), FileStatus::Warned, "be={big_endian} len={len}");
            assert_eq!((st.frames, flows.len()), (1, 1));
            let w = &st.warnings[0];
            assert_eq!(
                (w.kind, w.offset),
                (CaptureErrorKind::Corrupt, bad_at as u64)
            );
            let text = w.to_string();
            assert!(
                text.contains("short-block.pcapng")
                    && text.contains(&format!("block length {len} is below the 12-byte minimum")),
                "{text}"
            );
        }
    }
}

/// A pcapng block that is all there but holds a length running past its
/// end (an EPB's captured length, an empty process information block) is
/// corrupt, not a truncated file: the reader said "truncated ... last
/// record/block is incomplete (N bytes left)", after reading the rest of
/// the file (up to 64 MiB) into its buffer.
#[test]
fn a_pcapng_block_with_a_length_past_its_end_is_corrupt_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    for big_endian in [false, true] {
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        // An EPB claiming 1,000 captured bytes in a block of 12 + 20 + 64.
        let mut epb = PcapNgBuilder::new(big_endian);
        epb.interface(link::ETHERNET as u16, 6);
        epb.enhanced_packet(0, 1, &udp_frame(1), 60);
        let epb_at = epb.bytes.len();
        epb.enhanced_packet(0, 2, &udp_frame(2), 60);
        epb.bytes[epb_at + 20..epb_at + 24].copy_from_slice(&u32b(1000));
        // Its block: type, lengths, 20 bytes of header, the padded frame.
        let epb_len = 12 + 20 + udp_frame(2).len().div_ceil(4) as u32 * 4;
        assert_eq!(epb.bytes[epb_at + 4..epb_at + 8], u32b(epb_len));
        // A process information block of 12 bytes: no room for its process id.
        let mut pib = PcapNgBuilder::new(big_endian);
        pib.interface(link::ETHERNET as u16, 6);
        pib.enhanced_packet(0, 1, &udp_frame(1), 60);
        let pib_at = pib.bytes.len();
        for v in [0x8000_0001, 12, 12] {
            pib.bytes.extend_from_slice(&u32b(v));
        }
        for (mut ng, bad_at, len) in [(epb, epb_at, epb_len), (pib, pib_at, 12)] {
            // Frames after it, so that the file does not end there.
            for i in 3..40 {
                ng.enhanced_packet(0, u64::from(i), &udp_frame(i), 60);
            }
            let p = write_temp(dir.path(), "inner-length.pcapng", &ng.bytes);
            let (st, flows) = read_all(&p);
            assert_eq!(st.status(), FileStatus::Warned, "be={big_endian} len={len}");
            assert_eq!((st.frames, flows.len()), (1, 1));
            let w = &st.warnings[0];
            let text = w.to_string();
            assert_eq!(
                (w.kind, w.offset),
                (CaptureErrorKind::Corrupt, bad_at as u64),
                "{text}"
            );
            assert!(
                text.contains("inner-length.pcapng")
                    && text.contains(&format!("block of {len} bytes is malformed")),
                "{text}"
            );
        }
    }
}

/// A section header whose length field is below the 28 bytes of the
/// smallest one is a bad header, not a file that ends inside it (the first
/// read was cut to the length field's 0 or 20 bytes, and pcap-parser asked
/// for more).
#[test]
fn a_section_header_with_a_short_length_is_a_bad_header() {
    let dir = tempfile::tempdir().unwrap();
    for big_endian in [false, true] {
        for len in [0u32, 12, 20, 27] {
            let mut ng = PcapNgBuilder::new(big_endian);
            ng.interface(link::ETHERNET as u16, 6);
            ng.enhanced_packet(0, 1, &udp_frame(1), 60);
            let len_bytes = if big_endian {
                len.to_be_bytes()
            } else {
                len.to_le_bytes()
            };
            ng.bytes[4..8].copy_from_slice(&len_bytes);
            let p = write_temp(dir.path(), "short-shb.pcapng", &ng.bytes);
            let (st, _) = read_all(&p);
            assert_eq!(st.status(), FileStatus::Failed);
            let e = st.error.unwrap();
            let text = e.to_string();
            assert_eq!(
                (e.kind, e.offset),
                (CaptureErrorKind::NotCapture, 0),
                "be={big_endian} len={len}: {text}"
            );
            assert!(
                text.contains("short-shb.pcapng") && text.contains("bad file header"),
                "{text}"
            );
        }
    }
}

#[test]
fn packet_blocks_of_undeclared_interfaces_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut ng = PcapNgBuilder::new(false);
    ng.interface(link::ETHERNET as u16, 6);
    ng.enhanced_packet(0, 1, &udp_frame(1), 60);
    ng.enhanced_packet(5, 2, &udp_frame(2), 60);
    let p = write_temp(dir.path(), "ifaces.pcapng", &ng.bytes);
    let (st, flows) = read_all(&p);
    assert_eq!(st.status(), FileStatus::Ok);
    assert_eq!(
        (st.frames, st.packets, st.unknown_interface_frames),
        (2, 1, 1)
    );
    assert_eq!(flows.len(), 1);
}

#[test]
fn a_compressed_capture_is_named_as_one() {
    // Given by name (`tmoe classify x.pcap.gz`), it was "unknown magic
    // number 1f 8b 08 00": not a word of compression.
    let dir = tempfile::tempdir().unwrap();
    for (name, head, what) in [
        ("x.pcap.gz", &[0x1f, 0x8b, 0x08, 0x00, 0, 0][..], "gzip"),
        ("x.pcap.xz", b"\xfd7zXZ\x00", "xz"),
        ("x.pcap.zst", b"\x28\xb5\x2f\xfd\x00", "zstd"),
    ] {
        let p = write_temp(dir.path(), name, head);
        let (st, flows) = read_all(&p);
        let e = st.error.unwrap();
        assert_eq!(e.kind, CaptureErrorKind::NotCapture);
        let text = e.to_string();
        assert!(text.contains(name), "{text}");
        assert!(
            text.contains(&format!("{what}-compressed")) && text.contains("decompress it"),
            "{text}"
        );
        assert!(flows.is_empty());
    }
}

/// A classic pcap record whose captured length is past both the file's
/// snaplen and the 256 KiB any frame needs is a corrupt length field, said
/// at once: it grew the read buffer over the rest of the file (up to 64
/// MiB) and then called the file truncated. A file whose snaplen is larger
/// still reads records up to it.
#[test]
fn a_pcap_record_longer_than_any_frame_is_corrupt_not_truncated() {
    for big_endian in [false, true] {
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut bytes = classic(big_endian, false);
        let bad_at = bytes.len();
        bytes.extend(pcap_record_header(TS0, 1 << 30, 1 << 30, false, big_endian));
        bytes.extend(vec![0u8; 3 << 20]);
        let (seen, res, _) = frames_of(bytes);
        assert_eq!(seen.len(), 3, "be={big_endian}");
        let e = res.expect_err("a corrupt record");
        let text = e.to_string();
        assert_eq!(
            (e.kind, e.offset),
            (CaptureErrorKind::Corrupt, bad_at as u64),
            "{text}"
        );
        assert!(
            text.contains("record claims 1073741824 captured bytes, above the file's snaplen"),
            "{text}"
        );

        // 262,145 bytes: one past the limit under the usual snaplen, and
        // read whole under a snaplen of 1 MiB.
        let big = udp_frame(1)
            .into_iter()
            .chain(std::iter::repeat(0))
            .take(262_145)
            .collect::<Vec<u8>>();
        for (snaplen, ok) in [(65_535, false), (1 << 20, true)] {
            let mut bytes = pcap_header(link::ETHERNET, false, big_endian);
            bytes[16..20].copy_from_slice(&u32b(snaplen));
            bytes.extend(pcap_record_header(TS0, 262_145, 262_145, false, big_endian));
            bytes.extend(&big);
            let (seen, res, _) = frames_of(bytes);
            assert_eq!(res.is_ok(), ok, "snaplen {snaplen}: {res:?}");
            assert_eq!(seen.len(), usize::from(ok), "snaplen {snaplen}");
        }
    }
}
