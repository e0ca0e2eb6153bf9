"""The planner on its own: (sources, codecs, settings, versions, state) ->
tasks and jobs, with the file system asked only through its seams (stat,
facts, provenance), which these tests answer from dictionaries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from flac2all.codecs import CODECS
from flac2all.errors import UsageError
from flac2all.model import Action, Layout, ReplayGain, Settings, SourceFacts
from flac2all.planning import hashes, names, plan, planned
from flac2all.planning.discovery import Source, Tree
from flac2all.records import Record

LIB, OUT = Path("/lib"), Path("/out")
MP3, OPUS, TEST = CODECS["mp3"], CODECS["opus"], CODECS["test"]
VERSIONS = {"flac": "flac 1.4.2", "lame": "LAME 3.100", "opusenc": "opusenc 0.2"}


def source(rel: str, size: int = 1000, mtime_ns: int = 10) -> Source:
    return Source(LIB / rel, Path(rel), size, mtime_ns)


def facts(md5: str = "aa", tags: str = "t1", pictures: str = "p1", size: int = 1000, mtime_ns: int = 10) -> SourceFacts:
    return SourceFacts(size, mtime_ns, md5, tags, pictures)


def stat(size: int = 500, mtime_ns: int = 20) -> SimpleNamespace:
    return SimpleNamespace(st_size=size, st_mtime_ns=mtime_ns)


class World:
    """The file system and the state as the planner sees them."""

    def __init__(self, **settings) -> None:
        self.settings = Settings(LIB, OUT, ("mp3", "opus"), **settings)
        self.stats: dict[Path, SimpleNamespace] = {}
        self.facts: dict[Path, SourceFacts] = {}
        self.provenance: dict[Path, dict[str, str]] = {}
        self.records: dict[Path, Record] = {}
        self.facts_read: list[Path] = []

    def hash(self, codec) -> str:
        return hashes.settings_hash(codec, self.settings, VERSIONS)

    def made(self, src: Source, codec, output: Path, f: SourceFacts, settings_hash: str | None = None) -> None:
        """An output on disk that the state records as made from ``src``."""
        st = stat()
        self.stats[output] = st
        self.records[output] = Record.made(output, src.path, codec.name, f, settings_hash or self.hash(codec), st)

    def read_facts(self, path: Path) -> SourceFacts | None:
        self.facts_read.append(path)
        return self.facts.get(path)

    def build(self, flacs: list[Source], others: list[Source] = (), codecs=(MP3, OPUS)) -> planned.Plan:
        return plan.build(
            Tree(list(flacs), list(others)),
            codecs,
            self.settings,
            self.records,
            VERSIONS,
            stat=lambda path: self.stats.get(Path(path)),  # (up-to-date outputs are asked by their text)
            facts=self.read_facts,
            provenance=lambda family, path: self.provenance.get(path),
        )


def by_output(the_plan: planned.Plan) -> dict[Path, tuple[Action, str]]:
    return {t.output: (t.action, t.note) for t in the_plan.every_task()}


def test_new_sources_are_encoded_and_each_source_is_one_job_costliest_first():
    w = World()
    small, big = source("a/small.flac", size=100), source("b/big.flac", size=9000)
    the_plan = w.build([small, big], codecs=(MP3, OPUS, TEST))
    assert by_output(the_plan)[OUT / "mp3" / "a" / "small.mp3"] == (Action.ENCODE, "")
    assert {t.action for t in the_plan.tasks} == {Action.ENCODE}
    assert len(the_plan.tasks) == 6
    # mp3 and opus of one source share a job (one decoder); test mode reads the file itself.
    shapes = [(job.source.name, sorted(t.mode for t in job.tasks)) for job in the_plan.jobs]
    assert shapes[0] == ("big.flac", ["mp3", "opus"])
    assert sorted(shapes) == [
        ("big.flac", ["mp3", "opus"]),
        ("big.flac", ["test"]),
        ("small.flac", ["mp3", "opus"]),
        ("small.flac", ["test"]),
    ]
    assert [job.cost for job in the_plan.jobs] == sorted((job.cost for job in the_plan.jobs), reverse=True)
    assert sum(len(job.tasks) for job in the_plan.jobs) == len(the_plan.tasks)


def test_decode_per_mode_makes_a_job_of_every_task():
    w = World(shared_decode=False)
    the_plan = w.build([source("a.flac")])
    assert [len(job.tasks) for job in the_plan.jobs] == [1, 1]


def test_an_unchanged_source_is_skipped_without_reading_it():
    w = World()
    src = source("a.flac")
    for codec in (MP3, OPUS):
        w.made(src, codec, names.output_path(src.rel, codec, w.settings, codec.extension), facts())
    the_plan = w.build([src])
    assert {a for a, _ in by_output(the_plan).values()} == {Action.SKIP}
    assert {note for _, note in by_output(the_plan).values()} == {"skipped: up to date"}
    assert w.facts_read == []


def test_up_to_date_outputs_are_kept_as_text_costliest_first_and_make_no_job():
    w = World()
    small, big = source("a/small.flac", size=100), source("b/big.flac", size=9000)
    for src in (small, big):
        for codec in (MP3, OPUS):
            out = names.output_path(src.rel, codec, w.settings, codec.extension)
            w.made(src, codec, out, facts(size=src.size))
    the_plan = w.build([small, big])
    assert the_plan.tasks == [] and the_plan.jobs == []
    assert [(s.source, s.mode) for s in the_plan.skips] == [
        (str(LIB / "b/big.flac"), "opus"),
        (str(LIB / "b/big.flac"), "mp3"),
        (str(LIB / "a/small.flac"), "opus"),
        (str(LIB / "a/small.flac"), "mp3"),
    ]  # opus costs more than mp3
    assert all(s.output == os.fspath(t.output) for s, t in zip(the_plan.skips, the_plan.every_task(), strict=True))
    assert the_plan.counts()[Action.SKIP] == 4
    assert the_plan.as_json()["counts"]["skip"] == 4


def test_changed_tags_retag_new_audio_encodes_and_a_touch_skips():
    w = World()
    retagged, reencoded, touched = source("r.flac", mtime_ns=99), source("e.flac", mtime_ns=99), source("t.flac", 1, 99)
    w.facts = {
        retagged.path: facts(tags="t2", mtime_ns=99),
        reencoded.path: facts(md5="bb", mtime_ns=99),
        touched.path: facts(size=1, mtime_ns=99),
    }
    for src in (retagged, reencoded, touched):
        w.made(src, MP3, names.output_path(src.rel, MP3, w.settings, ".mp3"), facts(size=src.size))
    the_plan = w.build([retagged, reencoded, touched], codecs=(MP3,))
    got = by_output(the_plan)
    assert got[OUT / "mp3" / "r.mp3"][0] is Action.RETAG
    assert got[OUT / "mp3" / "e.mp3"][0] is Action.ENCODE
    assert got[OUT / "mp3" / "t.mp3"] == (Action.SKIP, "skipped: unchanged")
    # The touched source's state row is refreshed, so that next run skips it from stat alone.
    assert [r.output for r in the_plan.refresh] == [OUT / "mp3" / "t.mp3"]


def test_other_settings_re_encode_everything():
    w = World()
    src = source("a.flac")
    w.made(src, MP3, OUT / "mp3" / "a.mp3", facts(), settings_hash="0" * 16)
    assert by_output(w.build([src], codecs=(MP3,)))[OUT / "mp3" / "a.mp3"][0] is Action.ENCODE


def test_an_output_the_state_lost_is_adopted_by_its_provenance():
    w = World()
    src = source("a.flac")
    w.facts[src.path] = facts()
    w.stats[OUT / "mp3" / "a.mp3"] = stat()
    w.provenance[OUT / "mp3" / "a.mp3"] = {"settings": w.hash(MP3), "md5": "aa", "tags": "t1", "pictures": "p1"}
    the_plan = w.build([src], codecs=(MP3,))
    assert by_output(the_plan)[OUT / "mp3" / "a.mp3"] == (Action.SKIP, "skipped: unchanged")
    assert [r.output for r in the_plan.refresh] == [OUT / "mp3" / "a.mp3"]


def test_an_output_without_provenance_older_than_its_source_is_encoded_newer_retagged():
    w = World()
    old, new = source("old.flac", mtime_ns=50), source("new.flac", mtime_ns=5)
    w.stats[OUT / "mp3" / "old.mp3"] = stat(mtime_ns=20)
    w.stats[OUT / "mp3" / "new.mp3"] = stat(mtime_ns=20)
    got = by_output(w.build([old, new], codecs=(MP3,)))
    assert got[OUT / "mp3" / "old.mp3"][0] is Action.ENCODE
    assert got[OUT / "mp3" / "new.mp3"][0] is Action.RETAG


def test_a_renamed_source_moves_its_output_and_the_rest_of_the_state_is_orphans():
    w = World()
    gone, renamed, lost = source("old/name.flac"), source("new/name.flac"), source("lost.flac", size=7)
    w.made(gone, MP3, OUT / "mp3" / "old" / "name.mp3", facts(md5="cc"))
    w.made(lost, MP3, OUT / "mp3" / "lost.mp3", facts(md5="dd", size=7))
    w.facts[renamed.path] = facts(md5="cc")
    the_plan = w.build([renamed], codecs=(MP3,))
    moves = [t for t in the_plan.tasks if t.action is Action.MOVE]
    assert [(t.previous, t.output) for t in moves] == [
        (OUT / "mp3" / "old" / "name.mp3", OUT / "mp3" / "new" / "name.mp3")
    ]
    assert [(t.action, t.output) for t in the_plan.tasks if t.action is Action.ORPHAN] == [
        (Action.ORPHAN, OUT / "mp3" / "lost.mp3")
    ]
    # Moves and orphans run where flac2all runs, never on an executor.
    assert not any(job.action.on_executor for job in the_plan.jobs)


def test_delete_removes_orphans_but_refuses_to_remove_more_than_a_tenth():
    few = World(delete=True)
    kept = [source(f"{n}.flac") for n in range(10)]
    for src in [*kept, source("gone.flac")]:
        few.made(src, MP3, OUT / "mp3" / src.rel.with_suffix(".mp3"), facts())
    the_plan = few.build(kept, codecs=(MP3,))
    assert [t.output for t in the_plan.tasks if t.action is Action.DELETE] == [OUT / "mp3" / "gone.mp3"]
    many = World(delete=True)
    for src in kept:
        many.made(src, MP3, OUT / "mp3" / src.rel.with_suffix(".mp3"), facts())
    with pytest.raises(UsageError, match="would remove 10 of the 10 outputs"):
        many.build([], codecs=(MP3,))
    anyway = World(delete=True, delete_anyway=True)
    anyway.records = many.records
    anyway.stats = many.stats
    assert len([t for t in anyway.build([], codecs=(MP3,)).tasks if t.action is Action.DELETE]) == 10


@pytest.mark.parametrize(
    "sources, gone, refused",
    [
        (9, 1, False),  # an album of a small library: 11%, but 1 file
        (2, 1, True),  # half the library
        (600, 50, False),  # 8%
        (600, 61, True),  # more than 50 files and more than 10%
        (100, 51, True),
        (100, 49, False),  # 49%, but only 49 files
    ],
)
def test_delete_refuses_half_the_outputs_or_many_past_a_tenth(sources, gone, refused):
    w = World(delete=True)
    every = [source(f"Artist {n % 3}/{n}.flac") for n in range(sources)]
    for src in every:
        w.made(src, MP3, OUT / "mp3" / src.rel.with_suffix(".mp3"), facts())
    if not refused:
        assert sum(t.action is Action.DELETE for t in w.build(every[gone:], codecs=(MP3,)).tasks) == gone
        return
    with pytest.raises(UsageError, match=f"would remove {gone} of the {sources} outputs") as caught:
        w.build(every[gone:], codecs=(MP3,))
    assert "those of 'Artist 0' (" in str(caught.value) and "--delete-anyway" in str(caught.value)


def test_two_sources_with_one_output_are_refused_not_overwritten():
    w = World(layout=Layout.FLAT)
    the_plan = w.build([source("a/song.flac"), source("b/song.flac")], codecs=(MP3,))
    assert [t.source for t in the_plan.tasks] == [LIB / "a" / "song.flac"]
    assert len(the_plan.refused) == 1
    assert "has the same output" in the_plan.refused[0].message


def test_copies_are_their_own_jobs_and_skipped_when_unchanged():
    w = World(copy=True)
    cover, notes = source("a/cover.jpg", size=3, mtime_ns=7), source("a/notes.txt", size=4, mtime_ns=8)
    w.stats[OUT / "mp3" / "a" / "cover.jpg"] = stat(size=3, mtime_ns=7)  # a copy2 of it
    the_plan = w.build([], [cover, notes], codecs=(MP3,))
    got = by_output(the_plan)
    assert got[OUT / "mp3" / "a" / "cover.jpg"] == (Action.SKIP, "skipped: up to date")
    assert got[OUT / "mp3" / "a" / "notes.txt"] == (Action.COPY, "")
    assert [len(job.tasks) for job in the_plan.jobs] == [1, 1]


def test_settings_hash_changes_with_what_shapes_an_output_only():
    base = Settings(LIB, OUT, ("mp3",))
    h = hashes.settings_hash(MP3, base, VERSIONS)
    assert hashes.settings_hash(MP3, Settings(LIB, OUT, ("mp3",), threads=7), VERSIONS) == h
    assert hashes.settings_hash(MP3, Settings(LIB, OUT, ("mp3",), id3v23=True), VERSIONS) != h
    assert hashes.settings_hash(MP3, base, {**VERSIONS, "lame": "LAME 3.101"}) != h
    assert hashes.settings_hash(MP3, Settings(LIB, OUT, ("mp3",), options={"lame": ("-V", "2")}), VERSIONS) != h
    # --id3v2.3 shapes only ID3 outputs.
    assert hashes.settings_hash(OPUS, Settings(LIB, OUT, ("opus",), id3v23=True), VERSIONS) == hashes.settings_hash(
        OPUS, Settings(LIB, OUT, ("opus",)), VERSIONS
    )
    # Measured gains (or none) in place of the source's: every output is made again; keep changes nothing.
    assert hashes.settings_hash(MP3, Settings(LIB, OUT, ("mp3",), replaygain=ReplayGain.KEEP), VERSIONS) == h
    made = {
        hashes.settings_hash(MP3, Settings(LIB, OUT, ("mp3",), replaygain=policy), VERSIONS) for policy in ReplayGain
    }
    assert len(made) == len(ReplayGain)


STARTERS = ("subprocess", "flac2all.tools", "flac2all.running.procs", "flac2all.running.runner")


def imported_by(*modules: str) -> list[str]:
    """What a fresh interpreter has loaded, of the modules that start processes, after importing ``modules``."""
    probe = f"import sys, {', '.join(modules)}\nprint(sorted(m for m in {STARTERS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(out.stdout)


def test_planning_and_discovery_import_nothing_that_starts_a_process():
    assert imported_by("flac2all.planning.plan", "flac2all.planning.discovery") == []
    # The engine does (it probes the tools): the probe sees it.
    assert imported_by("flac2all.running.engine") == [
        "flac2all.running.procs",
        "flac2all.running.runner",
        "flac2all.tools",
        "subprocess",
    ]


def test_the_cluster_imports_no_display_code():
    probe = (
        "import sys, flac2all.cluster.master, flac2all.cluster.worker\n"
        "shown = {'rich', *(f'flac2all.face.{m}' for m in ('progress', 'plain', 'drawing', 'live', 'dashboard'))}\n"
        "print([m for m in sys.modules if m in shown or m.startswith('rich.')])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "[]"


def test_moves_prefer_the_same_relative_name_then_the_same_tags():
    """Two discs with identical audio, their album folder renamed: each
    output moves from its own disc, never crosswise."""
    w = World()
    old = [source("Album/CD1/01.flac"), source("Album/CD2/01.flac")]
    new = [source("Album (2020)/CD1/01.flac"), source("Album (2020)/CD2/01.flac")]
    for src in old:
        w.made(src, MP3, OUT / "mp3" / src.rel.with_suffix(".mp3"), facts(md5="ee", tags="same"))
    for src in new:
        w.facts[src.path] = facts(md5="ee", tags="same")
    moves = {t.output: t.previous for t in w.build(new, codecs=(MP3,)).tasks}
    assert moves == {
        OUT / "mp3/Album (2020)/CD1/01.mp3": OUT / "mp3/Album/CD1/01.mp3",
        OUT / "mp3/Album (2020)/CD2/01.mp3": OUT / "mp3/Album/CD2/01.mp3",
    }
    # Same names everywhere: the tags decide.
    w = World()
    a, b = source("x/a.flac"), source("y/a.flac")
    w.made(a, MP3, OUT / "mp3/x/a.mp3", facts(md5="ff", tags="first"))
    w.made(b, MP3, OUT / "mp3/y/a.mp3", facts(md5="ff", tags="second"))
    moved = source("z/a.flac")
    w.facts[moved.path] = facts(md5="ff", tags="second")
    [task] = [t for t in w.build([moved], codecs=(MP3,)).tasks if t.action is Action.MOVE]
    assert task.previous == OUT / "mp3/y/a.mp3"


def test_with_n_m_no_input_file_is_written_over_flac2alls_own(tmp_path):
    """Below OUTDIR itself (-n m), a source folder named as flac2all's state
    folder or log would have its copies written over the state database
    and its outputs make the log a folder: each is refused, naming why."""
    from tests.conftest import make_flac, read_log, run_flac2all

    make_flac(tmp_path / "in" / ".flac2all" / "a.flac", seconds=0.1)
    (tmp_path / "in" / ".flac2all" / "state.sqlite").write_text("not a database")
    make_flac(tmp_path / "in" / "conversion_results.log" / "b.flac", seconds=0.1)
    make_flac(tmp_path / "in" / "Album" / "c.flac", seconds=0.1)
    out = tmp_path / "out"
    for _ in range(2):  # the state the first run wrote is read by the second
        result = run_flac2all("flac", "-c", "-n", "m", "-o", out, tmp_path / "in", timeout=60)
        assert result.returncode == 1, result.stderr
        refused = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
        assert len(refused) == 3 and all("it would be one of flac2all's own files" in line for line in refused)
        assert "Traceback" not in result.stderr
    assert (out / "conversion_results.log").is_file() and not (out / "conversion_results.log.previous").exists()
    assert {Path(r["infile"]).name: r["conversion_status"] for r in read_log(out)}["c.flac"].startswith("SUCCESS")
    assert (out / ".flac2all" / "state.sqlite").read_bytes().startswith(b"SQLite format 3")
    assert not (out / ".flac2all" / "a.flac").exists()
