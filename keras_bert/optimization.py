"""Optimizers and learning-rate schedules of BERT pre-training.

- `WarmupPolynomialDecay`: the original schedule of `optimization.py`: linear warm-up
  from 0 to the peak over `warmup_steps`, then polynomial (linear with `power=1`)
  decay to `end_learning_rate` at `decay_steps`, counted from step 0 as the original
  does (so the decay has already taken `warmup_steps / decay_steps` of the peak when
  warm-up ends).
- `AdamWeightDecay`: the original `AdamWeightDecayOptimizer`: Adam **without** bias
  correction, epsilon 1e-6, weight decay added to the update (`lr * (m / (sqrt(v) +
  eps) + wd * w)`), not applied to variables whose path matches `LayerNorm`,
  `layer_norm` or `bias`. Keras' own `AdamW` differs in one point that matters for
  reproducing the original (it bias-corrects the moments); `bias_correction=True`
  gives that variant.
- `Lamb`: layer-wise adaptive moments (You et al. 2019) as in the reference
  implementations used for large-batch BERT (NVIDIA, TF-Addons, `official/nlp`):
  bias-corrected Adam direction plus weight decay, scaled per variable by the trust
  ratio `||w|| / ||update||`. Keras' `Lamb` applies the decay outside the trust
  ratio and cannot exclude variables from layer adaptation, hence this one.
- `create_optimizer`: the usual wiring (schedule, clipping at global norm 1.0,
  exclusions, gradient accumulation) from a handful of arguments, by name:
  `"adamw"` (bias-corrected, as `torch.optim.AdamW`, Keras' `AdamW` and Hugging
  Face; the fine-tuning default), `"adam_weight_decay"` (the original, without bias
  correction; the pre-training default, as `run_pretraining.py`) or `"lamb"`.

Why two AdamWs: without bias correction the update is `(1 - b1^t) / sqrt(1 - b2^t)`
times the bias-corrected one: 3.2x at the first update, 6.5x at the 10th, 3.2x at
the 100th, 1.6x at the 460th. A pre-training run of 10^5 steps never notices; a
fine-tuning run of a few hundred steps trains at 2-6x the learning rate it was given
throughout, which drove token classification into the "everything is O" plateau at
learning rates where Hugging Face's recipe learns (measured step by step: the
bias-corrected variant matches `torch.optim.AdamW`'s first updates to 2e-6, the
original's are 5x larger after five steps).

Both optimizers clip the gradients to a global norm (`global_clipnorm=1.0` as the
original) and support Keras' `gradient_accumulation_steps`: gradients of that many
batches are averaged, then clipped and applied once. With accumulation the learning
rate schedule and the Adam/LAMB step count advance once per *applied* update, not per
batch (Keras' base optimizer would feed the schedule the batch count).

Under `tf.distribute` Keras clips each replica's gradients before summing them across
replicas (the original's TPU path, `CrossShardOptimizer`, did the same).

Embedding gradients: TensorFlow hands the gradient of a gathered table (word and
token-type embeddings) as `IndexedSlices` with one slice per *occurrence*, and
`keras.ops.square` squares those slices one by one, so Adam's second moment of a row
that occurs k times in a batch became the sum of k squares instead of the square of
the sum (Keras' own `Adam`/`AdamW` do the same): the token-type row, present at every
position, took updates ~9x larger than `torch.optim.AdamW`'s, and frequent word
pieces ~2x. These optimizers sum duplicate rows first (`sum_duplicate_rows`), before
the global norm is taken and again after cross-replica aggregation.

Example:
    >>> optimizer = create_optimizer("adamw", learning_rate=1e-4, num_train_steps=100000,
    ...                              num_warmup_steps=10000)
    >>> model.compile(optimizer=optimizer)
"""

import re

import keras
from keras import ops

# Variable paths that the original excludes from weight decay (and LAMB from
# layer adaptation). Matched with `re.search` against `variable.path`, e.g.
# "transformer_layer_0/attention_layer_norm/gamma" or "mlm/output_bias".
DEFAULT_EXCLUDE_FROM_WEIGHT_DECAY = ("LayerNorm", "layer_norm", "bias")


