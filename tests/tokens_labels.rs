//! Label sources: folder names, file-name prefixes, nDPI and CIC CSVs.

use std::path::Path;
use traffic_moe::traffic::dataset::labels::{
    CsvColumn, FlowLabels, LabelSource, folder_label, parse_endpoint, prefix_label, split_csv_line,
};
use traffic_moe::traffic::types::{Endpoint, FlowKey, PROTO_TCP, PROTO_UDP};

fn ep(s: &str) -> Endpoint {
    parse_endpoint(s).unwrap_or_else(|| panic!("{s}"))
}

#[test]
fn endpoints_in_every_form() {
    assert_eq!(ep("192.168.2.126:45380").port, 45380);
    assert_eq!(ep("192.168.2.126:45380").ip.to_string(), "192.168.2.126");
    let b = ep("[fe80::9bd:81dd:2fdc:5750]:1900");
    assert_eq!(
        (b.ip.to_string().as_str(), b.port),
        ("fe80::9bd:81dd:2fdc:5750", 1900)
    );
    let p = ep("fe80::9bd:81dd:2fdc:5750:1900");
    assert_eq!(p, b, "plain IPv6: the port follows the last colon");
    assert_eq!(ep("[ff02::1:2]:547").ip.to_string(), "ff02::1:2");
    assert!(parse_endpoint("nonsense").is_none());
    assert!(parse_endpoint("1.2.3.4:99999").is_none());
    assert!(parse_endpoint("[::1]").is_none());
    // IPv4-mapped: the IPv4 address the flow has on the wire.
    assert_eq!(ep("[::ffff:10.0.0.1]:53"), ep("10.0.0.1:53"));
    assert_eq!(ep("::ffff:10.0.0.1:53").ip.to_string(), "10.0.0.1");
}

#[test]
fn ndpi_layout() {
    let csv = "file,l4,src,dst,app,category,encrypted,packets,bytes\n\
        a.pcap,TCP,192.168.2.126:45380,161.117.13.29:80,HTTP.1kxun,Streaming,0,80,183125\n\
        a.pcap,UDP,[fe80::1]:546,[ff02::1:2]:547,DHCPV6,Network,0,5,490\n\
        b.pcap,UDP,fe80::2:5353,ff02::fb:5353,MDNS,Network,0,3,300\n\
        a.pcap,ICMP,1.1.1.1:0,2.2.2.2:0,ICMP,Network,0,3,300\n\
        sub/c.pcap,TCP,10.0.0.1:1,10.0.0.2:443,TLS.YouTube,Media,1,20,9000\n";
    let l = FlowLabels::parse(csv, None).unwrap();
    assert_eq!((l.rows, l.other_protocol, l.unreadable), (4, 1, 0));
    assert!(!l.has_bad_rows(), "{}", l.skipped_note());
    // Bidirectional: the key is the same whichever side is named first.
    let k = FlowKey::new(PROTO_TCP, ep("161.117.13.29:80"), ep("192.168.2.126:45380"));
    assert_eq!(l.get("a.pcap", &k), Some("1kxun"));
    assert_eq!(
        l.get("b.pcap", &k),
        None,
        "the file column restricts the row"
    );
    let k6 = FlowKey::new(PROTO_UDP, ep("[ff02::1:2]:547"), ep("[fe80::1]:546"));
    assert_eq!(l.get("a.pcap", &k6), Some("DHCPV6"));
    let plain = FlowKey::new(PROTO_UDP, ep("[fe80::2]:5353"), ep("[ff02::fb]:5353"));
    assert_eq!(l.get("b.pcap", &plain), Some("MDNS"));
    let yt = FlowKey::new(PROTO_TCP, ep("10.0.0.1:1"), ep("10.0.0.2:443"));
    assert_eq!(
        l.get("c.pcap", &yt),
        Some("YouTube"),
        "app's last dot-part, file name of a path"
    );

    let cat = FlowLabels::parse(csv, Some(&CsvColumn::Category)).unwrap();
    assert_eq!(cat.get("a.pcap", &k), Some("Streaming"));
    assert_eq!(cat.get("c.pcap", &yt), Some("Media"));
}

#[test]
fn cic_layout() {
    let csv = "Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp, Label\n\
        x, 192.168.10.5, 50000, 8.8.8.8, 53, 17, t, BENIGN\n\
        y, 192.168.10.5, 50001, 10.0.0.9, 80, 6, t, DDoS\n\
        z, 10.0.0.9, 80, 192.168.10.5, 50001, 6, t, BENIGN\n\
        w, fe80::1, 1000, fe80::2, 2000, 6, t, PortScan\n";
    let l = FlowLabels::parse(csv, None).unwrap();
    assert_eq!(l.rows, 4);
    assert_eq!(l.conflicts, 1, "the reversed duplicate with another label");
    let k = FlowKey::new(PROTO_TCP, ep("10.0.0.9:80"), ep("192.168.10.5:50001"));
    assert_eq!(l.get("anything.pcap", &k), Some("DDoS"), "first label kept");
    let k6 = FlowKey::new(PROTO_TCP, ep("[fe80::2]:2000"), ep("[fe80::1]:1000"));
    assert_eq!(l.get("f", &k6), Some("PortScan"));
    // Short CICFlowMeter header names work too.
    let short =
        "Flow ID,Src IP,Src Port,Dst IP,Dst Port,Protocol,Label\nx,1.2.3.4,1,5.6.7.8,2,6,VPN\n";
    let l = FlowLabels::parse(short, None).unwrap();
    assert_eq!(
        l.get(
            "f",
            &FlowKey::new(PROTO_TCP, ep("5.6.7.8:2"), ep("1.2.3.4:1"))
        ),
        Some("VPN")
    );
}

