#!/usr/bin/env python3
"""An independent flow reference for traffic-moe's capture reader.

pcap / pcapng -> bidirectional 5-tuple TCP/UDP flows, by the rules docs/what-works.md
documents (idle timeout 120 s, measured on each flow's own stamps; a TCP flow
closed by FIN both ways or RST takes trailing packets for 2 s, and a SYN
without ACK starts a new one; later IP fragments, ICMP and the rest skipped).
Containers and headers are parsed here by hand, not with the crate's code nor
dpkt's (dpkt's pcap reader gives float stamps, its pcapng reader the first
interface's link type only, and it decodes neither PPPoE nor later IPv6
fragments as such, nor 802.11, radiotap, PPI, NFLOG or FDDI, which this does). `--sweep` also ends idle flows at each frame's stamp as
the table's sweep does, which is where the two differ when stamps go back.

Usage: flow-reference.py [--idle-s S] [--max-flows N] [--sweep] [--no-split] CAPTURES..
(the options in this order; --max-flows: the least recently active flow ends
when a new one would make more)
Prints one line per flow, as `cargo run --example dump_flows` does:
F  file  proto  initiator  responder  first_ns  last_ns  packets  first-10
(each of the first 10 as >ip_len:payload_len from the initiator, < to it),
and one S line per file; compare them with flow-compare.py."""
import struct, sys, ipaddress, collections

IDLE_NS = 120_000_000_000
LINGER_NS = 2_000_000_000

def read_pcap(f):
    hdr = f.read(24)
    if len(hdr) < 24: return
    magic = hdr[:4]
    if magic in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1'): e = '<'
    elif magic in (b'\xa1\xb2\xc3\xd4', b'\xa1\xb2\x3c\x4d'): e = '>'
    else: return
    ns = magic in (b'\x4d\x3c\xb2\xa1', b'\xa1\xb2\x3c\x4d')
    lt = struct.unpack(e + 'I', hdr[20:24])[0] & 0x03FFFFFF
    while True:
        r = f.read(16)
        if len(r) < 16: return
        s, sub, cap, orig = struct.unpack(e + 'IIII', r)
        data = f.read(cap)
        if len(data) < cap: return
        yield s * 10**9 + (sub if ns else sub * 1000), lt, data, orig

def read_pcapng(f):
    buf = f.read()
    pos = 0; e = '<'; ifaces = []
    while pos + 12 <= len(buf):
        bt = struct.unpack('<I', buf[pos:pos+4])[0]
        if bt == 0x0A0D0D0A:
            bom = buf[pos+8:pos+12]
            e = '<' if bom == b'\x4d\x3c\x2b\x1a' else '>'
            ifaces = []
        bt, bl = struct.unpack(e + 'II', buf[pos:pos+8])
        if bl < 12 or pos + bl > len(buf): return
        body = buf[pos+8:pos+bl-4]
        if bt == 1:
            lt, _, snap = struct.unpack(e + 'HHI', body[:8])
            res = 10**6
            o = 8
            while o + 4 <= len(body):
                code, ln = struct.unpack(e + 'HH', body[o:o+4])
                if code == 0: break
                if code == 9 and ln >= 1:
                    v = body[o+4]
                    res = 2 ** (v & 0x7f) if v & 0x80 else 10 ** v
                o += 4 + ((ln + 3) & ~3)
            ifaces.append((lt, snap, res))
        elif bt in (6, 2):
            if bt == 6:
                iid, hi, lo, cap, orig = struct.unpack(e + 'IIIII', body[:20])
            else:
                iid, _, hi, lo, cap, orig = struct.unpack(e + 'HHIIII', body[:20])
            data = body[20:20+cap]
            if iid < len(ifaces):
                lt, snap, res = ifaces[iid]
                t = (hi << 32) | lo
                yield t * 10**9 // res, lt, data, orig
        elif bt == 3:
            orig = struct.unpack(e + 'I', body[:4])[0]
            if ifaces:
                lt, snap, res = ifaces[0]
                cap = min(orig, len(body) - 4, snap or orig)
                yield None, lt, body[4:4+cap], orig  # no timestamp
        pos += bl

def frames(path):
    with open(path, 'rb') as f:
        m = f.read(4); f.seek(0)
        if m == b'\x0a\x0d\x0d\x0a':
            yield from read_pcapng(f)
        else:
            yield from read_pcap(f)

