//! The FHIRPath subset that R4 SearchParameter `expression`s use, evaluated
//! on resources held as JSON, so index values come from the same expressions
//! as the official definitions instead of hand-written extractors.
//!
//! Supported: paths from a root type (`Resource`/`DomainResource` match any
//! resource), choice elements (`value` finds `valueQuantity`), `|`,
//! parentheses, `x as T`, `as(T)`, `ofType(T)`, `extension('url')`,
//! `exists()`, and `where(...)` over `resolve() is T` and `path = 'literal'`
//! joined by `and`. Everything else is refused at parse time, so a parameter
//! this module cannot index is known when the definitions load, not silently
//! empty.

use serde_json::Value;

/// A parsed expression, ready to evaluate many times.
#[derive(Debug, Clone)]
pub struct Expr {
    ast: Ast,
}

/// A value found in a resource: the JSON and, when it came from a choice
/// element (`value[x]` written as `valueQuantity`) or an `as`/`ofType`, its
/// FHIR type name ("Quantity", "dateTime", "Reference", ...).
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub value: &'a Value,
    pub fhir_type: Option<&'a str>,
}

#[derive(Debug, Clone)]
enum Ast {
    /// The resource itself, if its type is this name.
    Root(String),
    Child(Box<Ast>, String),
    /// `as`, `as()`, `ofType()`; the name is from `TYPES`, hence `'static`.
    As(Box<Ast>, &'static str),
    Where(Box<Ast>, Vec<Test>),
    Extension(Box<Ast>, String),
    Exists(Box<Ast>),
    Union(Vec<Ast>),
}

/// One conjunct of a `where(...)` criterion.
#[derive(Debug, Clone)]
enum Test {
    ResolveIs(String),
    Equals(Vec<String>, String),
}

/// The FHIR data types a choice element can take (R4 open type list plus
/// Meta and Dosage). The suffix of `valueX` must be one of these: otherwise
/// `performer` would wrongly match `performerType`.
const TYPES: &str = "base64Binary boolean canonical code date dateTime decimal id instant \
    integer markdown oid positiveInt string time unsignedInt uri url uuid Address Age \
    Annotation Attachment CodeableConcept Coding ContactPoint Count Distance Duration \
    HumanName Identifier Money Period Quantity Range Ratio Reference SampledData Signature \
    Timing ContactDetail Contributor DataRequirement Expression ParameterDefinition \
    RelatedArtifact TriggerDefinition UsageContext Dosage Meta";

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

fn known_type(name: &str) -> Option<&'static str> {
    TYPES.split_whitespace().find(|t| *t == name)
}

/// The type named by a choice suffix (`Quantity`, `String` → `string`).
fn choice_type(suffix: &str) -> Option<&'static str> {
    let mut chars = suffix.chars();
    let first = chars.next().filter(char::is_ascii_uppercase)?;
    TYPES.split_whitespace().find(|t| {
        let mut tc = t.chars();
        tc.next().is_some_and(|c| c.eq_ignore_ascii_case(&first)) && tc.as_str() == chars.as_str()
    })
}

/// FHIRPath `as T` also accepts the subtypes of T.
fn is_a(actual: &str, wanted: &str) -> bool {
    actual == wanted
        || matches!(
            (actual, wanted),
            ("Age" | "Count" | "Distance" | "Duration", "Quantity")
                | ("code" | "id" | "markdown", "string")
                | ("url" | "canonical" | "oid" | "uuid", "uri")
                | ("unsignedInt" | "positiveInt", "integer")
        )
}

fn node<'a>(value: &'a Value, fhir_type: Option<&'a str>) -> Node<'a> {
    Node { value, fhir_type }
}

impl Expr {
    /// Parses an expression; anything outside the supported subset is an Err
    /// naming the part it does not support.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let mut p = Parser::new(text)?;
        let ast = p.union()?;
        match p.peek() {
            None => Ok(Expr { ast }),
            Some(Tok::Ident(w, false)) if is_operator_word(w) => {
                Err(p.err(&format!("unsupported FHIRPath operator '{w}'")))
            }
            Some(t @ (Tok::Other(_) | Tok::Num(_) | Tok::Sym("!=" | "<" | "<=" | ">" | ">="))) => {
                Err(p.err(&format!("unsupported FHIRPath operator {}", t.show())))
            }
            Some(t) => Err(p.err(&format!("unexpected {}", t.show()))),
        }
    }

    /// The nodes the expression selects in `resource` (whose "resourceType"
    /// is the root name). A union member whose root type differs from the
    /// resource's type selects nothing.
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Vec<Node<'a>> {
        eval(&self.ast, resource)
    }
}

