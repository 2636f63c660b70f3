//! The figures as CSV: one row per (figure, group, subgroup, bucket), the
//! further numbers of a figure (p90, confidence interval, …) in `extra` as
//! `key=value` pairs separated by `;`.

use serde_json::Value;

use super::Metrics;
use crate::fhir::outcome::{FhirError, FhirResult};

pub const COLUMNS: [&str; 10] = [
    "figure",
    "group",
    "subgroup",
    "bucket",
    "value",
    "numerator",
    "denominator",
    "n",
    "suppressed",
    "extra",
];

fn num(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

pub fn to_csv(m: &Metrics) -> FhirResult<String> {
    let mut w = csv::Writer::from_writer(vec![]);
    let fail = |e: csv::Error| FhirError::Internal(format!("writing CSV: {e}"));
    w.write_record(COLUMNS).map_err(fail)?;
    for (family, name, rows) in &m.figures {
        for f in rows {
            let extra = f
                .extra
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    Value::Null => format!("{k}="),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(";");
            w.write_record([
                format!("{family}.{name}"),
                f.group.clone(),
                f.subgroup.clone().unwrap_or_default(),
                f.bucket.clone().unwrap_or_default(),
                num(f.value),
                num(f.numerator),
                num(f.denominator),
                f.n.map(|n| n.to_string()).unwrap_or_default(),
                f.suppressed.to_string(),
                extra,
            ])
            .map_err(fail)?;
        }
    }
    let bytes = w
        .into_inner()
        .map_err(|e| FhirError::Internal(format!("writing CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| FhirError::Internal(format!("writing CSV: {e}")))
}
