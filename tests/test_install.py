"""The README's install paths, as a new user takes them: ``pip install .``
and ``pipx install .`` from a clone (the console scripts work), and
``./run.sh`` as a user who is not root (apt-get only as root, through sudo,
or as a line printed for root to run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flac2all import __version__
from tests.conftest import REPO, decodes, make_flac

NOBODY = 65534
# What a copy of the clone leaves out: local state, never part of a clone.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"
)


def copy_of_the_clone(dest: Path) -> Path:
    """The working tree without local state: pip builds in the source
    folder (build/, *.egg-info), which must not be the repository's."""
    shutil.copytree(REPO, dest, ignore=NOT_IN_A_CLONE, symlinks=True)
    return dest


def apt_packages() -> list[str]:
    return re.search(r'^APT_PACKAGES="([^"]+)"', (REPO / "run.sh").read_text(), re.M).group(1).split()


def root_line() -> str:
    """The command run.sh prints for root to run."""
    return "apt-get update && apt-get install -y --no-install-recommends " + " ".join(apt_packages())


def run(argv: list[str | Path], timeout: float, **kw) -> subprocess.CompletedProcess[str]:
    # An installed flac2all must import itself, never a source tree on PYTHONPATH.
    env = {k: v for k, v in kw.pop("env", os.environ).items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout, env=env, **kw
    )


# ---------------------------------------------------------------- pip, pipx


def check_console_scripts(bin_dir: Path, tmp_path: Path) -> None:
    """The installed commands: --version, --help, a real conversion, and
    the worker's --help."""
    flac2all = bin_dir / "flac2all"
    version = run([flac2all, "--version"], 60)
    assert version.returncode == 0 and version.stdout.splitlines()[0] == f"flac2all {__version__}", version
    helped = run([flac2all, "--help"], 60)
    assert helped.returncode == 0 and "usage: flac2all MODE[,MODE...] [options] INPUTDIR" in helped.stdout
    music = tmp_path / "music"
    make_flac(music / "a" / "one.flac", tags={"TITLE": "One"})
    out = tmp_path / "out"
    converted = run([flac2all, "mp3,opus", "-o", out, music], 120)
    assert converted.returncode == 0, converted.stdout + converted.stderr
    assert decodes(out / "mp3" / "a" / "one.mp3") and decodes(out / "opus" / "a" / "one.opus")
    worker = run([bin_dir / "flac2all_worker", "--help"], 60)
    assert worker.returncode == 0 and "usage: flac2all_worker" in worker.stdout and "MASTER_HOST" in worker.stdout


def site_of(python: Path) -> str:
    """Where ``python`` imports flac2all from."""
    return run([python, "-c", "import flac2all; print(flac2all.__file__)"], 60, cwd="/").stdout.strip()


