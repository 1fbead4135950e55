#!/usr/bin/env bash
# Prepares .deps/device-root (git-ignored): the header-only C++ dependencies from
# Debian packages and googletest's source tree, which the GPU machine lacks and
# cannot download. Run here, then carry ".deps/device-root" in the device call.
set -euo pipefail
cd "$(dirname "$0")/.."
root=.deps/device-root
rm -rf "$root" .deps/device-debs && mkdir -p "$root" .deps/device-debs
(cd .deps/device-debs && apt-get download nlohmann-json3-dev libcli11-dev libfmt-dev libfmt9 2>/dev/null)
for deb in .deps/device-debs/*.deb; do dpkg -x "$deb" "$root"; done
cp -r /usr/src/googletest "$root/googletest"
du -sh "$root"
