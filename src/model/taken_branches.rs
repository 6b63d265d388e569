//! A step function with its masked updates resolved for one constant mask. The exporter runs each
//! variable's fused optimizer update under a `tf.cond` on its mask entry, named
//! `tfload_masked_update_<i>/cond` (python/tfload_export/optimizers.py). When tfload specializes
//! the step on a constant mask, TensorFlow has already lowered those `tf.cond`s to Switch and
//! Merge nodes, which its graph optimizer does not fold even with a constant predicate: every
//! step paid for them. Here each such `If` node is replaced with the branch the mask takes, as a
//! function call (the trained variables' update) or a `NoOp` (a frozen variable's empty branch),
//! in renamed copies of the functions that hold them and of every function that calls those,
//! so that the original step stays as it was for the plain step in the same graph.
//!
//! Nothing here needs a session: the functions come and go as serialized `FunctionDef`s.

use std::collections::HashMap;
use std::rc::Rc;

use prost::Message;

use crate::proto as pb;
use crate::proto::attr_value::Value;

/// The name scope of variable `i`'s fused update, followed by `i`.
pub const UPDATE_SCOPE: &str = "tfload_masked_update_";

/// The op types of a `tf.cond` in a function.
const IF_OPS: [&str; 2] = ["If", "StatelessIf"];

/// The functions rewritten for one mask.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedFunctions {
    /// The new name of the function that was asked for.
    pub root: String,
    /// Every new function as `(name, serialized FunctionDef)`, callees before their callers.
    pub functions: Vec<(String, Vec<u8>)>,
    /// How many `tf.cond`s were replaced with their taken branch.
    pub resolved: usize,
}

/// Why a function library could not be rewritten (the caller then keeps the functions as they
/// are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotResolved(pub String);

/// `root` and the functions it calls, directly or not, with every masked-update `tf.cond`
/// replaced by the branch that `mask` takes (entry `i` above 0: the update). `lookup` gives the
/// serialized `FunctionDef` of a library function by name, `None` for a name that is not one.
/// `Ok(None)` when nothing reachable from `root` has such a `tf.cond`.
pub fn resolve_masked_updates(
    lookup: &dyn Fn(&str) -> Option<Vec<u8>>,
    root: &str,
    mask: &[f32],
) -> Result<Option<ResolvedFunctions>, NotResolved> {
    let mut rewriter = Rewriter {
        lookup,
        fetched: HashMap::new(),
        mask,
        suffix: mask_suffix(mask),
        renamed: HashMap::new(),
        out: Vec::new(),
        resolved: 0,
    };
    let new_root = rewriter.visit(root)?;
    Ok(new_root.map(|root| ResolvedFunctions { root, functions: rewriter.out, resolved: rewriter.resolved }))
}

