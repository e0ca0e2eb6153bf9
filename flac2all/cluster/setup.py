"""What the ``flac2all`` command needs of the cluster: the master of ``-m``
(keys by default, made on first use) and ``--cluster-keygen``."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from flac2all.cluster import keys, protocol
from flac2all.cluster.master import Master
from flac2all.errors import UsageError
from flac2all.model import MasterOptions, Settings


def keygen(folder_text: str, worker: str | None, force: bool) -> list[str]:
    """Make the master's keys, or a worker's; the lines to print. Raises
    UsageError (keys already there) or OSError."""
    folder = Path(folder_text) if folder_text else keys.default_dir()
    if worker:
        written = keys.keygen_worker(folder, worker, force)
    else:
        written = keys.keygen_master(folder, force)
    lines = [f"wrote {path}" for path in written]
    if worker:
        home = folder / "workers" / worker
        lines += [
            f"Worker {worker} is authorized. Put {home}'s three files into ~/.config/flac2all/cluster on that host",
            f"(for example: ssh {worker} mkdir -p .config/flac2all/cluster && scp {home}/* "
            f"{worker}:.config/flac2all/cluster/), then run there: flac2all_worker {socket.gethostname()}",
        ]
    else:
        lines.append(f"Authorize each worker with: flac2all --cluster-keygen {folder} --worker NAME")
    return lines


def master_from(
    options: MasterOptions, settings: Settings, say: Callable[[str], None], warn: Callable[[str], None] | None = None
) -> Master:
    """The cluster master of ``-m`` as ``options`` (the request's) say: keys
    by default (made on first use), none with --insecure. ``say``: how the
    run goes; ``warn``: what went wrong (``say`` if not given)."""
    protocol.check_usage_options(dict(settings.options))
    if not 0 <= options.port < 65536:
        raise UsageError(f"--port {options.port}: not a port number")
    here = options.bind if options.bind not in ("*", "0.0.0.0", "::") else socket.gethostname()
    start = f"Start a worker on each worker host with: flac2all_worker {here} --port {{port}}"
    key_dir = None
    if options.insecure:
        start += (
            f" --insecure --allow {settings.input_dir} --allow {settings.outdir}"
            " (a host that mounts them elsewhere: --map MASTER_PATH=ITS_PATH and --allow its paths)"
        )
    else:
        key_dir = options.keys or keys.default_dir()
        if not keys.has_master_keys(key_dir):
            try:
                keys.keygen_master(key_dir)
            except OSError as exc:
                raise UsageError(f"cannot make the cluster's keys in {key_dir}: {exc.strerror}") from None
            say(f"Made the cluster's keys in {key_dir}: the master's keypair, and authorized/ for the workers' keys")
        start += keys_hint(key_dir, options.keys is not None)
    return Master(
        options.bind,
        options.port,
        key_dir,
        say=say,
        warn=warn,
        max_slots=options.max_slots,
        wait_workers=options.wait_workers,
        start_hint=start,
    )


def keys_hint(key_dir: Path, given: bool) -> str:
    """What the master's start hint says of keys, as the key folder is now:
    the workers already authorized, or how to authorize the first."""
    keygen = f"flac2all --cluster-keygen {key_dir} --worker NAME"
    here = "; on this host, as this user, flac2all_worker needs no copying"
    here += f" (with --keys {key_dir})" if given else ""
    authorized = sorted(path.stem for path in (key_dir / "authorized").glob("*.key"))
    if authorized:
        return f" (authorized: {', '.join(authorized)}; keys for another host: {keygen}{here})"
    return (
        f" (first give it keys: here, {keygen}, then put the files of {key_dir / 'workers' / 'NAME'} into "
        f"~/.config/flac2all/cluster on that host{here})"
    )
