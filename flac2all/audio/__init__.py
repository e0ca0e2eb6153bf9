"""Audio: FLAC stream facts, the decoder's choice, the PCM tap."""
