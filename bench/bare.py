"""A bare parallel pipeline, to calibrate ``bench short``'s floor: each
source decoded once and copied to every mode's encoder by ``tee``, one
shell a source, as many at once as flac2all has slots, started by
``xargs -P``. It checks nothing, tags nothing and stages nothing: the least
an orchestrator of processes adds to the decoders' and encoders' work
without a line of Python on the way.

``python -m bench.bare MODES -o OUT SRC``: the other arguments (encoder
options) are ignored; each mode runs its codec's default options, as the
floor's pipelines do (``bench.encoder_cpu``), which are the original's.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from flac2all import codecs, tags
from flac2all.audio.decoding import Decoder
from flac2all.model import default_threads

SOURCE, OUTPUT = "@source@", "@output@"


def script(modes: list[str], sample: Path) -> str:
    """The bash script run for each source ($1: its path; $2: its output's
    path without the extension, below the mode's folder OUT/MODE; $3: a
    FIFO of its own). Two modes: the first encoder, a job of the script's
    own, reads the FIFO, into which ``tee`` copies the decoder's output for
    it, so that the script waits for it and its CPU counts in the run's (a
    process substitution would be tee's child, waited for by nobody)."""
    if len(modes) != 2:
        raise SystemExit(f"bench.bare runs two modes, not {len(modes)}")
    info = tags.read_source(sample).info
    decode = shlex.join(Decoder(Path(SOURCE)).command()).replace(SOURCE, '"$1"')
    encoders = []
    for mode in modes:
        codec = codecs.resolve(mode)
        stages = codec.commands(sample, Path(OUTPUT), info, codec.default_options)
        if len(stages) != 2:
            raise SystemExit(f"{mode}: a pipeline of {len(stages)} stages; bench.bare knows decode | encode only")
        encoders.append(shlex.join(stages[1]).replace(OUTPUT, f'"$OUT/{mode}/$2{codec.extension}"'))
    # Its status: the pipeline's (any of its programs failing), else the first encoder's.
    return (
        f'{encoders[0]} < "$3" &\nset -o pipefail\n{decode} | tee "$3" | {encoders[1]}\n'
        "piped=$?\nwait $!\nfirst=$?\nexit $((piped ? piped : first))\n"
    )


def main(argv: list[str]) -> int:
    modes = argv[0].split(",")
    out = Path(argv[argv.index("-o") + 1]).absolute()
    src = Path(argv[-1]).absolute()
    sources = sorted(src.rglob("*.flac"))
    for mode in modes:
        for folder in {p.parent.relative_to(src) for p in sources}:
            (out / mode / folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        each = Path(tmp) / "each.sh"
        each.write_text(script(modes, sources[0]))
        listing = Path(tmp) / "sources"
        fifos = [Path(tmp) / f"fifo{i}" for i in range(len(sources))]
        for fifo in fifos:
            os.mkfifo(fifo)
        # Three arguments per source, each ended by a NUL (a name may hold a
        # newline): its path, its output's path below OUT/MODE without the
        # extension, its FIFO.
        listing.write_bytes(
            b"".join(
                os.fsencode(f"{p}\0{p.relative_to(src).with_suffix('')}\0{fifo}\0")
                for p, fifo in zip(sources, fifos, strict=True)
            )
        )
        env = dict(os.environ, OUT=str(out))
        slots = str(default_threads())
        argv = ["xargs", "-0", "-n", "3", "-P", slots, "-a", str(listing), "bash", str(each)]
        return subprocess.run(argv, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
