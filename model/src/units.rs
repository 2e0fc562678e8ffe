//! Units: the 27 CloudWatch units, and sizes and durations as people write them on command
//! lines and in configuration files. One grammar for all of Watchtrail:
//!
//! - a size is a whole number of bytes with an optional unit, `K`, `M`, `G` or `T` (also
//!   `KB`/`KiB` and so on, any case), each a power of 1024: `512`, `64K`, `256MiB`, `1G`;
//! - a duration is a number, whole or with a fraction, and a unit, `ms`, `s`, `m`, `h` or `d`;
//!   a bare number is seconds: `250ms`, `1.5s`, `10`, `5m`, `15d`.

use std::time::Duration;

/// The 27 CloudWatch `StandardUnit` values.
pub const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Parses a size: `512`, `64K`, `256MiB`, `1G` (powers of 1024).
///
/// # Errors
/// Anything else, or a size past `u64`, with the text and what was expected.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 512, 64K, 256MiB or 1G"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}`: a size is a whole number of bytes, or one with K, M, G or T"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Parses a duration: `250ms`, `1.5s`, `10` (seconds), `5m`, `1h`, `15d`.
///
/// # Errors
/// Anything else (a negative, infinite or too large duration included), with the text and
/// what was expected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a duration like 250ms, 1.5s, 5m, 1h or 15d");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let seconds_per_unit = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}`: a duration takes ms, s, m, h or d"
            ));
        }
    };
    // Whole numbers exactly (no float rounding of `250ms`); fractions through f64.
    if let Ok(n) = num.parse::<u64>() {
        return match unit.trim() {
            "ms" => Ok(Duration::from_millis(n)),
            _ => n
                .checked_mul(seconds_per_unit as u64)
                .map(Duration::from_secs)
                .ok_or_else(bad),
        };
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(n * seconds_per_unit).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_one_grammar() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1gb"), Ok(1 << 30));
        assert_eq!(parse_bytes("2T"), Ok(2 << 40));
        assert_eq!(parse_bytes(" 1G "), Ok(1 << 30));
        for bad in [
            "lots",
            "",
            "1.5G",
            "-1",
            "5 parsecs",
            "99999999999999999999",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert!(parse_bytes("20000000T").unwrap_err().contains("too large"));
    }

    #[test]
    fn durations_take_one_grammar() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("15d"), Ok(Duration::from_secs(15 * 86_400)));
        assert_eq!(parse_duration("0.5m"), Ok(Duration::from_secs(30)));
        for bad in [
            "s",
            "",
            "5 parsecs",
            "-1s",
            "1.2.3s",
            "NaNs",
            "1e999s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
