#!/usr/bin/env bash
# Install or upgrade aero-central / aero-edge as a systemd service.
#
#   sudo deploy/install.sh central|edge [--from PATH] [--bin-dir DIR] [--dry-run]
#
# Idempotent: re-running it upgrades the binary, refreshes the unit and restarts the
# service. An operator's /etc/aero/<role>.toml and /etc/aero/<role>.env are never
# overwritten. See deploy/README.md.
set -euo pipefail

readonly DEFAULT_BIN_DIR=/usr/local/bin
readonly CONF_DIR=/etc/aero
readonly UNIT_DIR=/etc/systemd/system
readonly SVC_USER=aero
readonly SVC_GROUP=aero

usage() {
    cat <<EOF
Usage: $(basename "$0") central|edge [options]

Installs (or upgrades) aero-<role> as a systemd service running as user '${SVC_USER}'.

Options:
  --from PATH     binary to install (default: <repo>/target/release/aero-<role>)
  --bin-dir DIR   install directory for the binary (default: ${DEFAULT_BIN_DIR})
  --dry-run       print what would be done, change nothing
  -h, --help      show this help
EOF
}

die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
say() { printf '==> %s\n' "$*"; }

# run CMD...: execute, or only print it under --dry-run.
run() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '[dry-run]'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# ---- arguments -----------------------------------------------------------------

ROLE=""
FROM=""
BIN_DIR=$DEFAULT_BIN_DIR
DRY_RUN=0

