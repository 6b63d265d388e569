"""The ``tfload-export`` command: argparse options, then the library's functions."""
from __future__ import annotations

import argparse
import os
import sys

from ._tf import import_tf
from .allreduce import DEFAULT_TIMEOUT_SECONDS
from .check import check_export
from .contract import ContractError
from .export import export_trainable
from .head import head_layers, replace_head
from .losses import HEAD_ACTIVATION, LOSS_ALIASES
from .optimizers import CLIPPING, OPTIMIZERS, optimizer_config, setting_names
from .preprocessing import application_preprocess_mode
from .saved_model_source import export_saved_model_trainable
from .sources import load_source_model
from .weights import load_by_name

PROG = "tfload-export"


def _ints(text):
    return [int(t) for t in text.split(",") if t.strip()]


def _flag(setting):
    return "--" + setting.replace("_", "-")


def _add_optimizer_settings(group):
    """One flag per optimizer setting of the registry (``beta_1`` -> ``--beta-1``)."""
    for setting in setting_names():
        owners = [cls for cls in OPTIMIZERS.values() if setting in cls.defaults]
        default = owners[0].defaults[setting]
        text = next((cls.help[setting] for cls in owners if setting in cls.help), None) or \
            f"{', '.join(cls.name for cls in owners)} setting (default {default!r})"
        if isinstance(default, bool):
            group.add_argument(_flag(setting), action="store_true", default=None, help=text)
        else:
            group.add_argument(_flag(setting), type=type(default), help=text)
    for setting, text in CLIPPING.items():
        group.add_argument(_flag(setting), type=float, help=text + "; at most one of the three")


