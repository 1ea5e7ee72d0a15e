"""The training loop in-process: resuming after an interrupt, NaN losses, early stopping."""

import logging
import os
import signal

import pytest
from tqdm import tqdm

from speechjax import checkpoints, eval_loop, evaluate, input_pipeline, sharding, train
from speechjax.errors import Interrupted, UserError
from speechjax.run import Workdir
from tests import tiny_config


@pytest.fixture(scope="module")
def uninterrupted(workspace, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    return train.train_and_evaluate(tiny_config.get_config(workspace), workdir)


def _without_timing(results: dict) -> dict:
    results = dict(results, train_seconds=None)
    results["history"] = [dict(h, seconds=None) for h in results["history"]]
    return results


def test_run_reports_two_epochs_of_real_metrics(uninterrupted):
    assert uninterrupted["epochs_run"] == 2
    assert [h["epoch"] for h in uninterrupted["history"]] == [1, 2]
    assert 0.0 <= uninterrupted["test_accuracy"] <= 1.0
    assert uninterrupted["test_examples"] == 16  # 4 words x 4 test clips, each counted once


def test_resume_after_sigterm_mid_epoch_matches_uninterrupted(
    workspace, uninterrupted, tmp_path, monkeypatch
):
    config = tiny_config.get_config(workspace)
    workdir = str(tmp_path / "interrupted")
    original = input_pipeline.DataPipeline.train_batches

    def interrupted_in_epoch_2(self, epoch, batch_size):
        for index, batch in enumerate(original(self, epoch, batch_size)):
            if epoch == 2 and index == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    monkeypatch.setattr(input_pipeline.DataPipeline, "train_batches", interrupted_in_epoch_2)
    with pytest.raises(Interrupted, match="SIGTERM: saved checkpoint step 6"):
        train.train_and_evaluate(config, workdir)
    monkeypatch.undo()
    # 32 training clips in batches of 8: epoch 1 ends at step 4, the signal lands in step 6.
    assert checkpoints.create_manager(Workdir(workdir)).latest_step() == 6

    resumed = train.train_and_evaluate(config, workdir)
    assert _without_timing(resumed) == _without_timing(uninterrupted)


def test_the_epoch_bar_ends_its_line_when_a_stop_at_once_leaves_the_loop(
    workspace, tmp_path, monkeypatch
):
    # A second Ctrl-C raises KeyboardInterrupt wherever the main thread is (here: in the
    # epoch loop's body); main.py then prints one line, which must not continue a bar still
    # drawn (in CI it did). Validation's bar needs no such care: it is the loop's iterator,
    # closed by tqdm as the exception unwinds.
    bars = []

    class RecordedBar(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(train, "tqdm", RecordedBar)
    put_batch = sharding.put_batch
    batches_put = []

    def stopped_at_once(batch, mesh):
        batches_put.append(batch)
        if len(batches_put) == 2:
            raise KeyboardInterrupt
        return put_batch(batch, mesh)

    monkeypatch.setattr(sharding, "put_batch", stopped_at_once)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(tiny_config.get_config(workspace), str(tmp_path / "run"))
    assert [bar.desc for bar in bars] == ["epoch 1/2"]
    assert all(bar.disable for bar in bars)  # tqdm's mark of a closed bar


def test_resume_after_finished_epoch_continues_to_more_epochs(workspace, uninterrupted, tmp_path):
    config = tiny_config.get_config(workspace)
    workdir = str(tmp_path / "one_then_two")
    with config.unlocked():
        config.train.epochs = 1
    first = train.train_and_evaluate(config, workdir)
    assert first["epochs_run"] == 1
    with config.unlocked():
        config.train.epochs = 2
    assert _without_timing(train.train_and_evaluate(config, workdir)) == _without_timing(
        uninterrupted
    )


def test_rerunning_a_finished_run_does_not_repeat_its_summary(workspace, tmp_path):
    config = tiny_config.get_config(workspace)
    with config.unlocked():
        config.train.epochs = 1
    workdir = tmp_path / "finished"
    first = train.train_and_evaluate(config, str(workdir))
    log = (workdir / "log.txt").read_text()
    assert log.count("Test Acc:") == 1
    again = train.train_and_evaluate(config, str(workdir))  # nothing to train: tests again
    assert again["test_accuracy"] == first["test_accuracy"]
    assert (workdir / "log.txt").read_text() == log


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(workspace, tmp_path):
    config = tiny_config.get_config(workspace)
    workdir = str(tmp_path / "nan")
    with config.unlocked():
        config.train.epochs = 1
    train.train_and_evaluate(config, workdir)
    with config.unlocked():
        config.train.epochs = 2
        config.train.lr = 1e30
    with pytest.raises(train.TrainingDiverged, match=r"last good checkpoint \(step 4\)"):
        train.train_and_evaluate(config, workdir)
    assert checkpoints.create_manager(Workdir(workdir)).all_steps() == [4]


def test_early_stopping_ends_the_run_at_the_scripted_epoch(workspace, tmp_path, monkeypatch):
    config = tiny_config.get_config(workspace)
    with config.unlocked():
        config.train.epochs = 10
        config.train.patience = 2
    # No new low at epochs 3 and 4: stop at 4. With patience 3: a low at 5, none at 6-8.
    val_losses = iter([1.0, 0.8, 0.9, 0.85, 0.1, 0.2, 0.3, 0.4])
    original = eval_loop.evaluate_split

    def scripted(eval_step, state, pipeline, split, batch_size, mesh):
        result = original(eval_step, state, pipeline, split, batch_size, mesh)
        if split == "validation":
            result.loss = next(val_losses)
        return result

    monkeypatch.setattr(eval_loop, "evaluate_split", scripted)
    results = train.train_and_evaluate(config, str(tmp_path / "early"))
    assert results["epochs_run"] == 4
    assert [h["val_loss"] for h in results["history"]] == [1.0, 0.8, 0.9, 0.85]
    with open(tmp_path / "early" / "log.txt") as f:
        assert "Early stopping: validation loss has not improved for 2 epochs" in f.read()
    # The same command again only tests; a larger train.patience continues the run.
    assert train.train_and_evaluate(config, str(tmp_path / "early"))["epochs_run"] == 4
    with config.unlocked():
        config.train.patience = 3
    results = train.train_and_evaluate(config, str(tmp_path / "early"))
    assert [h["val_loss"] for h in results["history"]][3:] == [0.85, 0.1, 0.2, 0.3, 0.4]
    assert results["epochs_run"] == 8
    with open(tmp_path / "early" / "log.txt") as f:
        assert "Continuing a run that had stopped early: train.patience is now 3" in f.read()


@pytest.mark.parametrize("train_on_validation", [False, True])
def test_final_fit_keeps_the_last_epoch_and_never_stops_early(
    workspace, tmp_path, monkeypatch, caplog, train_on_validation
):
    config = tiny_config.get_config(workspace)
    with config.unlocked():
        config.train.epochs = 4
        config.train.patience = 1
        config.data.train_on_validation = train_on_validation
    # Scripted so that a held-out validation stops at epoch 2 and keeps epoch 1.
    scores = iter([(0.5, 1.0), (0.9, 0.5), (1.0, 0.25), (1.1, 0.0)])
    original = eval_loop.evaluate_split

    def scripted(eval_step, state, pipeline, split, batch_size, mesh):
        result = original(eval_step, state, pipeline, split, batch_size, mesh)
        if split == "validation":
            result.loss, result.accuracy = next(scores)
        return result

    monkeypatch.setattr(eval_loop, "evaluate_split", scripted)
    workdir = tmp_path / "fit"
    results = train.train_and_evaluate(config, str(workdir))
    log = (workdir / "log.txt").read_text()
    assert results["train_on_validation"] is train_on_validation
    if not train_on_validation:
        assert (results["epochs_run"], results["best_epoch"]) == (2, 1)
        assert "train/val/test: 32/16/16" in log
        # A run keeps its rule for the kept checkpoint: resuming with the other is refused.
        with config.unlocked():
            config.data.train_on_validation = True
        with pytest.raises(UserError, match="data.train_on_validation: checkpoint False, config"):
            train.train_and_evaluate(config, str(workdir))
        return
    # 32 training + 16 validation clips in batches of 8: 6 steps an epoch.
    assert (results["epochs_run"], results["best_epoch"], results["best_step"]) == (4, 4, 24)
    assert results["best_val_accuracy"] == 0.0
    assert "train/val/test: 48/16/16" in log and "includes validation's 16" in log
    assert "Last (validation trained on) val Acc: 0.0000 (epoch 4, step 24)" in log
    assert "Early stopping" not in log
    assert checkpoints.create_manager(Workdir(workdir)).all_steps() == [24]
    monkeypatch.undo()
    with config.unlocked():
        config.eval.split = "validation"
    with caplog.at_level(logging.WARNING):
        evaluate.evaluate_checkpoint(config, str(workdir), output=str(tmp_path / "val.json"))
    assert "was trained on this validation split too" in caplog.text


def test_one_program_step_trains_like_the_split_step(workspace, uninterrupted, tmp_path):
    # On the CPU the default ("auto") runs the split step; "off" runs one XLA program.
    config = tiny_config.get_config(workspace)
    with config.unlocked():
        config.train.split_step = "off"
    one_program = train.train_and_evaluate(config, str(tmp_path / "one_program"))
    for got, want in zip(one_program["history"], uninterrupted["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-6), key
