"""flac2all: convert a FLAC library to other formats on every core."""

__version__ = "6.0.0"
