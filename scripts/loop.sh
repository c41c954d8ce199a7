#!/usr/bin/env bash
# The reference experiment's closed loop, end to end, on the baseline that demo.sh trained:
# serve it with `bulwark guard`, send benign then FGSM traffic (a transfer attacker with a copy of
# the served model), let the loop alarm, harden, gate, promote and watch, keep attacking the new
# model (FGSM crafted on the old one, then white-box PGD on a copy of the new one), and write the
# report. Usage: scripts/loop.sh BULWARK OUT_DIR [ATTACK] (OUT_DIR holds baseline.pt,
# baseline.detect, registry/, signing.key from demo.sh; ATTACK is the traffic that triggers the
# loop: fgsm (default) or pgd). Prints the experiment table; exits 1 if the loop fails.
set -euo pipefail
BULWARK=${1:-build/bulwark}
OUT=${2:-build/demo}
ATTACK=${3:-fgsm}
PY=/usr/bin/python3
REG="$OUT/registry"
LOOP="$OUT/loop${3:+-$ATTACK}"
rm -rf "$LOOP"
mkdir -p "$LOOP"

# Each run starts from the baseline in production, with a controller that has no history.
rm -f "$REG/guard/fashion.state.json"
"$BULWARK" registry register fashion "$OUT/baseline.pt" --calibration "$OUT/baseline.detect" \
  --key "$OUT/signing.key" --method train --dataset fashion-mnist --registry "$REG" > /dev/null
"$BULWARK" registry promote fashion@latest --key "$OUT/signing.key" --registry "$REG" > /dev/null

# Tokens: two traffic clients (infer, feedback; the workers take turns, so the attack comes from
# two identities: a traffic alarm needs evidence from trigger.min_clients = 2) and the operator.
json_field() { $PY -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
TRAFFIC_A_JSON=$("$BULWARK" --json token --id traffic-a --roles infer,feedback)
TRAFFIC_B_JSON=$("$BULWARK" --json token --id traffic-b --roles infer,feedback)
OPS_TOKEN_JSON=$("$BULWARK" --json token --id ops --roles admin,infer)
cat > "$LOOP/tokens.yaml" <<YAML
tokens:
  - id: traffic-a
    sha256: $(json_field "$TRAFFIC_A_JSON" sha256)
    roles: [infer, feedback]
  - id: traffic-b
    sha256: $(json_field "$TRAFFIC_B_JSON" sha256)
    roles: [infer, feedback]
  - id: ops
    sha256: $(json_field "$OPS_TOKEN_JSON" sha256)
    roles: [admin, infer]
YAML
TOKENS="$LOOP/traffic.tokens"
(umask 077 && printf '%s\n%s\n' "$(json_field "$TRAFFIC_A_JSON" token)" "$(json_field "$TRAFFIC_B_JSON" token)" > "$TOKENS")
OPS_TOKEN=$(json_field "$OPS_TOKEN_JSON" token)

sed -e "s#build/demo/registry#$REG#; s#build/demo/tokens.yaml#$LOOP/tokens.yaml#" \
    -e "s#build/demo/signing.key#$OUT/signing.key#; s#build/demo/events.jsonl#$LOOP/events.jsonl#" \
    -e "s#build/demo/signing.pub#$OUT/signing.pub#; s#build/demo/audit-log.pub#$OUT/audit-log.pub#" \
    -e "s#http-port: 8000#http-port: 0#; s#grpc-port: 8001#grpc-port: -1#" examples/guard.yaml > "$LOOP/guard.yaml"

"$BULWARK" --json guard --config "$LOOP/guard.yaml" > "$LOOP/guard.out" 2> "$LOOP/guard.log" &
GUARD=$!
TRAFFIC=""
cleanup() {
  [ -n "$TRAFFIC" ] && kill "$TRAFFIC" 2> /dev/null || true
  kill "$GUARD" 2> /dev/null || true
}
trap cleanup EXIT
for _ in $(seq 600); do [ -s "$LOOP/guard.out" ] && break; sleep 0.2; done
PORT=$($PY -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http_port"])' "$LOOP/guard.out")
URL="http://127.0.0.1:$PORT"
echo "guard serving on $URL (log: $LOOP/guard.log)"
guard_state() {
  curl -s -H "Authorization: Bearer $OPS_TOKEN" "$URL/v2/guard" |
    $PY -c 'import json,sys; print(json.load(sys.stdin)["controller"]["state"])'
}

# Run A: 20 s benign, then FGSM (eps 0.1) crafted on a copy of the baseline, until the loop has
# promoted and watched the new model, plus 20 s of attack on it.
START=$(date +%s)
"$BULWARK" traffic --url "$URL" --model fashion --phase benign:20 --phase "$ATTACK:1200:0.1" \
  --attacker-model "$OUT/baseline.pt" --rate 40 --attacked-share 0.5 --concurrency 4 --n 2000 \
  --token-file "$TOKENS" --out "$LOOP/traffic.jsonl" --quiet > "$LOOP/traffic-a.txt" 2>&1 &
TRAFFIC=$!
STATE=serving
while :; do
  sleep 2
  STATE=$(guard_state)
  case "$STATE" in stable | rolled-back | failed) break ;; esac
  if [ $(($(date +%s) - START)) -gt 1100 ]; then echo "the loop did not finish in time (state $STATE)"; break; fi
done
echo "loop finished in state '$STATE' after $(($(date +%s) - START)) s"
sleep 20
kill -TERM "$TRAFFIC"
wait "$TRAFFIC" || true
TRAFFIC=""

# Run B (same log, clock continued): FGSM crafted on the old model, then white-box PGD-10 on a
# copy of the model now in production.
PROD_JSON=$("$BULWARK" --json registry show fashion@production --registry "$REG")
PROD_SHA=$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["files"]["model.pt"])' "$PROD_JSON")
PROD_MODEL="$REG/objects/sha256/${PROD_SHA:0:2}/$PROD_SHA"
"$BULWARK" traffic --url "$URL" --model fashion --phase fgsm:20:0.1 --phase "pgd:30:0.1:$PROD_MODEL" \
  --attacker-model "$OUT/baseline.pt" --rate 40 --attacked-share 0.5 --concurrency 4 --n 2000 \
  --token-file "$TOKENS" --out "$LOOP/traffic.jsonl" --append --quiet > "$LOOP/traffic-b.txt" 2>&1
