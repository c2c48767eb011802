//! A flow in, token ids out: per-packet attribute bytes and payload,
//! overlapping byte bigrams, the WordPiece vocabulary over them, and the
//! optional masking of the flow's own addresses and ports.

pub mod bigram;
pub mod features;
pub mod identifiers;
pub mod tokenize;
pub mod vocab;
