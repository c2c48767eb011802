//! Decoded packets in, finished bidirectional flows out: the flow table,
//! its keyed hasher and its recency list (eviction by age under a cap).

pub mod hash;
pub mod recency;
pub mod table;
