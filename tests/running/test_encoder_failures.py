"""Encoders that fail, hang, flood or lie: real tiny executables on PATH."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import decodes, duration, make_flac, read_log, run_flac2all, source_length, temp_files


@pytest.fixture
def two_files(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    make_flac(root / "a.flac", seconds=0.3)
    make_flac(root / "b.flac", seconds=0.3)
    return root


@pytest.mark.slow
def test_encoder_writing_half_a_file_then_failing(two_files, tmp_path, fake_bin):
    # lame's last argument is the output file.
    path = fake_bin(
        "lame",
        """
out="${@: -1}"
head -c 5000 /dev/urandom > "$out"
cat > /dev/null
echo "lame: some progress line" >&2
echo "Error writing to output: Input/output error" >&2
echo "bye" >&2
exit 1
""",
    )
    out = tmp_path / "out"
    run = run_flac2all("mp3,opus", "-o", out, two_files, path_prefix=path)
    assert run.returncode == 1
    rows = read_log(out)
    mp3 = [r for r in rows if r["format"] == "mp3"]
    assert len(mp3) == 2
    for row in mp3:
        assert row["conversion_status"] == (
            "ERROR: lame exited with status 1: Error writing to output: Input/output error"
        )
        assert row["return_code"] == "1"
        assert not Path(row["outfile"]).exists()
    # The other mode was not disturbed.
    assert all(decodes(Path(r["outfile"])) for r in rows if r["format"] == "opus")
    assert temp_files(out) == []
    assert not (out / "mp3").exists()  # no empty folder is left where every output failed
    # and the next run retries the failed ones (nothing half-written was kept).
    again = run_flac2all("mp3", "-o", out, two_files)
    assert again.returncode == 0
    assert {r["conversion_status"] for r in again.rows()} == {"SUCCESS"}


@pytest.mark.slow
def test_encoder_that_hangs_is_killed_at_the_timeout(two_files, tmp_path, fake_bin):
    marker = tmp_path / "hung-pids"
    path = fake_bin("oggenc", f"echo $$ >> {marker}\nexec sleep 600\n")
    out = tmp_path / "out"
    run = run_flac2all("vorbis", "--timeout", "1.5", "-o", out, two_files, path_prefix=path, timeout=60)
    assert run.returncode == 1
    rows = read_log(out)
    assert len(rows) == 2
    assert {r["conversion_status"] for r in rows} == {"ERROR: oggenc timed out after 1.5 s"}
    assert temp_files(out) == []
    # No hung encoder survives the run.
    for pid in marker.read_text().split():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.fixture
def one_long_file(tmp_path: Path) -> Path:
    """A source whose decoded audio is larger than a pipe holds."""
    root = tmp_path / "long"
    make_flac(root / "a.flac", seconds=2)
    return root


@pytest.mark.slow
def test_a_hung_encoder_is_named_not_the_decoder_waiting_on_it(one_long_file, tmp_path, fake_bin):
    """One mode: the decoder, blocked writing into the pipe the hung
    encoder does not read, is not the one that timed out."""
    path = fake_bin("opusenc", "exec sleep 600\n")
    out = tmp_path / "out"
    run = run_flac2all("opus", "--timeout", "1.5", "-o", out, one_long_file, path_prefix=path, timeout=60)
    assert run.returncode == 1
    assert [r["conversion_status"] for r in read_log(out)] == ["ERROR: opusenc timed out after 1.5 s"]


def test_an_encoder_that_stops_reading_and_exits_0_is_named(one_long_file, tmp_path, fake_bin):
    """One mode: the decoder dies of the broken pipe; the encoder that
    left early is blamed, not the decoder."""
    path = fake_bin("opusenc", "exit 0\n")
    out = tmp_path / "out"
    run = run_flac2all("opus", "-o", out, one_long_file, path_prefix=path, timeout=60)
    assert run.returncode == 1
    assert [r["conversion_status"] for r in read_log(out)] == [
        "ERROR: opusenc exited with status 0 before reading all its input"
    ]
    assert temp_files(out) == []


def test_encoder_flooding_stderr_does_not_block(two_files, tmp_path, fake_bin):
    real = shutil.which("opusenc")
    path = fake_bin(
        "opusenc",
        f"""
head -c 3000000 /dev/zero | tr '\\0' 'x' | fold -w 100 >&2
exec {real} "$@"
""",
    )
    out = tmp_path / "out"
    run = run_flac2all("opus", "-o", out, two_files, path_prefix=path, timeout=60)
    assert run.returncode == 0, run.stdout
    assert all(decodes(Path(r["outfile"])) for r in read_log(out))


def test_each_failure_is_told_in_its_own_encoders_words(two_files, tmp_path, fake_bin):
    """The files the stages' stderr goes to are reused: one failing quietly
    after another failed loudly is not told in the other's words."""
    path = fake_bin(
        "lame",
        f"""
cat > /dev/null
if [ -e {tmp_path}/loud-done ]; then exit 2; fi
touch {tmp_path}/loud-done
yes "lame: noise" | head -n 20000 >&2
echo "lame: the loud failure" >&2
exit 1
""",
    )
    out = tmp_path / "out"
    run = run_flac2all("mp3", "-t", "1", "-o", out, two_files, path_prefix=path)
    assert run.returncode == 1
    statuses = sorted(r["conversion_status"] for r in read_log(out))
    assert statuses == ["ERROR: lame exited with status 1: lame: the loud failure", "ERROR: lame exited with status 2"]


