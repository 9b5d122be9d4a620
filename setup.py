"""The one compiled part: the fast paths of OTLP decoding (JSON lines, protobuf requests) and
the column builder they fill (everything else is in pyproject.toml)."""

from glob import glob

from setuptools import Extension, setup

setup(
    # The papermill templates and manifests, for installs without a checkout: `afterfix brief`
    # finds them in <prefix>/share/afterfix/templates (afterfix/templates.py).
    data_files=[("share/afterfix/templates", sorted(glob("templates/*.ipynb") + glob("templates/*.yaml")
                                                  + glob("templates/*.cron") + glob("templates/*.tmpl")))],
    ext_modules=[
        Extension(
            "afterfix.ingest._otlpjson",
            [
                "kernel_ext/afterfix/ingest/_otlpjson.c",
                "kernel_ext/afterfix/ingest/_otlppb.c",
                "kernel_ext/afterfix/ingest/_columns.c",
            ],
            depends=["kernel_ext/afterfix/ingest/_native.h", "kernel_ext/afterfix/ingest/_otlp.h"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
        )
    ]
)
