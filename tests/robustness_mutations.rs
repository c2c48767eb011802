//! Seeded mutation robustness: valid inputs the project writes itself are
//! mutated (bit flips, 0x00/0xFF/random overwrites, truncation, duplicated,
//! spliced and deleted ranges, length fields and JSON numbers set to huge
//! values) and read back the ways the project reads them: captures (pcap,
//! pcapng; frames, flows, a tokenized and a classified corpus), frame
//! streams through the C API, checkpoints (classifier, pretrained model for
//! `--resume` and `--init`, optimizer state), and a dataset's dataset.json,
//! vocab.txt, token shards, `.pkts` files and label CSVs.
//!
//! The promise under test: bad input gets an error naming the file and what
//! is wrong, never a panic, a hang or an absurd allocation. Every mutant
//! runs under `catch_unwind`, a global allocator refuses (and reports) any
//! allocation over 1 GiB or 1.5 GiB held, and a watchdog aborts, naming it,
//! a mutant that runs past 30 s. A failure names the seed, the mutant and
//! its mutations; its bytes are kept under
//! `CARGO_TARGET_TMPDIR/robustness_mutations/failed` for replay.

mod tiny_train;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io::{Cursor, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tiny_train::{tiny_finetune, tiny_model};
use traffic_moe::capi::*;
use traffic_moe::cli::classify;
use traffic_moe::engine::Param;
use traffic_moe::engine::{Device, Precision};
use traffic_moe::eval::evaluate::{EvalOpts, evaluate_split};
use traffic_moe::infer::classifier::{Classifier, VocabSource};
use traffic_moe::model::batch::{Sequences, make_batch, open_part};
use traffic_moe::model::checkpoint;
use traffic_moe::model::{FfnKind, Model, ModelConfig};
use traffic_moe::traffic::capture::container::CaptureReader;
use traffic_moe::traffic::capture::decode::{decode_frame, link};
use traffic_moe::traffic::capture::pcap_writer::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, Ipv4Opts, PcapNgBuilder, eth_ipv4, ethernet, ipv4, ipv6,
    mac_for, pcap_header, pcap_record_header, tcp, udp,
};
use traffic_moe::traffic::capture::reader::{ReadConfig, read_capture};
use traffic_moe::traffic::dataset::build::{DatasetConfig, build_dataset, load_dataset_info};
use traffic_moe::traffic::dataset::labels::{FlowLabels, LabelSource};
use traffic_moe::traffic::dataset::packet_meta;
use traffic_moe::traffic::dataset::shard::Shard;
use traffic_moe::traffic::tokens::vocab::Vocab;
use traffic_moe::traffic::types::{Flow, PROTO_TCP, PROTO_UDP};
use traffic_moe::train::finetune::{FinetuneOpts, finetune};
use traffic_moe::train::optim::{AdamW, AdamWConfig};
use traffic_moe::train::optim_state;
use traffic_moe::train::pretrain::{PretrainOpts, model_path, pretrain};
use traffic_moe::train::step::Task;
use traffic_moe::train::trainer::Trainer;

/// The one seed: a failure replays with the same mutants.
const SEED: u64 = 0x7e57_ab1e;

// ---------------------------------------------------------------------------
// Guards: an allocation far beyond any of these small inputs' needs, and a
// mutant that runs for long, fail loudly with the mutants in flight named.

/// One allocation above this is a length field believed, not a need (every
/// input here is a few hundred KB).
const MAX_ALLOC: usize = 1 << 30;
/// A mutant running longer than this hangs.
const MAX_MUTANT: Duration = Duration::from_secs(30);

/// The mutant a test thread is running (one slot per test).
struct Slot {
    label: String,
    since: Option<Instant>,
}

static SLOTS: [Mutex<Slot>; 7] = [const {
    Mutex::new(Slot {
        label: String::new(),
        since: None,
    })
}; 7];

/// Bytes held by the whole process: past this, a mutant made something grow
/// without bound (the fixture and four tests at once hold well under it).
const MAX_LIVE: usize = 3 << 29;

/// Allocations refused so far (code that asks with `try_reserve` survives one).
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// Bytes the process holds now.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Whether `size` more bytes (on top of `freed`) stay within the guards.
fn admit(size: usize, freed: usize) -> bool {
    size <= MAX_ALLOC && LIVE.load(Ordering::Relaxed) + size <= MAX_LIVE + freed
}

/// Counts a request that the system allocator answered.
fn counted(p: *mut u8, size: usize) -> *mut u8 {
    if !p.is_null() {
        LIVE.fetch_add(size, Ordering::Relaxed);
    }
    p
}

struct Guard;

#[global_allocator]
static GUARD: Guard = Guard;

// SAFETY: every call is System's, except that oversized requests get null
// (what an exhausted allocator answers).
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size(), 0) {
            return refuse(layout.size());
        }
        // SAFETY: the caller's contract, passed on.
        counted(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size(), 0) {
            return refuse(layout.size());
        }
        // SAFETY: as above.
        counted(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !admit(new_size, layout.size()) {
            return refuse(new_size);
        }
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

/// Says which mutants were running before Rust aborts on the null (an
/// infallible allocation); from a stack buffer, since the heap refused.
fn refuse(size: usize) -> *mut u8 {
    REFUSED.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 2048];
    let mut w = Cursor::new(&mut buf[..]);
    let _ = write!(
        w,
        "robustness guard: refused an allocation of {size} bytes ({} held; limits {MAX_ALLOC} \
         at once, {MAX_LIVE} in all); mutants in flight:",
        LIVE.load(Ordering::Relaxed)
    );
    for slot in &SLOTS {
        // try_lock: the thread that allocates may hold its own slot.
        if let Ok(s) = slot.try_lock()
            && s.since.is_some()
        {
            let _ = write!(w, "\n  {}", s.label);
        }
    }
    let _ = writeln!(w);
    let n = w.position() as usize;
    let _ = std::io::stderr().write_all(&buf[..n]);
    std::ptr::null_mut()
}

/// Aborts the run, naming the mutant, when one runs past [`MAX_MUTANT`].
fn start_watchdog() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                for slot in &SLOTS {
                    let s = slot.lock().unwrap_or_else(|p| p.into_inner());
                    if s.since.is_some_and(|t| t.elapsed() > MAX_MUTANT) {
                        eprintln!(
                            "robustness guard: mutant hangs (> {MAX_MUTANT:?}): {}",
                            s.label
                        );
                        std::process::abort();
                    }
                }
            }
        });
    });
}

// ---------------------------------------------------------------------------
// Running mutants.

/// One test's mutants: runs each under `catch_unwind`, collects failures.
struct Run {
    slot: usize,
    name: &'static str,
    started: Instant,
    mutants: usize,
    failures: Vec<String>,
}

