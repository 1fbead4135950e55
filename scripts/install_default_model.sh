#!/usr/bin/env bash
# Makes the bundled model from a trained BF16 checkpoint (scripts/device_train_default.sh's
# default_model_bf16/): measures held-out perplexity with BF16, NVFP4 and MXFP4 experts
# (scripts/eval_default_model.sh), then installs the NVFP4-expert checkpoint (dense weights BF16,
# made by `dsv4 quantize`) as DEST, with the measured table appended to its README.md and the
# numbers in DEST/heldout_perplexity.json.
#
#   bash scripts/install_default_model.sh BF16_DIR [DEST]        # DEST default: models/default
#
# Environment: DSV4 (the binary; default build/tools/dsv4). The BF16 checkpoint itself is not
# installed (the repo keeps one copy of the model, a few MB); keep BF16_DIR if you need it.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:?usage: install_default_model.sh BF16_DIR [DEST]}
DEST=${2:-models/default}
DSV4=${DSV4:-build/tools/dsv4}
export DSV4

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
KEEP=$WORK/q RESULT=$WORK/results.json bash scripts/eval_default_model.sh "$SRC" | tee "$WORK/table.md"

rm -rf "$DEST"
mkdir -p "$DEST"
cp -r "$WORK/q/nvfp4/." "$DEST/"
rm -f "$DEST/quantize_report.json" "$DEST/byte_tokenizer.json"
cp "$WORK/results.json" "$DEST/heldout_perplexity.json"
{
  echo
  echo "## This directory: NVFP4 experts"
  echo
  echo "The routed experts here are NVFP4 (ModelOpt layout, block 16, E4M3 block scales), made by"
  echo "\`dsv4 quantize --experts nvfp4 --dense bf16\` from the trained BF16 checkpoint; everything else is as trained."
  echo "\`scripts/eval_default_model.sh\` measured, with \`dsv4 perplexity\` (CPU engine) on \`heldout.txt\`:"
  echo
  cat "$WORK/table.md"
} >> "$DEST/README.md"

echo
du -sh "$DEST"; ls -la "$DEST"
"$DSV4" generate --model "$DEST" --prompt "In the beginning" --max-new-tokens 40
