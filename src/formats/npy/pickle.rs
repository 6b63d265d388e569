//! numpy object arrays (`dtype=object`) of byte strings: `np.save` writes them as a pickle of the
//! array, which this reads without running anything. Only the opcodes numpy's pickles of object
//! arrays use (protocols 2 to 5) are understood; the result must be numpy's own
//! `_reconstruct(ndarray, (0,), b'b')` built with a state whose elements are all `bytes` or
//! `str` (taken as UTF-8). Anything else is refused with what to save instead. Objects nest at
//! most [`MAX_DEPTH`] deep, so nothing recurses without bound (dropping included).

use std::collections::HashMap;
use std::rc::Rc;

/// The deepest nesting of tuples, lists and calls accepted (numpy's pickles nest 4 deep).
const MAX_DEPTH: usize = 16;

/// What numpy writes an object array's elements as; anything else is refused with this advice.
pub(super) const SAVE_AS_S: &str =
    "save byte strings as a fixed-width bytes array instead: np.save(path, np.array(values, dtype='S'))";

/// A Python object as far as numpy's pickles need.
#[derive(Debug)]
enum Obj {
    None,
    Bool,
    Int(i64),
    Bytes(Vec<u8>),
    Str(String),
    Tuple(Vec<Rc<Obj>>, usize),
    List(Vec<Rc<Obj>>, usize),
    Global(String, String),
    /// A call's function (its arguments are not needed).
    Call(Rc<Obj>, usize),
    Built(Rc<Obj>, Rc<Obj>, usize),
}

impl Obj {
    fn depth(&self) -> usize {
        match self {
            Obj::Tuple(_, d) | Obj::List(_, d) | Obj::Call(_, d) | Obj::Built(_, _, d) => *d,
            _ => 0,
        }
    }
}

/// One slot of the unpickler's stack.
enum Slot {
    Mark,
    Obj(Rc<Obj>),
}

/// The elements of the object array pickled in `data`, in C order, with its shape. `limit`
/// refuses a total size of the elements before they are copied (a pickle may repeat one).
pub(super) fn object_array(
    data: &[u8],
    limit: &dyn Fn(u64) -> Result<(), String>,
) -> Result<(Vec<u64>, Vec<Vec<u8>>), String> {
    let top = unpickle(data)?;
    let refused = || format!("holds a pickle that is not a numpy object array of byte strings; {SAVE_AS_S}");
    let Obj::Built(array, state, _) = &*top else { return Err(refused()) };
    let Obj::Call(function, _) = &**array else { return Err(refused()) };
    let is_reconstruct = matches!(&**function, Obj::Global(module, name)
        if (module == "numpy.core.multiarray" || module == "numpy._core.multiarray") && name == "_reconstruct");
    let Obj::Tuple(state, _) = &**state else { return Err(refused()) };
    let ([_version, shape, _dtype, _fortran, items], true) = (state.as_slice(), is_reconstruct) else {
        return Err(refused());
    };
    let (Obj::Tuple(shape, _), Obj::List(items, _)) = (&**shape, &**items) else { return Err(refused()) };
    let shape = shape
        .iter()
        .map(|d| match **d {
            Obj::Int(d) => u64::try_from(d).ok(),
            _ => None,
        })
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(refused)?;
    let elements = items
        .iter()
        .enumerate()
        .map(|(i, item)| match &**item {
            Obj::Bytes(b) => Ok(b.as_slice()),
            Obj::Str(s) => Ok(s.as_bytes()),
            other => Err(format!(
                "holds an object array whose element {i} is {}, not bytes or str; {SAVE_AS_S}",
                kind(other)
            )),
        })
        .collect::<Result<Vec<&[u8]>, _>>()?;
    limit(elements.iter().map(|e| e.len() as u64).sum())?;
    Ok((shape, elements.into_iter().map(<[u8]>::to_vec).collect()))
}

fn kind(obj: &Obj) -> &'static str {
    match obj {
        Obj::None => "None",
        Obj::Bool => "a bool",
        Obj::Int(_) => "an int",
        Obj::Bytes(_) => "bytes",
        Obj::Str(_) => "a str",
        Obj::Tuple(..) => "a tuple",
        Obj::List(..) => "a list",
        Obj::Global(..) | Obj::Call(..) | Obj::Built(..) => "an object",
    }
}

