"""The device's userland: its shell, the programs on its PATH, and Android's own commands.

getprop and setprop read and write the property file (props.py); dumpsys prints the battery and
thermal state files the device keeps current; df answers from the quota when one is set, and is
the userland's df otherwise. A device standing in for a Linux board gets none of Android's
commands, and getconf may report an older glibc than the host's.

Everything else (sha256sum, timeout, stat, mv, date...) comes from the userland:
- android: what a phone has. Commands run under mksh (Android's /system/bin/sh), and the PATH
  is one directory holding a link to toybox for every applet it lists, `sh` (mksh) and the
  device's own tools: nothing of the host's, so a command line that leans on GNU coreutils,
  bash or awk fails here as it would on a phone.
- host: this machine's /bin/sh and its PATH behind the device's own tools. It stands for a
  Linux board (a glibc userland with a POSIX sh), and for a machine without mksh or toybox.
The device's own tools are scripts run by the host's /bin/sh with the host's PATH: they stand
for Android's binaries, so what they use internally (awk, du) is no command line's concern.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_GETPROP = """\
#!/bin/sh
# getprop of the edgepack virtual device.
PATH={host_path}; export PATH
f={props}
if [ "$#" -eq 0 ]; then
  LC_ALL=C sort "$f" | awk '{{ i = index($0, "=")
    printf "[%s]: [%s]\\n", substr($0, 1, i - 1), substr($0, i + 1) }}'
  exit 0
fi
K="$1" D="${{2-}}" awk 'BEGIN {{ k = ENVIRON["K"] "=" }}
  index($0, k) == 1 {{ print substr($0, length(k) + 1); found = 1; exit }}
  END {{ if (!found) print ENVIRON["D"] }}' "$f"
"""

_SETPROP = """\
#!/bin/sh
# setprop of the edgepack virtual device: read-only (ro.*) properties cannot change once set.
PATH={host_path}; export PATH
f={props}
if [ "$#" -ne 2 ]; then
  echo "usage: setprop NAME VALUE" >&2
  exit 1
fi
case "$1" in
  *[!A-Za-z0-9_.:@-]*|"") echo "setprop: invalid property name '$1'" >&2; exit 1 ;;
esac
case "$2" in
  *"
"*) echo "Failed to set property '$1' to '$2'." >&2; exit 1 ;;
esac
case "$1" in
  ro.*)
    if [ -n "$({getprop} "$1")" ]; then
      echo "Failed to set property '$1' to '$2'." >&2
      echo "See dmesg for error reason." >&2
      exit 1
    fi ;;
esac
tmp="$f.$$"
K="$1" awk 'BEGIN {{ k = ENVIRON["K"] "=" }} index($0, k) != 1' "$f" > "$tmp" &&
  printf '%s=%s\\n' "$1" "$2" >> "$tmp" && mv -f "$tmp" "$f"
"""

_DUMPSYS = """\
#!/bin/sh
# dumpsys of the edgepack virtual device: the services a device lab reads.
PATH={host_path}; export PATH
d={dumpsys}
if [ "$#" -eq 0 ] || [ "$1" = "-l" ]; then
  echo "Currently running services:"
  for s in "$d"/*; do echo "  ${{s##*/}}"; done
  exit 0
