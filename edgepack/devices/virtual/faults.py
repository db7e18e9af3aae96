"""Fault knobs: plain attributes that tests flip while the device runs.

Every service reads the knobs at the moment it needs them, so a change applies to the next
message, transfer or command without restarting anything. One-shot knobs clear themselves when
they fire, so the retry a test makes next succeeds.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from edgepack.devices.virtual import perturb

RUNNER_FAULTS = ("crash", "hang")


@dataclass
class Faults:
    # Payload bytes per second, each direction on its own (USB and TCP links are full duplex).
    bandwidth: int | None = None
    # Seconds added before the device handles each message it receives.
    latency: float = 0.0
    # Drop the whole adb connection once this many bytes of one sync transfer (SEND or RECV
    # DATA) have passed. New connections are served as usual, so the host can reconnect.
    drop_after_bytes: int | None = None
    drop_always: bool = False  # False: fire once, then clear drop_after_bytes
    # Vanish (drop every connection, stop listening) when a shell command matching this regex
    # starts, vanish_delay seconds later; revive_after brings the device back by itself.
    vanish_on_command: str | None = None
    vanish_delay: float = 0.0
    revive_after: float | None = None
    # Bytes the files under the root may take in total; SEND past it fails like a full disk.
    quota_bytes: int | None = None
    # What a program named edgepack-runner does when a shell command runs it: "crash" (SIGSEGV)
    # or "hang" (until killed). The runner binary itself is not touched.
    runner: str | None = None
    runner_once: bool = False  # only the first run after the knob is set gets the fault
    # Drift: from this many seconds after the device started, a program named edgepack-runner
    # runs slowdown_factor times slower (edgepack.devices.virtual.slowdown).
    slowdown_after: float | None = None
    slowdown_factor: float = 1.0

    def validate(self) -> None:
        if self.runner is not None and perturb.is_perturb(self.runner):
            perturb.parse(self.runner)  # ValueError: one line for the user
        elif self.runner is not None and self.runner not in RUNNER_FAULTS:
            raise ValueError(f"runner fault {self.runner!r}: expected one of {RUNNER_FAULTS}")
        for name in ("bandwidth", "drop_after_bytes", "quota_bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        if self.slowdown_after is not None and (not self.slowdown_after >= 0
                                                or not 1 <= self.slowdown_factor <= 100):
            raise ValueError("slowdown: the delay must be >= 0 s and the factor from 1 to 100")
        if self.latency < 0 or self.vanish_delay < 0:
            raise ValueError("latency and vanish_delay must not be negative")
        if self.vanish_on_command is not None:
            try:
                re.compile(self.vanish_on_command)
            except re.error as exc:
                raise ValueError(f"vanish pattern {self.vanish_on_command!r} is not a regular "
                                 f"expression: {exc}") from None


class Throttle:
    """Paces a byte stream to a rate read at each call (None or 0: unlimited)."""

    # How far ahead of the schedule a sender may run before it sleeps: small enough that a
    # short transfer still sees the cap, large enough not to sleep for microseconds.
    SLACK = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0

    def consume(self, nbytes: int, rate: int | None) -> None:
        if not rate or nbytes <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + nbytes / rate
            wait = self._next - now - self.SLACK
        if wait > 0:
            time.sleep(wait)
