"""Atomic file writes and privacy-preserving hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# the names atomic_path gives its temporary files: ".<target name>.<8 random chars>.tmp" (mkstemp)
_STALE_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    A crash leaves either the old file or nothing, never a half-written one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o644 & ~_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as pretty JSON to ``path`` atomically (NaN written as null)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


SECRET_ENV = "MEDBENCH_SECRET"
SECRET_FILE_ENV = "MEDBENCH_SECRET_FILE"
_SECRETS: dict[str, bytes] = {}
HASH_HEX = 32  # 128 bits: a keyed hash this long cannot be brute-forced even without the key


def secret_path() -> Path:
    """Where the per-project secret lives: ``$MEDBENCH_SECRET_FILE`` or ``~/.config/medbench/secret``."""
    env = os.environ.get(SECRET_FILE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "medbench" / "secret"


def project_secret() -> bytes:
    """The key of :func:`hash_id` and of UID remapping; never written into any output.

    ``$MEDBENCH_SECRET`` when set; else the secret file (:func:`secret_path`), created with 32
    random bytes (mode 0600) on first use. Keep the file to get the same hashes in later runs;
    share it only with those who may link the hashes back.
    """
    env = os.environ.get(SECRET_ENV)
    if env:
        return env.encode()
    path = secret_path()
    cached = _SECRETS.get(str(path))
    if cached is not None:
        return cached
    if not path.exists():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".secret.", dir=path.parent)  # mode 0600
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # never replaces a secret another process created meanwhile
            logger.info("created the medbench project secret %s (keep it: it keys patient hashes)", path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    data = path.read_text(encoding="ascii").strip()
    if not data:
        from medbench.errors import InputError

        raise InputError(f"the medbench secret file {path} is empty: delete it (a new one is created) or set "
                         f"${SECRET_ENV}")
    _SECRETS[str(path)] = data.encode()  # read once per process (hash_id runs per table row)
    return _SECRETS[str(path)]


def hash_id(value: object, *, salt: str = "medbench") -> str:
    """Keyed one-way hash of an identifier: HMAC-SHA256 with :func:`project_secret`, 32 hex digits.

    Patient names/IDs never reach reports; without the secret a hash cannot be tested against
    guessed IDs (a plain salted hash of a 7-digit MRN was recovered in seconds). ``salt`` separates
    uses (the same ID hashes differently under another salt).
    """
    import hmac

    if value is None or (isinstance(value, float) and value != value):
        return ""
    return hmac.new(project_secret(), f"{salt}:{value}".encode(), hashlib.sha256).hexdigest()[:HASH_HEX]


def remove_stale_temps(folder: str | os.PathLike[str]) -> int:
    """Delete the hidden ``.<name>.XXXXXXXX.tmp`` files a killed run left under ``folder``.

    Only names of the form :func:`atomic_path` creates are removed (recursively); a missing
    folder is fine. Called at the start of each command that writes into a folder.

    Returns:
        The number of files removed.
    """
    root = Path(folder)
    if not root.is_dir():
        return 0
    n = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if _STALE_TEMP.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
    if n:
        logger.info("removed %d temporary file(s) left by an interrupted run under %s", n, root)
    return n


def output_inside_input(input_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path | None:
    """The output folder when it lies inside the input folder (to leave out of the input scan).

    Policy: an output folder *inside* the input folder is excluded from the scan of the input, so
    a command never reads its own outputs. The output folder *being* the input folder is refused.

    Raises:
        InputError: ``out`` is the input folder itself.
    """
    from medbench.errors import InputError

    src, dst = Path(input_path).resolve(), Path(out).resolve()
    if not Path(input_path).is_dir():
        return None
    if dst == src:
        raise InputError(f"--out {out} is the input folder {input_path}: pass another output folder "
                         "(a sub-folder is fine; it is left out of the input scan)")
    return dst if src in dst.parents else None
