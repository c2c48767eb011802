//! The C API: `examples/c/classify_pcap.c`, compiled with the system C
//! compiler against `include/traffic_moe.h` and this build's static library,
//! feeds captures frame by frame and must give every flow the class and
//! probability `tmoe classify` gives it (also with three handles at once,
//! one per thread). Also the API's refusals: bad paths,
//! NULL handles and arguments, out-of-range class ids.

mod tiny_train;

use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

use tiny_train::classifier::{classify_args, fixture};
use traffic_moe::capi::*;
use traffic_moe::cli::classify;

/// The static library cargo built for this test run (newest one beside the
/// test executable, in target/<profile>/deps).
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    std::fs::read_dir(deps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("libtraffic_moe") && name.ends_with(".a")
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).unwrap())
        .expect("cargo builds libtraffic_moe.a (crate-type staticlib) for the tests")
}

fn build_example(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    build_c(&root.join("examples/c/classify_pcap.c"), &[], out);
}

/// Compiles `source` (with `flags`) against the header and links it with
/// this build's static library into `out`.
fn build_c(source: &Path, flags: &[&str], out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args([
            "-std=c11",
            "-D_DEFAULT_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
        ])
        .args(flags)
        .arg(source)
        .arg("-I")
        .arg(root.join("include"))
        .arg(static_lib())
        .args([
            "-lstdc++",
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ])
        .arg("-o")
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(st.success(), "compiling {} failed", source.display());
}

fn rows(csv: &str) -> BTreeSet<String> {
    csv.lines().skip(1).map(str::to_string).collect()
}

