//! A VCS organisation's record mapping: the JSON document (in the
//! `sp-record-mapping` extension of its Basic) that says which columns its
//! flat records have and what each holds, its case-reference system, its
//! date format, its status words and contact and holding-work words, and
//! the ConceptMap from our needs to its categories. Parsed and checked
//! here once per request; cells are read and written here (pure
//! functions); `records.rs` does the reading and writing of resources.

use serde_json::Value;

use crate::profiles::{self, CANONICAL_BASE};

/// The extension on the mapping's Basic that holds the document.
pub const EXTENSION: &str = "https://sp-hub.example/fhir/StructureDefinition/sp-record-mapping";
/// Basic.code of a record mapping.
pub const KIND_SYSTEM: &str = "https://sp-hub.example/fhir/CodeSystem/sp-definition-kind";
pub const KIND_CODE: &str = "vcs-record-mapping";

/// What a column holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The Task's id on the hub: the key of an inbound row.
    Task,
    /// The organisation's own case reference, kept as a Task identifier.
    CaseReference,
    /// Read only: the person's NHS number and name.
    NhsNumber,
    PatientName,
    /// The referral's needs, in the organisation's own category words.
    Category,
    /// A status word: Task status, businessStatus and statusReason.
    Status,
    /// Read only: when the Task was made (Task.authoredOn).
    ReferredDate,
    /// The latest contact (an sp-contact Encounter): its day and mode.
    ContactDate,
    ContactMode,
    /// The latest holding work (an sp-holding-work Procedure).
    HoldingWork,
    HoldingDate,
    /// An outcome score (sp-outcome-ons4 or -swemwbs) and its date.
    Outcome {
        measure: String,
        timing: String,
    },
    OutcomeDate {
        measure: String,
        timing: String,
    },
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub field: Field,
}

/// One status word and what it means on the Task.
#[derive(Debug, Clone)]
pub struct StatusWord {
    pub word: String,
    pub status: String,
    pub business_status: Option<String>,
    pub status_reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Mapping {
    pub columns: Vec<Column>,
    pub case_system: Option<String>,
    pub date_format: DateFormat,
    /// Canonical URL of the ConceptMap from sp-need to the organisation's
    /// categories; without one, categories are sp-need codes.
    pub category_map: Option<String>,
    /// `PractitionerRole/{id}` recording contacts and holding work on Tasks
    /// the organisation owns itself rather than through a link worker.
    pub link_worker: Option<String>,
    pub statuses: Vec<StatusWord>,
    pub contact_modes: Vec<(String, String)>,
    pub holding_work: Vec<(String, String)>,
}

/// Outcome measures a column may hold: the integer scores.
const MEASURES: &[&str] = &[
    "ons4-life-satisfaction",
    "ons4-worthwhile",
    "ons4-happiness",
    "ons4-anxiety",
    "swemwbs-total",
];

pub fn cs(id: &str) -> String {
    format!("{CANONICAL_BASE}/CodeSystem/{id}")
}

/// Whether `code` is in our CodeSystem `id`.
fn ours(id: &str, code: &str) -> bool {
    profiles::load().is_ok_and(|p| p.display(&cs(id), code).is_some())
}

fn string(v: &Value, key: &str, at: &str) -> Result<String, String> {
    v[key]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .map(String::from)
        .ok_or_else(|| format!("{at}.{key} is missing or not a string"))
}

fn optional(v: &Value, key: &str, at: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => string(v, key, at).map(Some),
    }
}

/// `{"word": "code", …}` with every code in our CodeSystem `id`.
fn words(v: &Value, key: &str, id: &str) -> Result<Vec<(String, String)>, String> {
    let Some(o) = v.get(key) else {
        return Ok(vec![]);
    };
    let o = o
        .as_object()
        .ok_or_else(|| format!("{key} is not an object of word: code"))?;
    o.iter()
        .map(|(word, code)| {
            let code = code.as_str().unwrap_or_default();
            if ours(id, code) {
                Ok((word.clone(), code.to_string()))
            } else {
                Err(format!(
                    "{key}.{word}: '{code}' is not a code of {}",
                    cs(id)
                ))
            }
        })
        .collect()
}

