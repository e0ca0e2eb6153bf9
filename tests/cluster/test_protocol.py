"""Hostile and malformed messages: refused before use, nothing started, and
neither the master nor a worker crashes."""

from __future__ import annotations

import dataclasses
import enum as enum_module
import json
import os
import re
import shutil
import time
import typing
from pathlib import Path

import pytest
import zmq

from flac2all.audio.loudness import Loudness
from flac2all.cluster import jobs, protocol, view
from flac2all.cluster.protocol import ProtocolError, Timings
from flac2all.errors import UsageError
from flac2all.face import config
from flac2all.face.arguments import build_parser
from flac2all.face.config import settings_from
from flac2all.model import Action, Layout, Lossy, Settings, Status, Task, TaskResult, Track, Wire
from tests.cluster.processes import FakeMaster, a_real_worker_finishes, start_master, start_worker
from tests.conftest import decodes, make_flac, read_log

pytestmark = pytest.mark.timeout(120)

JOB_FIELDS = ("source", "action", "size", "tasks")
V = protocol.VERSION


def job(change: dict | None = None, **base: str) -> dict:
    """A job message of one task, with ``change`` applied to the job's fields
    (source, action, size, tasks) or else to the task's."""
    msg = {
        "v": protocol.VERSION,
        "type": "job",
        "source": base.get("source", "/music/a.flac"),
        "action": "encode",
        "size": 10,
        "tasks": [
            {
                "id": 1,
                "attempt": 0,
                "mode": "mp3",
                "output": base.get("output", "/out/mp3/a.mp3"),
                "settings_hash": "ab12",
            }
        ],
    }
    for key, value in (change or {}).items():
        if key in JOB_FIELDS:
            msg[key] = value
        else:
            msg["tasks"][0][key] = value
    return msg


def read(msg: dict) -> dict:
    """A message as a peer reads it: sent as JSON, then decoded."""
    return protocol.decode(json.dumps(msg).encode())


def two_modes(tmp: str = "/out", **task_change) -> list[dict]:
    """The tasks of a job encoding one source to mp3 and opus."""
    return [
        {"id": 1, "attempt": 0, "mode": "mp3", "output": f"{tmp}/mp3/a.mp3", "settings_hash": "ab12"},
        {"id": 2, "attempt": 0, "mode": "opus", "output": f"{tmp}/opus/a.opus", "settings_hash": "cd34", **task_change},
    ]


def rebase(tasks: list[dict], out: Path) -> list[dict]:
    """Tasks whose outputs are under ``out`` instead of /out."""
    return [{**t, "output": t["output"].replace("/out/", f"{out}/", 1)} for t in tasks]


HOSTILE_TASKS = [
    {"id": "1"},  # wrong type
    {"id": True},  # a bool is not a number
    {"extra": 1},  # unknown field
    {"source": "../../etc/passwd"},
    {"source": "/music/../../etc/passwd.flac"},
    {"source": "-i.flac"},  # relative, option-like
    {"source": "//music/a.flac"},  # normpath keeps a leading "//"
    {"output": "/out/mp3/./a.mp3"},  # not normalized
    {"output": "-y"},
    {"output": "/out/mp3/a\x00.mp3"},
    {"output": "/out/mp3/a\n.mp3"},
    {"output": "/out/mp3/a\x1b]0;title\x07.mp3"},  # a terminal's escape sequence
    {"mode": "f:nosuchcodec"},
    {"mode": "rm -rf /"},
    {"output": "/out/mp3/a.sh"},  # extension not the codec's
    {"output": "/music/a.flac", "mode": "flac"},  # the source itself (in the unit test)
    {"action": "delete"},  # not a worker's action
    {"action": "shell"},
    {"settings_hash": "x" * 100},
    {"tasks": []},
    {"tasks": "all of them"},
]
# Jobs of several tasks that must be refused whole.
HOSTILE_JOBS = [
    {"tasks": two_modes(output="/out/mp3/a.mp3", mode="mp3")},  # one output twice
    {"tasks": two_modes(id=1)},  # one task id twice
    {"tasks": two_modes(), "action": "copy"},  # only encodes share a job
    {"tasks": two_modes(mode="test", output="/out/test/a.ana")},  # test mode reads the file itself
    {"tasks": [{**two_modes()[0], "id": i, "output": f"/out/mp3/{i}.mp3"} for i in range(jobs.MAX_JOB + 1)]},
]
# Valid on their own, refused by a worker: outside the run's folders.
OUTSIDE_TASKS = [
    {"output": "/elsewhere/mp3/a.mp3"},
    {"source": "/etc/a.flac"},
]


def test_a_good_job_parses():
    [(task_id, attempt, task)] = jobs.job_from_wire(job())
    assert (task_id, attempt) == (1, 0)
    assert task == Task(Path("/music/a.flac"), "mp3", Path("/out/mp3/a.mp3"), Action.ENCODE, 10, settings_hash="ab12")
    both = jobs.job_from_wire(job({"tasks": two_modes()}))
    assert [(i, t.mode, t.output, t.source) for i, _, t in both] == [
        (1, "mp3", Path("/out/mp3/a.mp3"), Path("/music/a.flac")),
        (2, "opus", Path("/out/opus/a.opus"), Path("/music/a.flac")),
    ]
    # and what the master sends is what the worker reads
    assert jobs.job_from_wire(protocol.decode(jobs.job_to_wire(both))) == both


@pytest.mark.parametrize("change", HOSTILE_TASKS + HOSTILE_JOBS)
def test_hostile_jobs_are_refused(change):
    with pytest.raises(ProtocolError):
        jobs.job_from_wire(read(job(change)))


