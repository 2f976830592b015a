"""Dagster run config generated from a domain pydantic model, so every field is declared once.

The domain model (e.g. :class:`qt_pipeline.evolution.config.EvolutionConfig`) owns the fields, their
defaults, descriptions and validation; the Dagster config class made here mirrors its fields with types
Dagster's config system can show and edit in the launchpad (datetimes as ISO strings, tuples as lists,
nested models as nested config). Constraints are not repeated: the run hands ``model_dump()`` to the domain
model, which validates everything before any work and names every bad field.
"""

from __future__ import annotations

import functools
import operator
import types
import typing
from datetime import datetime
from typing import Any

import dagster as dg
from pydantic import BaseModel, Field, create_model


def _config_type(annotation: Any) -> Any:
    if annotation is datetime:
        return str
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return config_class(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return list[_config_type(args[0])]  # type: ignore[misc]
    if origin in (types.UnionType, typing.Union):
        return functools.reduce(operator.or_, [_config_type(a) for a in args])
    return annotation


@functools.cache
def config_class(model: type[BaseModel], name: str | None = None) -> type[dg.Config]:
    """A ``dg.Config`` subclass with ``model``'s fields, defaults and descriptions.

    A field whose default comes from a factory in the domain (e.g. a generated run id) is optional here
    and left out (None) unless set, so the domain generates it."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        kind = _config_type(info.annotation)
        spec: Any
        if info.default_factory is not None:
            if isinstance(kind, type) and issubclass(kind, dg.Config):
                spec = Field(default_factory=kind, description=info.description)
            else:
                kind, spec = kind | None, Field(default=None, description=info.description)
        elif info.is_required():
            spec = Field(description=info.description)
        else:
            spec = Field(default=info.default, description=info.description)
        fields[field_name] = (kind, spec)
    return create_model(
        name or f"{model.__name__}RunConfig",
        __base__=dg.Config,
        __doc__=model.__doc__,
        __module__=model.__module__,
        **fields,
    )
