"""The face of flac2all: argv and TOML profiles become one run request; what a person sees."""
