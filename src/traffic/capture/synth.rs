//! Synthetic labelled traffic: pcaps of several application classes with
//! distinct, realistic protocol behaviour, so the whole pipeline can be shown
//! without outside data.
//!
//! Classes are built to need more than the first packet: `web-tls` and
//! `video-tls` share the TCP handshake (their first three packets) and first
//! differ in the ClientHello (fourth packet): a browser's is padded to at least
//! 512 bytes and carries many extensions, a streaming player's TLS stack sends a
//! small one (the difference JA3-style fingerprints rely on). They differ again
//! in the server's handshake flight and what follows. `mqtt` and `bulk` open
//! alike (three-way handshake) and differ from the fourth packet on.
//!
//! Why the difference sits in the fourth packet: with the demo's vocabulary
//! (512 + 5 entries) a packet's attributes take about 12 tokens and 40 payload
//! bytes about 100, so the demo's 64 tokens hold the three handshake packets
//! and the ClientHello's attributes, not the server's flight. Noise: RTT and
//! jitter per flow, random payload bytes, IPv4/IPv6 mix, occasional loss (TCP
//! retransmits, UDP just drops). Output: `DIR/<class>/<class>-NNN.pcap`, so
//! labels come from folder names. Deterministic for a given seed.

use std::fs::File;
use std::io::BufWriter;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::traffic::capture::decode::link;
use crate::traffic::capture::pcap_writer::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, Ipv4Opts, PcapWriter, ethernet, ipv4, ipv6, tcp, udp,
};
use crate::traffic::types::{PROTO_TCP, PROTO_UDP, tcp_flags::*};

/// The classes `synthesize` writes, sorted by name.
pub const CLASSES: [&str; 6] = ["bulk", "dns", "mqtt", "video-tls", "voip", "web-tls"];

/// At most this many flows go into one file, unless configured.
pub const FLOWS_PER_FILE: usize = 40;
const MSS: usize = 1448;
const MS: u64 = 1_000_000;
/// 2024-01-01T00:00:00Z.
const EPOCH_NS: u64 = 1_704_067_200 * 1_000_000_000;

#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub out: PathBuf,
    pub flows_per_class: usize,
    /// At most this many flows per file (1: a capture per flow, as a sensor
    /// that rotates files often writes them).
    pub flows_per_file: usize,
    pub seed: u64,
    /// Write into a non-empty `out` (an earlier synth's captures in the
    /// class folders are replaced; other files are kept).
    pub force: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SynthSummary {
    pub classes: Vec<String>,
    pub files: usize,
    pub flows: usize,
    pub packets: u64,
    pub bytes: u64,
}

/// Writes `flows_per_class` flows of every class under `cfg.out`.
pub fn synthesize(cfg: &SynthConfig) -> anyhow::Result<SynthSummary> {
    synthesize_with_progress(cfg, false)
}

