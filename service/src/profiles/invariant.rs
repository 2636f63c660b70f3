//! The boolean FHIRPath subset our profiles' invariants
//! (`constraint.expression`) use, parsed once when the profiles load and
//! evaluated on a resource (or an element of it) as true, false or empty.
//!
//! Supported: paths relative to the context element (a leading name equal
//! to the context's resource type is the context itself), choice elements
//! by their bare name (`value` finds `valueInteger`, via the search
//! module's path step), `where(criteria)`, `exists()`, parentheses, string
//! and number literals, `=`, `!=`, `<`, `<=`, `>`, `>=`, `and`, `or`,
//! `implies`, with FHIRPath precedence and three-valued logic. Anything else
//! (other functions, `xor`, `$this`, `%vars`, indexers, arithmetic) is
//! refused at parse time.

use std::cmp::Ordering;

use serde_json::Value;

use crate::search::fhirpath::{child, Parser, Tok};

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

/// A parsed invariant.
#[derive(Debug, Clone)]
pub struct Invariant {
    ast: Ast,
}

#[derive(Debug, Clone)]
enum Ast {
    /// The context (focus) itself.
    This,
    Child(Box<Ast>, String),
    Where(Box<Ast>, Box<Ast>),
    Exists(Box<Ast>),
    Str(String),
    Num(f64),
    Cmp(Box<Ast>, Op, Box<Ast>),
    And(Box<Ast>, Box<Ast>),
    Or(Box<Ast>, Box<Ast>),
    Implies(Box<Ast>, Box<Ast>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Invariant {
    /// Parses an invariant; anything outside the subset is an Err naming it.
    pub fn parse(text: &str) -> Result<Invariant, String> {
        let mut p = Parser::new(text)?;
        let ast = p.implies()?;
        match p.peek() {
            None => Ok(Invariant { ast }),
            Some(t) => Err(p.err(&format!("unsupported or unexpected {}", t.show()))),
        }
    }

    /// The invariant on `focus` (a resource or one of its elements):
    /// `Some(true|false)`, or `None` when it evaluates to empty.
    pub fn evaluate(&self, focus: &Value) -> Option<bool> {
        truth(&eval(&self.ast, &[focus]))
    }

    /// Whether the invariant holds: an empty result counts as satisfied.
    pub fn holds(&self, focus: &Value) -> bool {
        self.evaluate(focus) != Some(false)
    }
}

/// A collection as a boolean (FHIRPath singleton evaluation): empty is
/// empty, a boolean is itself, any other single item is true.
fn truth(items: &[&Value]) -> Option<bool> {
    match items {
        [] => None,
        [Value::Bool(b)] => Some(*b),
        _ => Some(true),
    }
}

fn boolean(b: Option<bool>) -> Vec<&'static Value> {
    match b {
        None => vec![],
        Some(true) => vec![&TRUE],
        Some(false) => vec![&FALSE],
    }
}

fn eval<'a>(ast: &'a Ast, focus: &[&'a Value]) -> Vec<&'a Value> {
    match ast {
        Ast::This => focus.to_vec(),
        Ast::Child(base, name) => {
            let mut out = vec![];
            for v in eval(base, focus) {
                child(v, name, &mut out);
            }
            out.into_iter().map(|n| n.value).collect()
        }
        Ast::Where(base, criteria) => eval(base, focus)
            .into_iter()
            .filter(|v| truth(&eval(criteria, &[v])) == Some(true))
            .collect(),
        Ast::Exists(base) => boolean(Some(!eval(base, focus).is_empty())),
        Ast::Str(_) | Ast::Num(_) => vec![],
        Ast::Cmp(l, op, r) => boolean(compare(&operand(l, focus), *op, &operand(r, focus))),
        Ast::And(l, r) => {
            let (a, b) = (truth(&eval(l, focus)), truth(&eval(r, focus)));
            boolean(match (a, b) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            })
        }
        Ast::Or(l, r) => {
            let (a, b) = (truth(&eval(l, focus)), truth(&eval(r, focus)));
            boolean(match (a, b) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            })
        }
        Ast::Implies(l, r) => {
            let (a, b) = (truth(&eval(l, focus)), truth(&eval(r, focus)));
            boolean(match (a, b) {
                (Some(false), _) | (_, Some(true)) => Some(true),
                (Some(true), Some(false)) => Some(false),
                _ => None,
            })
        }
    }
}

