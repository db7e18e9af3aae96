"""The drift knob: from SECONDS after the device started, its runner runs FACTOR times slower.

A preloaded library (built and cached as the runner faults' is, edgepack.devices.virtual.
runnerfault) wraps clock_gettime in a program named edgepack-runner: once the moment has come,
each CLOCK_MONOTONIC read first waits (FACTOR - 1) times the time since the thread's previous
read, then reads the clock; the wait sleeps, but for its last SPIN_S, which it spins, so that
a small factor (1.02) is as exact as a large one. The runner times an inference between two
reads, so every inference really takes FACTOR times as long on the wall clock, and the runner
measures exactly that; the same holds for session creation, the warm-up and whatever
onnxruntime times itself.

Why a stretch by sleeping rather than a CPU-burning sibling pinned to the runner's CPU (what a
phone's background job does): a burner's effect on a *median* depends on the scheduler's slice
against the iteration's length (iterations shorter than a slice mostly run untouched, so the
median barely moves) and on whatever else loads the host (the virtual device runs on a shared
CI machine), while it takes a whole core from everyone. The wait slows every iteration by the
factor asked for, costs little CPU (a spin of at most SPIN_S a read), and is the same on a
quiet and a busy host; a drift test can then say exactly what it injected. Only the runner is
slowed (the adb services, the shell and the transfers are not), and the runner binary on the
device stays as pushed.
"""

from __future__ import annotations

import math
from pathlib import Path

from edgepack.devices.virtual.runnerfault import RUNNER_ONLY_C, build_preload

ENV_AT = "EDGEPACK_VD_SLOWDOWN_AT"  # the moment (CLOCK_REALTIME, seconds) the slowdown starts
ENV_FACTOR = "EDGEPACK_VD_SLOWDOWN_FACTOR"
# One read-to-read interval is stretched by at most this much: a runner that waited on
# something long between two reads is not put to sleep for minutes.
MAX_SLEEP_S = 30
# The last this much of each stretch is spun, not slept, so a stretch is exact to a few
# microseconds however small the factor (a sleep overshoots by the timer slack).
SPIN_S = 200e-6

_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_fn)(clockid_t, struct timespec *);
static clock_fn real_clock;
static int active;
static double start_at, factor;
static __thread double last = -1.0;

static double seconds(const struct timespec *t) { return t->tv_sec + t->tv_nsec / 1e9; }

""" + RUNNER_ONLY_C + r"""

__attribute__((constructor)) static void edgepack_vd_slowdown(void) {
    real_clock = (clock_fn)dlsym(RTLD_NEXT, "clock_gettime");
    const char *at = getenv("EDGEPACK_VD_SLOWDOWN_AT");
    const char *f = getenv("EDGEPACK_VD_SLOWDOWN_FACTOR");
    if (!real_clock || !at || !f) return;
    if (!is_edgepack_runner()) return;
    start_at = strtod(at, NULL);
    factor = strtod(f, NULL);
    active = factor > 1.0;
}

int clock_gettime(clockid_t id, struct timespec *tp) {
    if (!real_clock) real_clock = (clock_fn)dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real_clock(id, tp);
    if (rc != 0 || !active || id != CLOCK_MONOTONIC) return rc;
    struct timespec wall;
    real_clock(CLOCK_REALTIME, &wall);
    double now = seconds(tp);
    if (seconds(&wall) >= start_at && last >= 0) {
        double extra = (factor - 1.0) * (now - last);
        if (extra > MAX_SLEEP_S) extra = MAX_SLEEP_S;
        if (extra > 0) {
            /* Sleep all but the last SPIN_S, then spin to the moment: a sleep overshoots by
               the timer slack (50 us by default), which for a small factor is many times the
               stretch asked for and would make a 1.02 knob a 5x one. */
            double until = now + extra;
            if (extra > SPIN_S) {
                double nap = extra - SPIN_S;
                struct timespec want = {(time_t)nap, (long)((nap - (time_t)nap) * 1e9)};
                while (nanosleep(&want, &want) != 0 && errno == EINTR) {}
            }
            do {
                rc = real_clock(id, tp);
                now = seconds(tp);
            } while (rc == 0 && now < until);
        }
    }
    last = now;
    return rc;
}
""".replace("MAX_SLEEP_S", str(MAX_SLEEP_S)).replace("SPIN_S", repr(SPIN_S))


def parse(text: str) -> tuple[float, float]:
    """`SECONDS:FACTOR` -> (seconds, factor); ValueError says what is wrong."""
    seconds, sep, factor = text.partition(":")
    try:
        s, f = float(seconds), float(factor)
    except ValueError:
        s = f = math.nan
    if not sep or not math.isfinite(s) or not math.isfinite(f):
        raise ValueError(f"--slowdown-after {text!r}: expected SECONDS:FACTOR, e.g. 30:1.5")
    if s < 0 or f < 1 or f > 100:
        raise ValueError(f"--slowdown-after {text!r}: SECONDS must be >= 0 and FACTOR from 1 "
                         "to 100")
    return s, f


def library_path() -> Path:
    return build_preload(_SOURCE, "vd-runner-slowdown")


def environment(lib: Path, start_at: float, factor: float,
                base_preload: str | None) -> dict[str, str]:
    """What a shell command's environment gets while the knob is set (`lib`: a path without
    spaces or colons, as for the runner fault)."""
    preload = f"{lib} {base_preload}" if base_preload else str(lib)
    return {"LD_PRELOAD": preload, ENV_AT: repr(start_at), ENV_FACTOR: repr(factor)}
