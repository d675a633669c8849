//! The one parser of durations on lockctl's command line (and `lockctl rehearse`'s).
//!
//! A duration is a number of seconds (`5`, `0.5`), or a duration in jiff's friendly format
//! (`250ms`, `1.5s`, `2m`, `2min`, `1m 30s`, `1h`). NaN, infinities, negative values and values
//! over 10^9 seconds are usage errors (exit 64), never a panic. `--timeout` of the lock
//! commands also takes `forever` (see [`parse_timeout`]).

use std::time::Duration;

/// The largest duration accepted: 10^9 seconds (about 31 years).
const MAX_SECS: f64 = 1e9;

/// A duration (see the module documentation).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let secs = if t.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && t.ends_with(|c: char| c.is_ascii_digit() || c == '.')
    {
        // A plain number: seconds (jiff's format needs a unit).
        t.parse::<f64>().map_err(|_| not_a_duration(s))?
    } else {
        let d: jiff::SignedDuration = t.parse().map_err(|_| not_a_duration(s))?;
        d.as_secs_f64()
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{s}' must be a finite duration, 0 or more"));
    }
    if secs > MAX_SECS {
        return Err(format!("'{s}' is over 10^9 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn not_a_duration(s: &str) -> String {
    format!("'{s}' is not a duration; use seconds (5, 0.5) or a unit (250ms, 1.5s, 2m, 1h)")
}

/// A parsed `--timeout` of the lock commands: `None` waits forever.
#[derive(Debug, Clone, Copy)]
pub struct Timeout(pub Option<Duration>);

/// A duration, or `forever` (also `never`, `inf`, `infinity`): wait without a limit.
pub fn parse_timeout(s: &str) -> Result<Timeout, String> {
    if matches!(s.trim(), "forever" | "inf" | "infinity" | "never") {
        return Ok(Timeout(None));
    }
    parse_duration(s)
        .map(|d| Timeout(Some(d)))
        .map_err(|e| format!("{e} (or 'forever' to wait without a limit)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_and_without_units() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration(" 3 "), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5 parsecs")
            .unwrap_err()
            .contains("is not a duration"));
        assert_eq!(parse_timeout("forever").unwrap().0, None);
        assert_eq!(parse_timeout("0").unwrap().0, Some(Duration::ZERO));
    }

    /// Hardening H: no value panics; every bad one is an error that says what is wrong.
    #[test]
    fn nan_infinity_negative_and_overflow_are_errors() {
        for bad in [
            "NaN", "nan", "inf", "-inf", "1e400", "-1", "-0.5s", "1e10", "1e308ms", "", "soon",
            "1..2", "+-1",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
        for bad in ["NaN", "-1", "1e10"] {
            assert!(parse_timeout(bad).unwrap_err().contains("forever"), "{bad}");
        }
    }
}
