"""A lock held on the device itself, so two deploys to one device never interleave, whichever
machines they come from (a lab's hosts share phones through remote adb servers).

`mkdir` is atomic on every filesystem a device has; the directory holds who took the lock
(a token, the host name and pid) and until when. A lock is taken over when it has lapsed by the
device's own clock, when its holder is a process of this machine that no longer runs (a deploy
killed, or cut off when the device dropped off, cannot release it), or when the user says so.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from edgepack.devices.base import Device
from edgepack.errors import EdgepackError, ExitCode

# Tokens of the locks this process holds right now: a holder line naming this process with a
# token not in here is a finished deploy of this process (tests run many in one process).
_held: set[str] = set()


@dataclass(frozen=True)
class Holder:
    token: str
    host: str
    pid: int | None
    held_s: int | None

    def describe(self) -> str:
        who = f"{self.host} pid {self.pid}" if self.pid is not None else self.host
        return who + (f" for {self.held_s} s" if self.held_s is not None else "")

    def is_dead_here(self) -> bool:
        if self.host != socket.gethostname() or self.pid is None:
            return False
        if self.pid == os.getpid():
            return self.token not in _held
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def lock_path(root: str) -> str:
    return root.rstrip("/") + "/.lock"


class HeldLock:
    """The lock while it is held. `then_output` is what the `then` command given to device_lock
    printed, run in the shell that took the lock, once it was taken; commands given to
    `on_release` run in the shell that releases it, before the release. So the first and the
    last command of a locked section cost no round trip of their own."""

    def __init__(self, then_output: str | None = None) -> None:
        self.then_output = then_output
        self._release_commands: list[str] = []

    def on_release(self, command: str) -> None:
        self._release_commands.append(command)


@contextlib.contextmanager
def device_lock(device: Device, root: str, lease_s: float, break_lock: bool = False,
                then: str | None = None) -> Iterator[HeldLock]:
    path = lock_path(root)
    token = secrets.token_hex(8)
    holder, then_output = _take(device, root, path, token, lease_s, None, then)
    if holder is not None and (break_lock or holder.is_dead_here()):
        holder, then_output = _take(device, root, path, token, lease_s, holder.token, then)
    if holder is not None:
        raise EdgepackError(
            f"{device.serial} is locked by another deploy ({holder.describe()}); wait for it to "
            "finish, or pass --break-lock if that deploy is gone",
            ExitCode.DEVICE,
        )
    _held.add(token)
    held = HeldLock(then_output)
    try:
        yield held
    finally:
        _held.discard(token)
        qp = shlex.quote(path)
        # Only our own lock is removed: a broken-and-retaken lock belongs to someone else now.
        release = (f"[ \"$(cut -d' ' -f1 {qp}/owner 2>/dev/null)\" = {shlex.quote(token)} ] && "
                   f"rm -rf {qp}; true")
        with contextlib.suppress(EdgepackError):  # a device that is gone keeps its lock to lapse
            device.shell("".join(f"{c}; " for c in held._release_commands) + release, 60)


_THEN_MARK = "::edgepack-then::"


def _take(device: Device, root: str, path: str, token: str, lease_s: float,
          replace_token: str | None, then: str | None) -> tuple[Holder | None, str | None]:
    """Take the lock: (None, what `then` printed) when taken, else (who holds it, None).
    `replace_token` takes over the lock of that holder (and only that one: if someone else took
    it meanwhile, theirs stays)."""
    qp = shlex.quote(path)
    owner = f"{token} {socket.gethostname()} {os.getpid()}"
    replace = shlex.quote(replace_token or "-")
    command = (
        f"mkdir -p {shlex.quote(root)} && now=$(date +%s) && "
        f"if mkdir {qp} 2>/dev/null; then :; "
        f"elif [ \"$(cut -d' ' -f1 {qp}/owner 2>/dev/null)\" = {replace} ] || "
        f"[ \"$(cat {qp}/until 2>/dev/null || echo 0)\" -lt \"$now\" ]; then "
        f"rm -rf {qp} && mkdir {qp}; "
        f"else echo held; cat {qp}/owner 2>/dev/null || echo; "
        f"cat {qp}/since 2>/dev/null || echo; echo \"$now\"; exit 0; fi && "
        f"echo {shlex.quote(owner)} > {qp}/owner && echo \"$now\" > {qp}/since && "
        f"echo $((now + {int(lease_s)})) > {qp}/until && echo acquired"
    )
    if then is not None:
        # Whatever `then` does, the lock is taken: its status must not read as a failed take.
        command += f" && echo {_THEN_MARK} && {{ {then}\n}}; [ -d {qp} ]"
    result = device.shell(command, 60 if then is None else 180)
    taken_text, marked, then_output = result.stdout.partition(_THEN_MARK + "\n")
    lines = taken_text.strip().splitlines()
    if result.exit_code != 0 or not lines or lines[0] not in ("held", "acquired"):
        detail = (result.stderr or result.stdout).strip() or f"exit code {result.exit_code}"
        raise EdgepackError(f"{device.serial}: could not take the device lock in {root}: "
                            f"{detail}", ExitCode.DEVICE)
    if lines[0] == "acquired":
        return None, then_output if marked else None
    owner_fields = (lines[1] if len(lines) > 1 else "").split()
    since = lines[2] if len(lines) > 2 else ""
    now = lines[3] if len(lines) > 3 else ""
    pid = owner_fields[-1] if len(owner_fields) >= 3 else ""
    return Holder(
        token=owner_fields[0] if owner_fields else "",
        host=" ".join(owner_fields[1:-1]) if len(owner_fields) >= 3 else "unknown",
        pid=int(pid) if pid.isdigit() else None,
        held_s=int(now) - int(since) if since.isdigit() and now.isdigit() else None,
    ), None
