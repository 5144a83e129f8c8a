#!/usr/bin/env bash
# `make run`: the control plane on SQLite in ./data and one Envoy sidecar on 127.0.0.1:10000 that
# gets the hookmesh filter's configuration from it over ADS, in front of a stand-in app. Prints
# the admin key and ready-to-paste commands. Ctrl-C stops everything it started.
set -euo pipefail
ENVOY=$1 WASM=$2 HOOKMESH=$3
DATA=${HOOKMESH_DATA_DIR:-./data}
API=${HOOKMESH_API_PORT:-8080}
XDS=${HOOKMESH_XDS_PORT:-18000}
LISTEN=${HOOKMESH_LISTEN_PORT:-10000}
APP=${HOOKMESH_APP_PORT:-10001}
ADMIN=${HOOKMESH_ADMIN_PORT:-9901}
RUN=.run
mkdir -p "$RUN" "$DATA"

for port in "$API" "$XDS" "$LISTEN" "$APP" "$ADMIN"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: 127.0.0.1:$port is in use (set HOOKMESH_API_PORT, HOOKMESH_XDS_PORT, HOOKMESH_LISTEN_PORT, HOOKMESH_APP_PORT, HOOKMESH_ADMIN_PORT)" >&2
    exit 1
  fi
done

# Deliveries to loopback are allowed here only, so the demo can send webhooks to the stand-in app;
# by default hookmesh refuses internal destinations.
# The admin key is kept (mode 0600) so every `make run` can show it.
if [ ! -s "$DATA/admin.key" ]; then
  (umask 077; python3 -c 'import secrets; print("hm_" + secrets.token_urlsafe(32))' > "$DATA/admin.key")
fi
KEY=$(cat "$DATA/admin.key")

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; echo; echo "stopped"; }
trap cleanup EXIT
trap 'exit 0' INT TERM

HOOKMESH_ADMIN_KEY=$KEY "$HOOKMESH" serve --data-dir "$DATA" --listen "127.0.0.1:$API" --xds-listen "127.0.0.1:$XDS" \
  --ingest-listen "127.0.0.1:${HOOKMESH_INGEST_PORT:-8081}" \
  --wasm-module "$WASM" --allow-destination-cidrs 127.0.0.0/8 > "$RUN/hookmesh.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$API/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$API/readyz" >/dev/null || { cat "$RUN/hookmesh.log" >&2; exit 1; }

python3 scripts/render-envoy.py envoy/demo-app.yaml.in "$RUN/demo-app.part" UPSTREAM_PORT="$APP"
python3 scripts/render-envoy.py envoy/sidecar.yaml.in "$RUN/sidecar.yaml" \
  NODE_ID="make-run-sidecar" NODE_CLUSTER="hookmesh-demo" NODE_TENANT="${HOOKMESH_NODE_TENANT:-}" ADMIN_PORT="$ADMIN" LISTEN_ADDRESS=127.0.0.1 \
  LISTEN_PORT="$LISTEN" TRUSTED_HOPS=0 APP_PORT="$APP" XDS_HOST=127.0.0.1 XDS_PORT="$XDS" \
  INGEST_CLUSTER_TYPE=STRICT_DNS \
  INGEST_ADDRESS="{socket_address: {address: 127.0.0.1, port_value: ${HOOKMESH_INGEST_PORT:-8081}}}"
# The stand-in app is one more listener in the same Envoy.
python3 - "$RUN/sidecar.yaml" "$RUN/demo-app.part" <<'PY'
import sys
path, part = sys.argv[1], open(sys.argv[2]).read()
text = open(path).read().replace("  clusters:\n", part + "\n  clusters:\n", 1)
open(path, "w").write(text)
PY
"$ENVOY" -c "$RUN/sidecar.yaml" --concurrency 2 --disable-hot-restart -l warning 2> "$RUN/envoy.log" &
pids+=($!)
for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$ADMIN/ready" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$ADMIN/ready" >/dev/null || { cat "$RUN/envoy.log" >&2; exit 1; }

