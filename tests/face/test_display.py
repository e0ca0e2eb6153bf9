"""The live displays on a real (pseudo-)terminal, including a tiny one, and
the plain fallback without a terminal; the status line's fit as a pure
function."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.text import Text

from flac2all.face import console
from flac2all.face.drawing import BAR, fit, squeeze
from flac2all.face.pace import Pace
from flac2all.model import Action, Job, Settings, Status, Task, TaskResult
from flac2all.running import engine
from tests.conftest import make_flac, read_log, run_flac2all


def run_on_terminal(args: list, rows: int, cols: int, timeout: float = 60, path: Path | None = None) -> tuple[int, str]:
    """Run flac2all on a new pty of ``rows`` x ``cols`` (``path``: a folder
    of fake programs put first on PATH); its exit status and all it wrote."""
    master_fd, slave_fd = pty.openpty()
    fcntl.ioctl(slave_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)}
    if path is not None:
        env["PATH"] = f"{path}{os.pathsep}{env['PATH']}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flac2all", *map(str, args)],
        stdin=slave_fd,
        stdout=slave_fd,
        stderr=slave_fd,
        env=env,
        close_fds=True,
    )
    os.close(slave_fd)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master_fd, 65536)
        except OSError:  # the terminal closed: the program ended
            break
        if not data:
            break
        chunks.append(data)
    os.close(master_fd)
    return proc.wait(timeout=10), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("size", [(40, 120), (4, 20)])
def test_dashboard_on_a_terminal_of_any_size(library, tmp_path, size):
    out = tmp_path / "out"
    code, screen = run_on_terminal(["mp3,opus", "-C", "-t", "2", "-o", str(out), str(library)], *size)
    assert code == 0, screen
    assert "Summary" in screen
    assert len(read_log(out)) == 6
    if size[1] >= 80:
        assert "host" in screen and "current files" in screen  # the per-host table


def test_progress_bar_on_a_terminal(library, tmp_path):
    code, screen = run_on_terminal(["opus", "-o", str(tmp_path / "out"), str(library)], 30, 100)
    assert code == 0 and "Converting" in screen and "3/3" in screen


def test_dashboard_without_a_terminal_falls_back_to_plain_lines(library, tmp_path):
    run = run_flac2all("opus", "-C", "-o", tmp_path / "out", library)
    assert run.returncode == 0
    assert sum(line.startswith("encoded ") for line in run.stdout.splitlines()) == 3


def plain(screen: str) -> list[str]:
    """The lines a terminal was sent, without escape sequences (each
    refresh of a live display is a line of its own)."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-ln-z]", "\n", re.sub(r"\x1b\[[0-9;]*m", "", screen))
    return [line.rstrip() for line in re.split(r"[\r\n]", text) if line.strip()]


@pytest.fixture
def slow_albums(tmp_path: Path, fake_bin) -> tuple[Path, Path]:
    """Two album folders of tiny sources and an opusenc that takes 0.4 s a
    file: a run of a few seconds, long enough for the display to draw the
    files in progress and an ETA."""
    root = tmp_path / "music"
    for n in range(6):
        make_flac(root / f"Album {'AB'[n % 2]}" / f"{n:02d} track.flac", seconds=0.2, tags={"TITLE": f"T{n}"})
    return root, fake_bin("opusenc", f'sleep 0.4\nexec {shutil.which("opusenc")} "$@"\n')


@pytest.mark.slow
@pytest.mark.parametrize("cols", [40, 20])
def test_a_narrow_terminal_still_shows_the_count_and_the_eta(slow_albums, tmp_path, cols):
    root, fakes = slow_albums
    code, screen = run_on_terminal(["opus", "-t", "2", "-o", tmp_path / "out", root], 12, cols, path=fakes)
    assert code == 0, screen
    lines = plain(screen)
    status = [line for line in lines if re.search(r"\b\d/6\b", line)]
    assert status and all("ETA" in line for line in status), lines
    # Mid-run, with an estimate: the count and the ETA side by side.
    assert any(re.search(r"\b[1-5]/6 tasks · (.* · )?ETA \d+:\d\d$", line) for line in status), status
    live = lines[: next(i for i, line in enumerate(lines) if line.startswith("| Summary"))]
    assert all(cell_len(line) <= cols for line in live), live  # nothing wrapped


