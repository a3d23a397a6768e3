"""atomic_write: the destination is the old file or the whole new one, never a part."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from unet_transforms import _atomic
from unet_transforms._atomic import atomic_write, check_writable, destination

ATOMIC_SOURCE = Path(_atomic.__file__)


def only(folder: Path) -> list[str]:
    """The names in ``folder``: a leftover temporary file shows up here."""
    return sorted(p.name for p in folder.iterdir())


def writer(script: str) -> str:
    """A child script with ``atomic_write`` loaded from its file (no torch import: fast)."""
    head = f"""
        import importlib.util, os, resource, signal, sys, time
        spec = importlib.util.spec_from_file_location("_atomic", {str(ATOMIC_SOURCE)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        atomic_write = module.atomic_write
    """
    return textwrap.dedent(head) + textwrap.dedent(script)


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_write(path) as f:
        f.write(b"first")
    assert path.read_bytes() == b"first"
    path.chmod(0o640)
    with atomic_write(str(path)) as f:
        f.write(b"second")
        assert path.read_bytes() == b"first"  # nothing visible before the end
    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the old file's permissions
    assert only(tmp_path) == ["out.bin"]


def test_a_new_file_gets_the_umask_permissions(tmp_path):
    umask = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "new.bin") as f:
            f.write(b"x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o640


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]
)
def test_an_error_while_writing_keeps_the_old_file(tmp_path, error):
    path = tmp_path / "out.bin"
    path.write_bytes(b"good old result")
    with pytest.raises(type(error)), atomic_write(path) as f:  # noqa: PT012
        f.write(b"half of the new")
        raise error
    assert path.read_bytes() == b"good old result"
    assert only(tmp_path) == ["out.bin"]


def test_a_full_disk_keeps_the_old_file(tmp_path):
    """A real short write: the child may write at most 4 KiB per file (RLIMIT_FSIZE)."""
    path = tmp_path / "out.bin"
    path.write_bytes(b"good old result")
    script = writer(f"""
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            with atomic_write({str(path)!r}) as f:
                f.write(b"x" * 100_000)
        except OSError as e:
            print(e.errno)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(errno.EFBIG)
    assert path.read_bytes() == b"good old result"
    assert only(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_writing_keeps_the_old_file(tmp_path, signum):
    path = tmp_path / "out.bin"
    path.write_bytes(b"good old result")
    script = writer(f"""
        with atomic_write({str(path)!r}) as f:
            f.write(b"half of the new")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
        assert len(only(tmp_path)) == 2  # the new bytes are in a temporary file
        child.send_signal(signum)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signum  # the process still ends by the signal
    assert path.read_bytes() == b"good old result"
    assert only(tmp_path) == ["out.bin"]


def test_sigterm_is_handled_only_while_writing_and_only_if_left_at_default(tmp_path):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with atomic_write(tmp_path / "a") as f:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        f.write(b"a")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def own(signum, frame):
        raise AssertionError("not called")

    signal.signal(signal.SIGTERM, own)
    try:
        with atomic_write(tmp_path / "b") as f:
            assert signal.getsignal(signal.SIGTERM) is own
            f.write(b"b")
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_link_keeps_pointing_at_its_file(tmp_path):
    (tmp_path / "real.bin").write_bytes(b"old")
    (tmp_path / "link.bin").symlink_to(tmp_path / "real.bin")
    with atomic_write(tmp_path / "link.bin") as f:
        f.write(b"new")
    assert (tmp_path / "link.bin").is_symlink()
    assert (tmp_path / "real.bin").read_bytes() == b"new"


def test_bad_destinations(tmp_path):
    class BytesPath:
        def __fspath__(self) -> bytes:
            return b"x.pt"

    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike, got NoneType"):
        destination(None)
    with pytest.raises(TypeError, match=r"out must be a str or os\.PathLike, got bytes"):
        destination(b"x.pt", "out")
    with pytest.raises(TypeError, match=r"os\.PathLike of str, got bytes b'x\.pt'"):
        destination(BytesPath())
    with pytest.raises(ValueError, match="path must name a file, got a directory"):
        destination(tmp_path)
    with pytest.raises(ValueError, match="path must name a file, got a directory"):
        destination(f"{tmp_path}/new/")
    with pytest.raises(ValueError, match=r"path must be in an existing folder, got .*no folder"):
        destination(tmp_path / "missing" / "x.pt")
    with pytest.raises(ValueError, match="must be in an existing folder"):  # noqa: SIM117
        with atomic_write(tmp_path / "missing" / "x.pt"):
            pass  # pragma: no cover


def test_check_writable_sees_an_immutable_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    check_writable(str(folder / "x.png"))
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE)")
    try:
        with pytest.raises(PermissionError):
            check_writable(str(folder / "x.png"))
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert only(folder) == []


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root ignores permission bits (chmod 555 cannot stop it); for root the "
    "immutable-folder test above checks the same refusal",
)
def test_check_writable_sees_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            check_writable(str(folder / "x.png"))
    finally:
        folder.chmod(0o755)
