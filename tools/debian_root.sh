#!/usr/bin/env bash
# A Debian sid root holding Debian's own CPython 3.X, for a CPython that no
# source package here can build: the mirror serves sid's python3.14 binary
# packages while it answers 404 for their sources (tools/build_cpython.sh).
#
# Usage: bash tools/debian_root.sh 3.14 [ROOT]            make (or reuse) ROOT; prints it
#        bash tools/debian_root.sh 3.14 [ROOT] -- CMD...  run CMD in ROOT, in this checkout
#
#   ROOT defaults to /opt/pyparams-python/3.X-debian. Inside it this checkout
#   sits at its own path (a bind mount, for the command's time only), so
#       bash tools/debian_root.sh 3.14 -- make test PYTHON=python3.14 VENV=.venv-3.14
#   builds .venv-3.14 and pyparams' 3.14 extension in the checkout, beside the
#   others, with the root's python3.14, g++ and glibc. The command runs with a
#   clean environment (PATH, HOME, LANG, PIP_CERT, PIP_NO_CACHE_DIR) and the
#   machine's CA bundle, /etc/hosts and resolv.conf copied in (pip and
#   torch.distributed need them).
#
# Exit status: 0 done (the command's own status when one is given), 2 bad
# usage, 3 the root or python3.X cannot be had from the mirror, else a failed
# step. Needs root (debootstrap, chroot, mount). Making the root takes about a
# minute (debootstrap, then python3.X, its headers and venv, g++, make, git).
set -euo pipefail

ver=${1:-}
if [[ ! $ver =~ ^3\.[0-9]+$ ]]; then
    echo "usage: bash $0 3.X [ROOT] [-- COMMAND...]" >&2
    exit 2
fi
shift
root=/opt/pyparams-python/$ver-debian
if (($#)) && [[ $1 != -- ]]; then
    root=$1
    shift
fi
command=()
if (($#)); then
    [[ $1 == -- ]] || { echo "usage: bash $0 3.X [ROOT] [-- COMMAND...]" >&2; exit 2; }
    shift
    command=("$@")
fi
checkout=$(cd "$(dirname "$0")/.." && pwd)
source "$(dirname "$0")/debian_mirror.sh"
log() { echo "debian_root: $*" >&2; }
# The mirror may be a frozen snapshot whose Release files have expired.
apt_options=(-o Acquire::Check-Valid-Until=false -qq)

[[ $(id -u) -eq 0 ]] || { log "must run as root (debootstrap, chroot, mount)"; exit 1; }

# The mount points at or under $root, deepest first.
mounts_under_root() {
    awk -v root="$root" '$5 == root || index($5, root "/") == 1 { print $5 }' \
        /proc/self/mountinfo | sort -r
}

unmount_under_root() {
    local target
    for target in $(mounts_under_root); do
        umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
    done
}

make_root() {
    local mirror
    mirror=$(debian_mirror)
    [[ -n $mirror ]] || { log "no Debian mirror found in /etc/apt/sources.list{,.d}"; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v debootstrap >/dev/null; then
        timeout 600 apt-get update -qq && timeout 600 apt-get install -y -qq debootstrap >/dev/null
    fi
    log "debootstrap sid into $root ($mirror)"
    # A run killed before its clean-up may have left mounts there: /dev, /sys and the
    # checkout are the machine's own, so nothing is removed while anything is mounted.
    unmount_under_root
    if mounts_under_root | grep -q .; then
        log "still mounted under $root, not removing it: $(mounts_under_root | tr '\n' ' ')"
        exit 1
    fi
    rm -rf "$root"
    mkdir -p "$root"
    if ! timeout 900 debootstrap --variant=minbase --include=ca-certificates sid "$root" "$mirror" \
            >"$root.debootstrap.log" 2>&1; then
        tail -n 5 "$root.debootstrap.log" >&2
        log "debootstrap failed (log: $root.debootstrap.log)"
        exit 3
    fi
    copy_host_files
    if ! chroot "$root" sh -c "apt-get ${apt_options[*]} update && \
            apt-get ${apt_options[*]} install -y python$ver python$ver-venv python$ver-dev \
            g++ make git" >"$root.apt.log" 2>&1; then
        tail -n 5 "$root.apt.log" >&2
        log "python$ver cannot be installed from sid (log: $root.apt.log)"
        exit 3
    fi
}

copy_host_files() {
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    cp /etc/hosts /etc/resolv.conf "$root/etc/"
}

if ! chroot "$root" "python$ver" -c 'import ssl, venv' >/dev/null 2>&1; then
    make_root
fi
log "$(chroot "$root" "python$ver" -V 2>&1) in $root"
if ((${#command[@]} == 0)); then
    echo "$root"
    exit 0
fi

copy_host_files
unmount_under_root  # what a killed run left
trap unmount_under_root EXIT
mount_in() {  # mount_in TARGET mount-arguments...
    local target=$root$1
    shift
    mkdir -p "$target"
    mount "$@" "$target"
}
mount_in /proc -t proc proc
mount_in /sys --rbind /sys
mount_in /dev --rbind /dev
# Slaves: unmounting them at the end must not propagate to the machine's own /sys and /dev.
mount --make-rslave "$root/sys"
mount --make-rslave "$root/dev"
mount_in "$checkout" --bind "$checkout"
environment=(PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8
             PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1)
[[ -z ${PIP_NO_CACHE_DIR:-} ]] || environment+=("PIP_NO_CACHE_DIR=$PIP_NO_CACHE_DIR")
set +e
chroot "$root" /usr/bin/env -i "${environment[@]}" \
    sh -c 'cd "$0" && exec "$@"' "$checkout" "${command[@]}"
status=$?
set -e
exit $status