impl Run {
    fn new(slot: usize, name: &'static str) -> Run {
        start_watchdog();
        Run {
            slot,
            name,
            started: Instant::now(),
            mutants: 0,
            failures: Vec::new(),
        }
    }

    fn set_slot(&self, label: &str, running: bool) {
        let mut s = SLOTS[self.slot].lock().unwrap_or_else(|p| p.into_inner());
        s.label.clear();
        s.label.push_str(label);
        s.since = running.then(Instant::now);
    }

    /// Runs `check` on the mutant `bytes` (described by `label`); a panic or
    /// an `Err` is a failure.
    fn mutant(&mut self, label: &str, bytes: &[u8], check: impl FnOnce() -> Result<(), String>) {
        self.mutants += 1;
        self.set_slot(label, true);
        let refused = REFUSED.load(Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(check));
        self.set_slot("", false);
        // A refused allocation that was survived (`try_reserve`) was still
        // asked for (by this mutant, or one of another test running then).
        let problem = match outcome {
            _ if REFUSED.load(Ordering::Relaxed) != refused => {
                "asked for an absurd allocation (see the guard's message)".to_string()
            }
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(p) => format!("PANIC: {}", panic_text(&*p)),
        };
        let kept = keep_failed(self.name, self.failures.len(), bytes);
        self.failures
            .push(format!("{label}: {problem} (bytes: {})", kept.display()));
    }

