#!/usr/bin/env bash
# Held-out perplexity of a (BF16) default-model checkpoint with its routed experts in BF16,
# NVFP4 and MXFP4 (dense weights stay BF16), measured by the CPU engine (`dsv4 perplexity`).
#
#   bash scripts/eval_default_model.sh [MODEL_DIR]        # default: models/default
#
# Held-out text: MODEL_DIR/heldout.txt, written by scripts/train_default_model.py (the verses it
# held out, EOS spelled where its token stream has one). A checkpoint without one (the older byte
# model of scripts/train_byte_model.py) gets the same rule that script used: the last 2% of the
# KJV's 31102 verses, verse text only, one per line (from bible(1), package bible-kjv).
# Window length: training_log.json's eval_context (the training evaluation's), else 512.
#
# Environment: DSV4 (the binary; default build/tools/dsv4), MAX_TOKENS (score only the first N
# tokens; default all), CONTEXT (override the window), RESULT (also write the results as JSON
# there), KEEP (a folder to keep the quantized checkpoints in; default: a temporary one).
# Prints a Markdown table: experts format, perplexity per token, bits per byte, change vs BF16,
# size of model.safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/default}
DSV4=${DSV4:-build/tools/dsv4}
[[ -x $DSV4 ]] || { echo "eval_default_model: no dsv4 binary at $DSV4 (build it, or set DSV4=...)" >&2; exit 2; }
[[ -f $MODEL/config.json ]] || { echo "eval_default_model: $MODEL has no config.json" >&2; exit 2; }
if grep -q '"quantization_config"' "$MODEL/config.json"; then
  echo "eval_default_model: $MODEL is already quantized; give the BF16 checkpoint it was made from" >&2
  exit 2
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
KEEP=${KEEP:-$WORK}
mkdir -p "$KEEP"

TEXT=$MODEL/heldout.txt
if [[ ! -f $TEXT ]]; then
  TEXT=$WORK/heldout_bytes.txt
  python3 scripts/train_default_model.py --export-text "$WORK/kjv.txt" >/dev/null
  python3 - "$WORK/kjv.txt" "$TEXT" <<'EOF'
import re, sys
verses = [re.match(r"^(.+) (\d+):(\d+) (.*)$", l.rstrip("\n")).group(4) for l in open(sys.argv[1], encoding="utf-8")]
held = verses[int(len(verses) * 0.98):]  # scripts/train_byte_model.py's split
open(sys.argv[2], "w", encoding="utf-8").write("".join(v + "\n" for v in held))
EOF
  echo "eval_default_model: $MODEL has no heldout.txt; using the byte model's rule (last 2% of verses, text only)" >&2
fi

CONTEXT=${CONTEXT:-$(python3 -c 'import json, sys
try: print(json.load(open(sys.argv[1])).get("eval_context", 512))
except OSError: print(512)' "$MODEL/training_log.json")}
ARGS=(--text "$TEXT" --context "$CONTEXT" --json)
[[ -n ${MAX_TOKENS:-} ]] && ARGS+=(--max-tokens "$MAX_TOKENS")

for format in nvfp4 mxfp4; do
  rm -rf "${KEEP:?}/$format"
  "$DSV4" quantize --in "$MODEL" --out "$KEEP/$format" --experts "$format" --dense bf16 > "$WORK/quantize_$format.txt"
done

: > "$WORK/results.jsonl"
for format in bf16 nvfp4 mxfp4; do
  dir=$MODEL
  [[ $format != bf16 ]] && dir=$KEEP/$format
  "$DSV4" perplexity --model "$dir" "${ARGS[@]}" 2>/dev/null |
    python3 -c 'import json, os, sys
r = json.loads(sys.stdin.read()); r["experts"] = sys.argv[1]
r["safetensors_bytes"] = sum(os.path.getsize(os.path.join(sys.argv[2], f)) for f in os.listdir(sys.argv[2]) if f.endswith(".safetensors"))
print(json.dumps(r))' "$format" "$dir" >> "$WORK/results.jsonl"
done

python3 - "$WORK/results.jsonl" "$MODEL" "$TEXT" "${RESULT:-}" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = rows[0]
import os
print(f"model: {sys.argv[2]}", file=sys.stderr)
print(f"Held-out perplexity ({base['scored_tokens']} tokens, {base['bytes']} bytes of {os.path.basename(sys.argv[3])}, "
      f"windows of {base['context']} tokens after BOS; dense weights BF16, CPU engine):\n")
print("| routed experts | perplexity per token | bits per byte | vs BF16 | model.safetensors |")
print("| --- | --- | --- | --- | --- |")
for r in rows:
    delta = "-" if r is base else f"{100 * (r['perplexity'] / base['perplexity'] - 1):+.2f}%"
    print(f"| {r['experts'].upper()} | {r['perplexity']:.4f} | {r['bits_per_byte']:.5f} | {delta} | "
          f"{r['safetensors_bytes'] / 2**20:.2f} MiB |")
if sys.argv[4]:
    json.dump(rows, open(sys.argv[4], "w"), indent=1)
EOF
