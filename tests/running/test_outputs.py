"""An output under its final name is whole: a FLAC output that fails its
test once tagged is not kept. Outputs are staged, written and committed in
their folder held by descriptor: a folder swapped for a link, or a link put
in a temp file's place, never has anything written through it. Copies
carry no setuid, setgid or sticky bit, keep their holes, and fit wherever
their final name fits."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest
from mutagen.flac import FLAC

from flac2all.errors import TaskError
from flac2all.running import outputs, rooms
from flac2all.running.outputs import commit, staged
from tests.conftest import make_flac, read_log, run_flac2all, temp_files
from tests.running.flipping import flip, planted


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


def test_a_folder_swapped_for_a_link_while_staged_gets_nothing_through_it(tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim"
    album = out / "mp3" / "A"
    album.mkdir(parents=True)
    victim.mkdir()
    (victim / "a.mp3").write_bytes(b"precious")
    final = album / "a.mp3"
    with staged(final, out) as tmp:
        album.rename(out / "mp3" / "A.real")
        album.symlink_to(victim)
        tmp.write_bytes(b"new")  # as an encoder writes it: by the path it was given
        commit(tmp, final)
    assert planted(victim) == {"a.mp3": b"precious"}
    assert (out / "mp3" / "A.real" / "a.mp3").read_bytes() == b"new"


def test_a_temp_file_replaced_by_a_link_is_not_committed(tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim.mp3"
    victim.write_bytes(b"precious")
    final = out / "mp3" / "a.mp3"
    with staged(final, out, made=True) as tmp:
        os.write(tmp.stage.fd, b"new")
        planted_at = final.parent / tmp.stage.room / tmp.name  # by root, or our own user
        planted_at.unlink()
        planted_at.symlink_to(victim)
        with pytest.raises(TaskError, match="temp file was replaced"):
            commit(tmp, final)
    assert not final.exists() and not final.is_symlink()
    assert victim.read_bytes() == b"precious"


def test_a_folder_that_is_a_link_is_refused_and_named(tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.mkdir()
    (out / "mp3").mkdir(parents=True)
    (out / "mp3" / "A").symlink_to(victim)
    with pytest.raises(TaskError, match=f"^{out / 'mp3' / 'A'} is a symbolic link: refusing to write through it$"):
        with staged(out / "mp3" / "A" / "a.mp3", out):
            pass
    assert planted(victim) == {}


def test_an_output_mode_folder_that_is_a_link_is_refused_by_a_local_run(tmp_path):
    make_flac(tmp_path / "in" / "A" / "a.flac")
    (tmp_path / "in" / "A" / "notes.txt").write_text("notes")
    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.mkdir()
    out.mkdir()
    (out / "mp3").symlink_to(victim)
    run = run_flac2all("mp3", "-c", "-o", out, tmp_path / "in", timeout=60)
    assert run.returncode == 1
    assert {row["conversion_status"] for row in read_log(out)} == {
        f"ERROR: {out / 'mp3'} is a symbolic link: refusing to write through it"
    }
    assert planted(victim) == {}


def test_a_copy_never_carries_setuid_setgid_or_sticky(tmp_path):
    src = tmp_path / "in" / "A" / "tool.sh"
    src.parent.mkdir(parents=True)
    src.write_text("#!/bin/sh\n")
    src.chmod(0o7755)
    out = tmp_path / "out"
    run = run_flac2all("mp3", "-c", "--allow-empty", "-o", out, tmp_path / "in", timeout=60)
    assert run.returncode == 0, run.stderr
    st = (out / "mp3" / "A" / "tool.sh").lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755


def test_a_sparse_file_is_copied_with_its_holes(tmp_path):
    src = tmp_path / "in" / "A" / "disk.img"
    src.parent.mkdir(parents=True)
    size = 64 * 1024 * 1024
    with open(src, "wb") as f:
        f.write(b"head")
        f.seek(size // 2)
        f.write(b"middle")
        f.truncate(size)
    if src.stat().st_blocks * 512 >= size:
        pytest.skip("this filesystem does not keep holes")
    out = tmp_path / "out"
    run = run_flac2all("mp3", "-c", "--allow-empty", "-o", out, tmp_path / "in", timeout=60)
    assert run.returncode == 0, run.stderr
    copied = out / "mp3" / "A" / "disk.img"
    assert copied.stat().st_size == size
    assert copied.stat().st_blocks * 512 < 1024 * 1024
    with open(copied, "rb") as f:
        assert f.read(4) == b"head"
        f.seek(size // 2)
        assert f.read(6) == b"middle"


def test_a_file_whose_extension_fills_the_name_is_copied(tmp_path):
    name = "a." + "x" * 252
    src = tmp_path / "in" / "A" / name
    src.parent.mkdir(parents=True)
    src.write_text("data")
    out = tmp_path / "out"
    run = run_flac2all("mp3", "-c", "--allow-empty", "-o", out, tmp_path / "in", timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (out / "mp3" / "A" / name).read_text() == "data"
    assert temp_files(out) == []


@pytest.mark.slow
def test_a_folder_flipped_to_a_link_every_millisecond_gets_nothing_written_through_it(tmp_path):
    # Three seconds of flipping (by hand: a minute, the same).
    album = tmp_path / "in" / "A"
    make_flac(album / "song.flac", seconds=0.1)
    for n in range(40):
        (album / f"{n}.txt").write_text(f"copy {n}")
    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.mkdir()
    for name in ("song.mp3", *(f"{n}.txt" for n in range(40))):
        (victim / name).write_bytes(b"precious")
    before = planted(victim)
    flipper = flip(out / "mp3" / "A", victim, 3.0)
    runs = 0
    while flipper.poll() is None or not runs:
        run_flac2all("mp3", "-c", "--force", "-o", out, tmp_path / "in", timeout=60)
        runs += 1
    assert int(flipper.stdout.read()) > 100
    assert planted(victim) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "victim"]


def test_a_retagged_output_never_keeps_a_setuid_bit(tmp_path):
    src = tmp_path / "in" / "a.flac"
    make_flac(src, tags={"TITLE": "before"})
    out = tmp_path / "out"
    assert run_flac2all("mp3", "-o", out, tmp_path / "in", timeout=60).returncode == 0
    output = out / "mp3" / "a.mp3"
    output.chmod(0o6755)
    flac = FLAC(src)
    flac["TITLE"] = "after"
    flac.save()
    run = run_flac2all("mp3", "-o", out, tmp_path / "in", timeout=60)
    assert run.returncode == 0, run.stderr
    [row] = read_log(out)
    assert row["conversion_status"] == "SUCCESS (retagged)"
    assert stat.S_IMODE(output.lstat().st_mode) == 0o755


def test_a_temp_file_lies_in_a_folder_only_we_can_change(tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.mkdir()
    final = out / "mp3" / "a.mp3"
    with staged(final, out) as tmp:
        room = final.parent / tmp.stage.room
        assert stat.S_IMODE(room.lstat().st_mode) == 0o700
        # Its folder swapped for a link too: the encoder's path still leads
        # to the folder made, by its descriptor.
        room.rename(tmp_path / "moved")
        room.symlink_to(victim)
        tmp.write_bytes(b"new")
        commit(tmp, final)
    assert final.read_bytes() == b"new"
    assert planted(victim) == {}


def test_a_temp_folder_left_by_a_killed_run_is_swept(tmp_path):
    make_flac(tmp_path / "in" / "A" / "a.flac")
    out = tmp_path / "out"
    room = out / "mp3" / "A" / ".flac2all-tmp-0123456789ab"
    room.mkdir(parents=True, mode=0o700)
    (room / ".flac2all-tmp-ba9876543210.mp3").write_bytes(b"half")
    run = run_flac2all("mp3", "-o", out, tmp_path / "in", timeout=60)
    assert run.returncode == 0, run.stderr
    assert not room.exists() and temp_files(out) == []


def rooms_in(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith(".flac2all-tmp-"))


def test_encodes_into_one_folder_share_its_temp_folder_until_the_run_ends(tmp_path):
    out = tmp_path / "out"
    album = out / "opus" / "A"
    with outputs.reusing():
        seen = set()
        for n in range(3):
            final = album / f"{n}.opus"
            with staged(final, out) as tmp:
                tmp.write_bytes(b"new")
                commit(tmp, final)
                seen.add(tmp.stage.room)
        assert len(seen) == 1 and rooms_in(album) == sorted(seen)
    assert rooms_in(album) == [] and sorted(p.name for p in album.iterdir()) == ["0.opus", "1.opus", "2.opus"]


def test_a_kept_temp_folder_is_never_reached_through_a_link_put_in_its_folder_s_place(tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim"
    album = out / "opus" / "A"
    victim.mkdir()
    with outputs.reusing():
        with staged(album / "a.opus", out) as tmp:
            tmp.write_bytes(b"new")
            commit(tmp, album / "a.opus")
        album.rename(out / "opus" / "A.real")
        album.symlink_to(victim)
        with pytest.raises(TaskError, match="is a symbolic link"):
            with staged(album / "b.opus", out):
                pass
    assert planted(victim) == {}
    assert rooms_in(out / "opus" / "A.real") == []


def test_a_kept_temp_folder_removed_meanwhile_is_made_anew(tmp_path):
    out = tmp_path / "out"
    album = out / "opus" / "A"
    with outputs.reusing():
        with staged(album / "a.opus", out) as tmp:
            first = tmp.stage.room
        (album / first).rmdir()  # empty between encodes: anyone who may write the folder can
        with staged(album / "b.opus", out) as tmp:
            assert tmp.stage.room != first
            tmp.write_bytes(b"new")
            commit(tmp, album / "b.opus")
    assert (album / "b.opus").read_bytes() == b"new" and rooms_in(album) == []


def test_only_a_few_temp_folders_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "ROOMS_KEPT", 2)
    out = tmp_path / "out"
    with outputs.reusing():
        for name in "ABC":
            with staged(out / "opus" / name / "a.opus", out):
                pass
        assert [len(rooms_in(out / "opus" / name)) for name in "ABC"] == [0, 1, 1]
    assert [len(rooms_in(out / "opus" / name)) for name in "ABC"] == [0, 0, 0]


def test_a_folder_emptied_is_removed_though_a_temp_folder_was_kept_in_it(tmp_path):
    out = tmp_path / "out"
    album = out / "opus" / "A"
    with outputs.reusing():
        with staged(album / "a.opus", out) as tmp:
            tmp.write_bytes(b"new")
            commit(tmp, album / "a.opus")
        (album / "a.opus").unlink()
        outputs.remove_empty_folders(album, out)
        assert not (out / "opus").exists()


def test_the_sweep_leaves_the_temp_folder_of_an_encode_under_way(tmp_path):
    # A flat layout: every folder plan writes into the same folder, swept
    # as each is planned while earlier ones encode.
    out = tmp_path / "out"
    final = out / "opus" / "a.opus"
    with staged(final, out) as tmp:
        tmp.write_bytes(b"half")
        assert outputs.remove_stale_temps({final.parent}, out) == 0
        tmp.write_bytes(b"whole")
        commit(tmp, final)
    assert final.read_bytes() == b"whole" and temp_files(out) == []


def test_the_sweep_never_deletes_through_a_link_above_the_folder(tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim"
    kept = victim / "A" / ".flac2all-tmp-0123456789ab.mp3"  # someone's file named like a temp file
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"precious")
    out.mkdir()
    (out / "mp3").symlink_to(victim)
    assert outputs.remove_stale_temps({out / "mp3" / "A"}, out) == 0
    assert planted(victim) == {"A/.flac2all-tmp-0123456789ab.mp3": b"precious"}


def test_without_proc_the_held_folder_is_given_by_its_path(tmp_path, monkeypatch):
    folder = tmp_path / "out" / "A"
    folder.mkdir(parents=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert rooms.through(fd, folder) == rooms.PROC / str(os.getpid()) / "fd" / str(fd)
        # A system without /proc, or one whose /proc shows no descriptors
        # (FreeBSD's procfs): a real folder in its place, with no such path.
        monkeypatch.setattr(rooms, "PROC", tmp_path / "proc")
        (tmp_path / "proc").mkdir()
        assert rooms.through(fd, folder) == folder
        # A path there that leads elsewhere is not taken for the descriptor.
        (tmp_path / "proc" / str(os.getpid()) / "fd").mkdir(parents=True)
        (tmp_path / "proc" / str(os.getpid()) / "fd" / str(fd)).symlink_to(tmp_path)
        assert rooms.through(fd, folder) == folder
    finally:
        os.close(fd)


def test_without_proc_a_temp_file_written_through_a_swapped_folder_is_not_committed(tmp_path, monkeypatch):
    monkeypatch.setattr(rooms, "PROC", tmp_path / "proc")
    out, victim = tmp_path / "out", tmp_path / "victim"
    album = out / "mp3" / "A"
    album.mkdir(parents=True)
    victim.mkdir()
    final = album / "a.mp3"
    with staged(final, out) as tmp:
        assert tmp.parent == album / tmp.stage.room  # the plain path: the remaining gap
        album.rename(out / "mp3" / "A.real")
        album.symlink_to(victim)
        (victim / tmp.stage.room).mkdir()  # the link's owner made the folder the path names
        tmp.write_bytes(b"new")  # lands where the link leads
        with pytest.raises(TaskError, match="temp file was replaced"):
            commit(tmp, final)
    assert not (out / "mp3" / "A.real" / "a.mp3").exists() and not (victim / "a.mp3").exists()
    assert temp_files(out / "mp3" / "A.real") == []


def test_a_run_where_proc_shows_nothing_encodes_by_plain_paths(tmp_path):
    # /proc hidden under an empty tmpfs in a mount namespace of its own.
    make_flac(tmp_path / "in" / "A" / "a.flac")
    out = tmp_path / "out"
    hidden = 'mount -t tmpfs none /proc && exec "$@"'
    argv = ["unshare", "-m", "--map-root-user", "sh", "-c", hidden, "sh"]
    if subprocess.run([*argv, "true"], capture_output=True).returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("cannot hide /proc in a mount namespace (unshare)")
        pytest.skip("cannot hide /proc in a mount namespace here (unshare)")
    run = subprocess.run(
        [*argv, sys.executable, "-m", "flac2all", "opus,mp3", "-o", str(out), str(tmp_path / "in")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert {row["conversion_status"] for row in read_log(out)} == {"SUCCESS"}
    assert (out / "opus" / "A" / "a.opus").stat().st_size > 0 and (out / "mp3" / "A" / "a.mp3").stat().st_size > 0
    assert temp_files(out) == []


def test_a_committed_temp_name_is_not_unlinked_again_and_one_left_is(tmp_path, monkeypatch):
    """Once committed, nothing is left under the temp name: no unlink that
    finds nothing (tens of microseconds of kernel time each on ext4); a
    temp file not committed is still removed."""
    out = tmp_path / "out"
    unlinked: list[str] = []
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        unlinked.append(os.fsdecode(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with outputs.reusing():
        final = out / "opus" / "A" / "1.opus"
        with staged(final, out) as tmp:
            tmp.write_bytes(b"new")
            commit(tmp, final)
        assert tmp.stage.name not in unlinked and final.read_bytes() == b"new"
        with staged(out / "opus" / "A" / "2.opus", out) as left:
            left.write_bytes(b"half")
        assert left.stage.name in unlinked and not left.exists()
    assert temp_files(out) == [] and sorted(p.name for p in final.parent.iterdir()) == ["1.opus"]
