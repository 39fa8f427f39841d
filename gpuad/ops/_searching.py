"""Searching, sorting, sets and statistics beyond sum and mean."""

from __future__ import annotations

__all__ = []
