"""The exporter's branching ``train_step`` (export.py ``branch_train_step``): with everything below
a clean cut masked 0, ``train_step`` runs the base forward in inference mode and the head's step
alone (no backward pass below the cut), and must change exactly what the full step changes.

Run: .venv/bin/python -m pytest scripts/tests/test_branching_train_step.py -x -q

Both exports (branching and not) run in TF1 sessions, as tfload runs them through the C API: same
batches, same mask, per-step losses compared, then every saved variable compared after saving
through the SaverDef; the variables the mask freezes, and their slots, stay byte-identical.
"""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfload_export as te  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tfload_export.contract import read_contract  # noqa: E402
from tfload_export.optimizers import optimizer_config  # noqa: E402
from tfload_export.sources import build_application  # noqa: E402

from test_feature_cache_export import RTOL, batches, checkpoint, cnn_with_bn_base, run_steps  # noqa: E402

tf, keras = te._import_tf()
BACKWARD_BELOW = {"Conv2DBackpropFilter", "Conv2DBackpropInput", "FusedBatchNormGradV3", "FusedBatchNormGrad"}


def export_pair(model, tmp_path, **kwargs):
    """The same model exported with and without branches: ``(record, branching_dir, plain_dir)``."""
    branching, plain = str(tmp_path / "branching"), str(tmp_path / "plain")
    rec = te.export_trainable(model, branching, **kwargs)
    plain_rec = te.export_trainable(model, plain, branch_train_step=False, **kwargs)
    assert "train_step_branches" not in plain_rec
    return rec, branching, plain


def mask_of(rec, trainable):
    return np.array([1.0 if r["name"] in trainable else 0.0 for r in rec["mask_variables"]], np.float32)


def assert_same_steps(rec, branching, plain, tmp_path, data, mask, tag):
    """Per-step losses and the saved variables of both exports agree; the frozen ones (and their
    optimizer slots) are byte-identical to the export's."""
    a_dir, b_dir = str(tmp_path / f"{tag}_branching"), str(tmp_path / f"{tag}_plain")
    np.testing.assert_allclose(run_steps(branching, data, mask, False, a_dir),
                               run_steps(plain, data, mask, False, b_dir), rtol=RTOL)
    a, b, before = checkpoint(a_dir), checkpoint(b_dir), checkpoint(branching)
    assert a.keys() == b.keys() == before.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=RTOL, atol=1e-7, err_msg=key)
    frozen = {r["index"] for r in rec["mask_variables"] if mask[r["index"]] == 0.0}
    keys = [r["checkpoint_key"] for r in rec["mask_variables"] if r["index"] in frozen]
    keys += [r["checkpoint_key"] for r in rec["optimizer_variables"] if r.get("variable_index") in frozen]
    for key in keys:
        assert a[key].tobytes() == before[key].tobytes(), f"{key} moved although masked 0"
    return a, before


def functions_reached(library, name):
    """Names of the library functions ``name`` calls, transitively (op types and func attrs)."""
    funcs = {f.signature.name: f for f in library.function}
    seen, todo = set(), [name]
    while todo:
        fname = todo.pop()
        if fname in seen or fname not in funcs:
            continue
        seen.add(fname)
        for node in funcs[fname].node_def:
            todo.append(node.op)
            for attr in node.attr.values():
                todo.extend(f.name for f in attr.list.func)
                if attr.HasField("func"):
                    todo.append(attr.func.name)
    return seen


def train_step_case(export_dir):
    """``(library, branch function names)`` of the ``Case`` in ``train_step``'s function."""
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    mg = sm.meta_graphs[0]
    call = mg.signature_def["train_step"].outputs["loss"].name.split(":")[0]
    node = next(n for n in mg.graph_def.node if n.name == call)
    library = mg.graph_def.library
    funcs = {f.signature.name: f for f in library.function}
    for fname in functions_reached(library, node.attr["f"].func.name):
        for n in funcs[fname].node_def:
            if n.op in ("Case", "StatelessCase"):
                return library, [f.name for f in n.attr["branches"].list.func]
    return library, None


