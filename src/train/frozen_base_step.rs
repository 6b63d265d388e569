//! Frozen-base steps: signatures `train_step_from_<layer index>` that an export may carry beside
//! `train_step` (the record's `frozen_base_steps`). Each runs the base below a cut forward in
//! inference mode and then the head's step alone, with no backward pass below the cut; for a mask
//! that freezes every variable below the cut it changes exactly what `train_step` changes. A
//! trainer whose mask allows one runs the highest such step instead of `train_step`.

use serde::{Deserialize, Serialize};

/// One frozen-base step of the record.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FrozenBaseStep {
    /// Its signature key (`train_step_from_<layer_index>`).
    pub signature: String,
    /// The index in Keras's `model.layers` of the cut's first layer (the head's).
    pub layer_index: usize,
    /// The name of that layer.
    pub layer: String,
    /// The mask entries of the variables below the cut: all must be 0 for the step to run.
    pub mask_indices_below: Vec<usize>,
}

impl FrozenBaseStep {
    /// Whether `mask` freezes every variable below the cut (an index outside `mask` counts as
    /// not frozen: such a record does not describe this model).
    pub fn allows(&self, mask: &[f32]) -> bool {
        self.mask_indices_below.iter().all(|&i| mask.get(i).is_some_and(|&value| value <= 0.0))
    }
}

/// The frozen-base step with the highest cut that `mask` allows and the model has (`has_signature`
/// tells which signature keys it has), if any.
pub fn for_mask<'a>(
    steps: &'a [FrozenBaseStep],
    mask: &[f32],
    has_signature: impl Fn(&str) -> bool,
) -> Option<&'a FrozenBaseStep> {
    let mut allowed: Vec<&FrozenBaseStep> = steps.iter().filter(|step| step.allows(mask)).collect();
    allowed.sort_by_key(|step| std::cmp::Reverse(step.layer_index));
    allowed.into_iter().find(|step| {
        let present = has_signature(&step.signature);
        if !present {
            log::warn!(
                "the record names the frozen-base step `{}`, which the model lacks; it is not used",
                step.signature
            );
        }
        present
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(layer_index: usize, below: &[usize]) -> FrozenBaseStep {
        FrozenBaseStep {
            signature: format!("train_step_from_{layer_index}"),
            layer_index,
            layer: format!("layer{layer_index}"),
            mask_indices_below: below.to_vec(),
        }
    }

    #[test]
    fn a_step_is_allowed_only_when_everything_below_its_cut_is_frozen() {
        let s = step(5, &[0, 1]);
        assert!(s.allows(&[0.0, 0.0, 1.0]));
        assert!(!s.allows(&[0.0, 1.0, 1.0]));
        assert!(!step(5, &[3]).allows(&[0.0, 0.0, 1.0]), "an index past the mask is not frozen");
    }

    #[test]
    fn the_highest_allowed_cut_is_chosen() {
        let steps = [step(3, &[0]), step(5, &[0, 1])];
        let all = |_: &str| true;
        assert_eq!(for_mask(&steps, &[0.0, 0.0, 1.0], all).map(|s| s.layer_index), Some(5));
        assert_eq!(for_mask(&steps, &[0.0, 1.0, 1.0], all).map(|s| s.layer_index), Some(3));
        assert_eq!(for_mask(&steps, &[1.0, 1.0, 1.0], all), None);
        let without_5 = |key: &str| key != "train_step_from_5";
        assert_eq!(for_mask(&steps, &[0.0, 0.0, 1.0], without_5).map(|s| s.layer_index), Some(3));
    }
}
