"""A Keras model holding a tfload export's variables, frozen as the export's default mask: what
the parity scripts train in Keras to compare with `tfload train` on the same export."""

import json
import os


def load_export_into(tf, model, model_dir):
    """Assigns every variable the export's record names (by Keras path) from its checkpoint, and
    sets `trainable = False` on the layers its default mask freezes. Returns `(record, entries)`,
    the record and its mask and non-trainable variable entries."""
    with open(os.path.join(model_dir, "assets", "tfload_contract.json")) as f:
        record = json.load(f)
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "variables", "variables"))
    entries = record["mask_variables"] + record["non_trainable_variables"]
    by_path = {v.path: v for v in model.weights}
    missing = [e["name"] for e in entries if e["name"] not in by_path]
    if missing or len(entries) != len(model.weights):
        raise SystemExit(f"the export's variables do not match the Keras model's: missing {missing}")
    for entry in entries:
        by_path[entry["name"]].assign(reader.get_tensor(entry["checkpoint_key"]))
    frozen = {v["layer"] for v in record["mask_variables"] if not record["default_mask"][v["index"]]}
    for layer in model.layers:
        if layer.name in frozen:
            layer.trainable = False
    return record, entries