/// Runs the pickle's opcodes into an object tree; the first unknown opcode stops it.
fn unpickle(data: &[u8]) -> Result<Rc<Obj>, String> {
    let mut reader = Reader { data, at: 0 };
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: HashMap<u64, Rc<Obj>> = HashMap::new();
    let corrupt = |what: &str| format!("holds an object array whose pickle is corrupt ({what}); {SAVE_AS_S}");
    loop {
        let opcode = reader.take(1).map_err(|e| corrupt(&e))?[0];
        let value = match opcode {
            0x80 => {
                reader.take(1).map_err(|e| corrupt(&e))?; // PROTO
                continue;
            }
            0x95 => {
                reader.take(8).map_err(|e| corrupt(&e))?; // FRAME
                continue;
            }
            b'.' => {
                return match (stack.pop(), stack.is_empty()) {
                    (Some(Slot::Obj(top)), true) => Ok(top),
                    _ => Err(corrupt("it stops with other than one object on its stack")),
                }
            }
            b'(' => {
                stack.push(Slot::Mark);
                continue;
            }
            0x94 => {
                let top = top(&stack).ok_or_else(|| corrupt("MEMOIZE on an empty stack"))?;
                memo.insert(memo.len() as u64, top);
                continue;
            }
            b'q' | b'r' => {
                let index = if opcode == b'q' { reader.uint(1) } else { reader.uint(4) }.map_err(|e| corrupt(&e))?;
                let top = top(&stack).ok_or_else(|| corrupt("PUT on an empty stack"))?;
                memo.insert(index, top);
                continue;
            }
            b'h' | b'j' => {
                let index = if opcode == b'h' { reader.uint(1) } else { reader.uint(4) }.map_err(|e| corrupt(&e))?;
                Rc::clone(memo.get(&index).ok_or_else(|| corrupt("GET of a memo entry never put"))?)
            }
            b'N' => Rc::new(Obj::None),
            0x88 | 0x89 => Rc::new(Obj::Bool),
            b'K' => Rc::new(Obj::Int(reader.uint(1).map_err(|e| corrupt(&e))? as i64)),
            b'M' => Rc::new(Obj::Int(reader.uint(2).map_err(|e| corrupt(&e))? as i64)),
            b'J' => Rc::new(Obj::Int(i64::from(reader.uint(4).map_err(|e| corrupt(&e))? as u32 as i32))),
            b'C' | b'B' | 0x8e => {
                let len = reader
                    .uint(match opcode {
                        b'C' => 1,
                        b'B' => 4,
                        _ => 8,
                    })
                    .map_err(|e| corrupt(&e))?;
                Rc::new(Obj::Bytes(reader.take_len(len).map_err(|e| corrupt(&e))?.to_vec()))
            }
            0x8c | b'X' | 0x8d => {
                let len = reader
                    .uint(match opcode {
                        0x8c => 1,
                        b'X' => 4,
                        _ => 8,
                    })
                    .map_err(|e| corrupt(&e))?;
                let bytes = reader.take_len(len).map_err(|e| corrupt(&e))?;
                Rc::new(Obj::Str(String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("a str that is not UTF-8"))?))
            }
            b'c' => {
                let module = reader.line().map_err(|e| corrupt(&e))?;
                let name = reader.line().map_err(|e| corrupt(&e))?;
                Rc::new(Obj::Global(module, name))
            }
            0x93 => {
                let (module, name) = pop2(&mut stack).ok_or_else(|| corrupt("STACK_GLOBAL without two strings"))?;
                match (&*module, &*name) {
                    (Obj::Str(m), Obj::Str(n)) => Rc::new(Obj::Global(m.clone(), n.clone())),
                    _ => return Err(corrupt("STACK_GLOBAL of other than two strings")),
                }
            }
            b')' => Rc::new(Obj::Tuple(Vec::new(), 1)),
            b']' => Rc::new(Obj::List(Vec::new(), 1)),
            0x85..=0x87 => {
                let count = usize::from(opcode - 0x84);
                if stack.len() < count {
                    return Err(corrupt("a TUPLE of more objects than the stack holds"));
                }
                let items =
                    objects(stack.split_off(stack.len() - count)).ok_or_else(|| corrupt("a mark in a TUPLE"))?;
                nested(items, Obj::Tuple).map_err(|e| corrupt(&e))?
            }
            b't' => nested(pop_to_mark(&mut stack).ok_or_else(|| corrupt("TUPLE without a mark"))?, Obj::Tuple)
                .map_err(|e| corrupt(&e))?,
            b'a' | b'e' => {
                let items = if opcode == b'e' {
                    pop_to_mark(&mut stack).ok_or_else(|| corrupt("APPENDS without a mark"))?
                } else {
                    vec![pop(&mut stack).ok_or_else(|| corrupt("APPEND on an empty stack"))?]
                };
                let list = pop(&mut stack).ok_or_else(|| corrupt("APPEND without a list"))?;
                let Obj::List(existing, _) = &*list else { return Err(corrupt("APPEND to other than a list")) };
                let mut all: Vec<Rc<Obj>> = existing.clone();
                all.extend(items);
                nested(all, Obj::List).map_err(|e| corrupt(&e))?
            }
            b'R' | b'b' => {
                let (callee, argument) =
                    pop2(&mut stack).ok_or_else(|| corrupt("REDUCE or BUILD without two objects"))?;
                let depth = callee.depth().max(argument.depth()) + 1;
                if depth > MAX_DEPTH {
                    return Err(corrupt("objects nested too deep"));
                }
                Rc::new(if opcode == b'R' { Obj::Call(callee, depth) } else { Obj::Built(callee, argument, depth) })
            }
            other => {
                return Err(format!(
                "holds an object array whose pickle uses opcode 0x{other:02x}, which tfload does not read; {SAVE_AS_S}"
            ))
            }
        };
        stack.push(Slot::Obj(value));
    }
}

