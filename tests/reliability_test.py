"""Reliability: resume after SIGTERM/SIGKILL, determinism, divergence, bad
configs, bad workdirs, evaluation without a checkpoint.

Training runs go through main.py in subprocesses (as a user runs them) that
share one XLA compilation cache, so only the first run compiles.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
import pytest
from PIL import Image

from cifar_flax import checkpointing
from cifar_flax import cli
from cifar_flax import config_checks
from cifar_flax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ('epoch_seconds', 'eval_seconds')
NUM_EPOCHS = 8
# Runs main.py in this process after the patch (Python code) has run.
LAUNCHER = """
import os, runpy, sys, time
{patch}
sys.argv = ['main.py'] + sys.argv[1:]
runpy.run_path('main.py', run_name='__main__')
"""
# Half a second after each epoch's history is written: room for a signal to
# land mid-run. Timing only, results are unchanged.
SLOW = """
from cifar_flax import workdir as workdir_lib
_write = workdir_lib.write_history
def write_history(*args):
  _write(*args)
  time.sleep(0.3)
workdir_lib.write_history = write_history
"""
# Parameters turn NaN after train pass `{epoch}` (outside the jitted pass, so
# the cached compilation still serves).
DIVERGE = """
import jax
import jax.numpy as jnp
from cifar_flax import train
_compile = train.Programs.compile
def compile(self, state, rng):
  out = _compile(self, state, rng)
  real, calls = self.train_pass, [0]
  def train_pass(state, *args):
    state, m = real(state, *args)
    calls[0] += 1
    if calls[0] >= {epoch}:
      state = state.replace(
          params=jax.tree.map(lambda p: p * jnp.nan, state.params))
    return state, m
  self.train_pass = train_pass
  return out
train.Programs.compile = compile
"""


@pytest.fixture(scope='module')
def run_flags(fake_data_dir, tmp_path_factory):
  """main.py flags of a tiny run: 64 training images, 8 steps per epoch."""
  cache = str(tmp_path_factory.mktemp('xla_cache'))
  return [f'--config={os.path.join(ROOT, "configs", "test.py")}',
          f'--config.data_dir={fake_data_dir}', '--config.train_subset=80',
          '--config.test_subset=16', f'--config.num_epochs={NUM_EPOCHS}',
          '--config.patience=100', '--config.checkpoint_every_epochs=2',
          f'--config.compilation_cache_dir={cache}']


def _start(workdir, flags, patch=''):
  return subprocess.Popen(
      [sys.executable, '-c', LAUNCHER.format(patch=patch),
       f'--workdir={workdir}', *flags],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=300):
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def _run(workdir, flags, patch=''):
  return _finish(_start(workdir, flags, patch))


def _steps(workdir):
  """Complete checkpoint steps (orbax renames a finished save into place)."""
  d = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if (
      os.path.isdir(d)) else []


def _wait_for(proc, condition, what, timeout=300):
  t0 = time.time()
  while not condition():
    if proc.poll() is not None:
      pytest.fail(f'the run ended before {what}: {_finish(proc)}')
    if time.time() - t0 > timeout:
      proc.kill()
      pytest.fail(f'timed out waiting for {what}')
    time.sleep(0.02)


def _results(workdir):
  """history.json and eval.json without their timing fields."""
  untimed = lambda d: {k: v for k, v in d.items() if k not in TIMING}
  history = workdir_lib.read_history(workdir)
  ev = workdir_lib.read_json(os.path.join(workdir, workdir_lib.EVAL_FILE))
  return [untimed(r) for r in history], untimed(ev)


def _latest_meta(workdir):
  """The latest checkpoint's bookkeeping, its history without timing."""
  manager = checkpointing.create_manager(workdir, read_only=True)
  try:
    meta = manager.restore(
        manager.latest_step(), args=checkpointing.ocp.args.Composite(
            meta=checkpointing.ocp.args.JsonRestore())).meta
  finally:
    manager.close()
  meta['history'] = [{k: v for k, v in r.items() if k not in TIMING}
                     for r in meta['history']]
  return meta


def _snapshot(workdir):
  out = {}
  for d, _, files in os.walk(workdir):
    for f in files:
      p = os.path.join(d, f)
      st = os.stat(p)
      with open(p, 'rb') as fh:
        out[p] = (st.st_mtime_ns, fh.read())
  return out


