#!/usr/bin/env python3
"""An independent Traffic2Token reference: each flow's token ids, from the
format docs/what-works.md and the doc comments of src/traffic/tokens/ promise, not
from the crate's code. Flows come from tools/flow-reference.py (checked
against the crate's reader: 0 differences with --sweep); the rest is here:

- per packet of the first K (--packets, 10), nine attribute bytes, big-endian:
  IP length (2, saturated at 65,535), direction (1: 0 from the initiator, 1
  towards it), TCP flags (1, 0 for UDP), inter-arrival code (2:
  min(65535, round(log2(1 + iat_us) * 256)), iat from the flow's previous
  packet, 0 for the first and where stamps go back), IP protocol (1), L4
  payload length the headers declare (2, saturated);
- then the first --payload-bytes (40) captured L4 payload bytes (after the TCP
  header with its options, the UDP header, IPv6 extension headers; IP padding
  cut off), as many as exist, never padded;
- each segment (attributes, payload) as overlapping byte bigrams, stride 1,
  written `aabb bbcc ...`, pre-split on whitespace and WordPiece-tokenized by
  HuggingFace's `tokenizers` (WordPiece.from_file(vocab.txt), `##`
  continuation, [UNK] for a word it cannot spell);
- framing: [PD] opens a packet, [PY] before its payload (full and payload
  views; none in the header view), body cut at seq_len - 1 tokens, then [END].
- with --mask-identifiers, before the bigrams, the payload bytes that spell
  the flow's own addresses, ports and MACs zeroed (see identifier_patterns),
  matched over 63 bytes more than the window keeps.
The WordPiece model is also checked word by word (all 65,536 bigram words)
against a plain greedy longest-match-first written here.

Usage:
  tokens-reference.py --vocab V [--seq-len 512] [--packets 10]
      [--payload-bytes 40] [--view full|header|payload] [--mask-identifiers]
      CAPTURES.. > ref.txt
  (lines as `cargo run --example dump_tokens` prints them:
   T file proto initiator responder first_ns total_packets ids)
  tokens-reference.py --dpkt CAPTURES..
  (a second opinion on the bytes the attributes and payload come from: each
   TCP/UDP packet of Ethernet pcap files decoded by dpkt beside
   flow-reference.py: IP length, TCP flags, declared payload length (IPv4),
   first 40 payload bytes; prints the counts that agree and differ)
  tokens-reference.py --compare OURS REF [--dataset [--min-packets 3]]
  (OURS from dump_tokens on the same captures; with --dataset, OURS from
   `dump_tokens --dataset DIR` of a `tmoe tokenize --labels none` build: each
   of its rows must be its flow's reference ids, and each reference flow of
   at least --min-packets packets must be a row or a duplicate of one.)
"""
import collections, importlib.util, ipaddress, math, os, struct, sys

PAD, UNK, PD, PY, END = 0, 1, 2, 3, 4


def flow_reference():
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location('flow_reference', os.path.join(here, 'flow-reference.py'))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    m.SWEEP = True
    return m


def iat_code(iat_ns):
    us = iat_ns / 1000
    return min(65535, int(math.floor(math.log2(1 + us) * 256 + 0.5)))


def attributes(rec, prev_ts):
    ts, from_init, ip_len, flags, proto, pl, _ = rec
    iat = 0 if prev_ts is None else max(0, ts - prev_ts)
    return struct.pack('>HBBHBH', min(ip_len, 65535), 0 if from_init else 1, flags,
                       iat_code(iat), proto, min(pl, 65535))


def bigram_text(b):
    return ' '.join('%02x%02x' % (b[i], b[i + 1]) for i in range(len(b) - 1))


