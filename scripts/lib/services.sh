# shellcheck shell=bash
# shellcheck disable=SC2034  # SERVICES_*_SOURCE are read by the callers
#
# scripts/lib/services.sh — sourced (not executed) by scripts/test and
# scripts/quickstart. Makes a PostgreSQL server and an MQTT broker available,
# starting throwaway ones when none is running, and cleans them up on exit.
#
# Functions:
#   ensure_postgres    exports TEST_DATABASE_URL (an admin URL: CREATE DATABASE works)
#   ensure_mosquitto   exports TEST_MQTT_URL (mqtt://host:port)
#   ensure_systemd_analyze  systemd-analyze in PATH (tests/systemd.rs needs it)
#   register_cleanup   register a shell command to run at exit (reverse order)
#   free_port [START]  print a free TCP port on 127.0.0.1
#   log / die          messages to stderr, prefixed with "scripts:"
#   redact_url URL     URL with the password replaced by ***
#   url_with_db URL DB the same URL pointing at database DB
#
# After ensure_* has run, SERVICES_PG_SOURCE / SERVICES_MQTT_SOURCE say where
# the service came from: "env", "local" or "throwaway".
#
# Environment knobs:
#   TEST_DATABASE_URL=...       use this PostgreSQL (if it answers `select 1`).
#   TEST_MQTT_URL=...           use this MQTT broker as is.
#   SHELLYCTL_FORCE_THROWAWAY=1 do not reuse a server already listening on
#                               127.0.0.1:5432 / 127.0.0.1:1883; always start
#                               throwaway ones (explicit TEST_*_URL still win).
#   SHELLYCTL_NO_INSTALL=1      never apt-get install missing PostgreSQL/mosquitto/systemd.
#
# Callers must not set their own EXIT trap; use register_cleanup instead.
# Everything here is safe under `set -euo pipefail`.

if [[ -n ${_SHELLYCTL_SERVICES_SH:-} ]]; then
    return 0
fi
_SHELLYCTL_SERVICES_SH=1

# Where the services came from; read by the scripts that source this file.
SERVICES_PG_SOURCE=''
SERVICES_MQTT_SOURCE=''

# ---------------------------------------------------------------- helpers --

log() {
    printf 'scripts: %s\n' "$*" >&2
}

die() {
    printf 'scripts: error: %s\n' "$*" >&2
    exit 1
}

redact_url() {
    # scheme://user:password@host -> scheme://user:***@host
    printf '%s\n' "$1" | sed -E 's#^([A-Za-z][A-Za-z0-9+.-]*://[^/:@]*):[^@/]*@#\1:***@#'
}

