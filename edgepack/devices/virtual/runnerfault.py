"""The runner faults: a preloaded library that makes edgepack-runner crash, hang, or compute one
node wrong (perturb:NODE:REL, edgepack.devices.virtual.perturb).

A shell command run while the fault is on gets LD_PRELOAD with this small library. Its
constructor runs in every dynamically linked program the command starts and does nothing unless
the program is named edgepack-runner; the runner then crashes with SIGSEGV or hangs until
killed, before its main() runs. So the runner binary on the device stays as pushed (its sha256
still matches), and however the command starts it (absolute path, `cd && ./edgepack-runner`,
under `timeout`, `env`, `sh -c`), the fault applies, with no race. A statically linked runner,
or a command that clears LD_PRELOAD, escapes it. Building the library needs a C compiler (cc or
gcc), which building the runner needs anyway.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from edgepack.devices.virtual import perturb

ENV_MODE = "EDGEPACK_VD_RUNNER_FAULT"
ENV_MARK = "EDGEPACK_VD_RUNNER_FAULT_MARK"
ENV_ONCE = "EDGEPACK_VD_RUNNER_FAULT_ONCE"

# What every preload library of the virtual device uses to act on the runner alone (the faults
# here, the slowdown knob): the program named edgepack-runner, by its executable or by the name
# it was started as. Needs _GNU_SOURCE, errno.h, string.h and unistd.h included before it.
RUNNER_ONLY_C = r"""
static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int is_edgepack_runner(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 0;
    exe[n] = 0;
    return strcmp(base_name(exe), "edgepack-runner") == 0 ||
           strcmp(program_invocation_short_name, "edgepack-runner") == 0;
}
"""

_SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

""" + RUNNER_ONLY_C + r"""

static void say(const char *text) {
    ssize_t ignored = write(2, text, strlen(text));
    (void)ignored;
}

static int edgepack_vd_perturb_on; /* perturb.py's interposers read it */
/* The runner's stdout as it started: its main() moves fd 1 to stderr and keeps the report's
   channel on a dup, which a perturb fault that does not fit the model writes its report to. */
static int edgepack_vd_report_fd = -1;

__attribute__((constructor)) static void edgepack_vd_runner_fault(void) {
    const char *mode = getenv("EDGEPACK_VD_RUNNER_FAULT");
    if (!mode || !*mode) return;
    if (!is_edgepack_runner()) return;
    const char *mark = getenv("EDGEPACK_VD_RUNNER_FAULT_MARK");
    if (mark && *mark) {
        int fd = open(mark, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0) close(fd);
        else if (errno == EEXIST && getenv("EDGEPACK_VD_RUNNER_FAULT_ONCE")) return;
    }
    if (strncmp(mode, "perturb:", 8) == 0) {
        edgepack_vd_perturb_on = 1;
        edgepack_vd_report_fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
        return;
    }
    if (strcmp(mode, "crash") == 0) {
        say("edgepack virtual device: injected runner crash (SIGSEGV)\n");
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
        _exit(139);
    }
    if (strcmp(mode, "hang") == 0) {
        say("edgepack virtual device: injected runner hang\n");
        for (;;) pause();
    }
}
"""

_SOURCE += perturb.C_SOURCE

_lock = threading.Lock()


class RunnerFaultUnavailable(RuntimeError):
    pass


def library_path() -> Path:
    """The compiled library, built once per machine and source version, in a private cache."""
    return build_preload(_SOURCE, "vd-runner-fault")


def build_preload(source: str, stem: str, compiler: str | None = None) -> Path:
    """A preload library built from C `source` once per machine and source version, cached
    (the runner faults' and the slowdown knob's, edgepack.devices.virtual.slowdown).
    `compiler`: a cross compiler instead of cc (an emulated device's aarch64 builds; the stem
    then names the architecture, as the cache keys on stem and source alone)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    with _lock:
        cache = _cache_dir()
        target = cache / f"{stem}-{digest}.so"
        if target.is_file():
            return target
        compiler = shutil.which(compiler) if compiler else (shutil.which("cc")
                                                            or shutil.which("gcc"))
        if compiler is None:
            raise RunnerFaultUnavailable(
                "the runner faults need a C compiler (cc or gcc) to build their preload library"
            )
        with tempfile.TemporaryDirectory(prefix="vd-fault-") as tmp:
            src = Path(tmp) / "fault.c"
            src.write_text(source, "utf-8")
            out = Path(tmp) / "fault.so"
            proc = subprocess.run(
                [compiler, "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-ldl"],
                capture_output=True, text=True, timeout=120,
            )
            if proc.returncode != 0:
                raise RunnerFaultUnavailable(
                    f"building the {stem} library failed: {proc.stderr.strip()[:500]}"
                )
            # Another process may build the same file at the same moment: replace atomically.
            staged = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.copyfile(out, staged)
            os.replace(staged, target)
        return target


def _cache_dir() -> Path:
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgepack"
    try:
        home_cache.mkdir(parents=True, exist_ok=True)
        return home_cache
    except OSError:  # a read-only home in CI
        fallback = Path(tempfile.gettempdir()) / f"edgepack-{os.getuid()}"
        fallback.mkdir(mode=0o700, exist_ok=True)
        return fallback


def environment(lib: Path, mode: str, once: bool, mark: Path,
                base_preload: str | None) -> dict[str, str]:
    """What to add to a shell command's environment so that the fault applies.

    `lib` must be a path without spaces or colons (LD_PRELOAD splits at them): the device
    links the cached library into its state directory for that.
    """
    preload = f"{lib} {base_preload}" if base_preload else str(lib)
    env = {"LD_PRELOAD": preload, ENV_MODE: mode, ENV_MARK: str(mark)}
    if once:
        env[ENV_ONCE] = "1"
    if perturb.is_perturb(mode):
        env.update(perturb.environment(mark))
    return env