EXTRA=[0]; IPLEN=[0]; L4LEN=[0]; PL=[0]
# The captured L4 payload of the latest packet (IP padding cut off), and how
# many packets of a flow keep their (stamp, direction, ip_len, flags, proto,
# payload_len, payload) in its 'rec' list: tools/tokens-reference.py's input.
PAY=[b'']; KEEP=[0]
class Skip(Exception):
    pass

def be16(b, i):
    if i + 2 > len(b): raise Skip('trunc')
    return (b[i] << 8) | b[i+1]

def ethertype(et, d):
    for _ in range(8):
        if et in (0x8100, 0x88a8, 0x9100):
            et = be16(d, 2); d = d[4:]
            continue
        if et == 0x0800: return ip(d, 4)
        if et == 0x86dd: return ip(d, 6)
        if et == 0x8864:
            return ppp(d[6:])
        if et in (0x8847, 0x8848):
            at = 0
            while True:
                if at + 3 > len(d): raise Skip('trunc')
                bos = d[at+2] & 1; at += 4
                if bos or at >= 64: break
            return ip(d[at:], None)
        raise Skip('nonip')
    raise Skip('malformed')

def ppp(d):
    s = 2 if d[:2] == b'\xff\x03' else 0
    if s >= len(d): raise Skip('trunc')
    if d[s] & 1: p, l = d[s], 1
    else: p, l = be16(d, s), 2
    if p == 0x21: return ip(d[s+l:], 4)
    if p == 0x57: return ip(d[s+l:], 6)
    raise Skip('nonip')

def link(lt, d):
    if lt == 1:
        return ethertype(be16(d, 12), d[14:])
    if lt in (101, 12, 14): return ip(d, None)
    if lt == 228: return ip(d, 4)
    if lt == 229: return ip(d, 6)
    if lt == 113: return ethertype(be16(d, 14), d[16:])
    if lt == 276:
        if len(d) < 20: raise Skip('trunc')
        return ethertype(be16(d, 0), d[20:])
    if lt in (0, 108):
        if len(d) < 4: raise Skip('trunc')
        for v in (struct.unpack('<I', d[:4])[0], struct.unpack('>I', d[:4])[0]):
            if v == 2: return ip(d[4:], 4)
            if v in (10, 24, 28, 30): return ip(d[4:], 6)
        raise Skip('nonip')
    if lt in (9, 50): return ppp(d)
    if lt == 104: return ethertype(be16(d, 2), d[4:])
    if lt == 105: return wlan(d, False)
    if lt == 127:
        # radiotap: version 0, length (LE u16) at 2, presence words from 4
        # while bit 31 is set; TSFT (8 bytes, 8-aligned) then Flags (0x10:
        # the frame ends in its FCS).
        if len(d) < 8: raise Skip('trunc')
        if d[0] != 0: raise Skip('malformed')
        n = struct.unpack_from('<H', d, 2)[0]
        if n < 8: raise Skip('malformed')
        if len(d) < n: raise Skip('trunc')
        words = [struct.unpack_from('<I', d, 4)[0]]
        off = 8
        while words[-1] >> 31:
            if off + 4 > n: raise Skip('malformed')
            words.append(struct.unpack_from('<I', d, off)[0]); off += 4
        if words[0] & 1: off = (off + 7) // 8 * 8 + 8
        fcs = bool(words[0] & 2) and off < n and bool(d[off] & 0x10)
        return wlan(d[n:], fcs)
    if lt == 192:
        # PPI: version 0, length (LE u16) at 2, the inner link type at 4.
        if len(d) < 8: raise Skip('trunc')
        if d[0] != 0: raise Skip('malformed')
        n, inner = struct.unpack_from('<HI', d, 2)
        if n < 8 or inner == 192: raise Skip('malformed')
        if len(d) < n: raise Skip('trunc')
        return link(inner, d[n:])
    if lt == 239: return nflog(d)
    if lt == 10:
        # FDDI: frame control (format bits 01 = LLC), two addresses, LLC/SNAP.
        if not d: raise Skip('trunc')
        if d[0] & 0x30 != 0x10: raise Skip('nonip')
        return snap(d[13:])
    raise Skip('linktype')

