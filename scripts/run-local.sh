#!/usr/bin/env bash
# Runs a local AeroSports chain on embedded defaults: aero-central on 127.0.0.1:8080 with its
# SQLite database under ./.local-chain, and an owner account created on first start.
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir="${AERO_LOCAL_DIR:-$PWD/.local-chain}"
listen="${AERO_LISTEN:-127.0.0.1:8080}"
mkdir -p "$data_dir/central"
chmod 700 "$data_dir"

cargo build --release --bin aero-central
central=target/release/aero-central
export AERO_DATA_DIR="$data_dir/central"

credentials="$data_dir/owner-credentials"
if [ ! -f "$credentials" ]; then
    password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | head -c 20)"
    printf '%s' "$password" | "$central" user create --username owner --role owner --password-stdin >/dev/null
    (umask 077; printf 'username=owner\npassword=%s\n' "$password" > "$credentials")
fi

cat <<INFO
AeroSports local chain
  central API   http://$listen   (OpenAPI: http://$listen/openapi.json)
  HQ owner      $(tr '\n' ' ' < "$credentials")
  data          $data_dir
  log in:       curl -s http://$listen/v1/auth/login -H 'content-type: application/json' \\
                  -d '{"username":"owner","password":"<password above>"}'
Stop with Ctrl-C.
INFO
exec "$central" serve --listen "$listen"
