//! Instants as stored: UTC, microseconds, fixed width
//! (`2026-11-25T20:15:03.123456Z`). A valid FHIR `instant`, and because
//! every stored value has the same width, text order is time order on both
//! databases.

use time::macros::format_description;
use time::OffsetDateTime;

pub fn format(t: OffsetDateTime) -> String {
    let f =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// The HTTP-date form for `Last-Modified` (RFC 7231, always GMT).
pub fn http_date(stored: &str) -> Option<String> {
    let t = OffsetDateTime::parse(stored, &time::format_description::well_known::Rfc3339).ok()?;
    let f = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC).format(&f).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_is_fixed_width_utc() {
        let t = OffsetDateTime::from_unix_timestamp(0).unwrap();
        assert_eq!(format(t), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn http_date_is_gmt() {
        assert_eq!(
            http_date("2026-11-25T20:15:03.123456Z").unwrap(),
            "Wed, 25 Nov 2026 20:15:03 GMT"
        );
    }
}