def frame_macs(lt, d):
    # The frame's own (source, destination) hardware addresses, where its
    # link header has them (for --mask-identifiers).
    try:
        if lt == 1 and len(d) >= 12: return (d[6:12], d[0:6])
        if lt == 10 and len(d) >= 13: return (d[7:13], d[1:7])
        if lt == 127 and len(d) >= 4: return frame_macs(105, d[struct.unpack_from('<H', d, 2)[0]:])
        if lt == 192 and len(d) >= 8:
            n, inner = struct.unpack_from('<HI', d, 2)
            return None if inner == 192 else frame_macs(inner, d[n:])
        if lt == 105 and len(d) >= 24:
            a1, a2, a3, a4 = d[4:10], d[10:16], d[16:22], d[24:30]
            # Source and destination by the DS bits (IEEE 802.11's table:
            # SA/DA are addresses 2/1, 2/3, 3/1 or 4/3).
            return {0: (a2, a1), 1: (a2, a3), 2: (a3, a1), 3: (a4, a3)}[d[1] & 3]
    except struct.error:
        pass
    return None

def snap(d):
    if len(d) < 8: raise Skip('trunc')
    if d[:3] != b'\xaa\xaa\x03': raise Skip('nonip')
    return ethertype(be16(d, 6), d[8:])

def wlan(d, fcs):
    # IEEE 802.11: only data frames (type 2) with a body, not protected,
    # not an A-MSDU, whose body is LLC/SNAP.
    if len(d) < 2: raise Skip('trunc')
    fc0, flags = d[0], d[1]
    kind, sub = (fc0 >> 2) & 3, fc0 >> 4
    if fc0 & 3 or kind == 3: raise Skip('malformed')
    if kind != 2 or sub & 4: raise Skip('wifi-nodata')
    if flags & 0x40: raise Skip('wifi-encrypted')
    qos = bool(sub & 8)
    hdr = 24 + (6 if flags & 3 == 3 else 0)
    if qos:
        if len(d) > hdr and d[hdr] & 0x80: raise Skip('wifi-amsdu')
        hdr += 2 + (4 if flags & 0x80 else 0)
    if fcs and len(d) >= hdr + 4: d = d[:-4]
    if len(d) < hdr: raise Skip('trunc')
    return snap(d[hdr:])

def nflog(d):
    # NFLOG: family, version 0, resource id, then TLVs (length incl. the
    # 4-byte header, padded to 4; host byte order) until type 9, the packet.
    if len(d) < 4: raise Skip('trunc')
    if d[1] != 0: raise Skip('malformed')
    fam = d[0]
    def tlv(at, order):
        if at + 4 > len(d): return None
        n, t = struct.unpack_from(order + 'HH', d, at)
        return (n, t & 0x7fff) if n >= 4 and at + n <= len(d) else None
    first = tlv(4, '<')
    order = '<' if first is not None and first[1] < 0x100 else '>'
    at = 4
    while at + 4 <= len(d):
        got = tlv(at, order)
        if got is None: raise Skip('malformed')
        n, t = got
        if t == 9:
            if fam == 2: return ip(d[at+4:at+n], 4)
            if fam == 10: return ip(d[at+4:at+n], 6)
            raise Skip('nonip')
        at += (n + 3) // 4 * 4
    raise Skip('trunc')

def ip(d, want):
    if not d: raise Skip('trunc')
    v = d[0] >> 4
    if v == 4 and want in (4, None):
        hl = (d[0] & 15) * 4
        if hl < 20: raise Skip('malformed')
        if len(d) < hl: raise Skip('trunc')
        if be16(d, 6) & 0x1fff: raise Skip('laterfrag')
        tot = be16(d, 2) or (len(d) + EXTRA[0])
        if tot < hl: raise Skip('malformed')
        d = d[:tot]
        IPLEN[0] = tot; L4LEN[0] = tot - hl
        proto = d[9]
        src = ipaddress.ip_address(d[12:16]); dst = ipaddress.ip_address(d[16:20])
        return l4(proto, src, dst, d[hl:])
    if v == 6 and want in (6, None):
        if len(d) < 40: raise Skip('trunc')
        src = ipaddress.ip_address(d[8:24]); dst = ipaddress.ip_address(d[24:40])
        pl = be16(d, 4)
        tot = 40 + pl if pl else max(40, len(d) + EXTRA[0])
        d = d[:tot]
        IPLEN[0] = tot
        nh = d[6]; at = 40
        for _ in range(16):
            if nh in (0, 43, 60, 135, 139, 140):
                if at + 2 > len(d): raise Skip('trunc')
                nh, at = d[at], at + d[at+1] * 8 + 8
            elif nh == 44:
                fo = be16(d, at + 2)
                nh = d[at]; at += 8
                if fo & 0xfff8: raise Skip('laterfrag')
            elif nh == 51:
                if at + 2 > len(d): raise Skip('trunc')
                nh, at = d[at], at + (d[at+1] + 2) * 4
            else:
                break
        if at > len(d): raise Skip('trunc')
        L4LEN[0] = tot - at
        return l4(nh, src, dst, d[at:])
    raise Skip('malformed')

