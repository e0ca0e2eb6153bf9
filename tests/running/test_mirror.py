"""Incremental mirror: each re-run does exactly the work that changed.

Every scenario asserts the action taken per output, the resulting files, and
that untouched outputs kept their bytes and mtime. Encoders are wrapped by
tiny real scripts that log each start, to prove a skip or retag starts none.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3
from mutagen.oggopus import OggOpus

from tests.conftest import audio_bytes, decodes, duration, make_flac, read_log, run_flac2all, source_length, temp_files

MODES = "mp3,opus"


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    """Twelve tiny tagged sources in three folders."""
    root = tmp_path / "music"
    for album in ("A", "B", "C"):
        for n in range(4):
            make_flac(root / album / f"{n} song.flac", seconds=0.15, tags={"TITLE": f"{album}{n}", "ALBUM": album})
    return root


def run(lib: Path, out: Path, spy, *args: str):
    folder, log = spy
    log.write_text("")
    result = run_flac2all(MODES, "-o", out, *args, lib, path_prefix=folder)
    started = [line.split()[0] for line in log.read_text().splitlines()]
    return result, started


def actions(result) -> dict[str, str]:
    """output name -> conversion_status, from the CSV log."""
    return {
        f"{Path(r['outfile']).parent.name}/{Path(r['outfile']).name}": r["conversion_status"] for r in result.rows()
    }


def snapshot(out: Path) -> dict[Path, tuple[int, bytes]]:
    return {
        p.relative_to(out): (p.stat().st_mtime_ns, p.read_bytes())
        for p in out.rglob("*")
        if p.is_file() and ".flac2all" not in p.parts and p.name != "conversion_results.log"
    }


@pytest.fixture
def mirrored(lib, tmp_path, spy):
    out = tmp_path / "out"
    result, started = run(lib, out, spy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(actions(result).values()) == {"SUCCESS"}
    assert len(result.rows()) == 24 and started
    return out


def assert_only_changed(before, after, changed: set[str]):
    """Every output but ``changed`` (relative names) has the same bytes and mtime."""
    for rel, value in before.items():
        if str(rel) not in changed:
            assert after.get(rel) == value, rel


def test_noop_rerun_skips_everything_without_starting_a_process(lib, mirrored, spy):
    before = snapshot(mirrored)
    result, started = run(lib, mirrored, spy)
    assert result.returncode == 0
    assert set(actions(result).values()) == {"SUCCESS (skipped: up to date)"}
    assert started == []
    assert snapshot(mirrored) == before
    assert "nothing to do: 24 outputs up to date" in result.stdout


@pytest.mark.slow
def test_changed_audio_same_name_is_reencoded(lib, mirrored, spy):
    before = snapshot(mirrored)
    src = lib / "B" / "1 song.flac"
    tags = dict(FLAC(src).tags)
    make_flac(src, seconds=0.3, tags=tags)  # new audio, same tags
    result, started = run(lib, mirrored, spy)
    acts = actions(result)
    assert acts["B/1 song.mp3"] == acts["B/1 song.opus"] == "SUCCESS"
    assert sum(v == "SUCCESS (skipped: up to date)" for v in acts.values()) == 22
    assert "lame" in started and "opusenc" in started
    assert duration(mirrored / "mp3" / "B" / "1 song.mp3") == pytest.approx(0.3, abs=0.08)
    assert_only_changed(before, snapshot(mirrored), {"mp3/B/1 song.mp3", "opus/B/1 song.opus"})


@pytest.mark.slow
def test_changed_tags_only_retags_without_encoding(lib, mirrored, spy):
    before = snapshot(mirrored)
    audio_before = audio_bytes(mirrored / "mp3" / "A" / "2 song.mp3")
    f = FLAC(lib / "A" / "2 song.flac")
    f["TITLE"] = "Renamed title"
    f.save()
    result, started = run(lib, mirrored, spy)
    acts = actions(result)
    assert acts["A/2 song.mp3"] == acts["A/2 song.opus"] == "SUCCESS (retagged)"
    assert started == []  # no decoder, no encoder
    assert ID3(mirrored / "mp3" / "A" / "2 song.mp3")["TIT2"].text == ["Renamed title"]
    assert OggOpus(mirrored / "opus" / "A" / "2 song.opus")["TITLE"] == ["Renamed title"]
    assert audio_bytes(mirrored / "mp3" / "A" / "2 song.mp3") == audio_before
    assert_only_changed(before, snapshot(mirrored), {"mp3/A/2 song.mp3", "opus/A/2 song.opus"})
    # and the state knows: the next run skips them
    again, _ = run(lib, mirrored, spy)
    assert set(actions(again).values()) == {"SUCCESS (skipped: up to date)"}


@pytest.mark.slow
def test_changed_picture_only_retags(lib, mirrored, spy, tmp_path):
    pic = Picture()
    pic.type, pic.mime, pic.desc, pic.data = 3, "image/png", "front", b"\x89PNG\r\n\x1a\n" + bytes(100)
    f = FLAC(lib / "C" / "0 song.flac")
    f.add_picture(pic)
    f.save()
    result, started = run(lib, mirrored, spy)
    acts = actions(result)
    assert acts["C/0 song.mp3"] == acts["C/0 song.opus"] == "SUCCESS (retagged)"
    assert started == []
    assert ID3(mirrored / "mp3" / "C" / "0 song.mp3").getall("APIC")[0].data == pic.data


@pytest.mark.slow
def test_changed_encoder_options_reencode_that_mode_only(lib, mirrored, spy):
    before = snapshot(mirrored)
    result, started = run(lib, mirrored, spy, "--opus-options=bitrate 32:vbr")
    acts = actions(result)
    assert all(v == "SUCCESS" for k, v in acts.items() if k.endswith(".opus"))
    assert all(v == "SUCCESS (skipped: up to date)" for k, v in acts.items() if k.endswith(".mp3"))
    assert "lame" not in started and started.count("opusenc") == 12
    after = snapshot(mirrored)
    assert all(after[k] == v for k, v in before.items() if k.suffix == ".mp3")


@pytest.mark.slow
def test_renamed_file_is_moved_not_reencoded(lib, mirrored, spy):
    old_mp3 = mirrored / "mp3" / "A" / "3 song.mp3"
    audio_before = audio_bytes(old_mp3)
    (lib / "A" / "3 song.flac").rename(lib / "A" / "3 renamed.flac")
    result, started = run(lib, mirrored, spy)
    acts = actions(result)
    assert acts["A/3 renamed.mp3"] == f"SUCCESS (moved from {old_mp3})"
    assert acts["A/3 renamed.opus"].startswith("SUCCESS (moved from ")
    assert started == []
    assert not old_mp3.exists()
    assert audio_bytes(mirrored / "mp3" / "A" / "3 renamed.mp3") == audio_before
    again, _ = run(lib, mirrored, spy)
    assert set(actions(again).values()) == {"SUCCESS (skipped: up to date)"}


@pytest.mark.slow
def test_moved_folder_moves_its_outputs_and_removes_empty_folders(lib, mirrored, spy):
    (lib / "Sub").mkdir()
    (lib / "B").rename(lib / "Sub" / "B2")
    result, started = run(lib, mirrored, spy)
    acts = actions(result)
    moved = [k for k, v in acts.items() if v.startswith("SUCCESS (moved from ")]
    assert len(moved) == 8 and all(k.startswith("B2/") for k in moved)
    assert started == []
    assert not (mirrored / "mp3" / "B").exists() and not (mirrored / "opus" / "B").exists()
    assert decodes(mirrored / "opus" / "Sub" / "B2" / "2 song.opus")


@pytest.mark.slow
def test_deleted_source_orphan_kept_then_deleted(lib, mirrored, spy):
    (lib / "C" / "1 song.flac").unlink()
    kept, started = run(lib, mirrored, spy)
    assert kept.returncode == 0
    acts = actions(kept)
    assert acts["C/1 song.mp3"] == "SUCCESS (orphan: source gone, output kept (--delete removes it))"
    assert (mirrored / "mp3" / "C" / "1 song.mp3").exists()
    (mirrored / "mp3" / "C" / "notes.txt").write_text("mine, not flac2all's")
    deleted, started = run(lib, mirrored, spy, "--delete")
    assert deleted.returncode == 0
    acts = actions(deleted)
    assert acts["C/1 song.mp3"] == acts["C/1 song.opus"] == "SUCCESS (deleted orphan)"
    assert not (mirrored / "mp3" / "C" / "1 song.mp3").exists()
    assert (mirrored / "mp3" / "C" / "notes.txt").exists()  # never anything it did not write
    assert started == []
    # Deleting a whole folder's sources removes the emptied output folders.
    for f in (lib / "A").iterdir():
        if f.name.startswith("0"):
            f.unlink()
    third, _ = run(lib, mirrored, spy, "--delete")
    assert third.returncode == 0 and not (mirrored / "opus" / "A" / "0 song.opus").exists()


@pytest.mark.slow
def test_outputs_of_a_folder_that_cannot_be_read_are_not_orphans(lib, mirrored, tmp_path):
    """A source folder that cannot be read (permissions, a failing disk)
    may still hold its sources: --delete leaves its outputs alone, and the
    folder is reported."""
    before = snapshot(mirrored)
    (lib / "C").chmod(0)
    argv = [sys.executable, "-m", "flac2all", MODES, "-o", str(mirrored), "--delete", "--delete-anyway", str(lib)]
    if os.geteuid() == 0:  # root reads any folder: not without these capabilities
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *argv]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    finally:
        (lib / "C").chmod(0o755)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert snapshot(mirrored) == before  # nothing deleted, nothing rewritten
    rows = read_log(mirrored)
    assert [r["conversion_status"] for r in rows if r["infile"] == str(lib / "C")] == [
        "ERROR: cannot read folder: Permission denied"
    ]
    assert not [r for r in rows if "orphan" in r["conversion_status"]]
    again = run_flac2all(MODES, "-o", mirrored, "--delete", lib)  # readable again: all up to date
    assert again.returncode == 0, again.stdout
    assert {r["conversion_status"] for r in read_log(mirrored)} == {"SUCCESS (skipped: up to date)"}


@pytest.mark.slow
def test_delete_guard_refuses_to_wipe_the_mirror(lib, mirrored, spy, tmp_path):
    before = snapshot(mirrored)
    shutil.rmtree(lib)
    lib.mkdir()  # an unmounted source disk: an empty folder
    make_flac(lib / "A" / "0 song.flac", seconds=0.15, tags={"TITLE": "A0", "ALBUM": "A"})
    unmounted, started = run(lib, mirrored, spy, "--delete")
    assert unmounted.returncode == 2
    assert "source looks unmounted: only 1 of the 12 sources" in unmounted.stderr
    assert snapshot(mirrored) == before and started == []
    # Past that guard (most sources really gone), --delete's own still holds.
    refused, started = run(lib, mirrored, spy, "--delete", "--allow-missing-sources")
    assert refused.returncode == 2
    assert "--delete would remove 22 of the 24 outputs" in refused.stderr
    assert snapshot(mirrored) == before and started == []
    dry, _ = run(lib, mirrored, spy, "--delete", "--delete-anyway", "--dry-run")
    assert dry.returncode == 0 and "delete  22" in dry.stdout
    assert "a run would refuse: source looks unmounted" in dry.stderr
    assert snapshot(mirrored) == before
    forced, _ = run(lib, mirrored, spy, "--delete", "--delete-anyway", "--allow-missing-sources")
    assert forced.returncode == 0
    remaining = sorted(str(p) for p in snapshot(mirrored))
    assert remaining == ["mp3/A/0 song.mp3", "opus/A/0 song.opus"]


@pytest.mark.slow
def test_deleted_state_database_is_rebuilt_without_reencoding(lib, mirrored, spy):
    before = snapshot(mirrored)
    shutil.rmtree(mirrored / ".flac2all")
    result, started = run(lib, mirrored, spy)
    assert result.returncode == 0
    assert set(actions(result).values()) == {"SUCCESS (skipped: unchanged)"}
    assert started == []
    assert snapshot(mirrored) == before
    again, _ = run(lib, mirrored, spy)
    assert set(actions(again).values()) == {"SUCCESS (skipped: up to date)"}


@pytest.mark.slow
def test_outputs_of_the_original_flac2all_are_adopted_and_retagged(lib, mirrored, spy):
    """No state and no provenance tag (outputs of 5.4): audio newer than its
    source is trusted, and its tags are rewritten."""
    shutil.rmtree(mirrored / ".flac2all")
    for mp3 in (mirrored / "mp3").rglob("*.mp3"):
        tag = ID3(mp3)
        tag.delall("TXXX")
        tag.save()
    result, started = run(lib, mirrored, spy)
    acts = actions(result)
    assert all(v == "SUCCESS (retagged)" for k, v in acts.items() if k.endswith(".mp3"))
    assert all(v == "SUCCESS (skipped: unchanged)" for k, v in acts.items() if k.endswith(".opus"))
    assert started == []
    assert ID3(mirrored / "mp3" / "A" / "0 song.mp3").getall("TXXX:FLAC2ALL_SOURCE")


@pytest.mark.slow
def test_force_reencodes_everything(lib, mirrored, spy):
    result, started = run(lib, mirrored, spy, "-f")
    assert set(actions(result).values()) == {"SUCCESS"}
    assert started.count("lame") == 12


@pytest.mark.slow
def test_dry_run_and_plan_json_change_nothing(lib, mirrored, spy, tmp_path):
    f = FLAC(lib / "A" / "1 song.flac")
    f["TITLE"] = "x"
    f.save()
    (lib / "B" / "2 song.flac").unlink()
    make_flac(lib / "D" / "new.flac", seconds=0.1)
    before = snapshot(mirrored)
    state = mirrored / ".flac2all" / "state.sqlite"
    state_before = state.read_bytes()
    plan_file = tmp_path / "plan.json"
    result, started = run(lib, mirrored, spy, "--dry-run", "--plan-json", str(plan_file))
    assert result.returncode == 0
    assert "dry run: nothing changed" in result.stdout
    for line in ("encode  2", "skip    20", "retag   2", "orphan  2"):
        assert line in result.stdout
    assert "new.flac" in result.stdout
    assert started == [] and snapshot(mirrored) == before and state.read_bytes() == state_before
    plan = json.loads(plan_file.read_text())
    assert plan["counts"] == {"encode": 2, "copy": 0, "skip": 20, "retag": 2, "move": 0, "delete": 0, "orphan": 2}
    assert {e["source"] for e in plan["actions"]["retag"]} == {str(lib / "A" / "1 song.flac")}
    # A dry run on a mirror that does not exist yet creates nothing.
    fresh = tmp_path / "fresh"
    dry, _ = run(lib, fresh, spy, "--dry-run")
    assert dry.returncode == 0 and "encode  24" in dry.stdout and not fresh.exists()


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_outputs(lib, tmp_path, fake_bin):
    out = tmp_path / "out"
    real = shutil.which("opusenc")
    gate = tmp_path / "gate"
    # The fourth and later opusenc starts stall, as if the encodes were long.
    slow = fake_bin(
        "opusenc",
        f"""
