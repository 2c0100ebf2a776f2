"""Keras EarlyStopping(monitor='val_loss', mode='min', min_delta=0) semantics.

An epoch improves only if its value is strictly below the best so far; the
run stops once `patience` epochs in a row bring no improvement (best at epoch
63 with patience 20 stops after epoch 83). An improving epoch never stops it:
with patience 0 the first epoch without improvement does (Keras 2.2 reads
patience 0 so).
"""

import dataclasses
import math


@dataclasses.dataclass
class EarlyStopping:
  patience: int
  best: float = math.inf
  best_epoch: int = 0
  wait: int = 0

  def update(self, epoch, value):
    """Records `value` for `epoch`; returns True if it is a new best."""
    if value < self.best:
      self.best, self.best_epoch, self.wait = float(value), int(epoch), 0
      return True
    self.wait += 1
    return False

  @property
  def should_stop(self):
    return self.wait > 0 and self.wait >= self.patience

  def state_dict(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_state_dict(cls, d):
    return cls(**d)
