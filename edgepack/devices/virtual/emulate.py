"""An emulated ARM device: the shell runs every aarch64 program it starts under qemu-user.

No binfmt_misc handler may be registered (the kernel is shared with other work), so the kernel
cannot run an aarch64 ELF, and a shell that gets ENOEXEC would read the binary as a script.
Instead every shell command gets a small preloaded library that wraps execve, execv, execvp and
execvpe in the x86 programs of the userland (mksh, toybox and its `timeout`, dash, coreutils):
when the file about to run is a 64-bit little-endian aarch64 ELF, it execs the device's
`qemu-exec` script instead, which runs the program under qemu-aarch64 with the aarch64 sysroot,
in a private mount namespace where an ARM /proc/cpuinfo is bound (edgepack.runner.qemu: ONNX
Runtime's CPU detection crashes on the host's x86 one). So `cd DIR && ./edgepack-runner`,
absolute paths, `timeout ... edgepack-runner` and `taskset` all work, whoever starts the
program. A statically linked x86 program escapes the wrapper (none of the userland's is), and so
does posix_spawn, which no shell uses to run a command.

The runner faults and the slowdown knob are preloaded libraries too: x86 ones cannot load into
an aarch64 process, so the device builds them for aarch64 as well (with the cross gcc the
linux-aarch64 runner is built with) and hands them to qemu as the guest's LD_PRELOAD; the
host's LD_PRELOAD never reaches the guest.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from edgepack.runner import qemu

ABI = "arm64-v8a"
RUNNER_TARGET = "linux-aarch64"  # glibc aarch64 binaries, run with the aarch64 sysroot
CROSS_CC = "aarch64-linux-gnu-gcc"
ENV_EXEC = "EDGEPACK_VD_QEMU_EXEC"  # the qemu-exec script the hook runs guest programs with
ENV_GUEST_PRELOAD = "EDGEPACK_VD_GUEST_PRELOAD"  # aarch64 libraries the guest preloads
DESCRIPTION = "aarch64 emulated by qemu-user on x86_64"

_HOOK_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;
typedef int (*execve_fn)(const char *, char *const[], char *const[]);

static int real_execve(const char *p, char *const a[], char *const e[]) {
    execve_fn fn = (execve_fn)dlsym(RTLD_NEXT, "execve");
    return fn(p, a, e);
}

static int real_execvpe(const char *f, char *const a[], char *const e[]) {
    execve_fn fn = (execve_fn)dlsym(RTLD_NEXT, "execvpe");
    return fn(f, a, e);
}

/* EI_CLASS 64-bit, EI_DATA little-endian, e_machine EM_AARCH64 (183). */
static int is_guest(const char *path) {
    unsigned char h[20];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, h, sizeof h);
    close(fd);
    return n == (ssize_t)sizeof h && memcmp(h, "\177ELF", 4) == 0 && h[4] == 2 && h[5] == 1
        && h[18] == 183 && h[19] == 0;
}

/* qemu-exec PATH ARGV0 ARG...: ARGV0 travels apart, as the guest must see its own. */
static int guest_exec(const char *path, char *const argv[], char *const envp[]) {
    const char *wrapper = getenv("EDGEPACK_VD_QEMU_EXEC");
    if (!wrapper || !*wrapper) { errno = ENOEXEC; return -1; }
    size_t argc = 0;
    while (argv && argv[argc]) argc++;
    char **args = calloc(argc + 4, sizeof *args);
    if (!args) { errno = ENOMEM; return -1; }
    args[0] = (char *)wrapper;
    args[1] = (char *)path;
    args[2] = (char *)(argc ? argv[0] : path);
    for (size_t i = 1; i < argc; i++) args[i + 2] = argv[i];
    int r = real_execve(wrapper, args, envp);
    int saved = errno;
    free(args);
    errno = saved;
    return r;
}

int execve(const char *path, char *const argv[], char *const envp[]) {
    if (is_guest(path)) return guest_exec(path, argv, envp);
    return real_execve(path, argv, envp);
}

int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

/* The PATH search only finds what execvp would run; anything but an aarch64 program goes to
   libc's own execvpe, with its ENOEXEC-means-script rule. */
int execvpe(const char *file, char *const argv[], char *const envp[]) {
    if (file && *file && !strchr(file, '/')) {
        const char *p = getenv("PATH");
        if (!p) p = "/bin:/usr/bin";
        size_t flen = strlen(file);
        while (1) {
            const char *end = strchr(p, ':');
            size_t dlen = end ? (size_t)(end - p) : strlen(p);
            char buf[4096];
            if (dlen + flen + 2 < sizeof buf) {
                size_t at = 0;
                if (dlen) { memcpy(buf, p, dlen); buf[dlen] = '/'; at = dlen + 1; }
                memcpy(buf + at, file, flen + 1);  /* an empty entry is the current directory */
                struct stat st;
                if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0) {
                    if (is_guest(buf)) return guest_exec(buf, argv, envp);
                    break;
                }
            }
            if (!end) break;
            p = end + 1;
        }
    } else if (file && is_guest(file)) {
        return guest_exec(file, argv, envp);
    }
    return real_execvpe(file, argv, envp);
}

int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }
"""

