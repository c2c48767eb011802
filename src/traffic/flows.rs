//! Bidirectional flow table: groups decoded packets by 5-tuple, keeps the
//! first K packets of each flow, and emits flows as they finish (idle
//! timeout, TCP FIN from both sides or RST, end of file) so memory stays
//! bounded by the number of concurrently active flows.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::traffic::decode::DecodedPacket;
use crate::traffic::reader::ReadConfig;
use crate::traffic::types::{Endpoint, Flow, FlowKey, PROTO_TCP, PacketRecord, tcp_flags};

/// How long a closed TCP flow (FIN both ways / RST) stays in the table to
/// collect its trailing ACKs before it is emitted.
pub const CLOSE_LINGER_NS: u64 = 2_000_000_000;

/// FxHash-style hasher: flow keys are not attacker-chosen in an offline
/// reader, and SipHash costs a noticeable share of the per-packet time.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

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
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

struct FlowState {
    flow: Flow,
    fin_from_initiator: bool,
    fin_from_responder: bool,
    /// FIN seen both ways, or RST: the flow is over, trailing packets join it.
    closed: bool,
}

/// The flow table of one capture file.
pub struct FlowTable {
    max_packets: usize,
    payload_bytes: usize,
    idle_timeout_ns: u64,
    split_on_fin_rst: bool,
    file_index: u32,
    flows: FastMap<FlowKey, FlowState>,
    next_sweep_ns: u64,
    sweep_interval_ns: u64,
    emitted: u64,
}

impl FlowTable {
    pub fn new(cfg: &ReadConfig, file_index: u32) -> FlowTable {
        let idle = cfg.idle_timeout_ns.max(1);
        let shortest = if cfg.split_on_fin_rst {
            idle.min(CLOSE_LINGER_NS)
        } else {
            idle
        };
        FlowTable {
            max_packets: cfg.max_packets,
            payload_bytes: cfg.payload_bytes,
            idle_timeout_ns: idle,
            split_on_fin_rst: cfg.split_on_fin_rst,
            file_index,
            flows: FastMap::default(),
            next_sweep_ns: 0,
            sweep_interval_ns: (shortest / 2).max(1),
            emitted: 0,
        }
    }

    /// Flows currently held.
    pub fn active(&self) -> usize {
        self.flows.len()
    }

    /// Flows emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Adds one packet; may emit finished flows through `on_flow`. Returns the
    /// packet's flow when this packet is its K-th (the flow now holds every
    /// packet the tokenizer reads, so it can be classified before it ends).
    pub fn push(
        &mut self,
        ts_ns: u64,
        pkt: &DecodedPacket<'_>,
        on_flow: &mut dyn FnMut(Flow),
    ) -> Option<&Flow> {
        if ts_ns >= self.next_sweep_ns {
            self.sweep(ts_ns, on_flow);
            self.next_sweep_ns = ts_ns.saturating_add(self.sweep_interval_ns);
        }
        let src = Endpoint {
            ip: pkt.src,
            port: pkt.src_port,
        };
        let dst = Endpoint {
            ip: pkt.dst,
            port: pkt.dst_port,
        };
        let key = FlowKey::new(pkt.proto, src, dst);
        let is_tcp = pkt.proto == PROTO_TCP;
        let syn_only =
            is_tcp && pkt.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;

        if let Some(state) = self.flows.get(&key) {
            let idle = ts_ns.saturating_sub(state.flow.last_ts_ns);
            let restart = idle > self.idle_timeout_ns
                || (state.closed && (syn_only || idle > CLOSE_LINGER_NS));
            if restart {
                if let Some(old) = self.flows.remove(&key) {
                    self.emit(old.flow, on_flow);
                }
            }
        }

        let (max_packets, payload_bytes, file_index) =
            (self.max_packets, self.payload_bytes, self.file_index);
        let state = self.flows.entry(key).or_insert_with(|| FlowState {
            flow: Flow {
                key,
                initiator: src,
                responder: dst,
                first_ts_ns: ts_ns,
                last_ts_ns: ts_ns,
                total_packets: 0,
                packets: Vec::with_capacity(max_packets.min(16)),
                file_index,
            },
            fin_from_initiator: false,
            fin_from_responder: false,
            closed: false,
        });
        let from_initiator = src == state.flow.initiator;
        let flow = &mut state.flow;
        flow.total_packets += 1;
        flow.last_ts_ns = flow.last_ts_ns.max(ts_ns);
        let was_short = flow.packets.len() < max_packets;
        if was_short {
            let kept = pkt.payload.len().min(payload_bytes);
            flow.packets.push(PacketRecord {
                ts_ns,
                ip_len: pkt.ip_len,
                from_initiator,
                tcp_flags: pkt.tcp_flags,
                ip_proto: pkt.proto,
                payload_len: pkt.payload_len,
                payload: pkt.payload[..kept].to_vec(),
            });
        }
        if is_tcp && self.split_on_fin_rst {
            if pkt.tcp_flags & tcp_flags::FIN != 0 {
                if from_initiator {
                    state.fin_from_initiator = true;
                } else {
                    state.fin_from_responder = true;
                }
            }
            if pkt.tcp_flags & tcp_flags::RST != 0
                || (state.fin_from_initiator && state.fin_from_responder)
            {
                state.closed = true;
            }
        }
        (was_short && state.flow.packets.len() == max_packets).then_some(&state.flow)
    }

    /// Emits every flow idle for longer than the timeout, and closed flows
    /// past their linger time, oldest first.
    pub fn sweep(&mut self, now_ns: u64, on_flow: &mut dyn FnMut(Flow)) {
        let idle = self.idle_timeout_ns;
        let mut done: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, s)| {
                let quiet = now_ns.saturating_sub(s.flow.last_ts_ns);
                quiet > idle || (s.closed && quiet > CLOSE_LINGER_NS)
            })
            .map(|(k, _)| *k)
            .collect();
        self.emit_keys(&mut done, on_flow);
    }

    /// Emits every remaining flow (end of file), oldest first.
    pub fn flush(&mut self, on_flow: &mut dyn FnMut(Flow)) {
        let mut all: Vec<FlowKey> = self.flows.keys().copied().collect();
        self.emit_keys(&mut all, on_flow);
    }

    fn emit_keys(&mut self, keys: &mut [FlowKey], on_flow: &mut dyn FnMut(Flow)) {
        let mut states: Vec<FlowState> = keys.iter().filter_map(|k| self.flows.remove(k)).collect();
        // HashMap order is arbitrary: sort so output is deterministic.
        states.sort_by(|a, b| {
            (a.flow.first_ts_ns, a.flow.key).cmp(&(b.flow.first_ts_ns, b.flow.key))
        });
        for s in states {
            self.emit(s.flow, on_flow);
        }
    }

    fn emit(&mut self, flow: Flow, on_flow: &mut dyn FnMut(Flow)) {
        self.emitted += 1;
        on_flow(flow);
    }
}
