"""The dry run: always shows its plan, with what a run would refuse as
warnings, writes nothing at all, and prints the same listing however it
is cut into pieces."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flac2all.codecs import CODECS
from flac2all.model import Settings
from flac2all.planning import plan
from flac2all.planning.discovery import discover
from flac2all.planning.flow import Flow, FolderPlan, Whole, unreadable
from flac2all.running.listing import Listing
from tests.conftest import make_flac, read_log, run_flac2all
from tests.planning.tree import make_tree
from tests.running.folders import MODES, listing, one_line_error, run, unmount


def test_a_dry_run_writes_nothing_in_outdir(lib, mirrored, spy, tmp_path):
    make_flac(lib / "C" / "new.flac", seconds=0.1)
    before = listing(mirrored)
    dry, started = run(lib, mirrored, spy, "--dry-run", "--delete", "--plan-json", tmp_path / "plan.json")
    assert dry.returncode == 0 and "encode  2" in dry.stdout and started == []
    assert listing(mirrored) == before  # no -wal, no -shm, no lock, no log


def test_plan_json_dash_is_standard_output_and_the_run_prints_to_stderr(lib, mirrored, spy, tmp_path):
    make_flac(lib / "C" / "new.flac", seconds=0.1)
    work = tmp_path / "cwd"
    work.mkdir()
    argv = [MODES, "-o", mirrored, "--plan-json", "-", lib]
    dry = run_flac2all(*argv[:-1], "--dry-run", lib, path_prefix=spy[0], cwd=work)
    plan = json.loads(dry.stdout)
    assert dry.returncode == 0 and plan["counts"]["encode"] == 2 and "encode  2" in dry.stderr
    assert sorted(e["output"] for e in plan["actions"]["encode"]) == [
        str(mirrored / m / "C" / f"new.{m}") for m in ("mp3", "opus")
    ]
    # A run, its summary and its hook's output on stderr: the same plan, then the work done.
    done = run_flac2all(*argv[:-1], "--on-done", "echo hook said", lib, path_prefix=spy[0], cwd=work)
    assert done.returncode == 0 and json.loads(done.stdout) == plan, done.stdout
    assert "Tasks by action: 2 encoded" in done.stderr and "hook said" in done.stderr
    assert (mirrored / "opus" / "C" / "new.opus").is_file() and list(work.iterdir()) == []
    # A name of descriptor 1, however spelt, is standard output as '-' is: the plan alone there.
    for name in ("/dev/stdout", os.path.relpath("/dev/fd/1", work)):
        again = run_flac2all(*argv[:-3], "--plan-json", name, "--dry-run", lib, path_prefix=spy[0], cwd=work)
        assert again.returncode == 0 and json.loads(again.stdout)["counts"]["skip"] == 10, again.stdout
    # ./- is a file of that name.
    named = run_flac2all(MODES, "-o", mirrored, "--dry-run", "--plan-json", "./-", lib, path_prefix=spy[0], cwd=work)
    assert named.returncode == 0 and "skip    10" in named.stdout
    assert json.loads((work / "-").read_text())["counts"]["skip"] == 10


@pytest.mark.parametrize(("dry", "name"), [(True, "-"), (False, "-"), (True, "/dev/stdout"), (False, "/dev/fd/1")])
def test_plan_json_to_standard_output_closed_is_refused_before_any_work(lib, mirrored, spy, dry, name):
    make_flac(lib / "C" / "new.flac", seconds=0.1)
    before = listing(mirrored)
    spy[1].write_text("")
    env = dict(os.environ, PATH=f"{spy[0]}{os.pathsep}{os.environ['PATH']}")
    argv = [sys.executable, "-m", "flac2all", MODES, "-o", str(mirrored), "--plan-json", name, str(lib)]
    argv += ["--dry-run"] if dry else []
    # The caller closed descriptor 1 (a script's 1>&-): the plan would be lost.
    closed = ["sh", "-c", 'exec "$@" 1>&-', "sh", *argv]
    proc = subprocess.run(closed, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "flac2all: error: --plan-json: standard output is closed; name a file for the plan\n"
    assert listing(mirrored) == before and spy[1].read_text() == ""  # no encoder started


def test_a_dry_run_names_paths_below_the_folders_its_heading_names(lib, mirrored, spy):
    make_flac(lib / "C" / "new.flac", seconds=0.1)
    (lib / "B" / "1 song.flac").unlink()
    dry, _ = run(lib, mirrored, spy, "--dry-run")
    lines = dry.stdout.splitlines()
    assert lines[0] == f"Plan for {lib} -> {mirrored} (dry run: nothing changed)"
    assert "  mp3      C/new.flac: mp3/C/new.mp3" in lines and "  opus     A/0 song.flac: opus/A/0 song.opus" in lines
    assert "  mp3      B/1 song.flac: mp3/B/1 song.mp3" in lines  # an orphan: its source gone
    assert str(lib) not in "\n".join(lines[1:]) and str(mirrored) not in "\n".join(lines[1:])


@pytest.mark.slow
def test_a_dry_run_sees_rows_a_killed_run_left_in_the_wal(lib, mirrored, spy):
    """SQLite's immutable mode would miss them: the dry run reads a copy."""
    state = mirrored / ".flac2all" / "state.sqlite"
    killed = (
        "import os, sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('PRAGMA wal_autocheckpoint=0')\n"
        "db.execute(\"UPDATE outputs SET settings_hash = 'old' WHERE mode = 'mp3'\")\n"
        "os._exit(0)\n"  # no checkpoint: the change is in the WAL only
    )
    subprocess.run([sys.executable, "-c", killed, str(state)], check=True, timeout=30)
    assert state.with_name("state.sqlite-wal").stat().st_size > 0
    before = listing(mirrored)
    dry, _ = run(lib, mirrored, spy, "--dry-run")
    assert dry.returncode == 0 and "encode  4" in dry.stdout and "skip    4" in dry.stdout
    assert listing(mirrored) == before
    result, started = run(lib, mirrored, spy)
    assert started.count("lame") == 4 and "opusenc" not in started
    assert sum(r["conversion_status"] == "SUCCESS" for r in read_log(mirrored)) == 4


