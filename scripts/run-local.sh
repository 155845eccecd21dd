#!/usr/bin/env bash
# Runs a local AeroSports chain on embedded defaults: aero-central (SQLite) and one enrolled
# aero-edge for a demo venue, both on loopback, with their data under ./.local-chain.
# The first run creates an HQ owner, the venue, a kiosk API key and a venue manager, and keeps
# them in .local-chain/credentials; later runs reuse everything. Ctrl-C stops both services.
set -euo pipefail
cd "$(dirname "$0")/.."

root="${AERO_LOCAL_DIR:-$PWD/.local-chain}"
central_addr="${AERO_CENTRAL_LISTEN:-127.0.0.1:8080}"
edge_addr="${AERO_EDGE_LISTEN:-127.0.0.1:8090}"
# These configure this script only: the services refuse AERO_ variables that name no setting.
unset AERO_LOCAL_DIR AERO_CENTRAL_LISTEN AERO_EDGE_LISTEN
central_url="http://$central_addr"
edge_url="http://$edge_addr"
credentials="$root/credentials"

for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "run-local.sh needs $tool (apt-get install -y $tool)" >&2; exit 1; }
done

cargo build --release --bin aero-central --bin aero-edge
bin=target/release
mkdir -p "$root/central" "$root/edge"
chmod 700 "$root"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

random_password() { head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 20; }

wait_healthy() {
    for _ in $(seq 1 100); do
        curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$1 did not become healthy" >&2
    exit 1
}

api() { # METHOD PATH TOKEN [JSON]
    curl -fsS -X "$1" "$central_url$2" -H "authorization: Bearer $3" \
        -H 'content-type: application/json' ${4:+-d "$4"}
}

if [ ! -f "$credentials" ]; then
    owner_password="$(random_password)"
    printf '%s' "$owner_password" | AERO_DATA_DIR="$root/central" \
        "$bin/aero-central" user create --username owner --role owner --password-stdin >/dev/null
fi

AERO_DATA_DIR="$root/central" "$bin/aero-central" serve --listen "$central_addr" \
    2>>"$root/central.log" &
pids+=($!)
wait_healthy "$central_url"

if [ ! -f "$credentials" ]; then
    token="$(curl -fsS "$central_url/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"username\":\"owner\",\"password\":\"$owner_password\"}" | jq -r .access_token)"
    site="$(api POST /v1/sites "$token" \
        '{"name":"Demo Venue","timezone":"Europe/London","allowed_networks":["127.0.0.0/8","::1/128"]}' | jq -r .id)"
    api POST /v1/products "$token" \
        '{"sku":"JUMP-60","name":"Jump 60 minutes","kind":"pass","price_cents":1500,"duration_minutes":60}' >/dev/null
    enrollment="$(api POST "/v1/sites/$site/enrollment-tokens" "$token" | jq -r .token)"
    kiosk_key="$(api POST "/v1/sites/$site/devices" "$token" '{"name":"Kiosk 1","kind":"kiosk"}' | jq -r .api_key)"
    manager_password="$(random_password)"
    api POST /v1/users "$token" \
        "{\"username\":\"manager\",\"password\":\"$manager_password\",\"role\":\"manager\",\"site_ids\":[\"$site\"]}" >/dev/null
    AERO_DATA_DIR="$root/edge" "$bin/aero-edge" enroll --central "$central_url" --token "$enrollment" >/dev/null
    (umask 077; cat > "$credentials" <<CREDS
site_id=$site
hq_owner=owner / $owner_password
venue_manager=manager / $manager_password
kiosk_api_key=$kiosk_key
CREDS
    )
fi

AERO_DATA_DIR="$root/edge" "$bin/aero-edge" serve --listen "$edge_addr" 2>>"$root/edge.log" &
pids+=($!)
wait_healthy "$edge_url"

kiosk_key="$(sed -n 's/^kiosk_api_key=//p' "$credentials")"
cat <<INFO

AeroSports local chain is running (logs in $root/*.log)
  central (HQ)    $central_url      OpenAPI: $central_url/openapi.json
  edge (venue)    $edge_url      status:  $edge_url/v1/status
$(sed 's/^/  /' "$credentials")

Try it:
  curl -s -X POST $edge_url/v1/customers -H "x-api-key: $kiosk_key" -H 'content-type: application/json' \\
       -d '{"first_name":"Ada","last_name":"Lovelace","birth_date":"2012-05-01","phone":"+44 7700 900123"}'
  curl -s "$edge_url/v1/customers?phone=%2B447700900123" -H "x-api-key: $kiosk_key"
  curl -s $edge_url/v1/status -H "x-api-key: $kiosk_key"

Ctrl-C stops both services.
INFO
wait -n "${pids[@]}"
