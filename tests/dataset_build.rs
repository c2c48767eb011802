//! End to end on synthetic captures: pcaps -> dataset directory, then every
//! promise of dataset.json and the shards is checked.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use traffic_moe::model::batch::open_part;
use traffic_moe::traffic::capture::pcap_writer::{PcapWriter, eth_ipv4, udp};
use traffic_moe::traffic::dataset::build::{
    DatasetConfig, build_dataset, build_dataset_with, load_dataset_info,
};
use traffic_moe::traffic::dataset::labels::LabelSource;
use traffic_moe::traffic::dataset::shard::Shard;
use traffic_moe::traffic::dataset::split::SplitBy;
use traffic_moe::traffic::tokens::tokenize::FlowTokenizer;
use traffic_moe::traffic::tokens::vocab::{END, PAD};

struct FlowSpec {
    client: Ipv4Addr,
    port: u16,
    packets: usize,
    gap_ns: u64,
    /// Payload pattern seed.
    pattern: u8,
}

fn write_pcap(path: &Path, flows: &[FlowSpec], t0: u64) {
    let starts: Vec<(u64, &FlowSpec)> = flows
        .iter()
        .enumerate()
        .map(|(fi, f)| (t0 + fi as u64 * 1_000, f))
        .collect();
    write_pcap_at(path, &starts);
}

/// One capture of `flows`, each beginning at its own time.
fn write_pcap_at(path: &Path, flows: &[(u64, &FlowSpec)]) {
    let server = Ipv4Addr::new(10, 1, 0, 1);
    let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
    for &(start, f) in flows {
        for i in 0..f.packets {
            let payload: Vec<u8> = (0..24u8)
                .map(|j| f.pattern.wrapping_mul(31).wrapping_add(j ^ i as u8))
                .collect();
            let ts = start + i as u64 * f.gap_ns;
            let frame = if i % 2 == 0 {
                eth_ipv4(f.client, server, 17, &udp(f.port, 5000, &payload))
            } else {
                eth_ipv4(server, f.client, 17, &udp(5000, f.port, &payload))
            };
            frames.push((ts, frame));
        }
    }
    frames.sort_by_key(|f| f.0);
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap(), 1).unwrap();
    for (ts, fr) in frames {
        w.write_frame(ts, &fr).unwrap();
    }
}

/// classes A (pattern 1..) and B (pattern 100..), 4 captures each; every capture
/// has 6 flows of 4..9 packets, 1 flow of 2 packets, and one long flow
/// (40 packets 1 s apart) in the first capture of each class.
fn make_corpus(root: &Path) -> usize {
    let mut short = 0;
    for (class, base) in [("A", 1u8), ("B", 100u8)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for file in 0..4u8 {
            let mut flows: Vec<FlowSpec> = (0..6u8)
                .map(|k| FlowSpec {
                    client: Ipv4Addr::new(10, 0, file, k + 1),
                    port: 40000 + u16::from(k),
                    packets: 4 + usize::from(k),
                    gap_ns: 1_000_000,
                    pattern: base + file * 6 + k,
                })
                .collect();
            flows.push(FlowSpec {
                client: Ipv4Addr::new(10, 0, file, 99),
                port: 1,
                packets: 2,
                gap_ns: 1_000,
                pattern: 0,
            });
            short += 1;
            if file == 0 {
                flows.push(FlowSpec {
                    client: Ipv4Addr::new(10, 0, 9, 9),
                    port: 7,
                    packets: 40,
                    gap_ns: 1_000_000_000,
                    pattern: base + 50,
                });
            }
            write_pcap(
                &dir.join(format!("{class}{file}.pcap")),
                &flows,
                1_600_000_000_000_000_000 + u64::from(file) * 10_000_000_000,
            );
        }
    }
    short
}

fn cfg(root: &Path) -> DatasetConfig {
    DatasetConfig {
        inputs: vec![root.to_path_buf()],
        labels: LabelSource::Folder,
        vocab_size: 512,
        split_by: SplitBy::File,
        ..DatasetConfig::default()
    }
}

