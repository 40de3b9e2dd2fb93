"""The embedded demo: a generated audio-visual event set, a loopback server, and the orchestration
that runs every stage of the real CLI on it (``avel demo`` / ``make demo``)."""
