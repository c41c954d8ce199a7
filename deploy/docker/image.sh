#!/bin/bash
# Builds and tests Bulwark's container image without needing a Docker daemon (docs/kubernetes.md).
#   image.sh base          a Debian 12 base, localhost/debian:12, made by debootstrap (minbase)
#   image.sh build         the image IMAGE from deploy/docker/Dockerfile, with BUILDER or the first
#                          that works: docker (with a daemon), podman, buildah
#   image.sh test BULWARK  the image's checks (deploy/docker/image-test.sh), BULWARK the host binary
#   image.sh push DEST     push it, and record the digest DEST holds (IMAGE_DIR/pushed-digest)
# Environment (the Makefile exports it): IMAGE, DEBIAN (the base; empty: localhost/debian:12 when
# `base` made it, else docker.io/library/debian:12-slim pulled, else `base` is run first, saying so),
# BUILDER, IMAGE_DIR (where the build's record goes: image id, digest, size, base, seconds).
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:?IMAGE names the image to build, e.g. localhost/bulwark:0.1.0}
DEBIAN=${DEBIAN:-}   # empty: localhost/debian:12 if made, else debian:12-slim pulled, else made (base)
LOCAL_BASE=localhost/debian:12
PULLED_BASE=docker.io/library/debian:12-slim
IMAGE_DIR=${IMAGE_DIR:-build/image}
mkdir -p "$IMAGE_DIR"

die() { echo "image.sh: $*" >&2; exit 1; }

# The builder: docker only with a daemon that answers; podman and buildah build without one
# (chroot isolation: no cgroups, no user namespaces needed).
pick_builder() {
  if [ -n "${BUILDER:-}" ]; then
    command -v "$BUILDER" >/dev/null || die "BUILDER=$BUILDER is not installed"
    echo "$BUILDER"; return
  fi
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; return; fi
  if command -v podman >/dev/null; then echo podman; return; fi
  if command -v buildah >/dev/null; then echo buildah; return; fi
  die "no image builder: install docker (with its daemon), podman or buildah (make image installs buildah and podman)"
}

base() {
  command -v debootstrap >/dev/null || die "debootstrap is not installed (make base-image installs it)"
  root=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-base.XXXXXX")
  trap 'rm -rf "$root"' EXIT  # root is global: the trap runs after base() returns
  echo "image.sh: debootstrap --variant=minbase bookworm (Debian 12) into $root"
  debootstrap --variant=minbase bookworm "$root/rootfs" http://deb.debian.org/debian >"$root/log" 2>&1 \
    || { cp "$root/log" "$IMAGE_DIR/debootstrap.log"; tail -20 "$root/log" >&2; die "debootstrap failed (the whole log: $IMAGE_DIR/debootstrap.log)"; }
  # The sources a debian:12 image has: the release, its updates and the security archive.
  rm -f "$root/rootfs/etc/apt/sources.list"
  cat >"$root/rootfs/etc/apt/sources.list.d/debian.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  rm -rf "$root/rootfs/var/cache/apt/archives/"*.deb "$root/rootfs/var/lib/apt/lists/"*
  local builder
  builder=$(pick_builder)
  case "$builder" in
    docker|podman) tar --numeric-owner -C "$root/rootfs" -c . | "$builder" import --change 'CMD ["bash"]' - localhost/debian:12 ;;
    buildah)
      # buildah has no import: a scratch container with the tree copied in, committed.
      local ctr
      ctr=$(buildah from scratch)
      buildah copy "$ctr" "$root/rootfs" / >/dev/null
      buildah config --cmd bash "$ctr"
      buildah commit --rm "$ctr" localhost/debian:12 ;;
  esac
  echo "image.sh: localhost/debian:12 made; build with: make image DEBIAN=localhost/debian:12"
}

# The base image: DEBIAN as given; else one made here (localhost/debian:12); else debian:12-slim if
# it can be pulled; else, said so, one made now with debootstrap.
pick_base() {
  local builder=$1
  if [ -n "$DEBIAN" ]; then echo "$DEBIAN"; return; fi
  local have
  case "$builder" in
    buildah) have=(buildah inspect --type image "$LOCAL_BASE") ;;
    *) have=("$builder" image inspect "$LOCAL_BASE") ;;
  esac
  if "${have[@]}" >/dev/null 2>&1; then echo "$LOCAL_BASE"; return; fi
  if "$builder" pull "$PULLED_BASE" >&2; then echo "$PULLED_BASE"; return; fi
  echo "image.sh: $PULLED_BASE cannot be pulled here: making $LOCAL_BASE with debootstrap (make base-image)" >&2
  base >&2
  echo "$LOCAL_BASE"
}

