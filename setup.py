"""The optional compiled part of the build: the native OTLP decoder.

Everything else is declared in pyproject.toml. The extension is optional: on a machine without
a C compiler (or Python headers) the build prints a warning and installs without it, and the
server runs the pure-Python decoder (``prefixscope serve --decoder auto``). Set
``PREFIXSCOPE_NATIVE=0`` to skip it deliberately, or ``PREFIXSCOPE_NATIVE=require`` to make a
failed build an error (CI does, so a broken decoder cannot pass unnoticed).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODE = os.environ.get("PREFIXSCOPE_NATIVE", "auto").strip().lower()


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing, unless PREFIXSCOPE_NATIVE=require."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all (distutils raises various errors)
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # compile or link error
            self._skip(exc)

    def _skip(self, exc: Exception) -> None:
        if MODE == "require":
            raise exc
        print(
            f"warning: the native OTLP decoder was not built ({exc}); "
            "prefixscope will use the pure-Python decoder",
            file=sys.stderr,
        )


ext_modules = []
if MODE != "0":
    ext_modules.append(
        Extension(
            "prefixscope.collector.decoding.native._otlp",
            sources=["collector/decoding/native/otlp.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