def test_missing_field_and_bad_frames_are_refused():
    msg = job()
    del msg["tasks"][0]["output"]
    with pytest.raises(ProtocolError):
        jobs.job_from_wire(read(msg))
    msg = job()
    del msg["source"]
    with pytest.raises(ProtocolError):
        jobs.job_from_wire(read(msg))
    old = b'{"v":1,"type":"task","id":1}'  # a master or worker of protocol version 1
    for frame in (b"\xff\xfe", b"[1,2]", old, b'{"v":2}', b"x" * (protocol.MAX_MESSAGE + 1)):
        with pytest.raises(ProtocolError):
            protocol.decode(frame)


@pytest.mark.parametrize(
    "words", [["-i", "x"], ["/etc/passwd"], ["file:/x"], ["a\nb"], ["--output", "x"], ["-y"], list("a" * 100), [1]]
)
def test_hostile_encoder_options_are_refused(words):
    with pytest.raises(ProtocolError):
        protocol.option_words("ffmpeg", words)


def test_settings_round_trip_and_refusals():
    settings = Settings(Path("/in"), Path("/out"), ("mp3", "opus"), options={"lame": ("--preset", "standard")})
    back = jobs.settings_from_wire(json.loads(json.dumps(jobs.settings_to_wire(settings))))
    assert (back.input_dir, back.outdir, back.modes, dict(back.options)) == (
        settings.input_dir,
        settings.outdir,
        settings.modes,
        dict(settings.options),
    )
    wire = jobs.settings_to_wire(settings)
    for bad in (
        {"options": {"shell": ["x"]}},
        {"modes": ["evil"]},
        {"timeout": -1},
        {"outdir": "out"},
        {"unknown": 1},
        {"id3v23": "yes"},
    ):
        with pytest.raises(ProtocolError):
            jobs.settings_from_wire({**wire, **bad})


BASE = Settings(Path("/in"), Path("/out"), ("mp3",), threads=1)
HINTS = typing.get_type_hints(Settings)


TRACK = Track(2, 44100, 88200, (("TITLE", "Вторая = two"), ("ARTIST", "a"), ("TITLE", "b"), ("TRACKNUMBER", "2")))
SPLIT = Settings(Path("/music"), Path("/out"), ("flac", "opus"), cue="split")


def track_job(**track_change) -> dict:
    """A job of one track of /music/a.flac, in flac and opus, with
    ``track_change`` applied to the opus task's track."""
    tasks = [
        (i, 0, Task(Path("/music/a.flac"), mode, Path(f"/out/{mode}/02.{ext}"), Action.ENCODE, 10, track=TRACK))
        for i, mode, ext in ((1, "flac", "flac"), (2, "opus", "opus"))
    ]
    msg = json.loads(jobs.job_to_wire(tasks))
    msg["tasks"][1]["track"].update(track_change)
    return msg


def test_a_track_crosses_the_wire_with_its_job_and_is_bounded():
    [(_, _, flac), (_, _, opus)] = jobs.job_from_wire(read(track_job()), SPLIT)
    assert flac.track == opus.track == TRACK
    assert "track" not in json.loads(jobs.job_to_wire(jobs.job_from_wire(job())))["tasks"][0]  # none: not sent
    hash_of_a_track = "ab12:0123456789abcdef:fedcba9876543210"
    assert jobs.job_from_wire(read(job({"settings_hash": hash_of_a_track})))[0][2].settings_hash == hash_of_a_track
    for change in (
        {"start": -1},
        {"end": 2**36},
        {"number": 1000},
        {"start": 88200},  # ends where it starts
        {"tags": [["TITLE", "x" * 1001]]},
        {"tags": [["TI=TLE", "x"]]},
        {"tags": [["", "x"]]},
        {"tags": [["TITLE", "x"]] * 65},
        {"tags": [["TITLE"]]},
        {"path": "/etc/passwd"},
    ):
        with pytest.raises(ProtocolError):
            jobs.job_from_wire(read(track_job(**change)), SPLIT)
    with pytest.raises(ProtocolError, match="a run that does not split"):
        jobs.job_from_wire(read(track_job()), dataclasses.replace(SPLIT, cue="ignore"))
    copy = {"v": V, "type": "copies", "tasks": [{**copies(1)["tasks"][0], "track": track_job()["tasks"][0]["track"]}]}
    with pytest.raises(ProtocolError, match="unknown field"):
        jobs.job_from_wire(read(copy))
    with pytest.raises(ProtocolError, match="bad cue"):
        jobs.settings_from_wire({**jobs.settings_to_wire(SPLIT), "cue": "x"})


def other_than(f: dataclasses.Field, wire: Wire | None = None):
    """A value of field ``f`` unlike its default, chosen by its Wire kind
    (a sent field) or its type: a field declared with a new kind needs a
    line here, so that it is walked too."""
    hint = HINTS[f.name]
    kinds = {t for t in (hint, *typing.get_args(hint)) if isinstance(t, type) and t is not type(None)}
    default = getattr(BASE, f.name)
    if wire is not None and wire.kind == "path":
        return Path(f"/elsewhere/{f.name}")
    if wire is not None and wire.kind == "modes":
        return ("opus", "f:nosuchenc")
    if wire is not None and wire.kind == "options":
        return {"lame": ("-V", "2"), "ffmpeg": ("-b:a", "96k")}
    if wire is not None and wire.kind == "word":
        return next(word for word in wire.words if word != default)
    if wire is not None and wire.kind in ("seconds", "whole"):
        return type(wire.high)(wire.high)
    if bool in kinds:
        return not default
    if int in kinds:
        return 7 if default != 7 else 8
    if typing.get_origin(hint) is tuple:
        return ("x",)
    if str in kinds:
        return "x"
    (enum,) = [t for t in kinds if issubclass(t, enum_module.Enum)]
    return next(member for member in enum if member != default)