_QEMU_EXEC = """\
#!/bin/sh
# qemu-exec of the edgepack virtual device: runs the aarch64 program $1 (its argv[0] in $2)
# under qemu-user, with an ARM /proc/cpuinfo bound in a mount namespace of its own.
PATH={host_path}; export PATH
exe=$1 argv0=$2
shift 2
if [ -n "${{{guest_env}-}}" ]; then
  set -- -E "LD_PRELOAD=${guest_env}" "$exe" "$@"
else
  set -- -U LD_PRELOAD "$exe" "$@"
fi
exec {unshare} sh -c {inner} sh {cpuinfo} -0 "$argv0" "$@"
"""

_UNAME = """\
#!/bin/sh
# uname of the emulated device: the machine is the one its programs run as (qemu-user's
# uname answers aarch64 to them too).
PATH={host_path}; export PATH
out=$({real_uname} "$@") || exit
printf '%s\\n' "$out" | sed 's/x86_64/aarch64/g'
"""


class EmulationUnavailable(RuntimeError):
    """What is missing for --emulate, said so that the user can install it."""


def unavailable_reason() -> str | None:
    if shutil.which(CROSS_CC) is None and shutil.which("cc") is None:
        return "a C compiler (cc) is needed to build the exec hook"
    return qemu.unavailable_reason()


def hook_library() -> Path:
    """The x86 exec hook, built once per machine and source version."""
    from edgepack.devices.virtual.runnerfault import build_preload

    return build_preload(_HOOK_SOURCE, "vd-emulate-exec")


def guest_library(source: str, stem: str) -> Path:
    """An aarch64 build of a preload library (a runner fault's, the slowdown's)."""
    from edgepack.devices.virtual.runnerfault import RunnerFaultUnavailable, build_preload

    if shutil.which(CROSS_CC) is None:
        raise RunnerFaultUnavailable(
            f"on an emulated device the runner faults need {CROSS_CC} (apt-get install "
            "gcc-aarch64-linux-gnu) to build their aarch64 library")
    return build_preload(source, f"{stem}-aarch64", compiler=CROSS_CC)


def install(state_dir: Path, bin_dir: Path, toybox: str | None) -> Path:
    """Write qemu-exec into the state directory and the device's uname into its bin/; returns
    qemu-exec's path."""
    q = shlex.quote
    host_path = q(os.environ.get("PATH") or "/usr/bin:/bin")
    inner = f'mount --bind "$1" /proc/cpuinfo && shift && exec {qemu.QEMU} -L {qemu.SYSROOT} "$@"'
    script = _QEMU_EXEC.format(
        host_path=host_path, guest_env=ENV_GUEST_PRELOAD,
        unshare=" ".join(q(a) for a in qemu.unshare_prefix()), inner=q(inner),
        cpuinfo=q(str(qemu.cpuinfo_file())))
    real_uname = f"{q(toybox)} uname" if toybox else q(shutil.which("uname") or "/bin/uname")
    path = state_dir / "qemu-exec"
    _write_script(path, script)
    _write_script(bin_dir / "uname", _UNAME.format(host_path=host_path, real_uname=real_uname))
    return path


def _write_script(path: Path, text: str) -> None:
    # Under a temporary name: bin/uname may be a link to toybox, which must not be written.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.write_text(text, "utf-8")
    tmp.chmod(0o755)
    os.replace(tmp, path)


def props(model: str) -> dict[str, str]:
    """What an emulated device says of itself: the Linux aarch64 runner (it runs glibc
    programs with the aarch64 sysroot, not Android's bionic ones), and that it is emulated, in
    the model name too, which every table and report shows beside its timings."""
    return {"ro.edgepack.runner_target": RUNNER_TARGET, "ro.edgepack.emulated": DESCRIPTION,
            "ro.product.model": f"{model} ({DESCRIPTION})"}
