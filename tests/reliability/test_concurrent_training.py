"""Two trainings into one checkpoint folder: the second stops before it writes anything."""

from __future__ import annotations

import re

import pytest
from monai.bundle import ConfigWorkflow

from monai_diff3m.run_lock import RunInUseError

from bundle.tiny_bundle import config_files, tiny_overrides
from run_locks import hold_lock_in_another_process

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test


def _training(bundle_root) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=config_files("train.json"), run_id="training", workflow_type=None, **tiny_overrides(bundle_root)
    )


def test_a_second_training_into_the_same_checkpoint_folder_is_refused(tmp_path):
    """Two concurrent trainings both succeeded: best.pt held the worse run and one TensorBoard run both logs."""
    lock = tmp_path / "models" / ".diff3m_pooled.training.lock"
    other = hold_lock_in_another_process(lock)
    try:
        with pytest.raises(RuntimeError) as refused:  # MONAI wraps the error of a config expression
            _training(tmp_path).initialize()
        error = refused.value.__cause__
        assert isinstance(error, RunInUseError)
        assert re.search(rf"checkpoint folder .*models \(diff3m_pooled\) is in use .*pid {other.pid}", str(error))
    finally:
        other.kill()
        other.wait()
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()

    workflow = _training(tmp_path)
    workflow.initialize()  # the killed run's lock is free
    assert workflow.parser.get_parsed_content("training_lock").held
    workflow.finalize()
    assert not lock.exists()
