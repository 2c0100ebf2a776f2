"""Every field of a cifar_flax run, set to the paper's final recipe.

Run:  python main.py --config=configs/default.py --workdir=runs/default
Variants import this file and change only what differs. Any field can be
overridden on the command line: --config.learning_rate=3e-4.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()

  # --- Data --------------------------------------------------------------
  # Directory holding cifar-100-python.tar.gz or an extracted
  # cifar-100-python/. Empty: tensorflow-datasets 'cifar100' (downloads when
  # online; TensorFlow is imported only then).
  config.data_dir = ''
  # Directory for tensorflow-datasets' own cache ('' = tfds default).
  config.tfds_data_dir = ''
  # 'fine' (100 classes) or 'coarse' (20 superclasses).
  config.label_type = 'fine'
  # Keras ImageDataGenerator(validation_split=0.2): the FIRST 20% of the
  # training set validates, the rest trains (model.fit would take the last).
  config.validation_fraction = 0.2
  # Use only the first N training images before the split (0 = all 50,000).
  config.train_subset = 0
  # Use only the first N test images (0 = all 10,000). Reported results use 0.
  config.test_subset = 0

  # --- Model ---------------------------------------------------------------
  # 'cnn9' (the paper's final network), 'cnn5' (its baseline) or 'fastnet'
  # (the modern recipe's BatchNorm net, sized by config.fastnet below).
  config.model = 'cnn9'
  # 'relu', 'elu' or 'gelu'.
  config.activation = 'relu'
  # Dropout after each pooled conv stack (cnn9 has 3 stacks, cnn5 has 3).
  config.conv_dropout = (0.2, 0.5, 0.5)
  # Dropout after each hidden dense layer.
  config.dense_dropout = 0.5
  # 2x2 max pooling: 'fused' (a reshape and max whose gradient XLA fuses),
  # 'fused_select' (the same, its gradient one select over the windows) or
  # 'reduce_window' (flax's nn.max_pool, gradient by select_and_scatter).
  # Values and gradients are bitwise equal (a window holding a NaN aside:
  # the fused forms pass it no gradient); only the speed differs.
  config.max_pool = 'fused'
  # cnn9/cnn5: zero-pad the images' 3 channels (and the first conv's kernel
  # rows) to this many inside the first conv; 0 = off. The same parameters
  # and results (tests/models_test.py); only cuDNN's kernel choice can change.
  # H200 (README, Performance): fp32 no faster (0.940 against 0.935 s/epoch);
  # bf16 with max_pool='fused_select' 0.534 against 0.552 (not split).
  config.pad_input_channels = 0
  # cnn9/cnn5: compute the first conv as one matmul over its 3x3 patches
  # (cifar_flax/models.py: im2col_conv) instead of a cuDNN conv, whose
  # 3-channel weight gradient ran a kernel without tensor cores in an H200
  # profile. The same parameters; results equal within float rounding
  # (tests/models_test.py). Not with pad_input_channels. A candidate
  # speed-up, not yet measured on a GPU.
  config.first_conv_im2col = False
  # With activation 'relu': take the gradient's mask from the relu's output
  # (y > 0) instead of its input (x > 0, as jax.nn.relu does). The same
  # values and gradients, bitwise (tests/models_test.py); on a GPU, XLA can
  # then fold each conv's relu into cuDNN's conv call (cifar_flax/models.py).
  # A candidate speed-up, not yet measured on a GPU.
  config.relu_grad_from_output = False
  # Compute dtype: 'float32' or 'bfloat16' (parameters, optimizer state and
  # loss stay float32).
  config.dtype = 'float32'
  # Sizes of 'fastnet' (cifar_flax/fast_models.py); other models ignore them.
  config.fastnet = ml_collections.ConfigDict()
  # Stem conv width, then one width per block (each block halves the size).
  config.fastnet.widths = (32, 64, 256, 256)
  # Convs per block (the third and later ones are residual).
  config.fastnet.block_depth = 2
  # Logits are multiplied by this (airbench: 1/9).
  config.fastnet.logit_scale = 1 / 9
  # flax BatchNorm momentum: running = m * running + (1 - m) * batch.
  config.fastnet.bn_momentum = 0.9

  # --- Optimisation --------------------------------------------------------
  # 'adam', 'rmsprop' or 'sgd' (the modern recipe). Keras defaults:
  # Adam(beta_1=0.9, beta_2=0.999, epsilon=1e-7); RMSprop(rho=0.9,
  # epsilon=1e-7, no momentum).
  config.optimizer = 'adam'
  # The paper's 1e-4 (it also tried 1e-2, 1e-3 and 1e-5: configs/adam_*).
  config.learning_rate = 1e-4
  # Adam's moment decays (Keras' beta_1, beta_2).
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  # RMSprop's decay of the squared-gradient average (Keras' rho).
  config.rmsprop_decay = 0.9
  # Keras' epsilon is 1e-7 (optax defaults to 1e-8).
  config.epsilon = 1e-7
  # True: Adam as Keras computes it, epsilon added to sqrt(v) before the bias
  # correction (cifar_flax/optimizers.py). False: optax.adam, epsilon added
  # after it, a slightly smaller epsilon in the first ~1000 steps; the GPU
  # runs of leases a-c (README) used this.
  config.adam_keras_epsilon = True
  # 'sgd' only: momentum (0 = none), Nesterov or not, weight decay on conv and
  # dense kernels (added to the gradient, as PyTorch's SGD does), and a linear
  # warm-up from 0 over `warmup_epochs` followed by `lr_schedule` ('constant',
  # or 'linear'/'cosine' decay towards 0, reached one step after the last).
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 0.0
  config.lr_schedule = 'constant'
  config.warmup_epochs = 0.0
  # Label smoothing of the training loss (0.0 = plain cross-entropy, as the
  # paper; reported losses are always plain cross-entropy).
  config.label_smoothing = 0.0
  # Training batch (the global batch, split over the devices).
  config.batch_size = 64
  # At most this many epochs (early stopping may end sooner).
  config.num_epochs = 100
  # Keras EarlyStopping(monitor='val_loss', patience=20, min_delta=0): stop
  # once `patience` epochs in a row bring no strict improvement.
  config.patience = 20
  # Initialisation, data order, augmentation and dropout all derive from it.
  config.seed = 0

  # --- Augmentation (Keras ImageDataGenerator semantics) --------------------
  config.augment = ml_collections.ConfigDict()
  # Shear angle range in DEGREES, as Keras reads shear_range: 0.2 means
  # +-0.2 degrees, a near no-op the paper probably did not intend.
  config.augment.shear_range = 0.2
  # Independent x and y zoom drawn from [1 - zoom_range, 1 + zoom_range].
  config.augment.zoom_range = 0.2
  # Horizontal shift up to this fraction of the width (continuous, bilinear).
  config.augment.width_shift_range = 0.1
  # Vertical shift up to this fraction of the height (the paper: none).
  config.augment.height_shift_range = 0.0
  # Mirror left-right with probability 0.5.
  config.augment.horizontal_flip = True
  # Subtract the per-channel mean of the training images (all inputs, not
  # only training batches, are centred the same way).
  config.augment.featurewise_center = True
  # Not Keras: random integer shift by up to N pixels each way, reflect-padded
  # (0 = off, the paper).
  config.augment.translate_pixels = 0

  # --- Evaluation, checkpoints and logging -----------------------------------
  # Validate on images augmented as in training (a new draw each epoch), as
  # the paper's Keras generator did for its validation subset, so val_loss,
  # early stopping and the best checkpoint are judged on augmented images.
  # False (ours): clean validation images.
  config.augment_validation = False
  # Evaluate on test images augmented as in training, as the paper's
  # evaluation through its augmenting generator did: one fixed draw, the same
  # for every run with the same eval_batch_size, prng_impl and augment ranges
  # (under it, those count as test fields too). False (ours): clean test
  # images. Evaluating a run trained without it, the result goes apart
  # (eval_other_config.json); reports and predictions stay on clean images.
  config.augment_test = False
  # Batch size of validation and test passes (the last batch is padded and
  # masked, never dropped).
  config.eval_batch_size = 1000
  # Besides every new best, save the latest state every N epochs (for resume).
  config.checkpoint_every_epochs = 1
  # Scan form: copy a state due to be saved to pinned host memory before the
  # next epoch is launched, so that orbax's copy does not queue behind that
  # epoch. The same checkpoints; a candidate speed-up, not yet measured on a
  # GPU (README, Results).
  config.checkpoint_copy_ahead = False
  # 'auto' (scan an epoch inside jit on GPU/TPU, a per-step jit loop on CPU,
  # where XLA runs scanned steps ~30x slower), 'scan' or 'step'.
  config.loop = 'auto'
  # Steps per iteration of the scanned epoch (lax.scan's unroll). cnn9 fp32 on
  # an H200 (README, Performance): 2 ran 1% faster epochs (0.935 against 0.944
  # s) but compiled 12.5 s against 6.9 s from an empty cache, so with an empty
  # cache 1 is faster for any run under ~600 epochs; from a warm cache (~1 s
  # to load) 2 is. Not measured for bf16 or other models.
  config.scan_unroll = 1
  # JAX's PRNG for augmentation and dropout: 'threefry2x32' (JAX's default)
  # or 'rbg' / 'unsafe_rbg' (cheaper random bits on GPU). Each is deterministic per seed, but
  # they draw different numbers; rbg also draws differently under jax.vmap, so
  # seeds trained together (sweep seeds_per_group != 1) need threefry2x32.
  config.prng_impl = 'threefry2x32'
  # Extra XLA flags for this run, appended to $XLA_FLAGS before JAX starts
  # its backend, e.g. '--xla_gpu_autotune_level=0' ('' = none).
  config.xla_flags = ''
  # Persistent XLA compilation cache ('' disables it).
  config.compilation_cache_dir = '~/.cache/cifar_flax/xla'
  # --mode=timed: seeds seed, seed+1, ... each trained from scratch with the
  # programs compiled once (no checkpoints; see cifar_flax/timed_runs.py).
  config.timed_seeds = 5

  # A workdir holding a run with another config is refused unless this is
  # True: then the run continues from its latest checkpoint under the new
  # values (e.g. more epochs) and the old ones are kept in config_changes.json.
  config.allow_config_change = False

  # --- --mode=benchmark (synthetic data of the real shapes) -----------------
  config.benchmark = ml_collections.ConfigDict()
  config.benchmark.num_train = 40_000  # Images per timed training epoch.
  config.benchmark.num_eval = 10_000   # Images per timed evaluation pass.
  config.benchmark.epochs = 3          # Timed epochs after the first.
  # Also time the same epoch as a plain per-step jit loop.
  config.benchmark.compare_step_loop = True

  return config
