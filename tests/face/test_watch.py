"""--watch with real file-system events, real encoders and real signals:
the watcher runs as a child process (killed in teardown), each wait
bounded in time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mutagen.id3 import ID3

from tests.conftest import decodes, make_flac, read_log, run_flac2all, temp_files

SETTLE = "1"


class Watching:
    """``flac2all ... --watch`` running in the background."""

    def __init__(
        self,
        tmp_path: Path,
        *args: str | Path,
        prefix: list[str] = (),
        path_prefix: Path | None = None,
        flag: bool = True,
    ):
        self.out_path, self.err_path = tmp_path / "watch.out", tmp_path / "watch.err"
        env = dict(os.environ)
        if path_prefix is not None:
            env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
        argv = [*prefix, sys.executable, "-m", "flac2all", *map(str, args), *(["--watch"] if flag else [])]
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith("watch: ")]

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"the watcher ended ({self.proc.returncode}): {self.stdout}\n{self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.stdout}\n{self.stderr}")
            time.sleep(0.05)

    def wait_line(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        self.wait_for(lambda: sum(text in line for line in self.lines()) >= count, timeout, repr(text))

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def require_watchdog() -> None:
    """--watch's extra: skipped where it is not installed, but CI must have it."""
    try:
        import watchdog.observers  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install the test extra, which has watchdog: pip install '.[test]'")
        pytest.skip("watchdog is not installed (pip install '.[watch]')")


