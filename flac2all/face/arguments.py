"""The ``flac2all`` command's arguments: every option declared once (for
argparse, profiles and suggestions), the help text, and --version."""

from __future__ import annotations

import argparse
from pathlib import Path

from flac2all import __version__, codecs, tools
from flac2all.codecs.options import options_help
from flac2all.errors import ExitStatus
from flac2all.executors.jobqueue import JOBQUEUES
from flac2all.face import config, values
from flac2all.face.usage import Parser
from flac2all.face.values import positive_float, positive_int, thread_count
from flac2all.model import AlbumBy, OpusGain, ReplayGain, default_threads

DESCRIPTION = """\
Convert every FLAC file under INPUTDIR into one or more formats, on all CPU
cores. Outputs go to OUTDIR/<mode>/<path relative to INPUTDIR>; tags and
cover art are carried over; existing outputs are skipped unless -f.
"""

EPILOG = """\
modes (comma-separated, for example mp3,opus):
{modes}

encoder options:
{options}

results:
  A summary is printed at the end and every task is logged, one CSV row each,
  to OUTDIR/conversion_results.log (status SUCCESS..., or ERROR: <cause>).

exit status:
  0 all tasks succeeded or were skipped; 1 some task failed; 2 usage or
  configuration error (including a missing encoder program); 130/143
  interrupted by SIGINT/SIGTERM.
"""