@pytest.mark.slow
def test_dry_run_delete_shows_the_plan_and_warns_where_delete_refuses(lib, mirrored, spy):
    unmount(lib, keep=2)  # 4 of 8 outputs would go: more than --delete's 10%
    before = listing(mirrored, strict=False)
    refused, _ = run(lib, mirrored, spy, "--delete")
    one_line_error(refused, "--delete would remove 4 of the 8 outputs", "Run with --dry-run to see the list")
    assert listing(mirrored, strict=False) == before
    before = listing(mirrored)
    dry, _ = run(lib, mirrored, spy, "--delete", "--dry-run")
    assert dry.returncode == 0 and "delete  4" in dry.stdout
    warning = "WARNING: a run would refuse: --delete would remove 4 of the 8 outputs"
    assert dry.stderr.startswith(warning) and "Run with --dry-run" not in dry.stderr
    assert "--delete-anyway" in dry.stderr
    assert listing(mirrored) == before


def test_the_dry_run_listing_in_pieces_is_the_listing(tmp_path: Path) -> None:
    make_tree(tmp_path)
    settings = Settings(input_dir=tmp_path, outdir=tmp_path.parent / "out", modes=("mp3", "opus"))
    tree = discover(tmp_path)
    the_plan = plan.build(tree, (CODECS["mp3"], CODECS["opus"]), settings, refuse=False)
    listed = Listing(Whole(the_plan, tree))
    whole = listed.describe(settings)
    assert whole.count("\n") + 1 == 3 + 24  # header, count, "encode:", one line per task
    for size in (1, 2, 5, 10000):
        assert "\n".join(listed.describe_chunks(settings, size)) == whole


