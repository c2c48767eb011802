//! Captures in, decoded packets out: the pcap / pcapng containers, frame
//! decoding, per-file accounting and the run driver that feeds the flow
//! table; and the other way, writing captures (synthetic traffic, tests).

pub mod container;
pub mod decode;
pub mod link_wireless;
pub mod pcap_writer;
pub mod reader;
pub mod stats;
pub mod synth;
