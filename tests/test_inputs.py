"""Bad sources fail alone, with a clear cause; hostile names survive."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import decodes, duration, make_flac, read_log, run_flac2all, source_length, temp_files


@pytest.fixture
def bad_library(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    good = make_flac(root / "good.flac", seconds=0.5)
    long = make_flac(tmp_path / "long.flac", seconds=2)
    data = long.read_bytes()
    (root / "truncated.flac").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    for i in range(len(data) // 2, len(data) // 2 + 300):
        corrupt[i] ^= 0x55
    (root / "corrupt.flac").write_bytes(bytes(corrupt))
    badmd5 = bytearray(good.read_bytes())
    badmd5[26] ^= 0xFF  # STREAMINFO's MD5: frames fine, audio "wrong"
    (root / "badmd5.flac").write_bytes(bytes(badmd5))
    (root / "text.flac").write_text("this is not audio\n")
    (root / "empty.flac").write_bytes(b"")
    (root / "dangling.flac").symlink_to(tmp_path / "nowhere.flac")
    return root


EXPECTED_CAUSES = {
    "truncated.flac": "flac exited with status 1",
    "corrupt.flac": "flac exited with status 1",
    "badmd5.flac": "MD5 signature mismatch",
    "text.flac": "not a FLAC file",
    "empty.flac": "not a FLAC file",
    "dangling.flac": "No such file or directory",
}


def test_bad_sources_fail_alone_with_their_cause(bad_library, tmp_path):
    out = tmp_path / "out"
    run = run_flac2all("mp3,opus,flac,test", "-o", out, bad_library)
    assert run.returncode == 1
    rows = read_log(out)
    assert len(rows) == 4 * 7
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(Path(row["infile"]).name, []).append(row)
    for row in by_file["good.flac"]:
        assert row["conversion_status"] == "SUCCESS"
    for name, cause in EXPECTED_CAUSES.items():
        for row in by_file[name]:
            assert row["conversion_status"].startswith("ERROR"), row
            assert cause in row["conversion_status"], row
            assert row["return_code"] != "0"
            assert not Path(row["outfile"]).exists(), row  # nothing under a final name
    # The good file's outputs are whole.
    for ext, folder in ((".mp3", "mp3"), (".opus", "opus"), (".flac", "flac")):
        output = out / folder / f"good{ext}"
        assert decodes(output)
        assert duration(output) == pytest.approx(source_length(bad_library / "good.flac"), abs=0.08)
    assert temp_files(out) == []
    assert "truncated.flac" in run.stdout  # named in the summary, too


def test_unreadable_file_is_a_failed_task(tmp_path):
    root = tmp_path / "in"
    make_flac(root / "ok.flac")
    secret = make_flac(root / "secret.flac")
    secret.chmod(0o000)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "flac2all", "opus", "-o", str(out), str(root)]
    if os.geteuid() == 0:
        # Root reads any file: drop the capabilities that let it.
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {Path(r["infile"]).name: r for r in read_log(out)}
    assert rows["ok.flac"]["conversion_status"] == "SUCCESS"
    assert rows["secret.flac"]["conversion_status"] == "ERROR: cannot read source: Permission denied"


HOSTILE = [
    "with space.flac",
    "quote'single.flac",
    'quote"double.flac',
    "amp & dollar $HOME.flac",
    "-leading dash.flac",
    "ünïcødé ☃ 日本.flac",
    "comma, and\nnewline.flac",
    "UPPER.FLAC",
]


def test_hostile_names_convert_and_survive_the_csv(tmp_path):
    root = tmp_path / "in"
    names = [*HOSTILE, "x.flac/inside folder named x.flac.flac", "My.flac.Rips/track.flac"]
    for name in names:
        make_flac(root / name, seconds=0.2)
    raw = os.fsencode(root) + b"/latin1-\xe9.flac"  # not valid UTF-8
    shutil.copy(root / "with space.flac", raw)
    out = tmp_path / "out"
    run = run_flac2all("mp3,opus", "-o", out, root)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = read_log(out)
    assert len(rows) == 2 * (len(names) + 1)
    expected = {os.fsencode(root / n) for n in names} | {raw}
    assert {os.fsencode(r["infile"]) for r in rows} == expected
    for row in rows:
        outfile = Path(row["outfile"])
        assert outfile.is_file(), row
        rel = Path(row["infile"]).relative_to(root)
        assert outfile == out / row["format"] / rel.with_suffix(outfile.suffix)
    # pathlib, not string replacement: the folder keeps its name.
    assert (out / "mp3" / "My.flac.Rips" / "track.mp3").is_file()
    assert (out / "mp3" / "x.flac" / "inside folder named x.flac.mp3").is_file()
    assert (out / "opus" / "UPPER.opus").is_file()
