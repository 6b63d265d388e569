//! Calling a signature of a loaded model: inputs checked against the signature on the Rust side
//! (keys, dtypes, ranks, known dimensions) before TensorFlow sees them, then fed by key, and the
//! outputs fetched by key. Graph tensor names stay inside this module.

use std::collections::BTreeMap;

use tensorflow::{Operation, SessionRunArgs};

use crate::error::{Error, Result};
use crate::model::signature::{Signature, TensorSpec};
use crate::session::feed::FeedTensor;
use crate::session::loaded_model::LoadedModel;
use crate::session::run_metadata::{self, ExecutedOps};
use crate::session::specialize::{self, NotSpecializable};
use crate::tensor::TensorData;

/// Inputs or outputs by key.
pub type Tensors = BTreeMap<String, TensorData>;

/// One signature tensor resolved to its graph operation and output index.
#[derive(Debug, Clone)]
struct Endpoint {
    spec: TensorSpec,
    operation: Operation,
    index: i32,
}

/// A signature resolved against a loaded graph once, to be called many times (a training loop
/// calls `train_step` thousands of times; resolving names each time would be waste).
#[derive(Debug, Clone)]
pub struct BoundSignature {
    signature: Signature,
    inputs: Vec<Endpoint>,
    outputs: Vec<Endpoint>,
}

impl BoundSignature {
    /// Resolves signature `key` of `model`.
    pub fn bind(model: &LoadedModel, key: &str) -> Result<BoundSignature> {
        let signature = model.meta_graph().signature(key)?;
        model.check_loaded(key)?;
        let resolve = |specs: &[TensorSpec]| -> Result<Vec<Endpoint>> {
            specs.iter().map(|spec| resolve(model, &signature.key, spec)).collect()
        };
        Ok(BoundSignature { inputs: resolve(&signature.inputs)?, outputs: resolve(&signature.outputs)?, signature })
    }

    /// The signature's specs.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The graph operation and output index that input `key` is fed to, for loops that build
    /// their own `SessionRunArgs` (benchmarks of the bare `Session::run`).
    pub fn input_tensor(&self, key: &str) -> Option<(Operation, i32)> {
        self.inputs.iter().find(|e| e.spec.key == key).map(|e| (e.operation.clone(), e.index))
    }

    /// The graph operation and output index of output `key` (see [`BoundSignature::input_tensor`]).
    pub fn output_tensor(&self, key: &str) -> Option<(Operation, i32)> {
        self.outputs.iter().find(|e| e.spec.key == key).map(|e| (e.operation.clone(), e.index))
    }

    /// Checks `inputs` against the signature (see [`check_inputs`]).
    pub fn check_inputs(&self, inputs: &Tensors) -> Result<()> {
        check_inputs(&self.signature, inputs)
    }

    /// Checks the inputs given (some or all) and turns them into TensorFlow tensors, ready to
    /// feed. Safe to call on another thread than the one that runs, so that a data loader can
    /// prepare the next batch while the session computes.
    pub fn prepare(&self, inputs: &Tensors) -> Result<PreparedInputs> {
        self.prepare_reusing(&borrowed(inputs), PreparedInputs::default())
    }

