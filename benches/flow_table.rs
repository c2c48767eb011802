//! The flow table's hashers (`traffic::flows::hash`), two ways:
//!
//! - `collisions`: inserts/s of N new flows, with random keys and with keys
//!   crafted so that their unkeyed `FastHasher` hashes share their low bits
//!   (the bits hashbrown's probe starts from), for the unkeyed and the keyed
//!   hasher. Crafted keys turn every unkeyed insert into a scan of all the
//!   keys before it; the keyed hasher does not notice them.
//! - `hashers`: the two hashers on real captures (../shared/data, or
//!   $TMOE_DATA): whole `read_capture` runs, and the table alone on
//!   pre-decoded packets, best of several alternating runs.
//!
//! `cargo bench --bench flow_table [-- collisions|hashers]` (default: both).

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use traffic_moe::traffic::capture::container::CaptureReader;
use traffic_moe::traffic::capture::decode::{DecodedPacket, decode_frame};
use traffic_moe::traffic::capture::reader::{ReadConfig, find_captures, read_capture_with};
use traffic_moe::traffic::dataset::split::Rng;
use traffic_moe::traffic::flows::hash::FAST_HASH_MUL;
use traffic_moe::traffic::flows::table::{FastState, FlowTable, KeyedState};
use traffic_moe::traffic::types::{Endpoint, FlowKey, PROTO_UDP};

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
const CLIENT_PORT: u16 = 40_000;

/// The inverse of an odd number modulo 2^64 (Newton: each step doubles the
/// correct low bits; 6 steps from 3 bits give 192).
fn inverse_mod_2_64(a: u64) -> u64 {
    let mut inv = a;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(inv)));
    }
    inv
}

fn key(client: Ipv4Addr, server_port: u16) -> FlowKey {
    let c = Endpoint {
        ip: IpAddr::V4(client),
        port: CLIENT_PORT,
    };
    let s = Endpoint {
        ip: IpAddr::V4(SERVER),
        port: server_port,
    };
    FlowKey::new(PROTO_UDP, c, s)
}

/// `n` distinct flow keys whose `FastHasher` hashes all end in the same
/// `bits` low bits (16 or more).
///
/// The key's last hashed value is the server port `p` (clients are
/// 10.x.y.z, below 192.168.0.1, so the server is the key's `hi` end), and
/// the hasher's last step is `h' = (rotl(h, 5) ^ p) * M` with M odd. The
/// low 16 bits of a product depend only on the low 16 bits of its factors,
/// so the low 16 bits of `h'` are fixed by the low 16 bits of `rotl(h, 5) ^ p`.
/// Hashing with `p = 0` gives `rotl(h, 5) = h'(0) * M^-1`; then
/// `p = (T * M^-1 ^ rotl(h, 5)) & 0xffff` makes the low 16 bits `T`. Bits
/// above 16 are not the port's to choose: clients are drawn until they match.
fn colliding_keys(n: usize, bits: u32) -> Vec<FlowKey> {
    let inv = inverse_mod_2_64(FAST_HASH_MUL);
    let target: u64 = 0x5a5a_5a5a & ((1 << bits) - 1);
    let want_low16 = (target & 0xffff).wrapping_mul(inv) & 0xffff;
    let mask = (1u64 << bits) - 1;
    let fast = FastState::default();
    let mut out = Vec::with_capacity(n);
    let mut client = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    while out.len() < n {
        client += 1;
        let ip = Ipv4Addr::from(client);
        let rotated = fast.hash_one(key(ip, 0)).wrapping_mul(inv);
        let port = ((want_low16 ^ rotated) & 0xffff) as u16;
        let k = key(ip, port);
        if fast.hash_one(k) & mask == target {
            out.push(k);
        }
    }
    out
}

fn random_keys(n: usize) -> Vec<FlowKey> {
    let mut rng = Rng::new(7);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + rng.below(1 << 24) as u32);
        let k = key(ip, rng.below(65_536) as u16);
        if seen.insert(k) {
            out.push(k);
        }
    }
    out
}

/// Distinct values of the low `bits` bits of the keys' unkeyed hashes.
fn distinct_low_bits(keys: &[FlowKey], bits: u32) -> usize {
    let fast = FastState::default();
    let mask = (1u64 << bits) - 1;
    keys.iter()
        .map(|k| fast.hash_one(k) & mask)
        .collect::<HashSet<_>>()
        .len()
}