kill -TERM "$GUARD"
wait "$GUARD" || true

# Robustness curves of both models on the same 300 test images the traffic did not use.
for m in baseline:"$OUT/baseline.pt" hardened:"$PROD_MODEL"; do
  "$BULWARK" --json attack --model "${m#*:}" --attacks fgsm,pgd --eps 0.02,0.05,0.1,0.15,0.2 --n 300 --quiet \
    > "$LOOP/robustness-${m%%:*}.json"
done
"$BULWARK" report --events "$LOOP/events.jsonl" --traffic "$LOOP/traffic.jsonl" \
  --robustness baseline="$LOOP/robustness-baseline.json" --robustness hardened="$LOOP/robustness-hardened.json" \
  --title "Bulwark reference experiment" --out "$LOOP/report.html"
"$BULWARK" --json report --events "$LOOP/events.jsonl" --traffic "$LOOP/traffic.jsonl" --out "$LOOP/report.html" \
  --robustness baseline="$LOOP/robustness-baseline.json" --robustness hardened="$LOOP/robustness-hardened.json" \
  > "$LOOP/summary.json"

"$BULWARK" --json eval --model "$PROD_MODEL" > "$LOOP/eval-production.json"

# The experiment table: accuracy by phase and served model version.
$PY - "$LOOP/traffic.jsonl" "$LOOP/summary.json" "$LOOP/eval-production.json" "$LOOP/events.jsonl" <<'PYEOF'
import json, sys
rows, order = {}, []
for line in open(sys.argv[1]):
    s = json.loads(line)
    key = (s["phase"], s["model_version"] or "-")
    if key not in rows:
        rows[key] = dict(benign_n=0, benign_c=0, att_n=0, att_c=0, sent=0, failed=0)
        order.append(key)
    r = rows[key]
    r["benign_n"] += s["benign_n"]; r["benign_c"] += s["benign_correct"]
    r["att_n"] += s["attacked_n"]; r["att_c"] += s["attacked_correct"]
    r["sent"] += s["sent"]; r["failed"] += s["failed"]
pct = lambda c, n: "%5.1f%%" % (100.0 * c / n) if n else "   -  "
print("\n%-8s %-8s %8s %10s %10s %7s" % ("traffic", "served", "requests", "benign", "attacked", "failed"))
for k in order:
    r = rows[k]
    print("%-8s %-8s %8d %10s %10s %7d" % (k[0], "v" + k[1], r["sent"], pct(r["benign_c"], r["benign_n"]),
                                          pct(r["att_c"], r["att_n"]), r["failed"]))
summary = json.load(open(sys.argv[2]))
summary = summary.get("summary", summary)
fmt = lambda v: "-" if v is None else "%.2f s" % v
print("\ntime to alarm      %s after attack traffic started" % fmt(summary.get("time_to_alarm_s")))
print("time to promotion  %s after attack traffic started" % fmt(summary.get("time_to_promotion_s")))
print("failed requests    %d of %d" % (sum(r["failed"] for r in rows.values()), sum(r["sent"] for r in rows.values())))
prod = json.load(open(sys.argv[3]))
print("production model   clean accuracy %.2f%% on the %d test images" % (100 * prod["accuracy"], prod["n"]))
# The watch's numbers: labelled answers by the version that gave them (the last verdict's).
watch = None
for line in open(sys.argv[4]):
    e = json.loads(line)
    if e.get("kind") == "guard.state" and isinstance(e.get("details", {}).get("watch"), dict):
        watch = e["details"]["watch"]
if watch:
    acc = lambda c: "-" if c.get("accuracy") is None else "%5.1f%%" % (100 * c["accuracy"])
    print("\nwatch (feedback accuracy of labelled answers, by the version that answered)")
    for name, key in (("replaced version, before the alarm", "replaced_before_alarm"),
                      ("replaced version, under the attack", "replaced_under_attack"),
                      ("candidate, since promotion", "candidate")):
        c = watch[key]
        print("  %-36s %s on %5d labels from %d labeller(s)" % (name, acc(c), c["labels"], c["labellers"]))
    print("  compared with                        %s" % watch["compared_with"].replace("_", " "))
PYEOF
"$BULWARK" registry verify fashion@production --registry "$REG"
"$BULWARK" audit verify --registry "$REG"
echo "report: $LOOP/report.html"
[ "$STATE" = stable ]
