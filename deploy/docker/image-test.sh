#!/bin/bash
# make image-test: the image `make image` built, checked from inside (docs/kubernetes.md).
#   image-test.sh HOST_BULWARK
# 1. the runtime's packages: no compiler, no chromium, no -dev package (listed in IMAGE_DIR/packages.txt);
# 2. `bulwark --version` in the image;
# 3. the image's own ENTRYPOINT and CMD serve a signed registry model, with the registry, the trust
#    key, the audit log's key and the tokens mounted read-only (the CMD reads /etc/bulwark/serve.yaml);
# 4. from the host, a V2 REST and a gRPC request (urllib and grpcio) answer with the label the host
#    binary gives for the same input, served from the same registry;
# 5. the image's HEALTHCHECK command, run in the image, passes;
# 6. the server runs as the image's non-root uid;
# 7. SIGTERM: the server exits 0.
# Runs with docker or podman where `run` works, else `buildah run --isolation chroot` (host network).
set -euo pipefail
cd "$(dirname "$0")/../.."
HOST_BULWARK=$(realpath "${1:?usage: image-test.sh HOST_BULWARK}")
IMAGE=${IMAGE:?IMAGE names the image (make image-test sets it)}
IMAGE_DIR=${IMAGE_DIR:-build/image}
PY=/usr/bin/python3
HTTP_PORT=8080   # the image's CMD and HEALTHCHECK use these
GRPC_PORT=8081
MODEL=fashion
UID_EXPECTED=10001
START=$(date +%s)

say() { echo "image-test: $*"; }
fail() { echo "image-test: FAIL: $*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-image-test.XXXXXX")
server_pid=""
runner_pid=""
host_pid=""
ctr=""
NAME=bulwark-image-test-$$   # the serving container, for docker/podman
cleanup() {
  [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
  [ -n "$host_pid" ] && kill -KILL "$host_pid" 2>/dev/null || true
  case "${runner:-}" in docker|podman) "$runner" rm -f "$NAME" >/dev/null 2>&1 || true ;; esac
  [ -n "$runner_pid" ] && kill -KILL "$runner_pid" 2>/dev/null || true
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- how to run a command in the image ---------------------------------------------------------
# in_image [-v HOST:CTR:ro]... -- CMD...: CMD in a fresh container of IMAGE, host network, the
# image's user; entry_image [-v ...]...: the image's own ENTRYPOINT + CMD.
runner=""
for candidate in docker podman; do
  command -v "$candidate" >/dev/null || continue
  if "$candidate" run --rm --network host --entrypoint /usr/local/bin/bulwark "$IMAGE" --version >/dev/null 2>"$work/run.err"; then
    runner=$candidate; break
  fi
  say "$candidate run does not work here ($(head -c 200 "$work/run.err" | tr '\n' ' ')); trying the next"
done
if [ -z "$runner" ]; then
  command -v buildah >/dev/null || fail "no way to run the image: docker/podman run failed and buildah is not installed"
  runner=buildah
  ctr=$(buildah from --pull=never "$IMAGE")
fi
say "running the image with $runner"

config() {  # one key of the image's (Docker-format) config, as JSON: Entrypoint, Cmd, Healthcheck, User
  case "$runner" in
    # podman keeps Healthcheck beside Config, docker inside it.
    docker|podman) "$runner" image inspect "$IMAGE" | $PY -c 'import json,sys; d = json.load(sys.stdin)[0]; v = (d.get("Config") or {}).get(sys.argv[1]); print(json.dumps(v if v is not None else d.get(sys.argv[1])))' "$1" ;;
    buildah) buildah inspect --type image "$IMAGE" | $PY -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["Docker"]["config"].get(sys.argv[1])))' "$1" ;;
  esac
}

in_image() {
  local mounts=()
  while [ "$1" != "--" ]; do mounts+=("$1"); shift; done
  shift
  case "$runner" in
    docker|podman) "$runner" run --rm --network host "${mounts[@]}" --entrypoint "$1" "$IMAGE" "${@:2}" ;;
    buildah) buildah run --isolation chroot "${mounts[@]}" "$ctr" -- "$@" ;;
  esac
}

entry_image() {
  local entry cmd
  entry=$(config Entrypoint)
  cmd=$(config Cmd)
  local argv
  mapfile -t argv < <($PY -c 'import json,sys; [print(a) for a in (json.loads(sys.argv[1]) or []) + (json.loads(sys.argv[2]) or [])]' "$entry" "$cmd")
  [ "${#argv[@]}" -gt 0 ] || fail "the image has no ENTRYPOINT/CMD"
  case "$runner" in
    docker|podman) "$runner" run --rm --name "$NAME" --network host "$@" "$IMAGE" ;;
    buildah) buildah run --isolation chroot "$@" "$ctr" -- "${argv[@]}" ;;
  esac
}

