//! jq programs (jaq): compiled once when a source's configuration loads, run per webhook.
//!
//! Every program sees the parsed document as its input and `$meta` (source, received time,
//! client address, method, path, query, headers) as a variable.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, RcIter};
use jaq_json::Val;
use std::cell::OnceCell;
use std::fmt;
use std::rc::Rc;

/// A compiled jq program.
pub struct Program {
    filter: jaq_core::Filter<jaq_core::Native<Val>>,
    code: String,
    /// For a plain field path (`.type`, `.data.object.id`): its keys. Such programs, the most
    /// common event type and key expressions, are read straight from the document while it
    /// holds objects, without converting it for jaq; indexing anything else (a string, null) is
    /// left to jaq, which answers with its error.
    fields: Option<Vec<String>>,
}

/// The keys of a program that is only `.key.key...` with identifier keys.
fn field_path(code: &str) -> Option<Vec<String>> {
    let code = code.trim();
    let rest = code.strip_prefix('.')?;
    if rest.is_empty() {
        return None;
    }
    let identifier = |k: &&str| {
        let mut chars = k.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let keys: Vec<&str> = rest.split('.').collect();
    keys.iter()
        .all(identifier)
        .then(|| keys.into_iter().map(str::to_owned).collect())
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Program({:?})", self.code)
    }
}

/// A document and `$meta`, converted when the first program runs and shared by the rest
/// (jaq's values are reference-counted: each run clones a pointer, not the document). A
/// pipeline without programs never converts anything.
pub struct Input<'a> {
    doc: &'a serde_json::Value,
    meta: &'a serde_json::Value,
    converted: OnceCell<(Val, Val)>,
}

impl<'a> Input<'a> {
    /// The input of the programs.
    pub fn new(doc: &'a serde_json::Value, meta: &'a serde_json::Value) -> Input<'a> {
        Input {
            doc,
            meta,
            converted: OnceCell::new(),
        }
    }

    fn values(&self) -> &(Val, Val) {
        self.converted
            .get_or_init(|| (to_val(self.doc), to_val(self.meta)))
    }
}

/// jaq's value for a JSON document, read in place: `Val::from` takes the document by value
/// (a deep copy here) and formats every number to parse it back. The result is the same:
/// integers that fit `isize` are `Int`, every other number keeps its text.
fn to_val(v: &serde_json::Value) -> Val {
    use serde_json::Value;
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => match n.as_i64().and_then(|i| isize::try_from(i).ok()) {
            Some(i) => Val::Int(i),
            None => Val::Num(Rc::new(n.to_string())),
        },
        Value::String(s) => Val::Str(Rc::new(s.clone())),
        Value::Array(a) => a.iter().map(to_val).collect(),
        Value::Object(o) => Val::Obj(Rc::new(
            o.iter()
                .map(|(k, v)| (Rc::new(k.clone()), to_val(v)))
                .collect(),
        )),
    }
}

