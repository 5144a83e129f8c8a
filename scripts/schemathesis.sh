#!/usr/bin/env bash
# Property-based API testing against a real `hookmesh serve` on SQLite: every operation in the
# served /openapi.json, with an admin key. Passes only with zero 5xx responses and zero
# responses that contradict the document. Two passes: rotating the very key the run uses
# would lock the first pass out, so the rotation runs on its own afterwards.
set -euo pipefail
HOOKMESH=${1:?usage: schemathesis.sh HOOKMESH_BINARY}
VERSION=4.32.5
python3 -c "import schemathesis, sys; sys.exit(schemathesis.__version__ != '$VERSION')" 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$VERSION"

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key="hm_schemathesis_$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
HOOKMESH_ADMIN_KEY=$key "$HOOKMESH" serve --data-dir "$dir" --listen "127.0.0.1:$port" > "$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
run() {
  # The console-script entry point, called through python3 so no PATH set-up is needed.
  python3 -c 'import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())' run "http://127.0.0.1:$port/openapi.json" -H "Authorization: Bearer $key" \
    --checks "$checks" --max-examples "${SCHEMATHESIS_EXAMPLES:-30}" "$@"
}
run --exclude-path '/v1/api_keys/{id}/rotate'
run --include-path '/v1/api_keys/{id}/rotate'
if grep -q "panicked" "$dir/server.log"; then
  echo "the server panicked during the run:" >&2; cat "$dir/server.log" >&2; exit 1
fi
echo "schemathesis: no server errors, no responses contradicting /openapi.json"