/// [`make_corpus`] under `tmp/caps`, built with [`cfg`] split `split_by`
/// into `tmp/ds`; returns `tmp/ds`.
fn built_corpus(tmp: &Path, split_by: SplitBy) -> std::path::PathBuf {
    let root = tmp.join("caps");
    make_corpus(&root);
    let out = tmp.join("ds");
    let c = DatasetConfig {
        split_by,
        ..cfg(&root)
    };
    build_dataset(&c, &out, false).unwrap();
    out
}

fn open(dir: &Path) -> HashMap<String, Shard> {
    let info = load_dataset_info(dir).unwrap();
    info.shards
        .iter()
        .map(|(k, v)| (k.clone(), Shard::open(&dir.join(v)).unwrap()))
        .collect()
}

#[test]
fn folder_labels_split_by_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("caps");
    let short = make_corpus(&root);
    let out = tmp.path().join("ds");
    let s = build_dataset(&cfg(&root), &out, false).unwrap();
    let info = load_dataset_info(&out).unwrap();
    assert_eq!(info.classes, vec!["A", "B"]);
    assert_eq!(info.dropped.too_few_packets, short);
    assert_eq!(info.read.files, 8);
    let shards = open(&out);
    assert_eq!(shards.len(), 3);
    let total: usize = shards.values().map(Shard::len).sum();
    assert_eq!(total, 2 * (4 * 6 + 1), "every long-enough flow once");
    assert!(s.to_string().contains("too few packets"));

    let tok = FlowTokenizer::from_dataset_dir(&out).unwrap();
    let mut file_part: HashMap<u32, &str> = HashMap::new();
    for (name, sh) in &shards {
        assert_eq!(sh.vocab_hash(), info.vocab_hash);
        assert_eq!(sh.vocab_hash(), tok.hash());
        assert_eq!(sh.seq_len(), 512);
        for i in 0..sh.len() {
            let m = sh.meta(i);
            assert_eq!(
                *file_part.entry(m.file_id).or_insert(name),
                name.as_str(),
                "capture in two splits"
            );
            let label = sh.label(i).expect("labelled");
            let file = &info.files[m.file_id as usize];
            assert!(
                file.contains(&format!("/{}/", info.classes[label as usize])),
                "{file} label {label}"
            );
            let n = sh.n_tokens(i);
            assert_eq!(sh.tokens(i)[n - 1], END);
            assert!(sh.tokens(i)[n..].iter().all(|&t| t == PAD));
            assert!(
                sh.tokens(i)[..n]
                    .iter()
                    .all(|&t| (t as usize) < tok.vocab_size())
            );
        }
    }
    // Each part got at least one capture of each class (4 captures per class).
    for name in ["train", "val", "test"] {
        let sh = &shards[name];
        for c in 0..2 {
            assert!(
                (0..sh.len()).any(|i| sh.label(i) == Some(c)),
                "{name} lacks class {c}"
            );
        }
    }

    // Never overwrite without force; with force and a given vocabulary, same tokens.
    let err = build_dataset(&cfg(&root), &out, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--force"), "{err}");
    let vocab_copy = tmp.path().join("vocab.txt");
    std::fs::copy(out.join("vocab.txt"), &vocab_copy).unwrap();
    let mut c2 = cfg(&root);
    c2.vocab_file = Some(vocab_copy);
    build_dataset_with(&c2, &out, false, true).unwrap();
    let again = open(&out);
    for name in ["train", "val", "test"] {
        assert_eq!(
            again[name].all_tokens(),
            shards[name].all_tokens(),
            "deterministic rebuild of {name}"
        );
    }
    // Rebuilt unlabelled over it: no part or packet file of the labelled
    // build is left beside the new one.
    let mut c3 = cfg(&root);
    c3.labels = LabelSource::None;
    build_dataset_with(&c3, &out, false, true).unwrap();
    for stale in ["val.tmoe", "test.tmoe", "val.pkts", "test.pkts"] {
        assert!(
            !out.join(stale).exists(),
            "{stale} left from the labelled build"
        );
    }
    assert!(out.join("train.pkts").exists());
}