class Pieces:
    """HuggingFace WordPiece over whitespace-split bigram words."""

    def __init__(self, vocab_path):
        try:
            from tokenizers import Tokenizer, models, pre_tokenizers
        except ImportError as e:
            sys.exit(f'tokens-reference.py needs HuggingFace tokenizers ({e}): pip install tokenizers')
        wp = models.WordPiece.from_file(vocab_path, unk_token='[UNK]')
        self.tok = Tokenizer(wp)
        self.tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        self.vocab = [l.rstrip('\n') for l in open(vocab_path)]
        assert self.vocab[:5] == ['[PAD]', '[UNK]', '[PD]', '[PY]', '[END]'], self.vocab[:5]

    def encode(self, data):
        text = bigram_text(data)
        return self.tok.encode(text, add_special_tokens=False).ids if text else []

    def self_check(self):
        """HF's pieces of every bigram word against a greedy longest match."""
        index = {t: i for i, t in enumerate(self.vocab)}
        words = ['%04x' % v for v in range(65536)]
        hf = self.tok.encode_batch(words, add_special_tokens=False)
        unk = multi = bad = 0
        for w, e in zip(words, hf):
            mine, at = [], 0
            while at < len(w):
                for end in range(len(w), at, -1):
                    piece = w[at:end] if at == 0 else '##' + w[at:end]
                    if piece in index:
                        mine.append(index[piece]); at = end; break
                else:
                    mine = [UNK]; break
            bad += mine != e.ids
            unk += mine == [UNK]
            multi += len(mine) > 1
        print(f'vocab {len(self.vocab)} entries: of 65536 bigram words {unk} are [UNK], '
              f'{multi} split into pieces; HF WordPiece vs greedy longest match: {bad} differ',
              file=sys.stderr)
        return bad == 0


def identifier_patterns(s):
    """--mask-identifiers, as src/traffic/tokens/identifiers.rs's docs say:
    (pattern, edge) for the flow's two addresses (bytes; text: IPv4 dotted
    and FTP's commas, IPv6 canonical in lower and upper case; reverse-DNS
    labels in DNS wire format, nibbles in both cases), ports (2 bytes) and,
    from an Ethernet first frame, MACs (bytes; text with : or -, both cases;
    not all-zero or broadcast). Edge: 'dec' no ASCII digit beside the match,
    'hex' no hex digit or ':', None anything."""
    pats = set()
    for addr, port in (s['init'], s['resp']):
        pats.add((addr.packed, None)); pats.add((struct.pack('>H', port), None))
        if addr.version == 4:
            o = [str(x) for x in addr.packed]
            pats.add(('.'.join(o).encode(), 'dec')); pats.add((','.join(o).encode(), 'dec'))
            pats.add((b''.join(bytes([len(x)]) + x.encode() for x in reversed(o)), None))
        else:
            pats.add((str(addr).encode(), 'hex')); pats.add((str(addr).upper().encode(), 'hex'))
            nib = addr.packed.hex()[::-1]
            for n in (nib, nib.upper()):
                pats.add((b''.join(b'\x01' + c.encode() for c in n), None))
    if s.get('macs'):
        for mac in s['macs']:
            if mac in (bytes(6), b'\xff' * 6): continue
            pats.add((mac, None))
            for sep in (':', '-'):
                for t in (sep.join('%02x' % b for b in mac), sep.join('%02X' % b for b in mac)):
                    pats.add((t.encode(), None))
    return sorted(pats, key=lambda p: -len(p[0]))


def mask(data, pats):
    """Every match of every pattern zeroed, each pattern's matches taken
    left to right without overlapping each other, all matched against the
    bytes as read (the payload's end is no neighbour): where matches of two
    patterns overlap, both are zeroed. (The docs said "a longer match wins
    where two overlap"; read so, one flow of nDPI's quic-fuzz-overflow.pcapng
    differed, the crate zeroing one more byte: the docs now say this.)"""
    def ok(edge, i):
        if i < 0 or i >= len(data) or edge is None: return True
        b = data[i]
        if edge == 'dec': return not (48 <= b <= 57)
        return not (chr(b) in '0123456789abcdefABCDEF:')
    out = bytearray(data)
    for p, edge in pats:
        i = 0
        while i + len(p) <= len(data):
            if data[i:i + len(p)] == p and ok(edge, i - 1) and ok(edge, i + len(p)):
                out[i:i + len(p)] = bytes(len(p))
                i += len(p)
            else:
                i += 1
    return bytes(out)


