"""CurveZMQ keys for an authenticated, encrypted cluster (the default).

A cluster's key folder (``--keys DIR``, else ~/.config/flac2all/cluster)
holds, on the master:
  DIR/master.key, DIR/master.key_secret   the master's keypair (made by the
                                          first ``flac2all -m`` if missing)
  DIR/authorized/NAME.key                 the worker public keys it accepts
and, for each worker made by ``flac2all --cluster-keygen DIR --worker NAME``:
  DIR/workers/NAME/worker.key, worker.key_secret, master.key
which is all that worker needs: copy that folder to the worker host as its
~/.config/flac2all/cluster (or pass it with --keys). No worker ever holds
the master's secret key, and each worker has its own keypair. Keys are
files: Z85 text holds shell metacharacters, so it never goes on a command
line. Nothing here overwrites a key unless told to (``force``).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from flac2all.errors import UsageError

ZAP_DOMAIN = "flac2all"
WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def default_dir() -> Path:
    """The user's config folder."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "flac2all" / "cluster"


def has_master_keys(folder: Path) -> bool:
    return (folder / "master.key_secret").is_file()


def make_dirs(folder: Path) -> None:
    """``folder`` and its missing parents, each made 0700 (a key folder is
    nobody else's business, whatever the umask)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for level in reversed(missing):
        level.mkdir(mode=0o700, exist_ok=True)


def write_key(path: Path, public: bytes, secret: bytes | None = None) -> Path:
    """A key file in the certificate format zmq.auth reads. A secret key's
    file is created 0600 (0644 a public one's, less what the umask takes):
    never wider, not even for the moment between a create and a chmod; and
    never through a link or over a file already there."""
    kind = "**Secret**" if secret else "Public"
    lines = [f"#   ZeroMQ CURVE {kind} Certificate (flac2all)", "", "metadata", "curve"]
    lines.append(f'    public-key = "{public.decode("ascii")}"')
    if secret:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600 if secret else 0o644)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write("\n".join(lines) + "\n")
    return path


def make_pair(folder: Path, name: str) -> list[Path]:
    """A keypair NAME.key, NAME.key_secret in ``folder`` (made 0700 if
    missing); what was there under those names is replaced."""
    import zmq

    make_dirs(folder)
    public, secret = zmq.curve_keypair()
    written = []
    for suffix, key in ((".key", None), (".key_secret", secret)):
        path = folder / f"{name}{suffix}"
        path.unlink(missing_ok=True)
        written.append(write_key(path, public, key))
    return written


def copy_public(source: Path, target: Path) -> Path:
    """The public key of ``source`` written afresh as ``target``."""
    target.unlink(missing_ok=True)
    return write_key(target, load(source)[0])


def keygen_master(folder: Path, force: bool = False) -> list[Path]:
    """The master's keypair and an empty authorized/ folder. Refuses
    (UsageError) to replace existing keys unless ``force``: every worker
    pins the master's public key."""
    if has_master_keys(folder) and not force:
        raise UsageError(
            f"{folder} already holds the master's keys: replacing them cuts off every worker "
            "(pass --force to do it anyway)"
        )
    written = make_pair(folder, "master")
    make_dirs(folder / "authorized")
    return written


def keygen_worker(folder: Path, name: str, force: bool = False) -> list[Path]:
    """A keypair for worker NAME in DIR/workers/NAME (with the master's public
    key beside it), its public key authorized on the master. The master's
    keys are made first if there are none."""
    if not WORKER_NAME.fullmatch(name):
        raise UsageError(f"worker name {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    written = [] if has_master_keys(folder) else keygen_master(folder)
    home = folder / "workers" / name
    authorized = folder / "authorized" / f"{name}.key"
    if (home.exists() or authorized.exists()) and not force:
        raise UsageError(f"worker {name} already has keys in {home} (pass --force to replace them)")
    written += make_pair(home, "worker")
    copy_public(folder / "master.key", home / "master.key")
    make_dirs(folder / "authorized")
    copy_public(home / "worker.key", authorized)
    return [*written, home / "master.key", authorized]


@dataclass(frozen=True)
class MasterKeys:
    public: bytes
    secret: bytes
    authorized: Path


@dataclass(frozen=True)
class WorkerKeys:
    public: bytes
    secret: bytes
    master_public: bytes


def load(path: Path) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.exists():  # zmq says "Invalid certificate file" for a missing one
        raise UsageError(f"the key {path} is missing")
    try:
        return zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the key {path}: {exc}") from None


def find(folder: Path | None) -> Path | None:
    """The key folder to use: the one given, else the default one if it
    exists; None when there is none."""
    if folder is not None:
        if not folder.is_dir():
            raise UsageError(f"key folder {folder} does not exist (make one with flac2all --cluster-keygen DIR)")
        return folder
    default = default_dir()
    return default if default.is_dir() else None


def host_name() -> str:
    """This host's name as a worker's key name ("local" if it is not one)."""
    name = socket.gethostname()
    return name if WORKER_NAME.fullmatch(name) else "local"


def worker_sets(base: Path) -> list[Path]:
    """The worker key folders in ``base``/workers (those with a secret key)."""
    try:
        folders = sorted((base / "workers").iterdir())
    except OSError:
        return []
    return [folder for folder in folders if (folder / "worker.key_secret").is_file()]


def worker_dir(folder: Path | None) -> Path | None:
    """The folder holding this worker's keys: ``folder`` (or the default
    one) itself, or its workers/<this host's name> (a key folder shared
    with the master, an NFS home say), or the one worker key set in its
    workers/ (a trial on one machine: --cluster-keygen --worker node1)."""
    base = folder if folder is not None else default_dir()
    for candidate in (base, base / "workers" / socket.gethostname(), base / "workers" / host_name()):
        if (candidate / "worker.key_secret").is_file():
            return candidate
    sets = worker_sets(base)
    return sets[0] if len(sets) == 1 else None


def own_worker_keys(folder: Path) -> Path | None:
    """For a worker on the master's own host: its keypair made in the
    master's key folder ``folder`` and authorized there (a master that runs
    reads authorized/ again for a key it does not know). None when
    ``folder`` is not a master's this user may read (its master.key_secret)
    and authorize workers in (its authorized/)."""
    authorized = folder / "authorized"
    if not (os.access(folder / "master.key_secret", os.R_OK) and os.access(authorized, os.W_OK | os.X_OK)):
        return None
    home = folder / "workers" / host_name()
    if home.exists() or (authorized / f"{host_name()}.key").exists():
        raise UsageError(
            f"this host's worker keys in {home} are incomplete: remove that folder and "
            f"{authorized / host_name()}.key to have new ones made, or pass --keys DIR"
        )
    keygen_worker(folder, host_name())
    return home


def master_keys(folder: Path) -> MasterKeys:
    public, secret = load(folder / "master.key_secret")
    authorized = folder / "authorized"
    if secret is None or not authorized.is_dir():
        raise UsageError(f"{folder} lacks master.key_secret or authorized/")
    return MasterKeys(public, secret, authorized)


def worker_keys(folder: Path) -> WorkerKeys:
    for name in ("worker.key_secret", "master.key"):
        if not (folder / name).exists():
            raise UsageError(
                f"the key {folder / name} is missing: copy it from the master's "
                "~/.config/flac2all/cluster/workers/NAME/ folder "
                "(made there by flac2all --cluster-keygen --worker NAME)"
            )
    public, secret = load(folder / "worker.key_secret")
    master_public, _ = load(folder / "master.key")
    if secret is None:
        raise UsageError(f"{folder}/worker.key_secret holds no secret key")
    return WorkerKeys(public, secret, master_public)
