"""A lock held on the device itself, so two deploys to one device never interleave, whichever
machines they come from (a lab's hosts share phones through remote adb servers).

`mkdir` is atomic on every filesystem a device has; the directory holds who took the lock and
until when. A lock whose holder died lapses at that time, judged by the device's own clock.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import socket
from collections.abc import Iterator

from edgepack.devices.base import Device
from edgepack.errors import EdgepackError, ExitCode


def lock_path(root: str) -> str:
    return root.rstrip("/") + "/.lock"


@contextlib.contextmanager
def device_lock(device: Device, root: str, lease_s: float, break_lock: bool = False
                ) -> Iterator[None]:
    path = lock_path(root)
    token = secrets.token_hex(8)
    owner = f"{token} {socket.gethostname()} pid {os.getpid()}"
    qp, qo = shlex.quote(path), shlex.quote(owner)
    lease = int(lease_s)
    # Prints "acquired", or the holder's line and the device's clock. A lapsed lock (or one the
    # user breaks) is removed and taken in the same command.
    take = (
        f"mkdir -p {shlex.quote(root)} && now=$(date +%s) && "
        f"if mkdir {qp} 2>/dev/null; then :; "
        f"elif [ {1 if break_lock else 0} = 1 ] || "
        f"[ \"$(cut -d' ' -f1 {qp}/until 2>/dev/null || echo 0)\" -lt \"$now\" ]; then "
        f"rm -rf {qp} && mkdir {qp}; "
        f"else echo held; cat {qp}/owner {qp}/since 2>/dev/null; echo \"now $now\"; exit 0; fi && "
        f"echo {qo} > {qp}/owner && echo \"$now\" > {qp}/since && "
        f"echo $((now + {lease})) > {qp}/until && echo acquired"
    )
    result = device.shell(take, 60)
    lines = result.stdout.strip().splitlines()
    if result.exit_code != 0 or not lines:
        raise EdgepackError(
            f"{device.serial}: could not take the device lock in {root}: "
            f"{(result.stderr or result.stdout).strip() or 'exit code ' + str(result.exit_code)}",
            ExitCode.DEVICE,
        )
    if lines[0] == "held":
        holder = lines[1].split(" ", 1)[1] if len(lines) > 1 and " " in lines[1] else "unknown"
        ago = ""
        if len(lines) > 3 and lines[2].isdigit() and lines[3].startswith("now "):
            ago = f" for {int(lines[3][4:]) - int(lines[2])} s"
        raise EdgepackError(
            f"{device.serial} is locked by another deploy ({holder}{ago}); wait for it to finish, "
            "or pass --break-lock if that deploy is gone",
            ExitCode.DEVICE,
        )
    try:
        yield
    finally:
        # Only our own lock is removed: a broken-and-retaken lock belongs to someone else now.
        with contextlib.suppress(EdgepackError):
            device.shell(
                f"[ \"$(cut -d' ' -f1 {qp}/owner 2>/dev/null)\" = {shlex.quote(token)} ] && "
                f"rm -rf {qp}; true",
                60,
            )