fi
case "$1" in
  */*|.*) ;;
  *) if [ -f "$d/$1" ]; then cat "$d/$1"; exit 0; fi ;;
esac
echo "Can't find service: $1" >&2
exit 0
"""

_DF = """\
#!/bin/sh
# df of the edgepack virtual device: the quota when one is set, the userland's df otherwise.
PATH={host_path}; export PATH
q={quota}
if [ ! -s "$q" ]; then exec {real_df} "$@"; fi
quota=$(cat "$q")
used=$(du -s -B1 --apparent-size {root} 2>/dev/null | cut -f1)
used=${{used:-0}}
avail=$((quota > used ? quota - used : 0))
pct=$((quota > 0 ? (used * 100 + quota - 1) / quota : 100))
echo "Filesystem     1K-blocks    Used Available Use% Mounted on"
printf '%s %d %d %d %d%% %s\\n' /dev/block/vdquota $((quota / 1024)) $((used / 1024)) \\
  $((avail / 1024)) "$pct" /data
"""


_GETCONF = """\
#!/bin/sh
# getconf of the edgepack virtual device: the C library version it was told to report.
PATH={host_path}; export PATH
if [ "$#" -eq 1 ] && [ "$1" = GNU_LIBC_VERSION ]; then echo "glibc {glibc}"; exit 0; fi
exec {real_getconf} "$@"
"""

ANDROID_TOOLS = ("getprop", "setprop", "dumpsys")
USERLANDS = ("android", "host")


@dataclass(frozen=True)
class Userland:
    """What runs a device's shell commands."""

    name: str  # "android" or "host"
    shell: str  # the program that runs `-c COMMAND`
    toybox: str | None = None  # android: the toybox binary its applets link to


def choose_userland(requested: str | None, phone: bool) -> Userland:
    """`requested` (android, host), or by default android for a phone when mksh and toybox are
    installed: the userland every command deploy sends must work under. A Linux board gets the
    host's by default, as a board's is glibc's and a POSIX sh. Raises ValueError."""
    mksh, toybox = shutil.which("mksh"), shutil.which("toybox")
    if requested is None:
        requested = "android" if phone and mksh and toybox else "host"
    if requested not in USERLANDS:
        raise ValueError(f"userland {requested!r}: choose one of {', '.join(USERLANDS)}")
    if requested == "host":
        return Userland("host", "/bin/sh")
    if not (mksh and toybox):
        raise ValueError("the android userland needs mksh and toybox: apt-get install mksh "
                         "toybox (or choose the host userland)")
    return Userland("android", mksh, toybox)


def toybox_applets(toybox: str) -> list[str]:
    """The applets this toybox was built with (`toybox` alone lists them)."""
    out = subprocess.run([toybox], capture_output=True, text=True, timeout=30).stdout.split()
    return [name for name in out if name and "/" not in name]


class Toolbox:
    """The state directory's bin/ and the files its scripts read."""

    def __init__(self, state_dir: Path, root: str) -> None:
        self.state_dir = Path(state_dir)
        self.bin_dir = self.state_dir / "bin"
        self.props_file = self.state_dir / "props"
        self.dumpsys_dir = self.state_dir / "dumpsys"
        self.quota_file = self.state_dir / "quota"
        self._root = root
        self._quota: int | None | bool = False  # False: not written yet
        self.userland = Userland("host", "/bin/sh")

    def install(self, android: bool = True, glibc: str | None = None,
                userland: str | None = None) -> None:
        self.userland = choose_userland(userland, phone=android)
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.dumpsys_dir.mkdir(exist_ok=True)
        q = shlex.quote
        host_path = q(os.environ.get("PATH") or "/usr/bin:/bin")
        toybox = self.userland.toybox
        # The userland's own df and getconf behind the device's wrappers of them.
        real_df = f"{q(toybox)} df" if toybox else q(shutil.which("df") or "/bin/df")
        real_getconf = (f"{q(toybox)} getconf" if toybox
                        else q(shutil.which("getconf") or "/usr/bin/getconf"))
        scripts = {
            "getprop": _GETPROP.format(props=q(str(self.props_file)), host_path=host_path),
            "setprop": _SETPROP.format(props=q(str(self.props_file)), host_path=host_path,
                                       getprop=q(str(self.bin_dir / "getprop"))),
            "dumpsys": _DUMPSYS.format(dumpsys=q(str(self.dumpsys_dir)), host_path=host_path),
            "df": _DF.format(quota=q(str(self.quota_file)), real_df=real_df,
                             root=q(self._root), host_path=host_path),
        }
        if not android:
            for name in ANDROID_TOOLS:
                del scripts[name]
        if glibc is not None:
            scripts["getconf"] = _GETCONF.format(glibc=glibc, real_getconf=real_getconf,
                                                 host_path=host_path)
        if toybox is not None:
            links = dict.fromkeys(toybox_applets(toybox), toybox)
            links.update(toybox=toybox, sh=self.userland.shell)
            for name, target in links.items():
                if name not in scripts:
                    _replace(self.bin_dir / name, lambda p, t=target: p.symlink_to(t))
        for name, text in scripts.items():
            def write(path: Path, text: str = text) -> None:
                path.write_text(text, "utf-8")
                path.chmod(0o755)

            _replace(self.bin_dir / name, write)
        self.sync_quota(None)

    def search_path(self, host_path: str) -> str:
        """The shell's PATH: the device's tools first; the host's programs only in the host
        userland."""
        if self.userland.toybox is not None:
            return str(self.bin_dir)
        return f"{self.bin_dir}:{host_path}"

    def write_dumpsys(self, service: str, text: str) -> None:
        path = self.dumpsys_dir / service
        tmp = path.with_name(f".{service}.tmp")
        tmp.write_text(text, "utf-8")
        os.replace(tmp, path)

    def sync_quota(self, quota: int | None) -> None:
        """Keep the quota df reads in step with the fault knob (called before each command)."""
        if quota == self._quota:
            return
        self.quota_file.write_text("" if quota is None else str(quota), "utf-8")
        self._quota = quota


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    """Make `path` afresh under a temporary name and rename it into place: writing through an
    existing link to toybox would overwrite toybox itself."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    make(tmp)
    os.replace(tmp, path)
