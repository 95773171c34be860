"""Shared fixtures. Every test talks real HTTP to sandbox servers on loopback."""

from __future__ import annotations