#[test]
fn c_example_classifies_like_the_cli() {
    let f = fixture();
    let exe = f.root.join("classify_pcap");
    build_example(&exe);
    let mut captures: Vec<PathBuf> = ["dns", "web"]
        .iter()
        .flat_map(|c| std::fs::read_dir(f.caps.join(c)).unwrap().flatten())
        .map(|e| e.path())
        .collect();
    captures.sort();
    let mut classified = 0;
    for cap in &captures {
        let out = Command::new(&exe)
            .arg(&f.ckpt)
            .arg(&f.data)
            .arg(cap)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "classify_pcap failed on {}: {}",
            cap.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let from_c = rows(&String::from_utf8(out.stdout).unwrap());
        // Early verdicts: the fixture's flows have at most K = 5 packets, so
        // every row (packet count included) is the same as at the flow's end.
        let early = Command::new(&exe)
            .arg(&f.ckpt)
            .arg(&f.data)
            .arg(cap)
            .arg("--early")
            .output()
            .unwrap();
        assert!(early.status.success());
        assert_eq!(rows(&String::from_utf8(early.stdout).unwrap()), from_c);
        // The model on its own thread: the same rows.
        let bg = Command::new(&exe)
            .arg(&f.ckpt)
            .arg(&f.data)
            .arg(cap)
            .arg("--background")
            .output()
            .unwrap();
        assert!(
            bg.status.success(),
            "{}",
            String::from_utf8_lossy(&bg.stderr)
        );
        assert_eq!(rows(&String::from_utf8(bg.stdout).unwrap()), from_c);
        let args = classify_args(&f, vec![cap.clone()], classify::Format::Csv);
        let mut cli = Vec::new();
        let summary = classify::classify(&args, &mut cli).unwrap();
        let from_cli = rows(&String::from_utf8(cli).unwrap());
        assert!(!from_cli.is_empty(), "{}: no flows", cap.display());
        assert_eq!(from_c, from_cli, "{}: C API and CLI differ", cap.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{} flows classified", summary.flows_classified)),
            "{stderr}"
        );
        classified += from_c.len();
    }
    assert!(classified >= 100, "only {classified} flows");
    // Three handles at once, each fed the capture on a thread of its own
    // (one per capture interface in a monitor), on the caller's thread and
    // in the background: the example checks that they agree, and their
    // rows are the CLI's.
    let args = classify_args(&f, vec![captures[0].clone()], classify::Format::Csv);
    let mut cli = Vec::new();
    classify::classify(&args, &mut cli).unwrap();
    let from_cli = rows(&String::from_utf8(cli).unwrap());
    for extra in [&[][..], &["--background"][..]] {
        let out = Command::new(&exe)
            .arg(&f.ckpt)
            .arg(&f.data)
            .arg(&captures[0])
            .args(["--threads", "3"])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "--threads 3 {extra:?}: {stderr}");
        assert!(stderr.contains("3 handles on 3 threads agree"), "{stderr}");
        assert_eq!(rows(&String::from_utf8(out.stdout).unwrap()), from_cli);
    }
    // A link type field with the FCS bits of the pcap header set (P, bit
    // 26, as in tcpdump's bootp_asan.pcap): the link type is its low 16
    // bits. The example kept bit 26, fed link type 0x04000001 and skipped
    // every frame the CLI classifies.
    let mut bytes = std::fs::read(&captures[0]).unwrap();
    let le = bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || bytes[..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let field = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
    let field = if le { field } else { field.swap_bytes() };
    let fcs = field | 0x0400_0000;
    bytes[20..24].copy_from_slice(&if le {
        fcs.to_le_bytes()
    } else {
        fcs.to_be_bytes()
    });
    let cap = f.root.join("fcs-bits.pcap");
    std::fs::write(&cap, bytes).unwrap();
    let out = Command::new(&exe)
        .arg(&f.ckpt)
        .arg(&f.data)
        .arg(&cap)
        .output()
        .unwrap();
    assert!(out.status.success());
    let from_c = rows(&String::from_utf8(out.stdout).unwrap());
    let args = classify_args(&f, vec![cap.clone()], classify::Format::Csv);
    let mut cli = Vec::new();
    classify::classify(&args, &mut cli).unwrap();
    let from_cli = rows(&String::from_utf8(cli).unwrap());
    assert!(!from_cli.is_empty());
    assert_eq!(
        from_c,
        from_cli,
        "FCS bits: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A capture that is not there: its name and the system's reason.
    let out = Command::new(&exe)
        .arg(&f.ckpt)
        .arg(&f.data)
        .arg(f.root.join("missing.pcap"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("missing.pcap: No such file or directory"),
        "{stderr}"
    );
}

fn null_str() -> *const std::ffi::c_char {
    std::ptr::null()
}

fn last_error() -> String {
    // SAFETY: tmoe_last_error returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(tmoe_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn c_api_refuses_bad_arguments_without_crashing() {
    let missing = CString::new("/nonexistent/classifier.safetensors").unwrap();
    let vocab = CString::new("/nonexistent/vocab.txt").unwrap();
    // SAFETY: valid C strings and NULLs, as the header allows.
    unsafe {
        assert!(
            tmoe_open(
                missing.as_ptr(),
                null_str(),
                vocab.as_ptr(),
                null_str(),
                0,
                0
            )
            .is_null()
        );
        assert!(
            last_error().contains("/nonexistent/classifier.safetensors"),
            "{}",
            last_error()
        );
        // An empty path names the argument, not an empty file name.
        let empty = CString::new("").unwrap();
        for (ckpt, data, what) in [
            (empty.as_ptr(), vocab.as_ptr(), "checkpoint"),
            (missing.as_ptr(), empty.as_ptr(), "dataset_dir"),
        ] {
            assert!(tmoe_open(ckpt, data, null_str(), null_str(), 0, 0).is_null());
            assert!(
                last_error().starts_with(&format!("{what} is an empty string")),
                "{}",
                last_error()
            );
        }
        assert!(tmoe_open(null_str(), null_str(), null_str(), null_str(), 0, 0).is_null());
        assert!(
            last_error().contains("checkpoint is NULL"),
            "{}",
            last_error()
        );

        let null = std::ptr::null_mut();
        assert_eq!(tmoe_feed(null, 0, 1, std::ptr::null(), 0, 0), -1);
        assert!(last_error().contains("NULL classifier handle"));
        assert_eq!(tmoe_flush(null), -1);
        assert_eq!(tmoe_poll(null, std::ptr::null_mut(), 4), -1);
        assert_eq!(tmoe_class_count(null), 0);
        assert!(tmoe_class_name(null, 0).is_null());
        let mut stats = TmoeStats::default();
        assert_eq!(tmoe_get_stats(null, &mut stats), -1);
        tmoe_close(null); // a no-op
    }
    assert_eq!(size_of::<TmoeVerdict>(), 72, "header's tmoe_verdict layout");
    assert_eq!(size_of::<TmoeStats>(), 72, "header's tmoe_stats layout");
}

#[test]
fn c_api_counts_skipped_frames_and_short_flows() {
    let f = fixture();
    let ckpt = CString::new(f.ckpt.to_str().unwrap()).unwrap();
    let data = CString::new(f.data.to_str().unwrap()).unwrap();
    // SAFETY: valid strings; the handle is used on this thread only and closed once.
    unsafe {
        let h = tmoe_open(ckpt.as_ptr(), data.as_ptr(), null_str(), null_str(), 0, 4);
        assert!(
            h.is_null() && last_error().contains("unknown flags"),
            "{}",
            last_error()
        );
        let h = tmoe_open(ckpt.as_ptr(), data.as_ptr(), null_str(), null_str(), 0, 0);
        assert!(!h.is_null(), "{}", last_error());
        assert_eq!(tmoe_class_count(h), 2);
        let name = |i| {
            CStr::from_ptr(tmoe_class_name(h, i))
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!((name(0), name(1)), ("dns".to_string(), "web".to_string()));
        assert!(tmoe_class_name(h, 2).is_null());
        assert!(last_error().contains("out of range"));

        // An ARP frame is skipped; a lone UDP packet makes a 1-packet flow,
        // under the dataset's minimum of 3: counted, not classified.
        let arp = [0xffu8; 12]
            .iter()
            .copied()
            .chain([0x08, 0x06])
            .chain([0u8; 28])
            .collect::<Vec<u8>>();
        assert_eq!(tmoe_feed(h, 1, 1, arp.as_ptr(), arp.len() as u32, 60), 0);
        let udp = traffic_moe::traffic::capture::pcap_writer::eth_ipv4(
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            traffic_moe::traffic::types::PROTO_UDP,
            &traffic_moe::traffic::capture::pcap_writer::udp(1000, 53, b"hello"),
        );
        assert_eq!(
            tmoe_feed(h, 2, 1, udp.as_ptr(), udp.len() as u32, udp.len() as u32),
            1
        );
        // A pcap header's link-type field as it is, FCS-present bit (26)
        // set: Ethernet all the same (it was skipped as an unknown link).
        let udp2 = traffic_moe::traffic::capture::pcap_writer::eth_ipv4(
            [10, 0, 0, 3].into(),
            [10, 0, 0, 2].into(),
            traffic_moe::traffic::types::PROTO_UDP,
            &traffic_moe::traffic::capture::pcap_writer::udp(1001, 53, b"hello"),
        );
        let (len2, ethernet_fcs) = (udp2.len() as u32, 0x0400_0001);
        assert_eq!(tmoe_feed(h, 3, ethernet_fcs, udp2.as_ptr(), len2, len2), 1);
        assert_eq!(tmoe_flush(h), 0);
        assert_eq!(tmoe_pending(h), 0);
        let mut v = [TmoeVerdict::default(); 4];
        assert_eq!(tmoe_poll(h, v.as_mut_ptr(), 4), 0);
        let mut s = TmoeStats::default();
        assert_eq!(tmoe_get_stats(h, &mut s), 0);
        assert_eq!(
            (
                s.frames,
                s.packets,
                s.skipped_frames,
                s.flows_too_short,
                s.flows_classified
            ),
            (3, 2, 1, 2, 0)
        );
        tmoe_close(h);
    }
}

#[test]
fn early_verdicts_come_at_the_kth_packet_once() {
    let f = fixture();
    let ckpt = CString::new(f.ckpt.to_str().unwrap()).unwrap();
    let data = CString::new(f.data.to_str().unwrap()).unwrap();
    let frame = |i: u64| {
        traffic_moe::traffic::capture::pcap_writer::eth_ipv4(
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            traffic_moe::traffic::types::PROTO_UDP,
            &traffic_moe::traffic::capture::pcap_writer::udp(1000, 53, format!("q{i}").as_bytes()),
        )
    };
    let mut early = None;
    // SAFETY: valid strings; one thread; closed once.
    unsafe {
        let h = tmoe_open(
            ckpt.as_ptr(),
            data.as_ptr(),
            null_str(),
            null_str(),
            0,
            TMOE_EARLY_VERDICTS,
        );
        assert!(!h.is_null(), "{}", last_error());
        // The fixture's tokenizer reads K = 5 packets per flow.
        for i in 1..=8u64 {
            let fr = frame(i);
            assert_eq!(
                tmoe_feed(
                    h,
                    i * 1000,
                    1,
                    fr.as_ptr(),
                    fr.len() as u32,
                    fr.len() as u32
                ),
                1
            );
            assert_eq!(tmoe_pending(h), u64::from(i == 5), "after packet {i}");
            if i == 5 {
                let mut v = [TmoeVerdict::default(); 2];
                assert_eq!(tmoe_poll(h, v.as_mut_ptr(), 2), 1);
                assert_eq!(
                    (v[0].packets, v[0].last_ts_ns, v[0].src_port),
                    (5, 5000, 1000)
                );
                early = Some(v[0]);
            }
        }
        // The flow's end gives no second verdict.
        assert_eq!(tmoe_flush(h), 0);
        assert_eq!(tmoe_pending(h), 0);
        let mut s = TmoeStats::default();
        tmoe_get_stats(h, &mut s);
        assert_eq!(
            (s.flows_finished, s.flows_classified, s.flows_too_short),
            (1, 1, 0)
        );
        tmoe_close(h);
    }
    // The early verdict is what `tmoe classify` says of the flow's first K
    // packets: the same class and probability (two classes make any argmax
    // probability >= 0.5, so that alone would check nothing).
    let v = early.expect("a verdict at packet 5");
    let cap = f.root.join("early.pcap");
    let mut w = traffic_moe::traffic::capture::pcap_writer::PcapWriter::new(
        std::fs::File::create(&cap).unwrap(),
        1,
    )
    .unwrap();
    for i in 1..=5u64 {
        w.write_frame(i * 1000, &frame(i)).unwrap();
    }
    drop(w);
    let args = classify_args(&f, vec![cap], classify::Format::Jsonl);
    let mut cli = Vec::new();
    classify::classify(&args, &mut cli).unwrap();
    let cli = String::from_utf8(cli).unwrap();
    let rows: Vec<serde_json::Value> = cli
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{cli}");
    let (_, _, meta) = traffic_moe::model::checkpoint::load_classifier(&f.ckpt).unwrap();
    assert_eq!(
        rows[0]["class"].as_str(),
        meta.classes.get(v.class_id as usize).map(String::as_str),
        "class"
    );
    let p = rows[0]["probability"].as_f64().unwrap();
    assert!(
        (f64::from(v.probability) - p).abs() <= 1e-6,
        "C API probability {} vs tmoe classify {p}",
        v.probability
    );
}

/// A 3-packet UDP flow's `k`-th query (the client port names the flow).
fn udp_frame(port: u16, k: u64) -> Vec<u8> {
    traffic_moe::traffic::capture::pcap_writer::eth_ipv4(
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        traffic_moe::traffic::types::PROTO_UDP,
        &traffic_moe::traffic::capture::pcap_writer::udp(
            port,
            53,
            format!("q{port}.{k}").as_bytes(),
        ),
    )
}

/// # Safety
/// `h` is a live handle.
unsafe fn feed_udp(h: *mut TmoeClassifier, ts: u64, port: u16, k: u64) {
    let fr = udp_frame(port, k);
    // SAFETY: a live handle and a frame of the given length.
    let fed = unsafe { tmoe_feed(h, ts, 1, fr.as_ptr(), fr.len() as u32, fr.len() as u32) };
    assert_eq!(fed, 1);
}

#[test]
fn c_api_caps_memory_and_accounts_for_every_flow() {
    assert_eq!(tmoe_api_version(), 4);
    let header = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("include/traffic_moe.h"),
    )
    .unwrap();
    assert!(header.contains("#define TMOE_API_VERSION 4"));
    assert!(header.contains(&format!("#define TMOE_BACKGROUND {TMOE_BACKGROUND}u")));
    let f = fixture();
    let ckpt = CString::new(f.ckpt.to_str().unwrap()).unwrap();
    let data = CString::new(f.data.to_str().unwrap()).unwrap();
    // SAFETY: valid strings; one thread; closed once.
    unsafe {
        assert_eq!(tmoe_set_limits(std::ptr::null_mut(), 1, 1), -1);
        let h = tmoe_open(ckpt.as_ptr(), data.as_ptr(), null_str(), null_str(), 0, 0);
        assert!(!h.is_null(), "{}", last_error());
        // At most 3 open flows and 2 ended ones awaiting a poll.
        assert_eq!(tmoe_set_limits(h, 3, 2), 0);
        // Six 3-packet flows one after another (the dataset's minimum is 3),
        // then a 1-packet flow: each new flow past the third ends the oldest.
        let mut ts = 1_000;
        for port in 1000..1006u16 {
            for k in 0..3 {
                feed_udp(h, ts, port, k);
                ts += 1_000;
            }
        }
        feed_udp(h, ts, 2000, 0);
        assert_eq!(tmoe_set_limits(h, 10, 10), -1, "after the first frame");
        assert!(
            last_error().contains("before the first frame"),
            "{}",
            last_error()
        );
        let mut s = TmoeStats::default();
        assert_eq!(tmoe_get_stats(h, &mut s), 0);
        // Flows 1000..=1003 were evicted: two queued, two dropped.
        assert_eq!(
            (
                s.flows_evicted,
                s.flows_finished,
                s.flows_dropped,
                s.flows_open
            ),
            (4, 4, 2, 3)
        );
        assert_eq!(tmoe_pending(h), 2);
        assert_eq!(tmoe_flush(h), 0);
        let mut v = [TmoeVerdict::default(); 8];
        assert_eq!(tmoe_poll(h, v.as_mut_ptr(), 8), 2);
        assert_eq!((v[0].src_port, v[1].src_port), (1000, 1001), "oldest kept");
        assert_eq!((v[0].packets, v[1].packets), (3, 3));
        tmoe_get_stats(h, &mut s);
        // Every flow: 6 finished (2 classified, 4 dropped) and 1 too short.
        assert_eq!(
            (
                s.flows_finished,
                s.flows_too_short,
                s.flows_classified,
                s.flows_dropped,
                s.flows_evicted,
                s.flows_open
            ),
            (6, 1, 2, 4, 4, 0)
        );
        assert_eq!(
            s.flows_finished,
            s.flows_classified + s.flows_dropped + tmoe_pending(h)
        );
        tmoe_close(h);
    }
}

#[test]
fn c_api_opens_the_engine_it_is_asked_for() {
    let f = fixture();
    let ckpt = CString::new(f.ckpt.to_str().unwrap()).unwrap();
    let data = CString::new(f.data.to_str().unwrap()).unwrap();
    let name = |s: &str| CString::new(s).unwrap();
    let (gpu, cuda, sim, cpu) = (name("gpu"), name("cuda"), name("sim"), name("cpu"));
    let bf16 = name("cpu-bf16");
    // SAFETY: valid strings; one thread; each handle closed once.
    unsafe {
        let open = |device: &CString| {
            tmoe_open(
                ckpt.as_ptr(),
                data.as_ptr(),
                null_str(),
                device.as_ptr(),
                0,
                0,
            )
        };
        assert!(open(&gpu).is_null());
        assert!(
            last_error().contains("\"cpu\", \"cpu-bf16\", \"cuda\" or \"sim\""),
            "{}",
            last_error()
        );
        if !cfg!(feature = "cuda") {
            assert!(open(&cuda).is_null(), "cuda without --features cuda");
            assert!(last_error().contains("cuda"), "{}", last_error());
        }
        // The same flow on the CPU engine and on the GPU engine (simulated).
        // The fixture's micro model has head_dim 16, which the GPU engine's
        // attention kernels refuse (they take 32 or 64): that refusal, where
        // the CPU engine classifies, shows the flow went to the engine asked for.
        let mut polled = Vec::new();
        for device in [&cpu, &sim, &bf16] {
            let h = open(device);
            assert!(!h.is_null(), "{}", last_error());
            for k in 0..3 {
                feed_udp(h, 1_000 + k * 1_000, 4242, k);
            }
            tmoe_flush(h);
            let mut v = [TmoeVerdict::default(); 2];
            let n = tmoe_poll(h, v.as_mut_ptr(), 2);
            let error = last_error();
            let mut s = TmoeStats::default();
            tmoe_get_stats(h, &mut s);
            polled.push((n, error, s.flows_classified, s.flows_dropped, v[0].class_id));
            tmoe_close(h);
        }
        assert_eq!(polled[0].0, 1, "cpu: {}", polled[0].1);
        assert_eq!((polled[0].2, polled[0].3), (1, 0));
        assert_eq!(polled[1].0, -1);
        assert!(
            polled[1].1.contains("attention_fwd"),
            "sim: {}",
            polled[1].1
        );
        // The flow the failed model call took is counted, not lost.
        assert_eq!((polled[1].2, polled[1].3), (0, 1));
        // The bf16 CPU engine classifies it, as the f32 one does.
        assert_eq!(polled[2].0, 1, "cpu-bf16: {}", polled[2].1);
        assert_eq!(
            polled[2].4, polled[0].4,
            "the same class on cpu and cpu-bf16"
        );
    }
}

/// On a link gone quiet, `tmoe_advance` ends the flows idle at the time it
/// is given (the table's clock otherwise stands still until the next
/// frame), on the caller's thread and in the background alike.
#[test]
fn advance_ends_idle_flows_on_a_quiet_link() {
    const SEC: u64 = 1_000_000_000;
    let f = fixture();
    let ckpt = CString::new(f.ckpt.to_str().unwrap()).unwrap();
    let data = CString::new(f.data.to_str().unwrap()).unwrap();
    for flags in [0, TMOE_BACKGROUND] {
        // SAFETY: valid strings; one thread; closed once.
        unsafe {
            assert_eq!(tmoe_advance(std::ptr::null_mut(), 1), -1);
            let h = tmoe_open(
                ckpt.as_ptr(),
                data.as_ptr(),
                null_str(),
                null_str(),
                0,
                flags,
            );
            assert!(!h.is_null(), "{}", last_error());
            // One 3-packet flow (the dataset's minimum), then nothing.
            for k in 0..3 {
                feed_udp(h, SEC + k * 1_000, 1000, k);
            }
            // The fixture's idle timeout is the default 120 s.
            assert_eq!(tmoe_advance(h, SEC + 100 * SEC), 0);
            let mut s = TmoeStats::default();
            tmoe_get_stats(h, &mut s);
            assert_eq!((s.flows_open, s.flows_finished), (1, 0), "flags {flags}");
            assert_eq!(tmoe_advance(h, SEC + 121 * SEC), 0);
            tmoe_get_stats(h, &mut s);
            assert_eq!((s.flows_open, s.flows_finished), (0, 1), "flags {flags}");
            // Its verdict comes without a flush (in the background, once the
            // worker has run it: the wait bounds a hang, it times nothing).
            let mut v = [TmoeVerdict::default(); 4];
            let t0 = std::time::Instant::now();
            let mut got = 0;
            while got == 0 && t0.elapsed() < std::time::Duration::from_secs(60) {
                got = tmoe_poll(h, v.as_mut_ptr(), 4);
                assert!(got >= 0, "{}", last_error());
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(got, 1, "flags {flags}");
            assert_eq!((v[0].src_port, v[0].packets), (1000, 3));
            tmoe_close(h);
        }
    }
}

#[test]
fn background_mode_gives_the_callers_verdicts() {
    let f = fixture();
    let ckpt = CString::new(f.ckpt.to_str().unwrap()).unwrap();
    let data = CString::new(f.data.to_str().unwrap()).unwrap();
    // 200 flows of 3 packets each, one after another, fed twice: on the
    // caller's thread and in the background.
    let feed_all = |h: *mut TmoeClassifier, polled: &mut Vec<TmoeVerdict>| {
        let mut v = [TmoeVerdict::default(); 16];
        let mut ts = 1_000;
        for port in 1000..1200u16 {
            for k in 0..3 {
                // SAFETY: a live handle.
                unsafe { feed_udp(h, ts, port, k) };
                ts += 1_000;
            }
            // SAFETY: a live handle and room for 16 verdicts.
            let n = unsafe { tmoe_poll(h, v.as_mut_ptr(), 16) };
            assert!(n >= 0, "{}", last_error());
            polled.extend_from_slice(&v[..n as usize]);
        }
        // SAFETY: a live handle.
        assert_eq!(unsafe { tmoe_flush(h) }, 0, "{}", last_error());
        loop {
            // SAFETY: as above.
            let n = unsafe { tmoe_poll(h, v.as_mut_ptr(), 16) };
            assert!(n >= 0, "{}", last_error());
            if n == 0 {
                break;
            }
            polled.extend_from_slice(&v[..n as usize]);
        }
    };
    let key = |v: &TmoeVerdict| (v.src_port, v.packets, v.class_id, v.probability.to_bits());
    let mut want = Vec::new();
    let mut got = Vec::new();
    // SAFETY: valid strings; one thread; each handle closed once.
    unsafe {
        let h = tmoe_open(ckpt.as_ptr(), data.as_ptr(), null_str(), null_str(), 0, 0);
        assert!(!h.is_null(), "{}", last_error());
        feed_all(h, &mut want);
        tmoe_close(h);
        let h = tmoe_open(
            ckpt.as_ptr(),
            data.as_ptr(),
            null_str(),
            null_str(),
            0,
            TMOE_BACKGROUND,
        );
        assert!(!h.is_null(), "{}", last_error());
        feed_all(h, &mut got);
        let mut s = TmoeStats::default();
        assert_eq!(tmoe_get_stats(h, &mut s), 0);
        assert_eq!(tmoe_pending(h), 0, "flush waited for every verdict");
        assert_eq!(
            (s.flows_finished, s.flows_classified, s.flows_dropped),
            (200, 200, 0)
        );
        tmoe_close(h);
        // A bad checkpoint fails in tmoe_open, on the model thread, with
        // the same message.
        let bad = CString::new("/nonexistent/classifier.safetensors").unwrap();
        let h = tmoe_open(
            bad.as_ptr(),
            data.as_ptr(),
            null_str(),
            null_str(),
            0,
            TMOE_BACKGROUND,
        );
        assert!(h.is_null());
        assert!(last_error().contains("/nonexistent"), "{}", last_error());
        let h = tmoe_open(ckpt.as_ptr(), data.as_ptr(), null_str(), null_str(), 0, 4);
        assert!(h.is_null());
        assert!(last_error().contains("unknown flags"), "{}", last_error());
    }
    assert_eq!(want.len(), 200);
    // The same verdicts in the same order (batches differ, so the
    // probabilities may differ in the last bits: compare classes exactly).
    assert_eq!(
        got.iter()
            .map(|v| (v.src_port, v.class_id))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|v| (v.src_port, v.class_id))
            .collect::<Vec<_>>()
    );
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g.probability - w.probability).abs() < 1e-5,
            "{:?} {:?}",
            key(g),
            key(w)
        );
    }
}