def build_parser() -> Parser:
    """The parser of ``flac2all``, its options declared once (``Parser.option``
    records each in the table profiles read)."""
    threads = default_threads()
    p = Parser(
        prog="flac2all",
        usage="flac2all MODE[,MODE...] [options] INPUTDIR\n"
        "       flac2all --profile NAME [--profile NAME...] [options]",
        description=DESCRIPTION,
        epilog=EPILOG.format(modes=codecs.all_modes_help(), options=options_help(codecs.OPTION_FAMILIES.values()))
        + "\n"
        + config.PROFILE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Profiles name MODE and INPUTDIR; --cluster-keygen takes neither.
        optional_with=("profile", "all_profiles", "cluster_keygen"),
    )
    p.option("mode", nargs="?", metavar="MODE[,MODE...]", help="output format(s), see the list below")
    p.option("inputdir", nargs="?", metavar="INPUTDIR", help="folder holding the FLAC files (searched recursively)")
    p.option("-o", "--outdir", metavar="DIR", default="./", help="output folder (default: ./)")
    p.option("-f", "--force", action="store_true", help="re-encode outputs that already exist")
    p.option(
        "-t",
        "--threads",
        type=thread_count,
        default=threads,
        metavar="N",
        help=f"files converted at once, each decoded once and fed to one encoder per mode "
        f"(default: the CPU count and one or two more, to keep the cores busy between files, here {threads})",
    )
    p.option(
        "-n",
        "--nodirs",
        choices=["d", "m"],
        help="'d': put all outputs directly in OUTDIR; 'm': keep the folder structure but no per-mode folders",
    )
    p.option(
        "-c",
        "--copy",
        action="store_true",
        help="copy the non-FLAC files (cover.jpg, ...) into every mode's tree; unchanged copies are skipped",
    )
    for family in codecs.OPTION_FAMILIES.values():
        # argparse %-formats help texts.
        p.option(family.flag, default=family.default, metavar="OPTS", help=family.flag_help.replace("%", "%%"))
    p.option(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="fail a task that runs longer than this (default: 2 minutes plus 4x the audio's duration)",
    )
    p.option(
        "--id3v2.3",
        dest="id3v23",
        action="store_true",
        help="write ID3v2.3 tags to mp3 (multiple values joined with '/') instead of ID3v2.4",
    )
    p.option(
        "--embed-folder-art",
        action="store_true",
        help="embed cover.jpg/folder.jpg/front.jpg (or .png) as front cover when a source has none",
    )
    p.option(
        "--replaygain",
        choices=[policy.value for policy in ReplayGain],
        default=ReplayGain.KEEP.value,
        help="the outputs' gain tags: 'keep' the source's (default); 'fill' in those a source lacks, or "
        "'compute' all of them, measured (EBU R128, ReplayGain 2.0; R128 gains in Opus) from the decode the "
        "conversion makes anyway (by the C loop built at install, else by numpy and scipy: "
        "flac2all[loudness]); 'off': none",
    )
    p.option(
        "--opus-gain",
        choices=[mode.value for mode in OpusGain],
        default=OpusGain.R128.value,
        help="Opus outputs' gains: 'r128' tags (default, RFC 7845); 'header': the album's (else the track's) in "
        "the Opus header's output gain, which every player applies, and the R128 tags relative to it; 'both': "
        "R128 and REPLAYGAIN_* tags",
    )
    p.option(
        "--album-by",
        choices=[album.value for album in AlbumBy],
        default=AlbumBy.FOLDER.value,
        help="what an album is, for the album gain --replaygain fill or compute measures: the FLACs of one source "
        "'folder' (default), or those sharing their ALBUMARTIST (else ARTIST), ALBUM and DISCNUMBER 'tags', "
        "in whatever folders (a source without ALBUM, or a compilation's without album artist: its folder's)",
    )
    p.option(
        "--delete",
        action="store_true",
        help="delete outputs whose source is gone (only files flac2all wrote, as its state records)",
    )
    p.option(
        "--delete-anyway",
        action="store_true",
        help="--delete, even when that removes half the outputs or more, or more than 50 of them and more"
        " than 10%% (refused otherwise: an unmounted source looks like a deleted library); implies --delete",
    )
    p.option(
        "--allow-empty",
        action="store_true",
        help="run even if INPUTDIR holds no FLAC file (refused otherwise: it may be an unmounted disk)",
    )
    p.option(
        "--allow-missing-sources",
        action="store_true",
        help="run even if most sources of the mirror are missing or INPUTDIR is on another file system "
        "than last time (refused otherwise: the source looks unmounted)",
    )
    p.option(
        "--decode-per-mode",
        action="store_true",
        help="decode a file separately for each mode instead of once for all (slower; to compare, or to bound"
        " encoders to -t)",
    )
    add_selection_options(p)
    p.option("--dry-run", action="store_true", help="print what would be done, per action, and change nothing")
    p.option(
        "--plan-json",
        metavar="FILE",
        help="write the plan (every task and its action) to FILE as JSON; '-': to standard output, "
        "and what the run prints there goes to standard error",
    )
    cluster = p.group("cluster mode (workers: flac2all_worker MASTER_HOST)")
    cluster.option(
        "-m",
        "--master",
        action="store_true",
        help="hand the tasks to flac2all_worker processes on other hosts instead of encoding here",
    )
    cluster.option("--port", type=int, default=2019, help="port the master listens on (default 2019)")
    cluster.option(
        "--bind", default="*", metavar="ADDRESS", help="address the master listens on (default: all interfaces)"
    )
    cluster.option(
        "--keys",
        type=Path,
        metavar="DIR",
        help="the cluster's key folder (default: ~/.config/flac2all/cluster); the first -m run makes the "
        "master's keys there if it has none",
    )
    cluster.option(
        "--insecure",
        action="store_true",
        help="run the cluster without keys: unauthenticated and unencrypted (workers then need --insecure --allow)",
    )
    cluster.option(
        "--wait-workers",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="give up (exit 2) when no worker that can run the work has come for this long (default 300)",
    )
    cluster.option(
        "--max-slots",
        type=positive_int,
        default=256,
        metavar="N",
        help="the most jobs one worker connection may hold at once, whatever it declares (default 256; "
        "a flac2all_worker process declares 1)",
    )
    cluster.option(
        "--cluster-keygen",
        nargs="?",
        const="",
        metavar="DIR",
        help="make the cluster's keys in DIR (default ~/.config/flac2all/cluster) and exit: the master's, or with "
        "--worker NAME a worker's keypair in DIR/workers/NAME, authorized on the master; never replaces keys "
        "unless --force (give no MODE or INPUTDIR)",
    )
    cluster.option(
        "--worker",
        metavar="NAME",
        help="with --cluster-keygen: make worker NAME's keypair and authorize it on the master",
    )
    dask = p.group(
        "Dask cluster (workers: dask worker ADDRESS, on nodes with flac2all, the encoders and the same paths;"
        " needs pip install 'flac2all[dask]')"
    )
    dask.option(
        "--dask",
        metavar="ADDRESS",
        help="run the jobs on the Dask cluster whose scheduler is at ADDRESS (for example tcp://head:8786)",
    )
    dask.option(
        "--dask-scheduler-file",
        metavar="FILE",
        help="the same, with the scheduler named by the file of dask scheduler --scheduler-file FILE",
    )
    dask.option(
        "--dask-jobqueue",
        choices=JOBQUEUES,
        help="run Dask workers as jobs of this batch system (dask-jobqueue), as many as there is work for; the queue,"
        " account, walltime and the like come from Dask's jobqueue config",
    )
    dask.option(
        "--dask-jobs", type=positive_int, default=4, metavar="N", help="--dask-jobqueue: at most N jobs (default 4)"
    )
    dask.option(
        "--dask-cores", type=positive_int, metavar="C", help="--dask-jobqueue: C cores (worker threads) per job"
    )
    dask.option("--dask-memory", metavar="SIZE", help="--dask-jobqueue: memory per job, for example 2GB")
    p.option(
        "-C",
        "--curses",
        action="store_true",
        help="full-screen live dashboard (progress, ETA, failures, per-host workers)",
    )
    p.option("-v", "--verbose", action="store_true", help="log every failing command line and its full output")
    p.option(
        "-q",
        "--quiet",
        action="store_true",
        help="for cron: print nothing when nothing changed and nothing failed, else one line per run (named after its"
        " profile) and the failures on stderr; the log is complete",
    )
    p.option(
        "--stop-on-hangup",
        action="store_true",
        help="stop when the terminal closes (SIGHUP) as on SIGTERM; by default the run goes on without its display"
        " and writes its log",
    )
    watching = p.group("watch mode (needs pip install 'flac2all[watch]')")
    watching.option(
        "--watch",
        action="store_true",
        help="after the run, follow INPUTDIR: a folder that changed is converted once the library has been quiet for"
        " --settle seconds (retags, moves and --delete as in a re-run); one process follows every profile run with"
        " it; stop it with SIGTERM or Ctrl-C",
    )
    watching.option(
        "--settle",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="--watch: how long the library stays unchanged before its changes are converted, so that an album"
        " being copied is converted once, whole (default 30)",
    )
    watching.option(
        "--rescan-every",
        type=positive_float,
        default=3600.0,
        metavar="SECONDS",
        help="--watch: look through the whole library this often for what its events miss (other NFS clients, a"
        " kernel watch limit reached) (default 3600)",
    )
    config.add_profile_options(p)
    p.register("action", "version", ShowVersions)
    p.option("--version", action="version", help="print flac2all's version and the encoders it finds on PATH, and exit")
    return p


