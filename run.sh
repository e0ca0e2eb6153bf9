#!/bin/sh
# Set-up and main jobs of flac2all, for a fresh Debian machine (as root).
#   ./run.sh demo     install everything, convert the sample library, print the summary
#   ./run.sh test     install everything, run the whole test suite
#   ./run.sh install  install the Debian packages and the Python package only
set -eu
cd "$(dirname "$0")"

APT_PACKAGES="flac lame vorbis-tools opus-tools ffmpeg sox util-linux python3 python3-venv"
PROGRAMS="flac metaflac lame oggenc opusenc ffmpeg ffprobe sox setpriv python3"
VENV=.venv

system_packages() {
    missing=""
    for p in $PROGRAMS; do command -v "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    python3 -m venv --help >/dev/null 2>&1 || missing="$missing venv"
    if [ -n "$missing" ] || [ "${1:-}" = always ]; then
        echo "installing Debian packages (missing:${missing:- none})"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends $APT_PACKAGES
    fi
}

python_package() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
        touch "$VENV/.installed"
    fi
}

case "${1:-}" in
    install)
        system_packages always
        python_package
        ;;
    demo)
        system_packages
        python_package
        rm -rf build/demo
        "$VENV/bin/python" scripts/make_sample_library.py build/demo/music
        "$VENV/bin/flac2all" mp3,vorbis,opus -c -o build/demo/out build/demo/music
        ;;
    test)
        system_packages
        python_package
        shift
        "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: $0 demo|test|install" >&2
        exit 2
        ;;
esac
