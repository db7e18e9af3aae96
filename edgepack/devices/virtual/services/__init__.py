"""The device-side services a stream can OPEN: shell, exec and sync.

Anything else (tcp:, jdwp:, reboot:, framebuffer:...) is refused with CLSE, which the host
reports as a closed connection, exactly as adbd does for a service it does not offer.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from edgepack.devices.virtual.services.shell import ShellRequest, serve_shell
from edgepack.devices.virtual.services.sync import serve_sync

if TYPE_CHECKING:
    from edgepack.devices.virtual.server import VirtualDevice
    from edgepack.devices.virtual.stream import Stream

# What the banner announces. shell_v2: exit codes and stderr; stat_v2: STA2/LST2 for adb push
# and pull; fixed_push_mkdir: SEND creates missing parent directories (no `mkdir` over shell).
FEATURES = ("shell_v2", "stat_v2", "fixed_push_mkdir")


def handler_for(service: str, device: VirtualDevice) -> Callable[[Stream], None] | None:
    if service == "sync:":
        return partial(serve_sync, device=device)
    if service.startswith("shell:") or service.startswith("shell,"):
        request = ShellRequest.parse(service)
        if request is None:
            return None
        return partial(serve_shell, request=request, device=device)
    if service.startswith("exec:"):
        # adbd runs exec: as a raw shell without the shell protocol (stdout and stderr merged).
        command = service[len("exec:"):]
        return partial(serve_shell, request=ShellRequest(command, v2=False, pty=False),
                       device=device)
    return None