@keras.saving.register_keras_serializable(package="keras_bert")
class WarmupPolynomialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then polynomial decay: the original BERT schedule.

    For `step < warmup_steps` the rate is `initial_learning_rate * step /
    warmup_steps`; afterwards it is `(initial - end) * (1 - min(step, decay_steps) /
    decay_steps) ** power + end`. Step 0 therefore trains with rate 0 when there is a
    warm-up, exactly as the original.

    Args:
        initial_learning_rate: the peak rate.
        decay_steps: step at which the rate reaches `end_learning_rate` (the
            original passes `num_train_steps`).
        warmup_steps: linear warm-up steps; 0 for none. Defaults to 0.
        end_learning_rate: final rate. Defaults to 0.0.
        power: 1.0 for linear decay. Defaults to 1.0.
        decay_after_warmup: decay over `decay_steps - warmup_steps`, from the peak
            at the end of warm-up (Hugging Face's `get_linear_schedule_with_warmup`)
            instead of counting from step 0 (the original). Defaults to False.
        name: schedule name. Defaults to "WarmupPolynomialDecay".

    Example:
        >>> schedule = WarmupPolynomialDecay(1e-4, decay_steps=1000, warmup_steps=100)
        >>> float(schedule(50)), float(schedule(100)), float(schedule(1000))
        (5e-05, 9e-05, 0.0)
    """

    def __init__(self, initial_learning_rate, decay_steps, warmup_steps=0,
                 end_learning_rate=0.0, power=1.0, decay_after_warmup=False,
                 name="WarmupPolynomialDecay"):
        super().__init__()
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.warmup_steps = warmup_steps
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.decay_after_warmup = bool(decay_after_warmup)
        if self.decay_after_warmup and warmup_steps >= decay_steps:
            raise ValueError(f"warmup_steps ({warmup_steps}) must be below decay_steps "
                             f"({decay_steps}) with decay_after_warmup")
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = ops.cast(self.initial_learning_rate, "float32")
        end = ops.cast(self.end_learning_rate, "float32")
        if self.decay_after_warmup:
            span = float(self.decay_steps - self.warmup_steps)
            done = ops.clip(step - float(self.warmup_steps), 0.0, span) / span
        else:
            done = ops.minimum(step, float(self.decay_steps)) / float(self.decay_steps)
        decayed = (peak - end) * ops.power(1.0 - done, float(self.power)) + end
        if not self.warmup_steps:
            return decayed
        warmup = peak * step / float(self.warmup_steps)
        return ops.where(step < float(self.warmup_steps), warmup, decayed)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "warmup_steps": self.warmup_steps,
                "end_learning_rate": self.end_learning_rate, "power": self.power,
                "decay_after_warmup": self.decay_after_warmup, "name": self.name}


def sum_duplicate_rows(gradient):
    """A sparse (embedding) gradient with each row once: duplicate slices summed.

    Dense gradients, None and other backends' gradients are returned as they are.

    Args:
        gradient: a gradient as the backend produced it.

    Example:
        >>> g = tf.IndexedSlices(tf.ones((3, 2)), tf.constant([4, 4, 1]), tf.constant([5, 2]))
        >>> sum_duplicate_rows(g).indices.numpy(), sum_duplicate_rows(g).values.numpy()
        (array([4, 1], dtype=int32), array([[2., 2.], [1., 1.]], dtype=float32))
    """
    if gradient is None or not (hasattr(gradient, "indices") and hasattr(gradient, "dense_shape")):
        return gradient
    import tensorflow as tf

    unique, position = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(unique)[0])
    return tf.IndexedSlices(values, unique, gradient.dense_shape)


def _fusable(variable):
    """Whether `variable` can take TensorFlow's fused Adam kernel (TF backend, float)."""
    if keras.backend.backend() != "tensorflow":
        return False
    return keras.backend.standardize_dtype(variable.dtype) in (
        "float32", "float64", "bfloat16", "float16")


class _BertOptimizer(keras.optimizers.Optimizer):
    """Shared parts: exclusion patterns, in-update weight decay, schedule by update."""

    def __init__(self, learning_rate, weight_decay_rate, exclude_from_weight_decay,
                 beta_1, beta_2, epsilon, global_clipnorm, gradient_accumulation_steps,
                 name, **kwargs):
        # Weight decay is applied inside `update_step` (it is part of LAMB's trust
        # ratio), so Keras' decoupled decay stays off.
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, global_clipnorm=global_clipnorm,
                         gradient_accumulation_steps=gradient_accumulation_steps,
                         weight_decay=None, name=name, **kwargs)
        self.weight_decay_rate = weight_decay_rate
        self.exclude_from_weight_decay = tuple(exclude_from_weight_decay or ())
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def apply(self, grads, trainable_variables=None):
        # Before the global norm is taken: a duplicated slice would count k times.
        return super().apply([sum_duplicate_rows(g) for g in grads], trainable_variables)

    def _clip_gradients(self, grads):
        if (keras.backend.backend() != "tensorflow" or self.clipnorm
                or not (self.global_clipnorm and self.global_clipnorm > 0)):
            return super()._clip_gradients(grads)
        import tensorflow as tf

        # Keras' `clip_by_global_norm` squares every gradient into a temporary, then
        # sums it; TensorFlow's takes each norm with one fused `L2Loss` op. Same
        # scale, `clip_norm / max(norm, clip_norm)`, and the same NaN for a
        # non-finite norm. Missing (None) gradients stay None.
        clipped, _ = tf.clip_by_global_norm(list(grads), self.global_clipnorm)
        return clipped

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"])

    @staticmethod
    def _matches(variable, patterns):
        path = getattr(variable, "path", None) or variable.name
        return any(re.search(p, path) for p in patterns)

    def uses_weight_decay(self, variable):
        """Whether `variable` is decayed (rate > 0 and no exclusion pattern matches)."""
        return bool(self.weight_decay_rate) and not self._matches(
            variable, self.exclude_from_weight_decay)

    def _get_current_learning_rate(self):
        # The base class evaluates a schedule at the batch counter; with gradient
        # accumulation that runs the schedule `k` times too fast.
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return super()._get_current_learning_rate()

    def _moments(self, gradient, variable):
        """Updates and returns (m, v) of `variable` for `gradient`."""
        # Again here: the cross-replica sum of sparse gradients concatenates slices.
        gradient = sum_duplicate_rows(gradient)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign(m, ops.add(ops.multiply(m, self.beta_1),
                               ops.multiply(gradient, 1.0 - self.beta_1)))
        self.assign(v, ops.add(ops.multiply(v, self.beta_2),
                               ops.multiply(ops.square(gradient), 1.0 - self.beta_2)))
        return m, v

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update(weight_decay_rate=self.weight_decay_rate,
                      exclude_from_weight_decay=list(self.exclude_from_weight_decay),
                      beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="keras_bert")