def build_arg_parser():
    """The command line's parser."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Export a Keras model as a trainable SavedModel (tfload train-step contract v1: "
                    "signatures serving_default, train_step, eval_step; record in "
                    "assets/tfload_contract.json).",
        epilog="Examples:\n"
               f"  {PROG} --model m.keras --num-classes 5 --default-freeze-base "
               "--optimizer adam -o out/\n"
               f"  {PROG} --weights w.weights.h5 --architecture arch.json -o out/\n"
               f"  {PROG} --application MobileNetV2 --input-shape 96,96,3 --alpha 0.35 "
               "--num-classes 3 --default-freeze-base -o out/\n"
               f"  {PROG} --check out/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("model source (one of --model, --architecture, --application, --saved-model)")
    src.add_argument("--saved-model", metavar="DIR",
                     help="a TF2 SavedModel directory: train through one of its signatures (restored "
                          "functions run as traced, in inference mode); its variables are frozen by "
                          "default when --num-classes adds a head")
    src.add_argument("--signature", default="serving_default",
                     help="with --saved-model: the signature to train through (default serving_default)")
    src.add_argument("--output", help="with --saved-model: the signature output to put the head on "
                                      "(needed when it has several)")
    src.add_argument("--train-restored", action="store_true",
                     help="with --saved-model and --num-classes: train the restored variables by default too")
    src.add_argument("--model", help="a .keras file or a legacy full-model .h5 file")
    src.add_argument("--weights", help="a .weights.h5 (Keras 3) or legacy .h5 weights file, loaded into "
                                       "the model from --architecture / --application / --model; with "
                                       "--application (and a new head) matched by layer name, every layer "
                                       "needing weights in the file")
    src.add_argument("--skip-mismatch", action="store_true",
                     help="with --weights and --application: keep the values of layers the file has no "
                          "(fitting) weights for instead of failing; the summary names them")
    src.add_argument("--architecture",
                     help="model JSON (model.to_json()), a .keras/.h5 model file, or module:function "
                          "/ file.py:function returning a keras.Model")
    src.add_argument("--application", help="a keras.applications name, built with weights=None")
    src.add_argument("--input-shape", type=_ints, help="application input shape, e.g. 96,96,3")
    src.add_argument("--alpha", type=float, help="application width multiplier (MobileNet*)")
    src.add_argument("--app-classes", type=int, default=1000,
                     help="application classes when its own head is kept (no --num-classes)")
    head = p.add_argument_group("head")
    head.add_argument("--num-classes", type=int, help="replace the head by a new Dense(N) layer, keeping the base")
    head.add_argument("--hidden-units", type=_ints, default=[], help="hidden Dense(relu) layers of the new head, e.g. 64 or 128,64")
    head.add_argument("--dropout", type=float, default=0.0, help="dropout rate before each new head Dense layer")
    head.add_argument("--head-names", type=lambda t: [n.strip() for n in t.split(",") if n.strip()],
                      help="names of the new head's Dense layers, hidden ones then the output (default "
                           "head_hidden..., head); name them as the --weights file does, e.g. dense,dense_1")
    head.add_argument("--default-freeze-base", action="store_true",
                      help="default mask: base variables 0 (frozen), head variables 1")
    head.add_argument("--class-names", help="comma-separated class names, in output order")
    tr = p.add_argument_group("training")
    tr.add_argument("--loss", default="sparse_categorical_crossentropy", choices=sorted(LOSS_ALIASES))
    tr.add_argument("--label-smoothing", type=float, default=0.0,
                    help="Keras label_smoothing for categorical_crossentropy and binary_crossentropy, "
                         "baked into the exported loss and recorded (default 0)")
    tr.add_argument("--sample-weights", action="store_true",
                    help="give train_step and eval_step a sample_weight input (float32 [batch]) so that "
                         "tfload train --class-weight / --sample-weight can weight examples as Keras fit does "
                         "(record: contract version 2)")
    tr.add_argument("--outputs", default="auto", choices=["auto", "probabilities", "logits"],
                    help="what the model outputs (sets from_logits); auto: probabilities if it ends in "
                         "softmax/sigmoid. A new head outputs probabilities unless 'logits'")
    tr.add_argument("--optimizer", default="sgd", choices=sorted(OPTIMIZERS))
    tr.add_argument("--learning-rate", type=float, help="default learning rate recorded (train_step takes it as input)")
    _add_optimizer_settings(tr)
    p.add_argument("--preprocess", default="auto",
                   help="none | unit (x/255) | tf (x/127.5-1) | torch | caffe | affine:SCALE,OFFSET; "
                        "auto = the application's own preprocessing, else none")
    tr.add_argument("--jit-compile", action="store_true",
                    help="compile train_step with XLA (faster on small models; tfload runs it through the C API)")
    tr.add_argument("--allreduce-timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS",
                    help="how long train_step_allreduce waits for a stalled peer in multi-worker training "
                         "(must cover the chief's validation and checkpoint time; default %(default)s)")
    tr.add_argument("--no-feature-cut", action="store_true",
                    help="do not record the base/head cut nor export the features / head_train_step / "
                         "head_eval_step signatures of tfload's frozen-base feature cache")
    tr.add_argument("--no-frozen-base-steps", action="store_true",
                    help="do not export the train_step_from_<layer> signatures (a step that runs no backward pass "
                         "below a cut, which tfload runs when the mask freezes everything under it)")
    tr.add_argument("--no-fused-batch-norm", action="store_true",
                    help="train BatchNormalization layers with Keras's own composite ops instead of TensorFlow's "
                         "fused kernel (slower; the step then equals Keras train_on_batch to float32 rounding of the same ops)")
    p.add_argument("--name", help="model name recorded (default: the Keras model's name)")
    p.add_argument("--seed", type=int, default=0, help="seed for new layers (default 0)")
    p.add_argument("-o", "--out", help="output SavedModel directory")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--check", metavar="DIR", help="only check an exported SavedModel against its record")
    return p


def _preprocess_mode(args):
    if args.preprocess != "auto":
        return args.preprocess
    if not args.application:
        return "none"
    mode = application_preprocess_mode(args.application)
    if mode is None:
        raise ContractError(f"no known preprocessing for {args.application}; pass --preprocess")
    return mode


def _frozen_layers(model, head_names):
    """Every top-level layer but the head's (and the input), for --default-freeze-base."""
    _, keras = import_tf()
    if head_names is None:
        head_names = [l.name for l in head_layers(model)]
    return [l.name for l in model.layers if l.name not in head_names
            and not isinstance(l, keras.layers.InputLayer)]


