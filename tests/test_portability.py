"""flac2all as a FreeBSD host would run it, on Linux: every Python it starts
has the Linux-only interfaces removed before flac2all is imported (no
pidfd, no splice/tee, no pipe resizing, a posix_spawn that cannot start a
session), and sees an empty /proc (its own mount namespace, a tmpfs over
/proc; needs root and unshare, as CI has).

A local run, a master with two workers and a Dask run each convert a small
album, with every output checked; the fallbacks behind the guarantees
(encoders killed with a SIGKILLed run, no descriptor inherited, a hung
encoder named) are each driven to their end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flac2all.running import blame
from tests.cluster.processes import Proc
from tests.codecs.test_contract import BASIC_TAGS, basic_tags
from tests.conftest import decodes, duration, make_flac, read_log, source_length, temp_files
from tests.executors.test_dask import require_dask

# What FreeBSD's Python lacks that Linux's has, removed before anything is
# imported (sitecustomize runs at start-up, before the program's modules).
SITECUSTOMIZE = """
import fcntl, os

for module, names in (
    (os, ("pidfd_open", "splice", "SPLICE_F_MOVE", "SPLICE_F_NONBLOCK", "SPLICE_F_MORE", "memfd_create",
          "eventfd", "sched_getaffinity", "sched_setaffinity", "getxattr", "setxattr", "listxattr",
          "removexattr", "O_PATH", "O_TMPFILE")),
    (fcntl, ("F_SETPIPE_SZ", "F_GETPIPE_SZ", "F_OFD_GETLK", "F_OFD_SETLK", "F_OFD_SETLKW")),
):
    for name in names:
        if hasattr(module, name):
            delattr(module, name)

_posix_spawn = os.posix_spawn


def posix_spawn(path, argv, env, *, setsid=False, **kw):
    if setsid:  # as CPython where the C library has no POSIX_SPAWN_SETSID
        raise NotImplementedError("The setsid option is not supported on this system.")
    return _posix_spawn(path, argv, env, **kw)


