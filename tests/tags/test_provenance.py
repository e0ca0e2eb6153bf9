"""The provenance tag never pushes a FLAC output over its comment limit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mutagen.flac import FLAC

from tests.conftest import make_flac, read_log, run_flac2all


def flac_test(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["flac", "--test", "--silent", str(path)], capture_output=True, text=True)


@pytest.mark.slow
def test_the_provenance_tag_never_pushes_a_flac_over_its_comment_limit(tmp_path):
    # libFLAC takes 100,000 comments and refuses 100,001 (checked with flac
    # itself below): the provenance tag would be the 100,001st.
    src = make_flac(tmp_path / "in" / "many.flac")
    audio = FLAC(src)
    audio.tags.extend([("NOTE", str(i)) for i in range(100_000)])
    audio.save()
    assert flac_test(src).returncode == 0
    out = tmp_path / "out"
    run = run_flac2all("flac", "-o", out, tmp_path / "in", timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    [row] = read_log(out)
    assert row["conversion_status"] == "SUCCESS (provenance tag left out: FLAC allows at most 100000 comments)"
    output = out / "flac" / "many.flac"
    assert flac_test(output).returncode == 0
    tags = FLAC(output).tags
    assert len(tags) == 100_000 and "FLAC2ALL_SOURCE" not in tags
    # The state knows the output all the same: the next run leaves it alone.
    before = output.stat()
    again = run_flac2all("flac", "-o", out, tmp_path / "in", timeout=60)
    assert again.returncode == 0
    assert not again.rows()[0]["conversion_status"].startswith("ERROR")
    after = output.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
