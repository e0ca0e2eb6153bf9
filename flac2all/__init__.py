"""flac2all: convert a FLAC library to other formats on every core.

From Python: ``flac2all.convert("music", "out", "mp3,opus", threads=2)``
returns the run's Report; ``flac2all.run(settings, ...)`` is the full form
(``flac2all.running.engine``). Nothing is imported until one is asked for.
"""

__version__ = "6.0.0"

API = ("convert", "run", "dry_run")


def __getattr__(name: str):
    if name in API:
        from flac2all.running import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'flac2all' has no attribute {name!r}")
