"""The one compiled part: the fast paths of OTLP decoding (JSON lines, protobuf requests) and
the column builder they fill (everything else is in pyproject.toml).

The compiled module is optional: afterfix.ingest reads the same rows in Python without it, only
slower. When it cannot be built (no C compiler, no Python headers, a compile error) the install
goes on without it and says so once. $AFTERFIX_NO_NATIVE, the name the runtime reads to leave
the compiled module unused, chooses: 0 requires it (a build error fails the install), unset or
empty tries, anything else (1) skips building it.
"""

import os
import re
import sys
import sysconfig
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

ENV_NO_NATIVE = "AFTERFIX_NO_NATIVE"
NATIVE = "afterfix.ingest._otlpjson"
SLOWER = "about 1.5x"  # file ingest, spans/s compiled over pure Python: benchmarks/file_ingest.py [--no-native]

_choice = os.environ.get(ENV_NO_NATIVE, "")
REQUIRED, SKIPPED = _choice == "0", _choice not in ("", "0")  # as afterfix.ingest.rows reads it


class optional_build_ext(build_ext):
    """build_ext that leaves out an extension it cannot build, with one warning saying what it costs."""

    def run(self):
        try:
            super().run()
        except PlatformError as e:  # no compiler of the platform's kind at all (e.g. no MSVC)
            self._without(e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except (CCompilerError, CompileError, ExecError, PlatformError) as e:
            self._without(e)

    def _without(self, error):
        if REQUIRED:
            raise error
        why = _reason(error)
        print(f"\nafterfix: WARNING: building the compiled OTLP fast path ({NATIVE}) failed: {why}. "
              f"Installing the pure-Python path, which ingests {SLOWER} slower. Install gcc and python3-dev "
              f"(or set $CC to a working C compiler) and reinstall to get it; set {ENV_NO_NATIVE}=1 to skip "
              "building it without this warning.\n", file=sys.stderr, flush=True)


def _reason(error) -> str:
    """The build error in a line: a failed compiler run as its program and file, not its whole command."""
    text = " ".join(str(error).split())
    failed = re.match(r"Command '\[(.*)\]' returned non-zero exit status (\d+)", text)
    if failed:
        args = [a.strip(" '\"") for a in failed.group(1).split(",")]
        source = next((a for a in args if a.endswith(".c")), "")
        text = " ".join(filter(None, [args[0], source])) + f" exited with status {failed.group(2)} (its messages are above)"
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        text = "; ".join(filter(None, [f"Python's headers are missing (no Python.h in {include})", text]))
    return text or type(error).__name__


setup(
    # The papermill templates and manifests, for installs without a checkout: `afterfix brief`
    # finds them in <prefix>/share/afterfix/templates (afterfix/templates.py).
    data_files=[("share/afterfix/templates", sorted(glob("templates/*.ipynb") + glob("templates/*.yaml")
                                                  + glob("templates/*.cron") + glob("templates/*.tmpl")))],
    cmdclass={"build_ext": optional_build_ext},
    ext_modules=[] if SKIPPED else [
        Extension(
            NATIVE,
            [
                "kernel_ext/afterfix/ingest/_otlpjson.c",
                "kernel_ext/afterfix/ingest/_otlppb.c",
                "kernel_ext/afterfix/ingest/_columns.c",
            ],
            depends=["kernel_ext/afterfix/ingest/_native.h", "kernel_ext/afterfix/ingest/_otlp.h"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
            # a failed build leaves no file that the install would then miss (build_ext's inplace copy)
            optional=not REQUIRED,
        )
    ],
)
