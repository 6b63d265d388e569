"""The optimizers a ``train_step`` can carry, as a registry of classes.

Each class writes one Keras 3 optimizer's update rule with plain TF ops; its state lives in
``tf.Variable``s saved with the model (so tfload trains and resumes with it through the C API).
``MaskedOptimizer`` applies a rule per variable under the ``mask`` input: a variable whose mask
entry is 0 keeps its value bit for bit and so do its slots.

A rule with a ``fused`` form (SGD, SGD with momentum, Adam, AdamW) updates a variable with
TensorFlow's in-place training op (``ResourceApplyAdam``, ``ResourceApplyKerasMomentum``,
``ResourceApplyGradientDescent``: the same formula as Keras 3's, one kernel instead of a dozen ops
and three selects), run under a ``tf.cond`` on the variable's mask entry, in the name scope
``UPDATE_SCOPE`` + its index. TensorFlow does not fold that ``tf.cond`` when tfload specializes the
step on a constant mask (its Switch nodes stay), so tfload replaces it with the taken branch by
its name; and the gradient reaches the ``tf.cond`` through a ``tf.where`` on the same entry that
does fold: a masked variable's gradient is then pruned from the specialized step, as with the
selects. The
other rules write ``update``'s composite math and keep it under ``tf.where`` selects.

Adding an optimizer is one class: subclass ``Optimizer``, set ``name`` and ``defaults`` (the
Keras defaults; every key but ``learning_rate`` becomes a ``tfload-export`` flag), list its
per-variable slots and write ``update``; decorate it with ``@register``.

Gradient clipping (``clipnorm``, ``clipvalue``, ``global_clipnorm``, as Keras 3's optimizers take
them) applies to every optimizer. A setting is recorded only when given, so the record of an
export without clipping is what it always was. The global norm is taken over the variables the
mask trains, as Keras takes it over a model's trainable variables.

Weight decay (``weight_decay``, Keras 3's decoupled form that every optimizer takes) is applied
before the update as Keras does, ``var - var * weight_decay * lr``, to the variables the mask
trains only. It is recorded only when given, except for AdamW, whose Keras default is 0.004.
"""
from __future__ import annotations

from ._tf import import_tf
from .contract import ContractError

OPTIMIZERS = {}
"""Registered optimizer classes by name, in registration order."""

UPDATE_SCOPE = "tfload_masked_update_"
"""Name scope of variable ``i``'s fused update: its ``tf.cond`` is the node
``tfload_masked_update_<i>/cond`` and its predicate is ``mask[i] > 0``. tfload's specialized step
reads the index from that name and replaces the ``tf.cond`` with the branch its constant mask
takes (src/model/taken_branches.rs), which TensorFlow cannot do itself once the ``tf.cond`` is
lowered to Switch and Merge nodes."""

CLIPPING = {
    "clipnorm": "clip each gradient to this L2 norm (Keras clipnorm)",
    "clipvalue": "clip each gradient element to [-v, v] (Keras clipvalue)",
    "global_clipnorm": "clip the gradients of the trained variables to this global L2 norm (Keras global_clipnorm)",
}
"""Gradient clipping settings every optimizer takes (at most one), with their help text."""
WEIGHT_DECAY = "weight_decay"
"""The decoupled weight decay every optimizer takes (Keras 3 ``weight_decay``)."""


def register(cls):
    """Class decorator: make ``cls`` available as ``optimizer_config(cls.name)`` and ``--optimizer``."""
    if cls.name in OPTIMIZERS:
        raise ValueError(f"optimizer {cls.name!r} is registered twice")
    OPTIMIZERS[cls.name] = cls
    return cls


class Optimizer:
    """One update rule. ``cfg`` is the record's ``optimizer`` dict (name plus ``defaults`` keys)."""

    name = None
    defaults = {}
    help = {}
    """Help text of settings, for the command line (settings without one get a generic text)."""
    COUNTER_SLOTS = ("step",)
    """Slots that are int64 scalars (a count per variable) rather than tensors like the variable."""

    def __init__(self, cfg):
        self.cfg = cfg

    def slot_names(self):
        """Names of the per-variable state, in the order the slots are created and recorded."""
        return []

    def slot_initial_value(self, slot):
        """The value every element of a (non-counter) slot starts at."""
        return 0.0

    def update(self, tf, old, g, lr, slots):
        """``(new value, {slot: new slot value})`` of one variable for gradient ``g``.

        ``old`` is the variable's current value, ``lr`` the learning rate in its dtype, ``slots``
        its slot variables by name. Nothing is assigned here: ``MaskedOptimizer`` masks and assigns.
        """
        raise NotImplementedError

    fused = None
    """``fused(tf, var, g, lr, slots)``, when set: the update of ``update`` done in place on
    ``var`` and its slots by TensorFlow's training ops (called only where the variable trains)."""