/// A tuple or list of `items`, refused past [`MAX_DEPTH`].
fn nested(items: Vec<Rc<Obj>>, make: fn(Vec<Rc<Obj>>, usize) -> Obj) -> Result<Rc<Obj>, String> {
    let depth = items.iter().map(|i| i.depth()).max().unwrap_or(0) + 1;
    if depth > MAX_DEPTH {
        return Err("objects nested too deep".to_string());
    }
    Ok(Rc::new(make(items, depth)))
}

fn top(stack: &[Slot]) -> Option<Rc<Obj>> {
    match stack.last()? {
        Slot::Obj(obj) => Some(Rc::clone(obj)),
        Slot::Mark => None,
    }
}

fn pop(stack: &mut Vec<Slot>) -> Option<Rc<Obj>> {
    match stack.pop()? {
        Slot::Obj(obj) => Some(obj),
        Slot::Mark => None,
    }
}

fn pop2(stack: &mut Vec<Slot>) -> Option<(Rc<Obj>, Rc<Obj>)> {
    let second = pop(stack)?;
    Some((pop(stack)?, second))
}

fn objects(slots: Vec<Slot>) -> Option<Vec<Rc<Obj>>> {
    slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Obj(obj) => Some(obj),
            Slot::Mark => None,
        })
        .collect()
}

/// The objects above the topmost mark, which is removed.
fn pop_to_mark(stack: &mut Vec<Slot>) -> Option<Vec<Rc<Obj>>> {
    let mark = stack.iter().rposition(|slot| matches!(slot, Slot::Mark))?;
    let items = objects(stack.split_off(mark + 1));
    stack.pop();
    items
}

/// The pickle's bytes, read from the front; running out is an error, never a panic.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.data.len()).ok_or("it ends early")?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn take_len(&mut self, len: u64) -> Result<&'a [u8], String> {
        self.take(usize::try_from(len).map_err(|_| "a length beyond memory")?)
    }

    /// A little-endian unsigned integer of `width` bytes.
    fn uint(&mut self, width: usize) -> Result<u64, String> {
        Ok(self.take(width)?.iter().rev().fold(0u64, |n, &b| n << 8 | u64::from(b)))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.at..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or("a GLOBAL without its newline")?;
        let line = String::from_utf8(rest[..end].to_vec()).map_err(|_| "a GLOBAL that is not text")?;
        self.at += end + 1;
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pickle numpy 2 writes for `np.array([b'\xff', 'ok'], dtype=object)` (protocol 4).
    fn numpy_pickle() -> Vec<u8> {
        let mut p = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        p.extend(b"\x8c\x16numpy._core.multiarray\x94\x8c\x0c_reconstruct\x94\x93\x94");
        p.extend(b"\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94K\x00\x85\x94C\x01b\x94\x87\x94R\x94");
        p.extend(b"(K\x01K\x02\x85\x94h\x03\x8c\x05dtype\x94\x93\x94\x8c\x02O8\x94\x89\x88\x87\x94R\x94");
        p.extend(b"(K\x03\x8c\x01|\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?t\x94b\x89]\x94");
        p.extend(b"(C\x01\xff\x94\x8c\x02ok\x94et\x94b.");
        p
    }

    #[test]
    fn reads_numpys_pickle_of_an_object_array_of_bytes() {
        let (shape, elements) = object_array(&numpy_pickle(), &|_| Ok(())).unwrap();
        assert_eq!(shape, vec![2]);
        assert_eq!(elements, vec![vec![0xff], b"ok".to_vec()]);
        let error = object_array(&numpy_pickle(), &|bytes| Err(format!("{bytes} bytes"))).unwrap_err();
        assert_eq!(error, "3 bytes");
    }

    #[test]
    fn refuses_truncated_deep_and_foreign_pickles() {
        let pickle = numpy_pickle();
        for end in [0, 1, 20, pickle.len() / 2, pickle.len() - 1] {
            let error = object_array(&pickle[..end], &|_| Ok(())).unwrap_err();
            assert!(error.contains("corrupt") && error.contains("dtype='S'"), "{end}: {error}");
        }
        let deep: Vec<u8> = std::iter::once(b'N').chain(std::iter::repeat_n(0x85, 10_000)).chain(*b".").collect();
        assert!(object_array(&deep, &|_| Ok(())).unwrap_err().contains("nested too deep"));
        let ints = b"\x80\x02]\x94(K\x01e.".to_vec();
        assert!(object_array(&ints, &|_| Ok(())).unwrap_err().contains("not a numpy object array"));
        assert!(object_array(b"\x80\x02cos\nsystem\n\x8c\x02ls\x85R.", &|_| Ok(()))
            .unwrap_err()
            .contains("not a numpy object array"));
        assert!(object_array(b"\x80\x02I1\n.", &|_| Ok(())).unwrap_err().contains("opcode 0x49"));
    }
}
