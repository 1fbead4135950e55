#!/usr/bin/env python3
"""Main-loop SASS of wgmma kernels: instructions per loop, by opcode, and an A-register hazard check.

Usage:
  python3 scripts/sass_wgmma_loops.py OBJ_OR_SASS [--kernel REGEX] [--list] [--no-hazard]

OBJ_OR_SASS is a .o / .cu.o / .a member (cuobjdump -sass is run on it; cuobjdump from
/usr/local/cuda/bin, PATH or .deps/cuobjdump/bin) or a text file already holding
`cuobjdump -sass` output. For every kernel (Function) whose mangled name matches --kernel:
each loop = the address range [target, branch] of a backward BRA, kept when it contains an
HGMMA (innermost such ranges only: a range that contains another kept range is dropped).
Printed per loop: its range, instruction count (every instruction from the loop label to
the back branch inclusive, `@!PT` padding included), HGMMA count, counts by opcode
(base opcode, modifiers stripped; --full-opcodes keeps them), and with --list the
instructions themselves.

Hazard check (PTX: the A registers of an in-flight wgmma must not be written before the
wait_group that retires it): for every HGMMA with register A (HGMMA ... Rd, Ra, gdesc...),
walk forward from it, wrapping from the back branch to the loop label (up to 3 times) and
also along the loop exit, counting group ends (an HGMMA carrying `gsb0` closes a group);
the HGMMA's group is retired at the first `WARPGROUP.DEPBAR.LE gsb0, N` with N <= the
number of groups closed after it. Every register written on that path (the destination
of ALU / load instructions, with widths from .64 / .128 / .WIDE) is compared with Ra..Ra+3.
Forward branches are walked through linearly (both sides counted: conservative).
Exit status 1 when a hazard is found.
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys

INSN = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
FUNC = re.compile(r"Function : (\S+)")


def find_cuobjdump():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for cand in ("/usr/local/cuda/bin/cuobjdump", shutil.which("cuobjdump") or "",
                 os.path.join(repo, ".deps/cuobjdump/bin/cuobjdump")):
        if cand and os.access(cand, os.X_OK):
            return cand
    sys.exit("sass_wgmma_loops: cuobjdump not found")


def read_sass(path):
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"\x7fELF") or head.startswith(b"!<ar"):
        return subprocess.run([find_cuobjdump(), "-sass", path], check=True, capture_output=True,
                              text=True).stdout
    with open(path) as f:
        return f.read()


def parse_kernels(text):
    """[(name, [(addr, text)])]"""
    kernels, name, insns = [], None, []
    for line in text.split("\n"):
        m = FUNC.search(line)
        if m:
            if name:
                kernels.append((name, insns))
            name, insns = m.group(1), []
            continue
        m = INSN.match(line)
        if m and name:
            insns.append((int(m.group(1), 16), m.group(2)))
    if name:
        kernels.append((name, insns))
    return kernels


def split_pred(text):
    """('@P0', 'OPCODE.MOD', 'operands')"""
    pred = ""
    if text.startswith("@"):
        pred, text = text.split(None, 1)
    parts = text.split(None, 1)
    return pred, parts[0], parts[1] if len(parts) > 1 else ""


def base_opcode(op, full):
    return op if full else op.split(".")[0]


NO_REG_DEST = ("ST", "STS", "STG", "STL", "LDGSTS", "BAR", "BRA", "EXIT", "DEPBAR", "WARPGROUP", "NOP",
               "RED", "LDGDEPBAR", "ARRIVES", "SYNCS", "FENCE", "MEMBAR", "CCTL", "ERRBAR", "WARPSYNC",
               "BSYNC", "BSSY", "CALL", "RET", "UTMALDG", "UBLKCP", "HGMMA", "QGMMA", "YIELD")


def dest_regs(text):
    """Registers R<n> an instruction writes (empty when none or only predicates / uniforms)."""
    pred, op, ops = split_pred(text)
    base = op.split(".")[0]
    if base in NO_REG_DEST:
        return set()
    first = ops.split(",")[0].strip()
    m = re.fullmatch(r"R(\d+)", first)
    if not m:
        return set()  # predicate, RZ, uniform register
    r = int(m.group(1))
    width = 1
    if ".128" in op:
        width = 4
    elif ".64" in op or ".WIDE" in op:
        width = 2
    return set(range(r, r + width))


def branch_target(text):
    pred, op, ops = split_pred(text)
    if op.split(".")[0] != "BRA":
        return None
    m = re.search(r"0x([0-9a-f]+)", ops)
    return int(m.group(1), 16) if m else None


def find_loops(insns):
    index = {a: i for i, (a, _) in enumerate(insns)}
    loops = []
    for i, (addr, text) in enumerate(insns):
        tgt = branch_target(text)
        if tgt is not None and tgt <= addr and tgt in index:
            j = index[tgt]
            if any("HGMMA" in t for _, t in insns[j:i + 1]):
                loops.append((j, i))
    # innermost: drop a loop that strictly contains another kept loop
    return [l for l in loops if not any(o != l and l[0] <= o[0] and o[1] <= l[1] for o in loops)]


def hazard_check(insns, loop, out):
    start, end = loop
    problems = 0
    for i in range(start, end + 1):
        _, text = insns[i]
        if "HGMMA" not in text:
            continue
        m = re.search(r"HGMMA\S*\s+R\d+,\s*R(\d+),\s*gdesc", text)
        if not m:
            continue  # A from shared memory
        a_regs = set(range(int(m.group(1)), int(m.group(1)) + 4))
        for path in ("wrap", "exit"):
            closed, pos, wraps, retired, bad = 0, i + 1, 0, False, []
            # the HGMMA's own group closes at the first gsb0 HGMMA at or after it
            own_closed = "gsb0" in text
            while pos < len(insns):
                a, t = insns[pos]
                if "HGMMA" in t and "gsb0" in t:
                    if own_closed:
                        closed += 1
                    own_closed = True
                md = re.search(r"WARPGROUP\.DEPBAR\.LE\s+gsb0,\s*0x([0-9a-f]+)", t)
                if md and own_closed and int(md.group(1), 16) <= closed:
                    retired = True
                    break
                w = dest_regs(t) & a_regs
                if w:
                    bad.append((a, t))
                if pos == end and path == "wrap":
                    wraps += 1
                    if wraps > 3:
                        break
                    pos = start
                    continue
                pos += 1
            if bad:
                problems += len(bad)
                out.append(f"    HAZARD ({path}) {text}: A registers written before retire:")
                out.extend(f"      /*{a:04x}*/ {t}" for a, t in bad[:8])
            if not retired:
                out.append(f"    note ({path}): no retiring DEPBAR found for {text}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("--kernel", default=".", help="regex on the mangled kernel name")
    ap.add_argument("--list", action="store_true", help="print the loop instructions")
    ap.add_argument("--full-opcodes", action="store_true", help="count opcodes with modifiers")
    ap.add_argument("--no-hazard", action="store_true")
    args = ap.parse_args()
    total_problems = 0
    for name, insns in parse_kernels(read_sass(args.input)):
        if not re.search(args.kernel, name):
            continue
        loops = find_loops(insns)
        if not loops:
            continue
        print(name)
        for loop in loops:
            body = insns[loop[0]:loop[1] + 1]
            counts = collections.Counter(base_opcode(split_pred(t)[1], args.full_opcodes) for _, t in body)
            hg = sum(1 for _, t in body if "HGMMA" in t)
            shape = sorted({re.search(r"HGMMA\.(\S+)", t).group(1) for _, t in body if "HGMMA" in t})
            print(f"  loop /*{body[0][0]:04x}*/../*{body[-1][0]:04x}*/: {len(body)} instructions, "
                  f"{hg} HGMMA ({', '.join(shape)})")
            print("    " + " ".join(f"{op}:{n}" for op, n in counts.most_common()))
            if args.list:
                for a, t in body:
                    print(f"      /*{a:04x}*/ {t}")
            if not args.no_hazard:
                out = []
                p = hazard_check(insns, loop, out)
                total_problems += p
                print(f"    A-register hazard check: {p} writes")
                for line in out:
                    print(line)
    sys.exit(1 if total_problems else 0)


if __name__ == "__main__":
    main()
