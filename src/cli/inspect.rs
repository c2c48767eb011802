//! `tmoe inspect`: a capture's flows, and one flow's packets (attributes),
//! bytes and tokens side by side.

use super::flow_parts::FlowPartsArgs;
use crate::traffic::capture::reader::ReadConfig;
use crate::traffic::dataset::build::{load_dataset_info, read_sorted_flows};
use crate::traffic::tokens::bigram::{bigram_word, bigrams};
use crate::traffic::tokens::features::{ATTR_BYTES, flow_features, packet_attributes};
use crate::traffic::tokens::tokenize::{FlowTokenizer, TokenizerConfig};
use crate::traffic::tokens::vocab::Vocab;
use crate::traffic::types::{Endpoint, Flow};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// One capture file.
    pub capture: PathBuf,
    /// Show flow N (its index in --list).
    #[arg(long, conflicts_with = "list")]
    pub flow: Option<usize>,
    /// List the flows (the default when --flow is not given).
    #[arg(long)]
    pub list: bool,
    /// Vocabulary for the token column (BERT vocab.txt).
    #[arg(long, conflicts_with = "dataset")]
    pub vocab: Option<PathBuf>,
    /// Use a dataset directory's vocabulary and tokenizer settings (its
    /// view, packets and payload bytes: the flags that set them are refused
    /// with it, as the dataset's tokens could not be shown otherwise) and
    /// its idle timeout (flows end where the dataset's did).
    #[arg(long, conflicts_with_all = ["packets", "payload_bytes", "view", "mask_identifiers"])]
    pub dataset: Option<PathBuf>,
    #[command(flatten)]
    pub parts: FlowPartsArgs,
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn words(bytes: &[u8]) -> String {
    bigrams(bytes)
        .map(bigram_word)
        .collect::<Vec<_>>()
        .join(" ")
}

