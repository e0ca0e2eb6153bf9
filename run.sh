#!/bin/sh
# Set-up and main jobs of flac2all, for a fresh Debian machine.
#   ./run.sh demo     install flac2all alone, convert the sample library, print the summary
#   ./run.sh test     install flac2all with what the tests use, run the whole test suite
#   ./run.sh install  install the Debian packages and the Python package only
# Debian packages are installed only when a program is missing (with sudo
# when not root; without sudo the apt-get line to run as root is printed),
# except that `install` as root always runs apt-get (CI relies on it). The
# Python part (.venv) needs no root.
set -eu
cd "$(dirname "$0")"

# dosfstools and mtools: the tests write a --names fat32 tree onto a real FAT32 image;
# groff-base: the tests render the man pages; loudgain: the loudness meter is checked against it;
# gcc, libc6-dev: pip builds the loudness meter's C loop (without them it measures with numpy and scipy).
APT_PACKAGES="flac lame vorbis-tools opus-tools ffmpeg sox util-linux python3 python3-venv dosfstools mtools groff-base loudgain gcc libc6-dev"
PROGRAMS="flac metaflac lame oggenc opusenc ffmpeg ffprobe sox setpriv python3 loudgain gcc"
VENV=.venv

find_missing() {
    missing=""
    for p in $PROGRAMS; do command -v "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    # Debian's python3 makes no venv without python3-venv (it holds ensurepip).
    python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$missing python3-venv"
}

as_root_line() {
    echo "apt-get update && apt-get install -y --no-install-recommends $APT_PACKAGES"
}

system_packages() {
    find_missing
    if [ "$(id -u)" = 0 ]; then
        if [ -n "$missing" ] || [ "${1:-}" = always ]; then
            echo "installing Debian packages (missing:${missing:- none})"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update
            apt-get install -y --no-install-recommends $APT_PACKAGES
        fi
    elif [ -n "$missing" ]; then
        # Never apt-get as another user: it can only fail on apt's lock.
        if command -v sudo >/dev/null 2>&1; then
            echo "installing Debian packages with sudo (missing:$missing)"
            if ! { sudo apt-get update && sudo apt-get install -y --no-install-recommends $APT_PACKAGES; }; then
                echo "sudo apt-get failed; as root, run:" >&2
                echo "    $(as_root_line)" >&2
                exit 1
            fi
        else
            echo "missing:$missing (from Debian packages; not root, and no sudo here). As root, run:" >&2
            echo "    $(as_root_line)" >&2
            echo "then run $0 ${2:-install} again (as yourself: the rest needs no root)." >&2
            exit 1
        fi
    elif [ "${1:-}" = always ]; then
        echo "Debian packages: nothing missing (not root, so apt-get not run)"
    fi
    find_missing
    if [ -n "$missing" ]; then
        echo "still missing after apt-get install:$missing" >&2
        exit 1
    fi
}

# Whether the marker $1 says .venv holds what pyproject.toml asks for.
installed() {
    [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]
}

# $1 "all": flac2all with the extras the tests and CI use (test, dask, docs);
# "alone": flac2all and its own dependencies, what the demo runs.
python_package() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    if installed "$VENV/.installed"; then
        return
    fi
    if [ "$1" = alone ]; then
        if ! installed "$VENV/.installed-alone"; then
            "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e .
            touch "$VENV/.installed-alone"
        fi
        return
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test,dask,docs]'
    touch "$VENV/.installed"
}

case "${1:-}" in
    install)
        system_packages always install
        python_package all
        ;;
    demo)
        system_packages if-missing demo
        python_package alone
        rm -rf build/demo
        "$VENV/bin/python" scripts/make_sample_library.py build/demo/music
        "$VENV/bin/flac2all" mp3,vorbis,opus -c -o build/demo/out build/demo/music
        ;;
    test)
        system_packages if-missing test
        python_package all
        shift
        # One test process per CPU (pytest-xdist): the tests wait on encoders
        # and real processes; -n 0 after the command runs them in this one.
        "$VENV/bin/python" -m pytest -n auto "$@"
        ;;
    *)
        echo "usage: $0 demo|test|install" >&2
        exit 2
        ;;
esac
