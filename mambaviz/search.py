"""Tree-shape policies: which draft tree shape to use at each step.

A policy returns a shape before each step and is told the step's outcome afterwards, so adaptive
policies can learn from committed tokens and step time.
"""

from __future__ import annotations

from typing import Any

from mambaviz.tree import format_shape, validate_shape


class ShapePolicy:
    """Chooses each step's tree shape; the fixed policy below always returns the same one."""

    name = "policy"

    def next_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def observe(self, shape: tuple[int, ...], committed: int, seconds: float) -> None:
        """Record that a step drafted with `shape` committed `committed` tokens in `seconds`."""

    def decision(self) -> dict[str, Any] | None:
        """Describe the latest choice for the trace, or None when there is nothing to explain."""
        return None

    def describe(self) -> str:
        return self.name


class FixedShape(ShapePolicy):
    name = "fixed"

    def __init__(self, shape: tuple[int, ...]):
        self.shape = validate_shape(shape)

    def next_shape(self) -> tuple[int, ...]:
        return self.shape

    def describe(self) -> str:
        return format_shape(self.shape)