os.posix_spawn = posix_spawn
"""

# Its own mount namespace with an empty tmpfs over /proc, then the command.
NO_PROC = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount -t tmpfs -o size=64k noproc /proc && exec "$@"',
    "no-proc",
]

MODES = {"mp3": ".mp3", "vorbis": ".ogg", "opus": ".opus", "aac": ".m4a", "flac": ".flac"}
FAMILIES = {"mp3": "id3", "vorbis": "vorbis", "opus": "vorbis", "aac": "mp4", "flac": "vorbis"}


class FreeBSDLike:
    """Runs commands in the mode: ``argv`` prefixed, ``env`` with the
    sitecustomize first on PYTHONPATH (inherited by every Python the
    command starts)."""

    def __init__(self, folder: Path, hide_proc: bool = True) -> None:
        folder.mkdir()
        (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.site = folder
        self.prefix = NO_PROC if hide_proc else []

    def env(self, path_prefix: Path | None = None) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.site), env.get("PYTHONPATH")) if p)
        if path_prefix is not None:
            env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
        return env

    def argv(self, *args: str | Path) -> list[str]:
        return [*self.prefix, sys.executable, *map(str, args)]

    def run(self, *args: str | Path, path_prefix: Path | None = None, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("timeout", 120)
        return subprocess.run(self.argv(*args), env=self.env(path_prefix), capture_output=True, text=True, **kw)

    def start(self, *args: str | Path, path_prefix: Path | None = None) -> Proc:
        return Proc(self.argv(*args), self.env(path_prefix))


@pytest.fixture
def freebsd(tmp_path: Path) -> FreeBSDLike:
    mode = FreeBSDLike(tmp_path / "site")
    probe = subprocess.run([*NO_PROC, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must allow unshare --mount: {probe.stderr}")
        pytest.skip(f"cannot hide /proc here (unshare --mount needs root): {probe.stderr.strip()}")
    return mode


@pytest.fixture
def album(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    for n, title in enumerate(("One", "Two = 2", "Drei: ü"), start=1):
        make_flac(root / "Album" / f"0{n} {title}.flac", seconds=0.2 * n, tags={**BASIC_TAGS, "TITLE": title})
    return root


def check_album(out: Path, album: Path, output: str) -> None:
    """Every mode of every track: logged a success, decodes, as long as its
    source, its tags those of its source; no temp file, no traceback."""
    assert "Traceback" not in output, output
    rows = read_log(out)
    sources = sorted(album.rglob("*.flac"))
    assert len(rows) == len(sources) * len(MODES)
    assert {r["conversion_status"] for r in rows} == {"SUCCESS"}, rows
    for src in sources:
        title = src.stem.split(" ", 1)[1]
        for mode, ext in MODES.items():
            made = out / mode / src.relative_to(album).with_suffix(ext)
            assert decodes(made), made
            assert duration(made) == pytest.approx(source_length(src), abs=0.08)
            tags = basic_tags(made, FAMILIES[mode])
            assert tags["title"] == [title] and tags["artist"] == BASIC_TAGS["ARTIST"], (made, tags)
    assert temp_files(out) == []


def test_the_mode_hides_what_freebsd_lacks(freebsd):
    """The mode itself: a test of the fallbacks is one only if it holds."""
    probe = freebsd.run(
        "-c",
        "import fcntl, os; from flac2all.running import fanout, procs; "
        "print(hasattr(os, 'pidfd_open'), hasattr(os, 'splice'), hasattr(fcntl, 'F_SETPIPE_SZ'), "
        "os.listdir('/proc'), fanout.tee(), procs.pidfd(os.getpid()))",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["False", "False", "False", "[]", "None", "None"]


def test_a_local_run_converts_an_album(freebsd, album, tmp_path):
    out = tmp_path / "out"
    run = freebsd.run("-m", "flac2all", ",".join(MODES), "-o", out, album)
    assert run.returncode == 0, run.stdout + run.stderr
    check_album(out, album, run.stdout + run.stderr)


def test_plan_json_to_dev_stdout_needs_no_proc(freebsd, album, tmp_path):
    """/dev/stdout is standard output by its name (face.config.plan_path),
    not through the link Linux makes of it into /proc: hidden here, as
    FreeBSD has none, the plan still comes out on stdout alone."""
    run = freebsd.run("-m", "flac2all", "mp3", "--dry-run", "--plan-json", "/dev/stdout", "-o", tmp_path / "out", album)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["counts"]["encode"] == 3 and "encode  3" in run.stderr


def test_encoders_run_in_a_group_of_their_own_and_inherit_no_descriptor(freebsd, album, tmp_path, fake_bin):
    """Without posix_spawn's setsid each encoder leads a process group (what
    killpg and the reaper need); without /proc to list our descriptors, one
    flac2all was given is still not passed on."""
    marks = tmp_path / "marks"
    marks.mkdir()
    real = subprocess.run(["sh", "-c", "command -v opusenc"], capture_output=True, text=True).stdout.strip()
    check = (
        "import os, sys; "
        f"open(os.path.join({str(marks)!r}, str(os.getpid())), 'w').write("
        "f'{os.getpgid(0) == os.getppid()} '"
        "+ ' '.join(str(fd) for fd in range(3, 64) if not os.system(f'true >&{fd} 2>/dev/null')))"
    )
    folder = fake_bin("opusenc", f'{sys.executable} -I -S -c "{check}"\nexec {real} "$@"\n')
    read_end, write_end = os.pipe()
    out = tmp_path / "out"
    run = subprocess.run(
        freebsd.argv("-m", "flac2all", "opus", "-o", out, album),
        env=freebsd.env(folder),
        pass_fds=(write_end,),
        capture_output=True,
        text=True,
        timeout=120,
    )
    os.close(write_end)
    assert run.returncode == 0, run.stdout + run.stderr
    seen = [m.read_text().split() for m in marks.iterdir()]
    assert len(seen) == 3
    for leads_group, *inherited in seen:  # (of the encoder: this check's parent)
        assert leads_group == "True"
        assert str(write_end) not in inherited
    assert os.read(read_end, 1) == b""  # nobody holds the write end any more
    os.close(read_end)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@pytest.mark.slow
def test_encoders_die_with_a_sigkilled_run(freebsd, album, tmp_path, fake_bin):
    """The watcher finds no process by its token without /proc: it kills
    the groups it was told of, the encoders' own children with them."""
    marks = tmp_path / "marks"
    marks.mkdir()
    folder = fake_bin("opusenc", f"echo $$ > {marks}/$$\nsleep 60 &\necho $! > {marks}/$!\nwait\n")
    run = freebsd.start("-m", "flac2all", "opus", "-o", tmp_path / "out", album, path_prefix=folder)
    deadline = time.monotonic() + 30
    while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(m.name) for m in marks.iterdir()]
    assert len(pids) >= 2 and all(alive(pid) for pid in pids)
    os.kill(run.proc.pid, signal.SIGKILL)  # unshare and sh exec'd: this is flac2all
    run.wait(10)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