@pytest.fixture
def watching(tmp_path):
    require_watchdog()
    started: list[Watching] = []

    def start(*args: str | Path, **kw) -> Watching:
        w = Watching(tmp_path, *args, **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


def albums(root: Path, names: str = "ABCD", tracks: int = 1) -> Path:
    for name in names:
        for n in range(tracks):
            make_flac(root / f"Album {name}" / f"{n:02d} {name}.flac", seconds=0.2, tags={"TITLE": f"{name}{n}"})
    return root


def first_run_done(w: Watching) -> bool:
    return "Summary" in w.stdout


def encoder_starts(log: Path, name: str) -> int:
    """How many times lame started on ``name``."""
    return sum(line.startswith("lame ") and name in line for line in log.read_text().splitlines())


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_album_copied_file_by_file_over_longer_than_settle_is_encoded_once_whole(tmp_path, watching, spy):
    path_prefix, started = spy
    music, out, staged = albums(tmp_path / "music", "A"), tmp_path / "out", tmp_path / "staged"
    for n in range(6):
        make_flac(staged / f"{n:02d} new.flac", seconds=0.2)
    w = watching("mp3", "-o", out, music, "--settle", "1.5", path_prefix=path_prefix)
    w.wait_for(lambda: first_run_done(w), what="the first run")
    album = music / "Album New"
    album.mkdir()
    copy_began = time.monotonic()
    for source in sorted(staged.iterdir()):
        shutil.copyfile(source, album / source.name)
        time.sleep(0.5)  # less than the settle time between files, longer than it in all
    assert time.monotonic() - copy_began > 1.5
    w.wait_line("6 encoded")
    time.sleep(2)  # no second batch for that album
    assert w.stop() == 143
    assert w.lines() == ["watch: 6 encoded"], w.stdout
    for n in range(6):
        assert encoder_starts(started, f"{n:02d} new") == 1
        assert decodes(out / "mp3" / "Album New" / f"{n:02d} new.mp3")
    rows = read_log(out)  # the header once, the first run's rows, then the batch's
    assert [Path(r["infile"]).name for r in rows] == ["00 A.flac", *(f"{n:02d} new.flac" for n in range(6))]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_tag_edit_retags(tmp_path, watching, spy):
    path_prefix, started = spy
    music, out = albums(tmp_path / "music", "AB"), tmp_path / "out"
    w = watching("mp3", "-o", out, music, "--settle", SETTLE, path_prefix=path_prefix)
    w.wait_for(lambda: first_run_done(w), what="the first run")
    from mutagen.flac import FLAC

    source = FLAC(music / "Album B" / "00 B.flac")
    source["TITLE"] = "Retitled"
    source.save()
    w.wait_line("1 retagged")
    assert ID3(out / "mp3" / "Album B" / "00 B.mp3")["TIT2"].text == ["Retitled"]
    assert encoder_starts(started, "00 B") == 1  # the first run's encode only
    assert w.stop() == 143


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_an_album_renamed_is_moved_not_encoded(tmp_path, watching, spy):
    path_prefix, started = spy
    music, out = albums(tmp_path / "music"), tmp_path / "out"
    w = watching("mp3", "-o", out, music, "--settle", SETTLE, "--delete", path_prefix=path_prefix)
    w.wait_for(lambda: first_run_done(w), what="the first run")
    (music / "Album D").rename(music / "Album D (remaster)")
    w.wait_line("1 moved")
    assert decodes(out / "mp3" / "Album D (remaster)" / "00 D.mp3")
    assert not (out / "mp3" / "Album D").exists()
    assert encoder_starts(started, "00 D") == 1
    assert w.stop() == 143


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_second_watch_of_one_outdir_leaves_it_to_the_first(tmp_path, watching):
    """Started again (by cron, say), --watch does not pile up watchers of one
    OUTDIR, each racing the others' batches: it leaves it to the one that
    follows it, after its run, quietly with -q."""
    music, out = albums(tmp_path / "music", "AB"), tmp_path / "out"
    w = watching("mp3", "-o", out, music, "--settle", SETTLE)
    w.wait_for(lambda: first_run_done(w), what="the first run")
    again = run_flac2all("mp3", "-o", out, music, "--settle", SETTLE, "--watch", "-q", timeout=60)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    loud = run_flac2all("mp3", "-o", out, music, "--settle", SETTLE, "--watch", timeout=60)
    assert loud.returncode == 0 and "another flac2all --watch follows its OUTDIR already" in loud.stdout
    albums(music, "C")
    w.wait_line("1 encoded")
    assert w.stop() == 143
    assert [r["infile"].endswith("00 C.flac") for r in read_log(out)].count(True) == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_rescans_more_often_than_the_settle_time_do_not_postpone_a_change_for_ever(tmp_path, watching):
    # Each rescan took the change it had seen already for a new one, and the library was never quiet.
    music, out = albums(tmp_path / "music", "A"), tmp_path / "out"
    w = watching("flac", "-o", out, music, "--settle", "2", "--rescan-every", "0.5")
    w.wait_for(lambda: first_run_done(w), what="the first run")
    albums(music, "B")
    w.wait_line("1 encoded", timeout=20)
    assert (out / "flac" / "Album B" / "00 B.flac").is_file()
    assert w.stop() == 143


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["inside", "through a link", "the input itself"])
def test_an_outdir_in_the_input_starts_no_batch_of_its_own_writes(tmp_path, watching, where):
    """Each batch writes the outputs, the state and the log: where those lie
    in the input, neither their events nor a rescan is a change of it (an
    OUTDIR reached through a link was walked as input: every batch
    converted the last one's FLACs a folder deeper)."""
    music = albums(tmp_path / "music", "AB")
    inside = music / "out" if where != "the input itself" else music
    inside.mkdir(exist_ok=True)
    out = inside
    if where == "through a link":
        out = tmp_path / "mirror"
        out.symlink_to(inside)
    w = watching("flac", "-o", out, music, "--settle", SETTLE, "--rescan-every", "1")
    w.wait_for(lambda: first_run_done(w), what="the first run")
    time.sleep(4)  # settle and rescan times over, twice
    assert w.lines() == []
    albums(music, "C")
    w.wait_line("1 encoded")
    time.sleep(4)
    assert w.lines() == ["watch: 1 encoded"]
    assert sorted(p.relative_to(inside).as_posix() for p in (inside / "flac").rglob("*.flac")) == [
        "flac/Album A/00 A.flac",
        "flac/Album B/00 B.flac",
        "flac/Album C/00 C.flac",
    ]
    assert w.stop() == 143


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("delete", [True, False])
def test_a_deleted_album_is_removed_with_delete_and_kept_without(tmp_path, watching, delete):
    music, out = albums(tmp_path / "music"), tmp_path / "out"
    w = watching("mp3", "-o", out, music, "--settle", SETTLE, *(["--delete"] if delete else []))
    w.wait_for(lambda: first_run_done(w), what="the first run")
    shutil.rmtree(music / "Album C")
    w.wait_line("1 orphan deleted" if delete else "1 orphan kept")
    assert (out / "mp3" / "Album C" / "00 C.mp3").exists() is not delete
    assert (out / "mp3" / "Album D" / "00 D.mp3").exists()
    assert w.stop() == 143


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_an_empty_mount_over_the_library_deletes_nothing_and_is_said_once(tmp_path, watching, tmpfs):
    music, out = albums(tmp_path / "music"), tmp_path / "out"
    w = watching("mp3", "-o", out, music, "--settle", SETTLE, "--delete", "-q")
    w.wait_for(lambda: (out / "mp3" / "Album D" / "00 D.mp3").exists(), what="the first run")
    tmpfs(folder=music)  # an empty file system over the library: it looks unmounted
    said = "waiting for it to come back"
    w.wait_for(lambda: said in w.stderr, what="the refusal")
    (music / "stray.txt").write_text("x")  # a change on the empty mount: a batch, refused again
    time.sleep(3)
    assert w.stderr.count(said) == 1, w.stderr
    assert len(list((out / "mp3").rglob("*.mp3"))) == 4  # nothing deleted
    subprocess.run(["umount", str(music)], check=True)
    w.wait_line("the input is back")
    shutil.rmtree(music / "Album A")  # the library back, watched again: --delete as in a re-run
    w.wait_line("1 orphan deleted")
    assert len(list((out / "mp3").rglob("*.mp3"))) == 3
    assert w.stop() == 143


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_library_gone_and_back_deletes_nothing_and_is_watched_again(tmp_path, watching):
    music, out = albums(tmp_path / "music"), tmp_path / "out"
    w = watching("mp3", "-o", out, music, "--settle", SETTLE, "--delete")
    w.wait_for(lambda: first_run_done(w), what="the first run")
    away = music.rename(tmp_path / "away")
    w.wait_for(lambda: "waiting for it to come back" in w.stderr, what="the refusal")
    (away / "Album A" / "00 A.flac").unlink()  # changed where it went: not the library's change
    time.sleep(2.5)
    assert w.stderr.count("waiting for it to come back") == 1, w.stderr
    assert len(list((out / "mp3").rglob("*.mp3"))) == 4
    away.rename(music)
    w.wait_line("the input is back")
    w.wait_line("1 orphan deleted")  # what changed while it was away, as a re-run sees it
    albums(music, "E")  # and watched again where it is
    w.wait_line("1 encoded")
    assert w.stop() == 143