def through_the_wire(settings: Settings) -> Settings:
    frame = protocol.welcome_to_wire(jobs.settings_to_wire(settings), Timings())
    return protocol.welcome_from_wire(protocol.decode(frame)).settings


@pytest.mark.parametrize("sent", Settings.sent_fields(), ids=lambda sent: sent[0].name)
def test_every_declared_field_crosses_the_wire(sent):
    f, wire = sent
    settings = dataclasses.replace(BASE, **{f.name: other_than(f, wire)})
    assert getattr(settings, f.name) != getattr(BASE, f.name)
    assert through_the_wire(settings) == settings
    body = jobs.settings_to_wire(settings)
    assert set(body) == {g.name for g, _ in Settings.sent_fields()}
    without = {k: v for k, v in body.items() if k != f.name}
    if f.default is None or wire.later:  # optional on the wire
        assert getattr(jobs.settings_from_wire(without), f.name) == f.default
    else:
        with pytest.raises(ProtocolError, match=f"missing field: {f.name}"):
            jobs.settings_from_wire(without)


@pytest.mark.parametrize(
    "f", [f for f in dataclasses.fields(Settings) if "wire" not in f.metadata], ids=lambda f: f.name
)
def test_a_field_not_declared_does_not_travel(f):
    settings = dataclasses.replace(BASE, **{f.name: other_than(f)})
    assert f.name not in jobs.settings_to_wire(settings)
    assert through_the_wire(settings) == BASE  # a worker runs one job at a time: threads 1
    with pytest.raises(ProtocolError, match="unknown field"):
        jobs.settings_from_wire({**jobs.settings_to_wire(settings), f.name: jobs.settings_to_wire(BASE)["outdir"]})


@pytest.mark.parametrize("name", ["v", "type"])
def test_the_envelopes_field_names_are_unknown_fields_in_the_settings(name):
    with pytest.raises(ProtocolError, match="unknown field"):
        jobs.settings_from_wire({**jobs.settings_to_wire(BASE), name: "/etc/passwd"})


def test_the_settings_of_an_earlier_master_of_this_version_still_read():
    body = json.loads(
        '{"input_dir":"/in","outdir":"/out","modes":["mp3","opus"],"options":{"lame":["-V","2"]},'
        '"timeout":30,"id3v23":true,"embed_folder_art":false,"layout":"m"}'
    )
    assert jobs.settings_from_wire(body) == Settings(
        Path("/in"),
        Path("/out"),
        ("mp3", "opus"),
        threads=1,
        layout=Layout.NO_MODE_DIRS,
        options={"lame": ("-V", "2")},
        timeout=30.0,
        id3v23=True,
    )
    del body["timeout"]  # optional, as before
    assert jobs.settings_from_wire(body).timeout is None


def test_a_measured_loudness_crosses_the_wire_with_its_result_and_is_checked():
    task = Task(Path("/in/a.flac"), "mp3", Path("/out/a.mp3"), Action.ENCODE)
    measured = Loudness(-9.5, 0.9, (3, 7), (1, 2))
    result = TaskResult(task, Status.SUCCESS, loudness=measured)
    assert protocol.result_from_wire(protocol.decode(protocol.result_to_wire(1, 0, result))).loudness == measured
    plain = dataclasses.replace(result, loudness=None)
    assert protocol.result_from_wire(protocol.decode(protocol.result_to_wire(1, 0, plain))).loudness is None
    bad = dataclasses.replace(result, loudness=Loudness(-9.5, 0.9, (7, 3), (1, 2)))  # bins out of order
    with pytest.raises(ProtocolError, match="not a loudness measurement"):
        protocol.result_from_wire(protocol.decode(protocol.result_to_wire(1, 0, bad)))


def test_each_wire_kind_bounds_its_values():
    whole, seconds = jobs.KINDS["whole"], jobs.KINDS["seconds"]
    assert whole.from_wire(5, "n", Wire("whole", 1, 10), int) == 5
    for bad in (0, 11, 10**400, True):
        with pytest.raises(ProtocolError, match="n: not a whole number"):
            whole.from_wire(bad, "n", Wire("whole", 1, 10), int)
    for bad in (10**400, float("nan"), float("inf"), 0):
        with pytest.raises(ProtocolError, match="s: not a number of seconds"):
            seconds.from_wire(bad, "s", Wire("seconds", 1e-3, 1e7), float)
    with pytest.raises(ProtocolError, match="bad layout"):
        jobs.settings_from_wire({**jobs.settings_to_wire(BASE), "layout": "x"})


def test_a_cluster_run_refuses_what_workers_are_not_sent():
    config.check_cluster(BASE)
    refusing = [(f, f.metadata["not_sent"]) for f in dataclasses.fields(Settings) if "not_sent" in f.metadata]
    assert not any("wire" in f.metadata for f, _ in refusing)
    assert [spec.flag for _, spec in refusing] == [
        "--names fat32",
        "--lossy convert",
        "--max-bitrate",
        "--art-max-size",
    ]
    for f, spec in refusing:
        value = spec.refused if spec.refused is not None else other_than(f)
        with pytest.raises(UsageError, match=f"^{spec.flag}: not available with -m"):
            config.check_cluster(dataclasses.replace(BASE, **{f.name: value}))
    config.check_cluster(dataclasses.replace(BASE, lossy=Lossy.COPY))  # copies are run under their own names


def test_every_option_family_of_the_cli_crosses_the_wire():
    args = build_parser().parse_args(["all", "/in", "-o", "/out", "--ffmpeg-options=-b:a 96k,-vbr on"])
    settings, _ = settings_from(args)
    assert set(settings.options) == set(jobs.OPTION_FAMILIES) == {"lame", "vorbis", "opus", "flac", "ffmpeg", "aac"}
    protocol.check_usage_options(dict(settings.options))
    back = jobs.settings_from_wire(json.loads(json.dumps(jobs.settings_to_wire(settings))))
    assert dict(back.options) == dict(settings.options)
    assert back.options["ffmpeg"] == ("-b:a", "96k", "-vbr", "on")


