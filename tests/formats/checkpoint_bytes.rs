//! A checkpoint bundle tfload writes is the one TensorFlow would have written, byte for byte:
//! copying TensorFlow's own bundle (data in its `SaveV2` order) through tfload's writer gives
//! back the same `variables.index` and data file, for the committed models and for a `tf.Module`
//! with thousands of variables, whose index spans several 256 KiB table blocks.

use std::path::Path;
use std::process::Command;

use tfload::formats::checkpoint_index::CheckpointIndex;
use tfload::formats::linked_bundle::copy_as_one_shard;

use crate::common::{model, root, s};

const INDEX: &str = "variables.index";
const DATA: &str = "variables.data-00000-of-00001";

/// Copies `variables` into `out` in the order TensorFlow's shard holds the entries, then
/// asserts that both files equal TensorFlow's.
fn assert_copy_is_byte_identical(variables: &Path, out: &Path) {
    let index = CheckpointIndex::read(&variables.join(INDEX)).unwrap();
    let mut entries: Vec<_> = index.entries().collect();
    entries.sort_by_key(|(_, entry)| (entry.shard, entry.offset));
    let order: Vec<&str> = entries.iter().map(|(key, _)| *key).collect();
    copy_as_one_shard(variables, out, &order, None).unwrap();
    for file in [INDEX, DATA] {
        let (ours, theirs) = (std::fs::read(out.join(file)).unwrap(), std::fs::read(variables.join(file)).unwrap());
        assert!(
            ours == theirs,
            "{file} of {} differs ({} bytes against {})",
            variables.display(),
            ours.len(),
            theirs.len()
        );
    }
}

#[test]
fn the_committed_models_bundles_are_rewritten_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["mlp_digits", "cnn_digits", "multi_io"] {
        assert_copy_is_byte_identical(&model(name).join("variables"), &tmp.path().join(name));
    }
}

#[test]
fn an_index_of_several_table_blocks_is_rewritten_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let saved = tmp.path().join("many");
    let script = "import sys, tensorflow as tf\n\
                  m = tf.Module()\n\
                  m.weights_of_a_layer_with_a_rather_long_name = [tf.Variable(tf.fill([i % 5 + 1], float(i))) for i in range(6000)]\n\
                  tf.saved_model.save(m, sys.argv[1])";
    let status = Command::new(root().join(".venv/bin/python")).args(["-c", script, s(&saved)]).status().unwrap();
    assert!(status.success());
    let index_bytes = std::fs::metadata(saved.join("variables").join(INDEX)).unwrap().len();
    assert!(index_bytes > 262_144, "the index ({index_bytes} bytes) should span more than one block");
    assert_copy_is_byte_identical(&saved.join("variables"), &tmp.path().join("copy"));
}
