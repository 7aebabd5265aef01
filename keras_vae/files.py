"""Atomic file writes: content goes to a temporary name (`.tmp-*`) in the same folder and
is renamed over the target, so a crash (even SIGKILL) leaves the old file or the new one,
never half of either.

Final files and folders get the modes a plain `open()` / `os.makedirs()` would give
(0644 / 0755 under umask 022), not the private 0600 / 0700 of `tempfile`; temporary
names start with `.tmp-` (readers skip them) and are removed on any failure.
"""

import contextlib
import os
import shutil
import tempfile

__all__ = ["TMP_PREFIX", "atomic_write", "save_model", "replace_file", "atomic_directory",
           "check_path", "remove", "umask"]

TMP_PREFIX = ".tmp-"


def umask():
    """The process umask (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_normal(path, directory=False):
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def check_path(path, name="path"):
    """Refuses an empty path and a path with a component longer than the file system
    allows (ENAMETOOLONG), before anything is written.

    Raises:
      ValueError: the path is empty (it would mean the working folder), or a component
        is too long.
    """
    path = os.fspath(path)
    if not (path.strip() if isinstance(path, str) else path):
        raise ValueError(f"`{name}` must name a file or folder; an empty path would mean the "
                         f"working folder. Received: {name}={path!r}")
    probe = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    try:
        limit = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    # Room for the temporary names (".tmp-" + name + a random suffix) we write next to it.
    limit -= len(TMP_PREFIX) + 12
    for part in os.path.abspath(path).split(os.sep):
        if len(os.fsencode(part)) > limit:
            raise ValueError(f"A file or folder name may have at most {limit} bytes here. "
                             f"Received: {name}={path!r} with a name of "
                             f"{len(os.fsencode(part))} bytes")
    return path


def replace_file(tmp, path):
    """Gives the temporary file `tmp` normal permissions and renames it over `path`."""
    _chmod_normal(tmp)
    os.replace(tmp, path)


def atomic_write(path, data):
    """Writes `data` (str or bytes) to `path` via a temporary file and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        replace_file(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def save_model(model, path):
    """`model.save` to a temporary `.keras` name, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".keras", dir=folder)
    os.close(fd)
    try:
        model.save(tmp)
        replace_file(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def remove(path):
    """Removes a file, a symlink (the link only, never its target) or a folder tree."""
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isdir(path)):
        _unlink_quietly(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


@contextlib.contextmanager
def atomic_directory(path, overwrite=False):
    """Fills a folder atomically: yields a temporary folder `.tmp-<name>-*` next to `path`
    (mode 0755 under umask 022) and renames it to `path` when the block ends without error;
    on any error it is removed and `path` is untouched.

    With `overwrite`, an existing `path` is renamed aside, replaced, then removed (a
    symlink at `path` is unlinked, never followed).

    Raises:
      FileExistsError: `path` exists and not `overwrite`.
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True to replace it. "
                              f"Received: path={path!r}")
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-", dir=parent)
    try:
        _chmod_normal(tmp, directory=True)
        yield tmp
        old = None
        if os.path.lexists(path):
            old = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-{name}-", dir=parent)
            old = os.path.join(old, name)
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            remove(os.path.dirname(old))
    except BaseException:
        remove(tmp)
        raise