@pytest.mark.slow
def test_a_hung_encoder_times_out_and_is_killed(freebsd, tmp_path, fake_bin):
    """Without a pidfd the wait for a stage polls; the hung one is killed at
    the time-out and the run goes on. (Which stage is named needs a wait
    channel: Linux's ps reads /proc, so here the decoder may be named;
    FreeBSD's ps asks the kernel.)"""
    root = tmp_path / "in"
    make_flac(root / "a.flac", seconds=2)
    folder = fake_bin("opusenc", "exec sleep 600\n")
    out = tmp_path / "out"
    run = freebsd.run("-m", "flac2all", "opus", "--timeout", "1.5", "-o", out, root, path_prefix=folder, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    (row,) = read_log(out)
    assert row["conversion_status"] in ("ERROR: opusenc timed out after 1.5 s", "ERROR: flac timed out after 1.5 s")
    assert temp_files(out) == []


def blocked_writer() -> subprocess.Popen:
    """A process asleep in a write to a pipe nobody reads."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import os; os.write(1, bytes(1 << 20))"],
        stdout=subprocess.PIPE,
    )
    time.sleep(0.5)
    return proc


@pytest.mark.parametrize("source", ["wchan_file", "wchan_ps"])
def test_each_wait_channel_source_sees_a_writer_blocked_on_a_pipe(source):
    read = getattr(blame, source)
    proc = blocked_writer()
    try:
        assert any(wait in read(proc.pid) for wait in blame.PIPE_WRITE_WAITS), read(proc.pid)
        assert blame.blocked_writing(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not blame.blocked_writing(os.getpid())  # this one is running, not writing


@pytest.mark.slow
def test_a_master_with_two_workers_converts_an_album(freebsd, album, tmp_path):
    out = tmp_path / "out"
    master = freebsd.start(
        "-m", "flac2all", ",".join(MODES), "-m", "--bind", "127.0.0.1", "--port", "0", "--insecure", "-o", out, album
    )
    workers: list[Proc] = []
    try:
        port = master.wait_for(r"Listening on tcp://127\.0\.0\.1:(\d+)", 60).group(1)
        allow = os.path.realpath(tmp_path)
        workers = [
            freebsd.start(
                *("-m", "flac2all.cluster.worker_cli", "127.0.0.1", "--port", port, "-t", str(threads)),
                *("--insecure", "--allow", allow),
            )
            for threads in (1, 2)
        ]
        assert master.wait(120) == 0, master.output
        for worker in workers:
            assert worker.wait(30) == 0, worker.output
            assert "Traceback" not in worker.output
        assert {r["host"] for r in read_log(out)} != {""}
        check_album(out, album, master.output)
    finally:
        for proc in [master, *workers]:
            proc.kill()


@pytest.mark.slow
def test_a_dask_run_converts_an_album(freebsd, album, tmp_path):
    """With /proc: Dask's psutil reads it on Linux (on FreeBSD it asks
    sysctl), so neither Dask nor a client starts without it here."""
    require_dask()
    freebsd = FreeBSDLike(tmp_path / "site-with-proc", hide_proc=False)
    out = tmp_path / "out"
    dask = ("-m", "dask")
    scheduler = freebsd.start(*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0")
    workers: list[Proc] = []
    try:
        address = scheduler.wait_for(r"Scheduler at:\s+(tcp://\S+)", 60).group(1)
        workers = [
            freebsd.start(*dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--death-timeout", "30")
            for _ in range(2)
        ]
        run = freebsd.run("-m", "flac2all", ",".join(MODES), "--dask", address, "-o", out, album)
        assert run.returncode == 0, run.stdout + run.stderr
        check_album(out, album, run.stdout + run.stderr)
    finally:
        for proc in [*workers, scheduler]:
            proc.kill()


@pytest.mark.slow
def test_a_watcher_converts_an_album_that_arrives(freebsd, album, tmp_path):
    """--watch without /proc (no inotify limit to read) and without pidfds:
    the first run, then an album copied in later is converted by a batch."""
    pytest.importorskip("watchdog")
    out = tmp_path / "out"
    watcher = freebsd.start("-m", "flac2all", ",".join(MODES), "-o", out, "--watch", "--settle", "1", album)
    try:
        deadline = time.monotonic() + 60
        while not (out / "conversion_results.log").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        arrived = album / "Later" / "01 One.flac"
        make_flac(tmp_path / "staging.flac", seconds=0.2, tags={**BASIC_TAGS, "TITLE": "One"})
        arrived.parent.mkdir()
        os.replace(tmp_path / "staging.flac", arrived)
        while len(read_log(out)) < 4 * len(MODES) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        watcher.proc.send_signal(signal.SIGTERM)
    assert watcher.wait(30) == 128 + signal.SIGTERM
    check_album(out, album, "\n".join(watcher.lines))