@register
class SGD(Optimizer):
    """Keras 3 ``SGD``: plain, with momentum, or Nesterov momentum."""

    name = "sgd"
    defaults = {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False}

    def slot_names(self):
        return ["momentum"] if self.cfg["momentum"] != 0.0 else []

    def update(self, tf, old, g, lr, slots):
        if "momentum" not in slots:
            return old - g * lr, {}
        mom = tf.constant(self.cfg["momentum"], old.dtype)
        m_new = slots["momentum"] * mom - g * lr
        if self.cfg["nesterov"]:
            return old + (m_new * mom - g * lr), {"momentum": m_new}
        return old + m_new, {"momentum": m_new}

    def fused(self, tf, var, g, lr, slots):
        if "momentum" not in slots:
            tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=lr, delta=g)
            return
        # accum = accum * momentum - grad * lr; var += accum (Nesterov: accum * momentum - grad * lr)
        tf.raw_ops.ResourceApplyKerasMomentum(var=var.handle, accum=slots["momentum"].handle, lr=lr, grad=g,
                                              momentum=tf.constant(self.cfg["momentum"], var.dtype),
                                              use_nesterov=self.cfg["nesterov"])


@register
class Adam(Optimizer):
    """Keras 3 ``Adam``, with a step count per variable so that bias correction restarts for a
    variable that is unfrozen later."""

    name = "adam"
    defaults = {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}

    def slot_names(self):
        return ["m", "v", "step"]

    def update(self, tf, old, g, lr, slots):
        b1 = tf.constant(self.cfg["beta_1"], old.dtype)
        b2 = tf.constant(self.cfg["beta_2"], old.dtype)
        eps = tf.constant(self.cfg["epsilon"], old.dtype)
        step = slots["step"] + 1
        t = tf.cast(step, old.dtype)
        alpha = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        m_new = slots["m"] + (g - slots["m"]) * (1.0 - b1)
        v_new = slots["v"] + (tf.square(g) - slots["v"]) * (1.0 - b2)
        new = old - (m_new * alpha) / (tf.sqrt(v_new) + eps)
        return new, {"m": m_new, "v": v_new, "step": step}

    def fused(self, tf, var, g, lr, slots):
        # ResourceApplyAdam's CPU kernel computes what ``update`` writes, in the same order:
        # alpha = lr * sqrt(1 - b2^t) / (1 - b1^t); m += (g - m) * (1 - b1);
        # v += (g^2 - v) * (1 - b2); var -= m * alpha / (sqrt(v) + eps).
        dtype = var.dtype
        step = slots["step"].read_value() + 1
        t = tf.cast(step, dtype)
        b1 = tf.constant(self.cfg["beta_1"], dtype)
        b2 = tf.constant(self.cfg["beta_2"], dtype)
        tf.raw_ops.ResourceApplyAdam(var=var.handle, m=slots["m"].handle, v=slots["v"].handle,
                                     beta1_power=tf.pow(b1, t), beta2_power=tf.pow(b2, t), lr=lr, beta1=b1,
                                     beta2=b2, epsilon=tf.constant(self.cfg["epsilon"], dtype), grad=g)
        slots["step"].assign(step)


@register
class AdamW(Adam):
    """Keras 3 ``AdamW``: Adam whose weight decay (applied by ``MaskedOptimizer``) defaults to 0.004."""

    name = "adamw"
    defaults = {**Adam.defaults, WEIGHT_DECAY: 0.004}
    help = {WEIGHT_DECAY: "decoupled weight decay for any optimizer, var -= var * weight_decay * lr "
                          "before each update (Keras weight_decay; adamw's default 0.004, others none)"}


