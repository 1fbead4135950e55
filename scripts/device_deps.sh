#!/usr/bin/env bash
# Prepares .deps/device-root (git-ignored, a few MiB): what the GPU machine lacks and
# cannot download, for scripts/device_check.sh to build the whole tree there:
#   usr/include + CMake packages of nlohmann-json, CLI11, fmt (Debian .debs, extracted),
#   PCRE2's header and STATIC library libpcre2-8.a (libpcre2-dev: no runtime .so needed),
#   googletest's source tree (built by CMake there, DSV4_GTEST_SOURCE_DIR).
# cpp-httplib is not carried: the GPU machine builds without the HTTP server.
# Run here (after scripts/setup.sh), then carry ".deps/device-root" in the device call.
#
#   bash scripts/device_deps.sh            # prepare
#   bash scripts/device_deps.sh --verify   # prepare, then configure + build dsv4 and the
#                                          # tokenizer test here with the system's copies
#                                          # of those libraries and pkg-config HIDDEN (a
#                                          # private mount namespace), proving the build
#                                          # uses only the carried ones
set -euo pipefail
cd "$(dirname "$0")/.."
root=.deps/device-root
debs=.deps/device-debs
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

rm -rf "$root" "$debs" && mkdir -p "$root" "$debs/x"
(cd "$debs" && apt-get download nlohmann-json3-dev libcli11-dev libfmt-dev libfmt9 libpcre2-dev 2>/dev/null)
for deb in "$debs"/*.deb; do dpkg -x "$deb" "$debs/x"; done
x=$debs/x/usr
mkdir -p "$root/usr/include" "$root/usr/lib/$arch/cmake" "$root/usr/share/cmake"
cp -r "$x/include/nlohmann" "$x/include/CLI" "$x/include/fmt" "$x/include/pcre2.h" "$root/usr/include/"
cp -r "$x/share/cmake/nlohmann_json" "$x/share/cmake/CLI11" "$root/usr/share/cmake/"
cp -r "$x/lib/$arch/cmake/fmt" "$root/usr/lib/$arch/cmake/"
# fmt's CMake package checks that libfmt.so exists (dsv4 links fmt::fmt-header-only).
cp -P "$x/lib/$arch"/libfmt.so* "$root/usr/lib/$arch/"
cp "$x/lib/$arch/libpcre2-8.a" "$root/usr/lib/$arch/"
for dir in /usr/share/doc/libpcre2-dev /usr/share/doc/libfmt-dev /usr/share/doc/nlohmann-json3-dev \
           /usr/share/doc/libcli11-dev; do
  [[ -f $debs/x$dir/copyright ]] && install -D -m644 "$debs/x$dir/copyright" "$root$dir/copyright"
done

# googletest: the Debian source tree (package googletest, a dependency of libgtest-dev).
gtest_src=/usr/src/googletest
if [[ ! -f $gtest_src/CMakeLists.txt ]]; then
  (cd "$debs" && apt-get download googletest 2>/dev/null)
  dpkg -x "$debs"/googletest_*.deb "$debs/gtest"
  gtest_src=$debs/gtest/usr/src/googletest
fi
cp -r "$gtest_src" "$root/googletest"
rm -rf "$root"/googletest/{googletest,googlemock}/{test,docs,samples}
rm -rf "$debs"
du -sh "$root"

[[ ${1:-} == --verify ]] || exit 0

# --verify: the GPU machine's situation, here. In a private user + mount namespace,
# pkg-config and the system's nlohmann/CLI11/fmt/PCRE2/cpp-httplib/googletest headers,
# libraries and CMake packages are hidden (directories of symlinks to everything else
# are mounted over /usr/include, /usr/lib/<arch>, /usr/share, /usr/src,
# and an empty non-executable file over pkg-config); then a fresh build dir
# is configured like scripts/device_check.sh does and dsv4 + tokenizer_test are built
# and run. Afterwards the compiler's dependency lists are searched for system copies.
build=${DSV4_VERIFY_BUILD_DIR:-build-deps-verify}
rm -rf "$build" && mkdir -p "$build"
cat > "$build/hide.sh" <<HIDE
set -euo pipefail
hide() {  # hide DIR NAME...: mount over DIR a farm of symlinks to all but NAMEs
  local dir=\$1; shift
  local real=$PWD/$build/real\$(echo "\$dir" | tr / _) farm=$PWD/$build/farm\$(echo "\$dir" | tr / _)
  mkdir -p "\$real" "\$farm"
  mount --bind "\$dir" "\$real"
  for entry in "\$real"/* "\$real"/.[!.]*; do
    [[ -e \$entry || -L \$entry ]] || continue
    local name=\${entry##*/} skip=0
    for pattern in "\$@"; do [[ \$name == \$pattern ]] && skip=1; done
    ((skip)) || ln -s "\$entry" "\$farm/\$name"
  done
  mount --bind "\$farm" "\$dir"
}
hide /usr/include nlohmann CLI fmt 'pcre2*.h' httplib.h gtest gmock
hide /usr/lib/$arch 'libpcre2-*.a' 'libpcre2-*.so' 'libfmt.so*' 'libgtest*' 'libgmock*' 'libcpp-httplib*' cmake pkgconfig
hide /usr/share cmake pkgconfig
touch $PWD/$build/not-a-program  # mode 644: find_program skips it
for program in /usr/bin/pkgconf /usr/bin/pkg-config /usr/bin/*-pkg-config; do
  [[ -e \$program ]] && mount --bind $PWD/$build/not-a-program "\$program"
done
hide /usr/src googletest gtest gmock
! [[ -x /usr/bin/pkg-config ]] || { echo "verify: pkg-config still visible"; exit 1; }
[[ ! -e /usr/include/nlohmann && ! -e /usr/include/pcre2.h && ! -e /usr/include/httplib.h ]]
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSV4_ENABLE_CUDA=OFF -DDSV4_STATIC_DEPS=ON \\
  -DCMAKE_PREFIX_PATH=$PWD/$root/usr -DDSV4_GTEST_SOURCE_DIR=$PWD/$root/googletest
cmake --build $build -j$(nproc) --target dsv4 tokenizer_test
$build/tests/tokenizer/tokenizer_test --gtest_brief=1
$build/tools/dsv4 generate --prompt "And God said" --max-new-tokens 8 --temperature 0 | tail -2
if $build/tools/dsv4 serve --port 0; then echo "verify: dsv4 serve should have failed"; exit 1; fi
HIDE
unshare -rm bash "$build/hide.sh" 2>&1 | tee "$build/verify.log"
echo "verify: system copies used by the build (must be none):"
if ninja -C "$build" -t deps | grep -E '^ +(/usr/include/|/usr/src/|.*/real_usr_include/|.*/real_usr_src/)(nlohmann|CLI|fmt|pcre2|httplib|gtest|gmock|googletest)'; then
  echo "verify: FAILED: the build read system headers"; exit 1
fi
grep -q "DSV4_PCRE2_LIBRARY:FILEPATH=$PWD/$root/usr/lib/$arch/libpcre2-8.a" "$build/CMakeCache.txt"
if grep -q "libdsv4_server" "$build/build.ninja"; then echo "verify: FAILED: the server is built"; exit 1; fi
if readelf -d "$build/tools/dsv4" | grep -E 'NEEDED.*(pcre2|fmt|httplib)'; then
  echo "verify: FAILED: dsv4 needs a runtime library that is not on the GPU machine"; exit 1
fi
echo "verify: OK (carried headers only, libpcre2-8.a linked statically, no server)"