def op_types(library, fname):
    funcs = {f.signature.name: f for f in library.function}
    return {n.op for name in functions_reached(library, fname) for n in funcs[name].node_def}


def test_branching_step_changes_exactly_what_the_full_step_changes(tmp_path):
    rec, branching, plain = export_pair(cnn_with_bn_base(), tmp_path, optimizer=optimizer_config("adam"),
                                        frozen_layers=["conv", "bn"])
    # One branch: the cuts at flat and drop have the same variables below; drop's head is smaller.
    assert rec["train_step_branches"] == [{"layer_index": 5, "layer": "drop", "mask_indices_below": [0, 1, 2, 3]}]
    assert read_contract(branching)["train_step_branches"] == rec["train_step_branches"]
    data = batches(5, 8, (6, 6, 1), 4)
    masks = {"base_frozen": np.array(rec["default_mask"], np.float32),
             "last_layer": mask_of(rec, {"head/kernel", "head/bias"}),
             "all": np.ones(len(rec["mask_variables"]), np.float32),
             "bn_only": mask_of(rec, {"bn/gamma", "bn/beta"})}
    for tag, mask in masks.items():
        after, before = assert_same_steps(rec, branching, plain, tmp_path, data, mask, tag)
        moved = {r["name"] for r in rec["mask_variables"]
                 if after[r["checkpoint_key"]].tobytes() != before[r["checkpoint_key"]].tobytes()}
        assert moved == {r["name"] for r in rec["mask_variables"] if mask[r["index"]] > 0}, tag


def test_the_cut_branch_runs_no_backward_pass_below_the_cut(tmp_path):
    rec, branching, plain = export_pair(cnn_with_bn_base(), tmp_path, frozen_layers=["conv", "bn"])
    library, branches = train_step_case(branching)
    assert branches is not None and len(branches) == 2
    full, cut = op_types(library, branches[0]), op_types(library, branches[1])
    assert "Conv2DBackpropFilter" in full
    assert not cut & BACKWARD_BELOW, cut & BACKWARD_BELOW
    assert "MatMul" in cut  # the head's forward and backward are there
    assert train_step_case(plain)[1] is None


def test_no_branches_where_the_head_step_cannot_stand_in(tmp_path):
    def model():
        keras.utils.set_random_seed(0)
        inp = keras.Input((4,))
        x = keras.layers.Dropout(0.5, name="drop")(inp)  # stochastic below every cut
        x = keras.layers.Dense(5, name="d1")(x)
        out = keras.layers.Dense(3, activation="softmax", name="head")(x)
        return keras.Model(inp, out)
    assert "train_step_branches" not in te.export_trainable(model(), str(tmp_path / "drop"))
    assert train_step_case(str(tmp_path / "drop"))[1] is None
    rec = te.export_trainable(cnn_with_bn_base(), str(tmp_path / "w"), sample_weights=True)
    assert "train_step_branches" not in rec
    rec = te.export_trainable(cnn_with_bn_base(), str(tmp_path / "x"), jit_compile=True)
    assert "train_step_branches" not in rec


def test_application_with_new_head_base_frozen(tmp_path):
    keras.utils.set_random_seed(0)
    base = build_application("MobileNetV2", (32, 32, 3), alpha=0.35)
    model = te.replace_head(base, 3, whole_model_is_base=True)[0]
    head = {"head/kernel", "head/bias"}
    frozen = [l.name for l in model.layers if l.name != "head"]
    rec, branching, plain = export_pair(model, tmp_path, optimizer=optimizer_config("adam", learning_rate=1e-3),
                                        frozen_layers=frozen, preprocess="tf")
    assert rec["train_step_branches"][-1]["layer"] == "head"
    mask = np.array(rec["default_mask"], np.float32)
    assert mask_of(rec, head).tolist() == mask.tolist()
    after, before = assert_same_steps(rec, branching, plain, tmp_path, batches(3, 4, (32, 32, 3), 3), mask, "frozen")
    library, branches = train_step_case(branching)
    assert not op_types(library, branches[-1]) & BACKWARD_BELOW