@pytest.fixture(scope='module')
def reference(run_flags, tmp_path_factory):
  """An uninterrupted run (it also fills the compilation cache)."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  rc, out, err = _run(workdir, run_flags)
  assert rc == 0, out + err
  history, ev = _results(workdir)
  assert [r['epoch'] for r in history] == list(range(1, NUM_EPOCHS + 1))
  assert ev['num_examples'] == 16
  return workdir


# --- 1-3. Resume, SIGTERM, determinism -------------------------------------------


def test_same_config_and_seed_give_identical_runs(reference, run_flags,
                                                  tmp_path):
  rc, out, err = _run(str(tmp_path), run_flags)
  assert rc == 0, out + err
  assert _results(str(tmp_path)) == _results(reference)
  assert _latest_meta(str(tmp_path)) == _latest_meta(reference)


def test_first_ctrl_c_asks_for_a_stop_and_the_second_stops_at_once():
  from cifar_flax import train  # pylint: disable=g-import-not-at-top
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  with train.StopSignal() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.received == 'SIGINT'  # Noted; the epoch goes on.
    with train.StopSignal() as inner:  # Nested: the same one.
      assert inner is stop
    assert signal.getsignal(signal.SIGINT) == stop._handle  # pylint: disable=protected-access
    with pytest.raises(KeyboardInterrupt, match='SIGINT: at a safe point'):
      stop.check('at a safe point')
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert {s: signal.getsignal(s) for s in before} == before
  with train.StopSignal() as stop:  # A fresh one after the first ended.
    assert stop.received is None
    stop.check('nothing to stop')


def test_sigterm_then_sigkill_then_rerun_ends_like_uninterrupted(
    reference, run_flags, tmp_path):
  workdir = str(tmp_path)
  # SIGTERM mid-run: the epoch in progress ends, is saved, exit status 130.
  proc = _start(workdir, run_flags, SLOW)
  _wait_for(proc, lambda: 2 in _steps(workdir), 'checkpoint 2')
  proc.send_signal(signal.SIGTERM)
  rc, out, err = _finish(proc)
  assert rc == 130, out + err
  assert 'Traceback' not in err
  stopped = max(_steps(workdir))
  assert stopped < NUM_EPOCHS, 'the signal landed too late to test resume'
  assert (f'interrupted: SIGTERM: checkpoint of epoch {stopped} saved; rerun '
          f'the same command to resume') in err
  assert len(workdir_lib.read_history(workdir)) == stopped
  assert not os.path.exists(os.path.join(workdir, workdir_lib.EVAL_FILE))

  # SIGKILL mid-run, right after the next checkpoint.
  proc = _start(workdir, run_flags, SLOW)
  _wait_for(proc, lambda: max(_steps(workdir)) > stopped, 'a new checkpoint')
  proc.kill()
  _finish(proc)
  latest = max(_steps(workdir))
  assert latest < NUM_EPOCHS, 'the kill landed too late to test resume'
  # What a kill at other moments leaves: a save cut short (orbax's temporary
  # directory of the next step) and history.json one epoch behind the
  # checkpoint (killed between the commit and the history write).
  for step in {latest + 1, NUM_EPOCHS}:
    shutil.copytree(
        os.path.join(workdir, 'checkpoints', str(latest)),
        os.path.join(workdir, 'checkpoints', f'{step}.orbax-checkpoint-tmp'),
        ignore=shutil.ignore_patterns('commit_success.txt', '*METADATA*'))
  workdir_lib.write_history(
      workdir, workdir_lib.read_history(workdir)[:latest - 1])

  rc, out, err = _run(workdir, run_flags)
  assert rc == 0, out + err
  assert f'Resuming from the checkpoint of epoch {latest}.' in out
  assert _results(workdir) == _results(reference)
  # Early-stopping state (best, best epoch, wait) and history included.
  assert _latest_meta(workdir) == _latest_meta(reference)
  assert _latest_meta(workdir)['history'] == _results(reference)[0]
  assert not [n for n in os.listdir(os.path.join(workdir, 'checkpoints'))
              if 'tmp' in n]


def test_rerunning_a_finished_run_changes_nothing(reference, run_flags):
  before = _snapshot(reference)
  rc, out, err = _run(reference, run_flags)
  assert rc == 0, out + err
  assert 'this run has already finished; nothing changed' in out
  assert ('train on with a higher --config.num_epochs and '
          f'--config.allow_config_change=True (all {NUM_EPOCHS} epochs are '
          'trained).') in out
  ev = workdir_lib.read_json(os.path.join(reference, workdir_lib.EVAL_FILE))
  assert f'top-1 {ev["test_top1"]:.4f}' in out
  assert _snapshot(reference) == before
  # An allowed config change that cannot continue the run records nothing.
  rc, out, err = _run(reference, run_flags + [
      '--config.learning_rate=0.5', '--config.allow_config_change=True'])
  assert rc == 0, out + err
  assert 'this run has already finished; nothing changed' in out
  assert 'config fields' not in out and 'changed (previous values' not in out
  assert _snapshot(reference) == before


def _copy_of_run(run, config, tmp_path):
  """A copy of workdir `run`; `config` (configs/test.py) updated to the
  config.json it ran, so that the copy resumes."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(run, workdir)
  ran = workdir_lib.read_json(os.path.join(workdir, workdir_lib.CONFIG_FILE))
  config.update({k: ran[k] for k in (
      'data_dir', 'train_subset', 'test_subset', 'num_epochs', 'patience',
      'checkpoint_every_epochs', 'compilation_cache_dir')})
  return workdir


def _refusals(config, workdir, capsys, modes=('train', 'eval')):
  """The error output of each mode, each of which must exit 1 and leave
  every file of `workdir` as it was."""
  saved = _snapshot(workdir)
  errors = []
  for mode in modes:
    assert cli.run(config, workdir, mode) == 1
    errors.append(capsys.readouterr().err)
  assert _snapshot(workdir) == saved
  return errors


