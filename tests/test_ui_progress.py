"""The Train tab's progress line, built from the events of a real training."""

from __future__ import annotations

import pytest

from tl_app.importer import import_files
from tl_app.train import TrainConfig, train
from tl_app.ui.progress import JobWatch

pytestmark = pytest.mark.slow


def test_a_two_epoch_fine_tuning_says_warm_up_then_epoch_1_and_2_of_2(project, colour_folder):
    import_files(project, [colour_folder])
    events: list[dict] = []
    rep = train(project, TrainConfig(size=32, epochs=2, pretrained=False), events=events.append)
    assert rep.status == "finished"
    watch = JobWatch("Full fine-tuning · resnet18 · 25 Nov 14:02")
    lines = []
    for ev in events:
        watch.add(ev)
        if not lines or lines[-1] != watch.status:
            lines.append(watch.status)
    text = "\n".join(lines)
    # fastai's fine_tune runs one epoch of the last layers alone first: named, not counted as "1 of 3".
    assert "warm-up (last layers only), " in text and "warm-up done, " in text
    assert "epoch 1 of 2, " in text and "epoch 2 of 2 done, " in text and " of 3" not in text
    assert all(line.startswith("Full fine-tuning · resnet18 · 25 Nov 14:02: ") for line in lines), lines
    assert [h["epoch"] for h in watch.history] == [1, 2, 3] and watch.mode == "finetune"