/// A comparison operand: literals as JSON, anything else evaluated.
fn operand(ast: &Ast, focus: &[&Value]) -> Vec<Value> {
    match ast {
        Ast::Str(s) => vec![Value::String(s.clone())],
        Ast::Num(n) => serde_json::Number::from_f64(*n)
            .map(Value::Number)
            .into_iter()
            .collect(),
        other => eval(other, focus).into_iter().cloned().collect(),
    }
}

fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// `=`/`!=` compare collections item by item; the ordering operators need
/// one item each side. An empty operand gives empty.
fn compare(l: &[Value], op: Op, r: &[Value]) -> Option<bool> {
    if l.is_empty() || r.is_empty() {
        return None;
    }
    let same = || {
        l.len() == r.len()
            && l.iter().zip(r).all(|(a, b)| match order(a, b) {
                Some(o) => o == Ordering::Equal,
                None => a == b,
            })
    };
    match op {
        Op::Eq => Some(same()),
        Op::Ne => Some(!same()),
        _ => {
            let ([a], [b]) = (l, r) else { return None };
            let o = order(a, b)?;
            Some(match op {
                Op::Lt => o == Ordering::Less,
                Op::Le => o != Ordering::Greater,
                Op::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            })
        }
    }
}

/// The invariant grammar, on the shared FHIRPath token cursor.
impl Parser<'_> {
    fn implies(&mut self) -> Result<Ast, String> {
        let mut l = self.or()?;
        while self.eat_word("implies") {
            l = Ast::Implies(Box::new(l), Box::new(self.or()?));
        }
        Ok(l)
    }

    fn or(&mut self) -> Result<Ast, String> {
        let mut l = self.and()?;
        while self.eat_word("or") {
            l = Ast::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Ast, String> {
        let mut l = self.equality()?;
        while self.eat_word("and") {
            l = Ast::And(Box::new(l), Box::new(self.equality()?));
        }
        Ok(l)
    }

    fn binary(&mut self, ops: &[(&'static str, Op)]) -> Option<Op> {
        let found = ops
            .iter()
            .find(|(s, _)| self.peek() == Some(&Tok::Sym(s)))?;
        self.pos += 1;
        Some(found.1)
    }

    fn equality(&mut self) -> Result<Ast, String> {
        let mut l = self.comparison()?;
        while let Some(op) = self.binary(&[("=", Op::Eq), ("!=", Op::Ne)]) {
            l = Ast::Cmp(Box::new(l), op, Box::new(self.comparison()?));
        }
        Ok(l)
    }

    fn comparison(&mut self) -> Result<Ast, String> {
        let mut l = self.term()?;
        let ops = [("<", Op::Lt), ("<=", Op::Le), (">", Op::Gt), (">=", Op::Ge)];
        while let Some(op) = self.binary(&ops) {
            l = Ast::Cmp(Box::new(l), op, Box::new(self.term()?));
        }
        Ok(l)
    }

    fn term(&mut self) -> Result<Ast, String> {
        let t = self.peek().cloned();
        self.pos += 1;
        let mut ast = match t {
            Some(Tok::Str(s)) => return Ok(Ast::Str(s)),
            Some(Tok::Num(n)) => {
                let n = n
                    .parse()
                    .map_err(|_| self.err(&format!("bad number '{n}'")))?;
                return Ok(Ast::Num(n));
            }
            Some(Tok::Sym("(")) => {
                let inner = self.implies()?;
                self.expect(")")?;
                inner
            }
            Some(Tok::Ident(name, quoted)) if quoted || !is_keyword(&name) => {
                self.step(Ast::This, name)?
            }
            Some(t) => return Err(self.err(&format!("unsupported or unexpected {}", t.show()))),
            None => return Err(self.err("unexpected end")),
        };
        while self.eat(".") {
            match self.peek().cloned() {
                Some(Tok::Ident(name, quoted)) if quoted || !is_keyword(&name) => {
                    self.pos += 1;
                    ast = self.step(ast, name)?;
                }
                Some(t) => return Err(self.err(&format!("unexpected {} after '.'", t.show()))),
                None => return Err(self.err("unexpected end after '.'")),
            }
        }
        Ok(ast)
    }

    /// `name` or `name(...)` applied to `base`.
    fn step(&mut self, base: Ast, name: String) -> Result<Ast, String> {
        if !self.eat("(") {
            // `Task.status` in a Task's invariant: the leading type name is
            // the context itself (a capitalised name is never an element).
            if matches!(base, Ast::This) && name.starts_with(|c: char| c.is_ascii_uppercase()) {
                return Ok(Ast::This);
            }
            return Ok(Ast::Child(Box::new(base), name));
        }
        let ast = match name.as_str() {
            "exists" => Ast::Exists(Box::new(base)),
            "where" => Ast::Where(Box::new(base), Box::new(self.implies()?)),
            _ => return Err(self.err(&format!("unsupported FHIRPath function '{name}'"))),
        };
        self.expect(")")?;
        Ok(ast)
    }
}

fn is_keyword(w: &str) -> bool {
    matches!(
        w,
        "and" | "or" | "xor" | "implies" | "is" | "as" | "div" | "mod" | "in" | "contains"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expr: &str, v: &Value) -> Option<bool> {
        Invariant::parse(expr)
            .unwrap_or_else(|e| panic!("{e}"))
            .evaluate(v)
    }

    #[test]
    fn invariants_evaluate_with_three_valued_logic() {
        let task = json!({"resourceType": "Task", "status": "rejected",
            "code": {"coding": [{"system": "s", "code": "fulfill"}, {"system": "t", "code": "x"}]}});
        let obs = json!({"resourceType": "Observation", "valueInteger": 7,
            "performedPeriod": {"start": "2026"}});
        for (expr, v, want) in [
            ("status = 'rejected'", &task, Some(true)),
            ("Task.status = 'rejected'", &task, Some(true)),
            ("status != 'rejected'", &task, Some(false)),
            ("statusReason.exists()", &task, Some(false)),
            (
                "(status = 'rejected' or status = 'failed') implies statusReason.exists()",
                &task,
                Some(false),
            ),
            (
                "(status = 'accepted' or status = 'failed') implies statusReason.exists()",
                &task,
                Some(true),
            ),
            (
                "code.coding.where(system = 's' and code = 'fulfill').exists()",
                &task,
                Some(true),
            ),
            (
                "code.coding.where(system = 's' and (code = 'x' or code = 'y')).exists()",
                &task,
                Some(false),
            ),
            (
                "code.coding.where(system = 't' and (code = 'x' or code = 'y')).exists()",
                &task,
                Some(true),
            ),
            (
                "owner.exists() and statusReason.exists()",
                &task,
                Some(false),
            ),
            // Comparisons on an empty operand are empty.
            ("priority = 'routine'", &task, None),
            ("priority = 'routine' and status = 'rejected'", &task, None),
            ("priority = 'routine' and status = 'x'", &task, Some(false)),
            (
                "priority = 'routine' or status = 'rejected'",
                &task,
                Some(true),
            ),
            ("priority = 'routine' or status = 'x'", &task, None),
            ("priority = 'routine' implies status = 'x'", &task, None),
            (
                "status = 'x' implies priority = 'routine'",
                &task,
                Some(true),
            ),
            (
                "status = 'rejected' implies priority = 'routine'",
                &task,
                None,
            ),
            ("(value >= 0) and (value <= 10)", &obs, Some(true)),
            ("(value >= 8) and (value <= 10)", &obs, Some(false)),
            (
                "value > 6.5 and value < 7.5 and value != 8",
                &obs,
                Some(true),
            ),
            ("value >= 0", &task, None),
            (
                "performed.start.exists() and performed.end.exists()",
                &obs,
                Some(false),
            ),
            ("performed.start.exists()", &obs, Some(true)),
        ] {
            assert_eq!(eval(expr, v), want, "{expr}");
        }
        let empty = Invariant::parse("value >= 0").expect("parses");
        assert!(empty.holds(&task));
    }

    #[test]
    fn outside_the_subset_is_refused() {
        for (expr, says) in [
            ("name.first()", "function 'first'"),
            ("a xor b", "'xor'"),
            ("a.b[0]", "'['"),
            ("%resource.id.exists()", "'%resource'"),
            ("$this = 'a'", "'$this'"),
            ("value + 1 > 2", "'+'"),
            ("code.memberOf('x')", "function 'memberOf'"),
            ("a is Quantity", "'is'"),
            ("(a = 'b'", "expected ')'"),
            ("a =", "unexpected end"),
            ("'unterminated", "unterminated"),
        ] {
            let err = Invariant::parse(expr).expect_err(expr);
            assert!(err.contains(says) && err.ends_with(expr), "{expr}: {err}");
        }
    }
}