    fn finish(self) {
        let shown: Vec<&String> = self.failures.iter().take(20).collect();
        assert!(
            self.failures.is_empty(),
            "{}: {} of {} mutants failed (seed {SEED:#x}):\n{}",
            self.name,
            self.failures.len(),
            self.mutants,
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
        eprintln!(
            "{}: {} mutants, all handled, in {:.1} s",
            self.name,
            self.mutants,
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string payload)".into())
}

/// Writes a failing mutant's bytes where a replay can find them.
fn keep_failed(name: &str, n: usize, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("robustness_mutations/failed");
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(format!("{name}-{n}.bin"));
    let _ = std::fs::write(&p, bytes);
    p
}

/// Ok when `message` names `path` (the file the user must look at).
fn names(message: &str, path: &Path) -> Result<(), String> {
    if message.contains(&path.display().to_string()) {
        Ok(())
    } else {
        Err(format!(
            "error does not name {}: {message}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ))
    }
}

// ---------------------------------------------------------------------------
// Mutations.

/// A little-endian or big-endian integer field that a reader believes (a
/// length, a count, an offset).
#[derive(Clone, Copy, Debug)]
struct Field {
    at: usize,
    width: usize,
    big_endian: bool,
}

/// A valid input and where its interesting bytes are.
struct Target {
    name: String,
    bytes: Vec<u8>,
    fields: Vec<Field>,
    /// Positional mutations land here more often than elsewhere (headers).
    hot: Range<usize>,
    /// Numbers in the hot range are text (JSON, ...) worth making huge.
    text: bool,
}

impl Target {
    fn new(name: &str, bytes: Vec<u8>) -> Target {
        let hot = 0..bytes.len();
        Target {
            name: name.into(),
            bytes,
            fields: Vec::new(),
            hot,
            text: false,
        }
    }
}

const HUGE_U32: [u32; 6] = [
    u32::MAX,
    0x7fff_ffff,
    0x8000_0000,
    0x4000_0000,
    0x0100_0000,
    0xffff_fff0,
];
const HUGE_U64: [u64; 5] = [
    u64::MAX,
    1 << 62,
    1 << 40,
    0x7fff_ffff_ffff_ffff,
    0xffff_ffff,
];
const HUGE_TEXT: [&str; 9] = [
    "18446744073709551615",
    "18446744073709551616",
    "4294967296",
    "99999999999999999999999",
    "-1",
    "1e308",
    "0",
    "2147483648",
    "1099511627776",
];

/// A byte offset below `len`, in `hot` more often than not.
fn position(rng: &mut StdRng, len: usize, hot: &Range<usize>) -> usize {
    let hot_end = hot.end.min(len);
    if hot.start < hot_end && rng.random_bool(0.7) {
        rng.random_range(hot.start..hot_end)
    } else {
        rng.random_range(0..len)
    }
}

/// Digit runs (start, end) inside `range`.
fn digit_runs(bytes: &[u8], range: Range<usize>) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = range.start;
    let end = range.end.min(bytes.len());
    while i < end {
        if bytes[i].is_ascii_digit() {
            let s = i;
            while i < end && bytes[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((s, i));
        } else {
            i += 1;
        }
    }
    runs
}

/// Applies one random mutation to `b`; returns what it did.
fn mutate_once(rng: &mut StdRng, t: &Target, b: &mut Vec<u8>) -> String {
    if b.is_empty() {
        b.push(rng.random());
        return "grew an empty input by a random byte".into();
    }
    let len = b.len();
    // Text inputs get more huge numbers: few bytes of JSON hold the sizes.
    let ops = 7 + usize::from(!t.fields.is_empty()) * 3 + usize::from(t.text) * 6;
    match rng.random_range(0..ops) {
        0 | 1 => {
            let (at, bit) = (position(rng, len, &t.hot), rng.random_range(0..8));
            b[at] ^= 1 << bit;
            format!("flipped bit {bit} of byte {at}")
        }
        2 => {
            let at = position(rng, len, &t.hot);
            let n = rng.random_range(1..=8).min(len - at);
            let fill: u8 = match rng.random_range(0..3) {
                0 => 0x00,
                1 => 0xff,
                _ => rng.random(),
            };
            b[at..at + n].fill(fill);
            format!("set bytes {at}..{} to {fill:#04x}", at + n)
        }
        3 => {
            let at = rng.random_range(0..len);
            b.truncate(at);
            format!("truncated to {at} bytes")
        }
        4 => {
            let from = position(rng, len, &t.hot);
            let n = rng.random_range(1..=64).min(len - from);
            let to = rng.random_range(0..=len);
            let copy = b[from..from + n].to_vec();
            b.splice(to..to, copy);
            format!("duplicated bytes {from}..{} at {to}", from + n)
        }
        5 => {
            let from = rng.random_range(0..len);
            let n = rng.random_range(1..=64).min(len - from);
            let to = position(rng, len, &t.hot);
            let m = n.min(len - to);
            let copy = b[from..from + m].to_vec();
            b[to..to + m].copy_from_slice(&copy);
            format!("spliced bytes {from}..{} over {to}", from + m)
        }
        6 => {
            let at = position(rng, len, &t.hot);
            let n = rng.random_range(1..=64).min(len - at);
            b.drain(at..at + n);
            format!("deleted bytes {at}..{}", at + n)
        }
        7..=9 if !t.fields.is_empty() => huge_field(rng, t, b),
        _ => huge_number(rng, t, b),
    }
}

/// Sets one of the target's integer fields to a huge value.
fn huge_field(rng: &mut StdRng, t: &Target, b: &mut [u8]) -> String {
    let f = t.fields[rng.random_range(0..t.fields.len())];
    if f.at + f.width > b.len() {
        return format!("(field at {} is past the end)", f.at);
    }
    let bytes: Vec<u8> = if f.width == 8 {
        let v = HUGE_U64[rng.random_range(0..HUGE_U64.len())];
        if f.big_endian {
            v.to_be_bytes().to_vec()
        } else {
            v.to_le_bytes().to_vec()
        }
    } else {
        let v = HUGE_U32[rng.random_range(0..HUGE_U32.len())];
        let v = if f.width == 2 { v >> 16 } else { v };
        let all = if f.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        if f.width == 2 {
            if f.big_endian {
                all[2..].to_vec()
            } else {
                all[..2].to_vec()
            }
        } else {
            all.to_vec()
        }
    };
    b[f.at..f.at + f.width].copy_from_slice(&bytes);
    format!(
        "set the {}-byte field at {} to {:02x?}",
        f.width, f.at, bytes
    )
}

/// Replaces a number written as text in the hot range with a huge one.
fn huge_number(rng: &mut StdRng, t: &Target, b: &mut Vec<u8>) -> String {
    let runs = digit_runs(b, t.hot.clone());
    if runs.is_empty() {
        let at = rng.random_range(0..b.len());
        b[at] = rng.random();
        return format!("set byte {at} at random (no number to grow)");
    }
    let (s, e) = runs[rng.random_range(0..runs.len())];
    let text = HUGE_TEXT[rng.random_range(0..HUGE_TEXT.len())];
    b.splice(s..e, text.bytes());
    format!("replaced the number at {s}..{e} with {text}")
}

/// Mutant `i` of `t`: one to three mutations; its bytes and description.
fn mutant(rng: &mut StdRng, t: &Target, i: usize) -> (Vec<u8>, String) {
    let mut b = t.bytes.clone();
    let n = rng.random_range(1..=3);
    let what: Vec<String> = (0..n).map(|_| mutate_once(rng, t, &mut b)).collect();
    let label = format!(
        "seed {SEED:#x}, {} mutant {i} ({} bytes): {}",
        t.name,
        b.len(),
        what.join("; ")
    );
    (b, label)
}

// ---------------------------------------------------------------------------
// Inputs the project writes.

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 53);
const TS0: u64 = 1_700_000_000_000_000_000;

/// A TCP exchange and a UDP query/answer: (timestamp, Ethernet frame).
fn frames() -> Vec<(u64, Vec<u8>)> {
    let seg = |sp, dp, seq, flags, p: &[u8]| tcp(sp, dp, seq, 1, flags, 64240, p);
    vec![
        (
            TS0,
            eth_ipv4(A, B, PROTO_TCP, &seg(40000, 80, 1, 0x02, b"")),
        ),
        (
            TS0 + 1_000_000,
            eth_ipv4(B, A, PROTO_TCP, &seg(80, 40000, 9, 0x12, b"")),
        ),
        (
            TS0 + 2_000_000,
            eth_ipv4(A, B, PROTO_TCP, &seg(40000, 80, 2, 0x10, b"")),
        ),
        (
            TS0 + 3_000_000,
            eth_ipv4(
                A,
                B,
                PROTO_TCP,
                &seg(40000, 80, 2, 0x18, b"GET / HTTP/1.1\r\n"),
            ),
        ),
        (
            TS0 + 4_000_000,
            eth_ipv4(A, B, PROTO_UDP, &udp(5353, 53, b"\x12\x34q.example")),
        ),
        (
            TS0 + 5_000_000,
            eth_ipv4(B, A, PROTO_UDP, &udp(53, 5353, b"\x12\x34a.example 7")),
        ),
        (TS0 + 6_000_000, vlan_ipv4_fragment()),
        (TS0 + 7_000_000, ipv6_with_extensions()),
    ]
}

/// A VLAN-tagged IPv4 first fragment with options, carrying TCP.
fn vlan_ipv4_fragment() -> Vec<u8> {
    let opts = Ipv4Opts {
        options: vec![1, 1, 1, 0],
        more_fragments: true,
        ..Ipv4Opts::default()
    };
    let seg = tcp(40001, 443, 7, 0, 0x02, 1024, &[0x16, 3, 1, 0, 5]);
    let ip = ipv4(A, B, PROTO_TCP, &seg, &opts);
    ethernet(mac_for(A), mac_for(B), &[(0x8100, 7)], ETHERTYPE_IPV4, &ip)
}

/// IPv6 with a hop-by-hop and a destination-options header, carrying UDP.
fn ipv6_with_extensions() -> Vec<u8> {
    let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let b: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let ext = [
        (0u8, vec![0, 0, 1, 4, 0, 0, 0, 0]),
        (60u8, vec![0, 0, 1, 4, 0, 0, 0, 0]),
    ];
    let ip = ipv6(a, b, PROTO_UDP, &ext, &udp(5000, 53, b"v6 query"));
    ethernet(
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        &[],
        ETHERTYPE_IPV6,
        &ip,
    )
}

fn u32_at(b: &[u8], at: usize, big_endian: bool) -> u32 {
    let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if big_endian {
        u32::from_be_bytes(w)
    } else {
        u32::from_le_bytes(w)
    }
}

/// A classic pcap; fields: snaplen, link type, and each record's lengths.
fn pcap_target(big_endian: bool, nanosecond: bool) -> Target {
    let mut bytes = pcap_header(link::ETHERNET, nanosecond, big_endian);
    let f4 = |at| Field {
        at,
        width: 4,
        big_endian,
    };
    let mut fields = vec![f4(16), f4(20)];
    for (ts, f) in frames() {
        let at = bytes.len();
        fields.extend([f4(at + 8), f4(at + 12)]);
        let n = f.len() as u32;
        bytes.extend(pcap_record_header(ts, n, n, nanosecond, big_endian));
        bytes.extend(&f);
    }
    let name = format!("pcap(be={big_endian},ns={nanosecond})");
    Target {
        fields,
        ..Target::new(&name, bytes)
    }
}

/// A pcapng with two sections, three interfaces, EPBs and an SPB; fields:
/// every block length (both copies), section lengths, snaplens, packet lengths.
fn pcapng_target(big_endian: bool) -> Target {
    let mut ng = PcapNgBuilder::new(big_endian);
    ng.interface(link::ETHERNET as u16, 6);
    ng.interface(link::RAW as u16, 9);
    let fr = frames();
    for (i, (ts, f)) in fr.iter().enumerate() {
        ng.enhanced_packet(0, ts / 1000, f, f.len() as u32);
        if i == 2 {
            ng.enhanced_packet(1, *ts, &f[14..], (f.len() - 14) as u32);
            ng.simple_packet(f);
        }
    }
    ng.section();
    ng.interface(link::ETHERNET as u16, 0x80 | 10);
    ng.enhanced_packet(0, 1024 * 5, &fr[4].1, 1500);
    let bytes = ng.bytes;
    let f4 = |at| Field {
        at,
        width: 4,
        big_endian,
    };
    let mut fields = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let kind = u32_at(&bytes, at, big_endian);
        let len = u32_at(&bytes, at + 4, big_endian) as usize;
        fields.extend([f4(at + 4), f4(at + len - 4)]);
        match kind {
            0x0a0d_0d0a => fields.push(Field {
                at: at + 16,
                width: 8,
                big_endian,
            }),
            1 => fields.push(f4(at + 12)),
            6 => fields.extend([f4(at + 8), f4(at + 20), f4(at + 24)]),
            3 => fields.push(f4(at + 8)),
            _ => {}
        }
        at += len;
    }
    Target {
        fields,
        ..Target::new(&format!("pcapng(be={big_endian})"), bytes)
    }
}

fn capture_targets() -> Vec<Target> {
    vec![
        pcap_target(false, false),
        pcap_target(true, true),
        pcapng_target(false),
        pcapng_target(true),
    ]
}

/// The checkpoint with its header's keys sorted: its metadata is written
/// from a HashMap, and a seed must give the same mutants every run.
fn canonical_checkpoint(bytes: &[u8]) -> Vec<u8> {
    type Object = BTreeMap<String, serde_json::Value>;
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Object = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta: BTreeMap<String, String> =
        serde_json::from_value(header.remove("__metadata__").unwrap()).unwrap();
    let mut json = format!(
        "{{\"__metadata__\":{},{}",
        serde_json::to_string(&meta).unwrap(),
        &serde_json::to_string(&header).unwrap()[1..]
    )
    .into_bytes();
    // safetensors pads its header with spaces to 8 bytes.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(&bytes[8 + n..]);
    out
}

/// A safetensors file: the u64 header length, and the header JSON as text.
fn checkpoint_target(path: &Path) -> Target {
    let bytes = canonical_checkpoint(&std::fs::read(path).unwrap());
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    Target {
        fields: vec![Field {
            at: 0,
            width: 8,
            big_endian: false,
        }],
        hot: 0..8 + header,
        text: true,
        ..Target::new("checkpoint", bytes)
    }
}

/// The header JSON alone, mutations aimed at its `__metadata__` object
/// (model config, classes, sequence length), and the tensor data: mutants
/// go back in a file of the right length ([`with_header`]), so that they
/// reach the metadata's readers rather than the container's framing.
fn checkpoint_header_target(path: &Path) -> (Target, Vec<u8>) {
    let bytes = canonical_checkpoint(&std::fs::read(path).unwrap());
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let json = bytes[8..8 + n].to_vec();
    // `"},` ends the metadata object (the config's `}` is followed by `",`).
    let end = json.windows(3).position(|w| w == b"\"},").unwrap() + 2;
    let t = Target {
        hot: 0..end,
        text: true,
        ..Target::new("checkpoint metadata", json)
    };
    (t, bytes[8 + n..].to_vec())
}

/// A safetensors file of a header and the tensor data.
fn with_header(json: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(data);
    out
}

/// A token shard: its header's sizes and every flow's label, file id,
/// packet and token counts.
fn shard_target(path: &Path, name: &str) -> Target {
    let bytes = std::fs::read(path).unwrap();
    let shard = Shard::open(path).unwrap();
    let le = |at, width| Field {
        at,
        width,
        big_endian: false,
    };
    let mut fields = vec![le(8, 4), le(12, 4), le(16, 8), le(32, 4), le(36, 4)];
    let meta_off = bytes.len() - 64 * shard.len();
    for i in 0..shard.len() {
        let m = meta_off + 64 * i;
        fields.extend([le(m, 4), le(m + 4, 4), le(m + 56, 4), le(m + 60, 4)]);
    }
    // The header and the token rows, where a wrong value would be believed.
    let hot = 0..meta_off;
    Target {
        fields,
        hot,
        ..Target::new(name, bytes)
    }
}

/// A packet metadata file: its header's cap and count, each row's count.
fn pkts_target(path: &Path, name: &str) -> Target {
    let bytes = std::fs::read(path).unwrap();
    let le = |at, width| Field {
        at,
        width,
        big_endian: false,
    };
    let cap = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    // Version 2's header: 40 bytes, the part's tag last.
    let mut fields = vec![le(8, 4), le(12, 4), le(16, 8), le(32, 8)];
    fields.extend((40..bytes.len()).step_by(4 + 8 * cap).map(|at| le(at, 4)));
    Target {
        fields,
        hot: 0..40,
        ..Target::new(&format!("{name}.pkts"), bytes)
    }
}

fn text_target(path: &Path, name: &str) -> Target {
    Target {
        text: true,
        ..Target::new(name, std::fs::read(path).unwrap())
    }
}

/// A labelled dataset of generated captures and a classifier briefly trained
/// on it, made once for the whole file (kept under CARGO_TARGET_TMPDIR).
struct Fixture {
    caps: PathBuf,
    data: PathBuf,
    ckpt: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("robustness_mutations/fixture");
        let _ = std::fs::remove_dir_all(&root);
        let caps = root.join("caps");
        tiny_train::classifier::write_captures(&caps, 12);
        let data = root.join("data");
        tiny_train::classifier::build_small_dataset(&caps, &data, 100, 32);
        let ckpt =
            tiny_train::classifier::fine_tuned(&data, &root.join("run"), 32, |o| FinetuneOpts {
                max_epochs: 1,
                batch: 16,
                ..o
            });
        Fixture { caps, data, ckpt }
    })
}