# --- 1. packages -------------------------------------------------------------------------------
in_image -- dpkg-query -W -f '${Package} ${Version}\n' > "$IMAGE_DIR/packages.txt"
npkg=$(wc -l < "$IMAGE_DIR/packages.txt")
forbidden=$(awk '{print $1}' "$IMAGE_DIR/packages.txt" \
  | grep -E -- '-dev$|^(gcc|g\+\+|cpp|clang|llvm|binutils|cmake|make|ccache|chromium|python3-torch)(-[0-9.]+)?$|^(binutils|chromium|protobuf-compiler|libclang|clang-tools)-' || true)
[ -z "$forbidden" ] || fail "the runtime image holds build or test packages: $(echo $forbidden)"
tools=$(in_image -- sh -c 'for t in cc gcc g++ c++ clang ld as cmake make chromium python3; do command -v $t; done; true')
[ -z "$tools" ] || fail "the runtime image has build tools on PATH: $(echo $tools)"
say "ok 1: $npkg packages (IMAGE_DIR/packages.txt), no compiler, no chromium, no -dev package"

# --- 2. the binary -----------------------------------------------------------------------------
version=$(in_image -- bulwark --version)
echo "$version" | grep -q "^bulwark $("$HOST_BULWARK" --version | head -n1 | awk '{print $2}')\$" \
  || fail "bulwark --version in the image: $version (host: $("$HOST_BULWARK" --version | head -n1))"
echo "$version" | grep -q "OpenBLAS" || fail "the image's BLAS is not OpenBLAS: $version"
say "ok 2: $(echo "$version" | tr '\n' ';')"

uid=$(in_image -- id -u)
[ "$uid" = "$UID_EXPECTED" ] || fail "the image runs as uid $uid, not $UID_EXPECTED"

# --- 3. a signed registry, served by the image's own command -----------------------------------
say "making a signed registry with a small model (host binary)"
B=$HOST_BULWARK
m="$work/models"
mkdir -p "$m"
$B registry init --registry "$m/registry" >/dev/null
$B keys gen --out "$work/signing" >/dev/null
$B keys trust "$work/signing.pub" --registry "$m/registry" >/dev/null
cp "$work/signing.pub" "$m/trust.pub"
cp "$m/registry/log.pub" "$m/log.pub"
$B --seed 0 train --model mlp --data fashion-mnist --epochs 1 --limit 6000 --test-limit 1000 --quiet \
  --out "$work/mlp.pt" >/dev/null
$B registry register "$MODEL" "$work/mlp.pt" --key "$work/signing.key" --method train \
  --dataset fashion-mnist --registry "$m/registry" >/dev/null
$B registry promote "$MODEL@latest" --key "$work/signing.key" --registry "$m/registry" >/dev/null
token_json=$($B --json token --id image-test --roles infer)
token=$(echo "$token_json" | $PY -c 'import json,sys; print(json.load(sys.stdin)["token"])')
echo "$token_json" | $PY -c '
import json, sys
t = json.load(sys.stdin)
print("tokens:\n  - id: %s\n    sha256: %s\n    roles: [infer]" % (t["id"], t["sha256"]))' > "$m/tokens.yaml"
cat > "$m/serve.yaml" <<YAML
registry: /models/registry
trust-keys: /models/trust.pub
log-key: /models/log.pub
tokens: /models/tokens.yaml
model:
  $MODEL: "registry:$MODEL@production"
access-log: "off"
YAML
chmod -R a+rX "$work"   # the image's user reads the mount; nothing in it is writable by it
chmod 0711 "$work"
rm -f "$work/signing.key.tmp"

for port in $HTTP_PORT $GRPC_PORT; do
  ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || fail "port $port is in use on this machine; the image's CMD listens there"
done
entry_image -v "$m:/models:ro" -v "$m/serve.yaml:/etc/bulwark/serve.yaml:ro" > "$work/serve.log" 2>&1 &
runner_pid=$!
deadline=$(( $(date +%s) + 180 ))
until curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/v2/health/ready" 2>/dev/null; do
  kill -0 "$runner_pid" 2>/dev/null || { tail -20 "$work/serve.log" >&2; fail "the image's server exited before it was ready"; }
  [ "$(date +%s)" -lt "$deadline" ] || { tail -20 "$work/serve.log" >&2; fail "not ready within 180 s"; }
  sleep 0.5
