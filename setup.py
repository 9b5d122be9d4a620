"""The one compiled part: the fast path of OTLP/JSON decoding and the column builder it fills
(everything else is in pyproject.toml)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "afterfix.ingest._otlpjson",
            ["kernel_ext/afterfix/ingest/_otlpjson.c", "kernel_ext/afterfix/ingest/_columns.c"],
            depends=["kernel_ext/afterfix/ingest/_native.h"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
        )
    ]
)