LONGEST_PATTERN = 64


def flow_ids(recs, pieces, seq_len, packets, payload_bytes, view, pats=None):
    body, prev = [], None
    for rec in recs[:packets]:
        if pats is not None:
            rec = rec[:6] + (mask(rec[6][:payload_bytes + LONGEST_PATTERN - 1], pats),)
        seg = [PD]
        if view in ('full', 'header'):
            seg += pieces.encode(attributes(rec, prev))
        if view in ('full', 'payload'):
            seg += [PY] + pieces.encode(rec[6][:payload_bytes])
        prev = rec[0]
        body += seg
    return body[:seq_len - 1] + [END]


def reference(argv):
    masked = '--mask-identifiers' in argv
    if masked: argv.remove('--mask-identifiers')
    opts = {'--vocab': None, '--seq-len': '512', '--packets': '10', '--payload-bytes': '40', '--view': 'full'}
    files = []
    while argv:
        a = argv.pop(0)
        if a in opts: opts[a] = argv.pop(0)
        else: files.append(a)
    pieces = Pieces(opts['--vocab'])
    if not pieces.self_check(): sys.exit('HF WordPiece and the greedy longest match differ')
    fr = flow_reference()
    k = int(opts['--packets'])
    fr.KEEP[0] = k
    for p in files:
        fl, _, _ = fr.flows(p)
        for s in fl:
            ids = flow_ids(s['rec'], pieces, int(opts['--seq-len']), k, int(opts['--payload-bytes']), opts['--view'],
                           identifier_patterns(s) if masked else None)
            print(f"T\t{p}\t{s['proto']}\t{fr.ep(s['init'])}\t{fr.ep(s['resp'])}\t{s['first']}\t{s['n']}\t{','.join(map(str, ids))}")


def norm(e):
    a, p = e.split('|')
    return str(ipaddress.ip_address(a)) + '|' + p


def load(path):
    flows = collections.defaultdict(list)
    for line in open(path, errors='replace'):
        f = line.rstrip('\n').split('\t')
        if f[0] != 'T': continue
        _, file, proto, i, r, first, n, ids = f
        key = (file, proto) + tuple(sorted([norm(i), norm(r)]))
        flows[key].append((int(first), int(n), norm(i), ids))
    for v in flows.values(): v.sort()
    return flows


def compare(argv):
    ours, ref = argv[0], argv[1]
    dataset = '--dataset' in argv
    minp = int(argv[argv.index('--min-packets') + 1]) if '--min-packets' in argv else 3
    O, R = load(ours), load(ref)
    if dataset:
        # The dataset names its captures as the build was given them; match by path.
        files = {k[0] for k in R}
        rows = [(k, v) for k, vs in O.items() for v in vs]
        nrows = len(rows); bad = []
        for k, v in rows:
            if v not in R.get(k, []): bad.append(('row-not-in-ref', k, [v], R.get(k, [])[:3]))
        seen = {v[3] for _, v in rows}
        nref = dup = 0
        for k, vs in R.items():
            for v in vs:
                if v[1] < minp: continue
                nref += 1
                if v in O.get(k, []): continue
                if v[3] in seen: dup += 1
                else: bad.append(('ref-flow-missing', k, [], [v]))
        print(f'dataset rows {nrows}; reference flows with >= {minp} packets {nref} '
              f'({nref - dup} rows, {dup} duplicates of a row); differences {len(bad)}')
    else:
        n = sum(len(v) for v in R.values()); no = sum(len(v) for v in O.values())
        ntok = sum(len(v[3].split(',')) for vs in R.values() for v in vs)
        bad = []
        for k in set(O) | set(R):
            a, b = O.get(k, []), R.get(k, [])
            if a != b:
                bad.append(('tokens' if len(a) == len(b) else 'flows', k, a[:3], b[:3]))
        print(f'files {len({k[0] for k in R})}; flows ours {no} ref {n} ({ntok} reference tokens); '
              f'5-tuples that differ {len(bad)}')
    kinds = collections.Counter(b[0] for b in bad)
    print('by kind', dict(kinds))
    for b in bad[:20]:
        print('  ', b[0], b[1])
        for label, v in (('ours', b[2]), ('ref ', b[3])):
            for x in v[:2]: print('     ', label, x[:3], x[3][:300])
        if b[2] and b[3]:
            a, r = b[2][0][3].split(','), b[3][0][3].split(',')
            at = next((i for i, (x, y) in enumerate(zip(a, r)) if x != y), min(len(a), len(r)))
            print('      first difference at token', at, 'ours', a[at:at + 8], 'ref', r[at:at + 8])
    return 1 if bad else 0