@register
class RMSprop(Optimizer):
    """Keras 3 ``RMSprop``: plain, with momentum, and/or centered."""

    name = "rmsprop"
    defaults = {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False}
    help = {"rho": "rmsprop: discount of the squared-gradient average (default 0.9)",
            "centered": "rmsprop: normalise by the gradient's estimated variance"}

    def slot_names(self):
        return (["velocity"] + (["momentum"] if self.cfg["momentum"] > 0 else [])
                + (["average_gradient"] if self.cfg["centered"] else []))

    def update(self, tf, old, g, lr, slots):
        rho = tf.constant(self.cfg["rho"], old.dtype)
        eps = tf.constant(self.cfg["epsilon"], old.dtype)
        new_slots = {"velocity": rho * slots["velocity"] + (1.0 - rho) * tf.square(g)}
        if self.cfg["centered"]:
            new_slots["average_gradient"] = rho * slots["average_gradient"] + (1.0 - rho) * g
            denominator = new_slots["velocity"] - tf.square(new_slots["average_gradient"]) + eps
        else:
            denominator = new_slots["velocity"] + eps
        increment = (lr * g) / tf.sqrt(denominator)
        if "momentum" not in slots:
            return old - increment, new_slots
        new_slots["momentum"] = tf.constant(self.cfg["momentum"], old.dtype) * slots["momentum"] + increment
        return old - new_slots["momentum"], new_slots


@register
class Adagrad(Optimizer):
    """Keras 3 ``Adagrad``: an accumulator of squared gradients per variable."""

    name = "adagrad"
    defaults = {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7}
    help = {"initial_accumulator_value": "adagrad: starting value of the accumulators (default 0.1)"}

    def slot_names(self):
        return ["accumulator"]

    def slot_initial_value(self, slot):
        return self.cfg["initial_accumulator_value"]

    def update(self, tf, old, g, lr, slots):
        accumulator = slots["accumulator"] + tf.square(g)
        eps = tf.constant(self.cfg["epsilon"], old.dtype)
        return old - (lr * g) / tf.sqrt(accumulator + eps), {"accumulator": accumulator}


def setting_names():
    """Every optimizer setting but the learning rate, over all registered optimizers, in order."""
    names = []
    for cls in OPTIMIZERS.values():
        names += [k for k in cls.defaults if k != "learning_rate" and k not in names]
    return names


def optimizer_config(name, **overrides):
    """The record's ``optimizer`` dict: ``name``'s Keras defaults with ``overrides`` (None = keep)."""
    name = name.lower()
    if name not in OPTIMIZERS:
        raise ContractError(f"unknown optimizer {name!r}; one of {sorted(OPTIMIZERS)}")
    cfg = {"name": name, **OPTIMIZERS[name].defaults}
    for k, v in overrides.items():
        if v is None:
            continue
        if k in CLIPPING:
            cfg[k] = float(v)
            if not cfg[k] > 0.0:
                raise ContractError(f"{k} must be > 0, not {v!r}")
            continue
        if k == WEIGHT_DECAY:
            cfg[k] = float(v)
            if not cfg[k] >= 0.0:
                raise ContractError(f"weight_decay must be >= 0, not {v!r}")
            continue
        if k not in cfg:
            raise ContractError(f"optimizer {name} has no setting {k!r}")
        cfg[k] = type(cfg[k])(v)
    clips = [k for k in CLIPPING if k in cfg]
    if len(clips) > 1:
        raise ContractError(f"give at most one of clipnorm, clipvalue, global_clipnorm, not {' and '.join(clips)}")
    return cfg


def _clip_by_norm(tf, g, clipnorm):
    """Keras 3's ``_clip_by_norm``: ``g * clipnorm / max(||g||, clipnorm)``, NaN-safe at 0."""
    l2sum = tf.reduce_sum(tf.square(g), keepdims=True)
    pred = l2sum > 0
    l2norm = tf.where(pred, tf.sqrt(tf.where(pred, l2sum, tf.ones_like(l2sum))), l2sum)
    return (g * clipnorm) / tf.maximum(l2norm, clipnorm)


