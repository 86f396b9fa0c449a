"""The gateway tier (fixtures in tests/gateway/fixtures.py)."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/gateway/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
