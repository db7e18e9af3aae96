"""Android commands a Linux host lacks, as POSIX sh scripts first on the shell's PATH.

getprop and setprop read and write the property file (props.py); dumpsys prints the battery and
thermal state files the device keeps current; df answers from the quota when one is set, and is
the host's df otherwise. A device standing in for a Linux board gets none of Android's commands,
and getconf may report an older glibc than the host's. Everything else (sha256sum, timeout,
mkdir, mv, rm, cat, uname...) is the host's own program: the virtual device runs this machine's
binaries.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

_GETPROP = """\
#!/bin/sh
# getprop of the edgepack virtual device.
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
    if [ -n "$(getprop "$1")" ]; then
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
# df of the edgepack virtual device: the quota when one is set, the host's df otherwise.
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
if [ "$#" -eq 1 ] && [ "$1" = GNU_LIBC_VERSION ]; then echo "glibc {glibc}"; exit 0; fi
exec {real_getconf} "$@"
"""

ANDROID_TOOLS = ("getprop", "setprop", "dumpsys")


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

    def install(self, android: bool = True, glibc: str | None = None) -> None:
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.dumpsys_dir.mkdir(exist_ok=True)
        q = shlex.quote
        real_df = shutil.which("df") or "/bin/df"
        scripts = {
            "getprop": _GETPROP.format(props=q(str(self.props_file))),
            "setprop": _SETPROP.format(props=q(str(self.props_file))),
            "dumpsys": _DUMPSYS.format(dumpsys=q(str(self.dumpsys_dir))),
            "df": _DF.format(quota=q(str(self.quota_file)), real_df=q(real_df),
                             root=q(self._root)),
        }
        if not android:
            for name in ANDROID_TOOLS:
                del scripts[name]
        if glibc is not None:
            scripts["getconf"] = _GETCONF.format(
                glibc=glibc, real_getconf=q(shutil.which("getconf") or "/usr/bin/getconf"))
        for name, text in scripts.items():
            path = self.bin_dir / name
            path.write_text(text, "utf-8")
            path.chmod(0o755)
        self.sync_quota(None)

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