def clip_gradients(cfg, grads, mask):
    """The gradients after the clipping ``cfg`` asks for (Keras 3's ``_clip_gradients``).

    ``global_clipnorm`` counts only the gradients of variables whose ``mask`` entry is on.
    """
    tf, _ = import_tf()
    if "clipnorm" in cfg:
        return [None if g is None else _clip_by_norm(tf, tf.convert_to_tensor(g), cfg["clipnorm"]) for g in grads]
    if "global_clipnorm" in cfg:
        squares = [tf.where(mask[i] > 0.0, tf.reduce_sum(tf.square(tf.cast(g, tf.float32))), 0.0)
                   for i, g in enumerate(grads) if g is not None]
        use_norm = tf.sqrt(tf.add_n(squares))
        clip = cfg["global_clipnorm"]
        scale = clip * tf.minimum(1.0 / use_norm, 1.0 / clip) + (use_norm - use_norm)
        return [None if g is None else g * tf.cast(scale, g.dtype) for g in grads]
    if "clipvalue" in cfg:
        v = cfg["clipvalue"]
        return [None if g is None else tf.clip_by_value(g, -v, v) for g in grads]
    return grads


class MaskedOptimizer:
    """Creates the optimizer's tf.Variables eagerly; ``apply`` is called inside a tf.function.

    ``variables`` (what the SavedModel saves) and ``records`` (the record's
    ``optimizer_variables``) list ``iterations`` first, then each variable's slots in order.
    """

    def __init__(self, cfg, tf_vars, var_names):
        tf, _ = import_tf()
        self.cfg = cfg
        self.rule = OPTIMIZERS[cfg["name"]](cfg)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="optimizer/iterations")
        self.variables = [self.iterations]
        self.records = [{"index": 0, "name": "iterations", "slot": "iterations", "variable_index": None,
                         "shape": [], "dtype": "int64",
                         "description": "number of train_step calls (every call, whatever the mask)"}]
        self.slots = [self._make_slots(tf, i, v, vname) for i, (v, vname) in enumerate(zip(tf_vars, var_names))]

    def _make_slots(self, tf, i, v, vname):
        slots = {}
        for s in self.rule.slot_names():
            if s in self.rule.COUNTER_SLOTS:
                var = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"optimizer/{s}/{vname}")
            elif self.rule.slot_initial_value(s) == 0.0:
                var = tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"optimizer/{s}/{vname}")
            else:
                var = tf.Variable(tf.fill(v.shape, tf.constant(self.rule.slot_initial_value(s), v.dtype)),
                                  trainable=False, name=f"optimizer/{s}/{vname}")
            slots[s] = var
            self.variables.append(var)
            self.records.append({"index": len(self.records), "name": f"{s}/{vname}", "slot": s,
                                 "variable_index": i, "shape": list(var.shape), "dtype": var.dtype.name})
        return slots

    def _decayed(self, tf, old, lr):
        """``old`` after Keras's decoupled weight decay, the value the update starts from."""
        decay = self.cfg.get(WEIGHT_DECAY)
        if not decay:
            return old
        return old - old * tf.constant(decay, old.dtype) * lr

    def apply(self, grads, tf_vars, mask, lr):
        """One masked update of every variable with a gradient; counts the call in ``iterations``."""
        tf, _ = import_tf()
        grads = clip_gradients(self.cfg, grads, mask)
        for i, (g, var) in enumerate(zip(grads, tf_vars)):
            if g is None:  # not connected to the loss: nothing moves
                continue
            g = tf.convert_to_tensor(g)
            on = mask[i] > 0.0
            slots = self.slots[i]
            lr_ = tf.cast(lr, var.dtype)
            if self.rule.fused is not None:
                with tf.name_scope(f"{UPDATE_SCOPE}{i}"):
                    self._apply_fused(tf, on, var, g, lr_, slots)
                continue
            old = tf.identity(var)
            new, new_slots = self.rule.update(tf, self._decayed(tf, old, lr_), g, lr_, slots)
            for s, value in new_slots.items():
                slots[s].assign(tf.where(on, value, slots[s]))
            var.assign(tf.where(on, new, old))
        self.iterations.assign_add(1)

    def _apply_fused(self, tf, on, var, g, lr, slots):
        """The rule's fused update of ``var``, run only when ``on``: a masked variable and its
        slots are not written at all. The ``tf.where`` feeding the gradient folds to a constant
        when the mask does (tfload's specialized step), so a masked gradient is not computed."""
        g = tf.where(on, g, tf.zeros(var.shape, g.dtype))

        def train():
            decay = self.cfg.get(WEIGHT_DECAY)
            if decay:
                old = var.read_value()
                var.assign(old - old * tf.constant(decay, var.dtype) * lr)
            self.rule.fused(tf, var, g, lr, slots)

        tf.cond(on, train, lambda: None)
