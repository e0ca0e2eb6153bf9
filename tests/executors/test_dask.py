"""The Dask executor with real processes on 127.0.0.1: a ``dask scheduler``
and two ``dask worker`` processes (each a nanny and its worker process),
started once for the module; fake encoders first on the workers' PATH.

Without the dask extra these tests are skipped locally and fail under
CI=true, as a missing encoder is (conftest.require).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from flac2all.executors.dask import job_key
from flac2all.model import Action, Job, Layout, Settings, SourceFacts, Status, Task, TaskResult
from tests.cluster.processes import Proc, alive, needs_namespaces, node_mounts
from tests.conftest import REPO, audio_bytes, decodes, make_flac, mutagen_file, read_log, run_flac2all, temp_files
from tests.face.test_display import on_screen, run_on_terminal

pytestmark = pytest.mark.timeout(120)

# The fake opusenc's behaviour is chosen by its output's folder (the tests'
# own folder names are lower case: they never contain these).
SLOW, KILLS = "__SLOW__", "__KILLS__"


def require_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install the dask extra: pip install '.[dask]'")
        pytest.skip("the dask extra is not installed")


def fake_opusenc(folder: Path, marks: Path) -> None:
    """An opusenc that, for an output named __KILLS__, SIGKILLs the Dask
    worker process that started it; for one named __SLOW__, marks its start
    (file: its pid; content: the worker process's pid), writes a partial
    output and hangs, unless ``marks/rerun`` exists; else the real one."""
    real = shutil.which("opusenc")
    exe = folder / "opusenc"
    exe.write_text(f"""#!/bin/bash
case "$1" in --version) exec {real} "$@";; esac
out="${{@: -1}}"
case "$out" in
*{KILLS}*) kill -9 $PPID; sleep 30; exit 1;;
*{SLOW}*)
    if [ ! -e {marks}/rerun ]; then
        echo $PPID > {marks}/$$
        printf partial > "$out"
        sleep 60
        exit 1
    fi
    date +%s.%N > {marks}/rerun.$$;;