#[test]
fn unlabelled_corpus_and_augmentation() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("caps");
    make_corpus(&root);

    // Pretraining mode: one shard, no labels.
    let out = tmp.path().join("pre");
    let mut c = cfg(&root);
    c.labels = LabelSource::None;
    build_dataset(&c, &out, false).unwrap();
    let info = load_dataset_info(&out).unwrap();
    assert!(info.classes.is_empty() && !info.labelled);
    assert!(!out.join("val.tmoe").exists() && !out.join("test.tmoe").exists());
    let sh = Shard::open(&out.join("train.tmoe")).unwrap();
    assert_eq!(sh.len(), 2 * (4 * 6 + 1));
    assert!((0..sh.len()).all(|i| sh.label(i).is_none()));

    // Augmentation: the 40 s flows are cut into 5 s slices of 5 packets, train only.
    let out = tmp.path().join("aug");
    let mut c = cfg(&root);
    c.split_by = SplitBy::Flow;
    c.slice_seconds = Some(5.0);
    build_dataset(&c, &out, false).unwrap();
    let info = load_dataset_info(&out).unwrap();
    let shards = open(&out);
    for name in ["val", "test"] {
        let sh = &shards[name];
        assert!(
            (0..sh.len()).all(|i| sh.meta(i).slice == 0),
            "{name} has augmented flows"
        );
    }
    let train = &shards["train"];
    let sliced: Vec<usize> = (0..train.len())
        .filter(|&i| train.meta(i).slice > 0)
        .collect();
    let augmented: usize = info.class_counts.values().map(|c| c.augmented).sum();
    assert_eq!(sliced.len(), augmented);
    // A 40 s flow gives 8 windows; window 0 (5 packets) differs from the flow's own
    // first 10 packets, so all 8 survive deduplication.
    for &i in &sliced {
        assert_eq!(train.meta(i).packet_count, 5, "5 packets per 5 s window");
    }
    let long_in_train = (0..train.len())
        .filter(|&i| train.meta(i).slice == 0 && train.meta(i).packet_count == 40)
        .count();
    assert!(long_in_train > 0, "seed 42 puts a long flow in train");
    assert_eq!(sliced.len(), 8 * long_in_train);
    assert_eq!(info.split_counts["train"], train.len());
}

#[test]
fn rare_classes_keep_their_short_flows() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("caps");
    make_corpus(&root); // classes A and B; each capture also holds one 2-packet flow
    let rare = root.join("R");
    std::fs::create_dir_all(&rare).unwrap();
    let flows: Vec<FlowSpec> = (0..3u8)
        .map(|k| FlowSpec {
            client: Ipv4Addr::new(10, 5, 0, k + 1),
            port: 9,
            packets: 2,
            gap_ns: 1_000,
            pattern: 200 + k,
        })
        .collect();
    write_pcap(&rare.join("r.pcap"), &flows, 1_600_000_000_000_000_000);

    let out = tmp.path().join("off");
    let s = build_dataset(&cfg(&root), &out, false).unwrap();
    let info = load_dataset_info(&out).unwrap();
    assert_eq!(info.classes, vec!["A", "B"], "R has no flow of 3+ packets");
    // A whole class gone was said only as 3 more flows "with too few packets".
    let said = s.to_string();
    assert!(
        said.contains("classes left out, no flow kept") && said.contains("R (3 flows)"),
        "{said}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(json["dropped"]["classes"], serde_json::json!({"R": 3}));

    let out = tmp.path().join("on");
    let mut c = cfg(&root);
    c.keep_rare = 5;
    c.split_by = SplitBy::Flow;
    let s = build_dataset(&c, &out, false).unwrap();
    assert!(!s.to_string().contains("classes left out"), "{s}");
    let info = load_dataset_info(&out).unwrap();
    assert_eq!(info.classes, vec!["A", "B", "R"]);
    assert_eq!(
        info.class_counts["R"].total(),
        3,
        "all short flows of the rare class kept"
    );
    // A and B are not rare: their short flows are still dropped.
    assert_eq!(info.class_counts["A"].total(), 4 * 6 + 1);
    assert_eq!(info.dropped.too_few_packets, 8);
}