def test_damaged_json_is_rewritten_from_the_checkpoint_or_named(
    reference, tiny_config, tmp_path, capsys):
  workdir = _copy_of_run(reference, tiny_config, tmp_path)
  history_path = os.path.join(workdir, workdir_lib.HISTORY_FILE)
  with open(history_path, 'r+') as f:  # Cut short.
    f.truncate(os.path.getsize(history_path) // 2)
  with open(os.path.join(workdir, workdir_lib.EVAL_FILE), 'wb') as f:
    f.write(b'\xff\x00 not json')
  # The checkpoint holds the history: both files are written again.
  assert cli.run(tiny_config, workdir, 'train') == 0
  assert _results(workdir) == _results(reference)
  capsys.readouterr()
  # config.json has no copy: named, nothing touched.
  config_path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  with open(config_path, 'a') as f:
    f.write('}')
  for err in _refusals(tiny_config, workdir, capsys):
    assert err.startswith(f'error: {config_path} is damaged, not JSON ('), err
    assert err.endswith('): restore it or move it away\n'), err


@pytest.mark.parametrize('checkpoints', ['none', 'an empty folder'])
def test_a_results_copy_is_not_trained_over(checkpoints, reference, tiny_config,
                                            tmp_path, capsys):
  """A finished run's JSON files without checkpoints (as results/ keeps
  them, and a sweep counts as done): train refuses, touching nothing."""
  workdir = _copy_of_run(reference, tiny_config, tmp_path)
  shutil.rmtree(os.path.join(workdir, workdir_lib.CHECKPOINT_DIR))
  if checkpoints == 'an empty folder':  # As rsync --exclude 'checkpoints/*'.
    os.mkdir(os.path.join(workdir, workdir_lib.CHECKPOINT_DIR))
  train_err, eval_err = _refusals(tiny_config, workdir, capsys)
  assert train_err == (
      f"error: {workdir!r} holds a finished run's eval.json and history.json "
      "without its checkpoints (a copy, as results/ keeps them): nothing to "
      "train or resume there; use another --workdir\n")
  assert eval_err == (
      f"error: {workdir!r} holds a finished run's results without its "
      "checkpoints (a copy, as results/ keeps them): its test result is in "
      "eval.json; this mode needs the checkpoints\n")
  from cifar_flax import multi_seed  # pylint: disable=g-import-not-at-top
  assert multi_seed.is_done(workdir, tiny_config)  # A sweep keeps it.


@pytest.mark.parametrize('damage', ['arrays', 'state', 'meta'])
def test_damaged_checkpoint_is_named_and_left_as_it_is(
    damage, reference, tiny_config, tmp_path, capsys, monkeypatch):
  workdir = _copy_of_run(reference, tiny_config, tmp_path)
  # As main.py does (the hook goes back after the test).
  monkeypatch.setattr(sys, 'unraisablehook', sys.unraisablehook)
  checkpointing.drop_closed_loop_reports()
  for step in _steps(workdir):  # The latest (train) and the best (eval).
    path = os.path.join(workdir, 'checkpoints', str(step))
    if damage == 'arrays':  # The chunks of every array, gone.
      for d, _, files in os.walk(os.path.join(path, 'state')):
        if os.path.basename(d) == 'd':
          for f in files:
            os.remove(os.path.join(d, f))
    elif damage == 'state':
      shutil.rmtree(os.path.join(path, 'state'))
    else:
      with open(os.path.join(path, 'meta', 'metadata'), 'w') as f:
        f.write('{"epoch": ')
  for err in _refusals(tiny_config, workdir, capsys):
    assert err.startswith(f'error: checkpoint {workdir}/checkpoints/'), err
    assert ' cannot be read (' in err, err
    assert err.endswith('): it is damaged; move it away to go on from an '
                        'earlier checkpoint, or train in a new --workdir\n')


def test_only_orbax_closed_loop_reports_are_dropped(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', lambda u: seen.append(u))
  checkpointing.drop_closed_loop_reports()
  report = lambda e: type('Unraisable', (), {'exc_value': e})()
  for e in (RuntimeError('Event loop is closed'), RuntimeError('other'),
            ValueError('Event loop is closed')):
    sys.unraisablehook(report(e))
  assert [str(u.exc_value) for u in seen] == ['other', 'Event loop is closed']


def test_finished_run_continues_with_allowed_config_change(reference,
                                                           run_flags, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  rc, out, err = _run(workdir, run_flags + [
      f'--config.num_epochs={NUM_EPOCHS + 1}',
      '--config.allow_config_change=True'])
  assert rc == 0, out + err
  history, ev = _results(workdir)
  assert history[:NUM_EPOCHS] == _results(reference)[0]
  assert [r['epoch'] for r in history] == list(range(1, NUM_EPOCHS + 2))
  changes = workdir_lib.read_json(os.path.join(workdir,
                                               'config_changes.json'))
  assert changes == [{'num_epochs': {'old': NUM_EPOCHS,
                                     'new': NUM_EPOCHS + 1}}]
  assert ev['checkpoint_epoch'] == min(history, key=lambda r: r['val_loss'])[
      'epoch']


def test_finished_run_without_eval_json_rerun_on_other_test_images(
    reference, tiny_config, tmp_path, capsys):
  """The evaluation of a finished run whose eval.json was lost, rerun
  under another test set, is not the run's: it says eval.json is still to
  be written, and how."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  os.remove(os.path.join(workdir, workdir_lib.EVAL_FILE))
  tiny_config.update(train_subset=80, test_subset=8, num_epochs=NUM_EPOCHS,
                     patience=100, checkpoint_every_epochs=2,
                     allow_config_change=True)
  assert cli.run(tiny_config, workdir, 'train') == 0
  out = capsys.readouterr().out
  assert out.strip().endswith(
      f'{workdir}: its own eval.json is still to be written: python main.py '
      f'--config={workdir} --workdir={workdir} --mode=eval'), out
  assert not os.path.exists(os.path.join(workdir, workdir_lib.EVAL_FILE))
  assert workdir_lib.read_json(os.path.join(
      workdir, workdir_lib.OTHER_EVAL_FILE))['num_examples'] == 8


def test_allowed_change_that_the_checkpoint_cannot_take_is_refused(
    reference, tiny_config, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  saved = _snapshot(workdir)
  tiny_config.update(train_subset=80, test_subset=16, num_epochs=NUM_EPOCHS,
                     patience=100, checkpoint_every_epochs=2, model='cnn9')
  assert cli.run(tiny_config, workdir, 'train') == 1
  assert 'different config (fields model)' in capsys.readouterr().err
  tiny_config.allow_config_change = True
  assert cli.run(tiny_config, workdir, 'train') == 1
  err = capsys.readouterr().err
  assert err.startswith(f'error: the checkpoint of epoch {NUM_EPOCHS} in '
                        f'{workdir!r} does not fit this config (its '
                        f'config.json differs in model)')
  # Evaluating or predicting with it names the field too, without a traceback.
  for mode, images in (('eval', ()), ('predict', ('any.png',))):
    assert cli.run(tiny_config, workdir, mode, images) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: the checkpoint of epoch ') and (
        'does not fit this config (its config.json differs in model): use '
        f'the config it was trained with, --config={workdir} (its '
        'config.json)') in err, err
  assert _snapshot(workdir) == saved  # Nothing recorded, nothing changed.


def test_eval_refuses_a_config_that_computes_another_model(
    reference, tiny_config, tmp_path, capsys):
  """A config whose model restores but computes differently (activation,
  labels, dtype, centering) is refused before eval.json is touched."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  saved = _snapshot(workdir)
  tiny_config.update(train_subset=80, test_subset=16, num_epochs=NUM_EPOCHS,
                     patience=100, checkpoint_every_epochs=2)
  for field, value in (('activation', 'elu'), ('label_type', 'coarse'),
                       ('dtype', 'bfloat16')):
    config = tiny_config.copy_and_resolve_references()
    config[field] = value
    for mode, images in (('eval', ()), ('report', ()),
                         ('predict', ('any.png',))):
      assert cli.run(config, workdir, mode, images) == 1
      err = capsys.readouterr().err
      assert err == (f'error: {workdir!r} was trained with {field}='
                     f'{tiny_config[field]!r} (its config.json), this config '
                     f'gives {field}={value!r}: pass the config it was '
                     f'trained with (--config={workdir}, without overriding '
                     f'those fields), or --config.allow_config_change=True '
                     f'to evaluate it so anyway (its results are kept '
                     f'apart)\n'), err
  assert _snapshot(workdir) == saved
  # Allowed, an ELU evaluation runs; other labels still cannot.
  config = tiny_config.copy_and_resolve_references()
  config.update(activation='elu', allow_config_change=True)
  assert cli.run(config, workdir, 'eval') == 0
  # Not the run's result: eval.json is kept, the ELU one is named apart;
  # so are the ELU reports and predictions.
  other = os.path.join(workdir, workdir_lib.OTHER_EVAL_FILE)
  assert workdir_lib.read_json(other)['config_differs'] == {
      'activation': {'run': 'relu', 'given': 'elu'}}
  image = str(tmp_path / 'red.png')
  Image.new('RGB', (40, 30), (200, 20, 20)).save(image)
  assert cli.run(config, workdir, 'report') == 0
  assert cli.run(config, workdir, 'predict', (image,)) == 0
  assert "(not the run's own: this config differs from its config.json in " \
         "activation='elu' (the run's 'relu'))" in capsys.readouterr().out
  from cifar_flax import reports  # pylint: disable=g-import-not-at-top
  apart = os.path.join(workdir, reports.OTHER_REPORTS_DIR)
  assert os.path.exists(os.path.join(apart, 'activation=elu', 'curves.png'))
  assert os.path.exists(os.path.join(apart, 'activation=elu', 'predictions',
                                     'red_top5.png'))
  assert {p: v for p, v in _snapshot(workdir).items()
          if p != other and not p.startswith(apart)} == saved
  config.update(activation='relu', label_type='coarse')
  assert cli.run(config, workdir, 'eval') == 1
  assert 'the checkpoint has 100 classes but the config loads 20' in (
      capsys.readouterr().err)


def test_eval_report_predict_into_an_unwritable_workdir_stop_first(
    reference, tiny_config, tmp_path, capsys, monkeypatch):
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  from cifar_flax import predict  # pylint: disable=g-import-not-at-top
  from cifar_flax import reports  # pylint: disable=g-import-not-at-top
  workdir = _copy_of_run(reference, tiny_config, tmp_path)
  saved = _snapshot(workdir)
  image = str(tmp_path / 'photo.png')
  Image.new('RGB', (40, 30), (200, 30, 30)).save(image)
  # Root writes through chmod: the write probe fails as in a read-only
  # workdir. Nothing may be computed before the check.
  def refuse(**_):
    raise PermissionError(13, 'Permission denied')
  monkeypatch.setattr(workdir_lib.tempfile, 'NamedTemporaryFile', refuse)
  monkeypatch.setattr(evaluate, 'test_metrics', None)
  monkeypatch.setattr(predict, 'probabilities', None)
  for mode, images, where in (
      ('eval', (), workdir),
      ('report', (), os.path.join(workdir, reports.REPORTS_DIR)),
      ('predict', (image,),
       os.path.join(workdir, reports.REPORTS_DIR, predict.PREDICTIONS))):
    assert cli.run(tiny_config, workdir, mode, images) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and f'{where!r} is not writable: ' in err
    assert err.count('\n') == 1, err
  assert _snapshot(workdir) == saved


# --- 4. Divergence ------------------------------------------------------------------


def test_divergence_stops_and_keeps_best_checkpoint_and_history(
    reference, run_flags, tmp_path):
  del reference  # Only fills the compilation cache.
  workdir = str(tmp_path)
  rc, out, err = _run(workdir, run_flags, DIVERGE.format(epoch=3))
  assert rc == 1, out + err
  assert 'Traceback' not in err
  assert 'error: epoch 3: val_loss not finite' in err
  assert 'history of epochs 1-2 are intact' in err
  history = workdir_lib.read_history(workdir)
  assert [r['epoch'] for r in history] == [1, 2]
  assert all(isinstance(v, (int, float)) for r in history for v in r.values())
  assert _steps(workdir) and max(_steps(workdir)) <= 2  # Not the diverged.
  # The kept checkpoint evaluates in a fresh, unpatched process.
  rc, out, err = _run(workdir, run_flags + ['--mode=eval'])
  assert rc == 0, out + err
  ev = workdir_lib.read_json(os.path.join(workdir, workdir_lib.EVAL_FILE))
  best = min(history, key=lambda r: r['val_loss'])['epoch']
  assert ev['checkpoint_epoch'] == best


def test_divergence_in_the_first_epoch_says_there_is_no_checkpoint(
    reference, run_flags, tmp_path, tiny_config, capsys):
  del reference
  workdir = str(tmp_path)
  rc, out, err = _run(workdir, run_flags, DIVERGE.format(epoch=1))
  assert rc == 1, out + err
  assert 'Traceback' not in err
  assert 'error: epoch 1: val_loss not finite' in err
  assert 'No checkpoint was saved' in err
  assert _steps(workdir) == [] and workdir_lib.read_history(workdir) == []
  assert cli.run(tiny_config, workdir, 'eval') == 1
  assert 'error: no checkpoint in' in capsys.readouterr().err
  # The advice works: this workdir takes the lower learning rate.
  assert 'in this one with --config.allow_config_change=True' in err
  lower = ml_collections.ConfigDict(
      workdir_lib.read_json(os.path.join(workdir, workdir_lib.CONFIG_FILE)))
  lower.learning_rate /= 10
  with pytest.raises(workdir_lib.WorkdirError, match='different config'):
    workdir_lib.prepare(workdir, lower)
  assert workdir_lib.prepare(workdir, lower, allow_change=True) == [
      'learning_rate']


def _main(*args):
  """main.py with `args` in a subprocess, as a user runs it."""
  return subprocess.run([sys.executable, 'main.py', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


# --- 5. Bad configuration -----------------------------------------------------------


@pytest.mark.parametrize('override, field', [
    ('--config.bogus=1', 'bogus'),
    ('--config.batch_size=abc', 'batch_size'),
    ('--config.augment.zoom=0.1', 'zoom'),
])
def test_unknown_field_or_wrong_type_fails_at_parsing(override, field,
                                                      tmp_path):
  workdir = str(tmp_path / 'run')
  proc = _main('--config=configs/test.py', f'--workdir={workdir}', override)
  assert proc.returncode != 0
  assert field in proc.stderr and 'Traceback' not in proc.stderr
  assert not os.path.exists(workdir)


@pytest.mark.parametrize('name, text, said', [
    ('missing.py', None, "[Errno 2] No such file or directory"),
    ('folder', None, "config.json does not exist: '"),
    ('valueerror.py', 'def get_config():\n  raise ValueError("no such\\nrow")\n',
     'ValueError at line 2: no such row'),
    ('attribute.py', 'import ml_collections\ndef get_config():\n'
     '  return ml_collections.ConfigDict().model\n',
     'AttributeError at line 3: '),
    ('json.py', 'import json\ndef get_config():\n  return json.loads("{")\n',
     'JSONDecodeError at line 3: Expecting property name'),
    ('none.py', 'def get_config():\n  pass\n',
     'its get_config() returned None (no return statement?)'),
    ('dict.py', 'def get_config():\n  return {"model": "cnn5"}\n',
     'its get_config() returned a dict, not an ml_collections.ConfigDict'),
    ('syntax.py', 'def get_config(:\n', 'syntax error at line 1'),
    ('config.json', '[1, 2]\n', 'config.json holds no config'),
    ('eval.json', '{"test_top1": 0.5}\n', 'eval.json holds no config (none '
     'of its keys is a config field)'),
    ('python.json', 'def get_config():\n  pass\n', 'python.json is damaged, '
     'not JSON ('),
    ('raises.py', 'def get_config():\n  return {}["model"]\n',
     "KeyError at line 2: 'model'"),
    ('empty.py', '', 'the config file defines no get_config()'),
])
def test_config_file_that_cannot_load_is_one_line(name, text, said, tmp_path):
  path = tmp_path / name
  if name == 'folder':
    path.mkdir()
  elif text is not None:
    path.write_text(text)
  workdir = str(tmp_path / 'run')
  proc = _main(f'--config={path}', f'--workdir={workdir}')
  assert proc.returncode != 0
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert proc.stderr.startswith(f'FATAL Flags parsing error: --config={path}: ')
  assert said in proc.stderr
  assert not os.path.exists(workdir)


def test_a_run_evaluates_with_its_own_config(reference, run_flags, tmp_path,
                                              capsys):
  """--config=WORKDIR (or its config.json, or configs/run.py:WORKDIR) is the
  config the run trained with: eval needs no config file or overrides."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  os.remove(os.path.join(workdir, workdir_lib.EVAL_FILE))
  # The last --config counts, with overrides (scripts/train.sh gives
  # configs/final.py first; ml_collections, given two, defined each override
  # flag twice and failed).
  rc, out, err = _run(workdir, ['--config=configs/final.py',
                                f'--config={workdir}', '--mode=eval',
                                '--config.eval_batch_size=8'])
  assert rc == 0, out + err
  assert _results(workdir) == _results(reference)
  # Flags still override it. A result under another test set is not the
  # run's: it goes to eval_other_config.json, and nothing else changes.
  saved = _snapshot(workdir)
  rc, out, err = _run(workdir, [f'--config={workdir}/config.json',
                                '--mode=eval', '--config.test_subset=8'])
  assert rc == 0, out + err
  other = os.path.join(workdir, workdir_lib.OTHER_EVAL_FILE)
  assert out.strip().endswith(
      f"-> {other} (not the run's own: this config differs from its "
      "config.json in test_subset=8 (the run's 16))"), out
  ev = workdir_lib.read_json(other)
  assert ev['num_examples'] == 8 and ev['config_differs'] == {
      'test_subset': {'run': 16, 'given': 8}}
  assert {p: v for p, v in _snapshot(workdir).items() if p != other} == saved
  # An older run's config.json lacks newer fields (defaults) or holds removed
  # ones (ignored), with a warning each; allow_config_change, a permission
  # for one command, is not read back; a value of the wrong type is refused.
  from configs import run as run_config  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  ran = workdir_lib.read_json(path)
  assert workdir_lib.config_to_dict(run_config.get_config(workdir)) == ran
  workdir_lib.write_json(path, {
      k: v for k, v in ran.items() if k not in ('model', 'adam_keras_epsilon')
  } | {'removed_field': 1, 'allow_config_change': True})
  config = run_config.get_config(workdir)
  assert config.model == 'cnn9' != ran['model']  # default.py's.
  assert config.adam_keras_epsilon is False  # As runs before the field.
  assert 'removed_field' not in config and not config.allow_config_change
  err = capsys.readouterr().err
  assert "config.json lacks model: configs/default.py's values used" in err
  assert 'predates adam_keras_epsilon (set to False, as it ran)' in err
  assert 'does not know, ignored: removed_field' in err
  for field, value in (('num_epochs', None), ('batch_size', True),
                       ('augment_validation', 0), ('augment', 3)):
    workdir_lib.write_json(path, dict(ran, **{field: value}))
    with pytest.raises(ValueError, match=f'field {field}={value!r}, where '
                       'configs/default.py holds a'):
      run_config.get_config(workdir)
  # The same refusal, whichever way --config names the run and from
  # wherever main.py runs (the message shows --config as typed).
  workdir_lib.write_json(path, dict(ran, model=5))
  said = (f": {path}: field model=5: Could not override field 'model' "
          "(reference). 5 is of original type <class 'int'> and cannot be "
          "casted to type <class 'str'>\n")
  home, name = os.path.split(workdir)
  for args, typed, cwd in (
      ([f'--config={workdir}'], workdir, ROOT),
      (['--config=configs/final.py', f'--config={workdir}'], workdir, ROOT),
      (['--config', path], path, ROOT),
      ([f'--config=~/{name}'], f'~/{name}', '/'),
      ([f'--config={name}/'], f'{name}/', home)):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'main.py'), *args,
         f'--workdir={workdir}', '--mode=eval'], cwd=cwd, capture_output=True,
        text=True, timeout=120, env=dict(os.environ, HOME=home))
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f'FATAL Flags parsing error: --config={typed}: ') and (
            proc.stderr.endswith(said) or proc.stderr.endswith(
                said.replace(path, os.path.join(name, '', 'config.json')))
        ), proc.stderr


def test_stray_argument_is_one_line(tmp_path):
  proc = _main('--config=configs/test.py', f'--workdir={tmp_path}/run', 'eval')
  assert proc.returncode == 1
  assert proc.stderr == ("FATAL Flags parsing error: unexpected arguments "
                         "['eval'] (flags only, e.g. --mode=eval)\n")
  proc = _main(f'--workdir={tmp_path}/run', '--mode=eval')  # No --config.
  assert proc.returncode == 1
  assert proc.stderr.startswith('FATAL Flags parsing error: flag '
                                '--config=None: Flag --config must have a '
                                'value other than None.\n'), proc.stderr


def test_unreadable_flagfile_is_one_line(tmp_path):
  missing = tmp_path / 'missing.cfg'
  proc = _main(f'--flagfile={missing}', '--config=configs/test.py',
               f'--workdir={tmp_path}/run')
  assert proc.returncode == 1
  assert proc.stderr == ('FATAL Flags parsing error: Unable to open flagfile: '
                         '[Errno 2] No such file or directory: '
                         f"'{missing}'\n"), proc.stderr


def test_config_files_own_error_is_not_blamed_on_an_override(tmp_path):
  """A field the config file itself lacks, part of an override's name."""
  path = tmp_path / 'lr.py'
  path.write_text('from configs import default\ndef get_config():\n'
                  '  c = default.get_config()\n'
                  '  c.lr = c.learning_rate * c.schedule\n  return c\n')
  proc = _main(f'--config={path}', f'--workdir={tmp_path}/run',
               '--config.lr_schedule=cosine')
  assert proc.returncode == 1
  assert proc.stderr == (
      f"FATAL Flags parsing error: --config={path}: cannot load the config "
      "file (AttributeError at line 4: 'schedule' Did you mean \"lr_schedule\" "
      'instead of "schedule"?)\n'), proc.stderr


def test_near_miss_field_is_named_with_the_field_meant(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = _main('--config=configs/test.py', f'--workdir={workdir}',
               '--config.augment.zoom_rang=0.1')
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
      "FATAL Flags parsing error: --config.augment.zoom_rang=0.1: the config "
      "has no field 'zoom_rang' (all fields: configs/default.py). Did you mean "
      '"zoom_range" instead of "zoom_rang"?')
  assert not os.path.exists(workdir)
  # A sweep's overrides start empty: one field of them is no field yet.
  proc = _main('--config=configs/paper_table.py', f'--workdir={workdir}',
               '--mode=sweep', '--config.overrides.num_epochs=5')
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
      "FATAL Flags parsing error: --config.overrides.num_epochs=5: the config "
      "has no field 'num_epochs' (a sweep's overrides take new fields only "
      "whole, and replace the config's own: "
      """--config.overrides='{"num_epochs": 5}')""")
  # The hint keeps a variant's own overrides.
  proc = _main('--config=configs/paper_table.py:tiny', f'--workdir={workdir}',
               '--mode=sweep', '--config.overrides.augment.zoom_range=0.1')
  assert proc.returncode != 0
  hint = proc.stderr.strip().splitlines()[-1]
  assert hint.endswith("}')"), hint
  assert json.loads(hint.split("--config.overrides='")[1][:-2]) == {
      'model': 'cnn5', 'batch_size': 25, 'eval_batch_size': 16,
      'num_epochs': 3, 'patience': 1, 'compilation_cache_dir': '',
      'augment': {'zoom_range': 0.1}}
  assert not os.path.exists(workdir)


@pytest.mark.parametrize('field, value', [
    ('batch_size', 1000),  # More than the 200 training images.
    ('patience', -1),
    ('validation_fraction', 0.0),
    ('validation_fraction', 1.0),
    ('model', 'cnn7'),
    ('optimizer', 'adagrad'),
    ('pad_input_channels', -1),
    ('learning_rate', float('inf')),
    ('epsilon', 0.0),
    ('adam_b2', -0.1),
    ('rmsprop_decay', 1.0),
])
def test_impossible_value_fails_before_any_work(field, value, tiny_config,
                                                tmp_path, capsys):
  tiny_config[field] = value
  workdir = str(tmp_path / 'run')
  # The batch size is checked against the data, which only training loads.
  for mode in ('train',) if field == 'batch_size' else ('train', 'eval'):
    assert cli.run(tiny_config, workdir, mode) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: config.{field}: ') and err.count('\n') == 1
    assert not os.path.exists(workdir)


@pytest.mark.parametrize('settings, problem', [
    ({'model': 'fastnet'}, "applies to cnn9 and cnn5, not to 'fastnet'"),
    ({'pad_input_channels': 8},
     'and pad_input_channels both change the first conv: set one '
     '(pad_input_channels is 8)'),
])
def test_first_conv_im2col_where_it_cannot_apply(settings, problem,
                                                 tiny_config, tmp_path,
                                                 capsys):
  tiny_config.first_conv_im2col = True
  config_checks.validate(tiny_config)  # cnn5 alone: fine.
  tiny_config.update(settings)
  workdir = str(tmp_path / 'run')
  for mode in ('train', 'eval'):
    assert cli.run(tiny_config, workdir, mode) == 1
    assert capsys.readouterr().err == (
        f'error: config.first_conv_im2col: {problem}\n')
    assert not os.path.exists(workdir)


# --- 6. Workdir ---------------------------------------------------------------------


def _unwritable_workdirs(tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  paths = [str(a_file / 'run'), '/proc/cifar_flax_run']
  if os.geteuid() != 0:  # chmod does not stop root.
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o500)
    paths.append(str(locked / 'run'))
  return paths


def test_unwritable_workdir_fails_before_training(tiny_config, tmp_path,
                                                  capsys, monkeypatch):
  from cifar_flax import train  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(train, 'Programs', None)  # Training would crash.
  for workdir in _unwritable_workdirs(tmp_path):
    assert cli.run(tiny_config, workdir, 'train') == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: workdir {workdir!r} is not writable')


def test_a_field_added_since_the_run_counts_with_its_value_then(
    tiny_config, tmp_path, monkeypatch):
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path)
  workdir_lib.prepare(workdir, tiny_config)
  path = os.path.join(workdir, 'config.json')
  ran = workdir_lib.read_json(path)
  del ran['activation'], ran['test_subset']  # As if added since it ran.
  workdir_lib.write_json(path, ran)
  monkeypatch.setitem(workdir_lib.ADDED_FIELDS, 'activation', 'relu')
  assert evaluate.differing_fields(tiny_config, workdir) == {}
  tiny_config.activation, tiny_config.test_subset = 'elu', 100
  # test_subset: no value for runs before it; not compared.
  assert evaluate.differing_fields(tiny_config, workdir) == {
      'activation': ('relu', 'elu')}


def test_a_change_to_the_test_alone_points_to_eval_mode(tiny_config, tmp_path):
  workdir = str(tmp_path)
  workdir_lib.prepare(workdir, tiny_config)
  tiny_config.augment_test = True
  with pytest.raises(workdir_lib.WorkdirError, match=(
      r'\(fields augment_test\); to evaluate it so, --mode=eval \(the result '
      r'goes to eval_other_config.json, beside its own eval.json\); or use')):
    workdir_lib.prepare(workdir, tiny_config)
  tiny_config.learning_rate *= 2  # A training field too: no such hint.
  with pytest.raises(workdir_lib.WorkdirError) as e:
    workdir_lib.prepare(workdir, tiny_config)
  assert '--mode=eval' not in str(e.value)


def test_workdir_of_another_config_is_refused(tiny_config, tmp_path, capsys):
  workdir = str(tmp_path)
  workdir_lib.prepare(workdir, tiny_config)
  saved = _snapshot(workdir)
  tiny_config.learning_rate = 0.1
  tiny_config.augment.zoom_range = 0.1
  assert cli.run(tiny_config, workdir, 'train') == 1
  err = capsys.readouterr().err
  assert 'holds a run with a different config (fields augment.zoom_range, ' \
         'learning_rate)' in err
  assert _snapshot(workdir) == saved
  # Fields of RESUMABLE_KEYS may change; the file then records the new value.
  tiny_config.learning_rate, tiny_config.augment.zoom_range = 1e-3, 0.2
  tiny_config.eval_batch_size = 40
  workdir_lib.prepare(workdir, tiny_config, ignore_keys=('eval_batch_size',))
  assert workdir_lib.read_json(os.path.join(workdir, 'config.json'))[
      'eval_batch_size'] == 40
  assert not os.path.exists(os.path.join(workdir, 'config_changes.json'))
  # Allowed, a change is recorded field by field, nested ones dotted.
  tiny_config.learning_rate, tiny_config.augment.zoom_range = 0.1, 0.1
  changed = workdir_lib.prepare(workdir, tiny_config, allow_change=True)
  assert changed == ['augment.zoom_range', 'learning_rate']
  workdir_lib.record_config_change(workdir, tiny_config, changed)
  assert workdir_lib.read_json(os.path.join(workdir, 'config_changes.json')) \
      == [{'augment.zoom_range': {'old': 0.2, 'new': 0.1},
           'learning_rate': {'old': 1e-3, 'new': 0.1}}]
  assert workdir_lib.read_json(os.path.join(workdir, 'config.json'))[
      'augment']['zoom_range'] == 0.1
  # allow_config_change, a permission for one command, is saved as False.
  assert workdir_lib.read_json(os.path.join(workdir, 'config.json'))[
      'allow_config_change'] is False
  # A field removed since is no difference.
  path = os.path.join(workdir, 'config.json')
  workdir_lib.write_json(path, dict(workdir_lib.read_json(path),
                                    flatten_optimizer=False))
  assert workdir_lib.prepare(workdir, tiny_config) == []
  # A config.json from before a field was added ran as ADDED_FIELDS says:
  # that value is the same config, another differs.
  old = workdir_lib.read_json(path)
  del old['adam_keras_epsilon']
  workdir_lib.write_json(path, old)
  tiny_config.adam_keras_epsilon = False
  assert workdir_lib.prepare(workdir, tiny_config) == []
  assert workdir_lib.read_json(path)['adam_keras_epsilon'] is False
  workdir_lib.write_json(path, old)
  tiny_config.adam_keras_epsilon = True
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r'different config \(fields adam_keras_epsilon\)'):
    workdir_lib.prepare(workdir, tiny_config)


# --- 7. Evaluation without a checkpoint ---------------------------------------------


def test_eval_without_checkpoint_is_one_clear_line(tiny_config, tmp_path,
                                                   capsys):
  empty = tmp_path / 'empty'
  (empty / 'checkpoints').mkdir(parents=True)
  for workdir in (str(tmp_path / 'missing'), str(empty)):
    assert cli.run(tiny_config, workdir, 'eval') == 1
    err = capsys.readouterr().err
    assert err.startswith('error: no checkpoint in ') and err.count('\n') == 1
    assert 'train first' in err
  assert not os.path.exists(tmp_path / 'missing')


def test_tilde_in_workdir_and_images_means_home(tmp_path):
  # The shell leaves '~' after '=' as it is; so did we (a folder named '~').
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'main.py'),
       f'--config={ROOT}/configs/test.py', '--workdir=~/run', '--mode=predict',
       '--images=~/a.png,'],
      cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
      env={**os.environ, 'HOME': str(tmp_path / 'home'),
           'PYTHONPATH': ROOT})
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f'error: no checkpoint in {tmp_path}/home/run/checkpoints: '), proc.stderr
  assert not os.path.exists(tmp_path / '~')


def test_atomic_writes_keep_the_old_file_when_cut_short(tmp_path):
  path = str(tmp_path / 'paper_table.csv')
  with open(path, 'w') as f:
    f.write('old')
  with pytest.raises(RuntimeError):
    with workdir_lib.atomic_path(path) as tmp, open(tmp, 'w') as f:
      f.write('half')
      raise RuntimeError('killed midway')
  assert open(path).read() == 'old'
  assert os.listdir(tmp_path) == ['paper_table.csv']  # No temporary left.
  with workdir_lib.atomic_path(path) as tmp, open(tmp, 'w') as f:
    f.write('new')
  assert open(path).read() == 'new'
  assert os.listdir(tmp_path) == ['paper_table.csv']


def test_sigterm_outside_training_stops_with_one_line(tiny_config, tmp_path,
                                                      capsys, monkeypatch):
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(evaluate, 'evaluate', lambda *a: os.kill(
      os.getpid(), signal.SIGTERM))
  before = signal.getsignal(signal.SIGTERM)
  assert cli.run(tiny_config, str(tmp_path), 'eval') == 130
  assert capsys.readouterr().err == (
      'interrupted: --mode=eval stopped before it finished\n')
  assert signal.getsignal(signal.SIGTERM) == before