url_with_db() {
    # url_with_db postgres://u@h:5432/postgres?sslmode=disable mydb
    #   -> postgres://u@h:5432/mydb?sslmode=disable
    local url=$1 db=$2 base query=''
    if [[ $url == *\?* ]]; then
        query="?${url#*\?}"
        url=${url%%\?*}
    fi
    if [[ $url =~ ^([A-Za-z][A-Za-z0-9+.-]*://[^/]*)(/.*)?$ ]]; then
        base=${BASH_REMATCH[1]}
    else
        die "cannot parse database URL: $(redact_url "$1")"
    fi
    printf '%s/%s%s\n' "$base" "$db" "$query"
}

# --------------------------------------------------------------- cleanup --

_svc_cleanups=()
_svc_trap_installed=

_svc_run_cleanups() {
    local rc=$? i
    trap - EXIT
    set +e
    for ((i = ${#_svc_cleanups[@]} - 1; i >= 0; i--)); do
        eval "${_svc_cleanups[i]}" || true
    done
    _svc_cleanups=()
    exit "$rc"
}

register_cleanup() {
    _svc_cleanups+=("$1")
    if [[ -z $_svc_trap_installed ]]; then
        trap _svc_run_cleanups EXIT
        # Turn fatal signals into a normal exit so the EXIT trap runs.
        trap 'exit 129' HUP
        trap 'exit 130' INT
        trap 'exit 143' TERM
        _svc_trap_installed=1
    fi
}

# ----------------------------------------------------------------- ports --

# _svc_port_open HOST PORT: true if something accepts TCP connections there.
_svc_port_open() {
    local host=$1 port=$2
    # shellcheck disable=SC2016  # $0/$1 are expanded by the inner bash
    if command -v timeout >/dev/null 2>&1; then
        timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
    else
        bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
    fi
}

free_port() {
    local start=${1:-55432} port
    if command -v python3 >/dev/null 2>&1; then
        port=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' 2>/dev/null) || port=
        if [[ $port =~ ^[0-9]+$ ]]; then
            printf '%s\n' "$port"
            return 0
        fi
    fi
    for ((port = start; port < start + 1000 && port < 65536; port++)); do
        if ! _svc_port_open 127.0.0.1 "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "no free TCP port found in ${start}..$((start + 999))"
}

# --------------------------------------------------------------- install --

# _svc_apt_install PKG...: install with apt-get when we are root or have
# passwordless sudo. Returns non-zero when that is impossible or fails.
_svc_apt_install() {
    local -a sudo=()
    if [[ -n ${SHELLYCTL_NO_INSTALL:-} && ${SHELLYCTL_NO_INSTALL} != 0 ]]; then
        return 1
    fi
    command -v apt-get >/dev/null 2>&1 || return 1
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            return 1
        fi
    fi
    log "installing $* with apt-get"
    if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" >&2; then
        return 0
    fi
    log "apt-get install failed; running apt-get update and retrying"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || return 1
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" >&2
}

# ------------------------------------------------------------ postgresql --

# _svc_pg_bindir: print a directory holding both initdb and pg_ctl.
_svc_pg_bindir() {
    local initdb pg_ctl dir
    initdb=$(command -v initdb 2>/dev/null) || initdb=
    pg_ctl=$(command -v pg_ctl 2>/dev/null) || pg_ctl=
    if [[ -n $initdb && -n $pg_ctl ]]; then
        initdb=$(readlink -f "$initdb")
        pg_ctl=$(readlink -f "$pg_ctl")
        if [[ $(dirname "$initdb") == "$(dirname "$pg_ctl")" ]]; then
            dirname "$initdb"
            return 0
        fi
    fi
    # Debian/Ubuntu keep them out of PATH; take the newest version.
    dir=$(
        for d in /usr/lib/postgresql/*/bin; do
            [[ -x $d/initdb && -x $d/pg_ctl ]] && printf '%s\n' "$d"
        done | sort -V | tail -n 1
    )
    if [[ -n $dir ]]; then
        printf '%s\n' "$dir"
        return 0
    fi
    return 1
}

# _svc_find_psql: print the path of psql, or fail.
_svc_find_psql() {
    local p d
    if p=$(command -v psql 2>/dev/null); then
        printf '%s\n' "$p"
        return 0
    fi
    if d=$(_svc_pg_bindir) && [[ -x $d/psql ]]; then
        printf '%s\n' "$d/psql"
        return 0
    fi
    return 1
}

# _svc_pg_answers PSQL ARGS...: true if `select 1` returns 1 without
# prompting for a password.
_svc_pg_answers() {
    local psql=$1 out
    shift
    out=$(PGCONNECT_TIMEOUT=5 PGPASSFILE=/dev/null "$psql" -w -X "$@" -Atc 'select 1' 2>/dev/null) || return 1
    [[ $out == 1 ]]
}

# _svc_as_user USER DIR CMD...: run CMD in DIR, as USER when USER is non-empty.
_svc_as_user() {
    local user=$1 dir=$2
    shift 2
    if [[ -z $user ]]; then
        (cd "$dir" && "$@")
    elif command -v runuser >/dev/null 2>&1; then
        (cd "$dir" && runuser -u "$user" -- "$@")
    else
        (cd "$dir" && su "$user" -s "${BASH:-/bin/bash}" -c "$(printf '%q ' "$@")")
    fi
}

ensure_postgres() {
    local psql='' bindir dir user='' port log_tail

    psql=$(_svc_find_psql) || psql=

    # 1. An explicit TEST_DATABASE_URL that answers.
    if [[ -n ${TEST_DATABASE_URL:-} ]]; then
        if [[ -z $psql ]]; then
            log "psql not found; using TEST_DATABASE_URL=$(redact_url "$TEST_DATABASE_URL") unchecked"
            export TEST_DATABASE_URL
            SERVICES_PG_SOURCE="env"
            return 0
        fi
        if _svc_pg_answers "$psql" "$TEST_DATABASE_URL"; then
            export TEST_DATABASE_URL
            SERVICES_PG_SOURCE="env"
            return 0
        fi
        log "warning: TEST_DATABASE_URL=$(redact_url "$TEST_DATABASE_URL") does not answer; looking for another server"
    fi

    # 2. A local server with trust auth for user postgres on the default port.
    if [[ -n $psql && ${SHELLYCTL_FORCE_THROWAWAY:-0} == 0 ]] &&
        _svc_pg_answers "$psql" -h 127.0.0.1 -p 5432 -U postgres -d postgres; then
        export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
        SERVICES_PG_SOURCE=local
        return 0
    fi

    # 3. A throwaway cluster.
    if ! bindir=$(_svc_pg_bindir); then
        _svc_apt_install postgresql postgresql-client || true
        bindir=$(_svc_pg_bindir) ||
            die "PostgreSQL is not available: no initdb/pg_ctl found (PATH, /usr/lib/postgresql/*/bin) and it could not be installed; install PostgreSQL or set TEST_DATABASE_URL"
    fi
    [[ -n $psql ]] || psql=$(_svc_find_psql) || psql=

    dir=$(mktemp -d "${TMPDIR:-/tmp}/shellyctl-pg.XXXXXX")
    register_cleanup "rm -rf $(printf '%q' "$dir")"

    # initdb/postgres refuse to run as root: hand the cluster to a normal user.
    if [[ $(id -u) -eq 0 ]]; then
        if id -u postgres >/dev/null 2>&1; then
            user=postgres
        elif id -u nobody >/dev/null 2>&1; then
            user=nobody
        else
            die "running as root and neither a 'postgres' nor a 'nobody' user exists to own the throwaway PostgreSQL cluster"
        fi
        chown "$user" "$dir"
    fi
    chmod 700 "$dir"

    port=$(free_port 55432)
    log "starting a throwaway PostgreSQL ($bindir) on 127.0.0.1:$port in $dir${user:+ as $user}"

    if ! _svc_as_user "$user" "$dir" "$bindir/initdb" -D "$dir/data" -U postgres -A trust \
        --no-sync -E UTF8 --no-locale >"$dir/initdb.log" 2>&1; then
        tail -n 20 "$dir/initdb.log" >&2 || true
        die "initdb failed for the throwaway PostgreSQL (log above)"
    fi

    register_cleanup "$(printf '_svc_as_user %q %q %q -D %q -m immediate -w stop >/dev/null 2>&1' \
        "$user" "$dir" "$bindir/pg_ctl" "$dir/data")"

    if ! _svc_as_user "$user" "$dir" "$bindir/pg_ctl" -D "$dir/data" \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        -l "$dir/log" -w -t 60 start >/dev/null 2>&1; then
        log_tail=$(tail -n 30 "$dir/log" 2>/dev/null || true)
        printf '%s\n' "$log_tail" >&2
        die "the throwaway PostgreSQL did not start (server log above)"
    fi

    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    # For scripts that stop and start this server (scripts/chaos).
    SERVICES_PG_STOP=$(printf '_svc_as_user %q %q %q -D %q -m fast -w stop' "$user" "$dir" "$bindir/pg_ctl" "$dir/data")
    SERVICES_PG_START=$(printf '_svc_as_user %q %q %q -D %q -o %q -l %q -w -t 60 start' "$user" "$dir" "$bindir/pg_ctl" "$dir/data" \
        "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" "$dir/log")
    if [[ -n $psql ]] && ! _svc_pg_answers "$psql" "$TEST_DATABASE_URL"; then
        tail -n 30 "$dir/log" >&2 || true
        die "the throwaway PostgreSQL started but does not answer on 127.0.0.1:$port"
    fi
    SERVICES_PG_SOURCE=throwaway
}

# ------------------------------------------------------------- mosquitto --

_svc_find_mosquitto() {
    local p
    if p=$(command -v mosquitto 2>/dev/null); then
        printf '%s\n' "$p"
        return 0
    fi
    for p in /usr/sbin/mosquitto /usr/local/sbin/mosquitto /usr/local/bin/mosquitto; do
        if [[ -x $p ]]; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

ensure_mosquitto() {
    local bin dir port pid i

    # 1. Explicit URL.
    if [[ -n ${TEST_MQTT_URL:-} ]]; then
        export TEST_MQTT_URL
        SERVICES_MQTT_SOURCE="env"
        return 0
    fi

    # 2. A broker on the default port.
    if [[ ${SHELLYCTL_FORCE_THROWAWAY:-0} == 0 ]] && _svc_port_open 127.0.0.1 1883; then
        export TEST_MQTT_URL=mqtt://127.0.0.1:1883
        SERVICES_MQTT_SOURCE=local
        return 0
    fi

    # 3. A throwaway broker.
    if ! bin=$(_svc_find_mosquitto); then
        _svc_apt_install mosquitto || true
        bin=$(_svc_find_mosquitto) ||
            die "MQTT broker is not available: mosquitto not found (PATH, /usr/sbin) and it could not be installed; install mosquitto or set TEST_MQTT_URL"
    fi

    dir=$(mktemp -d "${TMPDIR:-/tmp}/shellyctl-mqtt.XXXXXX")
    chmod 755 "$dir"
    register_cleanup "rm -rf $(printf '%q' "$dir")"
    port=$(free_port 51883)

    # An explicit config behaves the same on mosquitto 1.x and 2.x:
    # loopback only, anonymous clients allowed, nothing written to disk.
    cat >"$dir/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
EOF
    chmod 644 "$dir/mosquitto.conf"

    log "starting a throwaway mosquitto ($bin) on 127.0.0.1:$port"
    "$bin" -c "$dir/mosquitto.conf" >"$dir/log" 2>&1 </dev/null &
    pid=$!
    register_cleanup "kill $pid 2>/dev/null; wait $pid 2>/dev/null"

    # Sleep first: a mosquitto that cannot bind exits within milliseconds, and
    # checking that it is still alive keeps us from mistaking somebody else's
    # listener on the same port for ours.
    for ((i = 0; i < 50; i++)); do
        sleep 0.1
        kill -0 "$pid" 2>/dev/null || break
        if _svc_port_open 127.0.0.1 "$port" && kill -0 "$pid" 2>/dev/null; then
            export TEST_MQTT_URL="mqtt://127.0.0.1:$port"
            SERVICES_MQTT_SOURCE=throwaway
            return 0
        fi
    done
    tail -n 20 "$dir/log" >&2 || true
    die "the throwaway mosquitto exited or did not accept connections on 127.0.0.1:$port within 5 s (log above)"
}

# -------------------------------------------------------- systemd-analyze --

# The unit tests (tests/systemd.rs) run `systemd-analyze verify` and
# `security --offline`; Debian's package "systemd" provides it. It is only
# installed, never started: this works in containers without systemd as PID 1.
ensure_systemd_analyze() {
    command -v systemd-analyze >/dev/null 2>&1 && return 0
    _svc_apt_install systemd || true
    command -v systemd-analyze >/dev/null 2>&1 ||
        die "systemd-analyze is not available and could not be installed (SHELLYCTL_NO_INSTALL=${SHELLYCTL_NO_INSTALL:-}); install the 'systemd' package: tests/systemd.rs needs it"
}

# ensure_jq: jq, which the README's commands pipe JSON into (tests/readme.rs
# runs them as written), from Debian's package when missing.
ensure_jq() {
    command -v jq >/dev/null 2>&1 && return 0
    _svc_apt_install jq || true
    command -v jq >/dev/null 2>&1 ||
        die "jq is not available and could not be installed (SHELLYCTL_NO_INSTALL=${SHELLYCTL_NO_INSTALL:-}); install the 'jq' package: tests/readme.rs runs the README's commands, which use it"
}

# ensure_haproxy: a HAProxy binary for the test of several `listen`s behind
# one proxy (tests/listen_instances.rs), from Debian's package when missing.
# Exported as SHELLYCTL_HAPROXY; the test fails (never skips) without it.
ensure_haproxy() {
    local bin
    bin=$(command -v haproxy 2>/dev/null || true)
    [[ -n $bin ]] || [[ ! -x /usr/sbin/haproxy ]] || bin=/usr/sbin/haproxy
    if [[ -z $bin ]]; then
        _svc_apt_install haproxy || true
        bin=$(command -v haproxy 2>/dev/null || true)
        [[ -n $bin ]] || [[ ! -x /usr/sbin/haproxy ]] || bin=/usr/sbin/haproxy
    fi
    [[ -n $bin ]] ||
        die "haproxy is not available and could not be installed (SHELLYCTL_NO_INSTALL=${SHELLYCTL_NO_INSTALL:-}); install the 'haproxy' package: tests/listen_instances.rs needs it"
    # Debian starts the service it installs; the test runs its own.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet haproxy 2>/dev/null; then
        systemctl stop haproxy 2>/dev/null || true
    fi
    SHELLYCTL_HAPROXY=$bin
    export SHELLYCTL_HAPROXY
}