/// Where in the program text a problem is, as `line:column`.
fn position(code: &str, at: &str) -> String {
    let offset = (at.as_ptr() as usize)
        .checked_sub(code.as_ptr() as usize)
        .filter(|o| *o <= code.len())
        .unwrap_or(0);
    let before = &code[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{column}")
}

impl Program {
    /// Compiles `code`.
    ///
    /// # Errors
    /// A syntax error or an undefined name, with its position.
    pub fn compile(code: &str) -> Result<Program, String> {
        let loader = Loader::new(jaq_std::defs().chain(jaq_json::defs()));
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errors| {
                let mut out = Vec::new();
                for (_, e) in errors {
                    match e {
                        jaq_core::load::Error::Io(v) => {
                            out.extend(v.into_iter().map(|(_, m)| m));
                        }
                        jaq_core::load::Error::Lex(v) => {
                            out.extend(v.into_iter().map(|(expected, at)| {
                                format!(
                                    "syntax error at {}: expected {}",
                                    position(code, at),
                                    expected.as_str()
                                )
                            }))
                        }
                        jaq_core::load::Error::Parse(v) => {
                            out.extend(v.into_iter().map(|(expected, token)| {
                                format!(
                                    "syntax error at {}: expected {}",
                                    position(code, token),
                                    expected.as_str()
                                )
                            }))
                        }
                    }
                }
                out.join("; ")
            })?;
        let filter = Compiler::default()
            .with_funs(jaq_std::funs().chain(jaq_json::funs()))
            .with_global_vars(["$meta"])
            .compile(modules)
            .map_err(|errors| {
                errors
                    .into_iter()
                    .flat_map(|(_, v)| v)
                    .map(|(name, undefined)| {
                        format!(
                            "undefined {} `{name}` at {}",
                            undefined.as_str(),
                            position(code, name)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        Ok(Program {
            filter,
            code: code.to_owned(),
            fields: field_path(code),
        })
    }

    /// Whether the program reads `$meta` (else the caller need not build it).
    pub fn uses_meta(&self) -> bool {
        self.code.contains("$meta")
    }

    /// The program's first output for `input`; `None` when it outputs nothing (`empty`).
    ///
    /// # Errors
    /// A runtime error of the program (a type error, `error(...)`).
    pub fn first(&self, input: &Input) -> Result<Option<serde_json::Value>, String> {
        if let Some(fields) = &self.fields {
            const NULL: serde_json::Value = serde_json::Value::Null;
            let mut at = input.doc;
            for key in fields {
                at = match at {
                    serde_json::Value::Object(o) => o.get(key).unwrap_or(&NULL),
                    // jaq's answer for indexing anything else (an error, even for null).
                    _ => return self.run(input),
                };
            }
            return Ok(Some(at.clone()));
        }
        self.run(input)
    }

    /// The program run by jaq.
    fn run(&self, input: &Input) -> Result<Option<serde_json::Value>, String> {
        let inputs = RcIter::new(core::iter::empty());
        let (doc, meta) = input.values();
        let mut out = self
            .filter
            .run((Ctx::new([meta.clone()], &inputs), doc.clone()));
        match out.next() {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v.into())),
            Some(Err(e)) => Err(e.to_string()),
        }
    }

    /// Whether the first output is truthy (anything but `false`, `null` or nothing).
    ///
    /// # Errors
    /// A runtime error of the program.
    pub fn matches(&self, input: &Input) -> Result<bool, String> {
        Ok(!matches!(
            self.first(input)?,
            None | Some(serde_json::Value::Null | serde_json::Value::Bool(false))
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{Input, Program};
    use serde_json::{json, Value};

    fn run(p: &Program, doc: Value, meta: Value) -> Result<Option<Value>, String> {
        p.first(&Input::new(&doc, &meta))
    }

    #[test]
    fn runs_with_meta() {
        let p =
            Program::compile("{kind: .type, from: $meta.source, n: (.items | length)}").unwrap();
        let out = run(
            &p,
            json!({"type": "a", "items": [1, 2]}),
            json!({"source": "stripe"}),
        )
        .unwrap();
        assert!(p.uses_meta());
        assert_eq!(out, Some(json!({"kind": "a", "from": "stripe", "n": 2})));
    }

    #[test]
    fn errors_name_the_position() {
        let e = Program::compile(".a |\n {b: ").unwrap_err();
        assert!(e.contains("syntax error at 2:"), "{e}");
        let e = Program::compile(".a | nosuchfn").unwrap_err();
        assert!(e.contains("undefined") && e.contains("nosuchfn"), "{e}");
    }

    #[test]
    fn documents_convert_as_jaq_converts_them() {
        let doc = json!({
            "int": 42, "neg": -7, "big": 18446744073709551615u64, "float": 1.5, "whole": 2.0,
            "exp": 1e300, "s": "héllo \"q\"", "t": true, "n": null,
            "arr": [1, "a", [], {}, {"k": [0.25]}], "obj": {"b": 1, "a": 2}
        });
        assert!(super::to_val(&doc) == jaq_json::Val::from(doc.clone()));
        // Numbers keep their text where jq would: through a program and back.
        let p = Program::compile("[.big, .float, .whole, .int + 1, (.obj | keys)]").unwrap();
        assert_eq!(
            p.first(&Input::new(&doc, &Value::Null)).unwrap(),
            Some(json!([18446744073709551615u64, 1.5, 2.0, 43, ["a", "b"]]))
        );
    }

    #[test]
    fn field_paths_read_in_place_give_what_jaq_gives() {
        let docs = [
            json!({"type": "invoice.paid", "data": {"object": {"id": "in_1", "n": 2.0, "u": 18446744073709551615u64}}}),
            json!({"type": null, "data": null}),
            json!({"data": {"object": "text"}}),
            json!({"data": [1, 2]}),
            json!("a string"),
            json!([{"type": "x"}]),
            json!(7),
            json!(null),
        ];
        let programs = [
            ".type",
            " .data.object.id ",
            ".data.object.n",
            ".data.object.u",
            ".data.object",
            ".missing.deeper",
            "._x1",
        ];
        for code in programs {
            let p = Program::compile(code).unwrap();
            assert!(p.fields.is_some(), "{code} is a field path");
            for doc in &docs {
                let input = Input::new(doc, &Value::Null);
                assert_eq!(p.first(&input), p.run(&input), "{code} on {doc}");
            }
        }
        // Not plain field paths: jaq runs them.
        for code in [
            ".", ".a[0]", ".a | .b", ".\"a b\"", ".a?", "$meta.x", ".1a", "..", ".a.",
        ] {
            assert!(
                Program::compile(code).map_or(true, |p| p.fields.is_none()),
                "{code}"
            );
        }
        // Indexing a string is jq's error, with its message.
        let p = Program::compile(".data.object.id").unwrap();
        let doc = json!({"data": {"object": "text"}});
        assert!(p.first(&Input::new(&doc, &Value::Null)).is_err());
    }

    #[test]
    fn truthiness_and_runtime_errors() {
        let p = Program::compile(".amount > 100").unwrap();
        let matches = |p: &Program, v: Value| p.matches(&Input::new(&v, &Value::Null));
        assert!(matches(&p, json!({"amount": 101})).unwrap());
        assert!(!matches(&p, json!({"amount": 5})).unwrap());
        assert!(!p.uses_meta());
        assert!(!matches(&Program::compile("empty").unwrap(), json!(1)).unwrap());
        let e = run(
            &Program::compile(".a + 1").unwrap(),
            json!({"a": "x"}),
            json!({}),
        );
        assert!(e.is_err());
    }
}
