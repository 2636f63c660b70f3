//! SQL helpers the scale benches share with the load benchmark in `bench/`
//! (which includes this file by path): a PostgreSQL URL naming another
//! database, and statements as diesel's instrumentation shows them, read
//! back into SQL and binds so a bench can run them again (raw timings,
//! EXPLAIN).

/// Replaces the database name (the URL path) of a PostgreSQL URL.
pub fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let (head, tail) = url.split_at(scheme_end);
    let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
    let authority_end = tail.find(['/', '?']).unwrap_or(tail.len());
    format!("{head}{}/{name}{query}", &tail[..authority_end])
}

/// One bound value.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(Option<bool>),
}

/// Builds `sql_query($sql)` with `$binds` for backend `$db`. (Not every
/// bench that includes this file runs SQL.)
#[allow(unused_macros)]
macro_rules! bound {
    ($db:ty, $sql:expr, $binds:expr) => {{
        use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text};
        let mut q = diesel::sql_query($sql).into_boxed::<$db>();
        for b in $binds {
            q = match b {
                Bind::Text(v) => q.bind::<Nullable<Text>, _>(v.clone()),
                Bind::Int(v) => q.bind::<Nullable<BigInt>, _>(*v),
                Bind::Real(v) => q.bind::<Nullable<Double>, _>(*v),
                Bind::Bool(v) => q.bind::<Nullable<Bool>, _>(*v),
            };
        }
        q
    }};
}
#[allow(unused_imports)]
pub(crate) use bound;

/// diesel shows a statement as `<sql> -- binds: [<Debug of each bind>]`.
/// Debug keeps a float's `.` (`1.0`), so a number without one was an integer.
pub fn parse_debug_query(s: &str) -> Option<(String, Vec<Bind>)> {
    let (sql, binds) = s.rsplit_once(" -- binds: ")?;
    let inner = binds.trim().strip_prefix('[')?.strip_suffix(']')?;
    let mut out = vec![];
    let mut chars = inner.chars().peekable();
    // Each turn consumes at least one character.
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | ',' => {
                chars.next();
            }
            '"' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => text.push(match chars.next()? {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            '0' => '\0',
                            other => other,
                        }),
                        other => text.push(other),
                    }
                }
                out.push(Bind::Text(Some(text)));
            }
            _ => {
                let mut token = String::new();
                while let Some(&d) = chars.peek() {
                    if d == ',' {
                        break;
                    }
                    token.push(d);
                    chars.next();
                }
                let token = token.trim();
                out.push(match token {
                    "true" => Bind::Bool(Some(true)),
                    "false" => Bind::Bool(Some(false)),
                    "None" => Bind::Text(None),
                    t if t.contains(['.', 'e', 'E']) => Bind::Real(Some(t.parse().ok()?)),
                    t => Bind::Int(Some(
                        t.trim_start_matches("Some(")
                            .trim_end_matches(')')
                            .parse()
                            .ok()?,
                    )),
                });
            }
        }
    }
    Some((sql.to_string(), out))
}

/// The statement with its binds written in, for reading and for the record.
pub fn inline(sql: &str, binds: &[Bind]) -> String {
    let literal = |b: &Bind| match b {
        Bind::Text(Some(s)) => format!("'{}'", s.replace('\'', "''")),
        Bind::Int(Some(v)) => v.to_string(),
        Bind::Real(Some(v)) => v.to_string(),
        Bind::Bool(Some(v)) => v.to_string(),
        _ => "NULL".into(),
    };
    if sql.contains("$1") {
        // PostgreSQL: $n, replaced from the highest so $1 does not eat $10.
        let mut sql = sql.to_string();
        for (i, b) in binds.iter().enumerate().rev() {
            sql = sql.replace(&format!("${}", i + 1), &literal(b));
        }
        sql
    } else {
        let mut binds = binds.iter();
        sql.chars()
            .map(|c| match c {
                '?' => binds.next().map(literal).unwrap_or_else(|| "?".into()),
                c => c.to_string(),
            })
            .collect()
    }
}
