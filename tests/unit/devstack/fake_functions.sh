#!/bin/bash
# Minimal stand-ins for the devstack functions the vmetal plugin uses, so
# its phases run without a devstack checkout. Configuration helpers are
# real (they write and read ini files); process and package helpers record
# their call, one line per call with fields separated by \x1f, into
# $FAKE_RECORD.
# shellcheck disable=SC2034

_fake_record() {
    local IFS=$'\x1f'
    printf '%s\n' "$*" >> "$FAKE_RECORD"
}

# ini files: awk, like devstack's own sed/grep helpers (a Python helper
# per call would cost 0.1 s each, a dozen times a phase). Keys are matched
# exactly inside their [section]; "key = value" is written.
_ini_awk() {
    # _ini_awk <mode> <file> <section> <option> [value]
    awk -v mode="$1" -v sec="$3" -v opt="$4" -v val="${5:-}" '
        function flush() {
            if (mode == "set" && insec && !done) { print opt " = " val; done = 1 }
        }
        /^[ \t]*\[.*\][ \t]*$/ {
            flush()
            name = $0; gsub(/^[ \t]*\[|\][ \t]*$/, "", name)
            insec = (name == sec); seen = seen || insec
            if (mode != "get") print
            next
        }
        {
            key = $0
            if (insec && index(key, "=") > 0) {
                sub(/=.*/, "", key); gsub(/^[ \t]+|[ \t]+$/, "", key)
                if (key == opt) {
                    v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t]+$/, "", v)
                    if (mode == "get") { print v; exit }
                    if (mode == "set" && !done) { print opt " = " val; done = 1 }
                    next
                }
            }
            if (mode != "get") print
        }
        END {
            flush()
            if (mode == "set" && !seen) { print ""; print "[" sec "]"; print opt " = " val }
        }' "$2"
}

iniset() {
    [[ -f "$1" ]] || : > "$1"
    _ini_awk set "$@" > "$1.new" && mv "$1.new" "$1"
}

iniget() {
    [[ -f "$1" ]] || return 0
    _ini_awk get "$@"
}

inidelete() {
    [[ -f "$1" ]] || return 0
    _ini_awk delete "$@" > "$1.new" && mv "$1.new" "$1"
}

is_service_enabled() {
    local service
    for service in "$@"; do
        if [[ ",$ENABLED_SERVICES," == *",$service,"* ]]; then
            return 0
        fi
    done
    return 1
}

enable_service() {
    local service
    for service in "$@"; do
        is_service_enabled "$service" || ENABLED_SERVICES+=",$service"
    done
}

trueorfalse() {
    local default=$1 value=${!2:-}
    case "${value,,}" in
        1|yes|true|on) echo True ;;
        0|no|false|off) echo False ;;
        *) echo "$default" ;;
    esac
}

die() {
    # devstack's die prints the line number then the message and exits.
    shift
    echo "die: $*" >&2
    exit 1
}

echo_summary() { echo "summary: $*"; }
get_python_exec_prefix() { echo "$FAKE_BIN_DIR"; }
setup_develop() { _fake_record setup_develop "$@"; }
pip_install() { _fake_record pip_install "$@"; }
# devstack's run_process (systemd) refuses the same commands. With
# FAKE_SPAWN_DIR set (root functional tests) the command really starts,
# split on blanks like systemd's ExecStart, and stop_process stops it by
# the PID recorded here.
run_process() {
    if [[ "$2" != /* ]]; then
        die $LINENO "run_process $1: the command must start with an absolute path"
    fi
    if [[ "$2" == *sudo* ]]; then
        die $LINENO "run_process $1: sudo does not work under systemd"
    fi
    _fake_record run_process "$@"
    if [[ -n "${FAKE_SPAWN_DIR:-}" ]]; then
        local -a argv
        read -r -a argv <<< "$2"
        setsid "${argv[@]}" > "$FAKE_SPAWN_DIR/$1.log" 2>&1 < /dev/null &
        echo $! > "$FAKE_SPAWN_DIR/$1.pid"
    fi
}

stop_process() {
    _fake_record stop_process "$@"
    local pidfile=${FAKE_SPAWN_DIR:-/nonexistent}/$1.pid
    if [[ -f "$pidfile" ]]; then
        kill "$(cat "$pidfile")" 2> /dev/null || true
        rm -f "$pidfile"
    fi
}

# sudo: file-system commands run for real (inside the test's tmp dirs);
# anything else (ip) is only recorded, unless FAKE_SPAWN_DIR says the test
# runs as root on interfaces of its own.
sudo() {
    _fake_record sudo "$@"
    case "$1" in
        install|rm|mkdir) "$@" ;;
        *) if [[ -n "${FAKE_SPAWN_DIR:-}" ]]; then "$@"; fi ;;
    esac
}