def test_an_encoder_that_can_no_longer_be_run_fails_only_its_own_mode(two_files, tmp_path, fake_bin):
    """An encoder made non-executable mid-run (a package upgrade, a chmod):
    its mode's next task fails naming the program and why; the source's
    other modes are converted."""
    real = shutil.which("opusenc")
    path = fake_bin("opusenc", f'chmod -x "$0"\nexec {real} "$@"\n')
    out = tmp_path / "out"
    run = run_flac2all("mp3,opus", "-t", "1", "-o", out, two_files, path_prefix=path)
    assert run.returncode == 1, run.stdout + run.stderr
    rows = read_log(out)
    assert sorted(r["conversion_status"] for r in rows if r["format"] == "opus") == [
        f"ERROR: cannot run {path / 'opusenc'}: Permission denied",
        "SUCCESS",
    ]
    mp3 = [r for r in rows if r["format"] == "mp3"]
    assert len(mp3) == 2 and all(r["conversion_status"] == "SUCCESS" and decodes(Path(r["outfile"])) for r in mp3)
    assert "Traceback" not in run.stdout + run.stderr


def test_encoder_that_exits_0_with_a_short_output_is_caught(two_files, tmp_path, fake_bin):
    # Encodes only the first 0.1 s of what it is given, then says all is well.
    real = shutil.which("opusenc")
    path = fake_bin(
        "opusenc",
        f"""
head -c 17684 | {real} "$@"
cat > /dev/null
exit 0
""",
    )
    out = tmp_path / "out"
    run = run_flac2all("opus", "-o", out, two_files, path_prefix=path)
    assert run.returncode == 1
    for row in read_log(out):
        assert row["conversion_status"].startswith("ERROR: output lasts 0.")
        assert "but the source 0.30 s" in row["conversion_status"]
        assert not Path(row["outfile"]).exists()


@pytest.mark.parametrize(
    "encoder,mode,out_arg",
    [("lame", "mp3", '"${@: -1}"'), ("oggenc", "vorbis", '"${@: -2:1}"')],
)
def test_encoder_that_exits_0_with_garbage_is_caught(two_files, tmp_path, fake_bin, encoder, mode, out_arg):
    # Reads everything, writes noise where the output should be, and says all is well.
    path = fake_bin(encoder, f"cat > /dev/null\nhead -c 20000 /dev/urandom > {out_arg}\nexit 0\n")
    out = tmp_path / "out"
    run = run_flac2all(mode, "-o", out, two_files, path_prefix=path)
    assert run.returncode == 1
    rows = read_log(out)
    assert len(rows) == 2
    for row in rows:
        assert row["conversion_status"].startswith("ERROR: encoder output is "), row
        assert not Path(row["outfile"]).exists()
    assert temp_files(out) == []


def test_decoder_failure_under_a_successful_encoder_fails_the_task(two_files, tmp_path, fake_bin):
    """Both ends of the pipe are checked: a decoder that dies mid-stream
    while the encoder happily finishes is a failure, not a short SUCCESS."""
    real = shutil.which("flac")
    path = fake_bin(
        "flac",
        f"""
if [ "$1" = "--decode" ]; then
  {real} "$@" | head -c 30000
  echo "flac: ERROR while decoding data" >&2
  exit 1
fi
exec {real} "$@"
""",
    )
    out = tmp_path / "out"
    run = run_flac2all("vorbis", "-o", out, two_files, path_prefix=path)
    assert run.returncode == 1
    for row in read_log(out):
        assert row["conversion_status"] == "ERROR: flac exited with status 1: flac: ERROR while decoding data"
        assert not Path(row["outfile"]).exists()


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 300 KiB tmpfs as the output folder (needs root, as CI has)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        if os.environ.get("CI") == "true" and os.geteuid() == 0:
            pytest.fail(f"cannot mount a tmpfs: {proc.stderr!r}")
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_fails_tasks_cleanly(tmp_path, tiny_disk):
    root = tmp_path / "in"
    for i in range(4):
        make_flac(root / f"{i}.flac", seconds=1.0, rate=48000, bits=24)
    run = run_flac2all("flac", "-t", "2", "-o", tiny_disk, root)
    assert run.returncode == 1, run.stdout + run.stderr
    rows = read_log(tiny_disk)
    failed = [r for r in rows if r["conversion_status"].startswith("ERROR")]
    assert failed, "300 KiB cannot hold four 1 s 24-bit FLACs"
    # After the first failure the run starts nothing more, and says so.
    assert len(rows) == 4 or f"{4 - len(rows)} task(s) not started" in run.stdout
    for row in failed:
        # One cause, however it surfaced (tests/running/test_full_disk.py tries each encoder).
        assert re.fullmatch(
            rf"ERROR: no space left on device \({re.escape(str(tiny_disk))}'s filesystem: [\d.]+ MB free\)",
            row["conversion_status"],
        ), row
        assert not Path(row["outfile"]).exists()
    for row in rows:
        if row["conversion_status"] == "SUCCESS":
            assert decodes(Path(row["outfile"]))
    assert temp_files(tiny_disk) == []