/// A scratch folder of this test's own (emptied).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("robustness_mutations")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------
// 1. Captures.

/// The frames of an in-memory capture, each decoded; container errors are
/// fine, a frame whose length disagrees with its data is not.
fn check_frames(bytes: &[u8]) -> Result<(), String> {
    let Ok(mut r) = CaptureReader::from_read(Cursor::new(bytes.to_vec())) else {
        return Ok(());
    };
    let mut wrong = None;
    let _ = r.for_each_frame(|f| {
        if f.data.len() != f.caplen as usize {
            wrong = Some(format!(
                "frame at {} has caplen {} but {} bytes",
                f.offset,
                f.caplen,
                f.data.len()
            ));
        }
        let _ = decode_frame(f.link_type, f.data, f.orig_len);
    });
    wrong.map_or(Ok(()), Err)
}

/// A capture file read into flows: every error and warning names the file.
fn check_capture_file(bytes: &[u8], path: &Path) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| e.to_string())?;
    let st = read_capture(path, 0, &ReadConfig::default(), &mut |_| {});
    for e in st.error.iter().chain(&st.warnings) {
        names(&e.to_string(), path)?;
    }
    Ok(())
}

#[test]
fn mutated_captures_give_errors_naming_the_file() {
    let dir = scratch("captures");
    let mut run = Run::new(0, "captures");
    let mut rng = StdRng::seed_from_u64(SEED);
    for t in capture_targets() {
        for i in 0..250 {
            let (bytes, label) = mutant(&mut rng, &t, i);
            let path = dir.join(format!("mutant{}.pcap", i % 8));
            run.mutant(&label, &bytes, || {
                check_frames(&bytes)?;
                check_capture_file(&bytes, &path)
            });
        }
    }
    run.finish();
}

