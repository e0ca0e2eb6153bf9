"""The metadata is in pyproject.toml. This file builds the one piece of C,
the loudness meter's loop (flac2all/audio/_meter.c), as optional: where it
cannot be built (no C compiler, no Python headers) the install goes on with
a warning, and the meter runs on numpy and scipy instead (the `loudness`
extra), at several times the CPU."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("flac2all.audio._meter", ["flac2all/audio/_meter.c"], extra_compile_args=["-O3"], optional=True)
    ]
)
