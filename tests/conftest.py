"""Shared test fixtures."""

import pytest

import pysnn


@pytest.fixture(autouse=True)
def _restore_value_checks():
    """Every test starts with pysnn's value checks on and cannot leak a change to the next."""
    pysnn.set_checks(True)
    yield
    pysnn.set_checks(True)