/// Mutants of every capture kind, each in a file of its own under
/// `dir/<class>/`, and their descriptions (file name: mutations).
fn mutant_corpus(dir: &Path, rng: &mut StdRng, per_target: usize) -> String {
    let mut labels = Vec::new();
    for (k, t) in capture_targets().iter().enumerate() {
        let class = dir.join(["a", "b"][k % 2]);
        std::fs::create_dir_all(&class).unwrap();
        for i in 0..per_target {
            let (bytes, label) = mutant(rng, t, i);
            let name = format!("t{k}m{i}.pcap");
            std::fs::write(class.join(&name), &bytes).unwrap();
            labels.push(format!("{name}: {label}"));
        }
    }
    labels.join("\n")
}

/// Whole pipelines over many mutants at once: `tmoe tokenize` (flows, the
/// vocabulary trained on them, splits and shards) and `tmoe classify`.
#[test]
fn pipelines_survive_a_corpus_of_mutated_captures() {
    let f = fixture();
    let dir = scratch("corpus");
    let mut rng = StdRng::seed_from_u64(SEED ^ 6);
    let caps = dir.join("caps");
    let labels = mutant_corpus(&caps, &mut rng, 40);
    let mut run = Run::new(6, "corpus");
    let cfg = DatasetConfig {
        inputs: vec![caps.clone()],
        labels: LabelSource::Folder,
        vocab_size: 50,
        min_packets: 1,
        ..DatasetConfig::default()
    };
    let label = format!("tokenize the corpus:\n{labels}");
    // The corpus holds flows of both classes: the build must succeed.
    run.mutant(&label, &[], || {
        build_dataset(&cfg, &dir.join("data"), true)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    });
    let mut files: Vec<PathBuf> = ["a", "b"]
        .iter()
        .flat_map(|c| std::fs::read_dir(caps.join(c)).unwrap().flatten())
        .map(|e| e.path())
        .collect();
    files.sort();
    let args = classify::Args {
        checkpoint: f.ckpt.clone(),
        captures: files,
        stream: false,
        early: false,
        data: Some(f.data.clone()),
        vocab: None,
        format: classify::Format::Jsonl,
        out: None,
        force: false,
        min_packets: Some(1),
        batch: Some(8),
        device: Device::Cpu,
        precision: Precision::F32,
        readers: 2,
        max_flows: None,
        seq_len: None,
        quiet: true,
    };
    let label = format!("classify the corpus:\n{labels}");
    run.mutant(&label, &[], || {
        let mut out = Vec::new();
        classify::classify(&args, &mut out).map_err(|e| format!("{e:#}"))?;
        Ok(())
    });
    run.finish();
}

// ---------------------------------------------------------------------------
// 2. The C API fed mutated captures.