@pytest.mark.slow
def test_the_display_names_files_by_album_with_rates_and_elapsed_time(slow_albums, tmp_path):
    root, fakes = slow_albums
    code, screen = run_on_terminal(["opus", "-t", "2", "-o", tmp_path / "out", root], 20, 140, path=fakes)
    assert code == 0, screen
    lines = plain(screen)
    assert any(re.fullmatch(r"  opus +Album [AB]/0\d track\.flac", line) for line in lines), lines  # with its mode
    assert str(root) not in screen
    assert re.search(r"\d+\.\d files/s", screen) and re.search(r"\d+(\.\d)? audio s/s", screen)
    assert re.search(r"\d+:\d\d elapsed", screen)
    assert "~" not in screen  # the audio's length is known, not guessed from bytes


@pytest.mark.slow
def test_the_process_count_is_the_processes_running_not_the_tasks(tmp_path, fake_bin):
    """-t 1 and two modes: one decoder feeding two encoders, three
    processes (the old count said 2: the tasks)."""
    root = tmp_path / "music"
    for n in range(3):
        make_flac(root / "Album" / f"{n} t.flac", seconds=0.2)
    fakes = fake_bin("flac", f'sleep 0.6\nexec {shutil.which("flac")} "$@"\n')
    code, screen = run_on_terminal(["mp3,opus", "-t", "1", "-o", tmp_path / "out", root], 20, 140, path=fakes)
    assert code == 0, screen
    counts = [int(n) for n in re.findall(r"(\d+) busy", screen)]
    assert max(counts) == 3, counts


def on_screen(sent: str) -> list[str]:
    """What a terminal shows after ``sent``: text, carriage returns, line
    feeds, cursor up and down and line erasure (what rich's live display
    uses); other escape sequences change nothing shown here."""
    lines, row, col = [""], 0, 0
    for m in re.finditer(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]", sent):
        if m.group(2):
            n = int(m.group(1)) if m.group(1).isdigit() else 1
            if m.group(2) == "A":
                row = max(0, row - n)
            elif m.group(2) == "B":
                row += n
            elif m.group(2) == "K":
                lines[row] = ""
            continue
        if m.group() == "\r":
            col = 0
        elif m.group() == "\n":
            row += 1
        else:
            lines[row] = lines[row][:col].ljust(col) + m.group() + lines[row][col + 1 :]
            col += 1
        lines += [""] * (row + 1 - len(lines))
    return [line.rstrip() for line in lines if line.strip()]


def test_on_screen_follows_a_live_display_s_redraws():
    sent = "a\nstatus 1/3\r\x1b[2Kstatus 2/3\r\x1b[2K\x1b[1A\x1b[2Kdone\n"
    assert on_screen(sent) == ["done"]


@pytest.mark.slow
def test_ctrl_c_leaves_no_stale_progress_line_above_the_summary(slow_albums, tmp_path):
    root, fakes = slow_albums
    master_fd, slave_fd = pty.openpty()
    fcntl.ioctl(slave_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "PATH": f"{fakes}{os.pathsep}{os.environ['PATH']}"}
    argv = [sys.executable, "-m", "flac2all", "opus", "-t", "1", "-o", str(tmp_path / "out"), str(root)]
    proc = subprocess.Popen(argv, stdin=slave_fd, stdout=slave_fd, stderr=slave_fd, env=env, close_fds=True)
    os.close(slave_fd)
    sent, signalled = b"", False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            data = os.read(master_fd, 65536)
        except OSError:
            break
        if not data:
            break
        sent += data
        if b"1/6 tasks" in sent and not signalled:  # once: a second Ctrl-C may find the handlers gone
            proc.send_signal(signal.SIGINT)
            signalled = True
    os.close(master_fd)
    assert proc.wait(timeout=10) == 130
    shown = on_screen(sent.decode("utf-8", "replace"))
    summary = next(i for i, line in enumerate(shown) if line.startswith("| Summary"))
    assert not any("tasks ·" in line for line in shown[:summary]), shown
    assert any("Interrupted:" in line for line in shown[summary:]), shown


@pytest.mark.slow
def test_dashboard_is_full_screen_and_leaves_its_final_state_on_the_normal_screen(slow_albums, tmp_path):
    root, fakes = slow_albums
    (root / "Album B" / "bad.flac").write_bytes(b"not a FLAC file at all")
    code, screen = run_on_terminal(["opus", "-C", "-t", "2", "-o", tmp_path / "out", root], 24, 120, path=fakes)
    assert code == 1, screen
    assert "\x1b[?1049h" in screen and "\x1b[?1049l" in screen  # the alternate screen, entered and left
    after = plain(screen.split("\x1b[?1049l")[-1])
    assert any(re.fullmatch(r"Converted\b.*7/7 tasks · 1 failed\b.*elapsed", line) for line in after), after
    host = socket.gethostname()
    assert any(re.match(rf"{re.escape(host)}\s+0\s+7\s", line) for line in after), after
    assert any(re.match(r"total\s+0\s+7\s", line) for line in after), after
    assert any(re.match(r"FAILED\s+opus\s+Album B/bad\.flac: not a FLAC file", line) for line in after), after
    assert "Summary" in screen.split("\x1b[?1049l")[-1]


