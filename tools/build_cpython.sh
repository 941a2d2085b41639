#!/usr/bin/env bash
# Build a CPython 3.X interpreter from Debian's source packages into a prefix.
#
# Usage: bash tools/build_cpython.sh 3.13|3.14|3.13t|3.14t [PREFIX]
#   PREFIX defaults to /opt/pyparams-python/3.X (3.Xt for the free-threaded one).
#   The last line printed is the path of the interpreter (PREFIX/bin/python3.X,
#   PREFIX/bin/python3.Xt for the free-threaded one).
#
# A trailing "t" builds the free-threaded variant (PEP 703): the same source,
# configured with --disable-gil. It installs python3.Xt (and no python3.X), has
# its own ABI (cp313t wheels), and shares the downloaded source with 3.X.
# pyparams re-enables the GIL when imported there (see README).
#
# Why Debian source packages: the script needs only a Debian machine's own
# archive (no python.org download), and Debian's python3.X source packages
# carry the upstream tarball.
# We unpack only that upstream .orig.tar.xz (no Debian patches) and do a plain
# ./configure && make && make install, so the result is a stock CPython.
#
# Exit status: 0 built (or already present), 2 bad usage, 3 no source package
# for that version can be downloaded (no suite searched lists it),
# anything else: a failed step (the build log path is printed).
#
# Environment knobs: JOBS (make -j, default 2), WORKDIR (download/build area,
# default /var/tmp/pyparams-cpython-build), SUITES (Debian suites searched for
# source, default "trixie forky sid"; a mirror may answer 404 for some of the
# versions a suite lists, so every listed version is tried, newest first).
# Needs root (apt-get). Takes ~5-10 minutes on 2 cores (either variant);
# compiles run at nice 19.
set -euo pipefail

ver=${1:-}
if [[ ! $ver =~ ^3\.[0-9]+t?$ ]]; then
    echo "usage: bash $0 3.13|3.14|3.13t|3.14t [PREFIX]" >&2
    exit 2
fi
base=${ver%t}                     # 3.13t -> 3.13: the source package to use
configure_flags=()
[[ $ver == "$base" ]] || configure_flags+=(--disable-gil)
prefix=${2:-/opt/pyparams-python/$ver}
py=$prefix/bin/python$ver
jobs=${JOBS:-2}
suites=${SUITES:-trixie forky sid}
workroot=${WORKDIR:-/var/tmp/pyparams-cpython-build}
workdir=$workroot/$ver            # this variant's build and log
srcdir=$workroot/$base/src        # downloads, shared by 3.X and 3.Xt
fallback_version=3.13.15-1   # known-good python3.13 source version
check='import ssl, zlib, ctypes, bz2, lzma, sqlite3, readline'
# The free-threaded variant must really be one (Py_GIL_DISABLED in its config).
[[ $ver == "$base" ]] || check+='; import sysconfig; assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1'

log() { echo "build_cpython: $*" >&2; }

# Reuse: a working interpreter in the prefix means there is nothing to do.
if [[ -x $py ]] && "$py" -c "$check" 2>/dev/null; then
    log "reusing existing $("$py" -V 2>&1) in $prefix"
    echo "$py"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || { log "must run as root (apt-get is needed)"; exit 1; }

# Build dependencies for the stdlib modules we need (ssl, zlib, ctypes, bz2,
# lzma, sqlite3, readline, uuid). Install only what is missing.
deps=(build-essential pkg-config xz-utils libssl-dev zlib1g-dev libffi-dev
      libbz2-dev liblzma-dev libsqlite3-dev libreadline-dev libncurses-dev uuid-dev)
missing=()
for d in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q 'install ok installed' || missing+=("$d")
done

# Add deb-src entries (sources only: binary installs stay on bookworm) for the
# suites that carry python3.X, on the same mirror host the machine's apt
# sources already use (only that host is reachable).
source "$(dirname "$0")/debian_mirror.sh"
mirror=$(debian_mirror)
[[ -n $mirror ]] || { log "no Debian mirror found in /etc/apt/sources.list{,.d}"; exit 1; }
srcfile=/etc/apt/sources.list.d/pyparams-deb-src.sources
cat > "$srcfile" <<EOF
# Added by pyparams tools/build_cpython.sh: source packages only, to build CPython.
Types: deb-src
URIs: ${mirror%/}
Suites: $suites
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
log "using $srcfile ($mirror: $suites)"
export DEBIAN_FRONTEND=noninteractive
timeout 600 apt-get update -qq
if ((${#missing[@]})); then
    log "installing build dependencies: ${missing[*]}"
    timeout 1200 apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Discover the listed source versions, newest first, rather than hard-coding.
versions=$(apt-cache showsrc "python$base" 2>/dev/null | sed -n 's/^Version: //p' | sort -Vr | uniq)
[[ $base == 3.13 ]] && versions=$(printf '%s\n%s\n' "$versions" "$fallback_version" | awk 'NF && !seen[$0]++')
if [[ -z $versions ]]; then
    echo "build_cpython: no python$base source package listed in Debian $suites; cannot build $ver" >&2
    exit 3
fi

# Download (source only, no build-deps resolution). A 404 fails fast; the
# timeout guards against a stalled connection.
mkdir -p "$srcdir" "$workdir"
cd "$srcdir"
orig=""
for v in $versions; do
    upstream=${v%-*}; upstream=${upstream#*:}
    orig=$(ls "python${base}_${upstream}.orig.tar.xz" 2>/dev/null || true)
    [[ -n $orig ]] && break       # already downloaded by an earlier run
    log "downloading source python$base=$v"
    if timeout 900 apt-get source -qq --download-only "python$base=$v" >/dev/null 2>"$workdir/download.err"; then
        orig=python${base}_${upstream}.orig.tar.xz
        [[ -f $orig ]] && break
    fi
    log "python$base=$v: $(grep -m1 -E 'E:|Err|40[0-9]' "$workdir/download.err" || echo 'download failed')"
    orig=""
done
if [[ -z $orig ]]; then
    echo "build_cpython: python$base source is listed (${versions//$'\n'/ }) but cannot be downloaded from $mirror; cannot build $ver" >&2
    exit 3
fi

# Unpack only the upstream tarball and build; output goes to a log to keep
# the terminal readable.
rm -rf "$workdir/build" && mkdir -p "$workdir/build"
tar -xJf "$srcdir/$orig" -C "$workdir/build" --strip-components=1
buildlog=$workdir/build.log
log "building $orig into $prefix (log: $buildlog)"
start=$SECONDS
cd "$workdir/build"
if ! { nice -n 19 ./configure --prefix="$prefix" --with-ensurepip=install "${configure_flags[@]}" \
       && nice -n 19 make -j"$jobs" \
       && nice -n 19 make install; } >"$buildlog" 2>&1; then
    tail -n 30 "$buildlog" >&2
    log "build failed; see $buildlog"
    exit 1
fi
log "built in $(( (SECONDS - start) / 60 )) min"

"$py" -c "$check" || { log "$py lacks a required module; see $buildlog"; exit 1; }
rm -rf "$workdir/build"           # keep the downloaded tarball for rebuilds
log "$("$py" -V 2>&1) installed in $prefix"
echo "$py"