fn eval<'a>(ast: &Ast, res: &'a Value) -> Vec<Node<'a>> {
    match ast {
        Ast::Root(t) => {
            let any = t == "Resource" || t == "DomainResource";
            if any || res.get("resourceType").and_then(Value::as_str) == Some(t) {
                vec![node(res, None)]
            } else {
                vec![]
            }
        }
        Ast::Child(base, name) => {
            let mut out = vec![];
            for n in eval(base, res) {
                child(n.value, name, &mut out);
            }
            out
        }
        Ast::As(base, t) => eval(base, res)
            .into_iter()
            // Untyped nodes are kept (and typed T): R4 uses `as` almost only on
            // choice elements, so an untyped node has the single declared type.
            // A subtype keeps its own name (`onsetAge as Quantity` is "Age").
            .filter(|n| n.fhir_type.is_none_or(|actual| is_a(actual, t)))
            .map(|n| node(n.value, n.fhir_type.or(Some(*t))))
            .collect(),
        Ast::Where(base, tests) => {
            let mut nodes = eval(base, res);
            nodes.retain(|n| tests.iter().all(|t| test(t, n.value, res)));
            nodes
        }
        Ast::Extension(base, url) => {
            let mut out = vec![];
            for n in eval(base, res) {
                child(n.value, "extension", &mut out);
            }
            out.retain(|n| n.value.get("url").and_then(Value::as_str) == Some(url));
            out
        }
        Ast::Exists(base) => {
            let value = if eval(base, res).is_empty() {
                &FALSE
            } else {
                &TRUE
            };
            vec![node(value, Some("boolean"))]
        }
        Ast::Union(parts) => parts.iter().flat_map(|p| eval(p, res)).collect(),
    }
}

/// One path step: the member `name`, else the choice member `name<Type>`;
/// arrays flatten, and JSON nulls (array placeholders for primitive
/// extensions) are not values.
pub(crate) fn child<'a>(v: &'a Value, name: &str, out: &mut Vec<Node<'a>>) {
    let Some(obj) = v.as_object() else { return };
    let found = match obj.get(name) {
        Some(value) => Some((value, None)),
        None => obj.iter().find_map(|(k, value)| {
            let t = choice_type(k.strip_prefix(name)?)?;
            Some((value, Some(t)))
        }),
    };
    let Some((value, fhir_type)) = found else {
        return;
    };
    let items = match value {
        Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    out.extend(
        items
            .iter()
            .filter(|v| !v.is_null())
            .map(|value| Node { value, fhir_type }),
    );
}

fn test(t: &Test, v: &Value, res: &Value) -> bool {
    match t {
        Test::ResolveIs(ty) => reference_type(v, res).is_some_and(|found| found == ty),
        Test::Equals(path, lit) => {
            let mut nodes = vec![node(v, None)];
            for step in path {
                let mut next = vec![];
                for n in nodes {
                    child(n.value, step, &mut next);
                }
                nodes = next;
            }
            nodes.iter().any(|n| n.value.as_str() == Some(lit))
        }
    }
}

/// The resource type a Reference points at, as `resolve()` would find it:
/// `Type/id`, `Type/id/_history/v`, the same at the end of an absolute URL,
/// `#id` in `contained`; otherwise the Reference's `type` element. A
/// Reference with no `reference` (identifier only) resolves to nothing.
fn reference_type<'a>(v: &'a Value, res: &'a Value) -> Option<&'a str> {
    let reference = v.get("reference")?.as_str()?;
    if let Some(id) = reference.strip_prefix('#') {
        let contained = res.get("contained")?.as_array()?;
        let found = contained
            .iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))?;
        return found.get("resourceType")?.as_str();
    }
    let segs: Vec<&str> = reference.split('/').collect();
    let n = segs.len();
    let at = if n >= 4 && segs[n - 2] == "_history" {
        n - 4
    } else {
        n.saturating_sub(2)
    };
    match (segs.get(at), segs.get(at + 1)) {
        (Some(t), Some(id)) if is_type_name(t) && is_id(id) => Some(t),
        _ => v.get("type")?.as_str(),
    }
}

