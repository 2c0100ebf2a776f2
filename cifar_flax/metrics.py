"""clu metric collections, computed inside the jitted steps.

Every metric takes a `mask` so padded examples of a last partial batch count
for nothing.
"""

from clu import metrics
import flax
import jax
import jax.numpy as jnp


def _top5_correct(logits, labels, **_):
  k = min(5, logits.shape[-1])
  top = jax.lax.top_k(logits, k)[1]
  return (top == labels[:, None]).any(axis=-1).astype(jnp.float32)


@flax.struct.dataclass
class Metrics(metrics.Collection):
  """Loss, top-1 and top-5 accuracy over (masked) examples."""
  loss: metrics.Average.from_output('loss')
  top1: metrics.Accuracy
  top5: metrics.Average.from_fun(_top5_correct)


def cross_entropy(logits, labels):
  """Per-example softmax cross-entropy, computed in float32."""
  logits = logits.astype(jnp.float32)
  return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None],
                              axis=-1)[:, 0]


def batch_metrics(logits, labels, mask):
  """Metrics of one batch; `mask` is 1.0 for real examples, 0.0 for padding."""
  return Metrics.single_from_model_output(
      loss=cross_entropy(logits, labels), logits=logits.astype(jnp.float32),
      labels=labels, mask=mask)