def test_results_are_validated():
    good = {
        "v": protocol.VERSION,
        "type": "result",
        "id": 1,
        "attempt": 0,
        "status": "success",
        "message": "",
        "returncode": 0,
        "elapsed": 0.5,
        "facts": [1, 2, "ab", "cd", "ef"],
    }
    assert protocol.result_from_wire(read(good)).facts.size == 1
    assert protocol.result_from_wire(read({**good, "elapsed": -1.0, "returncode": -9})).elapsed == -1.0
    for bad in (
        {"status": "great"},
        {"facts": [1, 2, 3]},
        {"facts": [True, 2, "a", "b", "c"]},
        {"elapsed": "1"},
        {"returncode": None},
        # float() of these raised OverflowError, which ended the master's run
        {"elapsed": 10**400},
        {"elapsed": float("nan")},
        {"elapsed": float("inf")},
        {"elapsed": -5},
        {"returncode": 10**400},
        {"facts": [10**400, 2, "ab", "cd", "ef"]},
        {"facts": [1, -(10**400), "ab", "cd", "ef"]},
        {"facts": [-1, 2, "ab", "cd", "ef"]},
    ):
        with pytest.raises(ProtocolError):
            protocol.result_from_wire(read({**good, **bad}))


SETTINGS = Settings(Path("/in"), Path("/out"), ("mp3", "opus"))


def welcome(**timings) -> dict:
    """A welcome message as a worker decodes it, with these timings."""
    msg = protocol.decode(protocol.welcome_to_wire(jobs.settings_to_wire(SETTINGS), Timings()))
    return {**msg, **timings}


def test_every_message_reads_back_as_it_was_built():
    hello = protocol.hello_from_wire(protocol.decode(protocol.hello_to_wire("0" * 32, "node-1", 4242, 2)))
    assert hello == protocol.Hello("0" * 32, "node-1", 4242, 2)
    sent = Timings(heartbeat=0.25, dead_after=2.5)
    got = protocol.welcome_from_wire(protocol.decode(protocol.welcome_to_wire(jobs.settings_to_wire(SETTINGS), sent)))
    assert got.timings == sent
    assert (got.settings.input_dir, got.settings.outdir, got.settings.modes) == (
        SETTINGS.input_dir,
        SETTINGS.outdir,
        SETTINGS.modes,
    )
    assert protocol.ready_from_wire(protocol.decode(protocol.ready_to_wire(1))) == 1
    for build, kind in (
        (protocol.heartbeat_to_wire, "heartbeat"),
        (protocol.bye_to_wire, "bye"),
        (protocol.shutdown_to_wire, "shutdown"),
        (protocol.reset_to_wire, "reset"),
    ):
        msg = protocol.decode(build())
        assert msg["type"] == kind
        protocol.bare_from_wire(msg)
    assert protocol.is_bye(protocol.bye_to_wire())
    assert not protocol.is_bye(protocol.heartbeat_to_wire())
    assert not protocol.is_bye(b'{"v":2,"type":"bye","x":1}') and not protocol.is_bye(b"bye")


def test_refusals_answer_every_readable_task_of_a_job():
    frames = protocol.refusals_to_wire(job({"tasks": two_modes()}), "node-1", "no such codec")
    results = [protocol.result_from_wire(protocol.decode(f)) for f in frames]
    assert [(r.task_id, r.attempt, r.status.value) for r in results] == [(1, 0, "failed"), (2, 0, "failed")]
    assert results[0].message == "refused by the worker on node-1: no such codec"
    assert protocol.refusals_to_wire(None, "node-1", "garbage") == []
    assert protocol.refusals_to_wire({"type": "welcome"}, "node-1", "x") == []
    long = protocol.result_from_wire(protocol.decode(protocol.refusals_to_wire(job(), "h", "x" * 5000)[0]))
    assert len(long.message) == protocol.MAX_RESULT_MESSAGE


@pytest.mark.parametrize(
    "bad",
    [
        {"credit": -1},
        {"credit": 10**400},
        {"credit": True},
        {"credit": "1"},
        {"credit": 1, "more": 2},
        {},
    ],
)
def test_bad_ready_is_refused(bad):
    with pytest.raises(ProtocolError):
        protocol.ready_from_wire(read({"v": protocol.VERSION, "type": "ready", **bad}))


@pytest.mark.parametrize(
    "bad",
    [
        {"pid": 0},
        {"pid": 10**400},
        {"slots": 0},
        {"slots": 10**400},
        {"session": "x"},
        {"host": "h\n"},
        {"host": "h" * 256},
        {"pid": 1.5},
    ],
)
def test_bad_hello_is_refused(bad):
    good = protocol.decode(protocol.hello_to_wire("0" * 32, "node-1", 4242, 1))
    protocol.hello_from_wire(dict(good))
    with pytest.raises(ProtocolError):
        protocol.hello_from_wire(read({**good, **bad}))


def test_a_value_out_of_range_is_refused_by_the_parser_naming_its_field():
    hello = read(json.loads(protocol.hello_to_wire("0" * 32, "node-1", 4242, 1)))
    result = json.loads(protocol.refusals_to_wire(job(), "h", "x")[0])
    for msg, where in (
        ({**hello, "slots": protocol.MAX_SLOTS + 1}, "<= 256 - at `$.slots`"),
        ({**hello, "session": "0" * 31}, "at `$.session`"),
        ({**result, "elapsed": 1e8}, "at `$.elapsed`"),
        ({**result, "cause": "mine"}, "at `$.cause`"),
        (job({"id": -1}), ">= 0 - at `$.tasks[0].id`"),
        (job({"action": "delete"}), "at `$.action`"),
        (copies(jobs.MAX_JOB + 1), "length <= 32 - at `$.tasks`"),
    ):
        with pytest.raises(ProtocolError) as refused:
            read(msg)
        assert str(refused.value).endswith(where)


