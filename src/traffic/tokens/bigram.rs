//! Overlapping byte bigrams, stride 1: bytes `aa bb cc` become the words
//! `aabb bbcc`, each written as 4 lowercase hex digits. A segment of n bytes
//! gives n-1 bigrams (a single byte gives none).

/// The bigrams of a byte segment as 16-bit values `(b[i] << 8) | b[i+1]`.
pub fn bigrams(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes
        .windows(2)
        .map(|w| (u16::from(w[0]) << 8) | u16::from(w[1]))
}

/// The 4-hex-digit word of one bigram value.
pub fn bigram_word(value: u16) -> String {
    format!("{value:04x}")
}

/// The bigram words of a segment, space separated (`aabb bbcc ...`).
pub fn bigram_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 5);
    for (i, b) in bigrams(bytes).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&bigram_word(b));
    }
    out
}

/// Adds one to `counts[bigram]` for every bigram of a segment.
pub fn count_bigrams(bytes: &[u8], counts: &mut [u64; 65536]) {
    for b in bigrams(bytes) {
        counts[b as usize] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_stride_one() {
        assert_eq!(bigram_text(&[0xaa, 0xbb, 0xcc]), "aabb bbcc");
        assert_eq!(bigram_text(&[0x01, 0x02, 0x03, 0x04]), "0102 0203 0304");
        assert_eq!(bigram_text(&[0x7f]), "");
        assert_eq!(bigram_text(&[]), "");
        assert_eq!(bigrams(&[0x12, 0x34]).collect::<Vec<_>>(), vec![0x1234]);
    }
}
