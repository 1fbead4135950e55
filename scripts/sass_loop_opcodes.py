#!/usr/bin/env python3
"""Per-opcode SASS counts of the innermost loop that holds a given instruction, per kernel.

Used for the MoE decode tile (docs/kernels/moe.md "Decode path"): the K loop is the
backward branch whose body holds the HMMAs. For every kernel in `cuobjdump -sass OBJ`
whose demangled name contains every --match substring, prints the loop's address range,
the instruction count and the count per opcode (the mnemonic before the first '.').

  python3 scripts/sass_loop_opcodes.py build/.../grouped_gemm_nvfp4.cu.o \
      --match 'GemmTile<128, 8, 128, 4, 1, 6, 3, 1>' --match 'false, 0>'

A loop = [target, branch] of a BRA whose target is at or before it; the smallest such
range that contains at least --min-anchor instructions whose opcode is --anchor is taken.
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys

INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]\s+)?([A-Z0-9_]+)(\.[^ ;]*)?\s*([^;]*);")


def cuobjdump():
    for cand in ("/usr/local/cuda/bin/cuobjdump",
                 os.path.join(os.path.dirname(__file__), "..", ".deps", "cuobjdump", "bin", "cuobjdump")):
        if os.access(cand, os.X_OK):
            return cand
    return shutil.which("cuobjdump") or sys.exit("cuobjdump not found")


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
    return out.splitlines()


def functions(sass):
    name, body = None, []
    for line in sass.splitlines():
        if "Function : " in line:
            if name:
                yield name, body
            name, body = line.split("Function : ")[1].strip(), []
        elif name:
            m = INSN.search(line)
            if m:
                body.append((int(m.group(1), 16), m.group(2), m.group(3) or "", m.group(4)))
    if name:
        yield name, body


def loop_of(body, anchor, min_anchor):
    best = None
    for i, (addr, op, _, args) in enumerate(body):
        if op != "BRA":
            continue
        m = re.search(r"0x([0-9a-f]+)", args)
        if not m:
            continue
        target = int(m.group(1), 16)
        if target > addr:
            continue
        insns = [x for x in body if target <= x[0] <= addr]
        if sum(1 for x in insns if x[1] == anchor) < min_anchor:
            continue
        if best is None or len(insns) < len(best[2]):
            best = (target, addr, insns)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("object")
    ap.add_argument("--match", action="append", default=[], help="substring of the demangled name (all must match)")
    ap.add_argument("--anchor", default="HMMA")
    ap.add_argument("--min-anchor", type=int, default=8)
    ap.add_argument("--full", action="store_true", help="opcode with its modifiers (LOP3.LUT, IMAD.SHL.U32, ...)")
    a = ap.parse_args()
    sass = subprocess.run([cuobjdump(), "-sass", a.object], capture_output=True, text=True, check=True).stdout
    funcs = list(functions(sass))
    for (mangled, body), name in zip(funcs, demangle([f[0] for f in funcs])):
        if not all(s in name for s in a.match):
            continue
        loop = loop_of(body, a.anchor, a.min_anchor)
        print(name)
        if loop is None:
            print("  no loop with", a.min_anchor, a.anchor)
            continue
        target, end, insns = loop
        counts = collections.Counter((op + mod) if a.full else op for _, op, mod, _ in insns)
        print(f"  loop 0x{target:x}..0x{end:x}: {len(insns)} instructions")
        print("  " + " ".join(f"{k}:{v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))


if __name__ == "__main__":
    main()
