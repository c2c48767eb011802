//! Token sequences in, labelled dataset shards out: where labels come from,
//! dedup and the stratified split, time-slice augmentation, the memory-mapped
//! shards and the packet metadata beside them; `build` runs the whole of
//! Traffic2Token in one call.

pub mod augment;
pub mod build;
pub mod labels;
pub mod packet_meta;
pub mod shard;
pub mod split;
