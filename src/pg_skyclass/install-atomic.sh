#!/bin/sh
# install-atomic.sh [install options...] SRC DEST
# Install a shared library by writing a temporary file next to DEST and renaming
# it over DEST. `install` rewrites an existing file in place, and a backend that
# has the old skyclass.so mapped crashes when its pages change underneath it;
# after a rename such a backend keeps the old inode and new backends get the new one.
set -eu
if [ "$#" -lt 2 ]; then
    echo "usage: install-atomic.sh [install options...] SRC DEST" >&2
    exit 64
fi
n=$#
i=0
dest=""
for arg; do
    i=$((i + 1))
    if [ "$i" -eq 1 ]; then set --; fi
    if [ "$i" -lt "$n" ]; then set -- "$@" "$arg"; else dest=$arg; fi
done
tmp="$dest.tmp.$$"
trap 'rm -f "$tmp"' EXIT
/usr/bin/install -c "$@" "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT
