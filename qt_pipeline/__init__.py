"""qt_pipeline: a Dagster code location for a quant-research platform.

Domain packages (``market``, ``storage``, ``signals``, ``evolution``) are plain Python with no Dagster
imports; ``qt_pipeline.defs`` is the thin Dagster wiring over them; ``qt_pipeline.definitions`` holds the
one ``Definitions`` object.
"""

__version__ = "0.1.0"
