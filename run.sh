#!/usr/bin/env bash
# dnl_ad operator entry point. `./run.sh test` and `./run.sh demo` need nothing but Python.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
VENV="$HERE/.venv"
PY="$VENV/bin/python"

ensure_venv() {
    # $1: pip extras to install ("test,demo" or empty)
    local extras="${1:-}" stamp="$VENV/.installed-${1:-base}"
    if [ ! -x "$PY" ]; then
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        # a newer pip is nice to have, not needed: never fail the install over it
        "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
        if [ -n "$extras" ]; then
            "$PY" -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
        else
            "$PY" -m pip install --quiet --disable-pip-version-check -e .
        fi
        touch "$stamp"
    fi
}

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
    test)
        ensure_venv "test,demo"
        exec "$PY" -m pytest "$@"
        ;;
    migrate|start|stop|restart|status|zap|debug|run|harness|check|preview)
        ensure_venv ""
        exec "$PY" -m dnl_ad "$cmd" "$@"
        ;;
    demo)
        ensure_venv "demo"
        exec "$PY" -m dnl_ad demo "$@"
        ;;
    *)
        echo "usage: $0 {start|stop|restart|status|zap|debug|run|harness|check|preview|demo|migrate|test} [args...]" >&2
        exit 2
        ;;
esac
