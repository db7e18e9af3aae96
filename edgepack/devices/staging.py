"""Keeping a directory on a device equal to a set of local files, pushing only what changed.

The device keeps a manifest of what edgepack put in the directory (`.edgepack-files`: sha256,
size, mtime, path). A file whose recorded sha256 matches and whose size and mtime on the device
still match the record is not pushed again; where the record and the device disagree, the
device's own `sha256sum` decides. A pushed file goes to a hidden temporary name, is checked with
the device's `sha256sum`, and only then renamed into place, so an interrupted push never leaves a
file that looks complete.

A push that breaks off (connection lost, edgepack killed, device rebooted) resumes. adbd deletes
what it received of a SEND that breaks off, and sync cannot append, so a file larger than a
segment goes as segments: the first straight to the hidden part name, each later one to a
segment name and then appended to the part on the device (`cat >>`, only if the part still has
the size it should). The part is thus always a prefix of the file; the next deploy hashes it on
the device (`sha256sum`, against the same bytes of the local file) and pushes only the rest. A
part that is no such prefix is discarded and the file pushed whole. The whole file is checked
as always before it is renamed into place.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from edgepack.devices.base import ProgressCallback, ShellResult
from edgepack.errors import EdgepackError, ExitCode

MANIFEST = ".edgepack-files"
PART_SUFFIX = ".edgepack-part"
# A segment on its way to a part: a part itself, so that whatever cleans up parts cleans it.
SEGMENT_SUFFIX = ".edgepack-segment" + PART_SUFFIX
# A file is sent in about SEGMENTS pieces, each between these sizes: a push killed anywhere
# loses at most one segment (1/SEGMENTS of a large file), and a segment costs one extra sync
# connection and one `cat >>` on the device.
SEGMENTS = 32
MIN_SEGMENT = 4 * 2**20
MAX_SEGMENT = 64 * 2**20


class StagingDevice(Protocol):
    serial: str

    def shell(self, command: str, timeout: float | None = None) -> ShellResult: ...

    def push(self, local: Path, remote: str, progress: ProgressCallback | None = None,
             mode: int = 0o644, *, offset: int = 0, length: int | None = None) -> None: ...


@dataclass(frozen=True)
class LocalFile:
    rel: str  # path inside the remote directory, with / separators
    path: Path
    sha256: str
    size: int
    executable: bool = False


@dataclass(frozen=True)
class SyncStats:
    files_pushed: int
    bytes_pushed: int
    files_skipped: int
    bytes_skipped: int
    seconds: float
    bytes_resumed: int = 0  # of the files pushed, what an earlier, broken-off push had left


class TransferProgress(Protocol):
    """Told about a directory's transfer, so the CLI can draw progress bars."""

    def start(self, label: str, total_bytes: int) -> ProgressCallback: ...

    def finish(self) -> None: ...


def q(path: str) -> str:
    return shlex.quote(path)


@dataclass(frozen=True)
class DirSync:
    """One directory to keep equal to a set of local files."""

    files: list[LocalFile]
    remote_dir: str
    label: str  # for progress bars and messages


def survey_command(dirs: list[DirSync]) -> str:
    """The shell command that reads every directory's state; its output goes to sync_dirs. A
    caller may run it in a round trip of its own making (deploy does, with the lock's)."""
    return _survey_command(_specs(dirs))


def _specs(dirs: list[DirSync]) -> list[tuple[str, list[str]]]:
    return [(d.remote_dir, [f.rel for f in d.files]) for d in dirs]


def sync_dirs(
    device: StagingDevice,
    dirs: list[DirSync],
    progress: TransferProgress | None = None,
    free_bytes: Callable[[], int | None] | None = None,
    surveyed: str | None = None,
) -> list[SyncStats]:
    """sync_dir for several directories, their state read in one round trip (a redeploy that
    pushes nothing costs that one command), or taken from `surveyed`, the output of
    survey_command(dirs) run by the caller."""
    t0 = time.perf_counter()
    surveys = (_survey(device, _specs(dirs)) if surveyed is None
               else _parse_survey(surveyed, len(dirs)))
    share = (time.perf_counter() - t0) / max(len(dirs), 1)
    return [sync_dir(device, d.files, d.remote_dir, d.label, progress, free_bytes, survey, share)
            for d, survey in zip(dirs, surveys, strict=True)]


