"""An output under its final name is whole: a FLAC output that fails its
test once tagged is not kept."""

from __future__ import annotations

import shutil

from tests.conftest import make_flac, read_log, run_flac2all, temp_files


def test_a_flac_output_that_fails_its_test_once_tagged_is_not_kept(tmp_path, fake_bin):
    # Stands for any way tagging could spoil a file: flac --test says no.
    make_flac(tmp_path / "in" / "a.flac")
    real = shutil.which("flac")
    path = fake_bin(
        "flac",
        f"""
if [ "$1" = "--test" ]; then
  echo "$(basename "${{@: -1}}"): ERROR while decoding metadata" >&2
  exit 1
fi
exec {real} "$@"
""",
    )
    out = tmp_path / "out"
    run = run_flac2all("flac", "-o", out, tmp_path / "in", path_prefix=path, timeout=60)
    assert run.returncode == 1
    [row] = read_log(out)
    assert row["conversion_status"] == (
        "ERROR: output fails its check once tagged: flac exited with status 1: a.flac: ERROR while decoding metadata"
    )
    assert not (out / "flac" / "a.flac").exists()
    assert temp_files(out) == []