/// Sets `config.tokenizer.seq_len` (and, with `top`, the top-level copy) in
/// `dir/dataset.json`.
fn set_seq_len(dir: &Path, seq_len: u64, top: bool) {
    let p = dir.join("dataset.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["config"]["tokenizer"]["seq_len"] = seq_len.into();
    if top {
        v["seq_len"] = seq_len.into();
    }
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn a_damaged_sequence_length_is_refused_on_load() {
    // A damaged dataset.json once made the tokenizer reserve seq_len tokens
    // per flow: 8 GiB for 2^31, an abort in `tmoe classify --data`.
    let tmp = tempfile::tempdir().unwrap();
    let out = built_corpus(tmp.path(), SplitBy::File);
    let json = out.join("dataset.json");
    set_seq_len(&out, 1 << 31, true);
    let e = format!("{:#}", load_dataset_info(&out).unwrap_err());
    assert!(
        e.contains(&json.display().to_string()) && e.contains("seq_len must be 2..=65536"),
        "{e}"
    );
    let e = format!("{:#}", FlowTokenizer::from_dataset_dir(&out).unwrap_err());
    assert!(e.contains(&json.display().to_string()), "{e}");
    // The two copies of the length must agree.
    set_seq_len(&out, 64, false);
    let e = load_dataset_info(&out).unwrap_err().to_string();
    assert!(
        e.contains("seq_len 2147483648 differs from config.tokenizer.seq_len 64"),
        "{e}"
    );
    set_seq_len(&out, 512, true);
    load_dataset_info(&out).unwrap();
}

/// A damaged flow idle timeout is refused on load, naming the file:
/// `classify --data` cut flows with 0 or -1, every packet its own flow,
/// and reported every flow as under the packet minimum.
#[test]
fn a_damaged_idle_timeout_is_refused_on_load() {
    let tmp = tempfile::tempdir().unwrap();
    let out = built_corpus(tmp.path(), SplitBy::File);
    let json = out.join("dataset.json");
    let text = std::fs::read_to_string(&json).unwrap();
    for bad in [0.0, -1.0] {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["config"]["idle_timeout_s"] = bad.into();
        std::fs::write(&json, v.to_string()).unwrap();
        let e = format!("{:#}", load_dataset_info(&out).map(|_| ()).unwrap_err());
        assert!(
            e.contains(&json.display().to_string())
                && e.contains(&format!("config.idle_timeout_s {bad} is not")),
            "{e}"
        );
    }
}

#[test]
fn a_shard_label_past_the_class_list_is_refused() {
    // A damaged label once reached a training step, whose loss indexed the
    // logits with it: a panic in `tmoe finetune`.
    let tmp = tempfile::tempdir().unwrap();
    let out = built_corpus(tmp.path(), SplitBy::File);
    let shard = out.join("train.tmoe");
    let good = std::fs::read(&shard).unwrap();
    let mut v = good.clone();
    let n = Shard::open(&shard).unwrap().len();
    let first_meta = v.len() - 64 * n; // FlowMeta 0 starts with its label
    v[first_meta..first_meta + 4].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&shard, &v).unwrap();
    let e = open_part(&out, "train").unwrap_err().to_string();
    assert!(
        e.contains(&shard.display().to_string())
            && e.contains("flow 0 has label 7, but dataset.json lists 2 classes"),
        "{e}"
    );
    // A shard of another vocabulary is refused too, naming it once.
    std::fs::write(&shard, &good).unwrap();
    open_part(&out, "train").unwrap();
    v = good;
    v[32] ^= 0x80; // vocab_size, made larger: every id stays below it
    std::fs::write(&shard, &v).unwrap();
    let e = open_part(&out, "train").unwrap_err().to_string();
    assert!(e.contains("differs from dataset.json's"), "{e}");
    assert_eq!(e.matches("train.tmoe").count(), 1, "{e}");
}

#[test]
fn a_part_copied_over_another_is_refused() {
    // val.tmoe copied as test.tmoe (same build, same id): eval reported
    // validation figures as test figures.
    let tmp = tempfile::tempdir().unwrap();
    let ds = built_corpus(tmp.path(), SplitBy::Flow);
    open_part(&ds, "test").unwrap();
    std::fs::copy(ds.join("val.tmoe"), ds.join("test.tmoe")).unwrap();
    let e = open_part(&ds, "test").unwrap_err().to_string();
    assert!(
        e.contains(&ds.join("test.tmoe").display().to_string())
            && e.contains("is the \"val\" part of its build, not \"test\""),
        "{e}"
    );
    open_part(&ds, "val").unwrap();
}

#[test]
fn a_shard_of_another_build_is_refused() {
    // Two splits of the same captures (same vocabulary, other seed): the
    // test shard of one, copied into the other, passed every check, and its
    // test flows were partly the other's training flows (leakage, silently).
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("caps");
    make_corpus(&root);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (out, seed) in [(&a, 1), (&b, 7)] {
        let c = DatasetConfig {
            split_by: SplitBy::Flow,
            seed,
            ..cfg(&root)
        };
        build_dataset(&c, out, false).unwrap();
    }
    let (ia, ib) = (
        load_dataset_info(&a).unwrap(),
        load_dataset_info(&b).unwrap(),
    );
    assert_eq!(
        ia.vocab_hash, ib.vocab_hash,
        "the vocabulary check cannot tell"
    );
    let rows = |d: &Path, part: &str| -> Vec<Vec<u32>> {
        let s = Shard::open(&d.join(format!("{part}.tmoe"))).unwrap();
        (0..s.len()).map(|i| s.tokens(i).to_vec()).collect()
    };
    let (train_a, test_b) = (rows(&a, "train"), rows(&b, "test"));
    assert!(
        test_b.iter().any(|r| train_a.contains(r)),
        "the swap would leak training flows into test"
    );
    for part in ["train", "val", "test"] {
        open_part(&a, part).unwrap();
    }
    std::fs::copy(b.join("test.tmoe"), a.join("test.tmoe")).unwrap();
    let e = open_part(&a, "test").unwrap_err().to_string();
    assert!(
        e.contains(&a.join("test.tmoe").display().to_string())
            && e.contains("belongs to another dataset"),
        "{e}"
    );
    // A dataset.json written before the id existed: its shards are not checked.
    let json = a.join("dataset.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("dataset_id");
    std::fs::write(&json, v.to_string()).unwrap();
    open_part(&a, "test").unwrap();
}

#[test]
fn label_csv_rows_that_match_no_flow_are_counted_as_rows() {
    // A CIC CSV repeats a 5-tuple for every flow it cut; the summary said
    // "label CSV rows that matched no flow: 1" for three such rows (it
    // counted distinct keys).
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("caps");
    make_corpus(&root);
    let csv = tmp.path().join("labels.csv");
    std::fs::write(
        &csv,
        "Flow ID, Src IP, Src Port, Dst IP, Dst Port, Protocol, Label\n\
         a, 10.0.0.1, 40000, 10.1.0.1, 5000, 17, web\n\
         b, 10.1.0.1, 5000, 10.0.0.1, 40000, 17, web\n\
         c, 192.0.2.1, 1, 192.0.2.2, 2, 6, gone\n\
         d, 192.0.2.1, 1, 192.0.2.2, 2, 6, gone\n\
         e, 192.0.2.2, 2, 192.0.2.1, 1, 6, gone\n",
    )
    .unwrap();
    let c = DatasetConfig {
        labels: LabelSource::Csv {
            path: csv,
            column: None,
        },
        split_by: SplitBy::Flow,
        ..cfg(&root)
    };
    let out = tmp.path().join("ds");
    let s = build_dataset(&c, &out, false).unwrap();
    assert_eq!(s.info.classes, ["web"]);
    // No `file` column: the 5-tuple in A0.pcap and in B0.pcap.
    assert_eq!(s.info.class_counts["web"].total(), 2);
    assert_eq!(s.info.csv_rows_unmatched, Some(3));
    assert!(
        s.to_string()
            .contains("label CSV rows that matched no flow: 3"),
        "{s}"
    );
}

/// Split by time, a capture's latest flows are held out; a training flow's
/// time slices from the first held-out flow on are held-out time, and are
/// dropped and counted (they trained on it before).
#[test]
fn time_slices_never_reach_past_their_captures_time_split() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("caps");
    let t0 = 1_600_000_000_000_000_000u64;
    for (class, base) in [("A", 1u8), ("B", 100u8)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        // A 40 s flow first (train), then nine short flows a second apart
        // from 10 s on: the last two (17 s, 18 s) are val and test.
        let long = FlowSpec {
            client: Ipv4Addr::new(10, 0, 9, 9),
            port: 7,
            packets: 40,
            gap_ns: 1_000_000_000,
            pattern: base + 50,
        };
        let short: Vec<FlowSpec> = (0..9u8)
            .map(|k| FlowSpec {
                client: Ipv4Addr::new(10, 0, 1, k + 1),
                port: 40000 + u16::from(k),
                packets: 4 + usize::from(k % 3),
                gap_ns: 1_000_000,
                pattern: base + k,
            })
            .collect();
        let mut flows = vec![(t0, &long)];
        flows.extend(
            (10u64..)
                .zip(&short)
                .map(|(s, f)| (t0 + s * 1_000_000_000, f)),
        );
        write_pcap_at(&root.join(class).join(format!("{class}.pcap")), &flows);
    }
    let out = tmp.path().join("aug");
    let mut c = cfg(&root);
    c.split_by = SplitBy::Time;
    c.slice_seconds = Some(5.0);
    build_dataset(&c, &out, false).unwrap();
    let info = load_dataset_info(&out).unwrap();
    let shards = open(&out);
    let mut held_out_from: HashMap<u32, u64> = HashMap::new();
    for name in ["val", "test"] {
        let sh = &shards[name];
        for i in 0..sh.len() {
            let m = sh.meta(i);
            let at = held_out_from.entry(m.file_id).or_insert(u64::MAX);
            *at = (*at).min(m.first_ts_ns);
        }
    }
    assert_eq!(held_out_from.len(), 2, "each capture holds flows out");
    let train = &shards["train"];
    let slices: Vec<_> = (0..train.len())
        .map(|i| train.meta(i))
        .filter(|m| m.slice > 0)
        .collect();
    assert!(!slices.is_empty(), "the long flows are sliced");
    for m in &slices {
        assert!(
            m.first_ts_ns < held_out_from[&m.file_id],
            "slice {} of capture {} begins at {} ns, the held-out flows at {}",
            m.slice,
            m.file_id,
            m.first_ts_ns - t0,
            held_out_from[&m.file_id] - t0
        );
    }
    // Slices at 20, 25, 30 and 35 s of each 40 s flow (val begins at 17 s).
    assert_eq!(info.dropped.augmented_after_split, 8, "{:?}", info.dropped);
}

/// A CSV `file` cell matches by file name: two captures of that name in
/// different folders both took its rows (the flows of `B/A0.pcap` were
/// labelled by rows meant for `A/A0.pcap`). Such a set is refused.
#[test]
fn captures_sharing_a_name_the_label_csv_gives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("caps");
    make_corpus(&root);
    std::fs::copy(root.join("A/A0.pcap"), root.join("B/A0.pcap")).unwrap();
    let csv = tmp.path().join("labels.csv");
    // The first flow of capture N: 10.0.N.1:40000 -> 10.1.0.1:5000.
    let with_file = |file: &str, n: u8| {
        format!(
            "file,l4,src,dst,app,category\n\
             {file},UDP,10.0.{n}.1:40000,10.1.0.1:5000,X.web,Web\n"
        )
    };
    let c = DatasetConfig {
        labels: LabelSource::Csv {
            path: csv.clone(),
            column: None,
        },
        split_by: SplitBy::Flow,
        ..cfg(&root)
    };
    std::fs::write(&csv, with_file("/elsewhere/A0.pcap", 0)).unwrap();
    let out = tmp.path().join("ds");
    let e = format!("{:#}", build_dataset(&c, &out, false).unwrap_err());
    assert!(
        e.contains("share the file name \"A0.pcap\"") && e.contains("A0.pcap and "),
        "{e}"
    );
    assert!(!out.exists(), "nothing written for a refused run");
    // A name the CSV does not give may repeat.
    std::fs::write(&csv, with_file("A1.pcap", 1)).unwrap();
    let s = build_dataset(&c, &out, false).unwrap();
    assert_eq!(s.info.classes, ["web"]);
}

