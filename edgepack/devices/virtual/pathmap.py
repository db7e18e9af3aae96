"""Device paths in shell command lines -> host paths under the root, and back in the output.

Shell commands run as real host processes, so `/data/local/tmp/x` in a command line has to
become a host path. The mapping is textual: an absolute path that starts with one of the device
prefixes (/data, /sdcard, /storage, /mnt) at a word boundary gets the root's *link* put in front
of it. The link is a short symlink to the root whose path holds only [A-Za-z0-9/._-], so the
insertion never adds or removes a quote, a space or any other character the shell parses: a
command quoted with shlex.quote keeps exactly its words, with spaces, quotes, `;`, `$()` and
non-ASCII in them, and nothing in it can run. What the mapping cannot see, it does not map: a
path assembled at run time (`d=/da; $d"ta"`), or a prefix glued to another word (`x/data`).

Output goes the other way: the link, and the root's real path, become `/` again, so the host
sees the device paths it asked for (sha256sum, error messages, `pwd`).
"""

from __future__ import annotations

import re

DEVICE_PREFIXES = ("/data", "/sdcard", "/storage", "/mnt")

# Characters after which a device path can start: the start of a shell word or of a value inside
# one (`--out=/data/x`, `PATH=/a:/data/b`, `$(/data/x)`, `a,/data/x`).
_BEFORE = "\\s'\"=:;|&(<>`,"
# Characters that can follow the prefix: it is the whole component (`/data`, not `/database`).
_AFTER = "/\\s'\"`;|&)<>:,"


class CommandMapper:
    def __init__(self, link: str, prefixes: tuple[str, ...] = DEVICE_PREFIXES) -> None:
        if not re.fullmatch(r"[A-Za-z0-9/._-]+", link):
            raise ValueError(f"the root link {link!r} must be a plain path (letters, digits, /._-)")
        self.link = link.rstrip("/")
        alternatives = "|".join(re.escape(p.rstrip("/")) for p in prefixes)
        self._pattern = re.compile(
            f"(?<![^{_BEFORE}])(?:{alternatives})(?=[{_AFTER}]|$)"
        )

    def map_command(self, command: str) -> str:
        return self._pattern.sub(lambda m: self.link + m.group(0), command)


class OutputMapper:
    """Replaces host names of the root with `/` in a byte stream cut at arbitrary places.

    A name is replaced only when the next byte shows where it ends (`/`, or a byte that cannot
    continue a path component), so a tail that could still grow into a name is held back until
    the next chunk, or until close.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        encoded = sorted({n.rstrip("/").encode() for n in names if n.rstrip("/")},
                         key=len, reverse=True)
        alternatives = b"|".join(re.escape(n) for n in encoded)
        end = rb"[^\w.\-/\x80-\xff]"
        self._streaming = re.compile(b"(?:" + alternatives + b")(?:/|(?=" + end + b"))")
        self._final = re.compile(b"(?:" + alternatives + b")(?:/|(?=" + end + b")|$)")
        # A tail that is a prefix of NAME + "/" may become a match once more bytes arrive.
        self._holds = tuple(n + b"/" for n in encoded)
        self._longest = max((len(h) for h in self._holds), default=0)
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk if self._carry else chunk
        cut = self._hold_from(data)
        self._carry = data[cut:]
        return self._streaming.sub(b"/", data[:cut])

    def close(self) -> bytes:
        data, self._carry = self._carry, b""
        return self._final.sub(b"/", data)

    def _hold_from(self, data: bytes) -> int:
        start = max(0, len(data) - self._longest)
        pos = data.find(b"/", start)
        while pos != -1:
            tail = data[pos:]
            if any(h.startswith(tail) for h in self._holds):
                return pos
            pos = data.find(b"/", pos + 1)
        return len(data)
