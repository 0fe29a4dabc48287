"""A node's disk for the disk faults: a small tmpfs (full disk, F12) or an ext4 loop device
(power-loss copies, F11 and the mutation run; throttled I/O, F13).

A power-loss copy is the loop device's backing file copied while the file system on it is
mounted and in use, without syncing it: it holds exactly what reached the "device", and
nothing still in the page cache of the file system on top, as after a power cut.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def mount_tmpfs(path: Path, size_mb: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path))


def umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(path: Path) -> Path:
    """Write a junk file until the file system is full (bounded by its size); return it."""
    junk = path / "fill.junk"
    block = b"\0" * (1 << 20)
    fd = os.open(junk, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # big blocks, then the last crumbs
            chunk = block[:size]
            for _ in range(1 << 16):
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return junk


@dataclass(slots=True)
class LoopDisk:
    """An ext4 file system in an image file, on a loop device, mounted at `mountpoint`."""

    image: Path
    mountpoint: Path
    size_mb: int = 256
    device: str = ""
    # data=writeback and a long commit interval: only what the node fsyncs is sure to be
    # on the "device" (ext4's default 5 s commit would flush data for it).
    options: str = "data=writeback,commit=300"

    def create(self) -> None:
        self.image.parent.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(self.size_mb << 20)
        self.attach()
        _run("mkfs.ext4", "-q", "-F", self.device)
        self.mount()

    def attach(self) -> None:
        self.device = _run("losetup", "-f", "--show", str(self.image))

    def mount(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        _run("mount", "-o", self.options, self.device, str(self.mountpoint))

    def power_loss_copy(self) -> Path:
        """The image as the device holds it now, without syncing the file system on it."""
        copy = self.image.with_suffix(".powerloss")
        shutil.copyfile(self.image, copy)
        return copy

    def replace_with(self, copy: Path) -> None:
        """Unmount, swap the image for `copy` and mount it again (the node comes back on it)."""
        self.detach()
        os.replace(copy, self.image)
        self.attach()
        self.mount()

    def detach(self) -> None:
        if self.device:
            umount(self.mountpoint)
            subprocess.run(["losetup", "-d", self.device], capture_output=True, timeout=30)
            self.device = ""

    @property
    def major_minor(self) -> str:
        st = os.stat(self.device)
        return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