def in_user_namespace(limit: int) -> list[str]:
    """A command prefix: a fresh user namespace whose inotify watches are
    ``limit`` (the machine's own limit is left as it is)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare (util-linux)")
    probe = subprocess.run(
        [unshare, "--user", "--map-root-user", "sh", "-c", "echo 1 > /proc/sys/user/max_inotify_watches"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a user namespace with its own inotify limit: {probe.stderr.decode().strip()}")
    return [unshare, "--user", "--map-root-user", "sh", "-c", f'echo {limit} > {USER_LIMIT} && exec "$@"', "sh"]


USER_LIMIT = "/proc/sys/user/max_inotify_watches"


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("limit", [2, 6], ids=["at-start", "later"])
def test_the_watch_limit_is_said_once_and_rescans_follow_the_library(tmp_path, watching, limit):
    """At start: the library's 5 folders need more than 2 watches; later:
    6 hold them, the albums added then do not fit."""
    music, out = albums(tmp_path / "music"), tmp_path / "out"
    w = watching("mp3", "-o", out, music, "--settle", SETTLE, "--rescan-every", "2", prefix=in_user_namespace(limit))
    w.wait_for(lambda: first_run_done(w), what="the first run")
    for name in "EFG":
        make_flac(music / f"Album {name}" / f"00 {name}.flac", seconds=0.2)
    w.wait_for(lambda: len(list((out / "mp3").rglob("*.mp3"))) == 7, what="the new albums")
    make_flac(music / "Album H" / "00 H.flac", seconds=0.2)  # seen by a rescan
    w.wait_for(lambda: (out / "mp3" / "Album H" / "00 H.mp3").exists(), what="the album after the fallback")
    assert w.stderr.count("inotify watches ran out") == 1, w.stderr
    assert f"user.max_inotify_watches = {limit} in this user namespace" in w.stderr
    assert "raise it to" in w.stderr and "rescanned every 2 s" in w.stderr
    assert "Unable to watch" not in w.stderr  # watchdog's own warnings: one sentence of ours instead
    assert w.stop() == 143


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_where_watchdog_can_only_poll_rescans_follow_the_library(tmp_path, watching, monkeypatch):
    """As on a system with neither inotify nor kqueue: watchdog's own
    choice is its PollingObserver."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import watchdog.observers, watchdog.observers.polling\n"
        "watchdog.observers.Observer = watchdog.observers.polling.PollingObserver\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(site))
    music, out = albums(tmp_path / "music", "AB"), tmp_path / "out"
    w = watching("mp3", "-o", out, music, "--settle", SETTLE, "--rescan-every", "2")
    w.wait_for(lambda: first_run_done(w), what="the first run")
    albums(music, "C")
    w.wait_line("1 encoded")
    assert w.stderr.count("this system tells no file changes; the library is rescanned instead") == 1
    assert w.stop() == 143


