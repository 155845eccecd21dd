#!/usr/bin/env bash
# Install or upgrade aero-central / aero-edge as a systemd service.
#
#   sudo deploy/install.sh central|edge [--from PATH] [--bin-dir DIR] [--root DIR] [--dry-run]
#
# Idempotent: re-running it upgrades the binary, refreshes the unit and restarts the
# service. An operator's /etc/aero/<role>.toml and /etc/aero/<role>.env are never
# overwritten. With --root DIR it installs into the filesystem tree DIR (an image being
# built, a container's root, CI's scratch root) and touches nothing of the running system:
# no user, service or file outside DIR, no restart. See deploy/README.md.
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
  --root DIR      install into the filesystem tree DIR instead of this system: the
                  user goes into DIR/etc/passwd, the unit is enabled offline, and the
                  service is not started. DIR must hold a base system (etc/passwd,
                  etc/group) and must not be /
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
ROOT=""
ROOT_GIVEN=0
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
        --root)
            [[ $# -ge 2 ]] || die "--root needs a DIR"
            ROOT=$2; ROOT_GIVEN=1; shift ;;
        --root=*) ROOT=${1#*=}; ROOT_GIVEN=1 ;;
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
if [[ $ROOT_GIVEN -eq 1 ]]; then
    [[ -n $ROOT ]] || die "--root needs a DIR"
    [[ -d $ROOT ]] || die "--root ${ROOT}: no such directory"
    ROOT=$(cd -- "$ROOT" && pwd -P)
    [[ $ROOT != / ]] || die "--root / is this system itself: leave --root out to install here"
    for f in etc/passwd etc/group; do
        [[ -f $ROOT/$f ]] || die "--root ${ROOT} has no ${f}: it must hold a base system"
    done
fi
readonly ROOT

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
# The *_DST paths, STATE_DIR and CONF_DIR are paths on the installed system (what the
# unit and the next steps name); files are written at ${ROOT}<path>.

# ---- preconditions -------------------------------------------------------------

if [[ $DRY_RUN -eq 0 ]]; then
    [[ $EUID -eq 0 ]] || die "must be run as root (try: sudo $0 ${ROLE} ...)"
    command -v systemctl >/dev/null || die "systemctl not found: a systemd host is required"
    if [[ -z $ROOT ]]; then
        [[ -d /run/systemd/system ]] || die "systemd is not running on this host"
    fi
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

if [[ -n $ROOT ]]; then
    say "Installing ${SERVICE} from ${FROM} into the root ${ROOT}"
else
    say "Installing ${SERVICE} from ${FROM}"
fi

# ---- system user ---------------------------------------------------------------

nologin_shell() {
    local s
    for s in /usr/sbin/nologin /sbin/nologin /bin/false; do
        if [[ -x ${ROOT}${s} ]]; then printf '%s\n' "$s"; return; fi
    done
    printf '/bin/false\n'
}

# has_account passwd|group NAME: whether NAME exists on this system, or in the root's
# /etc files under --root.
has_account() {
    if [[ -n $ROOT ]]; then
        [[ -n $(root_account_id "$1" "$2") ]]
    else
        getent "$1" "$2" >/dev/null
    fi
}

# root_account_id passwd|group NAME: the numeric id of NAME in the root's /etc files.
root_account_id() {
    awk -F: -v name="$2" '$1 == name { print $3; exit }' "${ROOT}/etc/$1"
}

# groupadd/useradd --root write the account into the root's /etc files.
account_opts=()
[[ -z $ROOT ]] || account_opts=(--root "$ROOT")

if has_account group "$SVC_GROUP"; then
    say "Group ${SVC_GROUP} exists"
else
    say "Creating system group ${SVC_GROUP}"
    run groupadd "${account_opts[@]}" --system "$SVC_GROUP"
fi
if has_account passwd "$SVC_USER"; then
    say "User ${SVC_USER} exists"
else
    say "Creating system user ${SVC_USER} (no login shell, no home)"
    run useradd "${account_opts[@]}" --system --gid "$SVC_GROUP" --no-create-home \
        --home-dir /nonexistent --shell "$(nologin_shell)" --comment "AeroSports services" "$SVC_USER"
fi

# The owner of the state directory and group of the configuration. Under --root the
# account exists only in the root's /etc files, which this system's name lookups do not
# read, so install/chown get its numeric ids from there.
SVC_UID=$SVC_USER
SVC_GID=$SVC_GROUP
if [[ -n $ROOT && $DRY_RUN -eq 0 ]]; then
    SVC_UID=$(root_account_id passwd "$SVC_USER")
    SVC_GID=$(root_account_id group "$SVC_GROUP")
    [[ -n $SVC_UID && -n $SVC_GID ]] || die "user ${SVC_USER} or group ${SVC_GROUP} missing from ${ROOT}/etc"
fi

# ---- binary --------------------------------------------------------------------

if [[ -e ${ROOT}${BIN_DST} && $FROM -ef ${ROOT}${BIN_DST} ]]; then
    say "Binary ${ROOT}${BIN_DST} is the source itself; not copying"
else
    say "Installing binary to ${ROOT}${BIN_DST}"
    run install -d -m 0755 "${ROOT}${BIN_DIR}"
    # Copy next to the target, then rename: atomic, and safe while the old binary runs.
    run install -m 0755 -o root -g root "$FROM" "${ROOT}${BIN_DST}.new"
    run mv -f "${ROOT}${BIN_DST}.new" "${ROOT}${BIN_DST}"
fi

# ---- configuration -------------------------------------------------------------

run install -d -m 0750 -o root -g "$SVC_GID" "${ROOT}${CONF_DIR}"

if [[ -e ${ROOT}${TOML_DST} ]]; then
    say "Keeping existing ${ROOT}${TOML_DST}"
else
    say "Installing ${ROOT}${TOML_DST} from the example"
    run install -m 0640 -o root -g "$SVC_GID" "$TOML_SRC" "${ROOT}${TOML_DST}"
fi

write_env_file() {
    local tmp
    tmp=$(umask 077 && mktemp "${ROOT}${CONF_DIR}/.${ROLE}.env.XXXXXX")
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
    chown root:"$SVC_GID" "$tmp"
    chmod 0600 "$tmp"
    mv -f -- "$tmp" "${ROOT}${ENV_DST}"
    trap - EXIT
}

if [[ -e ${ROOT}${ENV_DST} ]]; then
    say "Keeping existing ${ROOT}${ENV_DST}"
    if [[ $ROLE == central ]] && ! grep -Eq '^AERO_JWT_SECRET=.+' "${ROOT}${ENV_DST}"; then
        warn "${ROOT}${ENV_DST} sets no AERO_JWT_SECRET; generate one with: head -c 48 /dev/urandom | base64"
    fi
    perms=$(stat -c '%a' "${ROOT}${ENV_DST}")
    if [[ $perms != 600 && $perms != 400 ]]; then
        warn "${ROOT}${ENV_DST} has mode ${perms}; it holds secrets, fix with: chmod 0600 ${ROOT}${ENV_DST}"
    fi
else
    if [[ $ROLE == central ]]; then
        say "Creating ${ROOT}${ENV_DST} (mode 0600 root:${SVC_GROUP}) with a new random AERO_JWT_SECRET"
    else
        say "Creating ${ROOT}${ENV_DST} (mode 0600 root:${SVC_GROUP})"
    fi
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '[dry-run] write %q from %q, mode 0600 root:%s\n' "${ROOT}${ENV_DST}" "$ENV_SRC" "$SVC_GROUP"
    else
        write_env_file
    fi
fi

# The unit's StateDirectory= would create it on first start; creating it now lets an
# edge be enrolled before its service has ever started.
run install -d -m 0700 -o "$SVC_UID" -g "$SVC_GID" "${ROOT}${STATE_DIR}"

# ---- systemd unit --------------------------------------------------------------

say "Installing ${ROOT}${UNIT_DST}"
# Present on any systemd host; a root being built may not have it yet.
[[ -d ${ROOT}${UNIT_DIR} ]] || run install -d -m 0755 "${ROOT}${UNIT_DIR}"
if [[ $BIN_DST == "${DEFAULT_BIN_DIR}/${SERVICE}" ]]; then
    run install -m 0644 -o root -g root "$UNIT_SRC" "${ROOT}${UNIT_DST}"
elif [[ $DRY_RUN -eq 1 ]]; then
    printf '[dry-run] write %q from %q with ExecStart=%s\n' "${ROOT}${UNIT_DST}" "$UNIT_SRC" "$BIN_DST"
else
    sed "s#^ExecStart=${DEFAULT_BIN_DIR}/${SERVICE} #ExecStart=${BIN_DST} #" "$UNIT_SRC" >"${ROOT}${UNIT_DST}.new"
    chmod 0644 "${ROOT}${UNIT_DST}.new"
    mv -f "${ROOT}${UNIT_DST}.new" "${ROOT}${UNIT_DST}"
fi
[[ -n $ROOT ]] || run systemctl daemon-reload

# ---- (re)start -----------------------------------------------------------------

if [[ -n $ROOT ]]; then
    # Offline: links the unit into the root's multi-user.target.wants; nothing starts.
    say "Enabling ${SERVICE} in ${ROOT} (not started: --root)"
    run systemctl --root="$ROOT" enable "$SERVICE"
    if [[ $DRY_RUN -eq 1 ]]; then
        say "Dry run complete; nothing was changed"
    else
        say "${SERVICE} installed into ${ROOT}"
    fi
    exit 0
fi

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
