#!/usr/bin/env python3
"""Per-kernel global memory instructions in the compiled SASS (no GPU needed).

Reads the fatbins build.rs wrote (newest `*/out/fatbin` under target dirs, or
--fatbins DIR), disassembles one architecture with cuobjdump, and counts for
every kernel the global loads and stores by access width, atomics, shared
memory traffic and cp.async. A memory-bound kernel that should stream 16-byte
vectors but shows only 16- or 32-bit LDG/STG has lost its vector path; this is
the offline check behind the bandwidth figures of `tmoe bench kernels`.

  tools/sass-report.py [--arch sm_90a] [--fatbins DIR] [--kernel SUBSTR] [--out FILE] [--json]
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Access width in bits from an LDG/STG opcode's modifiers (no modifier = 32).
WIDTHS = {"U8": 8, "S8": 8, "U16": 16, "S16": 16, "64": 64, "128": 128, "ENL2": 256}


def width(op):
    bits = 32
    for m in op.split(".")[1:]:
        bits = WIDTHS.get(m, bits)
    return bits


def newest_fatbin_dir():
    pats = [os.path.join(ROOT, "target", "*", "build", "traffic-moe-*", "out", "fatbin")]
    if os.environ.get("CARGO_TARGET_DIR"):
        pats.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "*", "build", "traffic-moe-*", "out", "fatbin"))
    dirs = [d for p in pats for d in glob.glob(p) if glob.glob(os.path.join(d, "*.fatbin"))]
    if not dirs:
        sys.exit("sass-report: no fatbins found; build with nvcc first (cargo build), or pass --fatbins DIR")
    return max(dirs, key=os.path.getmtime)


def cuobjdump():
    local = os.path.join(ROOT, ".cuda-toolchain", "bin", "cuobjdump")
    if os.access(local, os.X_OK):
        return local
    sys.exit("sass-report: cuobjdump missing; run tools/install-cuda-toolchain.sh")


def kernels_in(fatbin, arch, tool):
    out = subprocess.run([tool, "-sass", "-arch", arch, fatbin], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"sass-report: cuobjdump failed on {fatbin}: {out.stderr.strip()}")
    name, stats = None, {}
    for line in out.stdout.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            name = m.group(1)
            stats[name] = defaultdict(Counter)
            continue
        if name is None:
            continue
        m = re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", line)
        if not m:
            continue
        op = m.group(1)
        base = op.split(".")[0]
        if base in ("LDG", "STG"):
            stats[name][base][width(op)] += 1
        elif base in ("ATOMG", "RED", "REDG", "ATOM"):
            stats[name]["atomic"][op] += 1
        elif base in ("LDS", "STS", "LDSM"):
            stats[name]["shared"][base] += 1
        elif base == "LDGSTS":
            stats[name]["cp.async"][width(op)] += 1
    return stats


def fmt(c):
    return " ".join(f"{n}x{b}" for b, n in sorted(c.items())) or "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--fatbins", help="directory of *.fatbin (default: newest build)")
    ap.add_argument("--kernel", help="only kernels whose name contains this")
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument("--json", action="store_true", help="print JSON: kernel -> {LDG,STG: {bits: count}, atomics, shared}")
    a = ap.parse_args()
    d = a.fatbins or newest_fatbin_dir()
    tool = cuobjdump()
    if a.json:
        found = {}
        for fb in sorted(glob.glob(os.path.join(d, "*.fatbin"))):
            for k, s in kernels_in(fb, a.arch, tool).items():
                if not a.kernel or a.kernel in k:
                    found[k] = {
                        "file": os.path.basename(fb)[: -len(".fatbin")],
                        "LDG": {str(b): n for b, n in s["LDG"].items()},
                        "STG": {str(b): n for b, n in s["STG"].items()},
                        "cp.async": {str(b): n for b, n in s["cp.async"].items()},
                        "atomics": sum(s["atomic"].values()),
                        "shared": sum(s["shared"].values()),
                    }
        json.dump(found, sys.stdout, indent=1, sort_keys=True)
        return
    lines = [
        f"SASS global memory instructions per kernel ({a.arch}; static counts, not executed counts)",
        f"fatbins: {os.path.relpath(d, ROOT) if d.startswith(ROOT) else d}",
        "columns: count x access width in bits",
        f"{'kernel':<28} {'LDG':<22} {'STG':<18} {'atomics':<14} {'cp.async':<10} shared",
    ]
    for fb in sorted(glob.glob(os.path.join(d, "*.fatbin"))):
        if os.path.basename(fb).startswith("sim_"):
            continue  # simulator self-test kernels
        for k, s in sorted(kernels_in(fb, a.arch, tool).items()):
            if a.kernel and a.kernel not in k:
                continue
            atom = sum(s["atomic"].values())
            sh = sum(s["shared"].values())
            lines.append(
                f"{k:<28} {fmt(s['LDG']):<22} {fmt(s['STG']):<18} {atom or '-'!s:<14} "
                f"{fmt(s['cp.async']):<10} {sh or '-'}"
            )
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
