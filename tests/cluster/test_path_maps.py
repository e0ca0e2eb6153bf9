"""Workers that see the master's folders at other paths (``--map``): a file
server's /storage/music mounted at /mnt/storage/music on the nodes.

The end-to-end tests run a real master and real workers on 127.0.0.1, each
worker in its own mount (and host name) namespace where the master's
folders are mounted at other paths and the master's own paths are hidden
(a tmpfs over them): what a worker does, it can only do through its maps.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import mutagen
import pytest

from flac2all.cluster.paths import PathMap, PathMaps
from flac2all.cluster.protocol import Checks, ProtocolError
from flac2all.cluster.worker_cli import parse
from flac2all.errors import UsageError
from flac2all.model import Action, Settings, Status, Task, TaskResult
from tests.cluster.outputs import check_outputs
from tests.cluster.processes import Proc, needs_namespaces, node_mounts, start_master, worker_in_namespace
from tests.conftest import make_flac, read_log

# -- the translation ------------------------------------------------------------

MAPS = PathMaps.parse(["/storage/music=/mnt/storage/music", "/storage/music/live=/mnt/live", "/srv/out=/data/out"])


def test_a_map_covers_whole_components_only():
    assert MAPS.to_worker(Path("/storage/music/a/b.flac")) == Path("/mnt/storage/music/a/b.flac")
    assert MAPS.to_worker(Path("/storage/music")) == Path("/mnt/storage/music")
    # /storage/music does not cover /storage/musicals: used as it is.
    assert MAPS.to_worker(Path("/storage/musicals/x.flac")) == Path("/storage/musicals/x.flac")
    assert MAPS.to_master(Path("/mnt/storage/musicx/y")) == Path("/mnt/storage/musicx/y")


def test_the_longest_map_wins_both_ways():
    assert MAPS.to_worker(Path("/storage/music/live/1.flac")) == Path("/mnt/live/1.flac")
    assert MAPS.to_worker(Path("/storage/music/liveish/1.flac")) == Path("/mnt/storage/music/liveish/1.flac")
    assert MAPS.to_master(Path("/mnt/live/1.flac")) == Path("/storage/music/live/1.flac")
    assert MAPS.to_master(Path("/data/out/mp3/a.mp3")) == Path("/srv/out/mp3/a.mp3")
    assert MAPS.to_master(Path("/elsewhere/a")) == Path("/elsewhere/a")


def test_messages_go_back_in_the_masters_paths():
    text = "cannot write /data/out/mp3/a b.mp3: Permission denied; '/mnt/live/x.flac' (/mnt/storage/music2/y)"
    assert MAPS.text_to_master(text) == (
        "cannot write /srv/out/mp3/a b.mp3: Permission denied; '/storage/music/live/x.flac' (/mnt/storage/music2/y)"
    )
    assert MAPS.text_to_master("in /data/outside/x and /data/out") == "in /data/outside/x and /srv/out"


def test_settings_checks_and_jobs_are_translated():
    settings = MAPS.settings(Settings(Path("/storage/music"), Path("/srv/out"), ("mp3",)))
    assert (settings.input_dir, settings.outdir) == (Path("/mnt/storage/music"), Path("/data/out"))
    checks = MAPS.checks(Checks(((Path("/storage/music/live/a.flac"), 5),), Path("/srv/out/.probe")))
    assert checks.sources == ((Path("/mnt/live/a.flac"), 5),) and checks.probe == Path("/data/out/.probe")
    task = Task(Path("/storage/music/a.flac"), "mp3", Path("/srv/out/mp3/a.mp3"), Action.ENCODE)
    ((_, _, mapped),) = MAPS.job([(1, 0, task)], settings)
    assert (mapped.source, mapped.output) == (Path("/mnt/storage/music/a.flac"), Path("/data/out/mp3/a.mp3"))
    # A map of a folder below the input folder to elsewhere takes its files
    # out of the run's folders here: refused, not run.
    live = Task(Path("/storage/music/live/a.flac"), "mp3", Path("/srv/out/mp3/live/a.mp3"), Action.ENCODE)
    with pytest.raises(ProtocolError, match="out of the run's folders"):
        MAPS.job([(2, 0, live)], settings)
    failed = TaskResult(mapped, Status.FAILED, "cannot read /mnt/storage/music/a.flac")
    assert MAPS.result(failed).message == "cannot read /storage/music/a.flac"


def test_bad_maps_are_usage_errors():
    for specs in (["storage=/mnt"], ["/a"], ["/a="], ["/a=/b", "/a/=/c"], ["/a=/c", "/b=/c"]):
        with pytest.raises(UsageError):
            PathMaps.parse(specs)
    assert str(PathMap.parse("/a/./b/=/c")) == "--map /a/b=/c"
    # An '=' in a folder's name: the two paths part at the one '=' a '/' follows.
    assert PathMap.parse("/music/a=b=/mnt/c=d") == PathMap(Path("/music/a=b"), Path("/mnt/c=d"))
    with pytest.raises(UsageError, match="more than one '=/'"):
        PathMap.parse("/a=/b=/c")
    # This host's '/' as a master's folder: every path of the host its, and no message could tell them back.
    for spec in ("/srv=/", "/srv=/mnt/..", "/srv=//"):
        with pytest.raises(UsageError, match="cannot be / \\(all of this host\\)"):
            PathMap.parse(spec)


def test_maps_whose_worker_folders_nest_must_agree():
    # /mnt/y/f could be the master's /y/f or /x/y/f: refused, naming both.
    with pytest.raises(UsageError, match=r"/mnt/y lies inside /mnt, where --map /x=/mnt puts the master's /x/y"):
        PathMaps.parse(["/x=/mnt", "/y=/mnt/y"])
    agreeing = PathMaps.parse(["/x=/mnt", "/x/y=/mnt/y"])  # the same place either way
    assert agreeing.to_master(Path("/mnt/y/f")) == Path("/x/y/f")


def test_the_masters_root_mapped_goes_back_without_a_double_slash():
    maps = PathMaps.parse(["/=/mnt/master"])
    assert maps.to_worker(Path("/srv/a.flac")) == Path("/mnt/master/srv/a.flac")
    assert maps.text_to_master("cannot write /mnt/master/srv/a.mp3: full; /mnt/master") == (
        "cannot write /srv/a.mp3: full; /"
    )


def test_a_wrong_map_is_named(tmp_path):
    there = tmp_path / "there"
    (there / "d").mkdir(parents=True)
    maps = PathMaps.parse([f"/storage/music={there}", f"/srv/out={tmp_path / 'missing'}"])
    settings = Settings(Path("/storage/music"), Path("/elsewhere/out"), ("mp3",))
    found = maps.wrong(settings, Checks(((Path("/storage/music/d/a.flac"), 1),)))
    assert (
        found == f"--map /storage/music={there}: {there}/d/a.flac does not exist (the master's /storage/music/d/a.flac)"
    )
    settings = Settings(Path("/storage/music"), Path("/srv/out"), ("mp3",))
    assert maps.wrong(settings, Checks()).startswith(f"--map /srv/out={tmp_path / 'missing'}: ")
    (there / "d" / "a.flac").write_bytes(b"x")
    assert (
        maps.wrong(
            Settings(Path("/storage/music"), Path("/o"), ("mp3",)), Checks(((Path("/storage/music/d/a.flac"), 1),))
        )
        == ""
    )


def test_the_worker_config_file(tmp_path):
    config = tmp_path / "worker.toml"
    config.write_text('[worker]\nmaster = "fileserver"\nmap = ["/storage/music=/mnt/storage/music"]\nthreads = 3\n')
    args = parse(["--config", str(config), "--map", "/srv/out=/data/out", "-t", "2"])
    assert args.master == "fileserver" and args.threads == 2  # the command line overrides the file
    assert args.maps.to_worker(Path("/storage/music/a")) == Path("/mnt/storage/music/a")
    assert args.maps.to_worker(Path("/srv/out/a")) == Path("/data/out/a")
    config.write_text('[worker]\nmaster = "fileserver"\n\nmap = "/storage/music=/mnt"\n')
    with pytest.raises(UsageError, match=r"worker\.toml, line 4: \[worker\] map: must be a list"):
        parse(["--config", str(config)])
    config.write_text("[worker]\nmaps = []\n")
    with pytest.raises(UsageError, match=r"line 2: \[worker\] maps: unknown key"):
        parse(["--config", str(config)])


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('map = ["/storage", "music=/mnt/music"]', r"map: --map /storage: give MASTER_PATH=WORKER_PATH"),
        ('allow = ["/srv", "mirror"]', r"allow: mirror is not an absolute path"),
        ("port = 99999", r"port: must be a whole number in 1\.\.65535"),
        ("threads = 0", r"threads: must be a whole number in 1\.\.1024"),
        ("threads = 100000000", r"threads: must be a whole number in 1\.\.1024"),
        ("retry-seconds = nan", r"retry-seconds: must be a number of seconds, 0 or more"),
        ("retry-seconds = -1", r"retry-seconds: must be a number of seconds, 0 or more"),
    ],
)
def test_a_config_value_out_of_range_is_named_by_its_file_line_and_key(tmp_path, line, why):
    # Checked only later, it was told as an option the user never typed ('--map ...'), or not at all
    # (a retry time of nan kept trying for ever, -1 gave up at once).
    config = tmp_path / "worker.toml"
    config.write_text(f'[worker]\nmaster = "fileserver"\n{line}\n')
    with pytest.raises(UsageError, match=rf"worker\.toml, line 3: \[worker\] {why}"):
        parse(["--config", str(config)])


# -- real master, real workers in their own mount namespaces --------------------


@pytest.fixture
def server(tmp_path: Path) -> tuple[Path, Path]:
    """The master's folders (its /storage/music and its output folder): a
    small album, names with spaces and quotes."""
    lib = tmp_path / "fileserver" / "storage" / "music"
    for n, name in enumerate(["01 one.flac", '02 it\'s "two".flac', "03 three.flac", "04 four.flac"]):
        tags = {"TITLE": f"Title {n}", "ARTIST": "Artist", "ALBUM": "Ålbum: one", "TRACKNUMBER": str(n + 1)}
        make_flac(lib / "Album" / name, seconds=0.3, tags=tags)
    out = tmp_path / "fileserver" / "storage" / "out"
    out.mkdir()
    return lib, out


@pytest.mark.slow
@needs_namespaces
def test_nodes_with_other_mount_points_convert_an_album(server, tmp_path):
    lib, out = server
    master, port = start_master("mp3,opus", out, lib)
    workers: list[Proc] = []
    try:
        setup, music, mirror = node_mounts(tmp_path, "node1", lib, out)
        maps = ("--map", f"{lib}={music}", "--map", f"{out}={mirror}")
        workers.append(worker_in_namespace(port, "node1", setup, *maps, allow=(str(music), str(mirror))))
        # The second node states its maps in a config file.
        setup, music, mirror = node_mounts(tmp_path, "node2", lib, out)
        config = tmp_path / "node2.toml"
        config.write_text(f'[worker]\nmap = ["{lib}={music}", "{out}={mirror}"]\nallow = ["{music}", "{mirror}"]\n')
        workers.append(worker_in_namespace(port, "node2", setup, "--config", str(config), allow=()))
        assert master.wait(120) == 0, master.output
        assert all(w.wait(30) == 0 for w in workers), [w.output for w in workers]
    finally:
        master.kill()
        for w in workers:
            w.kill()
    rows = check_outputs(out, lib, {"mp3": ".mp3", "opus": ".opus"})
    # The master's log holds the master's paths, and the nodes that ran them.
    assert all(r["infile"].startswith(f"{lib}/") and r["outfile"].startswith(f"{out}/") for r in rows)
    assert {r["host"] for r in rows} <= {"node1", "node2"}
    for n, output in enumerate(sorted((out / "mp3" / "Album").iterdir())):
        tags = mutagen.File(output, easy=True)
        assert tags["title"] == [f"Title {n}"] and tags["album"] == ["Ålbum: one"]
    for n, output in enumerate(sorted((out / "opus" / "Album").iterdir())):
        tags = mutagen.File(output)
        assert tags["title"] == [f"Title {n}"] and tags["album"] == ["Ålbum: one"]
    # One line per host in the summary: its platform and encoders' versions.
    system = rf"{platform.system()} [\d.]+"
    for host in {r["host"] for r in rows}:
        done = sum(r["host"] == host for r in rows)
        line = rf"^        {host} \({system}; flac [\d.]+, lame [\d.]+, opusenc [\d.]+\): {done} done, 0 failed$"
        assert re.search(line, master.output, re.M), master.output


@pytest.mark.slow
@needs_namespaces
def test_a_wrong_map_or_an_allow_of_the_masters_paths_is_refused_before_any_work(server, tmp_path):
    lib, out = server
    # The master waits long enough for two workers started in namespaces on
    # a loaded machine; a worker that missed it gives up soon.
    master, port = start_master("mp3", out, lib, "--wait-workers", "20")
    try:
        # node1 mounts the library at .../music but maps it to .../wrong (an empty folder).
        setup, _, mirror = node_mounts(tmp_path, "node1", lib, out, lib_at="wrong")
        wrong = tmp_path / "node1" / "mnt" / "storage" / "wrong"
        maps = ("--map", f"{lib}={wrong}", "--map", f"{out}={mirror}", "--retry-seconds", "5")
        wrongly = worker_in_namespace(port, "node1", setup, *maps)
        # node2 maps well but allows the master's paths, not its own.
        setup, music, mirror = node_mounts(tmp_path, "node2", lib, out)
        maps = ("--map", f"{lib}={music}", "--map", f"{out}={mirror}", "--retry-seconds", "5")
        fenced = worker_in_namespace(port, "node2", setup, *maps, allow=(str(lib), str(out)))
        assert master.wait(90) == 2, master.output
        assert wrongly.wait(30) == 1 and fenced.wait(30) == 1
    finally:
        master.kill()
        wrongly.kill()
        fenced.kill()
    said = (
        rf"Worker node1:\d+ is unhealthy and gets no work: --map {re.escape(f'{lib}={wrong}')}: "
        rf"{re.escape(str(wrong))}/Album/[^/]+\.flac does not exist \(the master's {re.escape(str(lib))}/Album/"
    )
    assert re.search(said, master.output), master.output
    said = rf"Worker node2:\d+ is unhealthy and gets no work: the run's input folder {re.escape(str(music))} is outside"
    assert re.search(said, master.output), master.output
    assert not wrongly.count("^encoded") and not fenced.count("^encoded")
    assert not list(out.rglob("*.mp3"))
    assert not (out / "conversion_results.log").exists() or read_log(out) == []
    assert os.listdir(wrong) == []


@pytest.mark.parametrize(
    ("option", "why"),
    [
        (["--retry-seconds", "nan"], "must be 0 seconds or more, not nan"),
        (["--retry-seconds", "-1"], "must be 0 seconds or more, not -1"),
        (["--threads", "100000000"], "at most 1024, not 100000000"),
    ],
)
def test_the_command_line_refuses_what_the_config_file_refuses(option, why):
    # Accepted before: -1 gave up at once, nan kept trying for ever, and a
    # hundred million threads forked processes without end.
    run = subprocess.run(
        [sys.executable, "-m", "flac2all.cluster.worker_cli", "fileserver", *option],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and why in run.stderr, run.stderr


def test_a_config_that_is_no_regular_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "worker.toml"
    os.mkfifo(fifo)  # opened as a file, it would wait for a writer for ever
    with pytest.raises(UsageError, match=r"worker\.toml: cannot read it"):
        parse(["--config", str(fifo)])
