"""Linear algebra: tensordot, vecdot and the ``linalg`` extension."""

from __future__ import annotations

__all__ = []