/// The index `i` of a node named `.../tfload_masked_update_<i>/cond`.
fn update_index(node_name: &str) -> Option<usize> {
    let mut parts = node_name.rsplit('/');
    let (last, scope) = (parts.next()?, parts.next()?);
    let digits = scope.strip_prefix(UPDATE_SCOPE)?;
    if last != "cond" || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A name suffix that tells masks apart: FNV-1a over the mask's bits.
fn mask_suffix(mask: &[f32]) -> String {
    let hash = mask
        .iter()
        .flat_map(|entry| entry.to_bits().to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    format!("_tfload_mask_{hash:016x}")
}

struct Rewriter<'a> {
    lookup: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    /// What `lookup` gave for each name asked so far: a branch is asked for twice (as a callee,
    /// and to see whether it does nothing), and each lookup serializes the function anew.
    fetched: HashMap<String, Option<Rc<[u8]>>>,
    mask: &'a [f32],
    suffix: String,
    /// Function name -> its rewritten copy's name, or `None` when it needs none (or is being
    /// visited: a function that calls itself is kept as it is).
    renamed: HashMap<String, Option<String>>,
    out: Vec<(String, Vec<u8>)>,
    resolved: usize,
}

impl Rewriter<'_> {
    /// The serialized `FunctionDef` of library function `name`, looked up once.
    fn function_bytes(&mut self, name: &str) -> Option<Rc<[u8]>> {
        let lookup = self.lookup;
        self.fetched.entry(name.to_string()).or_insert_with(|| lookup(name).map(Rc::from)).clone()
    }

    /// The new name of function `name` once rewritten, `None` when it stays as it is (or is not
    /// a library function).
    fn visit(&mut self, name: &str) -> Result<Option<String>, NotResolved> {
        if let Some(done) = self.renamed.get(name) {
            return Ok(done.clone());
        }
        let Some(bytes) = self.function_bytes(name) else {
            return Ok(None);
        };
        self.renamed.insert(name.to_string(), None);
        let mut function = pb::EditableFunctionDef::decode(&*bytes)
            .map_err(|error| NotResolved(format!("function `{name}` does not decode: {error}")))?;
        let mut changed = false;
        for node in &mut function.node_def {
            changed |= self.rename_callees(node)?;
            if IF_OPS.contains(&node.op.as_str()) {
                if let Some(taken) = self.taken_branch(node)? {
                    *node = taken;
                    self.resolved += 1;
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(None);
        }
        let new_name = format!("{name}{}", self.suffix);
        function.signature.extend(pb::OpDefName { name: new_name.clone() }.encode_to_vec());
        self.out.push((new_name.clone(), function.encode_to_vec()));
        self.renamed.insert(name.to_string(), Some(new_name.clone()));
        Ok(Some(new_name))
    }

    /// Points `node` at the rewritten copies of the functions it calls (an attribute that names
    /// a function, or the op itself); whether anything changed.
    fn rename_callees(&mut self, node: &mut pb::NodeDef) -> Result<bool, NotResolved> {
        let mut changed = false;
        if let Some(new_op) = self.visit(&node.op.clone())? {
            node.op = new_op;
            changed = true;
        }
        for bytes in node.attr.values_mut() {
            let Ok(mut attr) = pb::AttrValue::decode(bytes.as_slice()) else {
                continue;
            };
            let calls: Vec<&mut pb::NameAttrList> = match &mut attr.value {
                Some(Value::Func(call)) => vec![call],
                Some(Value::List(list)) => list.func.iter_mut().collect(),
                _ => continue,
            };
            let mut renamed = false;
            for call in calls {
                if let Some(new_name) = self.visit(&call.name.clone())? {
                    call.name = new_name;
                    renamed = true;
                }
            }
            if renamed {
                *bytes = attr.encode_to_vec();
                changed = true;
            }
        }
        Ok(changed)
    }

    /// What replaces the `If` node `node` when it is a masked update whose entry the mask has:
    /// a call of the taken branch with the `If`'s inputs after its predicate, or a `NoOp` with
    /// its control inputs when that branch does nothing. The node keeps its name, so its outputs
    /// (`<name>:output:<k>`, the same argument name for both ops) and the control edges on it stay.
    fn taken_branch(&mut self, node: &pb::NodeDef) -> Result<Option<pb::NodeDef>, NotResolved> {
        let Some(entry) = update_index(&node.name).and_then(|i| self.mask.get(i)) else {
            return Ok(None);
        };
        let branch_attr = if *entry > 0.0 { "then_branch" } else { "else_branch" };
        let func = |key: &str| match node.attr.get(key).map(|bytes| pb::AttrValue::decode(bytes.as_slice())) {
            Some(Ok(pb::AttrValue { value: Some(Value::Func(call)) })) => Some(call),
            _ => None,
        };
        let Some(branch) = func(branch_attr) else {
            return Err(NotResolved(format!("`{}` has no function in `{branch_attr}`", node.name)));
        };
        let outputs = match node.attr.get("Tout").map(|bytes| pb::AttrValue::decode(bytes.as_slice())) {
            Some(Ok(pb::AttrValue { value: Some(Value::List(list)) })) => list.r#type.len(),
            _ => return Err(NotResolved(format!("`{}` has no `Tout` list", node.name))),
        };
        let controls: Vec<String> = node.input.iter().filter(|input| input.starts_with('^')).cloned().collect();
        if outputs == 0 && self.does_nothing(&branch.name)? {
            return Ok(Some(pb::NodeDef {
                name: node.name.clone(),
                op: "NoOp".to_string(),
                input: controls,
                device: node.device.clone(),
                experimental_debug_info: node.experimental_debug_info.clone(),
                ..Default::default()
            }));
        }
        let (data, _): (Vec<&String>, Vec<&String>) = node.input.iter().partition(|input| !input.starts_with('^'));
        if data.is_empty() {
            return Err(NotResolved(format!("`{}` has no predicate input", node.name)));
        }
        let string = |text: &str| pb::AttrValue { value: Some(Value::S(text.as_bytes().to_vec())) }.encode_to_vec();
        let mut attr = HashMap::from([
            ("f".to_string(), pb::AttrValue { value: Some(Value::Func(branch)) }.encode_to_vec()),
            ("config".to_string(), string("")),
            ("config_proto".to_string(), string("")),
            ("executor_type".to_string(), string("")),
        ]);
        for key in ["Tin", "Tout"] {
            let Some(value) = node.attr.get(key) else {
                return Err(NotResolved(format!("`{}` has no `{key}`", node.name)));
            };
            attr.insert(key.to_string(), value.clone());
        }
        Ok(Some(pb::NodeDef {
            name: node.name.clone(),
            op: "StatefulPartitionedCall".to_string(),
            input: data[1..].iter().map(|input| input.to_string()).chain(controls).collect(),
            device: node.device.clone(),
            attr,
            experimental_debug_info: node.experimental_debug_info.clone(),
            experimental_type: Vec::new(),
        }))
    }

    /// Whether function `name` has no nodes and no outputs.
    fn does_nothing(&mut self, name: &str) -> Result<bool, NotResolved> {
        let Some(bytes) = self.function_bytes(name) else {
            return Err(NotResolved(format!("branch `{name}` is not in the function library")));
        };
        let function = pb::EditableFunctionDef::decode(&*bytes)
            .map_err(|error| NotResolved(format!("function `{name}` does not decode: {error}")))?;
        Ok(function.node_def.is_empty() && function.ret.is_empty() && function.control_ret.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(value: Value) -> Vec<u8> {
        pb::AttrValue { value: Some(value) }.encode_to_vec()
    }

    fn func(name: &str) -> Vec<u8> {
        attr(Value::Func(pb::NameAttrList { name: name.to_string(), attr: HashMap::new() }))
    }

    fn types(n: usize) -> Vec<u8> {
        attr(Value::List(pb::attr_value::ListValue { r#type: vec![1; n], ..Default::default() }))
    }

    fn node(name: &str, op: &str, input: &[&str], attrs: Vec<(&str, Vec<u8>)>) -> pb::NodeDef {
        pb::NodeDef {
            name: name.to_string(),
            op: op.to_string(),
            input: input.iter().map(|i| i.to_string()).collect(),
            attr: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..Default::default()
        }
    }

    fn function(name: &str, nodes: Vec<pb::NodeDef>) -> Vec<u8> {
        pb::EditableFunctionDef {
            signature: pb::OpDefName { name: name.to_string() }.encode_to_vec(),
            node_def: nodes,
            ret: HashMap::from([("out".to_string(), "x:y:0".to_string())]),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn update(i: usize) -> pb::NodeDef {
        node(
            &format!("opt/{UPDATE_SCOPE}{i}/cond"),
            "If",
            &["greater:z:0", "handle", "grad:output:0", "^before"],
            vec![
                ("then_branch", func("train")),
                ("else_branch", func("keep")),
                ("Tin", types(2)),
                ("Tout", types(0)),
                ("Tcond", attr(Value::Type(10))),
            ],
        )
    }

    /// A step `outer` calling `inner` (through `f`), which holds the updates of variables 0 and 2.
    fn library() -> HashMap<String, Vec<u8>> {
        HashMap::from([
            (
                "outer".to_string(),
                function("outer", vec![node("call", "StatefulPartitionedCall", &[], vec![("f", func("inner"))])]),
            ),
            (
                "inner".to_string(),
                function("inner", vec![update(0), node("other", "Identity", &["a"], vec![]), update(2)]),
            ),
            ("train".to_string(), function("train", vec![node("apply", "ResourceApplyGradientDescent", &[], vec![])])),
            (
                "keep".to_string(),
                pb::EditableFunctionDef {
                    signature: pb::OpDefName { name: "keep".into() }.encode_to_vec(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            ("eval".to_string(), function("eval", vec![node("n", "Identity", &["a"], vec![])])),
        ])
    }

    fn resolve(mask: &[f32], root: &str) -> Option<ResolvedFunctions> {
        let library = library();
        resolve_masked_updates(&|name| library.get(name).cloned(), root, mask).unwrap()
    }

    fn decoded(resolved: &ResolvedFunctions, name: &str) -> pb::EditableFunctionDef {
        let (_, bytes) = resolved.functions.iter().find(|(n, _)| n.starts_with(name)).unwrap();
        pb::EditableFunctionDef::decode(bytes.as_slice()).unwrap()
    }

    #[test]
    fn the_taken_branch_replaces_each_masked_update_in_renamed_copies_up_to_the_root() {
        let resolved = resolve(&[1.0, 1.0, 0.0], "outer").unwrap();
        assert_eq!(resolved.resolved, 2);
        assert!(resolved.root.starts_with("outer_tfload_mask_"), "{}", resolved.root);
        let names: Vec<&str> = resolved.functions.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names[0].starts_with("inner_") && names[1] == resolved.root, "callees first: {names:?}");

        let inner = decoded(&resolved, "inner_");
        let renamed = pb::OpDefName::decode(inner.signature.as_slice()).unwrap().name;
        assert_eq!(renamed, names[0], "the appended name wins");
        let trained = &inner.node_def[0];
        assert_eq!(
            (trained.name.as_str(), trained.op.as_str()),
            ("opt/tfload_masked_update_0/cond", "StatefulPartitionedCall")
        );
        assert_eq!(trained.input, ["handle", "grad:output:0", "^before"], "predicate dropped, control kept");
        match pb::AttrValue::decode(trained.attr["f"].as_slice()).unwrap().value {
            Some(Value::Func(call)) => assert_eq!(call.name, "train"),
            other => panic!("{other:?}"),
        }
        assert!(trained.attr.contains_key("Tin") && !trained.attr.contains_key("Tcond"));
        let frozen = &inner.node_def[2];
        assert_eq!((frozen.op.as_str(), frozen.input.as_slice()), ("NoOp", &["^before".to_string()][..]));
        assert_eq!(inner.node_def[1].op, "Identity", "other nodes untouched");
        assert_eq!(inner.ret["out"], "x:y:0");

        let outer = decoded(&resolved, "outer_");
        match pb::AttrValue::decode(outer.node_def[0].attr["f"].as_slice()).unwrap().value {
            Some(Value::Func(call)) => assert_eq!(call.name, names[0], "the caller calls the copy"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_mask_gives_other_names_and_a_library_without_masked_updates_none() {
        let a = resolve(&[1.0, 1.0, 0.0], "outer").unwrap();
        let b = resolve(&[1.0, 1.0, 1.0], "outer").unwrap();
        assert_ne!(a.root, b.root);
        assert_eq!(decoded(&b, "inner_").node_def[2].op, "StatefulPartitionedCall");
        assert_eq!(resolve(&[1.0], "eval"), None);
        // An entry the mask does not have leaves that cond as it is.
        let short = resolve(&[0.0], "inner").unwrap();
        assert_eq!((short.resolved, decoded(&short, "inner_").node_def[2].op.as_str()), (1, "If"));
    }

    #[test]
    fn each_function_is_looked_up_once() {
        let library = library();
        let asked = std::cell::RefCell::new(Vec::new());
        let lookup = |name: &str| {
            asked.borrow_mut().push(name.to_string());
            library.get(name).cloned()
        };
        let resolved = resolve_masked_updates(&lookup, "outer", &[1.0, 0.0, 0.0]).unwrap().unwrap();
        assert_eq!(resolved.resolved, 2, "variable 0's update called, variable 2's a NoOp");
        let mut names = asked.into_inner();
        let asked_for = names.len();
        names.sort();
        names.dedup();
        assert_eq!(asked_for, names.len(), "asked twice among {names:?}");
        assert!(names.contains(&"keep".to_string()), "the empty branch was looked at: {names:?}");
    }

    #[test]
    fn only_an_exact_update_scope_names_an_index() {
        assert_eq!(update_index("a/tfload_masked_update_12/cond"), Some(12));
        assert_eq!(update_index("tfload_masked_update_3/cond"), Some(3));
        assert_eq!(update_index("tfload_masked_update_3_1/cond"), None, "a uniquified scope");
        assert_eq!(update_index("tfload_masked_update_3/cond_1"), None);
        assert_eq!(update_index("cond"), None);
        assert_eq!(update_index("tfload_masked_update_/cond"), None);
    }
}
