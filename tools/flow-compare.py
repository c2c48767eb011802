#!/usr/bin/env python3
"""Compares two flow dumps (dump_flows example, flow-reference.py) key by key:
file, protocol and the two endpoints; per key the flows' first stamps, packet
counts, initiators and first-10 packet sizes. Usage: flow-compare.py A B"""
import sys, collections
import ipaddress
def norm(e):
    a, p = e.split('|')
    return str(ipaddress.ip_address(a)) + '|' + p
def load(p):
    flows = collections.defaultdict(list); stats = {}
    for line in open(p, errors='replace'):
        f = line.rstrip('\n').split('\t')
        if f[0] == 'F':
            _, file, proto, i, r, first, last, n = f[:8]
            pk = f[8] if len(f) > 8 else ''
            
            i, r = norm(i), norm(r)
            key = (file, proto) + tuple(sorted([i, r]))
            flows[key].append((min(int(first), 2**64-1), int(n), i, pk))
        elif f[0] == 'S':
            stats[f[1]] = f[2:]
    for v in flows.values(): v.sort()
    return flows, stats
R, rs = load(sys.argv[1]); P, ps = load(sys.argv[2])
files = set(rs) & set(ps)
nr = sum(len(v) for k, v in R.items() if k[0] in files)
np_ = sum(len(v) for k, v in P.items() if k[0] in files)
print('files', len(files), 'only rust', len(set(rs)-set(ps)), 'only ref', len(set(ps)-set(rs)))
print('flows rust', nr, 'ref', np_)
bad = collections.Counter(); badfiles = collections.defaultdict(list)
for k in set(R) | set(P):
    if k[0] not in files: continue
    a, b = R.get(k, []), P.get(k, [])
    if a != b:
        kind = 'missing-in-rust' if not a else 'missing-in-ref' if not b else ('split' if len(a) != len(b) else 'counts/init/ts')
        bad[kind] += 1
        badfiles[k[0]].append((kind, k, a[:4], b[:4]))
print('mismatching keys', sum(bad.values()), dict(bad))
print('files with mismatches', len(badfiles))
for f, l in sorted(badfiles.items(), key=lambda x: -len(x[1])):
    print(len(l), f, 'rust:', rs.get(f), 'ref:', ps.get(f))
    for e in l[:3]: print('   ', e[:2], [x[:3] for x in e[2]], [x[:3] for x in e[3]])
