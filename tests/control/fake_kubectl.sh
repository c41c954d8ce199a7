#!/bin/sh
# A stand-in for kubectl in tests/control/kubernetes_test.cpp (no cluster runs here). All state is
# in $FAKE_KUBECTL_DIR:
#   calls/N.args, calls/N.stdin   each call's argv (one per line) and standard input, N = 1, 2, ...
#   status/NAME.json              what `get KIND NAME -o json` prints; absent: NotFound
# `apply` of a TrainJob or PyTorchJob creates its status (no conditions). With FAKE_KUBECTL_RUN=1 it
# also runs the job's container command locally in the background, as rank 0, with
# /usr/local/bin/bulwark replaced by $FAKE_KUBECTL_BULWARK, and sets the condition Complete (or
# Succeeded) or Failed when it ends. FAKE_KUBECTL_FAIL=VERB makes that verb fail like a refused call.
set -u
dir=${FAKE_KUBECTL_DIR:?FAKE_KUBECTL_DIR is not set}
mkdir -p "$dir/calls" "$dir/status"
n=$(($(cat "$dir/count" 2>/dev/null || echo 0) + 1))
echo "$n" > "$dir/count"
for a in "$@"; do printf '%s\n' "$a"; done > "$dir/calls/$n.args"

[ "$1" = "-n" ] && shift 2
verb=$1
if [ "${FAKE_KUBECTL_FAIL:-}" = "$verb" ]; then
  cat > /dev/null
  echo "Error from server (Forbidden): $verb is forbidden (fake)" >&2
  exit 1
fi

case "$verb" in
  apply)
    cat > "$dir/calls/$n.stdin"
    info=$(/usr/bin/python3 - "$dir/calls/$n.stdin" <<'EOF'
import shlex, sys, yaml
doc = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d][-1]
kind, name = doc["kind"], doc["metadata"]["name"]
if kind == "TrainJob":
    line = doc["spec"]["trainer"]["args"][0]
elif kind == "PyTorchJob":
    line = doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"][0]
else:
    line = ""
print(kind, name, shlex.quote(line))
EOF
) || exit 1
    eval "set -- $info"
    kind=$1 name=$2 line=$3
    case "$kind" in
      TrainJob) ok=Complete ;;
      PyTorchJob) ok=Succeeded ;;
      *) echo "$kind/$name configured"; exit 0 ;;
    esac
    echo '{"kind": "'"$kind"'", "status": {}}' > "$dir/status/$name.json"
    if [ "${FAKE_KUBECTL_RUN:-}" = 1 ]; then
      line=$(printf '%s' "$line" | sed "s#/usr/local/bin/bulwark#${FAKE_KUBECTL_BULWARK:?}#")
      (
        if PET_NODE_RANK=0 RANK=0 sh -c "$line" > "$dir/$name.log" 2>&1; then
          echo '{"status": {"conditions": [{"type": "'"$ok"'", "status": "True"}]}}' > "$dir/status/$name.json.tmp"
        else
          echo '{"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "the container exited non-zero"}]}}' > "$dir/status/$name.json.tmp"
        fi
        [ -f "$dir/status/$name.json" ] && mv "$dir/status/$name.json.tmp" "$dir/status/$name.json"
      ) < /dev/null > /dev/null 2>&1 &
    fi
    echo "$kind/$name created"
    ;;
  get)
    name=$3
    if [ ! -f "$dir/status/$name.json" ]; then
      echo "Error from server (NotFound): $2 \"$name\" not found" >&2
      exit 1
    fi
    if [ "$5" = json ]; then cat "$dir/status/$name.json"; else echo "$2/$name"; fi
    ;;
  delete)
    rm -f "$dir/status/$3.json"
    echo "$2 \"$3\" deleted"
    ;;
  *)
    echo "fake kubectl: unknown verb $verb" >&2
    exit 2
    ;;
esac