    /// Like [`BoundSignature::prepare`] on borrowed (key, values) pairs, copying the values into
    /// the tensors of `spare` (inputs prepared earlier whose run is over) where an input keeps
    /// its dtype and shape, instead of allocating new ones. A training loop recycles its
    /// batches' tensors this way: allocating, zero-filling and freeing them every step costs
    /// more than the copy, in the pause between two steps. Refilling a fed tensor is safe once
    /// its run has returned: TensorFlow keeps no reference to a feed's buffer past the run
    /// (what it keeps, such as a variable's new value, it copies).
    pub fn prepare_reusing(&self, inputs: &[(&str, &TensorData)], spare: PreparedInputs) -> Result<PreparedInputs> {
        check_known(&self.signature, inputs)?;
        let mut spare = spare.feeds;
        let feeds = self
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(index, endpoint)| given(inputs, &endpoint.spec.key).map(|data| (index, data)))
            .map(|(index, data)| {
                if let Some(position) = spare.iter().position(|(i, _)| *i == index) {
                    let (_, mut tensor) = spare.swap_remove(position);
                    if data.copy_into(&mut tensor) {
                        return Ok((index, tensor));
                    }
                }
                data.to_tf().map(|tensor| (index, tensor))
            })
            .collect::<Result<_>>()?;
        Ok(PreparedInputs { feeds })
    }

    /// Runs the signature on `inputs` in `model`'s session and returns the outputs named in
    /// `wanted` (all of them when `None`).
    pub fn run(&self, model: &LoadedModel, inputs: &Tensors, wanted: Option<&[&str]>) -> Result<Tensors> {
        self.check_inputs(inputs)?;
        self.run_prepared(model, &[&self.prepare(inputs)?], wanted)
    }

    /// Runs the signature on inputs prepared by [`BoundSignature::prepare`], in parts (say a
    /// batch prepared ahead, and a mask prepared once) that together give every input once.
    pub fn run_prepared(
        &self,
        model: &LoadedModel,
        parts: &[&PreparedInputs],
        wanted: Option<&[&str]>,
    ) -> Result<Tensors> {
        self.run_with(model, parts, wanted, false).map(|(outputs, _)| outputs)
    }

    /// Like [`BoundSignature::run_prepared`], also returning the ops TensorFlow executed for the
    /// run (after inlining and graph optimization), to see what a call really costs.
    pub fn run_prepared_counting_ops(
        &self,
        model: &LoadedModel,
        parts: &[&PreparedInputs],
        wanted: Option<&[&str]>,
    ) -> Result<(Tensors, ExecutedOps)> {
        let (outputs, ops) = self.run_with(model, parts, wanted, true)?;
        Ok((outputs, ops.unwrap_or_default()))
    }

    fn run_with(
        &self,
        model: &LoadedModel,
        parts: &[&PreparedInputs],
        wanted: Option<&[&str]>,
        count_ops: bool,
    ) -> Result<(Tensors, Option<ExecutedOps>)> {
        let outputs = self.wanted_outputs(wanted)?;
        let mut given = vec![false; self.inputs.len()];
        let mut args = SessionRunArgs::new();
        for (index, tensor) in parts.iter().flat_map(|part| &part.feeds) {
            let endpoint = &self.inputs[*index];
            if std::mem::replace(&mut given[*index], true) {
                return Err(self.mismatch(format!("input `{}` given twice", endpoint.spec.key)));
            }
            tensor.feed(&mut args, &endpoint.operation, endpoint.index);
        }
        if let Some(missing) = given.iter().position(|g| !g) {
            return Err(self.mismatch(format!("input `{}` not given", self.inputs[missing].spec.key)));
        }
        let tokens: Vec<_> =
            outputs.iter().map(|endpoint| args.request_fetch(&endpoint.operation, endpoint.index)).collect();
        if count_ops {
            args.set_run_options(&run_metadata::partition_graph_options());
            args.set_request_metadata(true);
        }
        model
            .session()
            .run(&mut args)
            .map_err(|status| Error::from_tensorflow(format!("running signature `{}`", self.signature.key), &status))?;
        let ops = args.get_metadata().map(run_metadata::executed_ops).transpose()?;
        let fetched = outputs
            .iter()
            .zip(tokens)
            .map(|(endpoint, token)| {
                TensorData::fetch(&mut args, token, endpoint.spec.dtype).map(|data| (endpoint.spec.key.clone(), data))
            })
            .collect::<Result<_>>()?;
        Ok((fetched, ops))
    }

    /// This signature with input `key` bound to the constant `value` (shape `dims`): a copy of
    /// its function call is added to `model`'s graph (see [`crate::session::specialize`]), and
    /// the returned signature feeds every input but `key` and fetches the copy's outputs. Why
    /// not, when the signature's outputs do not all come from one function call that takes
    /// `key`'s placeholder as it is.
    pub fn with_constant_input(
        &self,
        model: &mut LoadedModel,
        key: &str,
        value: &[f32],
        dims: &[u64],
    ) -> Result<std::result::Result<BoundSignature, NotSpecializable>> {
        let Some(bound) = self.inputs.iter().find(|endpoint| endpoint.spec.key == key) else {
            return Ok(Err(NotSpecializable(format!("signature `{}` has no input `{key}`", self.signature.key))));
        };
        let Some(call) = self.outputs.first().map(|endpoint| endpoint.operation.clone()) else {
            return Ok(Err(NotSpecializable(format!("signature `{}` has no outputs", self.signature.key))));
        };
        if self.outputs.iter().any(|endpoint| endpoint.operation.name().ok() != call.name().ok()) {
            return Ok(Err(NotSpecializable("its outputs come from more than one node".to_string())));
        }
        let name = unused_name(model.graph(), &format!("tfload_specialized/{}", self.signature.key));
        let copy = match specialize::call_with_constant(model.graph_mut(), &call, &bound.operation, value, dims, &name)?
        {
            Ok(copy) => copy,
            Err(why) => return Ok(Err(why)),
        };
        let mut signature = self.signature.clone();
        signature.inputs.retain(|spec| spec.key != key);
        let inputs = self.inputs.iter().filter(|endpoint| endpoint.spec.key != key).cloned().collect();
        let outputs =
            self.outputs.iter().map(|endpoint| Endpoint { operation: copy.clone(), ..endpoint.clone() }).collect();
        Ok(Ok(BoundSignature { signature, inputs, outputs }))
    }

    fn mismatch(&self, problem: String) -> Error {
        mismatch(&self.signature, problem)
    }

    fn wanted_outputs(&self, wanted: Option<&[&str]>) -> Result<Vec<&Endpoint>> {
        let Some(keys) = wanted else {
            return Ok(self.outputs.iter().collect());
        };
        keys.iter()
            .map(|key| {
                self.outputs.iter().find(|e| e.spec.key == *key).ok_or_else(|| {
                    self.mismatch(format!(
                        "there is no output `{key}`; its outputs are: {}",
                        list_or_none(&self.outputs.iter().map(|e| e.spec.key.as_str()).collect::<Vec<_>>())
                    ))
                })
            })
            .collect()
    }
}