impl Mapping {
    /// Reads and checks a mapping document; the error names the element.
    pub fn parse(text: &str) -> Result<Mapping, String> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("not a JSON document: {e}"))?;
        let mut columns = vec![];
        for (i, c) in v["columns"].as_array().into_iter().flatten().enumerate() {
            let at = format!("columns[{i}]");
            let name = string(c, "column", &at)?;
            let timed = || -> Result<(String, String), String> {
                let measure = string(c, "measure", &at)?;
                let timing = string(c, "timing", &at)?;
                if !MEASURES.contains(&measure.as_str()) {
                    return Err(format!(
                        "{at}.measure '{measure}' is not one of {}",
                        MEASURES.join(", ")
                    ));
                }
                if !ours("sp-outcome-timing", &timing) {
                    return Err(format!(
                        "{at}.timing '{timing}' is not baseline or follow-up"
                    ));
                }
                Ok((measure, timing))
            };
            let field = match string(c, "field", &at)?.as_str() {
                "task" => Field::Task,
                "case-reference" => Field::CaseReference,
                "nhs-number" => Field::NhsNumber,
                "patient-name" => Field::PatientName,
                "category" => Field::Category,
                "status" => Field::Status,
                "referred-date" => Field::ReferredDate,
                "contact-date" => Field::ContactDate,
                "contact-mode" => Field::ContactMode,
                "holding-work" => Field::HoldingWork,
                "holding-date" => Field::HoldingDate,
                "outcome" => {
                    let (measure, timing) = timed()?;
                    Field::Outcome { measure, timing }
                }
                "outcome-date" => {
                    let (measure, timing) = timed()?;
                    Field::OutcomeDate { measure, timing }
                }
                other => return Err(format!("{at}.field '{other}' is not a field the hub maps")),
            };
            if columns.iter().any(|c: &Column| c.name == name) {
                return Err(format!("{at}: column '{name}' is named twice"));
            }
            if field != Field::Task && columns.iter().any(|c: &Column| c.field == field) {
                return Err(format!("{at}: two columns hold the same field"));
            }
            columns.push(Column { name, field });
        }
        if columns.iter().filter(|c| c.field == Field::Task).count() != 1 {
            return Err("columns: exactly one column holds the task (field 'task')".into());
        }
        let case_system = optional(&v, "caseReferenceSystem", "mapping")?;
        if case_system.is_none() && columns.iter().any(|c| c.field == Field::CaseReference) {
            return Err("a case-reference column needs caseReferenceSystem".into());
        }
        let date_format = DateFormat::parse(
            &optional(&v, "dateFormat", "mapping")?.unwrap_or_else(|| "YYYY-MM-DD".into()),
        )?;
        let link_worker = optional(&v, "linkWorker", "mapping")?;
        if let Some(l) = &link_worker {
            if !l.starts_with("PractitionerRole/") {
                return Err(format!("linkWorker '{l}' is not PractitionerRole/{{id}}"));
            }
        }
        let mut statuses = vec![];
        for (i, s) in v["statuses"].as_array().into_iter().flatten().enumerate() {
            let at = format!("statuses[{i}]");
            let w = StatusWord {
                word: string(s, "word", &at)?,
                status: string(s, "status", &at)?,
                business_status: optional(s, "businessStatus", &at)?,
                status_reason: optional(s, "statusReason", &at)?,
            };
            if !crate::workflow::TASK_STATUSES.contains(&w.status.as_str()) {
                return Err(format!("{at}.status '{}' is not a Task status", w.status));
            }
            if let Some(b) = w
                .business_status
                .as_deref()
                .filter(|b| !ours("sp-business-status", b))
            {
                return Err(format!(
                    "{at}.businessStatus '{b}' is not in sp-business-status"
                ));
            }
            if let Some(r) = w
                .status_reason
                .as_deref()
                .filter(|r| !ours("sp-status-reason", r))
            {
                return Err(format!(
                    "{at}.statusReason '{r}' is not in sp-status-reason"
                ));
            }
            if statuses
                .iter()
                .any(|o: &StatusWord| o.word.eq_ignore_ascii_case(&w.word))
            {
                return Err(format!("{at}: the word '{}' is listed twice", w.word));
            }
            statuses.push(w);
        }
        if statuses.is_empty() && columns.iter().any(|c| c.field == Field::Status) {
            return Err("a status column needs the statuses table".into());
        }
        Ok(Mapping {
            columns,
            case_system,
            date_format,
            category_map: optional(&v, "categoryMap", "mapping")?,
            link_worker,
            statuses,
            contact_modes: words(&v, "contactModes", "sp-contact-mode")?,
            holding_work: words(&v, "holdingWork", "sp-holding-work")?,
        })
    }

    /// The column holding `field`, if the mapping names one.
    pub fn column(&self, field: &Field) -> Option<&str> {
        self.columns
            .iter()
            .find(|c| c.field == *field)
            .map(|c| c.name.as_str())
    }

    pub fn has(&self, field: &Field) -> bool {
        self.column(field).is_some()
    }

    /// The word for a Task's status and businessStatus: one naming both,
    /// else one naming the status alone.
    pub fn status_word(&self, status: &str, business: Option<&str>) -> Option<&str> {
        let same = |w: &&StatusWord| w.status == status;
        self.statuses
            .iter()
            .filter(same)
            .find(|w| w.business_status.is_some() && w.business_status.as_deref() == business)
            .or_else(|| {
                self.statuses
                    .iter()
                    .filter(same)
                    .find(|w| w.business_status.is_none())
            })
            .or_else(|| self.statuses.iter().find(same))
            .map(|w| w.word.as_str())
    }

    pub fn status_of(&self, word: &str) -> Option<&StatusWord> {
        self.statuses
            .iter()
            .find(|w| w.word.eq_ignore_ascii_case(word.trim()))
    }
}

