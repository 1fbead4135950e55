#!/usr/bin/env bash
# One hash of the sources by content (CMake files, include/, src/, tests/ without fixtures,
# bench/, tools/, scripts/): the same tree gives the same hash on any machine, whatever
# its .git says. scripts/device_check.sh records it as "tree" in summary.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
find CMakeLists.txt include src tests bench tools scripts -type f \
  \( -name '*.cu' -o -name '*.cuh' -o -name '*.h' -o -name '*.cpp' -o -name '*.sh' -o -name '*.py' \
     -o -name 'CMakeLists.txt' \) -not -path 'tests/fixtures/*' -not -path 'scripts/device_runs/*' -print0 |
  LC_ALL=C sort -z | xargs -0 sha1sum | sha1sum | cut -c1-12
