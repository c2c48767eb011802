#!/usr/bin/env python3
"""Feeds a pcap to `tmoe classify --stream` on standard input in CHUNK-byte
pieces every DELAY seconds (a slow or quiet link) and says when the verdict
rows came out, beside tmoe's own summary (verdict latency p50/p99).

  tools/stream-trickle.py TMOE CAPTURE CHUNK DELAY CHECKPOINT DATASET [classify args..]
"""
import subprocess, time, threading, sys
binary, f, chunk, delay, ckpt, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
extra = sys.argv[7:]
raw = open(f, 'rb').read()
p = subprocess.Popen([binary, 'classify', '--checkpoint', ckpt, '--data', data, '--stream'] + extra,
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
t0 = time.time(); lines = []
def rd():
    for l in p.stdout: lines.append((time.time() - t0, l.decode().strip()))
th = threading.Thread(target=rd); th.start()
for i in range(0, len(raw), chunk):
    p.stdin.write(raw[i:i + chunk]); p.stdin.flush(); time.sleep(delay)
tend = time.time() - t0
p.stdin.close(); p.wait(); th.join()
rows = [t for t, l in lines if not l.startswith('file')]
print(f"input took {tend:.2f} s ({len(raw)} bytes, {chunk} every {delay*1e3:.0f} ms); verdict rows {len(rows)}, of which before the input ended {sum(1 for t in rows if t < tend - 0.05)}; first row at {min(rows):.2f} s")
print(p.stderr.read().decode().strip())