/// The word for `code` in a `(word, code)` table, or the code itself.
pub fn word_for<'a>(table: &'a [(String, String)], code: &'a str) -> &'a str {
    table
        .iter()
        .find(|(_, c)| c == code)
        .map_or(code, |(w, _)| w.as_str())
}

/// The code a word stands for (our code itself is always accepted).
pub fn code_for(table: &[(String, String)], id: &str, word: &str) -> Option<String> {
    let word = word.trim();
    table
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word))
        .map(|(_, c)| c.clone())
        .or_else(|| ours(id, word).then(|| word.to_string()))
}

/// A date format of `YYYY`, `MM` and `DD` with literal separators between
/// (`DD/MM/YYYY`, `YYYY-MM-DD`, `DD.MM.YYYY`).
#[derive(Debug, Clone)]
pub struct DateFormat {
    pub pattern: String,
}

impl DateFormat {
    fn parse(pattern: &str) -> Result<DateFormat, String> {
        if pattern.is_ascii()
            && ["YYYY", "MM", "DD"]
                .iter()
                .all(|t| pattern.matches(t).count() == 1)
            && pattern
                .replace("YYYY", "")
                .replace("MM", "")
                .replace("DD", "")
                .chars()
                .all(|c| !c.is_ascii_alphanumeric())
        {
            Ok(DateFormat {
                pattern: pattern.to_string(),
            })
        } else {
            Err(format!(
                "dateFormat '{pattern}' is not made of YYYY, MM and DD with separators"
            ))
        }
    }

    /// A cell in this format → `YYYY-MM-DD`, if it is a real date.
    pub fn read(&self, cell: &str) -> Option<String> {
        let cell = cell.trim();
        if cell.len() != self.pattern.len() || !cell.is_ascii() {
            return None;
        }
        let take = |token: &str| {
            let i = self.pattern.find(token)?;
            let s = &cell[i..i + token.len()];
            s.bytes().all(|b| b.is_ascii_digit()).then(|| s.to_string())
        };
        for (i, p) in self.pattern.char_indices() {
            if !"YMD".contains(p) && !cell[i..].starts_with(p) {
                return None;
            }
        }
        let (y, m, d) = (take("YYYY")?, take("MM")?, take("DD")?);
        let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
        time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
        Some(format!("{y}-{m}-{d}"))
    }

    /// A FHIR date or dateTime → a cell in this format (the day as written,
    /// UTC for our stored instants).
    pub fn write(&self, fhir: &str) -> Option<String> {
        let day = fhir.get(..10)?;
        let (y, rest) = day.split_once('-')?;
        let (m, d) = rest.split_once('-')?;
        Some(
            self.pattern
                .replace("YYYY", y)
                .replace("MM", m)
                .replace("DD", d),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_and_write_in_the_declared_format() {
        let f = DateFormat::parse("DD/MM/YYYY").unwrap();
        assert_eq!(f.read("01/03/2026").as_deref(), Some("2026-03-01"));
        assert_eq!(
            f.write("2026-03-01T15:00:00Z").as_deref(),
            Some("01/03/2026")
        );
        assert_eq!(f.read("31/02/2026"), None);
        assert_eq!(f.read("2026-03-01"), None);
        assert_eq!(f.read("1/3/2026"), None);
        assert!(DateFormat::parse("DD/MM").is_err());
        assert!(DateFormat::parse("DDxMMxYYYY").is_err());
    }

    #[test]
    fn a_mapping_is_checked_naming_the_element() {
        let ok = r#"{"columns":[{"column":"Ref","field":"task"},{"column":"Stage","field":"status"}],
                    "statuses":[{"word":"Open","status":"in-progress"},
                                {"word":"Waiting","status":"in-progress","businessStatus":"awaiting-contact"}]}"#;
        let m = Mapping::parse(ok).unwrap();
        assert_eq!(
            m.status_word("in-progress", Some("awaiting-contact")),
            Some("Waiting")
        );
        assert_eq!(m.status_word("in-progress", Some("closed")), Some("Open"));
        assert_eq!(
            m.status_of("open").map(|w| w.status.as_str()),
            Some("in-progress")
        );
        let e = Mapping::parse(&ok.replace("in-progress\"}", "finished\"}")).unwrap_err();
        assert!(e.contains("statuses[0].status"), "{e}");
        let e = Mapping::parse(r#"{"columns":[]}"#).unwrap_err();
        assert!(e.contains("exactly one column"), "{e}");
        let e = Mapping::parse(&ok.replace("\"status\"}", "\"horoscope\"}")).unwrap_err();
        assert!(e.contains("columns[1].field"), "{e}");
    }
}
