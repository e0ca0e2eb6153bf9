"""CurveZMQ keys for an authenticated, encrypted cluster.

``flac2all --cluster-keygen DIR`` writes:
  DIR/master.key, DIR/master.key_secret   the master's keypair
  DIR/worker.key, DIR/worker.key_secret   the workers' keypair
  DIR/authorized/worker.key               public keys the master accepts
Workers need master.key and worker.key_secret; the master needs
master.key_secret and authorized/. Keys are files: Z85 text holds shell
metacharacters, so it never goes on a command line.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from flac2all.errors import UsageError

ZAP_DOMAIN = "flac2all"


def default_dir() -> Path:
    """The user's config folder (shared by NFS homes across nodes)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "flac2all" / "cluster"


def keygen(folder: Path) -> list[Path]:
    import zmq.auth

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for name in ("master", "worker"):
        for suffix in (".key", ".key_secret"):
            (folder / f"{name}{suffix}").unlink(missing_ok=True)
        public, secret = zmq.auth.create_certificates(str(folder), name)
        os.chmod(secret, 0o600)
        written += [Path(public), Path(secret)]
    authorized = folder / "authorized"
    authorized.mkdir(exist_ok=True)
    shutil.copy(folder / "worker.key", authorized / "worker.key")
    written.append(authorized / "worker.key")
    return written


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

    try:
        return zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the key {path}: {exc}") from None


def find(folder: Path | None) -> Path | None:
    """The key folder to use: the one given, else the default one if it
    exists; None means an unauthenticated cluster."""
    if folder is not None:
        if not folder.is_dir():
            raise UsageError(f"key folder {folder} does not exist (make one with flac2all --cluster-keygen DIR)")
        return folder
    default = default_dir()
    return default if default.is_dir() else None


def master_keys(folder: Path) -> MasterKeys:
    public, secret = load(folder / "master.key_secret")
    authorized = folder / "authorized"
    if secret is None or not authorized.is_dir():
        raise UsageError(f"{folder} lacks master.key_secret or authorized/")
    return MasterKeys(public, secret, authorized)


def worker_keys(folder: Path) -> WorkerKeys:
    public, secret = load(folder / "worker.key_secret")
    master_public, _ = load(folder / "master.key")
    if secret is None:
        raise UsageError(f"{folder}/worker.key_secret holds no secret key")
    return WorkerKeys(public, secret, master_public)
