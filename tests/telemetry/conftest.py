"""Telemetry fixtures shared by the source tests (MQTT, OPC UA, SQL): a twin's state table."""

from __future__ import annotations

import pytest

import twinstage


@pytest.fixture
def table(pump_scene):
    """The pump testbed's StateTable (the twin closed afterwards)."""
    twin = twinstage.open(pump_scene)
    yield twin.table
    twin.close()
