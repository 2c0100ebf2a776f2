"""Learning-rate schedules that need the run's length in optimizer steps."""

import optax

SCHEDULES = ('constant', 'linear', 'cosine')


def learning_rate_fn(config, steps_per_epoch):
  """Linear warm-up from 0 over `warmup_epochs`, then `lr_schedule` down
  towards 0, which it reaches one step after the last of `num_epochs`: the
  last step takes peak / (its decay steps) ('constant' keeps the peak)."""
  if config.lr_schedule not in SCHEDULES:
    raise ValueError(f'config.lr_schedule={config.lr_schedule!r}: expected '
                     f'one of {SCHEDULES}')
  peak = config.learning_rate
  total = max(1, config.num_epochs * steps_per_epoch)
  warmup = min(total - 1, round(config.warmup_epochs * steps_per_epoch))
  if config.lr_schedule == 'constant':
    after = optax.constant_schedule(peak)
  elif config.lr_schedule == 'linear':
    after = optax.linear_schedule(peak, 0.0, total - warmup)
  else:
    after = optax.cosine_decay_schedule(peak, total - warmup)
  if warmup <= 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), after], [warmup])
