"""Live runtime: sources -> faces -> engine -> paste-back -> sinks (window, recording, browser).

Nothing here imports torch; the PyTorch reference is loaded lazily for ``--parity-every``.
"""
