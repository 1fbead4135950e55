#!/usr/bin/env bash
# Counts tensor-core instructions per CUDA kernel in the built CUDA library (the SASS
# check of issues 5 and 6): for every kernel whose mangled name matches $1 (a grep -E
# regex; default: every kernel), one JSON line with the counts of HGMMA (BF16 wgmma),
# QGMMA (FP8 wgmma), HMMA (mma.sync) and local-memory instructions (STL/LDL: spills or local arrays).
#   bash scripts/sass_check.sh [regex] [library] >> $SUMMARY
# Needs cuobjdump: the CUDA toolkit's (/usr/local/cuda/bin on the GPU machine) or the one
# scripts/setup.sh puts in .deps/cuobjdump/bin (PyPI nvidia-cuda-cuobjdump).
set -euo pipefail
pattern=${1:-.}
lib=${2:-build-device/src/cuda/libdsv4_cuda.a}
[[ -x /usr/local/cuda/bin/cuobjdump ]] && PATH=/usr/local/cuda/bin:$PATH
repo=$(cd "$(dirname "$0")/.." && pwd)
command -v cuobjdump >/dev/null || { [[ -x $repo/.deps/cuobjdump/bin/cuobjdump ]] && PATH=$repo/.deps/cuobjdump/bin:$PATH; }
command -v cuobjdump >/dev/null || { echo "sass_check: cuobjdump not found" >&2; exit 2; }
[[ -f $lib ]] || { echo "sass_check: $lib not found (build first)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lib=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
(cd "$work" && ar x "$lib")
for obj in "$work"/*.o; do
  { cuobjdump -sass "$obj" 2>/dev/null || true; } | awk -v pattern="$pattern" -v object="$(basename "$obj")" '
    function flush() {
      if (name != "" && name ~ pattern)
        printf "{\"bench\":\"sass\",\"object\":\"%s\",\"kernel\":\"%s\",\"hgmma\":%d,\"qgmma\":%d,\"hmma\":%d,\"local_stores_stl\":%d,\"local_loads_ldl\":%d}\n", object, name, h, q, m, stl, ldl
      h = q = m = stl = ldl = 0
    }
    /Function : / { flush(); name = $NF; next }
    /HGMMA/ { h++ } /QGMMA/ { q++ } /HMMA/ { m++ } /STL/ { stl++ } /LDL/ { ldl++ }
    END { flush() }'
done