@pytest.mark.parametrize(
    "timings",
    [
        {"heartbeat": 0.01},  # below the range
        {"heartbeat": 61},
        {"heartbeat": 0},
        {"heartbeat": -1},
        {"dead_after": 601},
        {"heartbeat": 2.0, "dead_after": 2.0},  # not longer than the heartbeat
        {"heartbeat": 3.0, "dead_after": 2.0},
        {"heartbeat": 10**400},  # float() of it would raise OverflowError
        {"dead_after": 10**400},
        {"dead_after": -(10**400)},
        {"heartbeat": float("inf")},
        {"heartbeat": float("nan")},
        {"dead_after": float("nan")},
        {"dead_after": float("-inf")},
        {"heartbeat": "1"},
        {"dead_after": "4"},
        {"heartbeat": True},
        {"heartbeat": None},
        {"heartbeat": [1]},
    ],
)
def test_welcome_timings_out_of_range_are_refused(timings):
    # Through JSON, as a peer would send them (NaN and Infinity included).
    frame = json.dumps(welcome(**timings)).encode()
    with pytest.raises(ProtocolError):
        protocol.welcome_from_wire(protocol.decode(frame))


@pytest.mark.parametrize(
    ("versions", "field"),
    [
        ({"BAD NAME": "x"}, "key"),  # a program's name: a short word
        ({"lame": "x" * 201}, "$.checks.versions[...]"),  # a version: a short line
        ({f"p{i}": "1" for i in range(17)}, "$.checks.versions"),  # a few programs
    ],
)
def test_encoder_versions_out_of_bounds_are_refused_naming_the_field(versions, field):
    msg = welcome()
    frame = json.dumps({**msg, "checks": {**msg["checks"], "versions": versions}}).encode()
    with pytest.raises(ProtocolError, match=re.escape(field)):
        protocol.decode(frame)
    kept = {**msg, "checks": {**msg["checks"], "versions": {"lame": "LAME 3.100 \x1b[31m"}}}
    assert protocol.welcome_from_wire(read(kept)).checks.versions == (("lame", "LAME 3.100 \\x1b[31m"),)


def test_welcome_without_timings_or_with_unknown_fields_is_refused():
    for msg in ({k: v for k, v in welcome().items() if k != "dead_after"}, welcome(extra=1)):
        with pytest.raises(ProtocolError):
            protocol.welcome_from_wire(msg)
    # the bounds themselves are sane values
    assert protocol.welcome_from_wire(welcome(heartbeat=0.05, dead_after=600)).timings == Timings(0.05, 600.0)
    assert protocol.welcome_from_wire(welcome(heartbeat=60, dead_after=61)).timings == Timings(60.0, 61.0)


def test_the_master_welcomes_with_its_timings(tmp_path):
    """A bare DEALER says hello to a real master: the welcome it gets carries
    the master's heartbeat and dead-after time, the protocol's defaults."""
    lib = tmp_path / "music"
    make_flac(lib / "a.flac")
    master, port = start_master("opus", tmp_path / "out", lib)
    ctx = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(protocol.hello_to_wire("0" * 32, "fake", 1, 1))
        assert dealer.poll(20000)
        got = protocol.welcome_from_wire(protocol.decode(dealer.recv()))
        assert got.timings == Timings(protocol.HEARTBEAT, protocol.DEAD_AFTER)
        assert got.settings.input_dir == lib and got.settings.modes == ("opus",)
    finally:
        ctx.destroy(0)
        master.kill()


@pytest.mark.slow
def test_master_survives_garbage_and_finishes_with_a_real_worker(tmp_path):
    lib = tmp_path / "music"
    make_flac(lib / "a.flac")
    make_flac(lib / "b.flac")
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    ctx = zmq.Context()
    try:
        fuzz = ctx.socket(zmq.DEALER)
        fuzz.setsockopt(zmq.LINGER, 0)
        fuzz.connect(f"tcp://127.0.0.1:{port}")
        frames = [
            b"not json",
            b"[]",
            b'{"v":2}',
            b'{"v":9,"type":"hello"}',
            b'{"v":%d,"type":"launch_missiles"}' % V,
            json.dumps({"v": V, "type": "hello", "session": "x", "host": "h", "pid": 1, "slots": 1}).encode(),
            json.dumps({"v": V, "type": "hello", "session": "0" * 32, "host": "h\n", "pid": 1, "slots": 1}).encode(),
            json.dumps(
                {
                    "v": V,
                    "type": "result",
                    "id": 99,
                    "attempt": 0,
                    "status": "success",
                    "message": "",
                    "returncode": 0,
                    "elapsed": 1,
                }
            ).encode(),
        ]
        # A result whose elapsed time float() cannot hold, for a task this
        # peer was really given: the master drops it and lives on.
        fuzz.send(protocol.hello_to_wire("0" * 32, "fuzz", 1, 1))
        fuzz.send(protocol.health_to_wire("", ["opus"]))
        fuzz.send(protocol.ready_to_wire(1))
        given = None
        deadline = time.monotonic() + 20
        while given is None and time.monotonic() < deadline:
            if fuzz.poll(200) and (msg := protocol.decode(fuzz.recv()))["type"] == "job":
                given = msg["tasks"][0]
        assert given is not None
        huge = {"id": given["id"], "attempt": given["attempt"], "elapsed": 10**400, "facts": None}
        frames.append(json.dumps({**json.loads(frames[-1]), **huge}).encode())
        for frame in frames:
            fuzz.send(frame)
        fuzz.send_multipart([b"two", b"frames"])
        fuzz.send(protocol.bye_to_wire())  # its task goes back to the queue
        time.sleep(0.5)
        a_real_worker_finishes(master, port)
    finally:
        ctx.destroy(0)
        master.kill()
    assert "malformed message(s) dropped" in master.output
    rows = read_log(out)
    assert [r["conversion_status"] for r in rows] == ["SUCCESS", "SUCCESS"]
    assert decodes(out / "opus" / "a.opus")


