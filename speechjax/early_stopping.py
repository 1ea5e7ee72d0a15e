"""Early stopping on validation loss, as the original: stop after `patience` epochs
without a new lowest validation loss."""

import dataclasses
import math


@dataclasses.dataclass
class EarlyStopping:
    patience: int
    best_loss: float = math.inf
    epochs_without_improvement: int = 0

    def update(self, val_loss: float) -> bool:
        """Records one epoch's validation loss; returns True when training should stop."""
        if val_loss < self.best_loss:
            self.best_loss = val_loss
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return self.exhausted

    @property
    def exhausted(self) -> bool:
        """True when `patience` epochs have passed without a new lowest loss."""
        return self.epochs_without_improvement >= self.patience

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, patience: int) -> "EarlyStopping":
        """The stored state with `patience` from the config: a resumed run honours a new one."""
        return cls(**{**d, "patience": patience})