exec 9>{gate}.lock; flock 9
n=$(ls {gate} | wc -l); touch {gate}/$$
flock -u 9
if [ "$n" -ge 3 ]; then sleep 60; fi
exec {real} "$@"
""",
    )
    gate.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flac2all", "opus", "-t", "2", "-o", str(out), str(lib)],
        env={**os.environ, "PATH": f"{slow}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while len(list(gate.iterdir())) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "opus").rglob("*.opus") if not p.name.startswith(".")
    }
    assert len(finished) == 3
    with sqlite3.connect(out / ".flac2all" / "state.sqlite") as db:
        recorded = {os.fsdecode(r[0]) for r in db.execute("SELECT output FROM outputs")}
    assert {str(p.relative_to(out)) for p in finished} >= recorded  # never claims a missing output
    rerun = run_flac2all("opus", "-o", out, lib)
    assert rerun.returncode == 0
    rows = read_log(out)
    skipped = {r["outfile"] for r in rows if r["conversion_status"].startswith("SUCCESS (skipped")}
    assert skipped == {str(p) for p in finished}
    assert sum(r["conversion_status"] == "SUCCESS" for r in rows) == 9
    for p, value in finished.items():
        assert (p.stat().st_mtime_ns, p.read_bytes()) == value
    assert temp_files(out) == []
    for p in (out / "opus").rglob("*.opus"):
        src = lib / p.relative_to(out / "opus").with_suffix(".flac")
        assert duration(p) == pytest.approx(source_length(src), abs=0.08)


def test_copies_are_tracked_and_orphan_copies_deleted(lib, tmp_path, spy):
    (lib / "A" / "cover.jpg").write_bytes(b"\xff\xd8 a cover")
    out = tmp_path / "out"
    first, _ = run(lib, out, spy, "-c")
    assert actions(first)["A/cover.jpg"] == "SUCCESS (copied)"
    second, _ = run(lib, out, spy, "-c")
    assert actions(second)["A/cover.jpg"] == "SUCCESS (skipped: up to date)"
    (lib / "A" / "cover.jpg").unlink()
    third, _ = run(lib, out, spy, "-c", "--delete")
    assert actions(third)["A/cover.jpg"] == "SUCCESS (deleted orphan)"
    assert not (out / "mp3" / "A" / "cover.jpg").exists()


@pytest.mark.slow
def test_a_killed_runs_temp_files_go_with_the_next_run_that_writes_their_folder(lib, mirrored, spy):
    """Stale temp files are swept from the folders the run writes into (the
    outputs a killed run left unfinished are redone there); a no-op run
    lists no folder, and leaves the others' outputs as they were."""
    before = snapshot(mirrored)
    (mirrored / "mp3" / "A" / "1 song.mp3").unlink()  # a killed run's: not committed
    stale = mirrored / "mp3" / "A" / ".flac2all-tmp-0123456789ab.mp3"
    stale.write_bytes(b"half")
    result, started = run(lib, mirrored, spy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert actions(result)["A/1 song.mp3"] == "SUCCESS" and "lame" in started and "opusenc" not in started
    assert not stale.exists() and temp_files(mirrored) == []
    assert_only_changed(before, snapshot(mirrored), {"mp3/A/1 song.mp3"})


@pytest.mark.slow
def test_a_dry_run_lists_an_actions_files_costliest_first(lib, mirrored, spy):
    """A re-run's dry run lists each action's files longest first, as the
    whole plan has them (README's ``--dry-run``; 960e4db did): a source's
    up-to-date output before a tiny copy's, whichever way each was found."""
    (lib / "A" / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 tiny")
    first, _ = run(lib, mirrored, spy, "-c")
    assert first.returncode == 0, first.stdout + first.stderr
    dry, started = run(lib, mirrored, spy, "-c", "--dry-run")
    assert dry.returncode == 0 and not started, dry.stderr
    lines = dry.stdout.splitlines()
    skips = lines[lines.index("skip:") + 1 :]
    assert len(skips) == 24 + 2
    assert all("cover.jpg" in line for line in skips[-2:]), skips
    # --plan-json has them in the same order.
    plan_file = mirrored.parent / "plan.json"
    as_json, _ = run(lib, mirrored, spy, "-c", "--dry-run", "--plan-json", str(plan_file))
    assert as_json.returncode == 0, as_json.stderr
    listed = json.loads(plan_file.read_text())["actions"]["skip"]
    assert len(listed) == 26 and all(entry["source"].endswith("cover.jpg") for entry in listed[-2:]), listed
