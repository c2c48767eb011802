//! The flow table's hashers, and why it uses the keyed one everywhere.
//!
//! A flow key (5-tuple) is chosen by whoever sends the packets: a live
//! monitor's (the C API's) senders, but also whoever made a capture handed
//! to `tmoe tokenize`. With an unkeyed hash they can craft keys that share
//! the bits the map's probe starts from and turn every insert into a scan
//! (`cargo bench --bench flow_table`: 25-80x fewer inserts/s at 100k-200k
//! flows, bench/results/cpu/flow-table-collisions.txt). So every table
//! hashes with [`KeyedState`] (ahash: a key per table, drawn from a random
//! per-process seed). The unkeyed [`FastState`] measured at most a few per
//! cent faster on real captures (bench/results/cpu/flow-table-hashers.txt),
//! which does not pay for that; it stays as the benchmark's baseline and for
//! `read_capture_with` callers who trust their captures.

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