esac
exec {real} "$@"
""")
    exe.chmod(0o755)


class DaskCluster:
    """A scheduler (allowed-failures 1; a worker holds only the jobs it
    runs) and two single-thread workers whose PATH starts with the fakes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.marks = root / "marks"
        self.marks.mkdir()
        fakes = root / "fakebin"
        fakes.mkdir()
        fake_opusenc(fakes, self.marks)
        self.file = root / "scheduler.json"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
            "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0",
        }
        dask = [sys.executable, "-m", "dask"]
        self.scheduler = Proc(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"]
            + ["--scheduler-file", str(self.file)],
            env,
        )
        self.address = self.scheduler.wait_for(r"Scheduler at:\s+(tcp://\S+)", 60).group(1)
        env["PATH"] = f"{fakes}{os.pathsep}{env['PATH']}"
        self.workers = [
            Proc(
                [*dask, "worker", self.address, "--nthreads", "1", "--no-dashboard", "--death-timeout", "30"]
                + ["--local-directory", str(root / f"worker{i}")],
                env,
            )
            for i in range(2)
        ]
        self.ready()

    def ready(self, timeout: float = 60) -> None:
        """Both workers connected (a killed one is restarted by its nanny)."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(2, timeout=timeout)
        for mark in self.marks.iterdir():
            mark.unlink()

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            proc.kill()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    require_dask()
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(dask_cluster):
    dask_cluster.ready()
    return dask_cluster


def lib(root: Path, *names: str) -> Path:
    for name in names:
        # A folder per source: the fake opusenc sees only its output's temp
        # name, in the output folder named after it.
        make_flac(root / name / f"{name}.flac", seconds=0.2, tags={"TITLE": name})
    return root


def flac2all(*args: str | Path) -> Proc:
    return Proc([sys.executable, "-m", "flac2all", *map(str, args)], {**os.environ, "PYTHONUNBUFFERED": "1"})


def outcome(rows: list[dict]) -> list[tuple[str, str, str, str]]:
    return sorted((r["infile"], r["outfile"], r["format"], r["conversion_status"]) for r in rows)


def wait_for_marks(marks: Path, count: int = 1, timeout: float = 30) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in marks.iterdir() if m.name.isdigit() and m.read_text().strip()]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no fake encoder started within {timeout} s")


@pytest.mark.slow
def test_a_dask_run_matches_a_local_run(cluster, tmp_path):
    music = lib(tmp_path / "music", *(f"t{n}" for n in range(6)))
    local, remote = tmp_path / "local", tmp_path / "remote"
    here = flac2all("mp3,opus", "-o", local, music)
    assert here.wait(60) == 0, here.output
    there = flac2all("mp3,opus", "--dask", cluster.address, "-o", remote, music)
    assert there.wait(60) == 0, there.output
    assert f"Dask scheduler {cluster.address}, dashboard: http://127.0.0.1:" in there.output
    assert "Checked the encoders on the Dask worker" in there.output
    rows = read_log(remote)
    assert len(rows) == 12 and all(r["conversion_status"] == "SUCCESS" for r in rows)
    assert outcome(rows) == [(i, o.replace(str(local), str(remote)), f, s) for i, o, f, s in outcome(read_log(local))]
    for made in local.rglob("*.*"):
        if made.suffix in (".mp3", ".opus"):
            twin = remote / made.relative_to(local)
            assert audio_bytes(twin) == audio_bytes(made)
            assert sorted(mutagen_file(twin).tags.items()) == sorted(mutagen_file(made).tags.items())
    assert temp_files(remote) == []


@pytest.mark.slow
def test_sigkill_of_a_worker_mid_job_reruns_it_once(cluster, tmp_path):
    music = lib(tmp_path / "music", "a", "b", f"c{SLOW}", "d", "e")
    out = tmp_path / "out"
    run = flac2all("mp3,opus", "--dask-scheduler-file", cluster.file, "-o", out, music)
    (mark,) = wait_for_marks(cluster.marks)
    encoder, worker = int(mark.name), int(mark.read_text())
    assert list(out.rglob(".flac2all-tmp-*")), "the partial output is there"
    (cluster.marks / "rerun").touch()
    os.kill(worker, signal.SIGKILL)
    assert run.wait(60) == 0, run.output
    assert "left; the scheduler reruns its 1 job(s)" in run.output
    assert list(cluster.marks.glob("rerun.*")), "the job ran again"
    rows = read_log(out)
    assert len(rows) == 10 and len({r["outfile"] for r in rows}) == 10  # each task once
    assert all(r["conversion_status"] == "SUCCESS" for r in rows), rows
    for row in rows:
        assert decodes(Path(row["outfile"]))
    assert temp_files(out) == []  # the killed worker's partial output swept
    assert not alive(encoder)  # died with its worker process


@pytest.mark.slow
def test_a_job_that_kills_its_worker_every_time_fails_with_the_reason(cluster, tmp_path):
    music = lib(tmp_path / "music", "a", f"b{KILLS}", "c")
    out = tmp_path / "out"
    run = flac2all("mp3,opus", "--dask", cluster.address, "-o", out, music)
    assert run.wait(90) == 1, run.output
    rows = read_log(out)
    assert len(rows) == 6
    failed = [r for r in rows if KILLS in r["infile"]]
    assert [r["format"] for r in sorted(failed, key=lambda r: r["format"])] == ["mp3", "opus"]
    for row in failed:
        assert row["conversion_status"] == (
            "ERROR: Dask workers died under this job 2 times (distributed.scheduler.allowed-failures = 1)"
        )
    assert all(r["conversion_status"] == "SUCCESS" for r in rows if r not in failed), (rows, run.output)
    assert temp_files(out) == []


@pytest.mark.slow
def test_ctrl_c_on_the_client_stops_the_jobs_and_writes_the_log(cluster, tmp_path):
    music = lib(tmp_path / "music", "a", "b", f"c{SLOW}")
    out = tmp_path / "out"
    run = flac2all("mp3,opus", "--dask", cluster.address, "-o", out, music)
    (mark,) = wait_for_marks(cluster.marks)
    run.wait_for(r"^encoded .*/b\.opus", 30)
    run.wait_for(r"^encoded .*/a\.opus", 30)
    run.signal(signal.SIGINT)
    assert run.wait(30) == 130, run.output
    rows = read_log(out)
    assert sorted(Path(r["outfile"]).name for r in rows) == ["a.mp3", "a.opus", "b.mp3", "b.opus"]
    assert temp_files(out) == []
    assert not alive(int(mark.name))  # its encoder was stopped
    assert alive(int(mark.read_text()))  # but not the worker: the cluster serves on


BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"


def venv_python(folder: Path) -> Path:
    """The interpreter of a new venv at ``folder`` (no pip, no packages)."""
    subprocess.run([str(BASE_PYTHON), "-m", "venv", "--without-pip", str(folder)], check=True, timeout=60)
    return folder / "bin" / "python"


def without_dask(python: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``flac2all --dask`` by a real interpreter that lacks dask: a venv's
    with no packages, or the system's with -S (no site-packages), given a
    path that holds every package installed here but dask's."""
    site = Path(sysconfig.get_paths()["purelib"])
    dask_free = tmp_path / "site"
    if not dask_free.exists():
        dask_free.mkdir()
        for entry in site.iterdir():
            if not entry.name.startswith(("dask", "distributed", "flac2all", "__editable__")):
                (dask_free / entry.name).symlink_to(entry)
        (tmp_path / "music").mkdir()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{dask_free}"}
    isolated = ["-S"] if python == BASE_PYTHON else []
    check = [str(python), *isolated, "-c", "import mutagen, zmq, rich; import distributed"]
    assert subprocess.run(check, env=env, capture_output=True).returncode == 1  # dask really is missing
    return subprocess.run(
        [str(python), *isolated, "-m", "flac2all", "opus", "--dask", "tcp://127.0.0.1:9", "-o", "out", "music"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_without_the_dask_extra_dask_options_exit_2_at_once(tmp_path):
    """In a venv: that venv's own pip, and where its dask program will be."""
    venv = tmp_path / "venv"
    python = venv_python(venv)
    started = time.monotonic()
    proc = without_dask(python, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"--dask needs Dask, which is not installed: {venv / 'bin' / 'pip'} install 'flac2all[dask]'" in (
        proc.stderr
    )
    assert f"the dask program is then {venv / 'bin' / 'dask'}" in proc.stderr
    assert time.monotonic() - started < 10
    assert not (tmp_path / "out").exists()  # nothing was touched


def test_the_dask_install_hint_fits_a_pipx_install_and_a_system_one(tmp_path):
    """pipx's venv (Debian's pip refuses to install into it, its pip is not
    on PATH): pipx inject; a Python of the system's: pip --user."""
    pipx_venv = tmp_path / "home" / ".local" / "share" / "pipx" / "venvs" / "flac2all"
    proc = without_dask(venv_python(pipx_venv), tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "not installed: pipx inject flac2all 'dask[distributed]' dask-jobqueue" in proc.stderr
    assert f"the dask program is then {pipx_venv / 'bin' / 'dask'}" in proc.stderr
    system = without_dask(BASE_PYTHON, tmp_path)
    assert system.returncode == 2, system.stderr
    assert "not installed: pip install --user 'flac2all[dask]'" in system.stderr
    assert f"the dask program is then {tmp_path / 'home' / '.local' / 'bin' / 'dask'}" in system.stderr


def test_what_travels_to_the_workers_pickles():
    """Settings (a mappingproxy inside), tasks with hostile paths, results:
    Dask pickles them; plain pickle must do."""
    settings = Settings(Path("/in"), Path("/out"), ("mp3",), layout=Layout.FLAT, options={"lame": ("-V", "2")})
    task = Task(Path(os.fsdecode(b"/in/caf\xe9 -x.flac")), "mp3", Path("/out/x.mp3"), Action.ENCODE, 5)
    result = TaskResult(task, Status.SUCCESS, "note", 0, 1.5, SourceFacts(1, 2, "md5", "t", "p"))
    for value in (settings, Job((task,), 1.0), result):
        assert pickle.loads(pickle.dumps(value)) == value
    again = pickle.loads(pickle.dumps(settings))
    assert dict(again.options) == {"lame": ("-V", "2")}
    with pytest.raises(TypeError):
        again.options["lame"] = ()  # still read-only
    key = job_key("run1", 3, Job((task,)))
    assert key.startswith("flac2all_encode-run1-000003-caf") and key.encode("utf-8")


@pytest.mark.slow
def test_from_python_with_the_callers_client_and_its_host_rows(cluster, tmp_path):
    """engine.run with a DaskExecutor around a Client of one's own (a
    dask-jobqueue cluster's, for example): the client stays open, and the
    display's host rows come from the scheduler and the run."""
    from distributed import Client

    from flac2all.executors.dask import DaskExecutor
    from flac2all.face import console
    from flac2all.running import engine

    music = lib(tmp_path / "music", "a", "b", "c")
    seen = []

    class Watch(console.Silent):
        def begin(self, total, hosts, root, jobs):
            self.hosts = hosts

        def finished(self, result):
            seen.append(self.hosts())

    with Client(cluster.address) as client:
        executor = DaskExecutor(client, say=lambda line: None)
        report = engine.run(Settings(music, tmp_path / "out", ("opus",)), Watch(), executor=executor)
        assert client.status == "running"
    assert report.exit_status == 0 and len(report.results) == 3
    (row,) = seen[-1]
    assert (row.host, row.processes, row.done) == (socket.gethostname(), 0, 3)  # none busy after the last
    assert all(row.processes <= 2 for rows in seen for row in rows)  # two workers of one thread


@pytest.mark.slow
def test_one_executor_at_a_time(tmp_path):
    (tmp_path / "music").mkdir()
    for extra in (["-m"], ["--dask-scheduler-file", "s.json"], ["--dask-jobqueue", "slurm"]):
        run = run_flac2all("opus", "--dask", "tcp://127.0.0.1:9", *extra, "-o", tmp_path / "out", tmp_path / "music")
        assert run.returncode == 2
        assert "choose one of -m, --dask, --dask-scheduler-file and --dask-jobqueue" in run.stderr


@pytest.fixture(scope="module")
def two_threads(tmp_path_factory):
    """A scheduler of Dask's default worker-saturation (1.1) and one worker
    of 2 threads, whose opusenc takes a second more a file; the scheduler's
    address."""
    require_dask()
    root = tmp_path_factory.mktemp("dask2")
    real = shutil.which("opusenc")
    (root / "opusenc").write_text(
        f'#!/bin/bash\ncase "$1" in --version) exec {real} "$@";; esac\nsleep 1\nexec {real} "$@"\n'
    )
    (root / "opusenc").chmod(0o755)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.1"}
    dask = [sys.executable, "-m", "dask"]
    scheduler = Proc([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"], env)
    procs = [scheduler]
    try:
        address = scheduler.wait_for(r"Scheduler at:\s+(tcp://\S+)", 60).group(1)
        worker = [*dask, "worker", address, "--nthreads", "2", "--no-dashboard", "--local-directory", str(root / "w")]
        procs.append(Proc(worker, {**env, "PATH": f"{root}{os.pathsep}{env['PATH']}"}))
        yield address
    finally:
        for proc in procs:
            proc.kill()


def eight_files(root: Path) -> Path:
    for n in range(8):
        make_flac(root / f"{n:02d}.flac", seconds=1.5)
    return root


@pytest.mark.slow
def test_the_display_shows_no_more_files_in_progress_than_the_worker_has_threads(two_threads, tmp_path):
    """Dask gives a worker of 2 threads 3 jobs (worker-saturation 1.1):
    the third waits there, and the display shows at most 2 files in
    progress and at most 2 busy, the jobs it shows running."""
    music = eight_files(tmp_path / "music")
    code, sent = run_on_terminal(["opus", "--dask", two_threads, "-o", tmp_path / "out", music], 30, 120)
    assert code == 0, sent
    frames = [on_screen(sent[: m.start()]) for m in re.finditer(re.escape("\r\x1b[2K"), sent)]
    shown = [progress(frame) for frame in frames if any(STATUS.search(line) for line in frame)]
    assert shown and all(files <= 2 and busy <= 2 for files, busy in shown), frames
    assert shown[0] == (0, 0), shown  # none busy before the first job starts
    assert (2, 2) in shown, shown  # it did show the two running


@pytest.mark.slow
def test_the_dashboard_s_final_table_has_one_row_per_host_none_busy(two_threads, tmp_path):
    """A worker's host is named before its first result: no row under its
    address stays in the table, with files it no longer converts."""
    music = eight_files(tmp_path / "music")
    code, sent = run_on_terminal(["opus", "-C", "--dask", two_threads, "-o", tmp_path / "out", music], 30, 120)
    assert code == 0, sent
    after = on_screen(sent.split("\x1b[?1049l")[-1])
    table = after[after.index(next(line for line in after if line.startswith("host"))) + 1 :]
    table = table[: next(i for i, line in enumerate(table) if line.startswith("total")) + 1]
    assert [line.split()[:3] for line in table] == [[socket.gethostname(), "0", "8"], ["total", "0", "8"]], after


STATUS = re.compile(r"\b\d+/\d+ tasks\b")


def progress(screen: list[str]) -> tuple[int, int]:
    """(files in progress, busy figure) of the live display on ``screen``:
    the lines below its last status line, and its "N busy"."""
    at = max(i for i, line in enumerate(screen) if STATUS.search(line))
    busy = re.search(r"\b(\d+) busy\b", screen[at])
    return len([line for line in screen[at + 1 :] if re.match(r"  \S", line)]), int(busy.group(1)) if busy else 0


@pytest.mark.slow
@needs_namespaces
def test_a_dask_worker_that_sees_the_folders_elsewhere_says_where_in_its_environment(tmp_path):
    """One ``dask worker`` in its own mount namespace, where the client's
    folders are mounted elsewhere and the client's paths hidden, with
    FLAC2ALL_MAP: it converts them; with a wrong map the run stops before
    any job, naming the map."""
    require_dask()
    music = tmp_path / "fileserver" / "storage" / "music"
    for n in range(3):
        make_flac(music / "Album" / f"0{n} track.flac", seconds=0.3, tags={"TITLE": f"Title {n}", "ALBUM": "Ålbum"})
    out = tmp_path / "fileserver" / "storage" / "out"
    out.mkdir()
    dask = [sys.executable, "-m", "dask"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    scheduler = Proc([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"], env)
    procs = [scheduler]
    try:
        address = scheduler.wait_for(r"Scheduler at:\s+(tcp://\S+)", 60).group(1)

        def worker(node: str, wrong: Path | None = None) -> Proc:
            setup, lib_there, out_there = node_mounts(tmp_path, node, music, out)
            maps = os.pathsep.join([f"{music}={wrong or lib_there}", f"{out}={out_there}"])
            argv = [*dask, "worker", address, "--nthreads", "1", "--no-dashboard"]
            argv += ["--local-directory", str(tmp_path / f"{node}-local")]
            script = f'{setup} && exec "$@"'
            proc = Proc(["unshare", "-m", "sh", "-c", script, "sh", *argv], {**env, "FLAC2ALL_MAP": maps})
            procs.append(proc)
            proc.wait_for(r"Registered to", 60)
            return proc

        there = tmp_path / "node1" / "mnt" / "nowhere"
        wrong = worker("node1", there)
        run = flac2all("mp3", "--dask", address, "-o", out, music)
        assert run.wait(60) == 2, run.output
        assert f"FLAC2ALL_MAP {music}={there}: {there} is not a folder there" in run.output
        assert not list(out.rglob("*.mp3"))
        wrong.kill()
        procs.remove(wrong)
        worker("node2")
        run = flac2all("mp3", "--dask", address, "-o", out, music)
        assert run.wait(90) == 0, run.output
    finally:
        for proc in procs:
            proc.kill()
    rows = read_log(out)
    assert len(rows) == 3 and all(r["conversion_status"] == "SUCCESS" for r in rows), rows
    assert all(r["infile"].startswith(f"{music}/") and r["outfile"].startswith(f"{out}/") for r in rows)
    for n in range(3):
        output = out / "mp3" / "Album" / f"0{n} track.mp3"
        assert decodes(output) and mutagen_file(output).tags["TIT2"].text == [f"Title {n}"]
    assert temp_files(out) == []