#[test]
fn bad_csvs_error_clearly() {
    let e = FlowLabels::parse("a,b,c\n1,2,3\n", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unrecognised header"), "{e}");
    // A short row (a cut or broken line) is counted as unreadable, with
    // its line, as a bad endpoint is; it does not end the run.
    let l = FlowLabels::parse(
        "file,l4,src,dst,app\nf,TCP,1.2.3.4:1\nf,TCP,1.2.3.4:1,5.6.7.8:2,TLS.Zoom\n",
        None,
    )
    .unwrap();
    assert_eq!((l.rows, l.unreadable), (1, 1));
    assert_eq!(
        l.first_unreadable.as_deref(),
        Some("line 2: only 3 columns, 5 expected")
    );
    let e = format!(
        "{:#}",
        FlowLabels::load(Path::new("/nonexistent/labels.csv"), None).unwrap_err()
    );
    assert!(e.contains("labels.csv"), "{e}");
}

#[test]
fn csv_quotes() {
    assert_eq!(
        split_csv_line(r#"a,"b,c","d""e",f"#),
        vec!["a", "b,c", "d\"e", "f"]
    );
}

#[test]
fn folder_and_prefix_labels() {
    let root = Path::new("/data/iot");
    assert_eq!(
        folder_label(root, Path::new("/data/iot/Aria/x.pcap")).as_deref(),
        Some("Aria")
    );
    assert_eq!(
        folder_label(root, Path::new("/data/iot/VPN/email/x.pcap")).as_deref(),
        Some("VPN")
    );
    let f = Path::new("/data/iot/Aria/x.pcap");
    assert_eq!(
        folder_label(f, f).as_deref(),
        Some("Aria"),
        "a file input: its parent folder"
    );
    assert_eq!(
        prefix_label(Path::new("/a/youtube_01.pcap"), "-_").as_deref(),
        Some("youtube")
    );
    assert_eq!(
        prefix_label(Path::new("/a/vpn-skype_2.pcap"), "-_").as_deref(),
        Some("vpn")
    );
    assert_eq!(
        prefix_label(Path::new("/a/vpn-skype_2.pcap"), "_").as_deref(),
        Some("vpn-skype")
    );
    assert_eq!(
        prefix_label(Path::new("/a/plain.pcap"), "-_").as_deref(),
        Some("plain")
    );
}

/// Folder and file names need not be UTF-8: two that differ only in invalid
/// bytes are two labels (a lossy conversion made both `cam\u{fffd}`).
#[cfg(unix)]
#[test]
fn non_utf8_names_give_distinct_labels() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let root = Path::new("/data");
    let under = |dir: &[u8]| {
        Path::new("/data")
            .join(OsStr::from_bytes(dir))
            .join("x.pcap")
    };
    let (a, b) = (under(b"cam\xfe"), under(b"cam\xff"));
    assert_eq!(folder_label(root, &a).as_deref(), Some("cam\\xfe"));
    assert_eq!(folder_label(root, &b).as_deref(), Some("cam\\xff"));
    let named = |f: &[u8]| Path::new("/a").join(OsStr::from_bytes(f));
    assert_eq!(
        prefix_label(&named(b"\xe9t\xe9_1.pcap"), "_").as_deref(),
        Some("\\xe9t\\xe9")
    );
}

#[test]
fn label_source_parsing() {
    assert_eq!(LabelSource::parse("folder").unwrap(), LabelSource::Folder);
    assert_eq!(LabelSource::parse("none").unwrap(), LabelSource::None);
    assert_eq!(
        LabelSource::parse("prefix:+").unwrap(),
        LabelSource::Prefix {
            delimiters: "+".into()
        }
    );
    assert_eq!(
        LabelSource::parse("csv:../d/flow_labels.csv:category").unwrap(),
        LabelSource::Csv {
            path: "../d/flow_labels.csv".into(),
            column: Some(CsvColumn::Category)
        }
    );
    assert_eq!(
        LabelSource::parse("csv:/x/l.csv").unwrap(),
        LabelSource::Csv {
            path: "/x/l.csv".into(),
            column: None
        }
    );
    assert!(LabelSource::parse("bogus").is_err());
}

/// Rows that cannot be used are counted by reason, with the first
/// unreadable one's line, and said in one note (what `tokenize` prints).
#[test]
fn unusable_rows_are_counted_by_reason() {
    let csv = "Src IP,Src Port,Dst IP,Dst Port,Protocol,Label\n\
        1.2.3.4,1,5.6.7.8,2,6,VPN\n\
        foo,1,5.6.7.8,2,6,VPN\n\
        1.2.3.4,99999,5.6.7.8,2,6,VPN\n\
        1.2.3.4,1,5.6.7.8,2,tcp,VPN\n\
        1.2.3.4,1,5.6.7.8,2,1,Ping\n\
        1.2.3.4,3,5.6.7.8,4,17,\n";
    let l = FlowLabels::parse(csv, None).unwrap();
    assert_eq!(
        (l.rows, l.unreadable, l.other_protocol, l.empty_label),
        (1, 3, 1, 1)
    );
    assert!(l.has_bad_rows());
    let note = l.skipped_note();
    assert!(
        note.starts_with("1 rows used; 3 unreadable (first: line 3: endpoints \"foo\"")
            && note.contains("1 with an empty label")
            && note.contains("1 of a protocol other than TCP and UDP"),
        "{note}"
    );
    let ok = FlowLabels::parse(
        "Src IP,Src Port,Dst IP,Dst Port,Protocol,Label\n1.2.3.4,1,5.6.7.8,2,6,VPN\n",
        None,
    )
    .unwrap();
    assert_eq!(ok.skipped_note(), "");
}
