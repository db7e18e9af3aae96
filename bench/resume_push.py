"""Issue 16 part 2's figure: a push killed half-way resumes, sending at most 55 % of the file.

    python bench/resume_push.py [--mib 256] [--bandwidth-mib 96]

Through a private real adb server to a virtual device: pushes a --mib file with
devices.staging.sync_dir in a child process, SIGKILLs it once the hidden part on the device
holds half the file, then pushes again in this process counting the bytes sent. Also prints
what segmenting costs against one plain SEND of the whole file (no kill, no bandwidth limit).
Exits 1 when the retry sent more than 55 %.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack.devices.adb import AdbDevice  # noqa: E402
from edgepack.devices.staging import (  # noqa: E402
    PART_SUFFIX,
    LocalFile,
    segment_size,
    sync_dir,
)
from edgepack.devices.virtual.harness import AdbServer, DeviceFactory  # noqa: E402

MiB = 2**20
PUSH = """
import sys
from pathlib import Path
from edgepack.devices.adb import AdbDevice
from edgepack.devices.staging import LocalFile, sync_dir

serial, path, sha, remote = sys.argv[1:]
p = Path(path)
sync_dir(AdbDevice(serial), [LocalFile(p.name, p, sha, p.stat().st_size)], remote, "big")
"""


class Counted:
    def __init__(self) -> None:
        self.sent = 0

    def start(self, label: str, total_bytes: int):  # noqa: ANN201
        def advance(n: int) -> None:
            self.sent += n

        return advance

    def finish(self) -> None:
        pass


def make_file(path: Path, size: int) -> LocalFile:
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(left, 16 * MiB))
            fh.write(block)
            digest.update(block)
            left -= len(block)
    return LocalFile(path.name, path, digest.hexdigest(), size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--bandwidth-mib", type=int, default=96,
                    help="the device's link while the first push runs (so half-way is seen)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="resume-push-") as tmp:
        work = Path(tmp)
        f = make_file(work / "weights.bin", args.mib * MiB)
        with AdbServer(log_path=work / "adb.log") as server:
            os.environ.update(server.env())
            with DeviceFactory(server, work / "dev") as factory:
                d = factory.start()
                assert d.device is not None
                device = AdbDevice(d.serial)

                t0 = time.perf_counter()
                device.push(f.path, "/data/local/tmp/edgepack/plain.bin")
                plain_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                sync_dir(device, [f], "/data/local/tmp/edgepack/whole", "big")
                whole_s = time.perf_counter() - t0

                remote = "/data/local/tmp/edgepack/resume"
                part = d.root / remote.lstrip("/") / ("." + f.rel + PART_SUFFIX)
                d.device.faults.bandwidth = args.bandwidth_mib * MiB
                proc = subprocess.Popen([sys.executable, "-c", PUSH, d.serial, str(f.path),
                                         f.sha256, remote], cwd=REPO)
                while proc.poll() is None:
                    if part.exists() and part.stat().st_size >= f.size // 2:
                        os.kill(proc.pid, signal.SIGKILL)
                        break
                    time.sleep(0.01)
                proc.wait()
                d.device.faults.bandwidth = None
                kept = part.stat().st_size if part.exists() else 0
                counted = Counted()
                t0 = time.perf_counter()
                stats = sync_dir(device, [f], remote, "big", counted)
                retry_s = time.perf_counter() - t0
    share = counted.sent / f.size
    print(f"file {args.mib} MiB, segment {segment_size(f.size) / MiB:g} MiB")
    print(f"one plain SEND of the whole file      {plain_s:7.2f} s")
    print(f"sync_dir, segmented, nothing on device {whole_s:7.2f} s "
          f"({whole_s / plain_s:.2f}x; includes the device's sha256 check)")
    print(f"killed with {kept / MiB:.1f} MiB on the device; the retry sent "
          f"{counted.sent / MiB:.1f} MiB = {share:.1%} in {retry_s:.2f} s "
          f"(resumed {stats.bytes_resumed / MiB:.1f} MiB)")
    ok = share <= 0.55
    print("target (retry <= 55 %):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
