//! Durations as people write them: `500ms`, `15s`, `2m`, `1m30s`, `1h`.

use std::time::Duration;

/// Parse a duration such as `1m30s`. A bare number is rejected on purpose:
/// `healthy_deadline = 30` could mean seconds or milliseconds, so the unit is required.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration (write e.g. \"30s\", \"500ms\", \"2m\")".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "bad duration {text:?}: expected a number at {rest:?} (write e.g. \"30s\", \"500ms\", \"1m30s\")"
            ));
        }
        let number: f64 = rest[..digits].parse().map_err(|_| {
            format!(
                "bad duration {text:?}: {:?} is not a number",
                &rest[..digits]
            )
        })?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "" => {
                return Err(format!(
                    "bad duration {text:?}: a unit is required (ms, s, m or h)"
                ));
            }
            other => {
                return Err(format!(
                    "bad duration {text:?}: unknown unit {other:?} (use ms, s, m or h)"
                ));
            }
        };
        // Checked: a typo such as "99999999999999999999h" must be an error, not a panic.
        total = Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|d| total.checked_add(d))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
    }
    if total > MAX {
        return Err(format!(
            "duration {text:?} is longer than a year, the most berth accepts (write e.g. \"8760h\")"
        ));
    }
    Ok(total)
}

/// The longest duration a desired state may hold: one year. Every accepted value is then
/// safe downstream (`Instant + d`, `Duration * n`, millisecond counts in i64) instead of
/// validating and then overflowing in a gate (`docs/design.md` §12).
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Format a duration the way [`parse`] reads it back, for plans and status.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        assert!(parse("30").unwrap_err().contains("unit is required"));
        assert!(parse("3 days").is_err());
        assert!(parse("5d").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn too_large_is_an_error_not_a_panic() {
        assert!(
            parse("99999999999999999999h")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse("18446744073709551615s1h")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn format_round_trips() {
        for s in ["0s", "500ms", "15s", "2m", "1h"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
