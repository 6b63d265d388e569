//! How many threads one op of a training step gets when the run leaves it to tfload.
//!
//! TensorFlow splits a CPU op across its intra-op pool whatever the op's size. For a small
//! model's step (the digits MLP and CNN: a few thousand weights, 8x8 inputs) every op is so short
//! that handing its halves to the other pool thread and waiting for them costs more than it
//! saves: on the 2-core bench machine one intra-op thread trained the CNN at batch 64 about 1.6x
//! faster and the MLP about 1.3x, while MobileNetV2 at 96x96 was about 12 % slower with it
//! (BENCHMARKS.md, "Training throughput"). So [`for_step`] gives a step whose [`step_work`] is
//! under [`SMALL_STEP_WORK`] one intra-op thread, and leaves every other step, and every setting
//! the user made, to TensorFlow. The inter-op pool is untouched: independent ops still run at once.
//! An XLA-compiled step (`--jit-compile`) keeps TensorFlow's threads too: XLA fuses the step into
//! a few large kernels that split well (the digits CNN at batch 256 trained 25 % slower on one).

use crate::session::loaded_model::SessionConfig;
use crate::train::contract::TrainContract;

/// The [`step_work`] under which a step runs its ops on one intra-op thread. Chosen between the
/// measured cases: the digits CNN at batch 256 (about 0.7 M, faster on one thread) and
/// MobileNetV2 0.35 at 96x96, batch 64 (about 27 M, faster on two).
pub const SMALL_STEP_WORK: u64 = 1 << 21;

/// A rough size of one step's work: the batch size times the elements of one example's inputs
/// plus the model's weights (trainable and not). Convolutions over large inputs are counted by
/// their input, dense layers by their weights. An input dimension the contract leaves open
/// counts as [`SMALL_STEP_WORK`], which keeps such a model on TensorFlow's threads.
pub fn step_work(contract: &TrainContract, batch_size: usize) -> u64 {
    let input: u64 = contract
        .inputs
        .iter()
        .map(|input| elements(input.shape.iter().skip(1).map(|dim| dim.unwrap_or(SMALL_STEP_WORK))))
        .fold(0, u64::saturating_add);
    let weights = contract.mask_variables.iter().map(|v| elements(v.shape.iter().copied()));
    let state = contract.non_trainable_variables.iter().map(|v| elements(v.shape.iter().copied()));
    let weights: u64 = weights.chain(state).fold(0, u64::saturating_add);
    (batch_size as u64).saturating_mul(input.saturating_add(weights))
}

/// The session settings a step of `contract`'s model at `batch_size` runs with: one intra-op
/// thread when the user left the count to TensorFlow (0), the step is not XLA-compiled and its
/// [`step_work`] is under [`SMALL_STEP_WORK`]; `session` unchanged otherwise.
pub fn for_step(session: SessionConfig, contract: &TrainContract, batch_size: usize) -> SessionConfig {
    let small = contract.jit_compile != Some(true) && step_work(contract, batch_size) < SMALL_STEP_WORK;
    match session.intra_op_threads == 0 && small {
        true => SessionConfig { intra_op_threads: 1, ..session },
        false => session,
    }
}

fn elements(dims: impl Iterator<Item = u64>) -> u64 {
    dims.fold(1, u64::saturating_mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(input: &[Option<u64>], weights: &[&[u64]]) -> TrainContract {
        let variable = |(index, shape)| {
            serde_json::json!({"index": index, "name": format!("w{index}"), "layer": "dense", "shape": shape,
                               "dtype": "float32", "checkpoint_key": format!("w{index}")})
        };
        let inputs = serde_json::json!([{"key": "x", "dtype": "float32", "shape": input}]);
        crate::train::contract::test_contract(inputs, weights.iter().enumerate().map(variable).collect(), &[])
    }

    #[test]
    fn work_is_batch_times_input_and_weight_elements() {
        let digits_mlp = contract(&[None, Some(8), Some(8), Some(1)], &[&[64, 32], &[32], &[32, 10], &[10]]);
        assert_eq!(step_work(&digits_mlp, 64), 64 * (64 + 2048 + 32 + 320 + 10));
    }

    #[test]
    fn an_open_input_dimension_counts_as_large() {
        let any_size_image = contract(&[None, None, None, Some(3)], &[&[3, 3, 3, 8]]);
        assert!(step_work(&any_size_image, 1) >= SMALL_STEP_WORK);
    }

    #[test]
    fn a_small_step_gets_one_intra_op_thread_unless_the_user_chose() {
        let tensorflow_decides = SessionConfig::default();
        let one_weight = contract(&[None, Some(1)], &[&[1]]); // work 2 per example
        let small_batch = (SMALL_STEP_WORK / 2 - 1) as usize;
        assert_eq!(for_step(tensorflow_decides, &one_weight, small_batch).intra_op_threads, 1);
        assert_eq!(for_step(tensorflow_decides, &one_weight, small_batch + 1), tensorflow_decides);
        let chosen = SessionConfig { intra_op_threads: 2, inter_op_threads: 0 };
        assert_eq!(for_step(chosen, &one_weight, 1), chosen);
    }

    #[test]
    fn an_xla_step_keeps_tensorflows_threads() {
        let mut xla = contract(&[None, Some(1)], &[&[1]]);
        xla.jit_compile = Some(true);
        assert_eq!(for_step(SessionConfig::default(), &xla, 1), SessionConfig::default());
    }
}
