"""The one compiled part: the fast paths of OTLP decoding (JSON lines, protobuf requests) and
the column builder they fill (everything else is in pyproject.toml)."""

from setuptools import Extension, setup

setup(
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