def test_worker_drops_hostile_tasks_without_starting_anything(tmp_path, fake_bin):
    """A fake master (a bare ROUTER socket) feeds a real worker."""
    src = make_flac(tmp_path / "music" / "a.flac")
    log = tmp_path / "started"
    log.touch()
    spy = None
    for program in ("flac", "lame", "opusenc", "oggenc", "ffmpeg"):
        spy = fake_bin(program, f'echo "{program} $*" >> {log}\nexec {shutil.which(program)} "$@"\n')
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    worker = start_worker(port, 1, "--retry-seconds", "5", path_prefix=spy)
    try:
        assert router.poll(20000)
        identity, frame = router.recv_multipart()
        assert json.loads(frame)["type"] == "hello"
        # What it ran to learn its own codecs (ffmpeg -encoders) came before
        # its hello; from here on, only messages could start anything.
        assert log.read_text() == "ffmpeg -hide_banner -nostdin -encoders\n"
        log.write_text("")
        out = tmp_path / "out"
        settings = Settings(src.parent, out, ("mp3", "opus"))
        router.send_multipart([identity, protocol.welcome_to_wire(jobs.settings_to_wire(settings), Timings())])
        while router.poll(20000) and json.loads(router.recv_multipart()[1])["type"] != "health":
            pass  # jobs come after its health check, as from a master
        base = {"source": str(src), "output": str(out / "mp3" / "a.mp3")}
        hostile = [job(change, **base) for change in HOSTILE_TASKS + OUTSIDE_TASKS]
        hostile += [job({**change, "tasks": rebase(change["tasks"], out)}, **base) for change in HOSTILE_JOBS]
        for msg in hostile:
            router.send_multipart([identity, json.dumps(msg).encode()])
        router.send_multipart([identity, b"\x00garbage"])
        # Then a good job: one source to two modes.
        router.send_multipart([identity, json.dumps(job({"tasks": rebase(two_modes(), out)}, **base)).encode()])
        results, refusals = {}, []
        deadline = time.monotonic() + 30
        while len(results) < 2 and time.monotonic() < deadline:
            if router.poll(200):
                _, frame = router.recv_multipart()
                msg = json.loads(frame)
                if msg["type"] == "result" and msg["status"] == "failed":
                    refusals.append(msg["message"])  # a refused task is answered, not left hanging
                elif msg["type"] == "result":
                    results[msg["id"]] = msg
            router.send_multipart([identity, protocol.heartbeat_to_wire()])
        assert sorted(results) == [1, 2], worker.output
        router.send_multipart([identity, protocol.shutdown_to_wire()])
        assert worker.wait(20) == 1  # it refused work: it says so by its exit status
    finally:
        ctx.destroy(0)
        worker.kill()
    assert worker.output.count("dropped a message") == len(hostile) + 1
    # Every task of a job refused for what its values mean got a failed
    # result naming why; a frame the parser refuses (a bad "id", no tasks or
    # too many, an unknown field, an action not a worker's, a bad settings
    # hash: its shape or ranges) answers nothing: no master of this version
    # sends one.
    readable = len(HOSTILE_TASKS) + len(OUTSIDE_TASKS) - 8
    readable += sum(len(change["tasks"]) for change in HOSTILE_JOBS if len(change["tasks"]) <= jobs.MAX_JOB)
    assert len(refusals) == readable
    assert all(m.startswith("refused by the worker on ") for m in refusals)
    assert not Path("/elsewhere").exists() and not Path("/music").exists()
    started = log.read_text().splitlines()
    # Only the good job ran: one decoder feeding two encoders, each writing
    # a temp name (in its output folder, or through the worker's descriptor
    # of it) that ends up in the output folder.
    assert len(started) == 3, started
    started.sort()  # they start together, in any order
    assert started[0] == f"flac --decode --stdout --silent -- {src}"
    assert re.fullmatch(r"lame --quiet --preset standard -q 0 - \S+/\.flac2all-tmp-[0-9a-f]+\S*\.mp3", started[1])
    assert re.fullmatch(r"opusenc --quiet --vbr - \S+/\.flac2all-tmp-[0-9a-f]+\S*\.opus", started[2])
    assert decodes(out / "mp3" / "a.mp3") and decodes(out / "opus" / "a.opus")


