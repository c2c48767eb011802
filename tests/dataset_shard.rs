//! Shard write / open round trip and clear errors on broken files.

use traffic_moe::traffic::dataset::shard::{
    FlowMeta, NO_LABEL, Shard, ShardError, ip_bytes, write_shard,
};

fn meta(label: u32, file_id: u32) -> FlowMeta {
    let (src_ip, v) = ip_bytes("192.168.1.2".parse().unwrap());
    let (dst_ip, _) = ip_bytes("2001:db8::1".parse().unwrap());
    FlowMeta {
        label,
        file_id,
        src_ip,
        dst_ip,
        src_port: 1234,
        dst_port: 443,
        proto: 6,
        ip_version: v,
        slice: 0,
        first_ts_ns: 1_700_000_000_123_456_789,
        packet_count: 17,
        n_tokens: 0,
    }
}

fn write_sample(dir: &std::path::Path, seq_len: usize) -> std::path::PathBuf {
    let p = dir.join("s.tmoe");
    // 3 rows of odd length: the metadata section needs alignment padding.
    let rows = vec![
        vec![2, 10, 11, 4],
        vec![2, 4],
        (0..seq_len as u32).collect(),
    ];
    let metas = vec![meta(0, 0), meta(NO_LABEL, 1), meta(5, 2)];
    write_shard(&p, seq_len, 0xdead_beef_0123_4567, 9000, &rows, &metas).unwrap();
    p
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_sample(dir.path(), 7);
    let s = Shard::open(&p).unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!(s.seq_len(), 7);
    assert_eq!(s.vocab_hash(), 0xdead_beef_0123_4567);
    assert_eq!(s.vocab_size(), 9000);
    assert_eq!(s.tokens(0), &[2, 10, 11, 4, 0, 0, 0]);
    assert_eq!(s.tokens(1), &[2, 4, 0, 0, 0, 0, 0]);
    assert_eq!(s.tokens(2), &[0, 1, 2, 3, 4, 5, 6]);
    assert_eq!((s.n_tokens(0), s.n_tokens(1), s.n_tokens(2)), (4, 2, 7));
    assert_eq!(
        (s.label(0), s.label(1), s.label(2)),
        (Some(0), None, Some(5))
    );
    let m = s.meta(2);
    assert_eq!(m.file_id, 2);
    assert_eq!(m.src_addr().to_string(), "192.168.1.2");
    assert_eq!(m.dst_addr().to_string(), "2001:db8::1");
    assert_eq!(
        (m.src_port, m.dst_port, m.proto, m.packet_count),
        (1234, 443, 6, 17)
    );
    assert_eq!(m.first_ts_ns, 1_700_000_000_123_456_789);
    assert_eq!(s.all_tokens().len(), 21);
}

#[test]
fn empty_shard_opens() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.tmoe");
    write_shard(&p, 16, 1, 10, &[], &[]).unwrap();
    let s = Shard::open(&p).unwrap();
    assert!(s.is_empty());
}

#[test]
fn rows_longer_than_seq_len_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.tmoe");
    assert!(write_shard(&p, 2, 1, 10, &[vec![1, 2, 3]], &[meta(0, 0)]).is_err());
}

#[test]
fn token_ids_past_the_vocabulary_are_refused() {
    // One flipped bit in a token row once reached the model's embedding
    // table, whose error named no file.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ids.tmoe");
    let rows = [vec![2, 9, 4], vec![2, 4]];
    write_shard(&p, 4, 1, 10, &rows, &[meta(0, 0), meta(1, 1)]).unwrap();
    Shard::open(&p).unwrap();
    let mut v = std::fs::read(&p).unwrap();
    v[64 + 4 * (4 + 1)] = 10; // flow 1, position 1: the vocabulary's size
    std::fs::write(&p, &v).unwrap();
    let e = Shard::open(&p).unwrap_err();
    assert!(matches!(e, ShardError::Corrupt { .. }), "{e}");
    assert!(
        e.to_string().contains("ids.tmoe")
            && e.to_string()
                .contains("flow 1 has token id 10 at position 1, past the vocabulary's 10 entries"),
        "{e}"
    );
    // Nor are such rows written.
    let e = write_shard(&p, 4, 1, 10, &[vec![2, 10]], &[meta(0, 0)]).unwrap_err();
    assert!(e.to_string().contains("token id 10"), "{e}");
}

#[test]
fn broken_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_sample(dir.path(), 7);
    let good = std::fs::read(&p).unwrap();
    let bad = dir.path().join("bad.tmoe");

    std::fs::write(&bad, &good[..good.len() - 5]).unwrap();
    let e = Shard::open(&bad).unwrap_err();
    assert!(matches!(e, ShardError::Size { .. }), "{e}");
    assert!(
        e.to_string().contains("bad.tmoe") && e.to_string().contains("truncated"),
        "{e}"
    );

    std::fs::write(&bad, &good[..10]).unwrap();
    assert!(matches!(
        Shard::open(&bad).unwrap_err(),
        ShardError::Size { .. }
    ));

    let mut v = good.clone();
    v[0] = b'X';
    std::fs::write(&bad, &v).unwrap();
    let e = Shard::open(&bad).unwrap_err();
    assert!(matches!(e, ShardError::BadMagic { .. }), "{e}");

    let mut v = good.clone();
    v[8] = 99; // version
    std::fs::write(&bad, &v).unwrap();
    let e = Shard::open(&bad).unwrap_err();
    assert!(matches!(e, ShardError::Version { found: 99, .. }), "{e}");

    let mut v = good.clone();
    v[16] = 200; // n_flows low byte: sizes no longer match the file
    std::fs::write(&bad, &v).unwrap();
    assert!(matches!(
        Shard::open(&bad).unwrap_err(),
        ShardError::Size { .. }
    ));

    // A metadata row claiming more tokens than seq_len.
    let mut v = good.clone();
    let n_tok_off = v.len() - 4; // last FlowMeta's n_tokens
    v[n_tok_off] = 50;
    std::fs::write(&bad, &v).unwrap();
    assert!(matches!(
        Shard::open(&bad).unwrap_err(),
        ShardError::Corrupt { .. }
    ));

    let e = Shard::open(&dir.path().join("nope.tmoe")).unwrap_err();
    assert!(matches!(e, ShardError::Io { .. }) && e.to_string().contains("nope.tmoe"));
}
