//! Text for names that come from the file system (capture file names, label
//! folders, paths in output), which need not be UTF-8 on Unix.
//!
//! `to_string_lossy` turns every invalid byte into U+FFFD, so two folders
//! `a\xfe` and `a\xff` became one class and two captures one name. Here each
//! invalid byte is written `\xNN` (as Python's `backslashreplace`): distinct
//! names stay distinct, and valid UTF-8 is kept as it is.

use std::ffi::OsStr;
use std::fmt::Write;

/// `name` as text: its UTF-8 runs as they are, each invalid byte as `\xNN`.
pub fn os_text(name: &OsStr) -> String {
    let bytes = name.as_encoded_bytes();
    let mut s = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn invalid_bytes_are_escaped_and_stay_distinct() {
        let a = os_text(OsStr::from_bytes(b"cam\xfe"));
        let b = os_text(OsStr::from_bytes(b"cam\xff"));
        assert_eq!(a, "cam\\xfe");
        assert_eq!(b, "cam\\xff");
        assert_eq!(os_text(OsStr::new("caméra.pcap")), "caméra.pcap");
        // A cut multi-byte sequence: the valid rest is kept.
        assert_eq!(os_text(OsStr::from_bytes(b"\xc3x")), "\\xc3x");
    }
}
