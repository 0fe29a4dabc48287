"""Writing a secret to disk: atomically, readable by this user only, and durable once written.

Every file that holds a key or a token (the signing key, the prober's token, a device's
state, a local cluster's description) is written here, and the directories that hold them
are made private first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Secrets: read and written by this user only; their directories too.
FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create the directory (and its parents) if needed, and make it this user's only (0700).

    mkdir's mode is masked by the umask and ignored for a directory that already exists,
    so the mode is set afterwards either way.
    """
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def write_secret(path: Path, data: bytes | str, *, replace: bool = True) -> None:
    """Write `data` to `path` as a whole or not at all, mode 0600.

    A temp file in the same directory (created 0600, so the secret is never readable by
    others, even for a moment) is written and fsynced, renamed over `path`, and the
    directory is fsynced so that the rename survives a crash. With `replace=False` an
    existing `path` is kept. A missing directory is created private; an existing one is
    left as it is (it may be the user's own: make tocsin's directories with `private_dir`).

    Raises:
        FileExistsError: `replace=False` and `path` exists (another process wrote it first).
    """
    body = data.encode() if isinstance(data, str) else data
    if not path.parent.is_dir():
        private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), FILE_MODE)
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the file exists: theirs wins
            os.unlink(tmp)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in the directory durable (POSIX: the entry needs its own fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