fn is_type_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn is_operator_word(w: &str) -> bool {
    matches!(
        w,
        "and" | "or" | "xor" | "implies" | "is" | "as" | "div" | "mod" | "in" | "contains"
    )
}

/// A FHIRPath token. Both FHIRPath parsers read these: the SearchParameter
/// subset here and the invariant subset in `profiles::invariant`; each
/// refuses, by name, the tokens its subset does not use.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An identifier; `true` if it was backtick-quoted (never a keyword).
    Ident(String, bool),
    Str(String),
    /// A number literal, as written.
    Num(String),
    /// `.` `(` `)` `|` `,` `=` `!=` `<` `<=` `>` `>=`
    Sym(&'static str),
    /// `$this`, `%resource` and operators neither subset uses.
    Other(String),
}

impl Tok {
    pub(crate) fn show(&self) -> String {
        match self {
            Tok::Ident(s, _) | Tok::Other(s) => format!("'{s}'"),
            Tok::Str(s) => format!("literal '{s}'"),
            Tok::Num(n) => format!("number {n}"),
            Tok::Sym(s) => format!("'{s}'"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let word = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
    let mut toks = vec![];
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        let mut s = c.to_string();
        match c {
            _ if c.is_whitespace() => {}
            'a'..='z' | 'A'..='Z' | '_' => {
                s.extend(std::iter::from_fn(|| it.next_if(word)));
                toks.push(Tok::Ident(s, false));
            }
            '$' | '%' => {
                s.extend(std::iter::from_fn(|| it.next_if(word)));
                toks.push(Tok::Other(s));
            }
            '0'..='9' => {
                s.extend(std::iter::from_fn(|| {
                    it.next_if(|d| d.is_ascii_digit() || *d == '.')
                }));
                toks.push(Tok::Num(s));
            }
            '\'' | '`' => {
                s.clear();
                loop {
                    match it.next() {
                        None => return Err(format!("unterminated {c}-quoted text")),
                        Some(q) if q == c => break,
                        Some('\\') => s.push(unescape(&mut it)?),
                        Some(other) => s.push(other),
                    }
                }
                toks.push(if c == '`' {
                    Tok::Ident(s, true)
                } else {
                    Tok::Str(s)
                });
            }
            '.' => toks.push(Tok::Sym(".")),
            '(' => toks.push(Tok::Sym("(")),
            ')' => toks.push(Tok::Sym(")")),
            '|' => toks.push(Tok::Sym("|")),
            ',' => toks.push(Tok::Sym(",")),
            '=' => toks.push(Tok::Sym("=")),
            '!' if it.next_if_eq(&'=').is_some() => toks.push(Tok::Sym("!=")),
            '<' | '>' => {
                let eq = it.next_if_eq(&'=').is_some();
                toks.push(Tok::Sym(match (c, eq) {
                    ('<', false) => "<",
                    ('<', true) => "<=",
                    ('>', false) => ">",
                    _ => ">=",
                }));
            }
            '!' | '~' | '+' | '-' | '*' | '/' | '&' | '[' | ']' | '{' | '}' => {
                s.extend(it.next_if(|n| *n == '=' || *n == '~'));
                toks.push(Tok::Other(s));
            }
            _ => return Err(format!("unexpected character '{c}'")),
        }
    }
    Ok(toks)
}

fn unescape(it: &mut impl Iterator<Item = char>) -> Result<char, String> {
    Ok(match it.next() {
        Some('n') => '\n',
        Some('r') => '\r',
        Some('t') => '\t',
        Some('f') => '\u{c}',
        Some('u') => {
            let hex: String = it.take(4).collect();
            u32::from_str_radix(&hex, 16)
                .ok()
                .filter(|_| hex.len() == 4)
                .and_then(char::from_u32)
                .ok_or_else(|| format!("bad escape '\\u{hex}'"))?
        }
        Some(c @ ('\'' | '"' | '`' | '\\' | '/')) => c,
        Some(c) => return Err(format!("bad escape '\\{c}'")),
        None => return Err("unterminated escape".to_string()),
    })
}

/// A cursor over one expression's tokens, with the steps both FHIRPath
/// grammars share; each adds its own rules in an `impl` block of its own
/// (this subset below, invariants in `profiles::invariant`).
pub(crate) struct Parser<'t> {
    toks: Vec<Tok>,
    pub(crate) pos: usize,
    text: &'t str,
}

impl<'t> Parser<'t> {
    pub(crate) fn new(text: &'t str) -> Result<Parser<'t>, String> {
        let toks = tokenize(text).map_err(|e| format!("{e} in: {text}"))?;
        Ok(Parser { toks, pos: 0, text })
    }

    /// `msg`, naming the whole expression.
    pub(crate) fn err(&self, msg: &str) -> String {
        format!("{msg} in: {}", self.text)
    }

    pub(crate) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    /// Steps over the symbol `c` if it is next.
    pub(crate) fn eat(&mut self, c: &'static str) -> bool {
        let hit = self.peek() == Some(&Tok::Sym(c));
        if hit {
            self.pos += 1;
        }
        hit
    }

    /// Steps over the (unquoted) word `w` if it is next.
    pub(crate) fn eat_word(&mut self, w: &str) -> bool {
        let hit = self.is_word(w);
        if hit {
            self.pos += 1;
        }
        hit
    }

    pub(crate) fn expect(&mut self, c: &'static str) -> Result<(), String> {
        if self.eat(c) {
            return Ok(());
        }
        let found = self.peek().map_or("the end".to_string(), Tok::show);
        Err(self.err(&format!("expected '{c}' but found {found}")))
    }

    pub(crate) fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s, false)) if s == w)
    }
}