# -- one decoder feeding several encoders -------------------------------------


@pytest.mark.slow
def test_each_source_is_decoded_once_for_all_modes(tmp_path, fake_bin):
    root = tmp_path / "in"
    sources = [make_flac(root / f"{i}.flac", seconds=0.4) for i in range(2)]
    calls = tmp_path / "flac-calls"
    real = shutil.which("flac")
    path = fake_bin("flac", f'echo "$*" >> {calls}\nexec {real} "$@"\n')
    out = tmp_path / "out"
    run = run_flac2all("mp3,vorbis,opus,flac", "-o", out, root, path_prefix=path)
    assert run.returncode == 0, run.stdout + run.stderr
    decodes_run = [line for line in calls.read_text().splitlines() if line.startswith("--decode")]
    assert len(decodes_run) == len(sources)  # not one per output
    for src in sources:
        for folder, ext in (("mp3", ".mp3"), ("vorbis", ".ogg"), ("opus", ".opus"), ("flac", ".flac")):
            output = out / folder / (src.stem + ext)
            assert decodes(output)
            assert duration(output) == pytest.approx(source_length(src), abs=0.08)
    # As the original did (and for comparison): one decoder per output.
    calls.unlink()
    run = run_flac2all("mp3,vorbis,opus,flac", "-f", "--decode-per-mode", "-o", out, root, path_prefix=path)
    assert run.returncode == 0, run.stdout + run.stderr
    decodes_run = [line for line in calls.read_text().splitlines() if line.startswith("--decode")]
    assert len(decodes_run) == 4 * len(sources)


@pytest.mark.slow
@pytest.mark.parametrize(
    "hang",
    [
        pytest.param("exec sleep 600", id="never-reads"),
        pytest.param("cat > /dev/null; exec sleep 600", id="reads-then-hangs"),
    ],
)
def test_a_hung_encoder_fails_only_its_own_output(tmp_path, fake_bin, hang):
    # 8 s of PCM (1.4 MB) is more than a pipe holds: an encoder that never
    # reads stops the copy to its siblings until it is killed.
    src = make_flac(tmp_path / "in" / "long.flac", seconds=8)
    path = fake_bin("oggenc", hang + "\n")
    out = tmp_path / "out"
    run = run_flac2all("mp3,vorbis,opus", "--timeout", "4", "-o", out, tmp_path / "in", path_prefix=path, timeout=60)
    assert run.returncode == 1
    status = {r["format"]: r["conversion_status"] for r in read_log(out)}
    assert status == {"mp3": "SUCCESS", "vorbis": "ERROR: oggenc timed out after 4 s", "opus": "SUCCESS"}
    for output in (out / "mp3" / "long.mp3", out / "opus" / "long.opus"):
        assert duration(output) == pytest.approx(source_length(src), abs=0.1)
    assert not (out / "vorbis" / "long.ogg").exists()
    assert temp_files(out) == []


@pytest.mark.slow
def test_each_mode_of_a_batch_reports_its_own_time(tmp_path, fake_bin):
    # One decoder feeds both encoders, but a slow opus must not make the mp3
    # look slow in the log and the summary.
    make_flac(tmp_path / "in" / "a.flac", seconds=0.3)
    real = shutil.which("opusenc")
    wav = tmp_path / "opus-in.wav"
    path = fake_bin("opusenc", f'cat > {wav}\nsleep 3\nexec {real} "$@" < {wav}\n')
    out = tmp_path / "out"
    run = run_flac2all("mp3,opus", "-o", out, tmp_path / "in", path_prefix=path)
    assert run.returncode == 0, run.stdout + run.stderr
    times = {r["format"]: float(r["execution_time"]) for r in read_log(out)}
    assert times["opus"] >= 3
    assert times["mp3"] < times["opus"] - 2


def test_a_failing_adapter_fails_only_its_own_output(tmp_path, fake_bin):
    # The ffmpeg stage that downmixes 6 channels for lame fails at once: the
    # decoder and the other modes of the source must carry on.
    root = tmp_path / "six"
    make_flac(root / "surround.flac", seconds=0.3, channels=6)
    path = fake_bin("ffmpeg", "exit 127\n")
    out = tmp_path / "out"
    run = run_flac2all("mp3,opus", "-o", out, root, path_prefix=path)
    assert run.returncode == 1
    status = {r["format"]: r["conversion_status"] for r in read_log(out)}
    assert status["opus"] == "SUCCESS"
    assert status["mp3"].startswith("ERROR: ffmpeg exited with status 127")
    assert decodes(out / "opus" / "surround.opus")
    assert temp_files(out) == []
