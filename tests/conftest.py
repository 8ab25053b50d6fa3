"""Test-suite root: makes the shared test helpers (``dicom_files``) importable from every test folder, and marks
the tests of the session's trained tiny model ``slow``."""

from __future__ import annotations

import pytest

#: Fixtures that train the session's tiny bundle model: whoever asks for them first pays for the training.
TRAINING_FIXTURES = {"trained", "trained_bundle"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of the session's trained tiny model is ``slow``, so ``-m "not slow"`` never starts that training."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