fn last_error() -> String {
    // SAFETY: tmoe_last_error returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(tmoe_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Sets a known last error, so that a failing call shows it set its own.
fn mark_error(h: *mut TmoeClassifier) -> String {
    // SAFETY: a live handle; an out-of-range id only sets the error.
    assert!(unsafe { tmoe_class_name(h, u32::MAX) }.is_null());
    last_error()
}

/// A failed call (`failed`) must have set an error of its own, not a panic's.
fn call_ok(what: &str, failed: bool, mark: &str) -> Result<(), String> {
    let e = last_error();
    if e.contains("panic") {
        return Err(format!("{what}: a panic was caught: {e}"));
    }
    if failed {
        return Err(if e == mark {
            format!("{what} failed without setting tmoe_last_error")
        } else {
            format!("{what} failed: {e}")
        });
    }
    Ok(())
}

/// A frame to feed: timestamp, link type, bytes, length on the wire.
type Frame = (u64, u32, Vec<u8>, u32);

/// The mutated capture as a monitor would see it: the frames a reader finds
/// in it, then the raw bytes cut into frames of random sizes and link types.
fn frames_to_feed(rng: &mut StdRng, bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    if let Ok(mut r) = CaptureReader::from_read(Cursor::new(bytes.to_vec())) {
        let _ = r.for_each_frame(|f| out.push((f.ts_ns, f.link_type, f.data.to_vec(), f.orig_len)));
    }
    let links = [0, 1, 9, 12, 101, 113, 228, 229, 276];
    let mut at = 0;
    while at < bytes.len() {
        let n = rng.random_range(1..=256).min(bytes.len() - at);
        let link = if rng.random_bool(0.1) {
            rng.random()
        } else {
            links[rng.random_range(0..links.len())]
        };
        let wire = match rng.random_range(0..4) {
            0 => 0,
            1 => u32::MAX,
            _ => n as u32,
        };
        let ts = if rng.random_bool(0.05) {
            rng.random()
        } else {
            TS0 + at as u64
        };
        out.push((ts, link, bytes[at..at + n].to_vec(), wire));
        at += n;
    }
    out
}

/// Feeds one mutant's frames with polls, flushes and stats in between.
fn feed_mutant(rng: &mut StdRng, h: *mut TmoeClassifier, frames: &[Frame]) -> Result<(), String> {
    let mut out = [TmoeVerdict::default(); 16];
    for (ts, link, data, wire) in frames {
        let mark = mark_error(h);
        // SAFETY: a live handle and `data.len()` readable bytes.
        let r = unsafe { tmoe_feed(h, *ts, *link, data.as_ptr(), data.len() as u32, *wire) };
        call_ok("tmoe_feed", !(r == 0 || r == 1), &mark)?;
        if rng.random_bool(0.1) {
            let max = rng.random_range(0..=16u64);
            let mark = mark_error(h);
            // SAFETY: room for 16 >= max verdicts.
            let n = unsafe { tmoe_poll(h, out.as_mut_ptr(), max) };
            call_ok("tmoe_poll", n < 0 || n as u64 > max, &mark)?;
        }
        if rng.random_bool(0.02) {
            let mark = mark_error(h);
            // SAFETY: a live handle.
            let r = unsafe { tmoe_flush(h) };
            call_ok("tmoe_flush", r != 0, &mark)?;
        }
    }
    let mark = mark_error(h);
    let mut s = TmoeStats::default();
    // SAFETY: a live handle and a writable struct.
    let r = unsafe { tmoe_get_stats(h, &mut s) };
    call_ok("tmoe_get_stats", r != 0, &mark)?;
    // SAFETY: a live handle.
    let pending = unsafe { tmoe_pending(h) };
    if s.frames != s.packets + s.skipped_frames
        || s.flows_finished < s.flows_classified + s.flows_dropped + pending
    {
        return Err(format!("stats do not add up: {s:?}, {pending} pending"));
    }
    Ok(())
}

/// Drains every verdict (end of a handle's life).
fn drain(h: *mut TmoeClassifier) -> Result<(), String> {
    let mut out = [TmoeVerdict::default(); 16];
    let mark = mark_error(h);
    // SAFETY: a live handle.
    call_ok("tmoe_flush", unsafe { tmoe_flush(h) } != 0, &mark)?;
    loop {
        let mark = mark_error(h);
        // SAFETY: room for 16 verdicts.
        let n = unsafe { tmoe_poll(h, out.as_mut_ptr(), 16) };
        call_ok("tmoe_poll", n < 0, &mark)?;
        if n == 0 {
            return Ok(());
        }
    }
}

#[test]
fn c_api_survives_mutated_frame_streams() {
    let f = fixture();
    let ckpt = CString::new(f.ckpt.to_str().unwrap()).unwrap();
    let data = CString::new(f.data.to_str().unwrap()).unwrap();
    let mut run = Run::new(1, "c_api");
    let mut rng = StdRng::seed_from_u64(SEED ^ 1);
    let targets = capture_targets();
    let flag_sets = [0, TMOE_EARLY_VERDICTS, TMOE_BACKGROUND, TMOE_EARLY_VERDICTS];
    for (k, &flags) in flag_sets.iter().enumerate() {
        // SAFETY: valid strings and NULLs as the header allows.
        let h = unsafe {
            tmoe_open(
                ckpt.as_ptr(),
                data.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                0,
                flags,
            )
        };
        assert!(!h.is_null(), "{}", last_error());
        if k == 3 {
            // Tight limits: eviction and dropping under garbage.
            // SAFETY: a live handle, before the first frame.
            assert_eq!(unsafe { tmoe_set_limits(h, 4, 2) }, 0, "{}", last_error());
        }
        for i in 0..60 {
            let t = &targets[rng.random_range(0..targets.len())];
            let (bytes, label) = mutant(&mut rng, t, i);
            let frames = frames_to_feed(&mut rng, &bytes);
            let label = format!("flags {flags}: {label}");
            let mut sub = StdRng::seed_from_u64(rng.random());
            run.mutant(&label, &bytes, || feed_mutant(&mut sub, h, &frames));
        }
        let label = format!("flags {flags}: final flush and poll");
        run.mutant(&label, &[], || drain(h));
        // SAFETY: a live handle, closed once.
        unsafe { tmoe_close(h) };
    }
    run.finish();
}

// ---------------------------------------------------------------------------
// 3. Checkpoints.

/// Every way the crate reads a checkpoint: Ok, or an error naming the file.
fn check_checkpoint(bytes: &[u8], path: &Path) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| e.to_string())?;
    if let Err(e) = checkpoint::read(path) {
        names(&e.to_string(), path)?;
    }
    if let Err(e) = checkpoint::read_meta(path) {
        names(&e.to_string(), path)?;
    }
    if let Err(e) = checkpoint::load_classifier(path) {
        return names(&format!("{e:#}"), path);
    }
    // It loads: it must also classify, or say why naming the file.
    let data = &fixture().data;
    let clf = match Classifier::open(path, VocabSource::Dataset(data), None, Device::Cpu) {
        Ok(c) => c,
        Err(e) => return names(&format!("{e:#}"), path),
    };
    if let Err(e) = clf.classify(fixture_flows(), 16) {
        names(&format!("{e:#}"), path)?;
    }
    Ok(())
}

/// The flows of one of the fixture's captures of each class.
fn fixture_flows() -> &'static [Flow] {
    static FLOWS: OnceLock<Vec<Flow>> = OnceLock::new();
    FLOWS.get_or_init(|| {
        let mut flows = Vec::new();
        for cap in ["dns/dns0.pcap", "web/web0.pcap"] {
            let cfg = ReadConfig {
                max_packets: 5,
                payload_bytes: 16,
                ..ReadConfig::default()
            };
            read_capture(&fixture().caps.join(cap), 0, &cfg, &mut |f| flows.push(f));
        }
        flows
    })
}

/// The fixture classifier's parameters and an optimizer state for them
/// (what `pretrain` writes beside its model to resume from).
fn optimizer_file(dir: &Path) -> (PathBuf, Vec<Param>) {
    let (_, params, _) = checkpoint::load_classifier(&fixture().ckpt).unwrap();
    let opt = AdamW::new(AdamWConfig::default(), &params);
    let path = dir.join("optimizer.safetensors");
    optim_state::save_optimizer(&path, &opt, &params, true).unwrap();
    (path, params)
}

fn check_optimizer(bytes: &[u8], path: &Path, params: &[Param]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| e.to_string())?;
    match optim_state::load_optimizer(path, params) {
        Ok(_) => Ok(()),
        Err(e) => names(&e.to_string(), path),
    }
}

#[test]
fn mutated_checkpoints_load_or_name_the_file() {
    let f = fixture();
    let dir = scratch("checkpoints");
    let mut run = Run::new(2, "checkpoints");
    let mut rng = StdRng::seed_from_u64(SEED ^ 2);
    let path = dir.join("mutant.safetensors");
    let t = checkpoint_target(&f.ckpt);
    check_checkpoint(&t.bytes, &path).expect("the canonical checkpoint loads");
    for i in 0..200 {
        let (bytes, label) = mutant(&mut rng, &t, i);
        run.mutant(&label, &bytes, || check_checkpoint(&bytes, &path));
    }
    let (t, data) = checkpoint_header_target(&f.ckpt);
    for i in 0..300 {
        let (json, label) = mutant(&mut rng, &t, i);
        let bytes = with_header(&json, &data);
        run.mutant(&label, &bytes, || check_checkpoint(&bytes, &path));
    }
    let (opt_path, params) = optimizer_file(&dir);
    let (t, data) = checkpoint_header_target(&opt_path);
    let t = Target {
        name: "optimizer state".into(),
        ..t
    };
    let path = dir.join("mutant-optimizer.safetensors");
    for i in 0..150 {
        let (json, label) = mutant(&mut rng, &t, i);
        let bytes = with_header(&json, &data);
        run.mutant(&label, &bytes, || check_optimizer(&bytes, &path, &params));
    }
    run.finish();
}