def readme_command(containing: str) -> str:
    """The one line of the README's shell examples that contains ``containing``."""
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    lines = [line for block in blocks for line in block.splitlines() if containing in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pip_install_from_a_clone_into_a_fresh_venv(tmp_path):
    clone = copy_of_the_clone(tmp_path / "clone")
    # The README's command as written, with this test's python3 and folder
    # for ~. Not editable; dependencies from the package index, through
    # pip's cache.
    command = readme_command("pip install .")
    assert command == "python3 -m venv ~/flac2all-venv && ~/flac2all-venv/bin/pip install ."
    command = command.replace("python3 ", f"{sys.executable} ", 1).replace("~/", f"{tmp_path}/")
    installed = run(["sh", "-c", command], 600, cwd=clone)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    shutil.rmtree(clone)  # a real install does not need the clone any more
    venv = tmp_path / "flac2all-venv"
    assert site_of(venv / "bin/python").startswith(str(venv / "lib"))
    check_console_scripts(venv / "bin", tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pipx_install_from_a_clone(tmp_path):
    clone = copy_of_the_clone(tmp_path / "clone")
    # pipx itself, from the package index, in a venv of its own.
    tools = tmp_path / "tools"
    assert run([sys.executable, "-m", "venv", tools], 120).returncode == 0
    got = run([tools / "bin/python", "-m", "pip", "install", "--disable-pip-version-check", "pipx"], 600)
    assert got.returncode == 0, got.stdout + got.stderr
    home, bin_dir = tmp_path / "pipx", tmp_path / "bin"
    env = {**os.environ, "PIPX_HOME": str(home), "PIPX_BIN_DIR": str(bin_dir), "PIPX_MAN_DIR": str(tmp_path / "man")}
    # As the README says, in the clone.
    installed = run([tools / "bin/pipx", "install", "."], 600, env=env, cwd=clone)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    shutil.rmtree(clone)
    assert sorted(p.name for p in bin_dir.iterdir()) == ["flac2all", "flac2all_worker"]
    assert site_of(home / "venvs" / "flac2all" / "bin" / "python").startswith(str(home))
    check_console_scripts(bin_dir, tmp_path)


def test_readme_says_where_the_programs_are_and_how_to_install_otherwise():
    text = (REPO / "README.md").read_text()
    top = text[: text.index("flac2all converts a whole FLAC library")]
    for words in (
        ".venv/bin/flac2all`",
        ".venv/bin/flac2all_worker`",
        "~/.local/bin",
        "`pip install .`",
        "`pipx install .`",
    ):
        assert words in top, words
    # The Debian packages named for pip and pipx are those run.sh installs.
    assert readme_command("apt-get install") == "apt-get install -y --no-install-recommends " + " ".join(apt_packages())
    assert f"(`{' '.join(apt_packages())}`)" in " ".join(top.split())
    # ...and the PATH example links the programs run.sh makes.
    link = readme_command("ln -s")
    assert '"$PWD/.venv/bin/flac2all" "$PWD/.venv/bin/flac2all_worker"' in link


# ------------------------------------------------------ run.sh, not as root


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A folder the unprivileged user can write, outside pytest's
    tmp_path (which only its owner can enter)."""
    folder = Path(tempfile.mkdtemp(prefix="flac2all-nobody-"))
    if os.geteuid() == 0:
        os.chown(folder, NOBODY, NOBODY)
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def give_to_nobody(root: Path) -> None:
    if os.geteuid() != 0:
        return
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, NOBODY, NOBODY)


def as_nobody(
    argv: list[str | Path], folder: Path, path: list[Path | str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``folder`` as the unprivileged user 'nobody' (or as
    the current user when that is not root), with only ``path`` on PATH."""
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if os.geteuid() == 0 else []
    env = {"PATH": os.pathsep.join(map(str, path)), "HOME": str(folder), "LANG": "C.UTF-8"}
    return run([*prefix, *argv], timeout, cwd=folder, env=env)


def recorder(folder: Path, name: str, status: int = 0) -> None:
    """A tiny real ``name`` that appends its arguments to folder/name.log
    and exits with ``status``."""
    exe = folder / name
    exe.write_text(f'#!/bin/sh\necho "$*" >> "{folder}/{name}.log"\nexit {status}\n')
    exe.chmod(0o755)


def calls(folder: Path, name: str) -> list[str]:
    log = folder / f"{name}.log"
    return log.read_text().splitlines() if log.exists() else []


def path_without(folder: Path, *hidden: str) -> Path:
    """A bin folder with what run.sh needs to reach its apt decision, less
    ``hidden``: links to the real programs, Debian's python3 for python3."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    needed = [
        "sh",
        "dirname",
        "id",
        "flac",
        "metaflac",
        "lame",
        "oggenc",
        "opusenc",
        "ffmpeg",
        "ffprobe",
        "sox",
        "loudgain",
        "gcc",
    ]
    for program in [*needed, "setpriv"]:
        if program not in hidden:
            (bin_dir / program).symlink_to(shutil.which(program))
    (bin_dir / "python3").symlink_to(debian_python())
    return bin_dir


def debian_python() -> str:
    # The system's python3, which 'nobody' can run (a pyenv one under
    # /root cannot be reached by it).
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("no python3")


def run_sh_copy(folder: Path) -> Path:
    shutil.copy2(REPO / "run.sh", folder / "run.sh")
    return folder / "run.sh"


@pytest.mark.parametrize("job", ["demo", "test", "install"])
def test_run_sh_not_root_without_sudo_prints_the_apt_line_and_stops(nobody_dir, job):
    run_sh_copy(nobody_dir)
    fakes = nobody_dir / "fakes"
    fakes.mkdir()
    recorder(fakes, "apt-get")  # would record any apt-get run as 'nobody'
    give_to_nobody(nobody_dir)
    done = as_nobody(["./run.sh", job], nobody_dir, [fakes, path_without(nobody_dir, "sox")], 60)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "missing: sox (from Debian packages; not root, and no sudo here). As root, run:"
    assert lines[1].strip() == root_line()
    assert lines[2] == f"then run ./run.sh {job} again (as yourself: the rest needs no root)."
    assert calls(fakes, "apt-get") == []
    assert not (nobody_dir / ".venv").exists()


def test_run_sh_not_root_uses_sudo_for_what_is_missing(nobody_dir):
    run_sh_copy(nobody_dir)
    fakes = nobody_dir / "fakes"
    fakes.mkdir()
    recorder(fakes, "apt-get")
    recorder(fakes, "sudo")  # "installs" nothing: sox stays missing
    give_to_nobody(nobody_dir)
    done = as_nobody(["./run.sh", "demo"], nobody_dir, [fakes, path_without(nobody_dir, "sox")], 60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "installing Debian packages with sudo (missing: sox)" in done.stdout
    assert calls(fakes, "sudo") == [
        "apt-get update",
        "apt-get install -y --no-install-recommends " + " ".join(apt_packages()),
    ]
    assert calls(fakes, "apt-get") == []  # only through sudo
    # sudo succeeded but the program is still not there: said, not ignored.
    assert done.stderr.strip() == "still missing after apt-get install: sox"


def test_run_sh_not_root_when_sudo_fails_prints_the_apt_line(nobody_dir):
    run_sh_copy(nobody_dir)
    fakes = nobody_dir / "fakes"
    fakes.mkdir()
    recorder(fakes, "sudo", status=1)  # not in sudoers, or a wrong password
    give_to_nobody(nobody_dir)
    done = as_nobody(["./run.sh", "test"], nobody_dir, [fakes, path_without(nobody_dir, "lame", "opusenc")], 60)
    assert done.returncode == 1
    assert "(missing: lame opusenc)" in done.stdout
    assert calls(fakes, "sudo") == ["apt-get update"]
    assert done.stderr.splitlines() == ["sudo apt-get failed; as root, run:", "    " + root_line()]


def refusing_apt(folder: Path) -> Path:
    """A folder of an apt-get and a sudo that record their calls and fail:
    put first on PATH, any call is seen, and none installs anything."""
    fakes = folder / "fakes"
    fakes.mkdir()
    recorder(fakes, "apt-get", status=1)
    recorder(fakes, "sudo", status=1)
    return fakes


def failing_venv(folder: Path) -> Path:
    """A python3 that is Debian's except that ``-m venv`` fails at once
    (status 3): run.sh's Python part starts, and stops there."""
    fake = folder / "fakepython"
    fake.mkdir()
    exe = fake / "python3"
    exe.write_text(
        f'#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = venv ]; then echo "venv reached" >&2; exit 3; fi\n'
        f'exec {debian_python()} "$@"\n'
    )
    exe.chmod(0o755)
    return fake


@pytest.mark.parametrize("job", ["demo", "test", "install"])
def test_run_sh_not_root_with_nothing_missing_needs_no_root(nobody_dir, job):
    run_sh_copy(nobody_dir)
    fakes = refusing_apt(nobody_dir)
    python = failing_venv(nobody_dir)
    give_to_nobody(nobody_dir)
    done = as_nobody(["./run.sh", job], nobody_dir, [python, fakes, path_without(nobody_dir)], 60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip() == "venv reached"
    assert calls(fakes, "apt-get") == [] and calls(fakes, "sudo") == []
    if job == "install":
        assert done.stdout.strip() == "Debian packages: nothing missing (not root, so apt-get not run)"


@pytest.mark.skipif(os.geteuid() != 0, reason="CI's case: ./run.sh install as root")
def test_run_sh_install_as_root_always_runs_apt_get(tmp_path):
    run_sh_copy(tmp_path)
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    recorder(fakes, "apt-get")
    python = failing_venv(tmp_path)
    env = {"PATH": os.pathsep.join(map(str, [python, fakes, path_without(tmp_path)])), "HOME": str(tmp_path)}
    done = run(["./run.sh", "install"], 60, cwd=tmp_path, env=env)
    assert done.returncode == 3, done.stdout + done.stderr  # on to the venv
    assert "installing Debian packages (missing: none)" in done.stdout
    assert calls(fakes, "apt-get") == [
        "update",
        "install -y --no-install-recommends " + " ".join(apt_packages()),
    ]
    # demo and test as root with nothing missing: no apt-get.
    (fakes / "apt-get.log").unlink()
    assert run(["./run.sh", "demo"], 60, cwd=tmp_path, env=env).returncode == 3
    assert calls(fakes, "apt-get") == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_sh_demo_on_a_fresh_copy_as_a_user_who_is_not_root(nobody_dir):
    clone = copy_of_the_clone(nobody_dir / "clone")
    fakes = refusing_apt(nobody_dir)
    give_to_nobody(nobody_dir)
    # The system's PATH (with Debian's python3), every program there.
    done = as_nobody(["./run.sh", "demo"], clone, [fakes, "/usr/local/bin", "/usr/bin", "/bin"], 800)
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls(fakes, "apt-get") == [] and calls(fakes, "sudo") == []
    # The README's "where the program is".
    for program in ("flac2all", "flac2all_worker"):
        assert os.access(clone / ".venv" / "bin" / program, os.X_OK)
    assert "Files we managed to convert successfully" in done.stdout
    out = clone / "build" / "demo" / "out"
    assert decodes(next((out / "opus").rglob("*.opus")))
    if os.geteuid() == 0:
        assert (out / "conversion_results.log").stat().st_uid == NOBODY


def recording_venv(folder: Path) -> Path:
    """A python3 whose ``-m venv DIR`` makes a venv of recorders: its
    python and flac2all append their arguments to DIR/calls.log."""
    fake = folder / "fakepython"
    fake.mkdir()
    recorder_body = '#!/bin/sh\necho "$(basename "$0") $*" >> "$(dirname "$0")/../calls.log"\n'
    (fake / "python3").write_text(
        '#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = venv ]; then\n'
        '  mkdir -p "$3/bin"\n'
        f"  for p in python flac2all; do printf '%s' '{recorder_body}' > \"$3/bin/$p\"; chmod +x \"$3/bin/$p\"; done\n"
        f'  exit 0\nfi\nexec {debian_python()} "$@"\n'
    )
    (fake / "python3").chmod(0o755)
    return fake


@pytest.mark.parametrize(
    "job, install",
    [
        ("demo", "python -m pip install --quiet --disable-pip-version-check -e ."),
        ("test", "python -m pip install --quiet --disable-pip-version-check -e .[test,dask,docs]"),
        ("install", "python -m pip install --quiet --disable-pip-version-check -e .[test,dask,docs]"),
    ],
)
def test_run_sh_demo_installs_flac2all_alone_and_test_what_the_tests_use(nobody_dir, job, install):
    run_sh_copy(nobody_dir)
    fakes = refusing_apt(nobody_dir)
    python = recording_venv(nobody_dir)
    give_to_nobody(nobody_dir)
    path = [python, fakes, "/usr/local/bin", "/usr/bin", "/bin"]
    done = as_nobody(["./run.sh", job], nobody_dir, path, 60)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (nobody_dir / ".venv" / "calls.log").read_text().splitlines()
    assert log[0] == install
    again = as_nobody(["./run.sh", job], nobody_dir, path, 60)
    assert again.returncode == 0 and (nobody_dir / ".venv" / "calls.log").read_text().count(" pip ") == 1
    if job == "demo":  # then the tests need their extras: installed then, once
        as_nobody(["./run.sh", "test"], nobody_dir, path, 60)
        log = (nobody_dir / ".venv" / "calls.log").read_text().splitlines()
        assert [line for line in log if " pip " in line][1].endswith("-e .[test,dask,docs]")