def sync_dir(
    device: StagingDevice,
    files: list[LocalFile],
    remote_dir: str,
    label: str,
    progress: TransferProgress | None = None,
    free_bytes: Callable[[], int | None] | None = None,
    survey: tuple[dict[str, tuple[str, int, str]], dict[str, tuple[int, str]]] | None = None,
    surveyed_s: float = 0.0,
) -> SyncStats:
    t0 = time.perf_counter() - surveyed_s
    for f in files:
        _check_rel(f.rel)
    if survey is None:
        (survey,) = _survey(device, [(remote_dir, [f.rel for f in files])])
    records, stats = survey
    wanted = {f.rel: f for f in files}

    # Files whose record matches and whose size and mtime still do are confirmed; what the
    # stat cannot confirm is hashed on the device.
    candidates = [f for f in files if f.rel in records and records[f.rel][0] == f.sha256]
    confirmed: set[str] = set()
    doubtful: list[LocalFile] = []
    if candidates:
        for f in candidates:
            _, size, mtime = records[f.rel]
            if stats.get(f.rel) == (size, mtime) and size == f.size:
                confirmed.add(f.rel)
            elif f.rel in stats:
                doubtful.append(f)
        if doubtful:
            sums = _sha256sum(device, remote_dir, [f.rel for f in doubtful])
            confirmed |= {f.rel for f in doubtful if sums.get(f.rel) == f.sha256}
    to_push = [f for f in files if f.rel not in confirmed]

    stale = [rel for rel in records if rel not in wanted]
    if not to_push and not stale and not doubtful:
        # Nothing to do: the common redeploy, kept to the two round trips above.
        return SyncStats(0, 0, len(files), sum(f.size for f in files),
                         time.perf_counter() - t0)
    resumed = _resumable(device, remote_dir, to_push, stats)
    dirs = sorted({str(PurePosixPath(f.rel).parent) for f in to_push} - {"."})
    prepare = [f"mkdir -p {q(remote_dir)}"]
    prepare += [f"mkdir -p {q(posixpath.join(remote_dir, d))}" for d in dirs]
    # Parts and segments left by an interrupted push but for the parts resumed, and files a
    # previous bundle had and this one has not.
    keep = "".join(f" ! -path {q(_glob_quote(posixpath.join(remote_dir, _part_name(rel))))}"
                   for rel in resumed)
    prepare.append(f"find {q(remote_dir)} -name {q('*' + PART_SUFFIX)}{keep} -exec rm -f {{}} +")
    prepare += [f"rm -f {q(posixpath.join(remote_dir, rel))}" for rel in stale]
    _run(device, " && ".join(prepare), f"prepare {remote_dir}")

    need = sum(f.size - resumed.get(f.rel, 0) for f in to_push)
    if to_push and free_bytes is not None:
        free = free_bytes()
        if free is not None and need > free:
            raise EdgepackError(
                f"{device.serial}: not enough space in {remote_dir}: {label} needs "
                f"{need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free; free some space on the "
                "device (or `edgepack clean --device SERIAL`)",
                ExitCode.DEVICE,
            )

    pushed_parts: list[tuple[LocalFile, str]] = []
    advance = progress.start(label, need) if progress and to_push else None
    try:
        for f in to_push:
            # Relative to remote_dir: sha256sum prints names, and only ours are plain.
            part = _part_name(f.rel)
            try:
                _push_rest(device, remote_dir, f, part, resumed.get(f.rel, 0), advance)
            except EdgepackError as exc:
                raise EdgepackError(_push_failure(exc.message, device.serial, f, need),
                                    ExitCode.DEVICE) from None
            pushed_parts.append((f, part))
    finally:
        if progress and advance:
            progress.finish()

    if pushed_parts:
        sums = _sha256sum(device, remote_dir, [p for _, p in pushed_parts])
        bad = [f.rel for f, p in pushed_parts if sums.get(p) != f.sha256]
        if bad:
            _run(device, f"cd {q(remote_dir)} && rm -f "
                 + " ".join(q(p) for _, p in pushed_parts), "clean up")
            raise EdgepackError(
                f"{device.serial}: {', '.join(bad)} arrived corrupted (sha256 differs on the "
                "device); deploy again",
                ExitCode.DEVICE,
            )
        moves = [f"mv -f {q(part)} {q(f.rel)}" for f, part in pushed_parts]
        _run(device, f"cd {q(remote_dir)} && " + " && ".join(moves),
             f"move files into place in {remote_dir}")

    final_stats = _stat(device, remote_dir, [f.rel for f in files])
    missing = [f.rel for f in files if f.rel not in final_stats]
    if missing:
        raise EdgepackError(f"{device.serial}: {', '.join(missing)} vanished from {remote_dir}",
                            ExitCode.DEVICE)
    _write_records(device, remote_dir, {
        f.rel: (f.sha256, *final_stats[f.rel]) for f in files
    })
    skipped = [f for f in files if f.rel in confirmed]
    return SyncStats(
        files_pushed=len(to_push),
        bytes_pushed=need,
        files_skipped=len(skipped),
        bytes_skipped=sum(f.size for f in skipped),
        seconds=time.perf_counter() - t0,
        bytes_resumed=sum(resumed.values()),
    )


