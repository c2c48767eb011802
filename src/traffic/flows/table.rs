//! Bidirectional flow table: groups decoded packets by 5-tuple, keeps the
//! first K packets of each flow, and emits flows as they finish (idle
//! timeout, TCP FIN from both sides or RST, end of file, or eviction when
//! the table holds `ReadConfig::max_flows`), so memory stays bounded by the
//! cap however many flows a capture or a sender opens at once.

use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::traffic::capture::decode::DecodedPacket;
use crate::traffic::capture::reader::ReadConfig;
pub use crate::traffic::flows::hash::{FastHasher, FastState, KeyedState};
use crate::traffic::flows::recency::RecencyList;
use crate::traffic::types::{Endpoint, Flow, FlowKey, PROTO_TCP, PacketRecord, tcp_flags};

/// How long a closed TCP flow (FIN both ways / RST) stays in the table to
/// collect its trailing ACKs before it is emitted.
pub const CLOSE_LINGER_NS: u64 = 2_000_000_000;

struct FlowState {
    flow: Flow,
    fin_from_initiator: bool,
    fin_from_responder: bool,
    /// FIN seen both ways, or RST: the flow is over, trailing packets join it.
    closed: bool,
}

/// The flow table of one capture file, or of one live stream.
///
/// Generic over the hasher rather than an enum of two maps: the hasher is
/// chosen once per table, and a type parameter costs no branch per packet.
/// Every reader uses the keyed [`KeyedState`] (`traffic::flows::hash` says
/// why); the unkeyed [`FastState`] is the baseline the benchmark measures.
///
/// At most `max_flows` flows are held: a new flow beyond that first evicts
/// the least recently active one, the flow whose latest packet was pushed
/// longest ago (with non-decreasing timestamps: the oldest last packet, ties
/// to the one whose last packet came first). It is emitted like a flow that
/// timed out and counted in [`FlowTable::evicted`]. Recency is a linked list
/// in push order (`traffic::flows::recency`), never the map's hash order, so the
/// same packets give the same flows in the same order on every run.
pub struct FlowTable<S = KeyedState> {
    max_packets: usize,
    payload_bytes: usize,
    idle_timeout_ns: u64,
    split_on_fin_rst: bool,
    max_flows: usize,
    file_index: u32,
    /// Key -> slot in `flows`.
    index: HashMap<FlowKey, usize, S>,
    flows: RecencyList<FlowState>,
    /// The latest stamp a frame swept at, and the highest. A frame sweeps
    /// for idle flows a sweep interval past the highest; and, when the clock
    /// has gone back (captures joined out of order, a frame stamped years
    /// ahead), a sweep interval away from the latest, on the earlier clock,
    /// but never within an interval of the highest: stamps back there were
    /// swept already (each sweep visits every flow held: one per frame there
    /// made a run of frames stamped u64::MAX quadratic in the flows held).
    swept_at_ns: u64,
    swept_high_ns: u64,
    sweep_interval_ns: u64,
    sweeps: u64,
    emitted: u64,
    evicted: u64,
}

impl FlowTable<KeyedState> {
    /// A table hashing with a fresh random key.
    pub fn new(cfg: &ReadConfig, file_index: u32) -> Self {
        FlowTable::with_hasher(cfg, file_index, KeyedState::new())
    }
}

