"""A lock held on the device itself, so two deploys to one device never interleave, whichever
machines they come from (a lab's hosts share phones through remote adb servers).

The lock is the directory `.lock`: who took it (`owner`: a token, the host name and pid), since
and until when by the device's clock (`since`, `until`), and an empty `token.<token>` naming this
taking of it. Each step is one device shell command, for mksh and toybox as for a POSIX sh:

- Taking: the directory is made whole beside the lock (`.lock-new.<token>`) and renamed to
  `.lock` only when there is none, so nobody ever sees a `.lock` without its lease. A `.lock`
  made by another deploy between that check and the rename makes the rename fail (rename(2)
  replaces no directory that has files) or, as mv does with a directory for a target, moves ours
  *into* it: either way `.lock` does not have our token file, which is what decides, and what mv
  moved in is taken out again.
- Taking over (a lease that ran out by the device's clock, a holder that was a process of this
  machine and is gone, --break-lock) and releasing go through a claim: `mkdir .lock/.claim`,
  which one deploy alone can make. The claimant checks, holding the claim, that `.lock` is still
  the one it judged (by its token file; by the owner's token for a lock an older edgepack made,
  which has none), and only then moves it aside and removes it; otherwise it drops the claim and
  backs off. So two deploys taking over one holder never both win, and a holder whose lock was
  taken over never removes its successor's.
- A `.lock` without a lease (an older edgepack's, caught between its mkdir and its lease) is
  held, not lapsed: only --break-lock, or its holder's death seen from this machine, takes it.

The locks this process holds are in a registry, so an interrupted bench, whose deploys run in
worker threads that a KeyboardInterrupt never reaches, can release them (`release_held_locks`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import socket
import threading
import weakref
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from edgepack.devices.base import Device, ShellResult
from edgepack.errors import EdgepackError, ExitCode

RELEASE_TIMEOUT_S = 60.0
_THEN_MARK = "::edgepack-then::"
_LOST_MARK = "::edgepack-lock-lost::"


@dataclass(frozen=True)
class Holder:
    token: str
    host: str
    pid: int | None
    held_s: int | None
    lock_id: str = ""  # what a takeover names to take exactly this lock (see _take)
    claimed: bool = False  # another deploy was taking it over or releasing it

    def describe(self) -> str:
        who = f"{self.host} pid {self.pid}" if self.pid is not None else self.host
        return who + (f" for {self.held_s} s" if self.held_s is not None else "")

    def is_dead_here(self) -> bool:
        if self.host != socket.gethostname() or self.pid is None:
            return False
        if self.pid == os.getpid():
            return not is_held(self.token)
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

    def __init__(self, token: str, root: str, then_output: str | None = None) -> None:
        self.token = token
        self.root = root
        self.then_output = then_output
        self._release_commands: list[str] = []

    def on_release(self, command: str) -> None:
        self._release_commands.append(command)

    def guard(self, command: str) -> str:
        """`command`, run only while the device still has this lock: a lock taken over (its lease
        ran out, --break-lock) or released by an interrupt leaves the device to its new holder,
        and what its former holder would still have done there (a run that makes scratch) does
        not happen. check_guard() tells the refusal apart."""
        mine = shlex.quote(f"{lock_path(self.root)}/token.{self.token}")
        return f"{{ [ -e {mine} ] || {{ echo {_LOST_MARK}; exit 3; }}; }} && {command}"

    def check_guard(self, serial: str, result: ShellResult, what: str) -> None:
        if result.stdout.startswith(_LOST_MARK):
            raise EdgepackError(
                f"{serial}: this deploy no longer holds the device lock, so {what} did not run "
                "(another deploy took the lock over: --break-lock, or the lease ran out; or "
                "edgepack was interrupted); deploy again",
                ExitCode.DEVICE,
            )


# ---------------------------------------------------------------------------- the registry


@dataclass
class _Entry:
    device: Device
    held: HeldLock
    thread: threading.Thread = field(default_factory=threading.current_thread)


_registry_guard = threading.Lock()
_held: dict[str, _Entry] = {}  # token -> lock this process holds, or is taking right now
# Threads whose locks an interrupt released under them (objects, not idents: idents are reused).
_abandoned: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def is_held(token: str) -> bool:
    """Whether this process holds (or is taking) the lock with that token: a holder line naming
    this process with a token not held is a finished deploy of it (tests run many in one)."""
    with _registry_guard:
        return token in _held


def _pop(token: str) -> _Entry | None:
    with _registry_guard:
        return _held.pop(token, None)


def release_held_locks(threads: Collection[threading.Thread] | None = None,
                       timeout: float = 15.0) -> int:
    """Release, at once and in parallel, the locks held by `threads` (every thread's if None):
    an interrupted bench's workers are still inside their deploys, where no KeyboardInterrupt
    reaches them. Each release is the usual one (the run's scratch first, then the lock, only
    if it is still this deploy's); a lock one of `threads` takes afterwards is released as soon
    as it is taken. Returns how many locks were released."""
    with _registry_guard:
        tokens = [t for t, e in _held.items() if threads is None or e.thread in threads]
        entries = [_held.pop(t) for t in tokens]
        if threads is not None:
            _abandoned.update(threads)
    workers = [threading.Thread(target=_release, args=(e.device, e.held, timeout), daemon=True,
                                name=f"release-{e.device.serial}") for e in entries]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout + 5)
    return len(entries)


# ---------------------------------------------------------------------------- take and release


@contextlib.contextmanager
def device_lock(device: Device, root: str, lease_s: float, break_lock: bool = False,
                then: str | None = None) -> Iterator[HeldLock]:
    token = secrets.token_hex(8)
    held = HeldLock(token, root)
    # In the registry before the take: an interrupt that lands during it releases it too.
    with _registry_guard:
        _held[token] = _Entry(device, held)
    taken = False
    try:
        holder, then_output = _take(device, root, token, lease_s, None, then)
        if holder is not None and (break_lock or holder.is_dead_here()):
            holder, then_output = _take(device, root, token, lease_s, holder.lock_id, then)
        if holder is not None:
            raise EdgepackError(_locked_message(device.serial, root, holder), ExitCode.DEVICE)
        taken = True
        if threading.current_thread() in _abandoned:
            raise EdgepackError(f"{device.serial}: interrupted", ExitCode.DEVICE)
    except BaseException as exc:
        # Interrupted during the take, the lock may have been taken on the device all the same.
        maybe_taken = taken or not isinstance(exc, EdgepackError)
        if _pop(token) is not None and maybe_taken:
            _release(device, held, RELEASE_TIMEOUT_S)
        raise
    held.then_output = then_output
    try:
        yield held
    finally:
        if _pop(token) is not None:  # else an interrupt released it already
            _release(device, held, RELEASE_TIMEOUT_S)


def _locked_message(serial: str, root: str, holder: Holder) -> str:
    message = (f"{serial} is locked by another deploy ({holder.describe()}); wait for it to "
               "finish, or pass --break-lock if that deploy is gone")
    if holder.claimed:
        message += (f" (a takeover or release of the lock was under way; if this persists, it "
                    f"was cut off: remove the lock with `adb -s {serial} shell rm -rf "
                    f"{lock_path(root)}`)")
    return message


def _release(device: Device, held: HeldLock, timeout: float) -> None:
    command = "".join(f"{c}; " for c in held._release_commands)
    # Only our own lock is removed: one taken over belongs to someone else now.
    command += _functions(held.root, held.token) + f"ep_claim {held.token}; true"
    with contextlib.suppress(EdgepackError):  # a device that is gone keeps its lock to lapse
        device.shell(command, timeout)


def _functions(root: str, token: str) -> str:
    """The shell functions of the lock, for a command of `token`'s deploy. Variables and
    functions carry an ep_ prefix: the command a take runs next shares the shell."""
    r = root.rstrip("/") or "/"
    return (
        f"ep_r={shlex.quote(r)}; ep_l=\"$ep_r/.lock\"; ep_n=\"$ep_r/.lock-new.{token}\"; "
        f"ep_d=\"$ep_r/.lock-dead.{token}\"; ep_t=token.{token}\n"
        # What a takeover names: the token file's name, or an older edgepack's owner token.
        "ep_id() { set -- \"$ep_l\"/token.*; if [ -e \"$1\" ]; then "
        "printf '%s\\n' \"${1##*/token.}\"; else "
        "printf 'legacy:%s\\n' \"$(cut -d' ' -f1 \"$ep_l/owner\" 2>/dev/null)\"; fi; }\n"
        # Removes the lock if it is still the one named $1; one claimant alone gets this far.
        "ep_claim() { mkdir \"$ep_l/.claim\" 2>/dev/null || return 1\n"
        "  if [ \"$(ep_id)\" != \"$1\" ]; then rmdir \"$ep_l/.claim\"; return 1; fi\n"
        "  rm -rf \"$ep_d\"\n"
        "  mv \"$ep_l\" \"$ep_d\" || { rmdir \"$ep_l/.claim\"; return 1; }\n"
        "  rm -rf \"$ep_d\"; }\n"
    )


def take_command(root: str, token: str, owner: str, lease_s: float,
                 replace: str | None = None, then: str | None = None) -> str:
    """The one shell command that takes the lock for `token` (taking over the lock named
    `replace`, or any lapsed one). It prints `acquired`, then what `then` printed after a mark;
    or `held` and the holder: lock id, owner line, since, the device's now, `claimed` or not."""
    acquire = (
        "ep_acquire() { rm -rf \"$ep_n\" && mkdir \"$ep_n\" && "
        f"printf '%s\\n' {shlex.quote(owner)} > \"$ep_n/owner\" && "
        "printf '%s\\n' \"$ep_now\" > \"$ep_n/since\" && "
        f"printf '%s\\n' \"$((ep_now + {int(lease_s)}))\" > \"$ep_n/until\" && "
        ": > \"$ep_n/$ep_t\" || { rm -rf \"$ep_n\"; return 2; }\n"
        "  [ -e \"$ep_l\" ] || mv \"$ep_n\" \"$ep_l\" 2>/dev/null\n"
        "  [ -e \"$ep_l/$ep_t\" ] && return 0\n"
        "  rm -rf \"$ep_n\"\n"
        "  if [ -e \"$ep_l/${ep_n##*/}\" ]; then rm -rf \"$ep_l/${ep_n##*/}\"; fi\n"
        "  return 1; }\n"
    )
    script = (
        _functions(root, token) + acquire
        + "ep_now=$(date +%s) && mkdir -p \"$ep_r\" || exit 1\n"
        "ep_acquire; ep_s=$?\n"
        "if [ \"$ep_s\" = 1 ]; then\n"
        "  ep_was=$(ep_id); ep_until=$(head -n 1 \"$ep_l/until\" 2>/dev/null)\n"
        "  case \"$ep_until\" in ''|*[!0-9]*) ep_until= ;; esac\n"
        f"  if [ \"$ep_was\" = {shlex.quote(replace or '-')} ] || "
        "{ [ -n \"$ep_until\" ] && [ \"$ep_until\" -lt \"$ep_now\" ]; }; then\n"
        "    ep_claim \"$ep_was\" && { ep_acquire; ep_s=$?; }\n"
        "  fi\n"
        # Released between our look and now: it is free.
        "  if [ \"$ep_s\" = 1 ] && [ ! -e \"$ep_l\" ]; then ep_acquire; ep_s=$?; fi\n"
        "fi\n"
        "if [ \"$ep_s\" = 1 ]; then\n"
        "  ep_c=; [ -e \"$ep_l/.claim\" ] && ep_c=claimed\n"
        "  printf '%s\\n' held \"$(ep_id)\" \"$(head -n 1 \"$ep_l/owner\" 2>/dev/null)\" "
        "\"$(head -n 1 \"$ep_l/since\" 2>/dev/null)\" \"$ep_now\" \"$ep_c\"; exit 0\n"
        "fi\n"
        "[ \"$ep_s\" = 0 ] || { echo \"cannot write $ep_n\" >&2; exit 1; }\n"
        "echo acquired\n"
    )
    if then is not None:
        # Whatever `then` does, the lock is taken: its status must not read as a failed take.
        script += f"echo {_THEN_MARK}\n{{ {then}\n}}\nexit 0\n"
    return script


def _take(device: Device, root: str, token: str, lease_s: float,
          replace: str | None, then: str | None) -> tuple[Holder | None, str | None]:
    """Take the lock: (None, what `then` printed) when taken, else (who holds it, None)."""
    owner = f"{token} {socket.gethostname()} {os.getpid()}"
    command = take_command(root, token, owner, lease_s, replace, then)
    result = device.shell(command, 60 if then is None else 180)
    taken_text, marked, then_output = result.stdout.partition(_THEN_MARK + "\n")
    lines = taken_text.strip("\n").split("\n")
    if result.exit_code != 0 or not lines or lines[0] not in ("held", "acquired"):
        detail = (result.stderr or result.stdout).strip() or f"exit code {result.exit_code}"
        raise EdgepackError(f"{device.serial}: could not take the device lock in {root}: "
                            f"{detail}", ExitCode.DEVICE)
    if lines[0] == "acquired":
        return None, then_output if marked else None
    lock_id, owner_line, since, now, claimed = (lines[1:] + [""] * 5)[:5]
    owner_fields = owner_line.split()
    pid = owner_fields[-1] if len(owner_fields) >= 3 else ""
    return Holder(
        token=owner_fields[0] if owner_fields else "",
        host=" ".join(owner_fields[1:-1]) if len(owner_fields) >= 3 else "unknown",
        pid=int(pid) if pid.isdigit() else None,
        held_s=int(now) - int(since) if since.isdigit() and now.isdigit() else None,
        lock_id=lock_id,
        claimed=claimed == "claimed",
    ), None