/// [`synthesize`], with a progress bar of the files written (rate, ETA) on
/// stderr when `progress` is set.
pub fn synthesize_with_progress(cfg: &SynthConfig, progress: bool) -> anyhow::Result<SynthSummary> {
    if cfg.flows_per_class == 0 {
        bail!("--flows-per-class must be at least 1");
    }
    let non_empty = cfg.out.is_dir()
        && std::fs::read_dir(&cfg.out)
            .with_context(|| format!("reading {}", cfg.out.display()))?
            .next()
            .is_some();
    if cfg.out.exists() && !cfg.out.is_dir() {
        bail!("{} exists and is not a directory", cfg.out.display());
    }
    if non_empty && !cfg.force {
        bail!(
            "{} is not empty; pass --force to replace an earlier synth's captures in its class folders",
            cfg.out.display()
        );
    }
    for class in CLASSES {
        let dir = cfg.out.join(class);
        // An earlier synth's captures only (`dns-000.pcap`, ...): the folder
        // went whole, with whatever else of the user's was in it.
        if dir.is_dir() {
            let entries =
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
            for e in entries {
                let e = e.with_context(|| format!("reading {}", dir.display()))?;
                let own = e.file_name().to_str().is_some_and(|n| own_file(n, class));
                if own && e.file_type().is_ok_and(|t| t.is_file()) {
                    std::fs::remove_file(e.path())
                        .with_context(|| format!("removing {}", e.path().display()))?;
                }
            }
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let n = cfg.flows_per_class;
    let n_files = n.div_ceil(cfg.flows_per_file.max(1)).max(2).min(n);
    let bar = crate::progress::progress_bar(
        (CLASSES.len() * n_files) as u64,
        "synthesising captures",
        progress,
    );
    // A job per file, each summed as it ends: nothing is held per file (a
    // list of every file's job ran out of memory at 10^12 flows).
    let (files, flows, packets, bytes) = (0..CLASSES.len() * n_files)
        .into_par_iter()
        .map(|job| {
            let (class, file) = (job / n_files, job % n_files);
            // Flows of this file: an even share, the first files take the rest.
            let flows = n / n_files + usize::from(file < n % n_files);
            let path = cfg
                .out
                .join(CLASSES[class])
                .join(format!("{}-{file:03}.pcap", CLASSES[class]));
            let seed = mix(cfg.seed ^ mix(((class as u64) << 32) | file as u64));
            let written = write_file(&path, class, file, flows, seed);
            bar.inc(1);
            written.map(|(p, b)| (1, flows, p, b))
        })
        .try_reduce(
            || (0, 0, 0, 0),
            |a, b| Ok((a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3)),
        )?;
    bar.finish_and_clear();
    Ok(SynthSummary {
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        files,
        flows,
        packets,
        bytes,
    })
}

/// Whether `name` is one of synth's capture names in `class`'s folder
/// (`{class}-{number}.pcap`).
fn own_file(name: &str, class: &str) -> bool {
    name.strip_prefix(class)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(".pcap"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// splitmix64: decorrelates per-file seeds.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn write_file(
    path: &Path,
    class: usize,
    file: usize,
    flows: usize,
    seed: u64,
) -> anyhow::Result<(u64, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
    let gateway: [u8; 6] = [0x00, 0x1b, 0x21, rng.random(), rng.random(), rng.random()];
    let mut start = EPOCH_NS + file as u64 * 3600 * 1_000_000_000;
    let port_base: u16 = rng.random_range(10_000..20_000);
    for i in 0..flows {
        start += (rng.random::<f64>() * 800.0) as u64 * MS;
        let mut conv = Conv::new(&mut rng, start, port_base + i as u16, gateway);
        match CLASSES[class] {
            "web-tls" => web_tls(&mut conv),
            "video-tls" => video_tls(&mut conv),
            "mqtt" => mqtt(&mut conv),
            "bulk" => bulk(&mut conv),
            "dns" => dns(&mut conv),
            "voip" => voip(&mut conv),
            other => bail!("unknown synthetic class {other}"),
        }
        frames.append(&mut conv.frames);
    }
    // Flows overlap in time: write the file in capture order.
    frames.sort_by_key(|(ts, _)| *ts);
    let out = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = PcapWriter::new(BufWriter::with_capacity(1 << 16, out), link::ETHERNET)?;
    let mut bytes = 24;
    for (ts, f) in &frames {
        w.write_frame(*ts, f)?;
        bytes += 16 + f.len() as u64;
    }
    use std::io::Write;
    w.into_inner().flush()?;
    Ok((frames.len() as u64, bytes))
}

/// One client/server conversation being written.
struct Conv<'r> {
    rng: &'r mut StdRng,
    client: IpAddr,
    server: IpAddr,
    client_mac: [u8; 6],
    gateway: [u8; 6],
    client_port: u16,
    server_port: u16,
    /// Current time (ns).
    t: u64,
    /// Round-trip time of this flow (ns).
    rtt: u64,
    c_seq: u32,
    s_seq: u32,
    loss: f64,
    frames: Vec<(u64, Vec<u8>)>,
}

impl<'r> Conv<'r> {
    fn new(rng: &'r mut StdRng, t: u64, client_port: u16, gateway: [u8; 6]) -> Conv<'r> {
        let v6 = rng.random_bool(0.15);
        let (client, server) = if v6 {
            let c = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, rng.random(), rng.random());
            let s = Ipv6Addr::new(
                0x2001,
                0xdb8,
                rng.random(),
                rng.random(),
                0,
                0,
                0,
                rng.random(),
            );
            (IpAddr::V6(c), IpAddr::V6(s))
        } else {
            let c = Ipv4Addr::new(192, 168, rng.random_range(0..4), rng.random_range(2..250));
            let s = Ipv4Addr::new(
                rng.random_range(11..220),
                rng.random(),
                rng.random(),
                rng.random_range(1..255),
            );
            (IpAddr::V4(c), IpAddr::V4(s))
        };
        let client_mac = [
            0x02,
            rng.random(),
            rng.random(),
            rng.random(),
            rng.random(),
            rng.random(),
        ];
        let rtt = rng.random_range(4..90) * MS + rng.random_range(0..MS);
        let loss = rng.random_range(0.0..0.03);
        Conv {
            client,
            server,
            client_mac,
            gateway,
            client_port,
            server_port: 0,
            t,
            rtt,
            c_seq: rng.random(),
            s_seq: rng.random(),
            loss,
            frames: Vec::new(),
            rng,
        }
    }

    /// Ethernet + IP around an L4 segment.
    fn frame(&mut self, from_client: bool, proto: u8, segment: &[u8]) -> Vec<u8> {
        let (src, dst) = if from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let (smac, dmac) = if from_client {
            (self.client_mac, self.gateway)
        } else {
            (self.gateway, self.client_mac)
        };
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let opts = Ipv4Opts {
                    ttl: if from_client {
                        64
                    } else {
                        self.rng.random_range(40..120)
                    },
                    id: self.rng.random(),
                    ..Ipv4Opts::default()
                };
                ethernet(
                    smac,
                    dmac,
                    &[],
                    ETHERTYPE_IPV4,
                    &ipv4(s, d, proto, segment, &opts),
                )
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => ethernet(
                smac,
                dmac,
                &[],
                ETHERTYPE_IPV6,
                &ipv6(s, d, proto, &[], segment),
            ),
            _ => unreachable!("both ends share an address family"),
        }
    }

    /// Records a frame at the current time; a lost TCP frame shows up again
    /// as a retransmission after a timeout, a lost UDP frame is gone. The
    /// conversation waits for the retransmission (its next step needs the
    /// lost bytes acknowledged), so no later frame, and never the close,
    /// comes before it: a retransmission after both FINs would be read as a
    /// flow of its own.
    fn emit(&mut self, from_client: bool, proto: u8, segment: &[u8]) {
        let f = self.frame(from_client, proto, segment);
        if self.rng.random_bool(self.loss) {
            if proto == PROTO_TCP {
                self.t += 200 * MS + 2 * self.rtt;
                self.frames.push((self.t, f));
            }
        } else {
            self.frames.push((self.t, f));
        }
    }

    /// Advances time by `base` with ±25 % jitter.
    fn wait(&mut self, base: u64) {
        let j = self.rng.random_range(0.75..1.25);
        self.t += (base as f64 * j) as u64 + 1000;
    }

    /// Half a round trip: the other side's answer arrives.
    fn turn(&mut self) {
        let half = self.rtt / 2;
        self.wait(half);
    }

    /// Back-to-back segments from one side.
    fn gap(&mut self) {
        let g = self.rng.random_range(20_000..300_000);
        self.t += g;
    }

    fn tcp(&mut self, from_client: bool, flags: u8, payload: &[u8]) {
        let (seq, ack) = if from_client {
            (self.c_seq, self.s_seq)
        } else {
            (self.s_seq, self.c_seq)
        };
        let (sp, dp) = if from_client {
            (self.client_port, self.server_port)
        } else {
            (self.server_port, self.client_port)
        };
        let window = if from_client { 64_240 } else { 65_160 };
        let ack = if flags & ACK != 0 { ack } else { 0 };
        let seg = tcp(sp, dp, seq, ack, flags, window, payload);
        self.emit(from_client, PROTO_TCP, &seg);
        let advance = payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
        if from_client {
            self.c_seq = self.c_seq.wrapping_add(advance);
        } else {
            self.s_seq = self.s_seq.wrapping_add(advance);
        }
    }

    fn handshake(&mut self, server_port: u16) {
        self.server_port = server_port;
        self.tcp(true, SYN, &[]);
        self.turn();
        self.tcp(false, SYN | ACK, &[]);
        self.turn();
        self.tcp(true, ACK, &[]);
    }

    /// `bytes` of data from one side in MSS segments; the receiver ACKs every
    /// second segment. `first` prefixes the first segment (a record header).
    fn send(&mut self, from_client: bool, payload: &[u8]) {
        for (i, chunk) in payload.chunks(MSS).enumerate() {
            if i > 0 {
                self.gap();
            }
            self.tcp(from_client, PSH | ACK, chunk);
            if i % 2 == 1 {
                self.gap();
                self.tcp(!from_client, ACK, &[]);
            }
        }
    }

    fn close(&mut self, client_first: bool) {
        self.wait(self.rtt);
        self.tcp(client_first, FIN | ACK, &[]);
        self.turn();
        self.tcp(!client_first, FIN | ACK, &[]);
        self.turn();
        self.tcp(client_first, ACK, &[]);
    }

    fn udp(&mut self, from_client: bool, payload: &[u8]) {
        let (sp, dp) = if from_client {
            (self.client_port, self.server_port)
        } else {
            (self.server_port, self.client_port)
        };
        self.emit(from_client, PROTO_UDP, &udp(sp, dp, payload));
    }

    /// Random payload bytes. A xorshift stream seeded from the flow's RNG:
    /// payload is most of the volume, and this keeps debug builds quick.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut x: u64 = self.rng.random::<u64>() | 1;
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// A TLS record: content type, version 3.3, length, random body.
    fn tls_record(&mut self, content_type: u8, len: usize) -> Vec<u8> {
        let mut r = vec![content_type, 3, 3, (len >> 8) as u8, len as u8];
        r.extend(self.bytes(len));
        r
    }

    /// A ClientHello record (handshake type 1) of `len` body bytes.
    fn client_hello(&mut self, len: usize) -> Vec<u8> {
        let mut r = self.tls_record(0x16, len);
        r[1..3].copy_from_slice(&[3, 1]);
        r[5] = 1;
        r
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        self.rng.random_range(lo..hi)
    }
}

/// TLS handshake up to the server's Finished; `hello` is the ClientHello's
/// size, `server_flight` that of the ServerHello..ServerHelloDone flight,
/// `tickets` session tickets follow.
fn tls_handshake(c: &mut Conv<'_>, hello: usize, server_flight: usize, tickets: usize) {
    c.handshake(443);
    c.gap();
    let ch = c.client_hello(hello);
    c.tcp(true, PSH | ACK, &ch);
    c.turn();
    let mut flight = c.tls_record(0x16, server_flight);
    flight[5] = 2; // ServerHello
    c.send(false, &flight);
    c.turn();
    let mut fin = c.tls_record(0x16, 37);
    fin.extend(c.tls_record(0x14, 1));
    fin.extend(c.tls_record(0x16, 40));
    c.tcp(true, PSH | ACK, &fin);
    c.turn();
    let mut reply = Vec::new();
    for _ in 0..tickets {
        let len = c.range(180, 260);
        reply.extend(c.tls_record(0x16, len));
    }
    reply.extend(c.tls_record(0x14, 1));
    reply.extend(c.tls_record(0x16, 40));
    c.tcp(false, PSH | ACK, &reply);
}

/// Web browsing: a browser's ClientHello (padding extension: at least 512
/// bytes; GREASE, ALPN, many ciphers and groups), a certificate chain of 2-3
/// segments, session tickets, then a few request/response exchanges with
/// think time between them.
fn web_tls(c: &mut Conv<'_>) {
    let hello = c.range(512, 1200);
    let flight = 2 * MSS + c.range(200, 700);
    tls_handshake(c, hello, flight, 2);
    let exchanges = c.range(1, 5);
    for _ in 0..exchanges {
        c.turn();
        let req = c.range(350, 900);
        let rec = c.tls_record(0x17, req);
        c.tcp(true, PSH | ACK, &rec);
        c.turn();
        let resp = c.range(200, 8 * MSS);
        let rec = c.tls_record(0x17, resp);
        c.send(false, &rec);
        let think = c.range(50, 2000) as u64 * MS;
        c.wait(think);
    }
    c.close(true);
}

/// Video streaming: a player's lean TLS stack (small ClientHello), a shorter
/// certificate flight, no tickets, a small request, then bursts of full-size
/// segments with pauses.
fn video_tls(c: &mut Conv<'_>) {
    let hello = c.range(180, 420);
    let flight = MSS + c.range(900, 1300);
    tls_handshake(c, hello, flight, 0);
    c.turn();
    let req = c.range(200, 350);
    let rec = c.tls_record(0x17, req);
    c.tcp(true, PSH | ACK, &rec);
    c.turn();
    let bursts = c.range(2, 4);
    for _ in 0..bursts {
        let segs = c.range(6, 14);
        let rec = c.tls_record(0x17, segs * MSS - 5);
        c.send(false, &rec);
        let pause = c.range(100, 500) as u64 * MS;
        c.wait(pause);
    }
    c.close(false);
}

/// MQTT telemetry: CONNECT / CONNACK, then small periodic PUBLISH messages
/// acknowledged by bare TCP ACKs, PINGs now and then, DISCONNECT.
fn mqtt(c: &mut Conv<'_>) {
    c.handshake(1883);
    c.gap();
    let id_len = c.range(8, 24);
    let mut connect = vec![
        0x10,
        (10 + 2 + id_len) as u8,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0x02,
        0,
        60,
    ];
    connect.extend_from_slice(&[0, id_len as u8]);
    for _ in 0..id_len {
        let ch = b'a' + c.range(0, 26) as u8;
        connect.push(ch);
    }
    c.tcp(true, PSH | ACK, &connect);
    c.turn();
    c.tcp(false, PSH | ACK, &[0x20, 2, 0, 0]);
    let device = c.range(0, 1000);
    let publishes = c.range(3, 14);
    for i in 0..publishes {
        let period = c.range(800, 4000) as u64 * MS;
        c.wait(period);
        let topic = format!("sensors/{device}/temp");
        let value = format!(
            "{{\"t\":{}.{},\"seq\":{i}}}",
            c.range(15, 30),
            c.range(0, 10)
        );
        let mut msg = vec![
            0x30,
            (2 + topic.len() + value.len()) as u8,
            0,
            topic.len() as u8,
        ];
        msg.extend_from_slice(topic.as_bytes());
        msg.extend_from_slice(value.as_bytes());
        c.tcp(true, PSH | ACK, &msg);
        c.turn();
        c.tcp(false, ACK, &[]);
        if c.rng.random_bool(0.2) {
            c.gap();
            c.tcp(true, PSH | ACK, &[0xc0, 0]);
            c.turn();
            c.tcp(false, PSH | ACK, &[0xd0, 0]);
        }
    }
    c.gap();
    c.tcp(true, PSH | ACK, &[0xe0, 0]);
    c.close(true);
}

/// SSH-like bulk upload: the server speaks first (banner), key exchange,
/// then a long one-way transfer of full segments.
fn bulk(c: &mut Conv<'_>) {
    c.handshake(22);
    c.turn();
    let server_banner = format!(
        "SSH-2.0-OpenSSH_{}.{}p1\r\n",
        c.range(7, 10),
        c.range(0, 10)
    );
    c.tcp(false, PSH | ACK, server_banner.as_bytes());
    c.gap();
    let client_banner = format!("SSH-2.0-OpenSSH_{}.{}\r\n", c.range(7, 10), c.range(0, 10));
    c.tcp(true, PSH | ACK, client_banner.as_bytes());
    c.turn();
    let kex = c.range(1000, 1500);
    let kexinit = c.bytes(kex);
    c.tcp(true, PSH | ACK, &kexinit);
    c.turn();
    let kex = c.range(900, 1100);
    let kexinit = c.bytes(kex);
    c.tcp(false, PSH | ACK, &kexinit);
    c.turn();
    let init = c.bytes(48);
    c.tcp(true, PSH | ACK, &init);
    c.turn();
    let reply_len = c.range(500, 1100);
    let reply = c.bytes(reply_len);
    c.tcp(false, PSH | ACK, &reply);
    c.turn();
    let upload = c.range(12, 40) * MSS;
    let data = c.bytes(upload);
    c.send(true, &data);
    c.close(true);
}

/// DNS: two or three queries (A, AAAA, HTTPS) from one socket, each answered.
fn dns(c: &mut Conv<'_>) {
    c.server_port = 53;
    let labels = c.range(2, 4);
    let mut qname = Vec::new();
    for _ in 0..labels {
        let len = c.range(2, 14);
        qname.push(len as u8);
        for _ in 0..len {
            let ch = b'a' + c.range(0, 26) as u8;
            qname.push(ch);
        }
    }
    qname.push(0);
    let queries = c.range(2, 4);
    for (i, qtype) in [1u16, 28, 65].into_iter().take(queries).enumerate() {
        if i > 0 {
            c.wait(MS);
        }
        let id: u16 = c.rng.random();
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(&qname);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        c.udp(true, &q);
        let answers = c.range(0, 4);
        let mut r = q.clone();
        r[2..4].copy_from_slice(&[0x81, 0x80]);
        r[7] = answers as u8;
        for _ in 0..answers {
            let rdata = if qtype == 28 { 16 } else { 4 };
            r.extend_from_slice(&[0xc0, 0x0c]);
            r.extend_from_slice(&qtype.to_be_bytes());
            r.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10, 0, rdata as u8]);
            r.extend(c.bytes(rdata));
        }
        c.turn();
        c.udp(false, &r);
    }
}