impl<S: BuildHasher> FlowTable<S> {
    pub fn with_hasher(cfg: &ReadConfig, file_index: u32, hasher: S) -> Self {
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
            max_flows: cfg.max_flows.max(1),
            file_index,
            index: HashMap::with_hasher(hasher),
            flows: RecencyList::default(),
            swept_at_ns: 0,
            swept_high_ns: 0,
            sweep_interval_ns: (shortest / 2).max(1),
            sweeps: 0,
            emitted: 0,
            evicted: 0,
        }
    }

    /// Flows currently held.
    pub fn active(&self) -> usize {
        self.flows.len()
    }

    /// Flows emitted so far (evicted ones included).
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Flows emitted early because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Sweeps for idle flows so far (each visits every flow held).
    pub fn sweeps(&self) -> u64 {
        self.sweeps
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
        let interval = self.sweep_interval_ns;
        let ahead = ts_ns.saturating_sub(self.swept_high_ns) >= interval;
        let back = ts_ns < self.swept_high_ns.saturating_sub(interval)
            && ts_ns.abs_diff(self.swept_at_ns) >= interval;
        if ahead || back {
            self.sweep(ts_ns, on_flow);
            self.swept_at_ns = ts_ns;
            self.swept_high_ns = self.swept_high_ns.max(ts_ns);
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

        let mut slot = self.index.get(&key).copied();
        if let Some(state) = slot.and_then(|i| self.flows.get(i)) {
            let idle = ts_ns.saturating_sub(state.flow.last_ts_ns);
            let restart = idle > self.idle_timeout_ns
                || (state.closed && (syn_only || idle > CLOSE_LINGER_NS));
            if restart {
                self.emit_key(&key, on_flow);
                slot = None;
            }
        }
        let slot = match slot {
            Some(i) => {
                self.flows.touch(i);
                i
            }
            None => self.insert(key, (src, dst), pkt.macs, ts_ns, on_flow),
        };
        let max_packets = self.max_packets;
        let state = self.flows.get_mut(slot)?;
        let from_initiator = src == state.flow.initiator;
        let flow = &mut state.flow;
        flow.total_packets += 1;
        flow.last_ts_ns = flow.last_ts_ns.max(ts_ns);
        let was_short = flow.packets.len() < max_packets;
        if was_short {
            let kept = pkt.payload.len().min(self.payload_bytes);
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

    /// Starts a flow for `key` (evicting the least recently active one if the
    /// table is full); returns its slot.
    fn insert(
        &mut self,
        key: FlowKey,
        (initiator, responder): (Endpoint, Endpoint),
        macs: Option<([u8; 6], [u8; 6])>,
        ts_ns: u64,
        on_flow: &mut dyn FnMut(Flow),
    ) -> usize {
        if self.flows.len() >= self.max_flows
            && let Some(oldest) = self.flows.front().and_then(|i| self.flows.remove(i))
        {
            self.index.remove(&oldest.flow.key);
            self.evicted += 1;
            self.emit(oldest.flow, on_flow);
        }
        let slot = self.flows.push_back(FlowState {
            flow: Flow {
                key,
                initiator,
                responder,
                first_ts_ns: ts_ns,
                last_ts_ns: ts_ns,
                total_packets: 0,
                packets: Vec::with_capacity(self.max_packets.min(16)),
                file_index: self.file_index,
                // The first packet is the initiator's: its source is theirs.
                macs,
            },
            fin_from_initiator: false,
            fin_from_responder: false,
            closed: false,
        });
        self.index.insert(key, slot);
        slot
    }

    /// Emits every flow idle for longer than the timeout, and closed flows
    /// past their linger time, oldest first.
    pub fn sweep(&mut self, now_ns: u64, on_flow: &mut dyn FnMut(Flow)) {
        self.sweeps += 1;
        let idle = self.idle_timeout_ns;
        let mut done: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|s| {
                let quiet = now_ns.saturating_sub(s.flow.last_ts_ns);
                quiet > idle || (s.closed && quiet > CLOSE_LINGER_NS)
            })
            .map(|s| s.flow.key)
            .collect();
        self.emit_keys(&mut done, on_flow);
    }

    /// Emits every remaining flow (end of file), oldest first.
    pub fn flush(&mut self, on_flow: &mut dyn FnMut(Flow)) {
        let mut all: Vec<FlowKey> = self.index.keys().copied().collect();
        self.emit_keys(&mut all, on_flow);
    }

    fn take(&mut self, key: &FlowKey) -> Option<FlowState> {
        let slot = self.index.remove(key)?;
        self.flows.remove(slot)
    }

    fn emit_key(&mut self, key: &FlowKey, on_flow: &mut dyn FnMut(Flow)) {
        if let Some(old) = self.take(key) {
            self.emit(old.flow, on_flow);
        }
    }

    fn emit_keys(&mut self, keys: &mut [FlowKey], on_flow: &mut dyn FnMut(Flow)) {
        let mut states: Vec<FlowState> = keys.iter().filter_map(|k| self.take(k)).collect();
        // Slot and hash order are arbitrary: sort so output is deterministic.
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
