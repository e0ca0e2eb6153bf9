"""bench same's comparer: two result folders that differ only in where they
are, when and how long they ran compare as the same; a changed status does
not. The scenarios themselves (real runs of two flac2all) are not run here."""

from __future__ import annotations

import csv
import os
import socket
import sqlite3
from pathlib import Path

from bench.same import Step, compare, normalise, ordered, outcome
from flac2all.state import SCHEMA

TRACKS = ["Alpha/01 Dawn.flac", "Zoë/Été — à Paris/02 Ça va.flac"]


def result_folder(work: Path, seconds: float, status: str = "SUCCESS") -> tuple[dict[Path, str], Path, Step]:
    """A run's traces as flac2all leaves them in ``work/out``, with
    ``seconds`` in every time, the last track's status ``status``."""
    inp, out = work / "in", work / "out"
    (out / ".flac2all").mkdir(parents=True)
    (out / "mp3").mkdir()
    (out / "mp3" / "cover.jpg").write_bytes(b"jpeg")
    with open(out / "conversion_results.log", "w", newline="") as f:
        log = csv.writer(f)
        log.writerow(["infile", "outfile", "format", "conversion_status", "return_code", "execution_time", "host"])
        for i, track in enumerate(TRACKS):
            row_status = status if i == len(TRACKS) - 1 else "SUCCESS"
            mp3 = out / "mp3" / Path(track).with_suffix(".mp3")
            log.writerow([inp / track, mp3, "mp3", row_status, 0, f"{seconds:.3f}", socket.gethostname()])
    db = sqlite3.connect(out / ".flac2all" / "state.sqlite")
    db.executescript(SCHEMA)
    for track in TRACKS:
        db.execute(
            "INSERT INTO outputs VALUES (?, ?, 'mp3', 1, 2, 'md5', 'tags', 'pics', 'settings', 3, ?, '')",
            (os.fsencode(Path("mp3") / Path(track).with_suffix(".mp3")), os.fsencode(track), int(seconds * 1e9)),
        )
    db.commit()
    db.close()
    (out / ".flac2all" / "last-summary.txt").write_text(f"| Summary\n    Wall time: {seconds:.4f} seconds\n")
    stdout = "".join(
        f"encoded  mp3      {inp / track} -> {out / 'mp3' / Path(track).with_suffix('.mp3')}\n"
        for track in (TRACKS if seconds < 1 else reversed(TRACKS))  # jobs end in any order
    )
    stdout += f"Elapsed {seconds:.1f} s, 00:0{int(seconds)} left\n    Wall time: {seconds:.4f} seconds\n"
    step = Step(["/some/venv/bin/flac2all", "mp3", "-o", str(out), str(inp)], 0, stdout, "")
    return {work: "<WORK>"}, out, step


def test_only_where_and_when_differ_is_the_same(tmp_path: Path) -> None:
    a = outcome(*result_folder(tmp_path / "a", 0.25))
    b = outcome(*result_folder(tmp_path / "elsewhere" / "b", 3.5))
    assert str(tmp_path) not in a
    assert "<WORK>/in/Zoë/Été — à Paris/02 Ça va.flac" in a
    assert "mp3/cover.jpg 4" in a  # a copy's size is compared
    assert compare(a, b, ("a", "b")) == []


def test_a_changed_status_is_a_difference(tmp_path: Path) -> None:
    a = outcome(*result_folder(tmp_path / "a", 0.25))
    b = outcome(*result_folder(tmp_path / "b", 0.25, status="ERROR: lame exited with 1"))
    diff = compare(a, b, ("a", "b"))
    assert diff[:2] == ["--- a", "+++ b"]
    changed = [line for line in diff if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))]
    assert len(changed) == 2
    assert changed[0].endswith(",mp3,SUCCESS,0,<HOST>")
    assert changed[1].endswith(",mp3,ERROR: lame exited with 1,0,<HOST>")


def test_a_changed_state_row_or_copy_is_a_difference(tmp_path: Path) -> None:
    roots, out, step = result_folder(tmp_path / "a", 0.25)
    before = outcome(roots, out, step)
    (out / "mp3" / "cover.jpg").write_bytes(b"jpeg, longer")
    db = sqlite3.connect(out / ".flac2all" / "state.sqlite")
    db.execute("UPDATE outputs SET tags_hash = 'other' WHERE source = ?", (os.fsencode(TRACKS[0]),))
    db.commit()
    db.close()
    diff = "\n".join(compare(before, outcome(roots, out, step), ("before", "after")))
    assert "-mp3/cover.jpg 4" in diff and "+mp3/cover.jpg 12" in diff
    assert "tags_hash=other" in diff


def test_normalise_and_ordered() -> None:
    work = Path("/tmp/flac2all-same-x/first-baseline")
    text = normalise(
        f"Listening on tcp://127.0.0.1:40123\nGot 1 worker(s) (new: {socket.gethostname()}:777)\n"
        f"{work}/out/x.mp3 in 1.25 s, flac2all 6.0.1",
        {work: "<WORK>"},
    )
    assert (
        text == "Listening on tcp://127.0.0.1:<PORT>\n<WORK>/out/x.mp3 in <T> s, flac2all <VERSION>"
    )  # joins are timing
    lines = "Converting: 2 task(s)\nencoded  opus     b\ncopied   mp3      a\n\n| Summary\n    Wall"
    assert ordered(lines) == "Converting: 2 task(s)\ncopied   mp3      a\nencoded  opus     b\n\n| Summary\n    Wall"


def test_only_orphans_and_deletions_of_a_dry_run_may_come_in_any_order() -> None:
    listing = "Plan for a -> b (dry run: nothing changed)\n  encode  2\n  orphan  2\nencode:\n{}\norphan:\n{}\n"
    encodes, orphans = ["  opus     a/2.flac: b/2.opus", "  mp3      a/1.flac: b/1.mp3"], ["  mp3  z", "  opus y"]
    one = listing.format("\n".join(encodes), "\n".join(orphans))
    assert ordered(one) == ordered(listing.format("\n".join(encodes), "\n".join(reversed(orphans))))
    assert ordered(one) != ordered(listing.format("\n".join(reversed(encodes)), "\n".join(orphans)))