def slow_lame(fake_bin, started: Path) -> Path:
    """A lame that says it started, then takes its time."""
    return fake_bin("lame", f'echo "lame $*" >> {started}\nsleep 1.5\nexec {shutil.which("lame")} "$@"\n')


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigterm_in_a_batch_leaves_nothing_partial_and_the_log_complete(tmp_path, watching, fake_bin):
    started = tmp_path / "started"
    started.touch()
    music, out = albums(tmp_path / "music", "A"), tmp_path / "out"
    w = watching("mp3", "-o", out, music, "--settle", SETTLE, "-t", "1", path_prefix=slow_lame(fake_bin, started))
    w.wait_for(lambda: first_run_done(w), what="the first run")
    albums(music, "B", tracks=4)
    # One of the batch's encodes done, the next one running.
    w.wait_for(lambda: encoder_starts(started, " B.mp3") >= 2, what="the batch's second encode")
    assert w.stop() == 143
    assert "stopping the encoders" in w.stderr
    assert temp_files(out) == []
    outputs = sorted((out / "mp3").rglob("*.mp3"))
    assert 2 <= len(outputs) < 5  # stopped in the middle
    for output in outputs:
        assert decodes(output), output
    rows = read_log(out)  # parses, one header
    # What finished, the first run's and the batch's, as an interrupted run logs it.
    assert {Path(r["infile"]).name for r in rows if r["conversion_status"] == "SUCCESS"} == {
        p.with_suffix(".flac").name for p in outputs
    }


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigint_between_batches_stops_it_and_sighup_does_not(tmp_path, watching):
    music, out = albums(tmp_path / "music", "AB"), tmp_path / "out"
    w = watching("mp3", "-o", out, music, "--settle", SETTLE)
    w.wait_for(lambda: first_run_done(w), what="the first run")
    w.proc.send_signal(signal.SIGHUP)
    albums(music, "C")
    w.wait_line("1 encoded")
    assert w.stop(signal.SIGINT) == 130
    assert len(read_log(out)) == 3


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_each_batch_runs_the_hook_with_its_summary_and_q_says_only_what_happened(tmp_path, watching):
    music, out, told = albums(tmp_path / "music", "AB"), tmp_path / "out", tmp_path / "told"
    told.mkdir()
    hook = f"sh -c 'cat > {told}/$(date +%s%N).json'"
    w = watching("mp3", "-o", out, music, "--settle", SETTLE, "-q", "--on-done", hook)
    w.wait_for(lambda: len(list(told.iterdir())) == 1, what="the first run's hook")
    (music / "notes.txt").write_text("not music")  # a batch with nothing to do: -q says nothing
    w.wait_for(lambda: len(list(told.iterdir())) == 2, what="the hook of the batch with nothing to do")
    albums(music, "C")
    w.wait_line("1 encoded")
    w.wait_for(lambda: len(list(told.iterdir())) == 3, what="the hooks of both batches")
    assert w.stdout.splitlines() == ["2 encoded", "watch: 1 encoded"]  # the first run's line, the batch's
    payloads = [json.loads(p.read_text()) for p in sorted(told.iterdir())]
    assert [p["runs"][0]["done"]["encode"] for p in payloads] == [2, 0, 1]
    assert payloads[2]["runs"][0]["done"]["skip"] == 2  # a re-run's summary: the rest up to date
    assert w.stop() == 143


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_one_process_watches_every_profile_with_watch_true(tmp_path, watching):
    music, other = albums(tmp_path / "music", "AB"), albums(tmp_path / "other", "X")
    config = tmp_path / "config.toml"
    profiles = [("car", "mp3", music), ("phone", "opus", other)]
    config.write_text(
        "".join(
            f'[profile.{name}]\nmodes = ["{mode}"]\ninput = "{source}"\noutdir = "{tmp_path / name}"\n'
            "watch = true\nsettle = 1\n"
            for name, mode, source in profiles
        )
    )
    require_watchdog()
    w = Watching(tmp_path, "--config", config, "--all-profiles", flag=False)  # the profiles' key alone
    try:
        w.wait_for(lambda: w.stdout.count("Summary of profile") == 2, what="both first runs")
        albums(music, "C")
        albums(other, "Y")
        w.wait_line("car: 1 encoded")
        w.wait_line("phone: 1 encoded")
        assert decodes(tmp_path / "car" / "mp3" / "Album C" / "00 C.mp3")
        assert decodes(tmp_path / "phone" / "opus" / "Album Y" / "00 Y.opus")
        assert w.stop() == 143
    finally:
        w.kill()


