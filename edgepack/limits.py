"""The ranges edgepack accepts, and how big one tensor it makes may be.

The command line and lab.toml check against the same numbers; tensor sizes are checked before
anything is allocated, because a shape typed wrong (`--dim batch=1000000000000`) must be an error
that names it, not a MemoryError, or worse an allocation the kernel grants and then kills the
process for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgepack.errors import EdgepackError

# The native runner's own limits (device_scripts/runner/src/main.c: MAX_ITERATIONS, --threads,
# --min-seconds): a value it would refuse is refused before a bundle is pushed, rather than
# coming back from the device as a runner failure.
MAX_ITERATIONS = 10_000_000
MAX_THREADS = 4096
# Seconds: the runner caps --min-seconds at 1e6 (11.6 days); timeouts and cooldowns share the cap
# since anything longer is a typo, and an infinite one overflows sleeps and timers.
MAX_SECONDS = 1e6
# The runner runs under `timeout N`, in whole seconds, so a shorter timeout cannot be kept.
MIN_TIMEOUT = 1.0
# torch.manual_seed takes up to 2**64 - 1 and the stages add set numbers to the seed; a signed
# 64-bit seed leaves that room. numpy refuses negative seeds.
MAX_SEED = 2**63 - 1

# A bundle stores each input value as one TensorProto .pb file, and protobuf refuses to
# serialize a message of 2 GiB or more; the 64 KiB kept back is room for the tensor's name and
# dims around its raw bytes. A bigger input could never be packed, so it is refused before it is
# made.
MAX_TENSOR_BYTES = 2**31 - 64 * 1024


def check_tensor_size(what: str, shape: Sequence[int], itemsize: int) -> None:
    """Refuse a tensor over MAX_TENSOR_BYTES; `what` names it and the option that sized it."""
    # Python ints: a product of huge dims cannot overflow as numpy's int64 arithmetic would.
    elements = math.prod(int(d) for d in shape)
    if elements * itemsize > MAX_TENSOR_BYTES:
        raise EdgepackError(
            f"{what}: shape {list(shape)} is {elements:,} element(s) of {itemsize} byte(s), "
            f"{_gib(elements * itemsize)}; one input may hold at most "
            f"{_gib(MAX_TENSOR_BYTES)} (a bundle keeps each in one protobuf TensorProto, which "
            "cannot reach 2 GiB)"
        )


def number_text(value: float) -> str:
    """A bound as people write it: 1000000, not 1e+06; 0.5 stays 0.5."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def max_dim(itemsize: int = 1) -> int:
    """The largest size one dimension can take in a tensor that still fits."""
    return MAX_TENSOR_BYTES // itemsize


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"