@pytest.mark.slow
def test_worker_follows_the_masters_timings_and_survives_bad_ones():
    """A fake master sends welcomes with impossible timings (dropped: the
    worker lives on), then one with a 0.1 s heartbeat and a 1.5 s dead-after
    time, then falls silent: the worker beats at its pace and gives up on it
    after 1.5 s, not after the default 4 s."""
    master = FakeMaster()
    worker = start_worker(master.port, 1, "--retry-seconds", "30", allow=("/in", "/out"))
    try:
        identity, _ = master.expect("hello")
        good = protocol.decode(protocol.welcome_to_wire(jobs.settings_to_wire(SETTINGS), Timings(0.1, 1.5)))
        bad = [
            {"heartbeat": 10**400},
            {"dead_after": float("nan")},
            {"heartbeat": float("inf")},
            {"heartbeat": "0.1"},
            {"heartbeat": 0.01},
            {"dead_after": 0.1},
            {"settings": {**good["settings"], "timeout": 10**400}},  # math.isfinite() of it raised OverflowError
            {"settings": {**good["settings"], "options": {"opus": ["--save-range", "x"]}}},
            {"checks": {"sources": [["/in/a.flac", 10**400]], "probe": ""}},
        ]
        for timings in bad:
            master.send(identity, json.dumps({**good, **timings}).encode())
        master.send(identity, json.dumps(good).encode())
        welcomed = time.monotonic()
        assert master.expect("ready")[1]["credit"] == 1
        beats = 0
        while time.monotonic() - welcomed < 1.2:  # silent from here on
            got = master.recv(0.1)
            beats += got is not None and got[1]["type"] == "heartbeat"
        worker.wait_for(r"silent for 1\.5 s; encoder stopped, reconnecting", timeout=5)
        gave_up = time.monotonic() - welcomed
        # It starts over with a new session (the default timings until a
        # welcome), and leaves when told the run is over.
        again, _ = master.expect("hello")
        assert again != identity
        master.send(again, protocol.shutdown_to_wire())
        assert worker.wait(10) == 0
    finally:
        master.close()
        worker.kill()
    assert worker.output.count("dropped a message: ") == len(bad)
    assert "heartbeat: not a number of seconds in 0.05..60" in worker.output
    assert beats >= 8  # about 11 at 0.1 s; 1 at the default 1 s
    assert 1.4 < gave_up < 3.5  # after 1.5 s, not 4


def test_health_says_what_the_worker_runs_on_and_its_encoders_versions():
    run = ("mp3",)
    frame = protocol.health_to_wire("", ["mp3"], system="FreeBSD 14.1", versions={"lame": "3.100", "flac": "1.4.2"})
    health = protocol.health_from_wire(protocol.decode(frame), run)
    assert health.system == "FreeBSD 14.1" and health.versions == (("lame", "3.100"), ("flac", "1.4.2"))
    assert view.about(health) == "FreeBSD 14.1; lame 3.100, flac 1.4.2"
    # A peer's text reaches no terminal as it came; fields are bounded.
    odd = protocol.decode(protocol.health_to_wire("", ["mp3"], system="Linux\x1b[2J", versions={"lame": "1\n2"}))
    assert protocol.health_from_wire(odd, run).system == "Linux\\x1b[2J"
    assert protocol.health_from_wire(odd, run).versions == (("lame", "1\\n2"),)
    for bad in ({"system": "x" * 101}, {"system": 1}, {"versions": {"Lame!": "1"}}, {"versions": {"lame": 1}}):
        body = {**protocol.decode(frame), **bad}
        with pytest.raises(ProtocolError):
            protocol.decode(json.dumps(body).encode())


def test_new_fields_are_bounded():
    """Protocol 3's fields: health, checks, a result's cause; ids, sizes,
    messages and timeouts within their bounds."""
    run = ("mp3", "opus")
    health = protocol.decode(protocol.health_to_wire("", ["opus"]))
    assert protocol.health_from_wire(health, run) == protocol.Health("", ("opus",))
    for bad in ({"modes": ["flac"]}, {"modes": ["opus"] * 3}, {"problem": "x" * 1001}, {"problem": 1}, {"x": 1}):
        with pytest.raises(ProtocolError):
            protocol.health_from_wire({**health, **bad}, run)
    wire = jobs.settings_to_wire(SETTINGS)
    good = protocol.decode(protocol.welcome_to_wire(wire, Timings(), protocol.Checks(((Path("/in/a.flac"), 5),))))
    assert protocol.welcome_from_wire(good).checks.sources == ((Path("/in/a.flac"), 5),)
    for checks in (
        {"sources": [["/in/a.flac", 10**400]], "probe": ""},
        {"sources": [["/in/a.flac", -1]], "probe": ""},
        {"sources": [["/etc/passwd", 1]], "probe": ""},  # outside the run's input
        {"sources": [["/in/a.flac", 1]] * 9, "probe": ""},
        {"sources": [], "probe": "/elsewhere/.flac2all-probe-1"},
        {"sources": [], "probe": "/out/sub/probe"},
        {"sources": []},
    ):
        with pytest.raises(ProtocolError):
            protocol.welcome_from_wire({**good, "checks": checks})
    for settings in ({"timeout": 10**400}, {"timeout": 0}, {"timeout": True}, {"modes": []}, {"modes": ["a"] * 65}):
        with pytest.raises(ProtocolError):
            jobs.settings_from_wire({**wire, **settings})
    # An f: mode this node cannot resolve is kept (its health says it cannot run it).
    assert jobs.settings_from_wire({**wire, "modes": ["f:nosuchenc"]}).modes == ("f:nosuchenc",)
    result = {"v": V, "type": "result", "id": 1, "attempt": 0, "status": "failed", "message": "m"}
    result |= {"returncode": 1, "elapsed": 0.1, "facts": None, "cause": "source-missing"}
    assert protocol.result_from_wire(read(result)).cause == "source-missing"
    for bad in ({"cause": "mine"}, {"id": 2**53 + 1}, {"attempt": -1}, {"message": "x" * 2001}, {"facts": "ab"}):
        with pytest.raises(ProtocolError):
            protocol.result_from_wire(read({**result, **bad}))
    for bad in ({"size": 10**400}, {"id": 2**53 + 1}, {"attempt": 10**400}):
        with pytest.raises(ProtocolError):
            jobs.job_from_wire(read(job(bad)))


def copies(n: int = 3, **task_change) -> dict:
    """A copies message (protocol 4): ``n`` small copies from /in to /out."""
    tasks = [
        {"id": i, "attempt": 0, "mode": "mp3", "source": f"/in/d/{i}.txt", "size": 4, "output": f"/out/mp3/d/{i}.txt"}
        | {"settings_hash": ""}
        for i in range(n)
    ]
    tasks[-1].update(task_change)
    return {"v": V, "type": "copies", "tasks": tasks}