done
# The server process itself (the runner's child): the one listening on the REST port.
server_pid=$(ss -ltnpH "sport = :$HTTP_PORT" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n1)
[ -n "$server_pid" ] || fail "no process listens on :$HTTP_PORT"
say "ok 3: the image's CMD serves $MODEL from the read-only registry (pid $server_pid)"

# --- 4. the same label as the host binary ------------------------------------------------------
protoc -I src/serve/proto --python_out="$work" src/serve/proto/grpc_predict_v2.proto
$PY tests/image/v2_client.py --url "http://127.0.0.1:$HTTP_PORT" --grpc "127.0.0.1:$GRPC_PORT" \
  --model "$MODEL" --token "$token" --index 0 --pb-dir "$work" > "$work/image.jsonl"
# The host binary, the same registry and request, on ports of its own.
$B serve --model "$MODEL=registry:$MODEL@production" --access-log off --registry "$m/registry" --trust-keys "$m/trust.pub" --log-key "$m/log.pub" \
  --tokens "$m/tokens.yaml" --http-port 18080 --grpc-port 18081 > "$work/host-serve.log" 2>&1 &
host_pid=$!
deadline=$(( $(date +%s) + 120 ))
until curl -fsS -o /dev/null "http://127.0.0.1:18080/v2/health/ready" 2>/dev/null; do
  kill -0 "$host_pid" 2>/dev/null || { tail -20 "$work/host-serve.log" >&2; fail "the host server exited"; }
  [ "$(date +%s)" -lt "$deadline" ] || fail "the host server was not ready within 120 s"
  sleep 0.5
done
$PY tests/image/v2_client.py --url "http://127.0.0.1:18080" --grpc "127.0.0.1:18081" \
  --model "$MODEL" --token "$token" --index 0 --pb-dir "$work" > "$work/host.jsonl"
kill -TERM "$host_pid"; wait "$host_pid" || true
labels=$($PY - "$work/image.jsonl" "$work/host.jsonl" <<'PYEOF'
import json, sys
image = [json.loads(l) for l in open(sys.argv[1])]
host = [json.loads(l) for l in open(sys.argv[2])]
assert [r["protocol"] for r in image] == ["rest", "grpc"], image
for i, h in zip(image, host):
    if i["label"] != h["label"]:
        sys.exit(f"{i['protocol']}: the image answers {i['label']!r}, the host binary {h['label']!r}")
print(", ".join(f"{r['protocol']} {r['label']!r}" for r in image))
PYEOF
) || fail "$labels"
say "ok 4: V2 from the host: $labels, as the host binary answers"

# --- 5. the HEALTHCHECK, as the runtime would run it -------------------------------------------
hc=$(config Healthcheck)
mapfile -t hc_argv < <($PY -c 'import json,sys; t = json.loads(sys.argv[1])["Test"]; assert t[0] == "CMD", t; [print(a) for a in t[1:]]' "$hc")
[ "${#hc_argv[@]}" -gt 0 ] || fail "the image has no HEALTHCHECK (built in OCI format? image.sh builds --format docker)"
in_image -- "${hc_argv[@]}" || fail "the HEALTHCHECK (${hc_argv[*]}) failed in the image"
say "ok 5: HEALTHCHECK ${hc_argv[*]} passes"

# --- 6. non-root -------------------------------------------------------------------------------
server_uid=$(awk '/^Uid:/ {print $2}' "/proc/$server_pid/status")
[ "$server_uid" != 0 ] && [ "$server_uid" = "$UID_EXPECTED" ] || fail "the server runs as uid $server_uid"
say "ok 6: the server runs as uid $server_uid"

# --- 7. SIGTERM --------------------------------------------------------------------------------
# As a runtime stops a container: docker/podman stop sends SIGTERM to its process 1 (the server).
case "$runner" in
  docker|podman) "$runner" stop --time 40 "$NAME" >/dev/null ;;
  buildah) kill -TERM "$server_pid" ;;
esac
deadline=$(( $(date +%s) + 40 ))
while kill -0 "$server_pid" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the server did not exit within 40 s of SIGTERM"
  sleep 0.2
done
server_pid=""
rc=0; wait "$runner_pid" || rc=$?
[ "$rc" = 0 ] || { tail -20 "$work/serve.log" >&2; fail "after SIGTERM the container exited $rc"; }
say "ok 7: SIGTERM: exit 0"
seconds=$(( $(date +%s) - START ))
echo "$seconds" > "$IMAGE_DIR/test-seconds"
say "PASS ($seconds s; image $(cat "$IMAGE_DIR/digest" 2>/dev/null || echo '?'), $(cat "$IMAGE_DIR/size" 2>/dev/null || echo '?') bytes)"