def _part_name(rel: str) -> str:
    parent, name = posixpath.split(rel)
    return posixpath.join(parent, "." + name + PART_SUFFIX)


def _segment_name(rel: str, index: int) -> str:
    parent, name = posixpath.split(rel)
    return posixpath.join(parent, f".{name}.{index}{SEGMENT_SUFFIX}")


def segment_size(size: int) -> int:
    return max(MIN_SEGMENT, min(MAX_SEGMENT, size // SEGMENTS))


def _resumable(device: StagingDevice, remote_dir: str, files: list[LocalFile],
               stats: dict[str, tuple[int, str]]) -> dict[str, int]:
    """rel -> bytes already on the device: each file whose part, left by a push that broke off,
    is a prefix of the local file (sha256 of the part on the device against the same bytes
    here). Hashed in one round trip."""
    parts = {f.rel: stats[_part_name(f.rel)][0] for f in files
             if _part_name(f.rel) in stats and 0 < stats[_part_name(f.rel)][0] <= f.size}
    if not parts:
        return {}
    sums = _sha256sum(device, remote_dir, [_part_name(rel) for rel in parts])
    return {f.rel: parts[f.rel] for f in files
            if f.rel in parts and sums.get(_part_name(f.rel)) == _prefix_sha256(
                f.path, parts[f.rel])}


def _prefix_sha256(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        left = size
        while left:
            block = fh.read(min(left, 1 << 20))
            if not block:
                return ""  # the local file is shorter: no prefix of it
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def _push_rest(device: StagingDevice, remote_dir: str, f: LocalFile, part: str, offset: int,
               advance: ProgressCallback | None) -> None:
    """The file's bytes from `offset` on, onto its part (which holds the first `offset`).

    Each segment is joined while the next one is pushed (two segment names, used in turn), so
    over a link slower than the device's disk the joins cost no time; joins run one at a time,
    in order, on a thread of their own."""
    mode = 0o755 if f.executable else 0o644
    step = segment_size(f.size)
    if offset == 0 and f.size <= step:
        device.push(f.path, posixpath.join(remote_dir, part), advance, mode=mode)
        return
    joins: dict[str, Future[str]] = {}  # segment name -> its join, the latest
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgepack-join") as joiner:
        for k, start in enumerate(range(offset, f.size, step)):
            n = min(step, f.size - start)
            if start == 0:
                device.push(f.path, posixpath.join(remote_dir, part), advance, mode=mode,
                            length=n)
                continue
            segment = _segment_name(f.rel, k % 2)
            for done in [j for j in joins.values() if j.done()]:
                done.result()  # a join that failed stops the push here
            if segment in joins:
                joins[segment].result()  # its last join has read it
            device.push(f.path, posixpath.join(remote_dir, segment), advance, mode=mode,
                        offset=start, length=n)
            # Appended only onto a part of the size it should have: a join retried after a lost
            # reply, or a part changed meanwhile, fails here rather than corrupting the file.
            joins[segment] = joiner.submit(
                _run, device,
                f"cd {q(remote_dir)} && [ \"$(stat -c %s {q(part)})\" = {start} ] && "
                f"cat {q(segment)} >> {q(part)} && rm -f {q(segment)}",
                f"join {f.rel}'s pieces at byte {start}")
        # The executor waits for the joins queued, also when a push failed: each extends the
        # prefix the next deploy resumes from.
    for join in joins.values():
        join.result()


def _glob_quote(path: str) -> str:
    # find -path takes a pattern: the name matched literally.
    return re.sub(r"([][*?\\])", r"\\\1", path)


def _push_failure(message: str, serial: str, f: LocalFile, need: int) -> str:
    if "No space left" in message or "ENOSPC" in message:
        return (f"{serial}: the device's disk is full while pushing {f.rel} "
                f"({need / 2**20:.1f} MiB to push); free some space on the device and deploy "
                "again")
    return (f"{message}; nothing partial was left under {f.rel}'s real name, so deploying again "
            "resumes where this stopped")


def _check_rel(rel: str) -> None:
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or ".." in parts or "\n" in rel:
        raise EdgepackError(f"refusing to stage {rel!r}: not a plain relative path")


def _run(device: StagingDevice, command: str, what: str, timeout: float = 300) -> str:
    result = device.shell(command, timeout)
    if result.exit_code != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit code {result.exit_code}"
        if "No space left" in reason:
            reason += " (the device's disk is full)"
        raise EdgepackError(f"{device.serial}: could not {what}: {reason}", ExitCode.DEVICE)
    return result.stdout


_DIR_MARK, _STAT_MARK = "::edgepack-dir::", "::edgepack-stat::"


def _survey(device: StagingDevice, dirs: list[tuple[str, list[str]]]
            ) -> list[tuple[dict[str, tuple[str, int, str]], dict[str, tuple[int, str]]]]:
    """Each directory's device-side record and its files' size and mtime, in one round trip."""
    return _parse_survey(device.shell(_survey_command(dirs), 120).stdout, len(dirs))


def _survey_command(dirs: list[tuple[str, list[str]]]) -> str:
    return "; ".join(
        f"echo {_DIR_MARK}; cat {q(posixpath.join(remote_dir, MANIFEST))} 2>/dev/null; "
        f"echo {_STAT_MARK}; ( {_stat_command(remote_dir, rels)} )"
        for remote_dir, rels in dirs)


def _parse_survey(out: str, count: int
                  ) -> list[tuple[dict[str, tuple[str, int, str]], dict[str, tuple[int, str]]]]:
    sections = out.split(_DIR_MARK + "\n")[1:]
    result = []
    for k in range(count):
        text = sections[k] if k < len(sections) else ""
        record_text, _, stat_text = text.partition(_STAT_MARK)
        result.append((_parse_records(record_text), _parse_stat(stat_text)))
    return result


def _parse_records(out: str) -> dict[str, tuple[str, int, str]]:
    records: dict[str, tuple[str, int, str]] = {}
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and len(parts[0]) == 64 and parts[1].isdigit():
            records[parts[3]] = (parts[0], int(parts[1]), parts[2])
    return records


def _write_records(device: StagingDevice, remote_dir: str,
                   records: dict[str, tuple[str, int, str]]) -> None:
    lines = "".join(f"{sha} {size} {mtime} {rel}\n" for rel, (sha, size, mtime)
                    in sorted(records.items()))
    final = posixpath.join(remote_dir, MANIFEST)
    part = final + PART_SUFFIX
    # printf with the text as one quoted argument: no here-doc, works in toybox sh.
    _run(device, f"printf %s {q(lines)} > {q(part)} && mv -f {q(part)} {q(final)}",
         f"record the files in {remote_dir}")


def _stat_command(remote_dir: str, rels: list[str]) -> str:
    # The parts of interrupted pushes too: a part found is a push to resume.
    rels = [*rels, *(_part_name(r) for r in rels if not r.endswith(PART_SUFFIX))]
    # One line per file that exists: size, mtime, then the name exactly as given. %y (not %Y)
    # for the mtime: it has nanoseconds on toybox and coreutils alike, so a file rewritten in
    # the second it was pushed still shows a different time.
    # One stat for all files (it reports the missing ones on stderr and goes on).
    return (f"cd {q(remote_dir)} 2>/dev/null && stat -c '%s %y %n' "
            f"{' '.join(q(r) for r in rels)} 2>/dev/null; true")


def _stat(device: StagingDevice, remote_dir: str, rels: list[str]) -> dict[str, tuple[int, str]]:
    if not rels:
        return {}
    return _parse_stat(device.shell(_stat_command(remote_dir, rels), 120).stdout)


def _parse_stat(out: str) -> dict[str, tuple[int, str]]:
    result = {}
    for line in out.splitlines():
        # "SIZE YYYY-MM-DD HH:MM:SS.NNNNNNNNN +ZZZZ NAME"; the time is kept as one token.
        parts = line.split(" ", 4)
        if len(parts) == 5 and parts[0].isdigit():
            result[parts[4]] = (int(parts[0]), f"{parts[1]}T{parts[2]}{parts[3]}")
    return result


def _sha256sum(device: StagingDevice, remote_dir: str, rels: list[str]) -> dict[str, str]:
    command = f"cd {q(remote_dir)} && sha256sum {' '.join(q(r) for r in rels)} 2>/dev/null; true"
    out = device.shell(command, 600).stdout
    result = {}
    for line in out.splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name:
            result[name] = digest
    return result
