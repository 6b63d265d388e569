//! The ops a session run executed, from the partition graphs TensorFlow reports when a run asks
//! for them (`RunOptions.output_partition_graphs`): the graph after inlining and Grappler's
//! optimizations, which is what a step costs, not what `saved_model.pb` holds.

use std::collections::BTreeMap;

use prost::Message;

use crate::error::{Error, Result};
use crate::proto;

/// Counts of the executed graph's nodes by op type (`Conv2DBackpropFilter`: 2), over every
/// partition. oneDNN's renamed kernels (`_MklNativeConv2DBackpropFilter`) are counted under their
/// own names; [`ExecutedOps::count_containing`] matches both.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExecutedOps {
    /// Nodes by op type.
    pub by_type: BTreeMap<String, usize>,
}

impl ExecutedOps {
    /// All nodes.
    pub fn total(&self) -> usize {
        self.by_type.values().sum()
    }

    /// Nodes whose op type contains `part` (`"Conv2DBackpropFilter"`).
    pub fn count_containing(&self, part: &str) -> usize {
        self.by_type.iter().filter(|(op, _)| op.contains(part)).map(|(_, n)| n).sum()
    }
}

/// The serialized `RunOptions` that make a run report its partition graphs.
pub fn partition_graph_options() -> Vec<u8> {
    proto::RunOptions { output_partition_graphs: true }.encode_to_vec()
}

/// Decodes a run's serialized `RunMetadata` and counts its partition graphs' nodes.
pub fn executed_ops(metadata: &[u8]) -> Result<ExecutedOps> {
    let metadata = proto::RunMetadata::decode(metadata).map_err(|error| Error::TensorFlow {
        during: "reading the run's metadata".to_string(),
        message: format!("TensorFlow returned RunMetadata that does not decode: {error}"),
    })?;
    let mut by_type = BTreeMap::new();
    for node in metadata.partition_graphs.iter().flat_map(|graph| &graph.node) {
        *by_type.entry(node.op.clone()).or_insert(0) += 1;
    }
    Ok(ExecutedOps { by_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nodes_of_every_partition() {
        let node = |op: &str| proto::NodeDef { op: op.to_string(), ..Default::default() };
        let graph =
            |ops: &[&str]| proto::GraphDef { node: ops.iter().map(|op| node(op)).collect(), ..Default::default() };
        let metadata = proto::RunMetadata {
            partition_graphs: vec![graph(&["Const", "_MklNativeConv2DBackpropFilter"]), graph(&["Const"])],
        };
        let ops = executed_ops(&metadata.encode_to_vec()).unwrap();
        assert_eq!(ops.total(), 3);
        assert_eq!(ops.by_type["Const"], 2);
        assert_eq!(ops.count_containing("Conv2DBackpropFilter"), 1);
        assert!(executed_ops(&[0xff, 0xff]).is_err());
        assert_eq!(partition_graph_options(), vec![0x28, 1]);
    }
}
