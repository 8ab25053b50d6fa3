import ignite.distributed as idist
from ignite.engine import Engine

from monai_diff3m.handlers import TerminalProgressBar


def _run(bar: TerminalProgressBar) -> None:
    engine = Engine(lambda engine, batch: {"loss": 0.25})
    bar.attach(engine)
    engine.run([0, 1, 2], max_epochs=2)


def test_bar_shows_epoch_counts_rate_time_left_and_loss(capsys):
    _run(TerminalProgressBar(enabled=True, output_transform=lambda output: output))
    shown = capsys.readouterr().out
    assert "Epoch [1/2]: [2/3]" in shown and "Epoch [2/2]" in shown and "loss=0.25" in shown
    assert "batch/s]" in shown and "[00:00<" in shown  # the rate, and elapsed<remaining


def test_bar_is_silent_when_disabled_or_on_another_process(capsys, monkeypatch):
    _run(TerminalProgressBar(enabled=False))
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    _run(TerminalProgressBar(enabled=True))
    assert capsys.readouterr().out == ""