class AdamWeightDecay(_BertOptimizer):
    """The original BERT optimizer: Adam with weight decay added to the update.

    Per variable, with gradient `g` (after global-norm clipping):
    `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
    `u = m / (sqrt(v) + eps) + wd * w` (the `wd * w` term only for variables that
    no exclusion pattern matches), `w -= lr * u`.

    Args:
        learning_rate: float or `LearningRateSchedule`. Defaults to 1e-4.
        weight_decay_rate: decoupled decay rate. Defaults to 0.01.
        exclude_from_weight_decay: regexes searched in `variable.path`; matching
            variables are not decayed. Defaults to ("LayerNorm", "layer_norm", "bias").
        beta_1: first-moment decay. Defaults to 0.9.
        beta_2: second-moment decay. Defaults to 0.999.
        epsilon: added to `sqrt(v)`. Defaults to 1e-6.
        bias_correction: divide the moments by `1 - beta^t` (Keras/HF AdamW); the
            original does not. Defaults to False.
        global_clipnorm: clip gradients to this global norm; None for no clipping.
            Defaults to 1.0.
        gradient_accumulation_steps: average this many batches per update; None for
            none. Defaults to None.
        fused: on the TensorFlow backend, update each float variable with
            TensorFlow's fused Adam kernel (the same arithmetic, one pass over the
            variable and its moments; about twice as fast as the op-by-op update).
            Other backends always use the op-by-op update. Defaults to True.
        name: optimizer name. Defaults to "adam_weight_decay".
        **kwargs: forwarded to `keras.optimizers.Optimizer` (`use_ema`, ...).

    Example:
        >>> opt = AdamWeightDecay(WarmupPolynomialDecay(1e-4, 10000, 1000))
    """

    def __init__(self, learning_rate=1e-4, weight_decay_rate=0.01,
                 exclude_from_weight_decay=DEFAULT_EXCLUDE_FROM_WEIGHT_DECAY, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-6, bias_correction=False, global_clipnorm=1.0,
                 gradient_accumulation_steps=None, fused=True, name="adam_weight_decay",
                 **kwargs):
        super().__init__(learning_rate, weight_decay_rate, exclude_from_weight_decay, beta_1,
                         beta_2, epsilon, global_clipnorm, gradient_accumulation_steps, name,
                         **kwargs)
        self.bias_correction = bias_correction
        self.fused = bool(fused)

    def update_step(self, gradient, variable, learning_rate):
        if self.fused and _fusable(variable):
            return self._fused_update_step(gradient, variable, learning_rate)
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        m, v = self._moments(gradient, variable)
        m_hat, v_hat = m, v
        if self.bias_correction:
            step = ops.cast(self.iterations + 1, variable.dtype)
            m_hat = ops.divide(m, 1.0 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
            v_hat = ops.divide(v, 1.0 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        update = ops.divide(m_hat, ops.add(ops.sqrt(v_hat), self.epsilon))
        if self.uses_weight_decay(variable):
            update = ops.add(update, ops.multiply(variable, self.weight_decay_rate))
        self.assign_sub(variable, ops.multiply(lr, update))

    def _fused_update_step(self, gradient, variable, learning_rate):
        """The same update as one `ResourceApplyAdam` kernel per variable.

        TensorFlow's fused Adam kernel reads and writes the variable and both
        moments in one vectorised, multi-threaded pass, where the op-by-op update
        makes about ten full-size temporaries per variable (a 12-million-value word
        embedding among them). Its update is `w -= lr_t * m / (sqrt(v) + eps_t)` with
        `lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)`, which equals the bias-corrected
        `lr * m_hat / (sqrt(v_hat) + eps)` when `eps_t = eps * sqrt(1 - b2^t)`; powers
        of 0 give the original's uncorrected update. Weight decay, `lr * wd * w` on
        the weights before the step, is applied first (it does not depend on the
        moments), as the update it replaces adds it to the same step.

        The kernel computes `1 - beta` in the variable's float32 (`1 - 0.999` is
        then 0.0010000467), so its steps differ from the op-by-op update (and from
        `torch.optim.AdamW`, which uses float64 there) by up to 2.3e-5 of a step.
        """
        import tensorflow as tf

        var = variable.value if isinstance(variable, keras.Variable) else variable
        index = self._get_variable_index(variable)
        m, v = self._momentums[index].value, self._velocities[index].value
        dtype = var.dtype
        # A sparse gradient becomes dense here, its duplicate rows summed.
        gradient = tf.cast(tf.convert_to_tensor(gradient), dtype)
        lr = tf.cast(learning_rate, dtype)
        beta_1, beta_2 = tf.constant(self.beta_1, dtype), tf.constant(self.beta_2, dtype)
        epsilon = tf.constant(self.epsilon, dtype)
        if self.bias_correction:
            step = tf.cast(self.iterations + 1, dtype)
            beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
            epsilon = epsilon * tf.sqrt(1.0 - beta_2_power)
        else:
            beta_1_power = beta_2_power = tf.constant(0.0, dtype)
        if self.uses_weight_decay(variable):
            var.assign_sub(var * (lr * tf.constant(self.weight_decay_rate, dtype)))
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power,
            beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
            grad=gradient, use_locking=False)

    def get_config(self):
        config = super().get_config()
        config.update(bias_correction=self.bias_correction, fused=self.fused)
        return config


@keras.saving.register_keras_serializable(package="keras_bert")
class Lamb(_BertOptimizer):
    """LAMB: Adam direction plus weight decay, scaled per variable by a trust ratio.

    Per variable: bias-corrected `m_hat`, `v_hat` as Adam,
    `u = m_hat / (sqrt(v_hat) + eps) + wd * w` (decay only where not excluded),
    `r = ||w|| / ||u||` (1 when either norm is 0, or for variables excluded from
    layer adaptation), `w -= lr * r * u`.

    Args:
        learning_rate: float or `LearningRateSchedule`. Defaults to 1e-3.
        weight_decay_rate: decay rate. Defaults to 0.01.
        exclude_from_weight_decay: regexes searched in `variable.path`. Defaults to
            ("LayerNorm", "layer_norm", "bias").
        exclude_from_layer_adaptation: regexes of variables updated without the
            trust ratio. Defaults to `exclude_from_weight_decay` (as the references).
        beta_1: first-moment decay. Defaults to 0.9.
        beta_2: second-moment decay. Defaults to 0.999.
        epsilon: added to `sqrt(v_hat)`. Defaults to 1e-6.
        global_clipnorm: clip gradients to this global norm; None for no clipping.
            Defaults to 1.0.
        gradient_accumulation_steps: average this many batches per update. Defaults
            to None.
        name: optimizer name. Defaults to "lamb".
        **kwargs: forwarded to `keras.optimizers.Optimizer`.
    """

    def __init__(self, learning_rate=1e-3, weight_decay_rate=0.01,
                 exclude_from_weight_decay=DEFAULT_EXCLUDE_FROM_WEIGHT_DECAY,
                 exclude_from_layer_adaptation=None, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 global_clipnorm=1.0, gradient_accumulation_steps=None, name="lamb", **kwargs):
        super().__init__(learning_rate, weight_decay_rate, exclude_from_weight_decay, beta_1,
                         beta_2, epsilon, global_clipnorm, gradient_accumulation_steps, name,
                         **kwargs)
        if exclude_from_layer_adaptation is None:
            exclude_from_layer_adaptation = self.exclude_from_weight_decay
        self.exclude_from_layer_adaptation = tuple(exclude_from_layer_adaptation)

    def uses_layer_adaptation(self, variable):
        """Whether `variable`'s update is scaled by the trust ratio."""
        return not self._matches(variable, self.exclude_from_layer_adaptation)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        m, v = self._moments(gradient, variable)
        m_hat = ops.divide(m, 1.0 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        v_hat = ops.divide(v, 1.0 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        update = ops.divide(m_hat, ops.add(ops.sqrt(v_hat), self.epsilon))
        if self.uses_weight_decay(variable):
            update = ops.add(update, ops.multiply(variable, self.weight_decay_rate))
        if self.uses_layer_adaptation(variable):
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            u_norm = ops.sqrt(ops.sum(ops.square(update)))
            safe_u_norm = ops.where(u_norm > 0, u_norm, 1.0)
            ratio = ops.where(ops.logical_and(w_norm > 0, u_norm > 0), w_norm / safe_u_norm, 1.0)
            update = ops.multiply(update, ratio)
        self.assign_sub(variable, ops.multiply(lr, update))

    def get_config(self):
        config = super().get_config()
        config.update(exclude_from_layer_adaptation=list(self.exclude_from_layer_adaptation))
        return config


OPTIMIZERS = ("adamw", "adam_weight_decay", "lamb")


def create_optimizer(name, learning_rate, num_train_steps, num_warmup_steps=0,
                     weight_decay_rate=0.01, end_learning_rate=0.0, power=1.0,
                     global_clipnorm=1.0, gradient_accumulation_steps=None, epsilon=1e-6,
                     beta_1=0.9, beta_2=0.999, decay_after_warmup=False):
    """A BERT optimizer by name with its schedule, wired as `run_pretraining.py`.

    Args:
        name: "adamw" (bias-corrected Adam with decoupled weight decay, as
            `torch.optim.AdamW`: what fine-tuning should use), "adam_weight_decay"
            (the original `AdamWeightDecayOptimizer`, no bias correction) or "lamb".
        learning_rate: peak learning rate.
        num_train_steps: optimizer updates in the run (decay end).
        num_warmup_steps: linear warm-up updates. Defaults to 0.
        weight_decay_rate: decay rate. Defaults to 0.01.
        end_learning_rate: rate at `num_train_steps`. Defaults to 0.0.
        power: decay power (1 = linear). Defaults to 1.0.
        global_clipnorm: gradient clipping norm; None for none. Defaults to 1.0.
        gradient_accumulation_steps: batches per update (1 or None for none).
            Defaults to None.
        epsilon: Adam epsilon. Defaults to 1e-6.
        beta_1: first-moment decay. Defaults to 0.9.
        beta_2: second-moment decay. Defaults to 0.999.
        decay_after_warmup: linear decay from the end of warm-up (Hugging Face's
            schedule) rather than from step 0 (the original's). Defaults to False.

    Example:
        >>> opt = create_optimizer("lamb", 1.76e-3, num_train_steps=125000,
        ...                        num_warmup_steps=3125)
    """
    schedule = WarmupPolynomialDecay(learning_rate, decay_steps=num_train_steps,
                                     warmup_steps=num_warmup_steps,
                                     end_learning_rate=end_learning_rate, power=power,
                                     decay_after_warmup=decay_after_warmup)
    accumulation = gradient_accumulation_steps if (gradient_accumulation_steps or 1) > 1 else None
    common = dict(learning_rate=schedule, weight_decay_rate=weight_decay_rate, beta_1=beta_1,
                  beta_2=beta_2, epsilon=epsilon, global_clipnorm=global_clipnorm,
                  gradient_accumulation_steps=accumulation)
    if name == "adamw":
        return AdamWeightDecay(bias_correction=True, name="adamw", **common)
    if name == "adam_weight_decay":
        return AdamWeightDecay(**common)
    if name == "lamb":
        return Lamb(**common)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
