#!/usr/bin/env bash
# Build a CPU-only Lua Torch7 (the one the golden data was made with) into PREFIX.
#
#   lua/build_torch7.sh PREFIX [SOURCES_DIR]
#
# SOURCES_DIR holds one folder per package (torch7 nn optim paths cwrap sys xlua image dok threads Moses),
# each at the commit listed below. Without it the sources are cloned into PREFIX/src from GitHub (or from
# $TORCH7_GIT_BASE/<owner>/<name>, e.g. a folder of mirrors).
# Result: PREFIX/bin/th (luajit with the Torch paths and one BLAS/OpenMP thread), PREFIX/env.sh.
set -euo pipefail

die() { echo "build_torch7.sh: $*" >&2; exit 1; }
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: build_torch7.sh PREFIX [SOURCES_DIR]"

# name  repository          commit (the build the golden data came from)
PACKAGES="
torch7 torch/torch7 814ea4afd6beb110705d2456de03876841fcf1fd
nn     torch/nn     872682558c48ee661ebff693aa5a41fcdefa7873
optim  torch/optim  a5ceed7c21a56d32a36706823e8436741b230d1c
paths  torch/paths  4ebe222ba12589fb9d86c1d3895d7f509df77b6a
cwrap  torch/cwrap  dbd0a623dc4dfb4b8169d5aecc6dd9aec2f22792
sys    torch/sys    f073f057d3fd2148866eaa0444a62ababfdf935e
xlua   torch/xlua   41308fe696bf8b0892f4ad4f9857d12a87a3f75e
image  torch/image  5aa18819b6a7b44751f8a858bd232d1c07b67985
dok    torch/dok    1b36900e1bfa6ee7f48db52c577bdeb7d9e85909
threads torch/threads 7094a90be44ecdd5f9f0b90560473ad27f3bb07d
Moses  Yonaba/Moses 6fe8d76d50a22d85fe064aaa80390b72381befed
"
DEB_PACKAGES="luajit libluajit-5.1-dev libopenblas-dev cmake gcc g++ make libjpeg-dev libpng-dev"

mkdir -p "$1"
PREFIX=$(cd "$1" && pwd)
SRC=${2:-}
JOBS=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
START=$(date +%s)

# --- distribution packages --------------------------------------------------------------------------
missing=""
for p in $DEB_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing:$missing"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null; } \
      || die "apt-get could not install:$missing"
  else
    die "missing distribution packages (install them first):$missing"
  fi
fi
LUAJIT_INC=$(pkg-config --variable=includedir luajit 2>/dev/null || true)
[ -f "$LUAJIT_INC/luajit-2.1/lua.h" ] && LUAJIT_INC="$LUAJIT_INC/luajit-2.1"
[ -f "$LUAJIT_INC/lua.h" ] || LUAJIT_INC=/usr/include/luajit-2.1
[ -f "$LUAJIT_INC/lua.h" ] || die "LuaJIT headers not found (libluajit-5.1-dev)"
LUAJIT_BIN=$(command -v luajit) || die "luajit not found"

# --- sources ------------------------------------------------------------------------------------------
if [ -z "$SRC" ]; then
  SRC="$PREFIX/src"
  mkdir -p "$SRC"
  echo "$PACKAGES" | while read -r name repo commit; do
    [ -n "$name" ] || continue
    if [ ! -d "$SRC/$name/.git" ]; then
      git clone -q "${TORCH7_GIT_BASE:-https://github.com}/$repo" "$SRC/$name" \
        || die "cannot clone $repo (no network? pass SOURCES_DIR)"
    fi
    git -C "$SRC/$name" checkout -q "$commit" || die "$repo has no commit $commit"
  done
fi
SRC=$(cd "$SRC" && pwd)
echo "$PACKAGES" | while read -r name repo commit; do
  [ -n "$name" ] || continue
  [ -d "$SRC/$name" ] || die "$SRC/$name is missing ($repo at ${commit:0:7})"
  # A git checkout can prove its commit; an exported tree is taken on trust.
  if head=$(git -C "$SRC/$name" rev-parse HEAD 2>/dev/null) && [ "$(git -C "$SRC/$name" rev-parse --show-toplevel)" = "$SRC/$name" ]; then
    [ "$head" = "$commit" ] || die "$SRC/$name is at ${head:0:7}, expected ${commit:0:7}"
  fi
done

# --- the prefix: torch7's CMake takes the install prefix from LUA_BINDIR's parent ----------------------
LUADIR="$PREFIX/share/lua/5.1"
LIBDIR="$PREFIX/lib/lua/5.1"
mkdir -p "$PREFIX/bin" "$PREFIX/include" "$LUADIR" "$LIBDIR" "$PREFIX/lib" "$PREFIX/build"
ln -sf "$LUAJIT_BIN" "$PREFIX/bin/luajit"
for h in lua.h lualib.h lauxlib.h luaconf.h lua.hpp luajit.h; do
  [ -f "$LUAJIT_INC/$h" ] && ln -sf "$LUAJIT_INC/$h" "$PREFIX/include/$h"
done