def _export_saved_model(args):
    """``--saved-model``: export through the SavedModel's signature; returns the record."""
    others = [f for f, v in (("--model", args.model), ("--architecture", args.architecture),
                             ("--application", args.application), ("--weights", args.weights)) if v]
    if others:
        raise ContractError(f"--saved-model cannot be combined with {', '.join(others)}")
    opt = optimizer_config(args.optimizer, learning_rate=args.learning_rate,
                           **{s: getattr(args, s) for s in [*setting_names(), *CLIPPING]})
    return export_saved_model_trainable(
        args.saved_model, args.out, signature=args.signature, output=args.output,
        num_classes=args.num_classes, hidden_units=args.hidden_units, dropout=args.dropout,
        optimizer=opt, loss=LOSS_ALIASES[args.loss], outputs=args.outputs,
        class_names=args.class_names.split(",") if args.class_names else None,
        train_restored=True if args.train_restored else None, force=args.force,
        model_name=args.name, seed=args.seed, feature_cache=not args.no_feature_cut), opt


def _print_summary(args, rec, opt):
    n_on = int(sum(rec["default_mask"]))
    print(f"wrote {args.out}: {len(rec['mask_variables'])} mask variables ({n_on} trainable by default), "
          f"{len(rec['non_trainable_variables'])} non-trainable, optimizer {opt['name']}, "
          f"signatures {', '.join(rec['signatures'])}")


def export_from_args(args):
    """Build the model the options describe, export it, and print a one-line summary."""
    if args.saved_model:
        rec, opt = _export_saved_model(args)
        _print_summary(args, rec, opt)
        return
    _, keras = import_tf()
    keras.utils.set_random_seed(args.seed)
    replace = args.num_classes is not None
    by_name = bool(args.weights and args.application)
    if args.head_names and not replace:
        raise ContractError("--head-names names the layers of a new head: give --num-classes too")
    model = load_source_model(model_path=args.model, weights=None if by_name else args.weights,
                              architecture=args.architecture,
                              application=args.application, input_shape=args.input_shape,
                              alpha=args.alpha, include_top=not replace, classes=args.app_classes)
    loss = LOSS_ALIASES[args.loss]
    head_names = None
    outputs = args.outputs
    if replace:
        activation = HEAD_ACTIVATION[loss]
        if outputs == "logits":
            activation = "linear"
        model, head_names = replace_head(model, args.num_classes, hidden_units=args.hidden_units,
                                         dropout=args.dropout, activation=activation,
                                         whole_model_is_base=bool(args.application), seed=args.seed,
                                         names=args.head_names)
    loaded = load_by_name(model, args.weights, skip_mismatch=args.skip_mismatch) if by_name else None
    frozen = _frozen_layers(model, head_names) if args.default_freeze_base else []
    preprocess = _preprocess_mode(args)
    opt = optimizer_config(args.optimizer, learning_rate=args.learning_rate,
                           **{s: getattr(args, s) for s in [*setting_names(), *CLIPPING]})
    class_names = args.class_names.split(",") if args.class_names else None
    rec = export_trainable(model, args.out, optimizer=opt, loss=loss, outputs=outputs,
                           class_names=class_names, preprocess=preprocess, frozen_layers=frozen,
                           force=args.force, model_name=args.name, jit_compile=args.jit_compile,
                           label_smoothing=args.label_smoothing, sample_weights=args.sample_weights,
                           allreduce_timeout=args.allreduce_timeout, head_names=head_names,
                           feature_cache=not args.no_feature_cut, frozen_base_steps=not args.no_frozen_base_steps,
                           fused_batch_norm=not args.no_fused_batch_norm)
    _print_summary(args, rec, opt)
    if loaded is not None:
        print(f"  {loaded.summary()} from {args.weights}")


def run(argv=None):
    """Parse ``argv`` and do the work; returns the exit code, raises ContractError/FileExistsError."""
    args = build_arg_parser().parse_args(argv)
    if args.check:
        rec = check_export(args.check)
        print(f"{args.check}: OK (contract v{rec['contract_version']}, {len(rec['mask_variables'])} mask "
              f"variables, signatures {', '.join(rec['signatures'])})")
        return 0
    if not args.out:
        print(f"{PROG}: error: --out is required", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and not args.force:
        print(f"{PROG}: error: {args.out} exists (use --force to replace it)", file=sys.stderr)
        return 1
    export_from_args(args)
    return 0


def main(argv=None):
    """The console script: ``run`` with export errors printed as one line and exit code 1."""
    try:
        return run(argv)
    except (ContractError, FileExistsError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