COPY_SETTINGS = Settings(Path("/in"), Path("/out"), ("mp3",), copy=True)


def test_a_batch_of_copies_reads_back_as_it_was_built():
    sent = [(i, 1, Task(Path(f"/in/{i}.log"), "mp3", Path(f"/out/mp3/{i}.log"), Action.COPY, i)) for i in range(5)]
    frame = jobs.job_to_wire(sent)
    assert protocol.decode(frame)["type"] == "copies"
    assert jobs.job_from_wire(protocol.decode(frame), COPY_SETTINGS) == sent
    # one copy alone is an ordinary job; encodes of one source too
    assert protocol.decode(jobs.job_to_wire(sent[:1]))["type"] == "job"
    refusals = protocol.refusals_to_wire(copies(4), "node-1", "busy")
    assert [protocol.result_from_wire(protocol.decode(f)).task_id for f in refusals] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "change",
    [
        {"source": "/etc/passwd", "output": "/out/mp3/d/passwd"},  # outside the run's input
        {"output": "/elsewhere/2.txt", "source": "/in/d/2.txt"},  # outside the run's output
        {"output": "/out/mp3/d/other.txt"},  # a copy keeps its name
        {"output": "/out/mp3/d/0.txt", "source": "/in/d/0.txt"},  # an output twice
        {"id": 0},  # a task id twice
        {"source": "/in/d/../../etc/2.txt"},
        {"source": "in/d/2.txt"},
        {"size": 10**400},
        {"size": -1},
        {"size": True},
        {"mode": "rm -rf /"},
        {"settings_hash": "x" * 100},
        {"extra": 1},
    ],
)
def test_hostile_batches_of_copies_are_refused(change):
    assert jobs.job_from_wire(read(copies()), COPY_SETTINGS)
    with pytest.raises(ProtocolError):
        jobs.job_from_wire(read(copies(**change)), COPY_SETTINGS)


def test_batches_of_copies_are_bounded():
    for msg in (
        copies(jobs.MAX_JOB + 1),
        {"v": V, "type": "copies", "tasks": []},
        {"v": V, "type": "copies", "tasks": "all"},
        {"v": V, "type": "copies", "tasks": [1]},
        {**copies(), "source": "/in/d/0.txt"},  # a job's field
        {k: v for k, v in copies().items() if k != "tasks"},
    ):
        with pytest.raises(ProtocolError):
            jobs.job_from_wire(read(msg), COPY_SETTINGS)
    for field in ("source", "size", "output", "id"):
        msg = copies()
        del msg["tasks"][1][field]
        with pytest.raises(ProtocolError):
            jobs.job_from_wire(read(msg), COPY_SETTINGS)


def test_undecodable_paths_travel_and_lone_surrogates_do_not():
    source = Path(os.fsdecode(b"/music/caf\xe9 100%.flac"))
    task = Task(source, "mp3", Path("/out/mp3/cafe 100%.mp3"), Action.ENCODE, 10, settings_hash="ab")
    frame = jobs.job_to_wire([(1, 0, task)])
    assert b"caf%E9 100%25.flac" in frame
    assert jobs.job_from_wire(protocol.decode(frame)) == [(1, 0, task)]
    for bad in (b'"/music/\\ud800.flac"', b'"/music/%zz.flac"'):
        frame = frame.replace(b'"/music/caf%E9 100%25.flac"', bad)
        with pytest.raises(ProtocolError):
            jobs.job_from_wire(protocol.decode(frame))


@pytest.mark.parametrize("frame", [b"[" * 2000, b'{"v":5,"type":"hello","host":' + b"[" * 2000, b"[1,2]"])
def test_deep_or_misshapen_frames_are_refused_at_once(frame):
    with pytest.raises(ProtocolError):
        protocol.decode(frame)


def test_control_characters_in_paths_travel_escaped_and_no_other_way():
    source = Path("/music/a\nb\r\x1b[31m\x7f\tc%.flac")
    task = Task(source, "mp3", Path("/out/mp3/a\nb.mp3"), Action.ENCODE, 10, settings_hash="ab")
    frame = jobs.job_to_wire([(1, 0, task)])
    assert b"a%0Ab%0D%1B[31m%7F\\tc%25.flac" in frame and b"\\n" not in frame
    assert jobs.job_from_wire(protocol.decode(frame)) == [(1, 0, task)]
    # Only what path_to_wire writes: no NUL, no escaped tab or letter, no
    # raw control character (the hostile tasks above), lower case refused.
    for bad in (b"%00", b"%09", b"%41", b"%0a"):
        with pytest.raises(ProtocolError):
            jobs.job_from_wire(protocol.decode(frame.replace(b"%0A", bad, 1)))


@pytest.mark.slow
def test_a_file_named_with_control_characters_converts_on_a_worker(tmp_path):
    """A valid file name with a newline and an ESC converts on a worker as
    in a local run: its output decodes, its CSV row reads back, and no
    console shows the raw characters."""
    lib = tmp_path / "music"
    name = "a\nb\x1b[31mred"
    make_flac(lib / f"{name}.flac")
    out = tmp_path / "out"
    master, port = start_master("mp3", out, lib)
    try:
        worker = start_worker(port, 1)
        assert master.wait(60) == 0, master.output
        assert worker.wait(30) == 0
    finally:
        master.kill()
    assert decodes(out / "mp3" / f"{name}.mp3")
    [row] = read_log(out)
    assert (row["infile"], row["conversion_status"]) == (str(lib / f"{name}.flac"), "SUCCESS")
    assert "\x1b" not in master.output + worker.output
    assert worker.count(r"^encoded .*a\\x0ab\\x1b\[31mred\.flac") == 1