#[test]
fn background_mode_holds_at_most_max_pending_verdicts() {
    let f = fixture();
    let ckpt = CString::new(f.ckpt.to_str().unwrap()).unwrap();
    let data = CString::new(f.data.to_str().unwrap()).unwrap();
    // SAFETY: valid strings; one thread; closed once.
    unsafe {
        let h = tmoe_open(
            ckpt.as_ptr(),
            data.as_ptr(),
            null_str(),
            null_str(),
            0,
            TMOE_BACKGROUND,
        );
        assert!(!h.is_null(), "{}", last_error());
        // One open flow (each new one ends the last) and 2 awaiting a poll.
        assert_eq!(tmoe_set_limits(h, 1, 2), 0);
        // Ten 3-packet flows, never polled, each long enough apart that the
        // model thread classifies it (a flow waits at most 20 ms): the
        // verdicts, not the ended flows, are what piles up.
        let mut ts = 1_000;
        for port in 1000..1010u16 {
            for k in 0..3 {
                feed_udp(h, ts, port, k);
                ts += 1_000;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(tmoe_flush(h), 0, "{}", last_error());
        let mut v = [TmoeVerdict::default(); 16];
        let n = tmoe_poll(h, v.as_mut_ptr(), 16);
        assert_eq!(n, 2, "verdicts held beyond max_pending = 2");
        let mut s = TmoeStats::default();
        assert_eq!(tmoe_get_stats(h, &mut s), 0);
        assert_eq!(
            (s.flows_finished, s.flows_classified, s.flows_dropped),
            (10, 2, 8)
        );
        assert_eq!(tmoe_pending(h), 0);
        tmoe_close(h);
    }
}

/// A panic unwinding out of an `extern "C"` function aborts the process
/// that embeds the library: every entry point of src/capi.rs starts with
/// `guarded` (which turns a panic into the error return and
/// `tmoe_last_error`), `tmoe_close` included (dropping a handle runs the
/// engine's and the model thread's teardown), except the three that only
/// hand out a constant or this thread's last error.
#[test]
fn every_entry_point_catches_panics() {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/capi.rs")).unwrap();
    let exempt = ["tmoe_api_version", "tmoe_version", "tmoe_last_error"];
    let mut names = Vec::new();
    for part in src.split("extern \"C\" fn ").skip(1) {
        let name = part.split('(').next().unwrap().trim().to_string();
        // The body: from the first line that ends with `{`.
        let body = part.split_once("{\n").expect("a function body").1;
        let first = body
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("//"))
            .unwrap();
        if !exempt.contains(&name.as_str()) {
            assert!(
                first.starts_with("guarded("),
                "{name} does not start with guarded(..): `{first}`"
            );
        }
        names.push(name);
    }
    for f in [
        "tmoe_open",
        "tmoe_close",
        "tmoe_feed",
        "tmoe_poll",
        "tmoe_get_stats",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} not found in {names:?}");
    }
    assert_eq!(names.len(), 14, "{names:?}");
}

/// The library defines UBSan's misaligned-access handlers (the simulator
/// turns a kernel's misaligned vector access into a launch error without
/// libubsan). A host built with `-fsanitize=alignment` gets them too: its
/// own misaligned load must be reported as UBSan reports it and the host
/// go on, not be aborted with the simulator's message.
#[test]
fn a_ubsan_built_host_keeps_ubsans_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("host.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <string.h>
#include "traffic_moe.h"
int main(void) {
    char buf[16];
    memset(buf, 7, sizeof buf);
    int* volatile p = (int*)(buf + 1);
    int v = *p; /* misaligned: UBSan reports, then carries on */
    printf("api %u, read %d\n", tmoe_api_version(), v == 0x07070707);
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.path().join("host");
    build_c(&src, &["-fsanitize=alignment"], &exe);
    let out = Command::new(&exe).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stdout.contains("read 1"), "{stdout}");
    assert!(
        stderr.contains("host.c:8")
            && stderr.contains("runtime error: load of misaligned address")
            && !stderr.contains("tmoe sim"),
        "{stderr}"
    );
}
