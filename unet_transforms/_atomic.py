"""Writing a file so that it is either the old file or the whole new one, never a part.

The bytes go to a temporary file beside the destination, which is flushed, ``fsync`` ed
and renamed over the destination with :func:`os.replace` (atomic on POSIX and Windows
within one file system). On any error, ``KeyboardInterrupt`` or ``SIGTERM`` (see
:func:`atomic_write`), the temporary file is removed and the destination is left as it
was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import stat
import threading
from collections.abc import Iterator
from types import FrameType
from typing import BinaryIO

__all__ = ["atomic_write", "check_writable", "destination"]

_TEMPORARY_SUFFIX = ".tmp"


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM while :func:`atomic_write` writes.

    A ``BaseException`` so that ``except Exception`` in a serializer does not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def destination(path: object, name: str = "path") -> str:
    """``path`` as a string naming a file that can be created or replaced.

    Args:
        path: A ``str`` or ``os.PathLike``.
        name: The argument's name, for the error messages.

    Returns:
        The path as a string (symbolic links resolved, so a link keeps pointing at the
        file it names).

    Raises:
        TypeError: If ``path`` is not a ``str`` or path-like.
        ValueError: If it names a directory, or its folder does not exist.

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> destination(os.path.join(folder, "a.pt")) == os.path.join(folder, "a.pt")
        True
        >>> destination(os.path.join(folder, "missing", "a.pt"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: path must be in an existing folder, got '...a.pt' (no folder '...missing')
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str or os.PathLike of str, got bytes {text!r}")
    if not text or text.endswith(("/", os.sep)) or os.path.isdir(text):
        raise ValueError(f"{name} must name a file, got a directory: {text!r}")
    if os.path.islink(text):
        text = os.path.realpath(text)
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise ValueError(
            f"{name} must be in an existing folder, got {text!r} (no folder {folder!r})"
        )
    return text


def _temporary(path: str) -> BinaryIO:
    """A new, empty hidden file beside ``path``, open for writing.

    Opened exclusively (``"xb"``), with the permissions any new file gets (0o666 less
    the umask).
    """
    folder, base = os.path.split(os.path.abspath(path))
    for _ in range(100):
        name = os.path.join(folder, f".{base[:200]}.{secrets.token_hex(4)}{_TEMPORARY_SUFFIX}")
        try:
            return open(name, "xb")
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", os.path.join(folder, base))


def check_writable(path: str) -> None:
    """Raises ``OSError`` unless a file can be created beside ``path`` (which must be a
    file name in an existing folder): a read-only or immutable folder, a read-only file
    system, missing permissions.

    Creating and removing a file is the only test that sees all of these (the
    permission bits do not stop root, and say nothing of immutable folders or mounts).

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> check_writable(os.path.join(folder, "mask.png"))
        >>> os.listdir(folder)
        []
    """
    with _temporary(path) as file:
        os.unlink(file.name)


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """While active in the main thread, SIGTERM with its default action raises
    :class:`_Terminated` instead of killing the process at once."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield  # another thread, or the program handles SIGTERM itself: leave it be
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _sync_folder(folder: str) -> None:
    """Makes the rename durable: fsync the folder (POSIX; skipped where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: it replaces ``path`` only when complete.

    On leaving the block without an error the file is flushed, ``fsync`` ed and renamed
    over ``path`` (keeping an existing file's permission bits). On an error,
    ``KeyboardInterrupt`` or (in the main thread, when the program leaves SIGTERM at its
    default) SIGTERM, the temporary file is removed, ``path`` is untouched, and the
    exception propagates (SIGTERM: the process then ends by the signal, as it would
    have). A killed process (SIGKILL, power loss) can leave a hidden
    ``.NAME.XXXXXXXX.tmp`` beside ``path``, never a partial ``path``.

    Args:
        path: The file to create or replace; its folder must exist.

    Yields:
        The open temporary file, positioned at 0, seekable.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_write(path) as f:
        ...     _ = f.write(b"new")
        >>> path.read_bytes(), [p.name for p in path.parent.iterdir()]
        (b'new', ['out.txt'])
    """
    target = destination(path)
    with _terminate_raises():
        file = _temporary(target)
        name = file.name
        try:
            with file:
                yield file
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileNotFoundError):
                os.chmod(name, stat.S_IMODE(os.stat(target).st_mode))
            os.replace(name, target)
        except _Terminated as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(e.signum)  # end as the signal would have ended us
            raise  # reached only if the signal is blocked
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise
    _sync_folder(os.path.dirname(os.path.abspath(target)))
