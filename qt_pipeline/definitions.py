"""The one Definitions object of the qt_pipeline code location (workspace.yaml loads this module).

Keep this module cheap to import: heavy libraries (Great Expectations, Ray, numba kernels) are imported
inside the functions that need them.
"""

import dagster as dg

from qt_pipeline.defs import central, evolution, hybrid, ingestion, signals
from qt_pipeline.defs.resources import shared_resources

defs = dg.Definitions.merge(
    ingestion.defs,
    central.defs,
    hybrid.defs,
    evolution.defs,
    signals.defs,
    dg.Definitions(resources=shared_resources),
)
