# Sourced by tools/build_cpython.sh and tools/debian_root.sh.
# debian_mirror: prints the Debian mirror the machine's apt already uses (only that host
# is reachable from these machines); prints nothing when the sources name none.
debian_mirror() {
    local sources
    shopt -s nullglob
    sources=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    shopt -u nullglob
    grep -hv '^[[:space:]]*#' "${sources[@]}" 2>/dev/null \
        | grep -oE '(https?|ftp)://[^][:space:]]+' | grep -E '/debian/?$' | head -n1 || true
}