/// VoIP: RTP (G.711, 20 ms frames) in both directions.
fn voip(c: &mut Conv<'_>) {
    c.server_port = c.range(16_384, 32_768) as u16;
    let pt: u8 = if c.rng.random_bool(0.5) { 0 } else { 8 };
    let ssrc: [u32; 2] = [c.rng.random(), c.rng.random()];
    let mut seq: [u16; 2] = [c.rng.random(), c.rng.random()];
    let mut ts: [u32; 2] = [c.rng.random(), c.rng.random()];
    let frames = c.range(30, 80);
    let start = c.t;
    for i in 0..frames {
        for dir in 0..2 {
            // Each side sends every 20 ms with its own small jitter.
            c.t =
                start + i as u64 * 20 * MS + dir as u64 * c.rtt / 2 + c.range(0, 2_000_000) as u64;
            let marker = if i == 0 { 0x80 } else { 0 };
            let mut p = vec![0x80, pt | marker];
            p.extend_from_slice(&seq[dir].to_be_bytes());
            p.extend_from_slice(&ts[dir].to_be_bytes());
            p.extend_from_slice(&ssrc[dir].to_be_bytes());
            p.extend(c.bytes(160));
            c.udp(dir == 0, &p);
            seq[dir] = seq[dir].wrapping_add(1);
            ts[dir] = ts[dir].wrapping_add(160);
        }
    }
}