def add_selection_options(p: Parser) -> None:
    """What part of INPUTDIR a run converts, and where its outputs go by
    their tags (docs/selection.md; each option is also a profile key)."""
    g = p.group("selection and layout (see docs/selection.md; each option is also a profile key)")
    g.option(
        "--include",
        action="append",
        type=values.glob,
        metavar="GLOB",
        help="convert only the files and folders below INPUTDIR that match GLOB ('Jazz/**', '*.flac'; "
        "repeat for several): '*' within a name, '**' any folders, no '/' any depth",
    )
    g.option(
        "--exclude",
        action="append",
        type=values.glob,
        metavar="GLOB",
        help="leave out the files and folders below INPUTDIR that match GLOB ('Audiobooks', 'Live/**'; repeat)",
    )
    g.option(
        "--query",
        action="append",
        type=values.query,
        metavar="EXPR",
        help="convert only the FLAC files whose tags pass EXPR (repeat: all must): genre=Jazz, genre~jazz, "
        "year>=1990, rating>=4, artist!=X, a leading '-' negates (--query=-albumtype=audiobook)",
    )
    g.option(
        "--path-format",
        type=values.path_format,
        metavar="TEMPLATE",
        help="put each FLAC's outputs at TEMPLATE below the mode's folder, from its tags, as "
        "'{albumartist|artist|Unknown Artist}/{year} - {album}/{disc:02?}{track:02} {title}' "
        "(default: the source tree)",
    )
    g.option(
        "--cue",
        choices=["split", "ignore"],
        help="a FLAC with a CUE sheet (a .cue named after it, or its own CUESHEET): 'split' it into one output "
        "per track (default), or 'ignore' the sheet and convert it whole (docs/cue.md)",
    )
    g.option(
        "--cue-encoding",
        type=values.encoding,
        metavar="ENCODING",
        help="read .cue files that are not UTF-8 in ENCODING (cp1251, shift_jis...); without it they are refused",
    )


class ShowVersions(argparse.Action):
    """``--version``: flac2all's version, then one line per encoder (its
    version, or "not found"), from the cached probes of ``tools``."""

    def __init__(self, option_strings: list[str], dest: str, default: object = None, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print("\n".join([f"flac2all {__version__}", *tools.found()]), flush=True)
        parser.exit(ExitStatus.OK)
