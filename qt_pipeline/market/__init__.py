"""Market data: the OHLCV contract, validation with reasons, and data sources. No Dagster imports."""

from qt_pipeline.market.contract import (
    BAR_COLUMNS,
    BAR_DTYPES,
    KEY,
    REJECT_COLUMNS,
    ContractError,
    RejectReason,
    empty_bars,
    empty_rejects,
    to_canonical,
)
from qt_pipeline.market.validation import ValidationResult, merge_results, validate_bars

__all__ = [
    "BAR_COLUMNS",
    "BAR_DTYPES",
    "KEY",
    "REJECT_COLUMNS",
    "ContractError",
    "RejectReason",
    "empty_bars",
    "empty_rejects",
    "to_canonical",
    "ValidationResult",
    "merge_results",
    "validate_bars",
]