fn packet(k: &FlowKey) -> DecodedPacket<'static> {
    DecodedPacket {
        src: k.lo.ip,
        dst: k.hi.ip,
        src_port: k.lo.port,
        dst_port: k.hi.port,
        proto: PROTO_UDP,
        ip_len: 28,
        tcp_flags: 0,
        payload_len: 0,
        payload: &[],
        truncated: false,
        first_fragment: false,
        macs: None,
    }
}

/// Seconds to open one flow per key (1 us apart: no sweep, no timeout; no cap).
fn insert_secs<S: BuildHasher>(keys: &[FlowKey], hasher: S) -> f64 {
    let cfg = ReadConfig {
        max_flows: usize::MAX,
        ..ReadConfig::default()
    };
    let mut table = FlowTable::with_hasher(&cfg, 0, hasher);
    let start = Instant::now();
    for (i, k) in keys.iter().enumerate() {
        table.push(i as u64 * 1000, &packet(k), &mut |_| {});
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(table.active(), keys.len());
    secs
}

fn collisions() {
    println!("== collisions: inserts/s of N new flows (one packet each), best of 3 ==");
    for bits in [16, 20] {
        let keys = colliding_keys(1000, bits);
        println!(
            "crafted ({bits} low bits): 1000 keys -> {} distinct low-16 hash values, {} distinct low-{bits}",
            distinct_low_bits(&keys, 16),
            distinct_low_bits(&keys, bits)
        );
    }
    println!(
        "random: 1000 keys -> {} distinct low-16 hash values",
        distinct_low_bits(&random_keys(1000), 16)
    );
    println!(
        "{:>8} {:<12} {:>14} {:>14} {:>9}",
        "N", "keys", "unkeyed/s", "keyed/s", "ratio"
    );
    // An unkeyed run on crafted keys grows as N^2: stop before it takes minutes
    // (3 runs at twice N: 12 times the last one).
    let budget = Duration::from_secs(120);
    let mut too_slow = [false; 2];
    for n in [10_000, 50_000, 100_000, 200_000] {
        let sets: [(&str, Option<Vec<FlowKey>>); 3] = [
            ("random", Some(random_keys(n))),
            ("crafted-16", (!too_slow[0]).then(|| colliding_keys(n, 16))),
            ("crafted-20", (!too_slow[1]).then(|| colliding_keys(n, 20))),
        ];
        for (i, (name, keys)) in sets.into_iter().enumerate() {
            let Some(keys) = keys else {
                println!("{n:>8} {name:<12} skipped (3 runs would take over {budget:?})");
                continue;
            };
            // Best of 3: the machine may be shared.
            let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(f64::MAX, f64::min);
            let unkeyed = best(&|| insert_secs(&keys, FastState::default()));
            let keyed = best(&|| insert_secs(&keys, KeyedState::new()));
            let rate = |s: f64| n as f64 / s;
            println!(
                "{n:>8} {name:<12} {:>14.0} {:>14.0} {:>8.1}x",
                rate(unkeyed),
                rate(keyed),
                unkeyed / keyed
            );
            if i > 0 && unkeyed * 12.0 > budget.as_secs_f64() {
                too_slow[i - 1] = true;
            }
        }
    }
}

/// A capture's TCP/UDP packets, decoded once, held in memory.
struct Owned {
    ts_ns: u64,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    proto: u8,
    ip_len: u32,
    tcp_flags: u8,
    payload_len: u32,
    payload: Vec<u8>,
}

fn decode_all(files: &[PathBuf]) -> Vec<Vec<Owned>> {
    files
        .iter()
        .map(|path| {
            let mut out = Vec::new();
            if let Ok(mut r) = CaptureReader::open(path) {
                let _ = r.for_each_frame(|f| {
                    if let Ok(p) = decode_frame(f.link_type, f.data, f.orig_len) {
                        out.push(Owned {
                            ts_ns: f.ts_ns,
                            src: p.src,
                            dst: p.dst,
                            src_port: p.src_port,
                            dst_port: p.dst_port,
                            proto: p.proto,
                            ip_len: p.ip_len,
                            tcp_flags: p.tcp_flags,
                            payload_len: p.payload_len,
                            payload: p.payload[..p.payload.len().min(40)].to_vec(),
                        });
                    }
                });
            }
            out
        })
        .collect()
}

/// Seconds to push every file's packets through its own table.
fn table_secs<S: BuildHasher>(files: &[Vec<Owned>], hasher: impl Fn() -> S) -> (f64, u64) {
    let cfg = ReadConfig::default();
    let mut flows = 0;
    let start = Instant::now();
    for (i, pkts) in files.iter().enumerate() {
        let mut table = FlowTable::with_hasher(&cfg, i as u32, hasher());
        for p in pkts {
            let d = DecodedPacket {
                src: p.src,
                dst: p.dst,
                src_port: p.src_port,
                dst_port: p.dst_port,
                proto: p.proto,
                ip_len: p.ip_len,
                tcp_flags: p.tcp_flags,
                payload_len: p.payload_len,
                payload: &p.payload,
                truncated: false,
                first_fragment: false,
                macs: None,
            };
            table.push(p.ts_ns, &d, &mut |_| flows += 1);
        }
        table.flush(&mut |_| flows += 1);
    }
    (start.elapsed().as_secs_f64(), flows)
}

/// Seconds for `read_capture` over every file, one thread.
fn read_secs<S: BuildHasher>(files: &[PathBuf], hasher: impl Fn() -> S) -> (f64, u64) {
    let cfg = ReadConfig::default();
    let start = Instant::now();
    let mut flows = 0;
    for (i, f) in files.iter().enumerate() {
        flows += read_capture_with(f, i as u32, &cfg, hasher(), &mut |_| {}).flows;
    }
    (start.elapsed().as_secs_f64(), flows)
}

const ROUNDS: usize = 31;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ROUNDS alternating runs of `run` with each hasher: best and median rates.
fn compare(what: &str, units: f64, unit: &str, run: &dyn Fn(bool) -> (f64, u64)) {
    let (mut fast, mut keyed) = (Vec::new(), Vec::new());
    let mut flows = (0, 0);
    for _ in 0..ROUNDS {
        let (s, n) = run(false);
        fast.push(s);
        flows.0 = n;
        let (s, n) = run(true);
        keyed.push(s);
        flows.1 = n;
    }
    assert_eq!(flows.0, flows.1, "same flows with either hasher");
    let best = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    let (fb, kb) = (best(&fast), best(&keyed));
    let (fm, km) = (median(fast), median(keyed));
    println!("{what} ({} flows)", flows.0);
    println!(
        "    best:   unkeyed {:>8.1} {unit}  keyed {:>8.1} {unit}  keyed/unkeyed time {:.3}",
        units / fb,
        units / kb,
        kb / fb
    );
    println!(
        "    median: unkeyed {:>8.1} {unit}  keyed {:>8.1} {unit}  keyed/unkeyed time {:.3}",
        units / fm,
        units / km,
        km / fm
    );
}

fn hashers(data: &Path) {
    println!("== hashers on real captures: {ROUNDS} alternating runs each, one thread ==");
    for set in ["iot-sentinel", "corpus"] {
        let dir = data.join(set);
        let Ok(files) = find_captures(&dir) else {
            println!("{}: not found, skipped", dir.display());
            continue;
        };
        let bytes: u64 = files
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        compare(
            &format!("{set} read_capture ({} files)", files.len()),
            bytes as f64 / 1e6,
            "MB/s",
            &|keyed| {
                if keyed {
                    read_secs(&files, KeyedState::new)
                } else {
                    read_secs(&files, FastState::default)
                }
            },
        );
        let decoded = decode_all(&files);
        let packets: usize = decoded.iter().map(Vec::len).sum();
        compare(
            &format!("{set} table only ({packets} packets)"),
            packets as f64 / 1e6,
            "Mpkt/s",
            &|keyed| {
                if keyed {
                    table_secs(&decoded, KeyedState::new)
                } else {
                    table_secs(&decoded, FastState::default)
                }
            },
        );
    }
}

fn main() {
    let what: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = what.is_empty();
    let data = std::env::var_os("TMOE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if all || what.iter().any(|w| w == "hashers") {
        hashers(&data);
    }
    if all || what.iter().any(|w| w == "collisions") {
        collisions();
    }
}