/// A named pipe where a dataset file should be: opening it blocked until
/// a writer came (for ever, in `tmoe eval`). Each loader refuses it at once.
#[cfg(unix)]
#[test]
fn a_pipe_in_place_of_a_dataset_file_is_refused_not_waited_on() {
    use traffic_moe::traffic::dataset::packet_meta;
    let tmp = tempfile::tempdir().unwrap();
    let ds = built_corpus(tmp.path(), SplitBy::File);
    let fifo = |name: &str| {
        let p = ds.join(name);
        std::fs::remove_file(&p).unwrap();
        let ok = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkfifo {}", p.display());
        p
    };
    // Each call on a thread: a blocked open fails the test, not hangs it.
    let within = |f: Box<dyn FnOnce() -> String + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()).unwrap());
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("the loader blocked on the pipe")
    };
    let pkts = fifo("test.pkts");
    let e = within(Box::new(move || {
        format!("{:#}", packet_meta::read(&pkts).unwrap_err())
    }));
    assert!(e.contains("test.pkts: not a regular file"), "{e}");
    fifo("test.tmoe");
    let d = ds.clone();
    let e = within(Box::new(move || {
        format!("{:#}", open_part(&d, "test").unwrap_err())
    }));
    assert!(e.contains("test.tmoe: not a regular file"), "{e}");
    fifo("dataset.json");
    let d = ds.clone();
    let e = within(Box::new(move || {
        format!("{:#}", load_dataset_info(&d).unwrap_err())
    }));
    assert!(e.contains("dataset.json: not a regular file"), "{e}");
}

