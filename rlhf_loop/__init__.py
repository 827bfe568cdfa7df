"""The `rlhf-loop` command: model preparation, the one-machine supervisor, and the CLI.

An entry-point layer: it may import every package; nothing imports it.
"""
