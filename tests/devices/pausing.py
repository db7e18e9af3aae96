"""A virtual device whose shell stops in the middle of a command, so a test can put another
deploy's step into exactly that gap.

    pause = PauseOn(virtual_device, ("mv", "rm"), LOCK_PATTERNS)
    ... start deploy A; pause.wait_paused() ...   # A is stopped just before its first mv or rm
    ... run deploy B to the end ...               # B's commands pass straight through
    pause.go()                                    # A's mv or rm runs now

The programs named are replaced, on the device's PATH, by a script that stops the first call
whose arguments match one of the patterns (a shell `case` pattern) until go(), then runs the
device's own program. It is the device's real shell and real programs either side of the gap.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

# Arguments that name the device lock or something inside it (not `.lock-new.*` beside it).
LOCK_PATTERNS = ("*/edgepack/.lock", "*/edgepack/.lock/*")

_WRAPPER = """#!/bin/sh
# A test's pause: the first call touching {patterns} waits for {go} (at most 60 s).
for a in "$@"; do
  case "$a" in
    {case})
      if /bin/mkdir {taken} 2>/dev/null; then
        printf '%s\\n' "$0 $*" > {paused}
        i=0
        while [ ! -e {go} ] && [ "$i" -lt 1200 ]; do /bin/sleep 0.05; i=$((i + 1)); done
      fi
      break ;;
  esac
done
exec {real} "$@"
"""


class PauseOn:
    def __init__(self, attached: Any, programs: tuple[str, ...],
                 patterns: tuple[str, ...] = LOCK_PATTERNS) -> None:
        toolbox = attached.device.toolbox
        self.bin_dir = Path(toolbox.bin_dir)
        self.state = Path(toolbox.state_dir) / "pause"
        self.state.mkdir(exist_ok=True)
        q = shlex.quote
        self._saved: dict[str, str | None] = {}
        for name in programs:
            path = self.bin_dir / name
            link = os.readlink(path) if path.is_symlink() else None
            self._saved[name] = link
            if link is not None and Path(link).name == "toybox":
                real = f"{q(link)} {name}"  # a multicall binary goes by the applet's name
            else:
                found = shutil.which(name, path="/usr/bin:/bin")
                assert found, name
                real = q(found)
            text = _WRAPPER.format(
                patterns=" ".join(patterns), case="|".join(patterns),
                taken=q(str(self.state / "taken")), paused=q(str(self.state / "paused")),
                go=q(str(self.state / "go")), real=real)
            tmp = path.with_name(f".{name}.pause")
            tmp.write_text(text)
            tmp.chmod(0o755)
            os.replace(tmp, path)  # never write through a link to toybox

    def wait_paused(self, timeout: float = 60.0) -> str:
        """The command line that stopped; fails the test when none did in time."""
        deadline = time.monotonic() + timeout
        paused = self.state / "paused"
        while not (paused.exists() and paused.read_text().endswith("\n")):
            if time.monotonic() > deadline:
                raise AssertionError("no command stopped at the pause")
            time.sleep(0.02)
        return paused.read_text()

    def go(self) -> None:
        (self.state / "go").touch()

    def restore(self) -> None:
        self.go()
        for name, link in self._saved.items():
            path = self.bin_dir / name
            path.unlink(missing_ok=True)
            if link is not None:
                path.symlink_to(link)
