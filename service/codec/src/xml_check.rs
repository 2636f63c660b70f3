//! What fhirbolt's XML reader lets pass or changes, done right here:
//! well-formedness (it accepts a document that ends with elements still
//! open), and narrative fidelity (it trims whitespace inside XHTML and
//! re-indents it on output, which changes what the text says).

use std::ops::Range;

use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::Value;

use crate::Error;

/// Checks that `xml` is one well-formed element tree, and returns the byte
/// ranges of the narrative `<div>`s (outermost ones), in document order.
pub fn scan(xml: &[u8]) -> Result<Vec<Range<usize>>, Error> {
    let mut reader = Reader::from_reader(xml);
    reader.check_end_names(true).trim_text(false);
    let mut depth = 0usize;
    let mut roots = 0usize;
    let mut open_div: Option<(usize, usize)> = None; // (start byte, depth)
    let mut divs = vec![];
    loop {
        let before = reader.buffer_position();
        let event = reader.read_event().map_err(|e| Error {
            message: format!("malformed XML at byte {}: {e}", reader.buffer_position()),
        })?;
        match event {
            Event::Start(e) => {
                if depth == 0 {
                    roots += 1;
                }
                if open_div.is_none() && e.local_name().as_ref() == b"div" {
                    open_div = Some((before, depth));
                }
                depth += 1;
            }
            Event::Empty(e) => {
                if depth == 0 {
                    roots += 1;
                }
                if open_div.is_none() && e.local_name().as_ref() == b"div" {
                    divs.push(before..reader.buffer_position());
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if let Some((start, d)) = open_div {
                    if d == depth {
                        divs.push(start..reader.buffer_position());
                        open_div = None;
                    }
                }
            }
            Event::Text(t) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => {
                return Err(Error {
                    message: "malformed XML: text outside the root element".into(),
                })
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth > 0 {
        return Err(Error {
            message: "malformed XML: the document ends before all elements are closed".into(),
        });
    }
    if roots != 1 {
        return Err(Error {
            message: format!("malformed XML: expected one root element, found {roots}"),
        });
    }
    Ok(divs)
}

/// Visits every narrative `div` string in a JSON resource, in document order.
fn each_div(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                match child {
                    Value::String(s) if k == "div" => f(s),
                    _ => each_div(child, f),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| each_div(c, f)),
        _ => {}
    }
}

fn divs_of(value: &mut Value) -> Vec<String> {
    let mut out = vec![];
    each_div(value, &mut |s| out.push(s.clone()));
    out
}

/// Puts the narratives exactly as the client wrote them into the JSON
/// fhirbolt made from their XML.
pub fn restore_divs_in_json(json: Vec<u8>, xml: &[u8], spans: &[Range<usize>]) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(&json) else {
        return json;
    };
    let originals: Option<Vec<&str>> = spans
        .iter()
        .map(|span| std::str::from_utf8(&xml[span.clone()]).ok())
        .collect();
    match originals {
        Some(originals) if originals.len() == divs_of(&mut value).len() => {
            let mut next = originals.into_iter();
            each_div(&mut value, &mut |s| {
                if let Some(original) = next.next() {
                    *s = original.to_string();
                }
            });
            serde_json::to_vec(&value).unwrap_or(json)
        }
        _ => json,
    }
}

/// Puts each narrative back as the JSON holds it into the XML fhirbolt
/// wrote (which re-indents XHTML content).
pub fn restore_divs_in_xml(xml: Vec<u8>, json: &[u8]) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(json) else {
        return xml;
    };
    let divs = divs_of(&mut value);
    let Ok(spans) = scan(&xml) else { return xml };
    let xhtml = |d: &str| {
        d.starts_with("<div")
            && d.split('>')
                .next()
                .is_some_and(|tag| tag.contains("http://www.w3.org/1999/xhtml"))
    };
    if spans.len() != divs.len() || !divs.iter().all(|d| xhtml(d)) {
        return xml;
    }
    let mut out = xml;
    for (span, div) in spans.into_iter().zip(divs).rev() {
        out.splice(span, div.into_bytes());
    }
    out
}
