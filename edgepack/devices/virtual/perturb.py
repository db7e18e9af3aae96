"""The perturb runner fault: a device whose kernel for one node computes wrong.

`--runner-fault perturb:NODE:REL` gives the runner a model in which NODE's first output is
multiplied by (1 + REL), every other node exact, as a phone with one faulty kernel would. The
bundle on the device stays as pushed (its sha256 still matches): the runner-fault preload
library (runnerfault.py) also interposes open/open64/openat/openat64/fopen/fopen64, and when a
program named edgepack-runner opens a file named predict.onnx it runs this module's main()
with this Python and this edgepack (its directory on sys.path: the runner's working directory
is the device's, and edgepack may be a checkout rather than installed), MODE PATH CACHE, which
writes the perturbed copy into the device's state directory and prints its path; the runner
gets that file instead. An emulated runner (qemu-user) starts the same x86 helper.

onnxruntime resolves external data against the path it was asked to load, not the file it
read, so the copy keeps pointing at init.bin beside the original predict.onnx: weights are never
copied. A model without NODE (or whose NODE cannot be perturbed) is the user's fault
configuration meeting a model it does not fit, which the device cannot know before a model comes:
the helper prints a runner error document of kind FAULT_MISFIT_KIND ("--runner-fault perturb:
node X is not in BUNDLE") and exits MISFIT_EXIT; the library writes that document as the
runner's report and ends the runner, and the executor maps the kind to bad input (exit 2).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "perturb:"
ENV_PYTHON = "EDGEPACK_VD_PERTURB_PYTHON"
ENV_DIR = "EDGEPACK_VD_PERTURB_DIR"
ENV_PATH = "EDGEPACK_VD_PERTURB_PATH"  # the directory holding this edgepack package
MISFIT_EXIT = 3  # the helper's exit when the fault does not fit the model: its stdout is the
# runner's report (C_SOURCE's perturbed_path); the runner's own model_load exit code


@dataclass(frozen=True)
class Perturb:
    node: str
    rel: float


def is_perturb(mode: str | None) -> bool:
    return bool(mode) and str(mode).startswith(PREFIX)


def parse(mode: str) -> Perturb:
    """perturb:NODE:REL (NODE may itself hold colons: REL is after the last one)."""
    body = mode[len(PREFIX):] if mode.startswith(PREFIX) else mode
    node, sep, rel_text = body.rpartition(":")
    if not sep or not node:
        raise ValueError(f"runner fault {mode!r}: expected perturb:NODE:REL, e.g. "
                         "perturb:/layer1/conv/Conv:0.05")
    try:
        rel = float(rel_text)
    except ValueError:
        raise ValueError(f"runner fault {mode!r}: REL {rel_text!r} is not a number") from None
    if not math.isfinite(rel) or rel == 0 or rel <= -1:
        raise ValueError(f"runner fault {mode!r}: REL must be finite, not 0, and above -1 "
                         "(the output is multiplied by 1 + REL)")
    return Perturb(node, rel)


# Appended to runnerfault's library source: the constructor there decides whether this process
# is the runner meeting the fault, and sets edgepack_vd_perturb_on.
C_SOURCE = r"""
#include <dlfcn.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>

extern char **environ;
static int edgepack_vd_perturb_on = 0;
static __thread int in_perturb = 0;

/* The perturbed copy of `path` when the runner opens a predict.onnx under the perturb fault:
   the helper's printed path in `out`, 1; 0 when the file is not one to perturb; -1 when the
   helper failed (it said why on stderr). When the fault does not fit the model (exit 3), the
   helper's output is the runner's error report: it goes to stdout and the runner ends here. */
