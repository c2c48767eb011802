#!/usr/bin/env python3
"""Feeds a pcap to `tmoe classify --stream` on standard input in CHUNK-byte
pieces every DELAY seconds (a slow or quiet link) and says when the verdict
rows came out, beside tmoe's own summary (verdict latency p50/p99, which
starts once a flow is ready inside tmoe).

It also measures the latency a user sees: from the moment the packet that
completed a verdict's flow (its `packets`-th, the K-th with `--early`) was
written into the pipe to the moment its row came out. Classic pcap with
Ethernet (802.1Q too), IPv4/IPv6, TCP/UDP; rows it cannot match are counted.

  tools/stream-trickle.py TMOE CAPTURE CHUNK DELAY CHECKPOINT DATASET [classify args..]
"""
import ipaddress, struct, subprocess, sys, threading, time


def packets(raw):
    """(ts_ns, end_offset, proto, (ip, port), (ip, port)) per TCP/UDP packet."""
    magic = raw[:4]
    order = {b'\xd4\xc3\xb2\xa1': '<', b'\x4d\x3c\xb2\xa1': '<',
             b'\xa1\xb2\xc3\xd4': '>', b'\xa1\xb2\x3c\x4d': '>'}.get(magic)
    if order is None:
        sys.exit('stream-trickle: classic pcap only')
    nanos = magic in (b'\x4d\x3c\xb2\xa1', b'\xa1\xb2\x3c\x4d')
    link = struct.unpack(order + 'I', raw[20:24])[0]
    at, out = 24, []
    while at + 16 <= len(raw):
        sec, frac, incl, _ = struct.unpack(order + 'IIII', raw[at:at + 16])
        end = at + 16 + incl
        if end > len(raw):
            break
        frame = raw[at + 16:end]
        ts = sec * 10**9 + (frac if nanos else frac * 1000)
        at = end
        if link != 1 or len(frame) < 14:
            continue
        eth, off = struct.unpack('>H', frame[12:14])[0], 14
        while eth in (0x8100, 0x88a8) and len(frame) >= off + 4:
            eth, off = struct.unpack('>H', frame[off + 2:off + 4])[0], off + 4
        ip = frame[off:]
        if eth == 0x0800 and len(ip) >= 20:
            proto, hl = ip[9], (ip[0] & 15) * 4
            src, dst, l4 = ipaddress.ip_address(ip[12:16]), ipaddress.ip_address(ip[16:20]), ip[hl:]
        elif eth == 0x86dd and len(ip) >= 40:
            proto, src, dst, l4 = ip[6], ipaddress.ip_address(ip[8:24]), ipaddress.ip_address(ip[24:40]), ip[40:]
        else:
            continue
        if proto not in (6, 17) or len(l4) < 4:
            continue
        sp, dp = struct.unpack('>HH', l4[:4])
        out.append((ts, end, proto, (str(src), sp), (str(dst), dp)))
    return out


binary, f, chunk, delay, ckpt, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
extra = sys.argv[7:]
raw = open(f, 'rb').read()
p = subprocess.Popen([binary, 'classify', '--checkpoint', ckpt, '--data', data, '--stream'] + extra,
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
t0 = time.time(); lines = []; written = []
def rd():
    for l in p.stdout: lines.append((time.time() - t0, l.decode().strip()))
th = threading.Thread(target=rd); th.start()
for i in range(0, len(raw), chunk):
    p.stdin.write(raw[i:i + chunk]); p.stdin.flush()
    written.append(time.time() - t0)
    time.sleep(delay)
tend = time.time() - t0
p.stdin.close(); p.wait(); th.join()
header = next((l for _, l in lines if l.startswith('file')), '').split(',')
rows = [(t, dict(zip(header, l.split(',')))) for t, l in lines if not l.startswith('file')]
times = [t for t, _ in rows]
print(f"input took {tend:.2f} s ({len(raw)} bytes, {chunk} every {delay*1e3:.0f} ms); verdict rows {len(rows)}, of which before the input ended {sum(1 for t in times if t < tend - 0.05)}; first row at {min(times):.2f} s")

# From the write of the packet that completed each verdict to its row.
pkts = packets(raw)
seen, unmatched = [], 0
for t, r in rows:
    try:
        a, b = (r['src_ip'], int(r['src_port'])), (r['dst_ip'], int(r['dst_port']))
        proto = 6 if r['proto'] == 'tcp' else 17
        sec, _, ns = r['first_ts'].partition('.')
        first = int(sec) * 10**9 + int(ns.ljust(9, '0'))
        want = int(r['packets'])
    except (KeyError, ValueError):
        unmatched += 1
        continue
    mine = [q for q in pkts if q[2] == proto and {q[3], q[4]} == {a, b} and q[0] >= first]
    if len(mine) < want or mine[0][0] != first:
        unmatched += 1
        continue
    done = written[(mine[want - 1][1] - 1) // chunk]
    seen.append(t - done)
if seen:
    seen.sort()
    q = lambda x: seen[min(len(seen) - 1, int(x * len(seen)))]
    print(f"from the completing packet's write to its row: p50 {q(0.5)*1e3:.0f} ms, p99 {q(0.99)*1e3:.0f} ms, max {seen[-1]*1e3:.0f} ms over {len(seen)} rows ({unmatched} not matched)")
print(p.stderr.read().decode().strip())