fn pieces(vocab: &Vocab, bytes: &[u8]) -> String {
    bigrams(bytes)
        .flat_map(|b| {
            vocab
                .pieces(b)
                .iter()
                .map(|&i| vocab.token(i).unwrap_or("?"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ip:port`, an IPv6 address in brackets (`[2001:db8::1]:443`): written
/// bare, its port read as one more group of the address.
fn endpoint(e: &Endpoint) -> std::net::SocketAddr {
    std::net::SocketAddr::new(e.ip, e.port)
}

/// Text report of one flow.
pub fn describe_flow(flow: &Flow, tok: Option<&FlowTokenizer>, cfg: &TokenizerConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "flow proto {} {} -> {}  {} packets ({} kept), {:.3} s",
        flow.key.proto,
        endpoint(&flow.initiator),
        endpoint(&flow.responder),
        flow.total_packets,
        flow.packets.len(),
        flow.last_ts_ns.saturating_sub(flow.first_ts_ns) as f64 / 1e9
    );
    let _ = writeln!(
        s,
        "(addresses and ports are shown here only; they never enter the tokens)"
    );
    let feats = flow_features(flow, cfg);
    let mut prev = None;
    for (i, (p, f)) in flow.packets.iter().zip(&feats).enumerate() {
        let a = packet_attributes(p, prev);
        prev = Some(p.ts_ns);
        let iat_code = u16::from_be_bytes([a[4], a[5]]);
        let _ = writeln!(
            s,
            "#{i:<2} {} len {:>5} flags {:#04x} iat_code {:>5} proto {:>3} payload {:>5}",
            if p.from_initiator { "->" } else { "<-" },
            p.ip_len,
            p.tcp_flags,
            iat_code,
            p.ip_proto,
            p.payload_len
        );
        debug_assert_eq!(a.len(), ATTR_BYTES);
        if let Some(attrs) = &f.attrs {
            let _ = writeln!(s, "    attr bytes  {}", hex(attrs));
            let _ = writeln!(s, "    attr words  {}", words(attrs));
            if let Some(t) = tok {
                let _ = writeln!(s, "    attr tokens {}", pieces(t.vocab(), attrs));
            }
        }
        if let Some(pl) = f.payload.as_deref() {
            let _ = writeln!(s, "    payload     {}", hex(pl));
            let _ = writeln!(s, "    pay words   {}", words(pl));
            if let Some(t) = tok {
                let _ = writeln!(s, "    pay tokens  {}", pieces(t.vocab(), pl));
            }
        }
    }
    if let Some(t) = tok {
        let ids = t.encode(flow);
        let _ = writeln!(s, "token ids ({} of seq_len {}):", ids.len(), t.seq_len());
        let _ = writeln!(
            s,
            "{}",
            ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
        );
        let _ = writeln!(s, "{}", t.decode(&ids).join(" "));
    } else {
        let _ = writeln!(s, "(pass --vocab FILE or --dataset DIR to see tokens)");
    }
    s
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tok = match (&args.vocab, &args.dataset) {
        (_, Some(d)) => Some(FlowTokenizer::from_dataset_dir(d)?),
        (Some(v), None) => Some(FlowTokenizer::new(Vocab::load(v)?, args.parts.tokenizer())?),
        (None, None) => None,
    };
    let cfg = tok
        .as_ref()
        .map(|t| t.config().clone())
        .unwrap_or_else(|| args.parts.tokenizer());
    // A file, or a pipe (`<(zcat x.pcap.gz)`, a FIFO): read once.
    anyhow::ensure!(
        args.capture.exists() && !args.capture.is_dir(),
        "{}: {}",
        args.capture.display(),
        if args.capture.exists() {
            "a folder; inspect takes one capture file"
        } else {
            "no such file"
        }
    );
    let mut rc = ReadConfig {
        max_packets: cfg.packets,
        payload_bytes: cfg.payload_bytes_read(),
        ..ReadConfig::default()
    };
    // Flows end at the dataset's idle timeout, as `tokenize` cut them and
    // `classify` reads them: with the default, a flow the dataset split at a
    // pause was shown as one, its tokens not the ones the model reads.
    if let Some(d) = &args.dataset {
        let info = load_dataset_info(d)?;
        rc.idle_timeout_ns = (info.config.idle_timeout_s * 1e9) as u64;
    }
    let (flows, stats) = read_sorted_flows(std::slice::from_ref(&args.capture), &rc, false);
    // One file: not reading it is the command failing, not a skipped input.
    if let Some(p) = stats.problems.first().filter(|_| stats.files_failed > 0) {
        anyhow::bail!("cannot inspect {p}");
    }
    match args.flow {
        Some(n) => {
            let flow = flows.get(n).ok_or_else(|| {
                let (count, last) = match flows.len() {
                    0 => ("no flows".to_string(), String::new()),
                    1 => (
                        "1 flow".to_string(),
                        " (the only one is --flow 0)".to_string(),
                    ),
                    k => (format!("{k} flows"), format!(" (0 to {})", k - 1)),
                };
                anyhow::anyhow!(
                    "{} has {count}; --flow {n} is out of range{last}",
                    args.capture.display()
                )
            })?;
            print!("{}", describe_flow(flow, tok.as_ref(), &cfg));
        }
        None => {
            println!(
                "{:>5} {:>5} {:>45} {:>8} {:>10}",
                "flow", "proto", "initiator -> responder", "packets", "seconds"
            );
            for (i, f) in flows.iter().enumerate() {
                let ends = format!("{} -> {}", endpoint(&f.initiator), endpoint(&f.responder));
                println!(
                    "{i:>5} {:>5} {ends:>45} {:>8} {:>10.3}",
                    f.key.proto,
                    f.total_packets,
                    f.last_ts_ns.saturating_sub(f.first_ts_ns) as f64 / 1e9
                );
            }
            println!("{stats}");
        }
    }
    Ok(())
}
