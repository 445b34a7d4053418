"""The subcommands of ``pointseg``, one module each: its arguments (``register``), its request and its run.

``pointseg.cli`` assembles them in ``COMMANDS`` order and dispatches; the workflows here are plain functions that
the CLI, the demo, the benchmarks and the tests share.
"""
