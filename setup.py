"""The runner's sources travel inside the package, so that `pip install edgepack` (a wheel, no
checkout) can still run `edgepack runner build`. They live at device_scripts/runner in the
repository, where the project's layout wants what runs on devices, and are copied into
edgepack/runner/sources when a wheel is built. Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RUNNER = Path(__file__).resolve().parent / "device_scripts" / "runner"
# What a build needs; the fuzz target and tools are for developers of the runner.
RUNNER_PARTS = ("CMakeLists.txt", "README.md", "cmake", "src")


class BuildPyWithRunner(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install finds the checkout's own sources
        target = Path(self.build_lib) / "edgepack" / "runner" / "sources"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for part in RUNNER_PARTS:
            src = RUNNER / part
            if src.is_dir():
                shutil.copytree(src, target / part)
            else:
                shutil.copy2(src, target / part)


setup(cmdclass={"build_py": BuildPyWithRunner})