def test_without_watchdog_watch_says_what_to_install(tmp_path, library):
    hidden = tmp_path / "hidden"
    (hidden / "watchdog").mkdir(parents=True)
    (hidden / "watchdog" / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(hidden)}
    proc = subprocess.run(
        [sys.executable, "-m", "flac2all", "mp3", "-o", tmp_path / "out", library, "--watch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "pip install 'flac2all[watch]'" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_watch_refuses_a_dry_run(tmp_path, library):
    ran = run_flac2all("mp3", "-o", tmp_path / "out", library, "--watch", "--dry-run")
    assert ran.returncode == 2 and "--dry-run" in ran.stderr


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_worker_with_stay_serves_the_master_of_every_batch(tmp_path, watching):
    from tests.cluster.processes import free_port, start_worker

    music, out, port = albums(tmp_path / "music", "AB"), tmp_path / "out", free_port()
    w = watching("opus", "-o", out, music, "-m", "--insecure", "--port", port, "--settle", SETTLE)
    worker = start_worker(port, 1, "--stay", "--retry-seconds", "1")
    try:
        w.wait_for(lambda: first_run_done(w), what="the first run")
        albums(music, "C")
        w.wait_line("1 encoded", timeout=60)
        albums(music, "D")
        w.wait_line("1 encoded", count=2, timeout=60)
        assert worker.proc.poll() is None  # the same worker process, for the first run and both batches
        assert worker.count(r"the run is over; waiting for the next master \(--stay\)") == 3
        for name in "ABCD":
            assert decodes(out / "opus" / f"Album {name}" / f"00 {name}.opus")
        assert w.stop() == 143
    finally:
        worker.kill()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_batches_run_on_the_dask_cluster_the_run_chose(tmp_path, watching):
    from tests.executors.test_dask import DaskCluster, require_dask

    require_dask()
    (tmp_path / "dask").mkdir()
    cluster = DaskCluster(tmp_path / "dask")
    try:
        music, out = albums(tmp_path / "music", "AB"), tmp_path / "out"
        w = watching("opus", "-o", out, music, "--dask", cluster.address, "--settle", SETTLE)
        w.wait_for(lambda: first_run_done(w), what="the first run", timeout=90)
        albums(music, "C")
        w.wait_line("1 encoded", timeout=90)
        albums(music, "D")
        w.wait_line("1 encoded", count=2, timeout=90)
        assert w.stdout.count(f"Dask scheduler {cluster.address}") == 3  # the first run's, each batch's
        for name in "ABCD":
            assert decodes(out / "opus" / f"Album {name}" / f"00 {name}.opus")
        assert w.stop() == 143
    finally:
        cluster.stop()
