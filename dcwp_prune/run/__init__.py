"""The run wing: config assembly and presets, the five-stage pipeline, the run folder (checkpoints,
records, export, report, plots) and the CLI. The only layer that writes run files or imports click.
"""
