"""Early stopping on a scripted sequence of validation losses."""

import pytest

from speechjax.early_stopping import EarlyStopping


@pytest.mark.parametrize(
    "losses, patience, stop_epoch",
    [
        # Improves until epoch 3, then three epochs without a lower loss: stops at epoch 6.
        ([1.0, 0.8, 0.7, 0.7, 0.9, 0.75], 3, 6),
        # The improvement at epoch 4 resets the count: stops at epoch 6 with patience 2.
        ([1.0, 0.9, 0.95, 0.5, 0.6, 0.55, 0.4], 2, 6),
        # Never stops when every epoch improves.
        ([5.0, 4.0, 3.0, 2.0], 1, None),
    ],
)
def test_stops_at_the_right_epoch(losses, patience, stop_epoch):
    stopper = EarlyStopping(patience)
    stopped_at = next(
        (epoch for epoch, loss in enumerate(losses, start=1) if stopper.update(loss)), None
    )
    assert stopped_at == stop_epoch


def test_round_trips_through_a_dict():
    stopper = EarlyStopping(4)
    for loss in (1.0, 0.5, 0.6):
        stopper.update(loss)
    restored = EarlyStopping.from_dict(stopper.to_dict(), patience=4)
    assert restored == stopper
    assert restored.update(0.7) is False and restored.epochs_without_improvement == 2
    # A resumed run takes the config's patience: a larger one un-exhausts a stopped run.
    for loss in (0.7, 0.8, 0.9):
        stopper.update(loss)
    assert stopper.exhausted
    assert not EarlyStopping.from_dict(stopper.to_dict(), patience=5).exhausted