build() {
  local builder start seconds
  builder=$(pick_builder)
  start=$(date +%s)
  DEBIAN=$(pick_base "$builder")
  echo "image.sh: building $IMAGE from $DEBIAN with $builder"
  case "$builder" in
    docker)
      DOCKER_BUILDKIT=1 docker build -f deploy/docker/Dockerfile --build-arg DEBIAN="$DEBIAN" \
        --iidfile "$IMAGE_DIR/id" -t "$IMAGE" . ;;
    podman|buildah)
      "$builder" build --isolation chroot --layers --format docker --ignorefile deploy/docker/Dockerfile.dockerignore \
        -f deploy/docker/Dockerfile --build-arg DEBIAN="$DEBIAN" --iidfile "$IMAGE_DIR/id" -t "$IMAGE" . ;;
  esac
  seconds=$(( $(date +%s) - start ))
  echo "$builder" > "$IMAGE_DIR/builder"
  echo "$seconds" > "$IMAGE_DIR/build-seconds"
  echo "$DEBIAN" > "$IMAGE_DIR/base"
  inspect "$builder"
  echo "image.sh: $IMAGE built in ${seconds} s by $builder: $(cat "$IMAGE_DIR/size") bytes, local digest $(cat "$IMAGE_DIR/digest" 2>/dev/null || echo 'none before a push')"
}

# The record of the image just built: its size, and the local manifest digest where the builder
# has one (podman, buildah; docker has none before a push). What a cluster pulls is the digest the
# registry reports after `image.sh push` (pushed-digest): a push may recompress the layers.
inspect() {
  local builder=$1
  rm -f "$IMAGE_DIR/digest"
  case "$builder" in
    docker)
      docker image inspect --format '{{.Size}}' "$IMAGE" > "$IMAGE_DIR/size" ;;
    podman)
      podman image inspect --format '{{.Digest}}' "$IMAGE" > "$IMAGE_DIR/digest"
      podman image inspect --format '{{.Size}}' "$IMAGE" > "$IMAGE_DIR/size" ;;
    buildah)
      buildah inspect --type image --format '{{.FromImageDigest}}' "$IMAGE" > "$IMAGE_DIR/digest"
      podman image inspect --format '{{.Size}}' "$IMAGE" > "$IMAGE_DIR/size" 2>/dev/null \
        || buildah images --format '{{.Size}}' "$IMAGE" > "$IMAGE_DIR/size" ;;
  esac
  if [ -f "$IMAGE_DIR/digest" ]; then
    grep -q '^sha256:[0-9a-f]\{64\}$' "$IMAGE_DIR/digest" || die "no digest for $IMAGE: $(cat "$IMAGE_DIR/digest")"
  fi
}

# Pushes IMAGE to DEST (registry/repo:tag, or any transport the builder knows) and writes the digest
# the destination holds to IMAGE_DIR/pushed-digest: the one to pin with --image-digest.
push() {
  local dest=${1:?usage: image.sh push DEST (e.g. registry.example.com/ml/bulwark:0.1.0)} builder
  builder=$(cat "$IMAGE_DIR/builder" 2>/dev/null || pick_builder)
  case "$builder" in
    docker)
      docker tag "$IMAGE" "$dest"
      docker push "$dest"
      docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$dest" \
        | sed -n 's/.*@\(sha256:[0-9a-f]\{64\}\)$/\1/p' | head -n1 > "$IMAGE_DIR/pushed-digest" ;;
    podman|buildah)
      "$builder" push --digestfile "$IMAGE_DIR/pushed-digest" "$IMAGE" "$dest" ;;
  esac
  grep -q '^sha256:[0-9a-f]\{64\}$' "$IMAGE_DIR/pushed-digest" || die "the push to $dest reported no digest"
  echo "image.sh: pushed $IMAGE to $dest, digest $(cat "$IMAGE_DIR/pushed-digest") (IMAGE_DIR/pushed-digest)"
}

case "${1:-}" in
  base) base ;;
  build) build ;;
  test) shift; exec deploy/docker/image-test.sh "$@" ;;
  push) shift; push "$@" ;;
  *) die "usage: image.sh base | build | test BULWARK | push DEST" ;;
esac