@pytest.mark.parametrize("width", [200, 120, 80, 60, 40, 30, 20, 16])
def test_the_status_line_fits_and_keeps_the_count_and_the_eta(width):
    parts = [(7, Text("Converting")), (3.5, BAR), (0, Text("16/180")), (2, Text("2 failed"))]
    parts += [(4, Text("4.6 files/s")), (5, Text("120 audio s/s")), (6, Text("6 busy"))]
    parts += [(3, Text("0:12 elapsed")), (1, Text("ETA 1:03"))]
    line = fit(parts, 0.1, width).plain
    assert cell_len(line) <= width
    assert "16/180" in line and "ETA 1:03" in line
    assert ("━" in line) == (width >= 40)  # the bar went before the count or the ETA
    if width >= 120:
        assert "Converting" in line and "120 audio s/s" in line and "6 busy" in line


def test_long_names_lose_their_middle():
    name = "Album with a long name/01 A track with a long name.flac"
    assert squeeze(name, 80) == name
    short = squeeze(name, 30)
    assert cell_len(short) == 30 and short.startswith("Album") and short.endswith("name.flac") and "…" in short
    assert cell_len(squeeze("日本語のアルバム/日本語の曲名.flac", 11)) <= 11


def test_copies_are_not_counted_as_files_converted():
    encode = Task(Path("/in/A/1.flac"), "opus", Path("/out/1.opus"), Action.ENCODE, size=1000)
    copy = Task(Path("/in/A/cover.jpg"), "opus", Path("/out/cover.jpg"), Action.COPY, size=1000)
    pace = Pace(2, Path("/in"), [Job((encode,), 1000.0), Job((copy,), 0.0)], 0.0)
    assert pace.weight[copy] < pace.weight[encode] / 10
    for t, task in enumerate([encode, copy]):
        pace.started(task, t)
        assert pace.in_progress() == [("opus" if task is encode else "copy opus", f"A/{task.source.name}")]
        pace.finished(TaskResult(task, Status.SUCCESS, audio=42.0 if task is encode else 0.0), t + 1)
    assert (pace.done, pace.files, pace.audio) == (2, 1, 42.0)
    assert not pace.weight and pace.work_left == 0  # a finished task is not held


def test_an_encode_reports_its_audio_length_to_the_display(tmp_path):
    """The runner passes the length it reads to the TaskResult, and the
    engine gives the display INPUTDIR and the planned jobs."""
    make_flac(tmp_path / "music" / "a.flac", seconds=0.5)
    seen: dict = {}

    class Recorder(console.Silent):
        def begin(self, total, hosts, root, jobs) -> None:
            seen.update(total=total, root=root, jobs=list(jobs))

        def finished(self, result: TaskResult) -> None:
            seen.setdefault("results", []).append(result)

    settings = Settings(input_dir=tmp_path / "music", outdir=tmp_path / "out", modes=("opus", "mp3"), threads=1)
    engine.run(settings, Recorder())
    assert seen["root"] == tmp_path / "music" and seen["total"] == 2 and len(seen["jobs"]) == 1
    assert [round(r.audio, 2) for r in seen["results"]] == [0.5, 0.5]


def test_the_dashboard_shows_why_a_host_gets_no_work():
    """-C's host table says why a worker is quarantined or unhealthy, as the
    summary does, beside what it still runs."""
    import io

    from rich.console import Console

    from flac2all.face.dashboard import Dashboard
    from flac2all.model import HostRow

    board = Dashboard(io.StringIO())
    rows = [
        HostRow("node1", 2, 10, 1.5, ["/music/A/1.flac"]),
        HostRow("node2", 1, 3, 0.2, ["/music/B/2.flac"], problem="quarantined: 3 failures of its environment in a row"),
        HostRow("node3", 0, 0, 0.0, [], problem="unhealthy: cannot see the input folder"),
    ]
    out = io.StringIO()
    Console(file=out, width=200).print(board.table(rows))
    lines = {line.split()[0]: line for line in out.getvalue().splitlines() if line.strip()}
    assert "quarantined: 3 failures of its environment in a row; /music/B/2.flac" in lines["node2"]
    assert "unhealthy: cannot see the input folder" in lines["node3"]
    assert "quarantined" not in lines["node1"] and "/music/A/1.flac" in lines["node1"]