/// The same captures given in another order (as a shell's glob may list
/// them, by locale) build the same dataset, byte for byte.
#[test]
fn the_order_inputs_are_given_in_changes_no_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("caps");
    make_corpus(&root);
    let mut files = Vec::new();
    for c in ["A", "B"] {
        for f in 0..4 {
            files.push(root.join(c).join(format!("{c}{f}.pcap")));
        }
    }
    let build = |inputs: Vec<std::path::PathBuf>, out: &Path| {
        let c = DatasetConfig {
            inputs,
            split_by: SplitBy::Flow,
            ..cfg(&root)
        };
        build_dataset(&c, out, false).unwrap();
    };
    let sorted = tmp.path().join("sorted");
    build(files.clone(), &sorted);
    files.reverse();
    files.swap(1, 5);
    let shuffled = tmp.path().join("shuffled");
    build(files, &shuffled);
    let folders = tmp.path().join("folders");
    build(vec![root.join("B"), root.join("A")], &folders);
    let mut names: Vec<_> = std::fs::read_dir(&sorted)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    // dataset.json's `config` records the inputs as given; nothing else may differ.
    let read = |dir: &Path, name: &std::ffi::OsStr| {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        if name != "dataset.json" {
            return bytes;
        }
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v.as_object_mut().unwrap().remove("config").unwrap();
        serde_json::to_vec(&v).unwrap()
    };
    for name in &names {
        let a = read(&sorted, name);
        assert_eq!(a, read(&shuffled, name), "{name:?}");
        assert_eq!(a, read(&folders, name), "{name:?}");
    }
}
