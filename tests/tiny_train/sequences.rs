//! Labelled token sequences that a tiny model learns in a few steps.
// Not every test crate that includes `tiny_train` uses them.
#![allow(dead_code)]

use traffic_moe::model::batch::MemSequences;

/// `n` sequences of 3 classes, up to 24 tokens: class c is a repeating
/// pattern of tokens starting at 5 + 8c, of varying lengths.
pub fn three_classes(n: usize, seed: u32) -> MemSequences {
    let mut m = MemSequences::new(24);
    for i in 0..n {
        let c = (i as u32 + seed) % 3;
        let len = 12 + (i * 7 + seed as usize) % 12;
        let toks: Vec<u32> = (0..len)
            .map(|j| 5 + 8 * c + ((j as u32 * (c + 1) + i as u32 % 2) % 8))
            .collect();
        m.push(&toks, Some(c));
    }
    m
}