/// Pretraining options for the fixture's dataset: a tiny LM, two steps.
fn pretrain_opts(out: &Path, resume: bool) -> PretrainOpts {
    let info = load_dataset_info(&fixture().data).unwrap();
    PretrainOpts {
        cfg: tiny_model(FfnKind::Moe, info.vocab_size, 32),
        steps: 2,
        batch: 4,
        seq_len: 32,
        lr: 1e-3,
        warmup: 1,
        clip: 1.0,
        seed: 1,
        save_every: 0,
        out: out.to_path_buf(),
        resume,
        progress: false,
        force: !resume,
        stop_after: None,
        device: Device::Cpu,
        precision: Precision::F32,
        keep_at: Vec::new(),
    }
}

/// `pretrain --resume` from a folder whose `file` is `bytes`: it resumes, or
/// fails naming the file.
fn check_resume(bytes: &[u8], out: &Path, file: &Path) -> Result<(), String> {
    std::fs::write(file, bytes).map_err(|e| e.to_string())?;
    let data = &fixture().data;
    let train = open_part(data, "train").map_err(|e| e.to_string())?;
    let info = load_dataset_info(data).map_err(|e| e.to_string())?;
    match pretrain(&pretrain_opts(out, true), &train, info.vocab_hash) {
        Ok(_) => Ok(()),
        Err(e) => names(&format!("{e:#}"), file),
    }
}

/// `finetune --init` from the (mutated) pretrained model at `init`: it
/// trains, or fails naming the file.
fn check_init(bytes: &[u8], init: &Path, out: &Path) -> Result<(), String> {
    std::fs::write(init, bytes).map_err(|e| e.to_string())?;
    let data = &fixture().data;
    let info = load_dataset_info(data).map_err(|e| e.to_string())?;
    let (train, val) = (
        open_part(data, "train").map_err(|e| e.to_string())?,
        open_part(data, "val").map_err(|e| e.to_string())?,
    );
    let opts = FinetuneOpts {
        init: Some(init.to_path_buf()),
        max_epochs: 1,
        batch: 16,
        force: true,
        ..tiny_finetune(
            tiny_model(FfnKind::Moe, info.vocab_size, 32),
            &info.classes,
            out,
        )
    };
    match finetune(&opts, &train, &val, info.vocab_hash) {
        Ok(_) => Ok(()),
        Err(e) => names(&format!("{e:#}"), init),
    }
}

#[test]
fn mutated_pretraining_checkpoints_resume_or_name_the_file() {
    let f = fixture();
    let dir = scratch("pretraining");
    let train = open_part(&f.data, "train").unwrap();
    let info = load_dataset_info(&f.data).unwrap();
    let first = dir.join("first");
    let ckpt = pretrain(&pretrain_opts(&first, false), &train, info.vocab_hash)
        .unwrap()
        .checkpoint;
    let optimizer = optim_state::optimizer_path(&ckpt);
    let out = dir.join("resumed");
    std::fs::create_dir_all(&out).unwrap();
    let mut run = Run::new(5, "pretraining");
    let mut rng = StdRng::seed_from_u64(SEED ^ 5);
    for (file, n) in [(&ckpt, 150), (&optimizer, 60)] {
        let (t, data) = checkpoint_header_target(file);
        let name = file.file_name().unwrap();
        let t = Target {
            name: format!("{} metadata", name.to_string_lossy()),
            ..t
        };
        for i in 0..n {
            // The run rewrites both files: start each mutant from the originals.
            std::fs::copy(&ckpt, model_path(&out)).unwrap();
            std::fs::copy(&optimizer, optim_state::optimizer_path(&model_path(&out))).unwrap();
            let (json, label) = mutant(&mut rng, &t, i);
            let bytes = with_header(&json, &data);
            let target = out.join(name);
            run.mutant(&label, &bytes, || check_resume(&bytes, &out, &target));
        }
    }
    // The pretrained model as fine-tuning's starting point.
    let (t, data) = checkpoint_header_target(&ckpt);
    let t = Target {
        name: "pretrained model metadata".into(),
        ..t
    };
    let init = dir.join("init.safetensors");
    for i in 0..60 {
        let (json, label) = mutant(&mut rng, &t, i);
        let bytes = with_header(&json, &data);
        run.mutant(&label, &bytes, || {
            check_init(&bytes, &init, &dir.join("ft"))
        });
    }
    run.finish();
}

// ---------------------------------------------------------------------------
// 4. Datasets: dataset.json, vocab.txt and the token shards.

/// A copy of the fixture's dataset that mutants overwrite one file at a time.
fn dataset_copy(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for e in std::fs::read_dir(&fixture().data).unwrap().flatten() {
        std::fs::copy(e.path(), data.join(e.file_name())).unwrap();
    }
    data
}

fn eval_opts(split: &str) -> EvalOpts {
    EvalOpts {
        split: split.into(),
        batch: 16,
        seq_len: None,
        device: Device::Cpu,
        precision: Precision::F32,
        routing: false,
        progress: false,
    }
}

/// Ok, or an error (its whole chain) naming the dataset folder.
fn in_dataset<T>(r: anyhow::Result<T>, data: &Path) -> Result<Option<T>, String> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => names(&format!("{e:#}"), data).map(|()| None),
    }
}

fn check_manifest(bytes: &[u8], data: &Path) -> Result<(), String> {
    let path = data.join("dataset.json");
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    if let Err(e) = load_dataset_info(data) {
        return names(&format!("{e:#}"), &path);
    }
    in_dataset(
        evaluate_split(&fixture().ckpt, data, &eval_opts("test")),
        data,
    )?;
    stream_through_c_api(data)
}

/// The fixture's frames of one capture, as read from it.
fn fixture_frames() -> &'static [Frame] {
    static FRAMES: OnceLock<Vec<Frame>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        let mut out = Vec::new();
        let cap = fixture().caps.join("web/web0.pcap");
        CaptureReader::open(&cap)
            .unwrap()
            .for_each_frame(|f| out.push((f.ts_ns, f.link_type, f.data.to_vec(), f.orig_len)))
            .unwrap();
        out
    })
}

/// A monitor's way in: `tmoe_open` with the (mutated) dataset folder names
/// it when it fails; when it opens, frames become verdicts (the dataset's
/// tokenizer encodes their flows).
fn stream_through_c_api(data: &Path) -> Result<(), String> {
    let ckpt = CString::new(fixture().ckpt.to_str().unwrap()).unwrap();
    let dir = CString::new(data.to_str().unwrap()).unwrap();
    // SAFETY: valid strings and NULLs as the header allows.
    let h = unsafe {
        tmoe_open(
            ckpt.as_ptr(),
            dir.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            0,
            0,
        )
    };
    if h.is_null() {
        return names(&last_error(), data);
    }
    let mut rng = StdRng::seed_from_u64(SEED);
    let fed = feed_mutant(&mut rng, h, fixture_frames()).and_then(|()| drain(h));
    // SAFETY: a live handle, closed once.
    unsafe { tmoe_close(h) };
    fed
}