def l4(proto, src, dst, d):
    if proto == 6:
        if len(d) < 20: raise Skip('trunc')
        if (d[12] >> 4) * 4 < 20: raise Skip('malformed')
        PL[0] = max(0, L4LEN[0] - (d[12] >> 4) * 4)
        PAY[0] = d[(d[12] >> 4) * 4:]
        return proto, (src, be16(d, 0)), (dst, be16(d, 2)), d[13]
    if proto == 17:
        if len(d) < 8: raise Skip('trunc')
        PL[0] = max(0, L4LEN[0] - 8)
        PAY[0] = d[8:]
        return proto, (src, be16(d, 0)), (dst, be16(d, 2)), 0
    if proto in (1, 58): raise Skip('icmp')
    raise Skip('otherproto')

SWEEP = False
MAX_FLOWS = 1_000_000
def flows(path, idle_ns=IDLE_NS, split=True):
    out = []; table = collections.OrderedDict(); skips = collections.Counter(); npk = 0
    at = high = 0; interval = max(1, min(idle_ns, LINGER_NS if split else idle_ns) // 2)
    for ts, lt, data, orig in frames(path):
        EXTRA[0] = max(0, orig - len(data))
        try:
            proto, a, b, flags = link(lt, data)
        except Skip as s:
            skips[str(s)] += 1; continue
        except (IndexError, struct.error):
            skips['idx'] += 1; continue
        if ts is None: ts = 0
        ts = min(ts, 2**64 - 1)
        npk += 1
        # The table's sweep: a sweep interval past the highest stamp swept, or
        # (the clock went back) one away from the latest, but not near the highest.
        ahead = ts - high >= interval
        back = ts < high - interval and abs(ts - at) >= interval
        if SWEEP and (ahead or back):
            for k in [k for k, v in table.items() if ts - v['last'] > idle_ns or (v['closed'] and ts - v['last'] > LINGER_NS)]:
                out.append(table.pop(k))
            at, high = ts, max(high, ts)
        key = (proto,) + tuple(sorted([a, b], key=lambda e: (e[0].version, int(e[0]), e[1])))
        st = table.get(key)
        if st is not None:
            quiet = max(0, ts - st['last'])
            syn_only = proto == 6 and (flags & 0x12) == 0x02
            if quiet > idle_ns or (st['closed'] and (syn_only or quiet > LINGER_NS)):
                out.append(table.pop(key)); st = None
        if st is None:
            if len(table) >= MAX_FLOWS:
                # Full: the least recently active flow ends (evicted).
                out.append(table.popitem(last=False)[1])
            st = dict(proto=proto, init=a, resp=b, first=ts, last=ts, n=0, fi=False, fr=False, closed=False, pk=[], rec=[],
                      macs=frame_macs(lt, data))
            table[key] = st
        table.move_to_end(key)
        st['n'] += 1
        if len(st['pk']) < 10: st['pk'].append(('>' if a == st['init'] else '<') + f"{IPLEN[0]}:{PL[0]}")
        if len(st['rec']) < KEEP[0]: st['rec'].append((ts, a == st['init'], IPLEN[0], flags, proto, PL[0], bytes(PAY[0])))
        st['last'] = max(st['last'], ts)
        if proto == 6 and split:
            if flags & 1:
                if a == st['init']: st['fi'] = True
                else: st['fr'] = True
            if flags & 4 or (st['fi'] and st['fr']): st['closed'] = True
    out.extend(table.values())
    return out, skips, npk

def ep(e):
    return f"{e[0]}|{e[1]}"

if __name__ == '__main__':
    args = sys.argv[1:]; idle = IDLE_NS; split = True
    if args and args[0] == '--idle-s': idle = int(float(args[1]) * 1e9); args = args[2:]
    if args and args[0] == '--max-flows': MAX_FLOWS = int(args[1]); args = args[2:]
    if args and args[0] == '--sweep': SWEEP = True; args = args[1:]
    if args and args[0] == '--no-split': split = False; args = args[1:]
    for p in args:
        fl, sk, npk = flows(p, idle, split)
        for s in fl:
            print(f"F\t{p}\t{s['proto']}\t{ep(s['init'])}\t{ep(s['resp'])}\t{s['first']}\t{s['last']}\t{s['n']}\t{','.join(s['pk'])}")
        print(f"S\t{p}\tpackets={npk}\tflows={len(fl)}\tskips={dict(sk)}")