def test_a_dry_run_whose_listing_cannot_be_written_says_so(library, tmp_path):
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "flac2all", "mp3", "--dry-run", "-o", str(tmp_path / "out"), str(library)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert proc.stderr == "flac2all: error: cannot write the plan to stdout: No space left on device\n"


def test_plan_json_on_a_full_disk_leaves_the_previous_file_whole(library, tmp_path, tmpfs):
    disk = tmpfs(64)
    plan_json = disk / "plan.json"
    plan_json.write_text('{"old": true}\n')
    with open(disk / "filler", "wb") as f, pytest.raises(OSError):
        f.write(b"\0" * 128 * 1024)
        f.flush()
    argv = [sys.executable, "-m", "flac2all", "mp3", "--dry-run", "--plan-json", str(plan_json)]
    proc = subprocess.run(
        [*argv, "-o", str(tmp_path / "out"), str(library)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert f"flac2all: error: cannot write the plan to {plan_json}: No space left on device" in proc.stderr
    assert plan_json.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "plan.json"]


def test_a_dry_run_names_the_folders_a_run_could_not_read(library, tmp_path):
    locked = library / "Album B"
    plan_json = tmp_path / "plan.json"
    argv = [sys.executable, "-m", "flac2all", "mp3", "--dry-run", "--plan-json", str(plan_json)]
    argv += ["-o", str(tmp_path / "out"), str(library)]
    if os.geteuid() == 0:  # root reads any folder: not without these capabilities
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *argv]
    locked.chmod(0)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1:3] == ["  encode  2", "  unread  1"]
    assert lines[-1] == f"unread: {locked}: cannot read folder: Permission denied"
    plan = json.loads(plan_json.read_text())
    assert plan["unreadable"] == [{"folder": str(locked), "error": "Permission denied"}]
    assert plan["counts"]["encode"] == 2


def test_a_plan_listed_folder_by_folder_names_the_folders_not_read(tmp_path):
    class Listed(Flow):
        streaming = True

        def folders(self):
            yield FolderPlan(unread=unreadable([(tmp_path / "x", "Permission denied")]))

    settings = Settings(input_dir=tmp_path, outdir=tmp_path / "out", modes=("mp3",))
    lines = Listing(Listed()).describe(settings).splitlines()
    assert lines[2:] == [f"unread: {tmp_path / 'x'}: cannot read folder: Permission denied", "counts:", "  unread  1"]


def plan_run(library: Path, out: Path, plan_json: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "flac2all", "mp3", "--dry-run", "--plan-json", str(plan_json), "-o", str(out)]
    return subprocess.run([*argv, str(library)], capture_output=True, text=True, timeout=60)


def test_plan_json_into_a_fifo_a_device_or_a_link_writes_through_it(library, tmp_path):
    """What is there and no regular file is written into, as a shell's '>'
    would: a FIFO (a reader gets the plan; with none, an error, not a hang),
    a device, a link (/dev/stdout). Each was replaced by a regular file,
    as root /dev/full and /dev/stdout themselves."""
    out = tmp_path / "out"
    fifo = tmp_path / "plan.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    run = plan_run(library, out, fifo)
    reader.join(timeout=30)
    assert run.returncode == 0, run.stderr
    assert json.loads(got[0])["counts"]["encode"] == 3 and stat.S_ISFIFO(fifo.lstat().st_mode)
    nobody = tmp_path / "nobody.fifo"
    os.mkfifo(nobody)
    unread = plan_run(library, out, nobody)
    assert unread.returncode == 2 and f"cannot write the plan to {nobody}: a FIFO no process reads" in unread.stderr
    assert stat.S_ISFIFO(nobody.lstat().st_mode)
    stdout = tmp_path / "stdout"
    stdout.symlink_to("/proc/self/fd/1")
    shown = plan_run(library, out, stdout)
    assert shown.returncode == 0 and '"encode": 3' in shown.stdout and stdout.is_symlink()
    if os.geteuid() == 0:
        null = tmp_path / "null"
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        assert plan_run(library, out, null).returncode == 0 and stat.S_ISCHR(null.lstat().st_mode)
