//! Traffic2Token: packet captures -> bidirectional flows -> token sequences ->
//! dataset shards.

pub mod types;

// Capture side: containers, packet decoding, the flow table, the run driver.
pub mod capture;
pub mod decode;
pub mod flow_hash;
pub mod flows;
pub mod pcap_writer;
pub mod reader;
pub mod recency;
pub mod stats;
pub mod synth;

// Token side: packet features, bigrams, vocabulary, labels, shards, splits.
pub mod augment;
pub mod bigram;
pub mod dataset;
pub mod features;
pub mod identifiers;
pub mod labels;
pub mod packet_meta;
pub mod shard;
pub mod split;
pub mod tokenize;
pub mod vocab;
