"""Device paths -> real files under the device's root, the way a chroot would resolve them.

Every path the sync service sees is resolved one component at a time inside the root: `..` at
the top stays at the top, and a symlink's target is followed *inside the root* too (an absolute
target is a device path; a target that names the root through its host path is taken back to a
device path). So no path, however built, reaches a file outside the root. What remains is the
race any user-space resolver has: a component swapped for a symlink between the check and the
open. Shell commands are a different matter: they are real host processes (see pathmap).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

MAX_SYMLINKS = 40  # Linux's limit before ELOOP
DEFAULT_DIRS = ("data/local/tmp", "sdcard")


class DeviceFS:
    def __init__(self, root: Path, host_aliases: tuple[str, ...] = ()) -> None:
        self.root = os.path.realpath(root)
        # Host paths that name the root (its real path, the shell's short link): a symlink
        # created through the shell points at one of them and must stay inside the device.
        self._aliases = tuple(sorted({self.root, *host_aliases}, key=len, reverse=True))
        self._quota_lock = threading.Lock()
        self._in_flight = 0

    def prepare(self) -> None:
        for rel in DEFAULT_DIRS:
            os.makedirs(os.path.join(self.root, rel), exist_ok=True)

    # ------------------------------------------------------------------ paths

    def resolve(self, device_path: str, follow_final: bool = True) -> str:
        """The host path of `device_path`; symlinks followed inside the root.

        The last component is followed only when `follow_final` (stat, open) and kept as it is
        otherwise (lstat, unlink, replacing a file). Missing components are fine: the result
        names where the file would be. Raises OSError(ELOOP) on a symlink cycle.
        """
        pending = [c for c in device_path.split("/") if c]
        pending.reverse()  # a stack: the next component is at the end
        resolved: list[str] = []
        links = 0
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = os.path.join(self.root, *resolved, part)
            if not pending and not follow_final:
                resolved.append(part)
                break
            try:
                st = os.lstat(candidate)
            except OSError:
                resolved.append(part)
                continue
            if not stat.S_ISLNK(st.st_mode):
                resolved.append(part)
                continue
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), device_path)
            target = self._device_target(os.readlink(candidate))
            if target.startswith("/"):
                resolved = []
            pending.extend(reversed([c for c in target.split("/") if c]))
        return os.path.join(self.root, *resolved)

    def _device_target(self, target: str) -> str:
        for alias in self._aliases:
            if target == alias:
                return "/"
            if target.startswith(alias + "/"):
                return target[len(alias):]
        return target

    # ------------------------------------------------------------------ quota

    def usage(self) -> int:
        """Bytes taken by the regular files under the root (their sizes, links not followed)."""
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
        return total

    def reserve(self, quota: int | None, used_now: int, nbytes: int) -> bool:
        """Take `nbytes` more for a file being written, when the quota allows it.

        `used_now` is the root's usage when the transfer began (the file's own bytes count as
        in flight until release); concurrent transfers see each other's bytes in flight.
        """
        with self._quota_lock:
            if quota is not None and used_now + self._in_flight + nbytes > quota:
                return False
            self._in_flight += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self._quota_lock:
            self._in_flight -= nbytes