impl Parser<'_> {
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn ident(&mut self, what: &str) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(s, _)) => Ok(s),
            Some(t) => Err(self.err(&format!("expected {what} but found {}", t.show()))),
            None => Err(self.err(&format!("expected {what} but found the end"))),
        }
    }

    fn data_type(&mut self) -> Result<&'static str, String> {
        let name = self.ident("a type name")?;
        known_type(&name)
            .ok_or_else(|| self.err(&format!("unsupported type '{name}' in as/ofType")))
    }

    fn union(&mut self) -> Result<Ast, String> {
        let mut parts = vec![self.typed()?];
        while self.eat("|") {
            parts.push(self.typed()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Ast::Union(parts)
        })
    }

    /// `as` binds tighter than `|` (FHIRPath precedence), so
    /// `a as X | b as Y` is `(a as X) | (b as Y)`.
    fn typed(&mut self) -> Result<Ast, String> {
        let base = self.postfix()?;
        if self.is_word("as") {
            self.pos += 1;
            return Ok(Ast::As(Box::new(base), self.data_type()?));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Result<Ast, String> {
        let mut ast = if self.eat("(") {
            let inner = self.union()?;
            self.expect(")")?;
            inner
        } else {
            let name = self.ident("a type name")?;
            if self.peek() == Some(&Tok::Sym("(")) {
                return Err(self.err(&format!("unsupported FHIRPath function '{name}'")));
            }
            if !is_type_name(&name) {
                return Err(self.err(&format!("'{name}' is not a type name to start a path")));
            }
            Ast::Root(name)
        };
        while self.eat(".") {
            let name = self.ident("an element or function name")?;
            if !self.eat("(") {
                ast = Ast::Child(Box::new(ast), name);
                continue;
            }
            let base = Box::new(ast);
            ast =
                match name.as_str() {
                    "where" => Ast::Where(base, self.criteria()?),
                    "as" | "ofType" => Ast::As(base, self.data_type()?),
                    "extension" => match self.next() {
                        Some(Tok::Str(url)) => Ast::Extension(base, url),
                        _ => return Err(self.err("extension() needs a string literal url")),
                    },
                    "exists" => Ast::Exists(base),
                    "resolve" => return Err(self.err(
                        "unsupported FHIRPath function 'resolve' (only where(resolve() is Type))",
                    )),
                    _ => return Err(self.err(&format!("unsupported FHIRPath function '{name}'"))),
                };
            self.expect(")")?;
        }
        Ok(ast)
    }

    /// `test ('and' test)*` inside `where(...)`.
    fn criteria(&mut self) -> Result<Vec<Test>, String> {
        let mut tests = vec![self.test()?];
        while self.is_word("and") {
            self.pos += 1;
            tests.push(self.test()?);
        }
        if let Some(Tok::Ident(w, false)) = self.peek() {
            return Err(self.err(&format!("unsupported FHIRPath operator '{w}' in where()")));
        }
        Ok(tests)
    }

    fn test(&mut self) -> Result<Test, String> {
        let mut path = vec![self.ident("an element name")?];
        if path[0] == "resolve" && self.eat("(") {
            self.expect(")")?;
            if !self.is_word("is") {
                return Err(self.err("only 'resolve() is Type' is supported in where()"));
            }
            self.pos += 1;
            return Ok(Test::ResolveIs(self.ident("a resource type")?));
        }
        while self.eat(".") {
            path.push(self.ident("an element name")?);
        }
        if self.peek() == Some(&Tok::Sym("(")) {
            let f = path.last().cloned().unwrap_or_default();
            return Err(self.err(&format!("unsupported FHIRPath function '{f}' in where()")));
        }
        self.expect("=")?;
        match self.next() {
            Some(Tok::Str(lit)) => Ok(Test::Equals(path, lit)),
            _ => Err(self.err("where() compares only with a string literal")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PATIENT: &str = r#"{"resourceType": "Patient", "id": "p1",
        "meta": {"lastUpdated": "2026-01-01T00:00:00Z", "tag": [{"code": "a"}, {"code": "b"}]},
        "identifier": [{"system": "s", "value": "1"}, {"value": "2"}],
        "name": [{"family": "Doe", "given": ["J", null]}, {"family": "Roe"}],
        "telecom": [{"system": "email", "value": "a@b"}, {"system": "phone", "value": "1"}],
        "birthDate": "1970-01-01", "deceasedBoolean": false,
        "address": [{"postalCode": "1000"}, {"city": "X"}],
        "extension": [{"url": "u1", "valueString": "x"}, {"url": "u2", "valueCode": "y"}]}"#;
    const TASK: &str = r#"{"resourceType": "Task", "id": "t1",
        "owner": {"reference": "Organization/o1"},
        "for": {"reference": "https://x.org/fhir/Patient/p1/_history/3"},
        "focus": {"reference": "ServiceRequest/s1"}, "executionPeriod": {"start": "2026"},
        "performerType": [{"text": "not a choice form of performer"}]}"#;
    const SR_DT: &str = r#"{"resourceType": "ServiceRequest",
        "subject": {"reference": "Patient/p1"}, "occurrenceDateTime": "2026-03-01"}"#;
    const SR_PERIOD: &str = r#"{"resourceType": "ServiceRequest",
        "subject": {"reference": "Group/g1"}, "occurrencePeriod": {"start": "2026"}}"#;
    const SR_IDENT: &str =
        r#"{"resourceType": "ServiceRequest", "subject": {"identifier": {"value": "x"}}}"#;
    const OBS: &str = r#"{"resourceType": "Observation", "valueQuantity": {"value": 5},
        "effectiveDateTime": "2026-02-03T04:05:06Z", "component": [
            {"code": {"text": "c1"}, "valueCodeableConcept": {"text": "v1"}},
            {"code": {"text": "c2"}, "valueQuantity": {"value": 1}}]}"#;
    const OBS_STRING: &str = r#"{"resourceType": "Observation", "valueString": "hi"}"#;

    /// (expression, resource, the values selected, their types: "" when all
    /// are untyped, else one per value joined by ',' with '-' for untyped).
    #[rustfmt::skip]
    const CASES: &[(&str, &str, &str, &str)] = &[
        ("Patient.name", PATIENT, r#"[{"family": "Doe", "given": ["J", null]}, {"family": "Roe"}]"#, ""),
        ("Patient.name.family", PATIENT, r#"["Doe", "Roe"]"#, ""),
        ("Patient.name.given", PATIENT, r#"["J"]"#, ""),
        ("Patient.identifier", PATIENT, r#"[{"system": "s", "value": "1"}, {"value": "2"}]"#, ""),
        ("Patient.birthDate", PATIENT, r#"["1970-01-01"]"#, ""),
        ("Patient.address.postalCode", PATIENT, r#"["1000"]"#, ""),
        ("Patient.gender", PATIENT, "[]", ""),
        ("Observation.code", PATIENT, "[]", ""),
        ("Patient.telecom.where(system='phone')", PATIENT, r#"[{"system": "phone", "value": "1"}]"#, ""),
        ("Patient.telecom.where(system = 'email' and value = 'a@b').value", PATIENT, r#"["a@b"]"#, ""),
        ("Patient.telecom.where(system='fax')", PATIENT, "[]", ""),
        ("Patient.extension('u2').value", PATIENT, r#"["y"]"#, "code"),
        ("Patient.extension.where(url = 'u1').value", PATIENT, r#"["x"]"#, "string"),
        ("Patient.deceased", PATIENT, "[false]", "boolean"),
        ("Patient.deceased.exists()", PATIENT, "[true]", "boolean"),
        ("Patient.link.exists()", PATIENT, "[false]", "boolean"),
        ("(Patient.deceased as dateTime)", PATIENT, "[]", ""),
        ("Resource.id", PATIENT, r#"["p1"]"#, ""),
        ("Resource.id", TASK, r#"["t1"]"#, ""),
        ("DomainResource.id", TASK, r#"["t1"]"#, ""),
        ("Resource.meta.lastUpdated", PATIENT, r#"["2026-01-01T00:00:00Z"]"#, ""),
        ("Resource.meta.tag", PATIENT, r#"[{"code": "a"}, {"code": "b"}]"#, ""),
        ("Resource.meta.profile", PATIENT, "[]", ""),
        ("Task.owner", TASK, r#"[{"reference": "Organization/o1"}]"#, ""),
        ("Task.for", TASK, r#"[{"reference": "https://x.org/fhir/Patient/p1/_history/3"}]"#, ""),
        ("Task.`for`", TASK, r#"[{"reference": "https://x.org/fhir/Patient/p1/_history/3"}]"#, ""),
        ("Task.focus", TASK, r#"[{"reference": "ServiceRequest/s1"}]"#, ""),
        ("Task.executionPeriod", TASK, r#"[{"start": "2026"}]"#, ""),
        ("Task.performer", TASK, "[]", ""),
        ("Task.owner.where(resolve() is Patient)", TASK, "[]", ""),
        ("AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | Task.for.where(resolve() is Patient)",
            TASK, r#"[{"reference": "https://x.org/fhir/Patient/p1/_history/3"}]"#, ""),
        ("ServiceRequest.subject.where(resolve() is Patient)", SR_DT, r#"[{"reference": "Patient/p1"}]"#, ""),
        ("ServiceRequest.subject.where(resolve() is Patient)", SR_PERIOD, "[]", ""),
        ("ServiceRequest.subject.where(resolve() is Patient)", SR_IDENT, "[]", ""),
        ("ServiceRequest.occurrence", SR_DT, r#"["2026-03-01"]"#, "dateTime"),
        ("ServiceRequest.occurrence", SR_PERIOD, r#"[{"start": "2026"}]"#, "Period"),
        ("(ServiceRequest.occurrence as dateTime) | (ServiceRequest.occurrence as Period)",
            SR_DT, r#"["2026-03-01"]"#, "dateTime"),
        ("(ServiceRequest.occurrence as dateTime) | (ServiceRequest.occurrence as Period)",
            SR_PERIOD, r#"[{"start": "2026"}]"#, "Period"),
        ("(Observation.value as Quantity)", OBS, r#"[{"value": 5}]"#, "Quantity"),
        ("Observation.value as Quantity", OBS, r#"[{"value": 5}]"#, "Quantity"),
        ("Observation.value as Quantity | Observation.value as SampledData", OBS, r#"[{"value": 5}]"#, "Quantity"),
        ("Observation.value.ofType(Quantity).value", OBS, "[5]", ""),
        ("Observation.value.as(string)", OBS_STRING, r#"["hi"]"#, "string"),
        ("(Observation.value as string) | (Observation.value as CodeableConcept).text",
            OBS_STRING, r#"["hi"]"#, "string"),
        ("(Observation.component.value as CodeableConcept).text", OBS, r#"["v1"]"#, ""),
        ("Observation.component.value as Quantity", OBS, r#"[{"value": 1}]"#, "Quantity"),
        ("Observation.component.value", OBS, r#"[{"text": "v1"}, {"value": 1}]"#, "CodeableConcept,Quantity"),
        ("Condition.onset as Quantity", r#"{"resourceType": "Condition", "onsetAge": {"value": 3}}"#,
            r#"[{"value": 3}]"#, "Age"),
        ("Condition.onset as Quantity", r#"{"resourceType": "Condition", "onsetString": "x"}"#, "[]", ""),
        ("Observation.effective", OBS, r#"["2026-02-03T04:05:06Z"]"#, "dateTime"),
        ("Observation.code | Observation.component.code", OBS, r#"[{"text": "c1"}, {"text": "c2"}]"#, ""),
    ];

    #[test]
    fn expressions_select_values() {
        for (expr, resource, values, types) in CASES {
            let resource: Value = serde_json::from_str(resource).expect(expr);
            let e = Expr::parse(expr).unwrap_or_else(|err| panic!("{err}"));
            let nodes = e.evaluate(&resource);
            let got: Vec<Value> = nodes.iter().map(|n| n.value.clone()).collect();
            let want: Value = serde_json::from_str(values).expect(expr);
            assert_eq!(Value::Array(got), want, "{expr}");
            let got: Vec<&str> = nodes.iter().map(|n| n.fhir_type.unwrap_or("-")).collect();
            let typed = nodes.iter().any(|n| n.fhir_type.is_some());
            assert_eq!(
                if typed { got.join(",") } else { String::new() },
                *types,
                "{expr}"
            );
        }
        // The root alone selects the resource itself (composite parameters).
        let obs: Value = serde_json::from_str(OBS).expect("json");
        let root = Expr::parse("Observation").map(|e| e.evaluate(&obs).len());
        assert_eq!(root, Ok(1));
    }

    #[test]
    fn references_resolve_by_type() {
        let res =
            json!({"resourceType": "Task", "contained": [{"resourceType": "Patient", "id": "c"}]});
        for (reference, want) in [
            (json!({"reference": "Patient/1"}), Some("Patient")),
            (
                json!({"reference": "Patient/1/_history/2"}),
                Some("Patient"),
            ),
            (
                json!({"reference": "http://h/fhir/Patient/a.b-c"}),
                Some("Patient"),
            ),
            (
                json!({"reference": "http://h/fhir/Group/1/_history/2"}),
                Some("Group"),
            ),
            (json!({"reference": "#c"}), Some("Patient")),
            (json!({"reference": "#missing"}), None),
            (
                json!({"reference": "urn:uuid:1234", "type": "Patient"}),
                Some("Patient"),
            ),
            (json!({"reference": "urn:uuid:1234"}), None),
            (
                json!({"identifier": {"value": "1"}, "type": "Patient"}),
                None,
            ),
            (json!("Patient/1"), None),
        ] {
            assert_eq!(reference_type(&reference, &res), want, "{reference}");
        }
    }

    #[test]
    fn outside_the_subset_is_refused() {
        for (expr, says) in [
            (
                "Patient.deceased.exists() and Patient.deceased != false",
                "operator 'and'",
            ),
            ("Patient.deceased != false", "operator '!='"),
            (
                "iif(Patient.active, Patient.name, Patient.telecom)",
                "function 'iif'",
            ),
            ("Patient.name.first()", "function 'first'"),
            ("Patient.link.other.resolve()", "function 'resolve'"),
            ("Patient.code.memberOf('http://x')", "function 'memberOf'"),
            (
                "Patient.name.where(given.exists())",
                "function 'exists' in where()",
            ),
            (
                "Patient.name.where(use = 'a' or use = 'b')",
                "operator 'or' in where()",
            ),
            ("Patient.name.where(use = 1)", "string literal"),
            ("Patient.value as Foo", "unsupported type 'Foo'"),
            ("Patient.value is Quantity", "operator 'is'"),
            ("Patient.name[0]", "operator '['"),
            ("%resource.id", "'%resource'"),
            ("name.family", "not a type name"),
        ] {
            let err = Expr::parse(expr).expect_err(expr);
            assert!(err.contains(says) && err.ends_with(expr), "{expr}: {err}");
        }
    }

    #[test]
    fn garbage_is_a_parse_error() {
        for bad in [
            "",
            "Patient.",
            "Patient..name",
            "(Patient.name",
            "Patient.name)",
            "Patient |",
            "| Patient",
            "Patient.where(",
            "Patient.name.where()",
            "'unterminated",
            "Patient.`x",
            "Patient.name.where(use = 'a\\q')",
            "Patient.extension(1)",
            "Patient # name",
            "Patient name",
            "Patient.as()",
            "Patient.name.where(resolve() Patient)",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn string_escapes_and_choice_types() {
        let e = Expr::parse(r"Patient.telecom.where(value = 'a\'b\u0041\\')").map(|e| e.ast);
        assert!(
            matches!(e, Ok(Ast::Where(_, t)) if matches!(&t[0], Test::Equals(_, l) if l == "a'bA\\"))
        );
        for (suffix, want) in [
            ("Quantity", Some("Quantity")),
            ("String", Some("string")),
            ("DateTime", Some("dateTime")),
            ("Base64Binary", Some("base64Binary")),
            ("CodeableConcept", Some("CodeableConcept")),
            ("Type", None),
            ("quantity", None),
            ("", None),
        ] {
            assert_eq!(choice_type(suffix), want, "{suffix}");
        }
    }
}

/// Property tests: the parser meets any text a SearchParameter file could
/// hold and either parses it or says why not; what it parses evaluates on
/// any JSON without panicking, and keeps the meaning of the subset.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ROOTS: &[&str] = &["Patient", "Task", "ServiceRequest", "Resource"];
    const NAMES: &[&str] = &[
        "a",
        "b",
        "value",
        "reference",
        "url",
        "system",
        "code",
        "extension",
        "subject",
        "for",
        "status",
        "focus",
    ];

    /// Any JSON, with member names the generated paths use.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z/0-9 ]{0,12}".prop_map(Value::from),
            Just(json!("Patient/p1")),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            prop::sample::select(NAMES).prop_map(String::from),
                            "value[A-Z][a-z]{1,8}",
                            ".{0,6}"
                        ],
                        inner
                    ),
                    0..5
                )
                .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    fn resource() -> impl Strategy<Value = Value> {
        (prop::sample::select(ROOTS), json_value()).prop_map(|(root, mut v)| {
            if !v.is_object() {
                v = json!({"a": v});
            }
            v["resourceType"] = json!(root);
            v
        })
    }

    /// Expressions inside the subset: a root, steps, and the functions and
    /// operators the search parameters use.
    fn expression() -> impl Strategy<Value = String> {
        let step = prop_oneof![
            4 => prop::sample::select(NAMES).prop_map(|n| format!(".{n}")),
            1 => Just(".where(resolve() is Patient)".to_string()),
            1 => (prop::sample::select(NAMES), "[a-z0-9 /]{0,8}")
                .prop_map(|(n, lit)| format!(".where({n} = '{lit}')")),
            1 => "[a-z:/.]{1,12}".prop_map(|u| format!(".extension('{u}')")),
            1 => Just(".as(Reference)".to_string()),
            1 => Just(".ofType(string)".to_string()),
        ];
        let path = (
            prop::sample::select(ROOTS),
            prop::collection::vec(step, 1..5),
            any::<bool>(),
        )
            .prop_map(|(root, steps, exists)| {
                let p = format!("{root}{}", steps.concat());
                if exists {
                    format!("{p}.exists()")
                } else {
                    p
                }
            });
        prop::collection::vec(path, 1..4).prop_map(|parts| parts.join(" | "))
    }

    fn values<'a>(nodes: &[Node<'a>]) -> Vec<&'a Value> {
        nodes.iter().map(|n| n.value).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn any_text_parses_or_is_refused_and_what_parses_evaluates(
            text in prop_oneof![
                ".{0,60}",
                "[A-Za-z.()'|= ]{0,60}",
                expression().prop_map(|e| {
                    // A generated expression with one character changed.
                    let mut c: Vec<char> = e.chars().collect();
                    let i = e.len() % c.len().max(1);
                    if let Some(ch) = c.get_mut(i) { *ch = '('; }
                    c.into_iter().collect()
                }),
            ],
            res in resource(),
        ) {
            if let Ok(e) = Expr::parse(&text) {
                let _ = e.evaluate(&res);
            }
        }

        #[test]
        fn expressions_in_the_subset_parse_and_keep_their_meaning(
            text in expression(),
            res in resource(),
        ) {
            let e = Expr::parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
            let got = e.evaluate(&res);
            // Parentheses change nothing.
            let paren = Expr::parse(&format!("({text})")).unwrap();
            prop_assert_eq!(values(&paren.evaluate(&res)), values(&got));
            // A union is its members' results, in order.
            let parts: Vec<Node> = text
                .split(" | ")
                .flat_map(|p| Expr::parse(p).unwrap().evaluate(&res))
                .collect();
            prop_assert_eq!(values(&parts), values(&got));
            // exists() is whether anything is selected.
            if !text.contains(".exists()") {
                let exists = Expr::parse(&format!("({text}).exists()")).unwrap();
                let want = json!(!got.is_empty());
                prop_assert_eq!(values(&exists.evaluate(&res)), vec![&want]);
            }
        }
    }
}
