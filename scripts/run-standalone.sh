#!/usr/bin/env bash
# `make run`: Envoy with the hookmesh filter on 127.0.0.1:10000 from a static example config,
# in front of a stand-in app, then prints ready-to-paste requests. Ctrl-C stops everything.
set -euo pipefail
ENVOY=$1 WASM=$2 HOOKMESH=$3
LISTEN=${HOOKMESH_LISTEN_PORT:-10000}
APP=${HOOKMESH_APP_PORT:-10001}
ADMIN=${HOOKMESH_ADMIN_PORT:-9901}
CONFIG=${HOOKMESH_FILTER_CONFIG:-examples/demo-filter-config.json}
RUN=.run
mkdir -p "$RUN"

# The filter config goes into a YAML block scalar: compact JSON keeps it on one line.
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' "$CONFIG" > "$RUN/filter.json"
python3 scripts/render-envoy.py envoy/demo-app.yaml.in "$RUN/demo-app.part" UPSTREAM_PORT="$APP"
python3 scripts/render-envoy.py envoy/standalone.yaml.in "$RUN/envoy.yaml" \
  ADMIN_PORT="$ADMIN" LISTEN_PORT="$LISTEN" UPSTREAM_PORT="$APP" TRUSTED_HOPS=0 WASM="$WASM" \
  FILTER_CONFIG=@"$RUN/filter.json" EXTRA_LISTENERS=@"$RUN/demo-app.part"

for port in "$LISTEN" "$APP" "$ADMIN"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: 127.0.0.1:$port is in use (set HOOKMESH_LISTEN_PORT, HOOKMESH_APP_PORT, HOOKMESH_ADMIN_PORT)" >&2
    exit 1
  fi
done

"$ENVOY" -c "$RUN/envoy.yaml" --concurrency 2 --disable-hot-restart -l warning 2> "$RUN/envoy.log" &
envoy_pid=$!
trap 'kill $envoy_pid 2>/dev/null; wait $envoy_pid 2>/dev/null; echo; echo "stopped"' EXIT
trap 'exit 0' INT TERM
for _ in $(seq 1 150); do
  curl -fs "http://127.0.0.1:$ADMIN/ready" >/dev/null 2>&1 && break
  kill -0 $envoy_pid 2>/dev/null || { cat "$RUN/envoy.log" >&2; exit 1; }
  sleep 0.1
done

body='{"type":"demo.ping","data":{"hello":"world"}}'
printf '%s' "$body" > "$RUN/body.json"
swh_headers=$("$HOOKMESH" sig sign --scheme standard_webhooks --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw --body-file "$RUN/body.json" --id "msg_demo_$(date +%s)")
gh_headers=$("$HOOKMESH" sig sign --scheme github --secret demo-github-secret --body-file "$RUN/body.json")
curl_for() { # path, headers, body
  local args="curl -i http://127.0.0.1:$LISTEN$1 -H 'content-type: application/json'"
  while IFS= read -r h; do args+=" -H '$h'"; done <<< "$2"
  printf "%s --data-binary '%s'" "$args" "$3"
}
swh_ok=$(curl_for /webhooks/demo "$swh_headers" "$body")
swh_bad=$(curl_for /webhooks/demo "$swh_headers" "${body/world/w0rld}")
gh_ok=$(curl_for /webhooks/github "$gh_headers" "$body")
status() { bash -c "${1/curl -i/curl -s -o /dev/null -w %\{http_code\}}"; }

cat <<TXT

hookmesh edge gateway is running
  webhooks:  http://127.0.0.1:$LISTEN   (Envoy $("$ENVOY" --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1) + hookmesh filter)
  app:       http://127.0.0.1:$APP   (stand-in upstream)
  admin:     http://127.0.0.1:$ADMIN   (metrics: curl -s http://127.0.0.1:$ADMIN/stats | grep hookmesh)
  config:    $CONFIG

Self-check: signed → $(status "$swh_ok"), tampered → $(status "$swh_bad"), GitHub → $(status "$gh_ok")

A signed Standard Webhooks request (passes; the signature is valid for 5 minutes):
$swh_ok

The same request with one byte of the body changed (refused with 401):
$swh_bad

A signed GitHub request (passes; GitHub signatures carry no timestamp):
$gh_ok

Sign your own: $HOOKMESH sig sign --scheme standard_webhooks --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw --body-file FILE
Ctrl-C stops Envoy.
TXT
wait $envoy_pid
