//! Flat records on the wire: CSV (RFC 4180, a header row of column names,
//! through the `csv` crate) and JSON (an array of objects, one a row, keyed
//! by column name).

use serde_json::{Map, Value};

use super::records::{Records, Row};
use crate::fhir::outcome::{FhirError, FhirResult};

pub fn to_csv(records: &Records) -> FhirResult<Vec<u8>> {
    let mut w = csv::Writer::from_writer(vec![]);
    let fail = |e: csv::Error| FhirError::Internal(format!("writing CSV: {e}"));
    w.write_record(&records.header).map_err(fail)?;
    for row in &records.rows {
        w.write_record(row).map_err(fail)?;
    }
    w.into_inner()
        .map_err(|e| FhirError::Internal(format!("writing CSV: {e}")))
}

pub fn to_json(records: &Records) -> Value {
    Value::Array(
        records
            .rows
            .iter()
            .map(|row| {
                let o: Map<String, Value> = records
                    .header
                    .iter()
                    .zip(row)
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                Value::Object(o)
            })
            .collect(),
    )
}

/// Rows of a CSV body; a malformed document as a whole is 400.
pub fn from_csv(bytes: &[u8]) -> FhirResult<Vec<Row>> {
    let mut r = csv::ReaderBuilder::new().flexible(false).from_reader(bytes);
    let bad =
        |e: csv::Error| FhirError::invalid(format!("the body is not CSV with a header row: {e}"));
    let header: Vec<String> = r
        .headers()
        .map_err(bad)?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    r.records()
        .map(|rec| {
            let rec = rec.map_err(bad)?;
            Ok(header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect())
        })
        .collect()
}

/// Rows of a JSON body: an array of objects whose values are strings,
/// numbers or null.
pub fn from_json(bytes: &[u8]) -> FhirResult<Vec<Row>> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| FhirError::invalid(format!("the body is not JSON: {e}")))?;
    let rows = v
        .as_array()
        .ok_or_else(|| FhirError::invalid("the body is not a JSON array of rows"))?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let o = row
                .as_object()
                .ok_or_else(|| FhirError::invalid(format!("row {} is not a JSON object", i + 1)))?;
            o.iter()
                .map(|(k, v)| {
                    let cell = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Null => String::new(),
                        _ => {
                            return Err(FhirError::invalid(format!(
                                "row {}, column '{k}': a cell is a string, a number or null",
                                i + 1
                            )))
                        }
                    };
                    Ok((k.clone(), cell))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_quotes_and_commas() {
        let r = Records {
            header: vec!["Ref".into(), "Need".into()],
            rows: vec![vec!["t-1".into(), "Money, debt; \"bills\"".into()]],
        };
        let bytes = to_csv(&r).unwrap();
        let rows = from_csv(&bytes).unwrap();
        assert_eq!(rows[0][1], ("Need".into(), "Money, debt; \"bills\"".into()));
        assert!(from_csv(b"a,b\n1,2,3\n").is_err());
        assert!(from_json(b"{}").is_err());
        assert!(from_json(br#"[{"a": [1]}]"#).is_err());
        assert_eq!(from_json(br#"[{"a": 7}]"#).unwrap()[0][0].1, "7");
    }
}