while [[ $# -gt 0 ]]; do
    case $1 in
        central | edge)
            [[ -z $ROLE ]] || die "role given twice"
            ROLE=$1 ;;
        --from)
            [[ $# -ge 2 ]] || die "--from needs a PATH"
            FROM=$2; shift ;;
        --from=*) FROM=${1#*=} ;;
        --bin-dir)
            [[ $# -ge 2 ]] || die "--bin-dir needs a DIR"
            BIN_DIR=$2; shift ;;
        --bin-dir=*) BIN_DIR=${1#*=} ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done

[[ -n $ROLE ]] || { usage >&2; die "missing role: central or edge"; }
[[ $BIN_DIR == /* ]] || die "--bin-dir must be an absolute path"
[[ $BIN_DIR =~ ^[A-Za-z0-9._/+-]+$ ]] || die "--bin-dir contains unsupported characters"
BIN_DIR=${BIN_DIR%/}
[[ -n $BIN_DIR ]] || die "--bin-dir must not be /"

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname -- "$SCRIPT_DIR")

readonly SERVICE="aero-${ROLE}"
readonly UNIT_SRC="${SCRIPT_DIR}/systemd/${SERVICE}.service"
readonly TOML_SRC="${SCRIPT_DIR}/config/${ROLE}.toml.example"
readonly ENV_SRC="${SCRIPT_DIR}/config/${ROLE}.env.example"
readonly UNIT_DST="${UNIT_DIR}/${SERVICE}.service"
readonly TOML_DST="${CONF_DIR}/${ROLE}.toml"
readonly ENV_DST="${CONF_DIR}/${ROLE}.env"
readonly BIN_DST="${BIN_DIR}/${SERVICE}"
readonly STATE_DIR="/var/lib/${SERVICE}"
FROM=${FROM:-"${REPO_ROOT}/target/release/${SERVICE}"}

# ---- preconditions -------------------------------------------------------------

if [[ $DRY_RUN -eq 0 ]]; then
    [[ $EUID -eq 0 ]] || die "must be run as root (try: sudo $0 ${ROLE} ...)"
    command -v systemctl >/dev/null || die "systemctl not found: a systemd host is required"
    [[ -d /run/systemd/system ]] || die "systemd is not running on this host"
fi
for f in "$UNIT_SRC" "$TOML_SRC" "$ENV_SRC"; do
    [[ -f $f ]] || die "missing ${f} (run the script from a complete checkout or release bundle)"
done
if [[ ! -f $FROM || ! -x $FROM ]]; then
    if [[ $DRY_RUN -eq 1 ]]; then
        warn "binary ${FROM} not found or not executable (build it: cargo build --release -p ${SERVICE})"
    else
        die "binary ${FROM} not found or not executable (build it: cargo build --release -p ${SERVICE}, or pass --from PATH)"
    fi
fi

say "Installing ${SERVICE} from ${FROM}"

# ---- system user ---------------------------------------------------------------

nologin_shell() {
    local s
    for s in /usr/sbin/nologin /sbin/nologin /bin/false; do
        if [[ -x $s ]]; then printf '%s\n' "$s"; return; fi
    done
    printf '/bin/false\n'
}

if getent group "$SVC_GROUP" >/dev/null; then
    say "Group ${SVC_GROUP} exists"
else
    say "Creating system group ${SVC_GROUP}"
    run groupadd --system "$SVC_GROUP"
fi
if getent passwd "$SVC_USER" >/dev/null; then
    say "User ${SVC_USER} exists"
else
    say "Creating system user ${SVC_USER} (no login shell, no home)"
    run useradd --system --gid "$SVC_GROUP" --no-create-home --home-dir /nonexistent \
        --shell "$(nologin_shell)" --comment "AeroSports services" "$SVC_USER"
fi

# ---- binary --------------------------------------------------------------------

if [[ -e $BIN_DST && $FROM -ef $BIN_DST ]]; then
    say "Binary ${BIN_DST} is the source itself; not copying"
else
    say "Installing binary to ${BIN_DST}"
    run install -d -m 0755 "$BIN_DIR"
    # Copy next to the target, then rename: atomic, and safe while the old binary runs.
    run install -m 0755 -o root -g root "$FROM" "${BIN_DST}.new"
    run mv -f "${BIN_DST}.new" "$BIN_DST"
fi

# ---- configuration -------------------------------------------------------------

run install -d -m 0750 -o root -g "$SVC_GROUP" "$CONF_DIR"

if [[ -e $TOML_DST ]]; then
    say "Keeping existing ${TOML_DST}"
else
    say "Installing ${TOML_DST} from the example"
    run install -m 0640 -o root -g "$SVC_GROUP" "$TOML_SRC" "$TOML_DST"
fi

write_env_file() {
    local tmp
    tmp=$(umask 077 && mktemp "${CONF_DIR}/.${ROLE}.env.XXXXXX")
    # shellcheck disable=SC2064  # expand $tmp now
    trap "rm -f -- '${tmp}'" EXIT
    if [[ $ROLE == central ]]; then
        # Passed through the environment, not argv, so it never shows up in ps.
        AERO_INSTALL_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n') \
            awk '/^AERO_JWT_SECRET=/ { print "AERO_JWT_SECRET=" ENVIRON["AERO_INSTALL_SECRET"]; done = 1; next }
                 { print }
                 END { if (!done) print "AERO_JWT_SECRET=" ENVIRON["AERO_INSTALL_SECRET"] }' \
                "$ENV_SRC" >"$tmp"
    else
        cat -- "$ENV_SRC" >"$tmp"
    fi
    chown root:"$SVC_GROUP" "$tmp"
    chmod 0600 "$tmp"
    mv -f -- "$tmp" "$ENV_DST"
    trap - EXIT
}

if [[ -e $ENV_DST ]]; then
    say "Keeping existing ${ENV_DST}"
    if [[ $ROLE == central ]] && ! grep -Eq '^AERO_JWT_SECRET=.+' "$ENV_DST"; then
        warn "${ENV_DST} sets no AERO_JWT_SECRET; generate one with: head -c 48 /dev/urandom | base64"
    fi
    perms=$(stat -c '%a' "$ENV_DST")
    if [[ $perms != 600 && $perms != 400 ]]; then
        warn "${ENV_DST} has mode ${perms}; it holds secrets, fix with: chmod 0600 ${ENV_DST}"
    fi
else
    if [[ $ROLE == central ]]; then
        say "Creating ${ENV_DST} (mode 0600 root:${SVC_GROUP}) with a new random AERO_JWT_SECRET"
    else
        say "Creating ${ENV_DST} (mode 0600 root:${SVC_GROUP})"
    fi
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '[dry-run] write %q from %q, mode 0600 root:%s\n' "$ENV_DST" "$ENV_SRC" "$SVC_GROUP"
    else
        write_env_file
    fi
fi

# The unit's StateDirectory= would create it on first start; creating it now lets an
# edge be enrolled before its service has ever started.
run install -d -m 0700 -o "$SVC_USER" -g "$SVC_GROUP" "$STATE_DIR"

# ---- systemd unit --------------------------------------------------------------

say "Installing ${UNIT_DST}"
if [[ $BIN_DST == "${DEFAULT_BIN_DIR}/${SERVICE}" ]]; then
    run install -m 0644 -o root -g root "$UNIT_SRC" "$UNIT_DST"
elif [[ $DRY_RUN -eq 1 ]]; then
    printf '[dry-run] write %q from %q with ExecStart=%s\n' "$UNIT_DST" "$UNIT_SRC" "$BIN_DST"
else
    sed "s#^ExecStart=${DEFAULT_BIN_DIR}/${SERVICE} #ExecStart=${BIN_DST} #" "$UNIT_SRC" >"${UNIT_DST}.new"
    chmod 0644 "${UNIT_DST}.new"
    mv -f "${UNIT_DST}.new" "$UNIT_DST"
fi
run systemctl daemon-reload

# ---- (re)start -----------------------------------------------------------------

# enable, then restart: starts the service on a first install, restarts it onto the new
# binary on an upgrade. --no-block: a service that cannot start yet (an edge not yet
# enrolled) must not hang the installer; the result is checked below.
old_invocation=""
if [[ $DRY_RUN -eq 0 ]]; then
    old_invocation=$(systemctl show -p InvocationID --value "$SERVICE" 2>/dev/null || true)
fi
say "Enabling and (re)starting ${SERVICE}"
run systemctl enable "$SERVICE"
run systemctl restart --no-block "$SERVICE"

started=0
if [[ $DRY_RUN -eq 0 ]]; then
    for _ in $(seq 1 30); do
        sleep 1
        state=$(systemctl is-active "$SERVICE" 2>/dev/null || true)
        invocation=$(systemctl show -p InvocationID --value "$SERVICE" 2>/dev/null || true)
        if [[ $state == active && -n $invocation && $invocation != "$old_invocation" ]]; then
            started=1
            break
        fi
    done
fi

# ---- result --------------------------------------------------------------------

if [[ $DRY_RUN -eq 1 ]]; then
    say "Dry run complete; nothing was changed"
elif [[ $started -eq 1 ]]; then
    say "${SERVICE} is running ($("$BIN_DST" --version 2>/dev/null || echo "${BIN_DST}"))"
elif [[ $ROLE == central ]]; then
    warn "${SERVICE} did not become ready within 30 s; recent log:"
    journalctl -u "$SERVICE" -n 30 --no-pager >&2 || true
    exit 1
fi

if [[ $ROLE == central ]]; then
    cat <<EOF

Next steps:
  - Production database: set AERO_DATABASE_URL in ${ENV_DST}, then
      systemctl restart ${SERVICE}
  - Create the first HQ owner (password read from stdin):
      systemd-run --quiet --pipe --wait --uid=${SVC_USER} --gid=${SVC_GROUP} -p UMask=0077 \\
        -p EnvironmentFile=${ENV_DST} -E AERO_DATA_DIR=${STATE_DIR} \\
        ${BIN_DST} user create --config ${TOML_DST} --username admin --role owner --password-stdin
  - Logs: journalctl -u ${SERVICE} -f
EOF
else
    if [[ $started -eq 0 && $DRY_RUN -eq 0 ]]; then
        say "${SERVICE} is not running yet; that is expected until the edge is enrolled"
    fi
    cat <<EOF

Next steps:
  - Review ${TOML_DST} (listen address on the venue LAN).
  - Enroll this edge with a one-time token from HQ (enroll before start; the unit
    keeps restarting until enrolled):
      sudo -u ${SVC_USER} AERO_DATA_DIR=${STATE_DIR} ${BIN_DST} enroll --central URL --token TOKEN
      systemctl restart ${SERVICE}
  - Logs: journalctl -u ${SERVICE} -f
EOF
fi
