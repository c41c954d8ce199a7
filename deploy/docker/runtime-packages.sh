#!/bin/sh
# The Debian packages that hold the shared libraries BINARY names itself (readelf's NEEDED, found
# where ldd resolves them, looked up with dpkg -S), one per line, sorted. The image's runtime stage
# installs exactly these (apt brings what they depend on), so what the binary links is what the
# image has, and nothing it was built with.
#   deploy/docker/runtime-packages.sh build/bulwark > build/runtime-packages
set -eu
bin=${1:?usage: runtime-packages.sh BINARY}
resolved=$(ldd "$bin")
if echo "$resolved" | grep -q "not found"; then
  echo "runtime-packages: $bin links libraries this machine lacks:" >&2
  echo "$resolved" | grep "not found" >&2
  exit 1
fi
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
[ -n "$needed" ] || { echo "runtime-packages: $bin names no shared library" >&2; exit 1; }
packages=""
for soname in $needed; do
  lib=$(echo "$resolved" | awk -v n="$soname" '$1 == n && $2 == "=>" { print $3; exit }')
  [ -n "$lib" ] || { echo "runtime-packages: ldd does not resolve $soname" >&2; exit 1; }
  real=$(realpath "$lib")
  found=""
  # Debian 12 merges /lib into /usr/lib; dpkg knows each file under the name its package ships.
  for path in "$lib" "$real" "/usr$real" "${real#/usr}"; do
    if pkg=$(dpkg-query -S "$path" 2>/dev/null | grep -v '^diversion' | head -n1 | cut -d: -f1) && [ -n "$pkg" ]; then
      found=$pkg
      break
    fi
  done
  [ -n "$found" ] || { echo "runtime-packages: no Debian package holds $soname ($real)" >&2; exit 1; }
  packages="$packages $found"
done
printf '%s\n' $packages | sort -u
