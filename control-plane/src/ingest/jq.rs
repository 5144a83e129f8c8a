//! jq programs (jaq): compiled once when a source's configuration loads, run per webhook.
//!
//! Every program sees the parsed document as its input and `$meta` (source, received time,
//! client address, method, path, query, headers) as a variable.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, RcIter};
use jaq_json::Val;
use std::fmt;

/// A compiled jq program.
pub struct Program {
    filter: jaq_core::Filter<jaq_core::Native<Val>>,
    code: String,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Program({:?})", self.code)
    }
}

/// A document and `$meta`, converted once for every program run on them (jaq's values are
/// reference-counted: each run clones a pointer, not the document).
pub struct Input {
    doc: Val,
    meta: Val,
}

impl Input {
    /// The input of the programs.
    pub fn new(doc: &serde_json::Value, meta: &serde_json::Value) -> Input {
        Input {
            doc: Val::from(doc.clone()),
            meta: Val::from(meta.clone()),
        }
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
        let inputs = RcIter::new(core::iter::empty());
        let mut out = self
            .filter
            .run((Ctx::new([input.meta.clone()], &inputs), input.doc.clone()));
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
    fn truthiness_and_runtime_errors() {
        let p = Program::compile(".amount > 100").unwrap();
        let input = |v: Value| Input::new(&v, &Value::Null);
        assert!(p.matches(&input(json!({"amount": 101}))).unwrap());
        assert!(!p.matches(&input(json!({"amount": 5}))).unwrap());
        assert!(!p.uses_meta());
        assert!(!Program::compile("empty")
            .unwrap()
            .matches(&input(json!(1)))
            .unwrap());
        let e = run(
            &Program::compile(".a + 1").unwrap(),
            json!({"a": "x"}),
            json!({}),
        );
        assert!(e.is_err());
    }
}