fn check_vocab(bytes: &[u8], data: &Path) -> Result<(), String> {
    let path = data.join("vocab.txt");
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    if let Err(e) = Vocab::load(&path) {
        return names(&format!("{e:#}"), &path);
    }
    stream_through_c_api(data)
}

/// A mutated shard opens (and then reads and scores) or names the file.
fn check_shard(bytes: &[u8], data: &Path, split: &str) -> Result<(), String> {
    let path = data.join(format!("{split}.tmoe"));
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    let shard = match Shard::open(&path) {
        Ok(s) => s,
        Err(e) => return names(&e.to_string(), &path),
    };
    for i in 0..shard.count() {
        let _ = (shard.tokens(i), shard.n_tokens(i), shard.label(i));
        let _ = (shard.meta(i).src_addr(), shard.meta(i).dst_addr());
    }
    in_dataset(
        evaluate_split(&fixture().ckpt, data, &eval_opts(split)),
        data,
    )?;
    // Fine-tuning's way in: the dataset's part, then a step on its flows.
    let Some(part) = in_dataset(open_part(data, split), data)? else {
        return Ok(());
    };
    in_dataset(train_step(&part, data), data)?;
    Ok(())
}

/// One classification training step of a fresh tiny model on up to 16 of
/// `part`'s labelled flows (what `finetune` does with each batch).
fn train_step(part: &Shard, data: &Path) -> anyhow::Result<()> {
    let info = load_dataset_info(data)?;
    let idx: Vec<usize> = (0..part.count())
        .filter(|&i| part.label(i).is_some())
        .take(16)
        .collect();
    if idx.is_empty() {
        return Ok(());
    }
    let batch = make_batch(part, &idx, part.seq_len());
    let cfg = ModelConfig {
        n_classes: info.classes.len(),
        ..tiny_model(FfnKind::Moe, info.vocab_size, part.seq_len())
    };
    let (model, params) = Model::new(cfg, 1)?;
    let opt = AdamW::new(AdamWConfig::default(), &params);
    let mut tr = Trainer::new(Device::Cpu, Precision::F32, params, opt)?;
    tr.step(&model, &batch, Task::Classify, 0.02, 1e-3, 1.0)?;
    Ok(())
}

/// A packet metadata file (the baselines' input): read, or named.
fn check_pkts(bytes: &[u8], data: &Path, split: &str) -> Result<(), String> {
    let path = data.join(format!("{split}.pkts"));
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    match packet_meta::read(&path) {
        Ok(_) => Ok(()),
        Err(e) => names(&format!("{e:#}"), &path),
    }
}

/// Label CSVs in both layouts `tmoe tokenize --labels csv:` reads.
const LABEL_CSVS: [(&str, &str); 2] = [
    (
        "ndpi.csv",
        "file,l4,src,dst,app,category,encrypted,packets,bytes\n\
         a.pcap,TCP,192.168.2.126:45380,161.117.13.29:80,HTTP.1kxun,Streaming,0,80,183125\n\
         a.pcap,UDP,[fe80::1]:546,[ff02::1:2]:547,DHCPV6,Network,0,5,490\n\
         \"sub/c.pcap\",TCP,10.0.0.1:1,10.0.0.2:443,TLS.YouTube,Media,1,20,9000\n",
    ),
    (
        "cic.csv",
        "Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp, Label\n\
         x, 192.168.10.5, 50000, 8.8.8.8, 53, 17, t, BENIGN\n\
         w, fe80::1, 1000, fe80::2, 2000, 6, t, PortScan\n",
    ),
];

fn check_label_csv(bytes: &[u8], path: &Path) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| e.to_string())?;
    match FlowLabels::load(path, None) {
        Ok(_) => Ok(()),
        Err(e) => names(&format!("{e:#}"), path),
    }
}

#[test]
fn mutated_label_csvs_load_or_name_the_file() {
    let dir = scratch("label_csvs");
    let mut run = Run::new(4, "label_csvs");
    let mut rng = StdRng::seed_from_u64(SEED ^ 4);
    for (name, text) in LABEL_CSVS {
        let t = Target {
            text: true,
            ..Target::new(name, text.as_bytes().to_vec())
        };
        let path = dir.join(name);
        check_label_csv(&t.bytes, &path).expect("the CSV loads");
        for i in 0..150 {
            let (bytes, label) = mutant(&mut rng, &t, i);
            run.mutant(&label, &bytes, || check_label_csv(&bytes, &path));
        }
    }
    run.finish();
}

#[test]
fn mutated_datasets_open_or_name_the_file() {
    let f = fixture();
    let dir = scratch("datasets");
    let data = dataset_copy(&dir);
    let mut run = Run::new(3, "datasets");
    let mut rng = StdRng::seed_from_u64(SEED ^ 3);
    let manifest = text_target(&f.data.join("dataset.json"), "dataset.json");
    for i in 0..120 {
        let (bytes, label) = mutant(&mut rng, &manifest, i);
        run.mutant(&label, &bytes, || check_manifest(&bytes, &data));
    }
    std::fs::write(data.join("dataset.json"), &manifest.bytes).unwrap();
    // Few: each one that reads builds a tokenizer (65,536 words spelled).
    let vocab = text_target(&f.data.join("vocab.txt"), "vocab.txt");
    for i in 0..20 {
        let (bytes, label) = mutant(&mut rng, &vocab, i);
        run.mutant(&label, &bytes, || check_vocab(&bytes, &data));
    }
    std::fs::write(data.join("vocab.txt"), &vocab.bytes).unwrap();
    for split in ["train", "test"] {
        let t = shard_target(&f.data.join(format!("{split}.tmoe")), split);
        for i in 0..150 {
            let (bytes, label) = mutant(&mut rng, &t, i);
            run.mutant(&label, &bytes, || check_shard(&bytes, &data, split));
        }
        std::fs::write(data.join(format!("{split}.tmoe")), &t.bytes).unwrap();
        let t = pkts_target(&f.data.join(format!("{split}.pkts")), split);
        for i in 0..60 {
            let (bytes, label) = mutant(&mut rng, &t, i);
            run.mutant(&label, &bytes, || check_pkts(&bytes, &data, split));
        }
        std::fs::write(data.join(format!("{split}.pkts")), &t.bytes).unwrap();
    }
    run.finish();
}
