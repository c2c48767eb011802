//! The two hashers of the flow table, and why there are two.
//!
//! A flow key (5-tuple) is chosen by whoever sends the packets. Where that is
//! an adversary (a live monitor, the C API), an unkeyed hash lets them craft
//! keys that all land in one bucket chain and make every insert scan it
//! (`cargo bench --bench flow_table` shows the cliff). So the stream hashes
//! with [`KeyedState`] (ahash with a per-process random seed). Offline readers
//! (`read_capture`) use [`FastState`], measured faster on real captures
//! (bench/results/cpu/flow-table-hashers.txt): a crafted capture there costs
//! its author's own CPU time, and the table's cap bounds its memory either way.

use std::hash::{BuildHasherDefault, Hasher};

/// FxHash-style hasher: a rotate, xor and multiply per word. Not keyed: keys
/// colliding in it can be computed (see benches/flow_table.rs).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

/// The multiplier of [`FastHasher::write_u64`] (odd, so invertible mod 2^64).
pub const FAST_HASH_MUL: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(FAST_HASH_MUL);
    }
}

/// Unkeyed, for keys an attacker does not choose (offline captures).
pub type FastState = BuildHasherDefault<FastHasher>;

/// Keyed with a per-process random seed, for keys from the network.
pub type KeyedState = ahash::RandomState;
