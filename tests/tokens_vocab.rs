//! WordPiece training on a bigram corpus, save / load round trip, hash.

use traffic_moe::traffic::tokens::vocab::{BigramCounts, SPECIALS, UNK, Vocab, fnv1a64};

/// A corpus with strong structure: some words far more frequent than others.
fn corpus() -> BigramCounts {
    let mut c = BigramCounts::default();
    let mut x: u32 = 12345;
    for i in 0..20_000u32 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = 4 + (x >> 28) as usize;
        let seg: Vec<u8> = (0..len)
            .map(|j| ((i as usize % 17) * 3 + j * ((x >> 20) as usize % 5)) as u8)
            .collect();
        c.add_segment(&seg);
        c.add_segment(&[0x45, 0x00, 0x00, 0x3c, 0x16, 0x03, 0x01]);
    }
    c
}

#[test]
fn train_save_load_round_trip() {
    let counts = corpus();
    let v = Vocab::train(&counts, 512).unwrap();
    assert_eq!(
        v.len(),
        512 + SPECIALS.len(),
        "enough distinct material to fill 512"
    );
    for (i, s) in SPECIALS.iter().enumerate() {
        assert_eq!(v.token(i as u32), Some(*s));
    }
    // The most frequent words become whole tokens.
    for word in ["4500", "0000", "003c", "1603", "0301"] {
        let b = u16::from_str_radix(word, 16).unwrap();
        assert_eq!(v.pieces(b), &[v.id(word).expect(word)], "{word}");
    }
    // WordPiece structure: continuation pieces exist.
    assert!((0..v.len() as u32).any(|i| v.token(i).unwrap().starts_with("##")));

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("vocab.txt");
    v.save(&p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(fnv1a64(&bytes), v.hash(), "hash = FNV-1a of the file");
    let back = Vocab::load(&p).unwrap();
    assert_eq!(back.hash(), v.hash());
    assert_eq!(back.len(), v.len());
    for b in 0..=u16::MAX {
        assert_eq!(back.pieces(b), v.pieces(b));
    }
    // Deterministic training: same corpus, same vocabulary.
    assert_eq!(Vocab::train(&counts, 512).unwrap().hash(), v.hash());
    // A different size is a different vocabulary.
    assert_ne!(Vocab::train(&counts, 300).unwrap().hash(), v.hash());
}

#[test]
fn every_seen_word_is_spelled_without_unk() {
    let counts = corpus();
    let v = Vocab::train(&counts, 64).unwrap();
    for b in 0..=u16::MAX {
        if counts.0[b as usize] > 0 {
            assert!(!v.pieces(b).contains(&UNK), "{b:04x} -> {:?}", v.pieces(b));
        }
    }
}

#[test]
fn bad_vocab_files_error_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.txt");
    std::fs::write(&p, "[PAD]\n[UNK]\n[PY]\n[PD]\n[END]\n").unwrap();
    let e = format!("{:#}", Vocab::load(&p).unwrap_err());
    assert!(e.contains("v.txt") && e.contains("must start with"), "{e}");
    std::fs::write(&p, "[PAD]\n[UNK]\n[PD]\n[PY]\n[END]\nab\nab\n").unwrap();
    let e = format!("{:#}", Vocab::load(&p).unwrap_err());
    assert!(e.contains("repeats"), "{e}");
    let e = format!(
        "{:#}",
        Vocab::load(&dir.path().join("missing.txt")).unwrap_err()
    );
    assert!(e.contains("missing.txt"), "{e}");
    assert!(Vocab::train(&Default::default(), 10).is_err());
}

/// A vocabulary file past any vocab.txt's size is refused unread, naming
/// it: `--vocab /dev/zero`, or a capture named by mistake, was read whole
/// (the former until memory ran out).
#[test]
fn a_file_far_larger_than_a_vocabulary_is_refused_unread() {
    // `vocab::MAX_FILE_BYTES`: the error names it.
    const MAX_FILE_BYTES: u64 = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.txt");
    let f = std::fs::File::create(&p).unwrap();
    // Sparse: the specials, then zeros to past the bound.
    std::io::Write::write_all(&mut &f, SPECIALS.join("\n").as_bytes()).unwrap();
    f.set_len(MAX_FILE_BYTES + 1).unwrap();
    for path in [p.as_path(), std::path::Path::new("/dev/zero")] {
        if !path.exists() {
            continue;
        }
        let e = format!("{:#}", Vocab::load(path).unwrap_err());
        assert!(
            e.contains(&path.display().to_string()) && e.contains("larger than 64 MiB"),
            "{e}"
        );
    }
}
