//! FHIR date search values: a prefix and the range the value's precision
//! implies (search.html#date), as stored-instant text bounds [low, high).

use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::fhir::instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateBound {
    pub prefix: Prefix,
    pub low: String,
    pub high: String,
}

impl DateBound {
    pub fn parse(value: &str) -> Result<DateBound, String> {
        let (prefix, rest) = split_prefix(value);
        let (low, high) = range(rest).ok_or_else(|| {
            format!("'{value}' is not a FHIR date, dateTime or instant (e.g. 2026-11-25 or 2026-11-25T10:00:00Z)")
        })?;
        Ok(DateBound {
            prefix,
            low: instant::format(low),
            high: instant::format(high),
        })
    }
}

pub(crate) fn split_prefix(value: &str) -> (Prefix, &str) {
    let prefixes = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    for (text, p) in prefixes {
        if let Some(rest) = value.strip_prefix(text) {
            return (p, rest);
        }
    }
    (Prefix::Eq, value)
}

fn num<T: std::str::FromStr>(s: &str, len: usize) -> Option<T> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// [low, high) of a partial date/dateTime; values without a zone are UTC.
pub fn range(value: &str) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let (date_part, time_part) = match value.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (value, None),
    };
    let mut fields = date_part.split('-');
    let year: i32 = num(fields.next()?, 4)?;
    let month: Option<u8> = fields
        .next()
        .map(|m| num(m, 2))
        .map_or(Some(None), |m| m.map(Some))?;
    let day: Option<u8> = fields
        .next()
        .map(|d| num(d, 2))
        .map_or(Some(None), |d| d.map(Some))?;
    if fields.next().is_some() {
        return None;
    }
    let month_v = Month::try_from(month.unwrap_or(1)).ok()?;
    let date = Date::from_calendar_date(year, month_v, day.unwrap_or(1)).ok()?;
    let Some(t) = time_part else {
        let low = PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc();
        let high = match (month, day) {
            (None, _) => Date::from_calendar_date(year + 1, Month::January, 1).ok()?,
            (Some(_), None) => {
                let next = month_v.next();
                let y = if next == Month::January {
                    year + 1
                } else {
                    year
                };
                Date::from_calendar_date(y, next, 1).ok()?
            }
            (Some(_), Some(_)) => date.next_day()?,
        };
        return Some((
            low,
            PrimitiveDateTime::new(high, Time::MIDNIGHT).assume_utc(),
        ));
    };
    day?;
    // Zone: Z, +hh:mm or -hh:mm at the end (optional).
    let (clock, offset) = if let Some(c) = t.strip_suffix('Z') {
        (c, UtcOffset::UTC)
    } else if t.len() > 6 && matches!(t.as_bytes()[t.len() - 6], b'+' | b'-') {
        let (c, z) = t.split_at(t.len() - 6);
        let sign: i8 = if z.starts_with('-') { -1 } else { 1 };
        let h: i8 = num(&z[1..3], 2)?;
        if &z[3..4] != ":" {
            return None;
        }
        let m: i8 = num(&z[4..6], 2)?;
        (c, UtcOffset::from_hms(sign * h, sign * m, 0).ok()?)
    } else {
        (t, UtcOffset::UTC)
    };
    let mut parts = clock.split(':');
    let hour: u8 = num(parts.next()?, 2)?;
    let minute: u8 = num(parts.next()?, 2)?;
    let (second, nanos, step) = match parts.next() {
        None => (0u8, 0u32, Duration::minutes(1)),
        Some(s) => match s.split_once('.') {
            None => (num(s, 2)?, 0, Duration::seconds(1)),
            Some((whole, frac)) => {
                if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
                let step = Duration::nanoseconds(10i64.pow(9 - frac.len() as u32));
                (num(whole, 2)?, nanos, step)
            }
        },
    };
    if parts.next().is_some() {
        return None;
    }
    let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    let low = PrimitiveDateTime::new(date, time).assume_offset(offset);
    // Stored instants have microsecond precision: never let high == low.
    let high = low + step.max(Duration::microseconds(1));
    Some((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_sets_the_range() {
        let b = DateBound::parse("2026").unwrap();
        assert_eq!(
            (b.low.as_str(), b.high.as_str()),
            ("2026-01-01T00:00:00.000000Z", "2027-01-01T00:00:00.000000Z")
        );
        let b = DateBound::parse("ge2026-12").unwrap();
        assert_eq!(b.prefix, Prefix::Ge);
        assert_eq!(b.high, "2027-01-01T00:00:00.000000Z");
        let b = DateBound::parse("lt2026-11-25").unwrap();
        assert_eq!(b.high, "2026-11-26T00:00:00.000000Z");
        let b = DateBound::parse("2026-11-25T10:00+01:00").unwrap();
        assert_eq!(
            (b.low.as_str(), b.high.as_str()),
            ("2026-11-25T09:00:00.000000Z", "2026-11-25T09:01:00.000000Z")
        );
        let b = DateBound::parse("2026-11-25T10:00:00.5Z").unwrap();
        assert_eq!(b.high, "2026-11-25T10:00:00.600000Z");
    }

    #[test]
    fn malformed_dates_are_refused() {
        for bad in [
            "",
            "x",
            "2026-13",
            "2026-02-30",
            "26",
            "2026-11-25T25:00",
            "2026-11-25T10",
            "gt",
            "2026-11-25T10:00:00.Z",
        ] {
            assert!(DateBound::parse(bad).is_err(), "{bad}");
        }
    }
}