def dpkt_check(files):
    try:
        import dpkt
    except ImportError as e:
        sys.exit(f'tokens-reference.py --dpkt needs dpkt ({e}): pip install dpkt')
    fr = flow_reference()
    c = collections.Counter(); shown = 0; where = collections.defaultdict(collections.Counter)
    for p in files:
        try:
            f = open(p, 'rb'); rd = dpkt.pcap.Reader(f)
        except Exception:
            c['not an Ethernet pcap (skipped)'] += 1; continue
        if rd.datalink() != 1:
            c['not an Ethernet pcap (skipped)'] += 1; continue
        c['files'] += 1
        for ts, buf in rd:
            try:
                proto, a, b, flags = fr.link(1, buf)
                mine = (proto, fr.IPLEN[0], flags, fr.PL[0], bytes(fr.PAY[0][:40]))
            except (fr.Skip, IndexError, struct.error):
                mine = None
            try:
                eth = dpkt.ethernet.Ethernet(buf); ip = eth.data
                if isinstance(ip, dpkt.ip.IP):
                    if ip.off & 0x1fff: raise ValueError('later fragment')
                    iplen = ip.len; l4len = ip.len - ip.hl * 4
                elif isinstance(ip, dpkt.ip6.IP6):
                    iplen = 40 + ip.plen; l4len = None
                else: raise ValueError('not IP')
                l4 = ip.data
                if isinstance(l4, dpkt.tcp.TCP):
                    theirs = (6, iplen, l4.flags & 0xff, None if l4len is None else l4len - l4.off * 4, bytes(l4.data[:40]))
                elif isinstance(l4, dpkt.udp.UDP):
                    theirs = (17, iplen, 0, None if l4len is None else l4len - 8, bytes(l4.data[:40]))
                else: raise ValueError('not TCP/UDP')
            except Exception:
                theirs = None
            if mine is None or theirs is None:
                k = 'TCP/UDP for ' + ('neither' if mine is None and theirs is None else 'dpkt only' if mine is None else 'reference only')
                c[k] += 1
                if mine is not theirs: where[k][os.path.basename(p)] += 1
                continue
            if theirs[3] is None: mine = mine[:3] + (None,) + mine[4:]
            if mine == theirs: c['TCP/UDP packets that agree'] += 1
            else:
                c['TCP/UDP packets that differ'] += 1
                if shown < 40:
                    shown += 1; print('differ', p, '(proto, ip_len, flags, payload_len): reference', mine[:4], 'dpkt', theirs[:4], 'payload bytes', 'same' if mine[4] == theirs[4] else 'differ')
    for k, v in sorted(c.items()): print(k, v)
    for k, v in sorted(where.items()): print(k, 'in', len(v), 'files:', v.most_common(10))


if __name__ == '__main__':
    if sys.argv[1:2] == ['--dpkt']:
        sys.exit(dpkt_check(sys.argv[2:]))
    if sys.argv[1:2] == ['--compare']:
        sys.exit(compare(sys.argv[2:]))
    reference(sys.argv[1:])