/// Inputs of one signature, checked and converted to TensorFlow tensors, by input position.
#[derive(Default)]
pub struct PreparedInputs {
    feeds: Vec<(usize, FeedTensor)>,
}

/// Checks `inputs` against `signature` without a session: every key known and present, dtypes
/// equal, ranks and known dimensions equal.
pub fn check_inputs(signature: &Signature, inputs: &Tensors) -> Result<()> {
    check_known(signature, &borrowed(inputs))?;
    let missing: Vec<&str> =
        signature.inputs.iter().map(|spec| spec.key.as_str()).filter(|key| !inputs.contains_key(*key)).collect();
    if !missing.is_empty() {
        return Err(mismatch(
            signature,
            format!(
                "input{} `{}` not given ({} given: {})",
                if missing.len() > 1 { "s" } else { "" },
                missing.join("`, `"),
                inputs.len(),
                list_or_none(&inputs.keys().map(String::as_str).collect::<Vec<_>>())
            ),
        ));
    }
    Ok(())
}

/// Unknown keys are refused, and every given input must fit its spec; inputs may be missing.
fn check_known(signature: &Signature, inputs: &[(&str, &TensorData)]) -> Result<()> {
    let expected: Vec<&str> = signature.inputs.iter().map(|spec| spec.key.as_str()).collect();
    if let Some((unknown, _)) = inputs.iter().find(|(key, _)| !expected.contains(key)) {
        return Err(mismatch(
            signature,
            format!("there is no input `{unknown}`; its inputs are: {}", list_or_none(&expected)),
        ));
    }
    for spec in &signature.inputs {
        if let Some(data) = given(inputs, &spec.key) {
            check_one(spec, data).map_err(|problem| mismatch(signature, problem))?;
        }
    }
    Ok(())
}

/// `inputs` as the (key, values) pairs that checking and preparing take.
fn borrowed(inputs: &Tensors) -> Vec<(&str, &TensorData)> {
    inputs.iter().map(|(key, data)| (key.as_str(), data)).collect()
}

/// The values given for `key`, if any.
fn given<'a>(inputs: &[(&str, &'a TensorData)], key: &str) -> Option<&'a TensorData> {
    inputs.iter().find(|(k, _)| *k == key).map(|(_, data)| *data)
}

fn mismatch(signature: &Signature, problem: String) -> Error {
    Error::InputMismatch { signature: signature.key.clone(), problem }
}

impl LoadedModel {
    /// Runs signature `key` on `inputs` (by input key) and returns every output by key.
    pub fn run(&self, key: &str, inputs: &Tensors) -> Result<Tensors> {
        BoundSignature::bind(self, key)?.run(self, inputs, None)
    }
}

/// `base`, or `base_2`, `base_3`, ... when the graph has a node of that name already.
fn unused_name(graph: &tensorflow::Graph, base: &str) -> String {
    let taken = |name: &str| graph.operation_by_name(name).ok().flatten().is_some();
    (1..)
        .map(|n| if n == 1 { base.to_string() } else { format!("{base}_{n}") })
        .find(|name| !taken(name))
        .expect("unbounded")
}

fn list_or_none(keys: &[&str]) -> String {
    if keys.is_empty() {
        "(none)".to_string()
    } else {
        keys.join(", ")
    }
}

fn resolve(model: &LoadedModel, signature: &str, spec: &TensorSpec) -> Result<Endpoint> {
    let name = spec.tensor_name().filter(|_| matches!(spec.encoding, crate::TensorEncoding::Dense { .. }));
    let Some(name) = name else {
        return Err(Error::InputMismatch {
            signature: signature.to_string(),
            problem: format!("`{}` is a sparse or composite tensor, which tfload cannot feed or fetch yet", spec.key),
        });
    };
    let (op_name, index) = match name.rsplit_once(':') {
        Some((op, index)) => (op, index.parse::<i32>().unwrap_or(0)),
        None => (name, 0),
    };
    let operation = model.graph().operation_by_name_required(op_name).map_err(|status| Error::MalformedSavedModel {
        path: model.dir().join("saved_model.pb"),
        problem: format!("signature `{signature}` names tensor `{name}`, which the graph lacks ({status})"),
    })?;
    Ok(Endpoint { spec: spec.clone(), operation, index })
}

/// Compares one given tensor with its spec; the problem text names the key, expected and given.
fn check_one(spec: &TensorSpec, data: &TensorData) -> Result<(), String> {
    let given = format!("{} {:?}", data.dtype(), data.shape());
    if data.dtype() != spec.dtype {
        return Err(format!("input `{}` must be {} {}, but {} was given", spec.key, spec.dtype, spec.shape, given));
    }
    let Some(dims) = spec.shape.dims() else {
        return Ok(());
    };
    let shape = data.shape();
    let fits = dims.len() == shape.len()
        && dims.iter().zip(shape).all(|(want, &have)| want.is_none_or(|want| want == have as u64));
    if !fits {
        return Err(format!(
            "input `{}` must have shape {} ({}), but {} was given",
            spec.key, spec.shape, spec.dtype, given
        ));
    }
    Ok(())
}
