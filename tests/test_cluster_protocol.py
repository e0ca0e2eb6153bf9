"""Hostile and malformed messages: refused before use, nothing started, and
neither the master nor a worker crashes."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import zmq

from flac2all.cluster import protocol
from flac2all.cluster.protocol import ProtocolError
from flac2all.model import Action, Settings, Task
from tests.cluster_helpers import start_master, start_worker
from tests.conftest import decodes, make_flac, read_log

pytestmark = pytest.mark.timeout(120)

GOOD_TASK = {
    "v": 1,
    "type": "task",
    "id": 1,
    "attempt": 0,
    "source": "/music/a.flac",
    "mode": "mp3",
    "output": "/out/mp3/a.mp3",
    "action": "encode",
    "size": 10,
    "settings_hash": "ab12",
}

HOSTILE_TASKS = [
    {"id": "1"},  # wrong type
    {"id": True},  # a bool is not a number
    {"extra": 1},  # unknown field
    {"source": "../../etc/passwd"},
    {"source": "/music/../../etc/passwd.flac"},
    {"source": "-i.flac"},  # relative, option-like
    {"output": "-y"},
    {"output": "/out/mp3/a\x00.mp3"},
    {"output": "/out/mp3/a\n.mp3"},
    {"mode": "f:nosuchcodec"},
    {"mode": "rm -rf /"},
    {"output": "/out/mp3/a.sh"},  # extension not the codec's
    {"output": "/music/a.flac", "mode": "flac"},  # the source itself (in the unit test)
    {"action": "delete"},  # not a worker's action
    {"action": "shell"},
    {"settings_hash": "x" * 100},
]
# Valid on their own, refused by a worker: outside the run's folders.
OUTSIDE_TASKS = [
    {"output": "/elsewhere/mp3/a.mp3"},
    {"source": "/etc/a.flac"},
]


def test_a_good_task_parses():
    task_id, attempt, task = protocol.task_from_wire(dict(GOOD_TASK))
    assert (task_id, attempt) == (1, 0)
    assert task == Task(Path("/music/a.flac"), "mp3", Path("/out/mp3/a.mp3"), Action.ENCODE, 10, settings_hash="ab12")


@pytest.mark.parametrize("change", HOSTILE_TASKS)
def test_hostile_tasks_are_refused(change):
    with pytest.raises(ProtocolError):
        protocol.task_from_wire({**GOOD_TASK, **change})


def test_missing_field_and_bad_frames_are_refused():
    msg = dict(GOOD_TASK)
    del msg["output"]
    with pytest.raises(ProtocolError):
        protocol.task_from_wire(msg)
    for frame in (b"\xff\xfe", b"[1,2]", b'{"v":2,"type":"task"}', b'{"v":1}', b"x" * (protocol.MAX_MESSAGE + 1)):
        with pytest.raises(ProtocolError):
            protocol.decode(frame)


@pytest.mark.parametrize(
    "words", [["-i", "x"], ["/etc/passwd"], ["file:/x"], ["a\nb"], ["--output", "x"], ["-y"], list("a" * 100), [1]]
)
def test_hostile_encoder_options_are_refused(words):
    with pytest.raises(ProtocolError):
        protocol.check_options("ffmpeg", words)


def test_settings_round_trip_and_refusals():
    settings = Settings(Path("/in"), Path("/out"), ("mp3", "opus"), options={"lame": ("--preset", "standard")})
    back = protocol.settings_from_wire(json.loads(json.dumps(protocol.settings_to_wire(settings))))
    assert (back.input_dir, back.outdir, back.modes, dict(back.options)) == (
        settings.input_dir,
        settings.outdir,
        settings.modes,
        dict(settings.options),
    )
    wire = protocol.settings_to_wire(settings)
    for bad in (
        {"options": {"shell": ["x"]}},
        {"modes": ["evil"]},
        {"timeout": -1},
        {"outdir": "out"},
        {"unknown": 1},
        {"id3v23": "yes"},
    ):
        with pytest.raises(ProtocolError):
            protocol.settings_from_wire({**wire, **bad})


def test_results_are_validated():
    good = {
        "v": 1,
        "type": "result",
        "id": 1,
        "attempt": 0,
        "status": "success",
        "message": "",
        "returncode": 0,
        "elapsed": 0.5,
        "facts": [1, 2, "ab", "cd", "ef"],
    }
    assert protocol.result_from_wire(dict(good)).facts.size == 1
    for bad in (
        {"status": "great"},
        {"facts": [1, 2, 3]},
        {"facts": [True, 2, "a", "b", "c"]},
        {"elapsed": "1"},
        {"returncode": None},
    ):
        with pytest.raises(ProtocolError):
            protocol.result_from_wire({**good, **bad})


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
            b'{"v":1}',
            b'{"v":9,"type":"hello"}',
            b'{"v":1,"type":"launch_missiles"}',
            json.dumps({"v": 1, "type": "hello", "session": "x", "host": "h", "pid": 1, "slots": 1}).encode(),
            json.dumps({"v": 1, "type": "hello", "session": "0" * 32, "host": "h\n", "pid": 1, "slots": 1}).encode(),
            json.dumps(
                {
                    "v": 1,
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
        for frame in frames:
            fuzz.send(frame)
        fuzz.send_multipart([b"two", b"frames"])
        time.sleep(0.5)
        worker = start_worker(port, 1)
        assert master.wait(60) == 0, master.output
        assert worker.wait(30) == 0
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
        settings = Settings(src.parent, tmp_path / "out", ("mp3",))
        router.send_multipart(
            [identity, protocol.encode("welcome", settings=protocol.settings_to_wire(settings), heartbeat=1.0)]
        )
        base = {**GOOD_TASK, "source": str(src), "output": str(tmp_path / "out" / "mp3" / "a.mp3")}
        for change in [*HOSTILE_TASKS, *OUTSIDE_TASKS]:
            body = {**base, **change}
            router.send_multipart([identity, json.dumps(body).encode()])
        router.send_multipart([identity, b"\x00garbage"])
        router.send_multipart(
            [identity, protocol.encode("task", **{k: v for k, v in base.items() if k not in ("v", "type")})]
        )
        result, refusals = None, []
        deadline = time.monotonic() + 30
        while result is None and time.monotonic() < deadline:
            if router.poll(200):
                _, frame = router.recv_multipart()
                msg = json.loads(frame)
                if msg["type"] == "result" and msg["status"] == "failed":
                    refusals.append(msg["message"])  # a refused task is answered, not left hanging
                elif msg["type"] == "result":
                    result = msg
            router.send_multipart([identity, protocol.encode("heartbeat")])
        assert result is not None and result["status"] == "success", worker.output
        router.send_multipart([identity, protocol.encode("shutdown")])
        assert worker.wait(20) == 0
    finally:
        ctx.destroy(0)
        worker.kill()
    assert worker.output.count("dropped a message") == len(HOSTILE_TASKS) + len(OUTSIDE_TASKS) + 1
    # Every refused task whose id could be read got a failed result naming why.
    assert len(refusals) == len(HOSTILE_TASKS) + len(OUTSIDE_TASKS) - 2  # not the two with a bad "id"
    assert all(m.startswith("refused by the worker on ") for m in refusals)
    assert not Path("/elsewhere").exists() and not Path("/music").exists()
    started = log.read_text().splitlines()
    # Only the good task ran: one decoder, one encoder into the output folder.
    assert len(started) == 2, started
    started.sort()  # the two stages of the pipe start together, in either order
    assert started[0] == f"flac --decode --stdout --silent -- {src}"
    assert started[1].startswith(f"lame --quiet --preset standard -q 0 - {tmp_path / 'out' / 'mp3'}/.flac2all-tmp-")
    assert decodes(tmp_path / "out" / "mp3" / "a.mp3")