static int perturbed_path(const char *path, char *out, size_t size) {
    if (!edgepack_vd_perturb_on || in_perturb || !path) return 0;
    if (strcmp(base_name(path), "predict.onnx") != 0) return 0;
    const char *python = getenv("EDGEPACK_VD_PERTURB_PYTHON");
    const char *dir = getenv("EDGEPACK_VD_PERTURB_DIR");
    const char *mode = getenv("EDGEPACK_VD_RUNNER_FAULT");
    const char *package = getenv("EDGEPACK_VD_PERTURB_PATH");
    if (!python || !dir || !mode || !package) return 0;
    in_perturb = 1;
    int fds[2];
    int result = -1;
    if (pipe(fds) != 0) { in_perturb = 0; return -1; }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    /* The runner's directory is the helper's: edgepack is imported from where the device's
       own is, installed or not. */
    char *argv[] = {(char *)python, "-c",
                    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                    "from edgepack.devices.virtual.perturb import main; "
                    "sys.exit(main(sys.argv[1:]))",
                    (char *)package, (char *)mode, (char *)path, (char *)dir, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, python, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    if (rc == 0) {
        size_t got = 0;
        ssize_t n;
        while (got < size - 1 && (n = read(fds[0], out + got, size - 1 - got)) > 0) got += n;
        out[got] = 0;
        while (got > 0 && (out[got - 1] == '\n' || out[got - 1] == '\r')) out[--got] = 0;
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && got > 0) result = 1;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 3 && got > 0) {
            out[got++] = '\n';
            for (size_t at = 0; at < got;) {
                ssize_t w = write(edgepack_vd_report_fd >= 0 ? edgepack_vd_report_fd : 1,
                                  out + at, got - at);
                if (w <= 0 && errno != EINTR) break;
                if (w > 0) at += (size_t)w;
            }
            _exit(3);
        }
    }
    close(fds[0]);
    in_perturb = 0;
    return result;
}

#define EDGEPACK_OPEN(name, ...)                                                     \
    static int (*real)(__VA_ARGS__) = NULL;                                          \
    if (!real) real = dlsym(RTLD_NEXT, name);

static mode_t open_mode(int flags, va_list ap) {
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
    EDGEPACK_OPEN("open", const char *, int, ...)
    va_list ap; va_start(ap, flags); mode_t m = open_mode(flags, ap); va_end(ap);
    char alt[4096];
    int p = perturbed_path(path, alt, sizeof alt);
    if (p < 0) { errno = EIO; return -1; }
    return real(p ? alt : path, flags, m);
}

int open64(const char *path, int flags, ...) {
    EDGEPACK_OPEN("open64", const char *, int, ...)
    va_list ap; va_start(ap, flags); mode_t m = open_mode(flags, ap); va_end(ap);
    char alt[4096];
    int p = perturbed_path(path, alt, sizeof alt);
    if (p < 0) { errno = EIO; return -1; }
    return real(p ? alt : path, flags, m);
}

int openat(int dirfd, const char *path, int flags, ...) {
    EDGEPACK_OPEN("openat", int, const char *, int, ...)
    va_list ap; va_start(ap, flags); mode_t m = open_mode(flags, ap); va_end(ap);
    char alt[4096];
    int p = perturbed_path(path, alt, sizeof alt);
    if (p < 0) { errno = EIO; return -1; }
    return real(dirfd, p ? alt : path, flags, m);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    EDGEPACK_OPEN("openat64", int, const char *, int, ...)
    va_list ap; va_start(ap, flags); mode_t m = open_mode(flags, ap); va_end(ap);
    char alt[4096];
    int p = perturbed_path(path, alt, sizeof alt);
    if (p < 0) { errno = EIO; return -1; }
    return real(dirfd, p ? alt : path, flags, m);
}

FILE *fopen(const char *path, const char *fmode) {
    EDGEPACK_OPEN("fopen", const char *, const char *)
    char alt[4096];
    int p = perturbed_path(path, alt, sizeof alt);
    if (p < 0) { errno = EIO; return NULL; }
    return ((FILE *(*)(const char *, const char *))real)(p ? alt : path, fmode);
}