api() { curl -s "http://127.0.0.1:$API$1" -H "Authorization: Bearer $KEY" -H 'content-type: application/json' "${@:2}"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# A demo tenant and source, created through the API once.
TENANT=$(api "/v1/tenants?limit=1000" | json '"".join(t["id"] for t in d["data"] if t["name"] == "demo")')
[ -n "$TENANT" ] || TENANT=$(api /v1/tenants -d '{"name":"demo"}' | json 'd["id"]')
if ! api "/v1/sources?limit=1000" | json '"yes" if any(s["spec"]["name"] == "github-demo" for s in d["data"]) else ""' | grep -q yes; then
  api /v1/sources -d '{"tenant_id":"'"$TENANT"'","spec":{"name":"github-demo","match":{"path_prefix":"/webhooks/github"},"verify":{"scheme":"github","secrets":["demo-github-secret"]}}}' > /dev/null
fi

body='{"action":"opened","number":1}'
printf '%s' "$body" > "$RUN/body.json"
gh=$("$HOOKMESH" sig sign --scheme github --secret demo-github-secret --body-file "$RUN/body.json")
signed="curl -i http://127.0.0.1:$LISTEN/webhooks/github -H '$gh' --data-binary '$body'"
forged="curl -i http://127.0.0.1:$LISTEN/webhooks/github -H '$gh' --data-binary '${body/opened/closed}'"
status() { bash -c "${1/curl -i/curl -s -o /dev/null -w %\{http_code\}}"; }
for _ in $(seq 1 50); do [ "$(status "$signed")" = 200 ] && break; sleep 0.1; done

cat <<TXT

hookmesh gateway is running
  control plane:  http://127.0.0.1:$API   (docs: http://127.0.0.1:$API/docs; SQLite in $DATA)
  xDS (ADS):      127.0.0.1:$XDS
  webhooks:       http://127.0.0.1:$LISTEN   (Envoy $("$ENVOY" --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1) sidecar, filter config pushed over ECDS)
  app:            http://127.0.0.1:$APP   (stand-in upstream)
  admin API key:  $KEY

Self-check through Envoy: signed → $(status "$signed"), tampered → $(status "$forged")

Create a source (a Stripe one; Envoy enforces it within a fraction of a second):
curl -s http://127.0.0.1:$API/v1/sources -H 'Authorization: Bearer $KEY' -H 'content-type: application/json' -d '{"tenant_id":"$TENANT","spec":{"name":"stripe-demo","match":{"path_prefix":"/webhooks/stripe"},"verify":{"scheme":"stripe","secrets":["whsec_demo_stripe_secret"]}}}'

A signed GitHub webhook (passes):
$signed

The same with the body changed (refused with 401):
$forged

Send a webhook (an endpoint on the stand-in app, then an event; loopback is allowed in this demo only):
curl -s http://127.0.0.1:$API/v1/endpoints -H 'Authorization: Bearer $KEY' -H 'content-type: application/json' -d '{"tenant_id":"$TENANT","url":"http://127.0.0.1:$APP/outbound","event_types":["invoice.*"]}'
curl -s http://127.0.0.1:$API/v1/events -H 'Authorization: Bearer $KEY' -H 'content-type: application/json' -d '{"tenant_id":"$TENANT","event_type":"invoice.paid","payload":{"id":"in_1"}}'
curl -s http://127.0.0.1:$API/v1/deliveries -H 'Authorization: Bearer $KEY'

Receive into the hub (stored, deduplicated, transformed, routed to the endpoint above; put its id for ep_…):
curl -s http://127.0.0.1:$API/v1/sources -H 'Authorization: Bearer $KEY' -H 'content-type: application/json' -d '{"tenant_id":"$TENANT","spec":{"name":"hub-demo","match":{"path_prefix":"/webhooks/hub"},"mode":"hub"},"ingest":{"transform":{"event_type":"\"invoice.\" + .status","jq":"{id, amount}"},"routes":[{"name":"all","to":["ep_…"]}]}}'
curl -i http://127.0.0.1:$LISTEN/webhooks/hub -H 'webhook-id: msg_1' -H 'content-type: application/json' --data-binary '{"id":"in_2","status":"paid","amount":1200}'
curl -s http://127.0.0.1:$API/v1/inbound_events -H 'Authorization: Bearer $KEY'

What Envoy runs:  curl -s http://127.0.0.1:$API/v1/envoys -H 'Authorization: Bearer $KEY'
Sign your own:    $HOOKMESH sig sign --scheme stripe --secret whsec_demo_stripe_secret --body-file FILE
Ctrl-C stops everything.
TXT
wait