export LUA_PATH="$LUADIR/?.lua;$LUADIR/?/init.lua;$PREFIX/lua/?.lua;$PREFIX/lua/?/init.lua;./?.lua"
export LUA_CPATH="$LIBDIR/?.so;$PREFIX/lib/?.so;./?.so"
export LD_LIBRARY_PATH="$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Pure-Lua packages (rockspec type "builtin"): copy the modules. cwrap must be there before torch7's build.
copy_lua() {  # package, files...
  local pkg=$1; shift
  mkdir -p "$LUADIR/$pkg"
  for f in "$@"; do cp "$SRC/$pkg/$f" "$LUADIR/$pkg/$f"; done
}
copy_lua cwrap init.lua cinterface.lua types.lua
copy_lua dok init.lua inline.lua
copy_lua xlua init.lua OptionParser.lua Profiler.lua
cp "$SRC/Moses/moses.lua" "$LUADIR/moses.lua"

# -fcommon: gcc >= 10 rejects TH's tentative definitions otherwise. -O2 is the optimisation level used.
CMAKE_ARGS=(
  -DCMAKE_BUILD_TYPE=Release
  "-DCMAKE_C_FLAGS=-fcommon" "-DCMAKE_C_FLAGS_RELEASE=-O2 -DNDEBUG"
  "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG"
  "-DLUA=$PREFIX/bin/luajit" -DLUALIB=luajit-5.1
  "-DLUA_BINDIR=$PREFIX/bin" "-DLUA_INCDIR=$PREFIX/include" "-DLUA_LIBDIR=$PREFIX/lib"
  "-DLUADIR=$LUADIR" "-DLIBDIR=$LIBDIR"
  "-DCMAKE_PREFIX_PATH=$PREFIX" "-DCMAKE_INSTALL_PREFIX=$PREFIX"
)
# The image package's own Lua module is PREFIX/lib/libjpeg.so: point CMake at the system libraries, or a
# rebuild into the same prefix links the module against itself.
SYS_JPEG=$(gcc -print-file-name=libjpeg.so)
SYS_PNG=$(gcc -print-file-name=libpng.so)
[ -f "$SYS_JPEG" ] && [ -f "$SYS_PNG" ] || die "libjpeg.so / libpng.so not found (libjpeg-dev, libpng-dev)"
IMAGE_ARGS=("-DJPEG_LIBRARY=$SYS_JPEG" "-DJPEG_INCLUDE_DIR=/usr/include" "-DPNG_LIBRARY=$SYS_PNG"
            "-DPNG_PNG_INCLUDE_DIR=/usr/include")

for pkg in paths torch7 sys nn optim image threads; do
  echo "== $pkg"
  b="$PREFIX/build/$pkg"
  rm -rf "$b"; mkdir -p "$b"
  log="$PREFIX/build/$pkg.log"
  extra=()
  [ "$pkg" = image ] && extra=("${IMAGE_ARGS[@]}")
  ( cd "$b" && cmake "$SRC/$pkg" "${CMAKE_ARGS[@]}" "${extra[@]}" && make -j"$JOBS" && make install ) >"$log" 2>&1 \
    || { tail -20 "$log" >&2; die "$pkg failed (full log: $log)"; }
done

# --- a th-like launcher and an environment file --------------------------------------------------------
cat > "$PREFIX/env.sh" <<ENV
# source this file to use the Torch7 in $PREFIX
export LUA_PATH="$LUA_PATH"
export LUA_CPATH="$LUA_CPATH"
export LD_LIBRARY_PATH="$PREFIX/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
# one OpenMP and one BLAS thread unless the caller says otherwise (sums depend on the split)
export OMP_NUM_THREADS=\${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=\${OPENBLAS_NUM_THREADS:-1}
ENV
# Not the trepl "th": plain luajit running a script with its arguments (the global arg as th sets it).
cat > "$PREFIX/bin/th" <<TH
#!/bin/sh
. "$PREFIX/env.sh"
exec "$PREFIX/bin/luajit" "\$@"
TH
chmod +x "$PREFIX/bin/th"

"$PREFIX/bin/th" -e "require 'torch'; require 'nn'; require 'optim'; require 'image'; require 'threads';
  require 'xlua'; require 'sys'; require 'paths'; require 'moses'; require 'libjpeg'; require 'liblua_png'
  assert(torch.FloatTensor(4):fill(1):sum() == 4)" || die "the installed Torch7 does not load"


# build facts, one per line: what the golden sets record about the Torch7 that made them
{
  echo "luajit $($LUAJIT_BIN -v | awk '{print $2}')"
  echo "gcc $(gcc -dumpfullversion)"
  echo "cflags -O2 -fcommon"
  for p in libopenblas0-pthread libjpeg62-turbo libpng16-16; do
    echo "$p $(dpkg-query -W -f='${Version}' "$p" 2>/dev/null | sed 's/^[0-9]*://; s/[-+].*//')"
  done
  echo "$PACKAGES" | awk 'NF {print $2, $3}'
} > "$PREFIX/BUILD-INFO"
echo "== done in $(( $(date +%s) - START )) s"
echo "Torch7 launcher: $PREFIX/bin/th   (or: . $PREFIX/env.sh; luajit script.lua ...)"