FILE *fopen64(const char *path, const char *fmode) {
    EDGEPACK_OPEN("fopen64", const char *, const char *)
    char alt[4096];
    int p = perturbed_path(path, alt, sizeof alt);
    if (p < 0) { errno = EIO; return NULL; }
    return ((FILE *(*)(const char *, const char *))real)(p ? alt : path, fmode);
}
"""


def environment(mark: Path) -> dict[str, str]:
    """What the perturb fault adds to a shell command's environment: the Python that makes the
    perturbed copies, and where it keeps them (the device's state directory, beside `mark`)."""
    return {ENV_PYTHON: sys.executable, ENV_DIR: str(mark.parent / "perturbed"),
            ENV_PATH: str(Path(__file__).resolve().parents[3])}


class PerturbError(Exception):
    pass


def perturb_model(model: Any, spec: Perturb, where: str = "the model") -> Any:
    """`model` with NODE's first output multiplied by (1 + REL), the Mul placed right after
    NODE so the graph stays in topological order. `where` names the model in errors."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    index = find_node(graph, spec.node)
    if index is None:
        # Short: the message travels in the runner's report, which the library holds in 4 KB.
        names = [(n.name or f"{n.op_type}#{i}")[:60] for i, n in enumerate(graph.node)]
        hint = f" (its nodes: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
        raise PerturbError(f"--runner-fault perturb: node {spec.node!r} is not in "
                           f"{where}{hint}")
    node = graph.node[index]
    if not node.output or not node.output[0]:
        raise PerturbError(f"--runner-fault perturb: node {spec.node!r} of {where} has no "
                           "output")
    target = node.output[0]
    elem = _elem_type(model, target)
    np_type = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
               onnx.TensorProto.FLOAT16: np.float16}.get(elem)
    if np_type is None:
        raise PerturbError(f"--runner-fault perturb: node {spec.node!r}'s output {target!r} in "
                           f"{where} is not float32, float64 or float16; only those can be "
                           "perturbed")
    raw = f"{target}.edgepack_unperturbed"
    factor = f"{target}.edgepack_perturb_factor"
    node.output[0] = raw
    label = node.name or f"{node.op_type}#{index}"
    graph.initializer.append(numpy_helper.from_array(np.array(1 + spec.rel, np_type), factor))
    graph.node.insert(index + 1, helper.make_node("Mul", [raw, factor], [target],
                                                  name=f"{label}.edgepack_perturb"))
    return model


def find_node(graph: Any, node: str) -> int | None:
    """The index of the node named `node`, or of the unnamed node `node` calls OP#INDEX (how
    `edgepack diagnose` names a node without a name: many converters leave them all unnamed)."""
    index = next((i for i, n in enumerate(graph.node) if n.name == node), None)
    if index is not None:
        return index
    op, sep, number = node.rpartition("#")
    if sep and number.isdigit() and int(number) < len(graph.node):
        candidate = graph.node[int(number)]
        if not candidate.name and candidate.op_type == op:
            return int(number)
    return None


def _elem_type(model: Any, name: str) -> int:
    import onnx

    for group in (model.graph.output, model.graph.value_info):
        for vi in group:
            if vi.name == name and vi.type.tensor_type.elem_type:
                return int(vi.type.tensor_type.elem_type)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a model inference cannot type: assume float32
        return onnx.TensorProto.FLOAT
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name == name and vi.type.tensor_type.elem_type:
            return int(vi.type.tensor_type.elem_type)
    return onnx.TensorProto.FLOAT


def perturbed_copy(mode: str, source: Path, cache: Path) -> Path:
    """The perturbed copy of `source`, made once per content and mode (a deploy runs the
    runner once per input set), written under a temporary name and renamed."""
    import onnx

    spec = parse(mode)
    data = source.read_bytes()
    digest = hashlib.sha256(data + b"\0" + mode.encode()).hexdigest()[:24]
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{digest}.onnx"
    if target.is_file():
        return target
    model = onnx.ModelProto()
    model.ParseFromString(data)
    # The bundle's name: the runner loads BUNDLE_DIR/predict.onnx.
    perturbed = perturb_model(model, spec, f"bundle {source.parent.name}")
    staged = cache / f".{digest}.{os.getpid()}"
    staged.write_bytes(perturbed.SerializeToString())
    os.replace(staged, target)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: perturb MODE PREDICT CACHE_DIR", file=sys.stderr)
        return 2
    mode, source, cache = argv
    try:
        path = perturbed_copy(mode, Path(source), Path(cache))
    except PerturbError as exc:
        import json

        from edgepack.runner.result import FAULT_MISFIT_KIND, RUNNER_SCHEMA

        print(f"edgepack virtual device: {exc}", file=sys.stderr)
        print(json.dumps({"schema": RUNNER_SCHEMA, "status": "error",
                          "error": {"kind": FAULT_MISFIT_KIND, "message": str(exc)},
                          "exit_code": MISFIT_EXIT}))
        return MISFIT_EXIT
    except ValueError as exc:
        print(f"edgepack virtual device: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"edgepack virtual device: perturb: {source}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    print(path)
    return 0


