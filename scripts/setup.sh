#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install moebench with its pinned stack.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
# Offline text corpora of the GLUE-like and machine-translation defaults (Debian packages:
# trans-de-en = the Ding en-de dictionary, fortunes). Installed when this is a Debian system
# and we may (root or password-less sudo); otherwise the data rules download the upstream
# files (checksummed). MOEBENCH_NO_APT=1 skips this.
DEB_DATA="trans-de-en fortunes"
need_deb() { [ ! -f /usr/share/trans/de-en ] || [ ! -d /usr/share/games/fortunes ]; }
if [ "${MOEBENCH_NO_APT:-0}" != 1 ] && need_deb && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    if $SUDO true 2>/dev/null; then
        echo "installing Debian data packages: $DEB_DATA" >&2
        ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
            --no-install-recommends $DEB_DATA >/dev/null) \
            || echo "apt-get failed: the data rules will download the corpora instead" >&2
    fi
fi
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.moebench-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing moebench and its dependencies into $VENV (pinned by constraints.txt)" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
    echo "$want" > "$stamp"
fi
