//! Timestamps inside log lines, in the CloudWatch agent's strftime-like notation (reference
//! section 6.3): `%y %Y %b %B %m %-m %d %-d %e %A %a %H %-H %I %-I %p %M %-M %S %-S %f %Z %z`,
//! plus `%T` (`%H:%M:%S`), `%F` (`%Y-%m-%d`) and `%%`. The first match in a line wins.
//!
//! The format is compiled to one regular expression; the captured fields are then turned into
//! milliseconds since the epoch with chrono (dates that do not exist, such as 30 February,
//! find nothing).

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Year4,
    Year2,
    MonthNum,
    MonthName,
    Day,
    Hour24,
    Hour12,
    AmPm,
    Minute,
    Second,
    Fraction,
    ZoneName,
    Offset,
}

/// A compiled timestamp format.
#[derive(Debug, Clone)]
pub struct TimeFormat {
    regex: Regex,
    fields: Vec<Field>,
    utc: bool,
    pattern: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

impl TimeFormat {
    /// Compiles a format; `utc` says how to read times that carry no offset (else local time).
    pub fn parse(format: &str, utc: bool) -> Result<Self, String> {
        let mut pattern = String::new();
        let mut fields = Vec::new();
        let mut chars = format.char_indices().peekable();
        while let Some((pos, c)) = chars.next() {
            if c != '%' {
                pattern.push_str(&regex::escape(&c.to_string()));
                continue;
            }
            let mut d = chars
                .next()
                .map(|(_, d)| d)
                .ok_or_else(|| format!("a lone % at the end (position {})", pos + 1))?;
            let unpadded = d == '-';
            if unpadded {
                d = chars
                    .next()
                    .map(|(_, d)| d)
                    .ok_or_else(|| format!("%- needs a directive (position {})", pos + 1))?;
            }
            let two = if unpadded { r"(\d{1,2})" } else { r"(\d{2})" };
            let (re, f): (&str, Option<Field>) = match d {
                'Y' => (r"(\d{4})", Some(Field::Year4)),
                'y' => (r"(\d{2})", Some(Field::Year2)),
                'm' => (two, Some(Field::MonthNum)),
                'b' | 'h' => (
                    r"(?i:(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))",
                    Some(Field::MonthName),
                ),
                'B' => (
                    r"(?i:(january|february|march|april|may|june|july|august|september|october|november|december))",
                    Some(Field::MonthName),
                ),
                'd' => (two, Some(Field::Day)),
                'e' => (r" ?(\d{1,2})", Some(Field::Day)),
                'H' => (two, Some(Field::Hour24)),
                'I' => (two, Some(Field::Hour12)),
                'p' => (r"(?i:(am|pm))", Some(Field::AmPm)),
                'M' => (two, Some(Field::Minute)),
                'S' => (two, Some(Field::Second)),
                'f' => (r"(\d{1,9})", Some(Field::Fraction)),
                'a' => (r"(?i:(?:mon|tue|wed|thu|fri|sat|sun))", None),
                'A' => (
                    r"(?i:(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday))",
                    None,
                ),
                'Z' => (r"([A-Za-z]{1,5})", Some(Field::ZoneName)),
                'z' => (r"(Z|[+-]\d{2}:?\d{2})", Some(Field::Offset)),
                'T' => {
                    pattern.push_str(r"(\d{2}):(\d{2}):(\d{2})");
                    fields.extend([Field::Hour24, Field::Minute, Field::Second]);
                    continue;
                }
                'F' => {
                    pattern.push_str(r"(\d{4})-(\d{2})-(\d{2})");
                    fields.extend([Field::Year4, Field::MonthNum, Field::Day]);
                    continue;
                }
                '%' => ("%", None),
                other => {
                    return Err(format!(
                        "unknown directive %{other} at position {}",
                        pos + 1
                    ));
                }
            };
            pattern.push_str(re);
            if let Some(f) = f {
                fields.push(f);
            }
        }
        if !fields
            .iter()
            .any(|f| matches!(f, Field::Hour24 | Field::Hour12))
        {
            return Err("needs an hour (%H or %I)".into());
        }
        let regex = Regex::new(&pattern).map_err(|e| e.to_string())?;
        Ok(Self {
            regex,
            fields,
            utc,
            pattern,
        })
    }

    /// The regular expression the format compiles to (for `{timestamp_format}` as a multi-line
    /// start pattern).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the line holds a timestamp.
    pub fn is_match(&self, line: &str) -> bool {
        self.regex.is_match(line)
    }

    /// Milliseconds since the epoch of the first timestamp in the line. `now_ms` supplies the
    /// year when the format has none (the previous year if that would be more than a day ahead).
    pub fn find(&self, line: &str, now_ms: i64) -> Option<i64> {
        let caps = self.regex.captures(line)?;
        let this_year = chrono::DateTime::from_timestamp_millis(now_ms)
            .map_or(1970, |t| i64::from(chrono::Datelike::year(&t)));
        let mut year: Option<i64> = None;
        let (mut month, mut day, mut hour, mut minute, mut second, mut nanos) =
            (1, 1, 0, 0, 0, 0i64);
        let mut pm: Option<bool> = None;
        let mut offset_s: Option<i64> = None;
        for (i, f) in self.fields.iter().enumerate() {
            let text = caps.get(i + 1)?.as_str();
            let num = || text.trim().parse::<i64>().ok();
            match f {
                Field::Year4 => year = Some(num()?),
                Field::Year2 => year = Some(2000 + num()?),
                Field::MonthNum => month = num()?,
                Field::MonthName => {
                    let lower = text.to_ascii_lowercase();
                    month = MONTHS.iter().position(|m| lower.starts_with(m))? as i64 + 1;
                }
                Field::Day => day = num()?,
                Field::Hour24 | Field::Hour12 => hour = num()?,
                Field::AmPm => pm = Some(text.eq_ignore_ascii_case("pm")),
                Field::Minute => minute = num()?,
                Field::Second => second = num()?,
                Field::Fraction => {
                    let digits = &text[..text.len().min(9)];
                    let v: i64 = digits.parse().ok()?;
                    nanos = v * 10i64.pow(9 - digits.len() as u32);
                }
                Field::ZoneName => {
                    if text.eq_ignore_ascii_case("utc")
                        || text.eq_ignore_ascii_case("gmt")
                        || text == "Z"
                    {
                        offset_s = Some(0);
                    }
                }
                Field::Offset => {
                    if text == "Z" {
                        offset_s = Some(0);
                    } else {
                        let sign = if text.starts_with('-') { -1 } else { 1 };
                        let digits: String =
                            text[1..].chars().filter(char::is_ascii_digit).collect();
                        let h: i64 = digits.get(..2)?.parse().ok()?;
                        let m: i64 = digits.get(2..4)?.parse().ok()?;
                        offset_s = Some(sign * (h * 3600 + m * 60));
                    }
                }
            }
        }
        if let Some(pm) = pm {
            if !(1..=12).contains(&hour) {
                return None;
            }
            hour = hour % 12 + if pm { 12 } else { 0 };
        }
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || !(0..=23).contains(&hour)
            || !(0..=59).contains(&minute)
            || !(0..=60).contains(&second)
        {
            return None;
        }
        let guess_year = year.is_none();
        let mut y = year.unwrap_or(this_year);
        let mut ms = self.to_utc_ms(y, month, day, hour, minute, second, nanos, offset_s)?;
        if guess_year && ms > now_ms + 86_400_000 {
            y -= 1;
            ms = self.to_utc_ms(y, month, day, hour, minute, second, nanos, offset_s)?;
        }
        Some(ms)
    }

    /// Milliseconds since the epoch of a wall-clock time, at `offset_s` from UTC (else UTC or
    /// the machine's zone, as the format says); `None` for a date that does not exist.
    #[allow(clippy::too_many_arguments)]
    fn to_utc_ms(
        &self,
        y: i64,
        mo: i64,
        d: i64,
        h: i64,
        mi: i64,
        s: i64,
        nanos: i64,
        offset_s: Option<i64>,
    ) -> Option<i64> {
        use chrono::{NaiveDate, Offset as _, TimeZone as _};
        let date =
            NaiveDate::from_ymd_opt(y.try_into().ok()?, mo.try_into().ok()?, d.try_into().ok()?)?;
        // A leap second (:60) reads as the second after :59.
        let naive = date.and_hms_opt(
            h.try_into().ok()?,
            mi.try_into().ok()?,
            s.min(59).try_into().ok()?,
        )?;
        let naive_s = naive.and_utc().timestamp() + i64::from(s == 60);
        let offset = match offset_s {
            Some(o) => o,
            None if self.utc => 0,
            // The machine's offset at that wall-clock time (the earlier one in a repeated hour).
            None => chrono::Local
                .offset_from_local_datetime(&naive)
                .earliest()
                .map_or(0, |o| i64::from(o.fix().local_minus_utc())),
        };
        Some((naive_s - offset) * 1000 + nanos / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_856_000_000; // 2025-11-23T00:00:00Z

    fn utc(f: &str) -> TimeFormat {
        TimeFormat::parse(f, true).expect("format")
    }

    #[test]
    fn common_formats() {
        let f = utc("%Y-%m-%dT%H:%M:%S.%f%z");
        assert_eq!(
            f.find("level=info ts=2025-11-22T10:11:12.345+01:00 msg=x", NOW),
            Some(1_763_802_672_345)
        );
        let f = utc("%d/%b/%Y:%H:%M:%S %z");
        assert_eq!(
            f.find(
                r#"1.2.3.4 - - [22/Nov/2025:09:11:12 +0000] "GET / HTTP/1.1" 200"#,
                NOW
            ),
            Some(1_763_802_672_000)
        );
        // Syslog: no year, space-padded day.
        let f = utc("%b %e %H:%M:%S");
        assert_eq!(
            f.find("Nov  2 09:11:12 host sshd[1]: x", NOW),
            Some(1_762_074_672_000)
        );
        // A December line read in January belongs to the year before.
        let jan = 1_767_312_000_000; // 2026-01-02
        assert_eq!(
            f.find("Dec 31 23:00:00 host x", jan),
            Some(1_767_222_000_000)
        );
        let f = utc("%-m/%-d/%y %-I:%M:%S %p");
        assert_eq!(
            f.find("at 11/2/25 9:11:12 PM done", NOW),
            Some(1_762_117_872_000)
        );
        assert_eq!(f.find("no time here", NOW), None);
    }

    #[test]
    fn fractions_of_any_length() {
        let f = utc("%H:%M:%S,%f %Y-%m-%d");
        assert_eq!(
            f.find("10:00:00,5 2025-01-01", NOW),
            Some(1_735_725_600_500)
        );
        assert_eq!(
            f.find("10:00:00,123456789 2025-01-01", NOW),
            Some(1_735_725_600_123)
        );
    }

    #[test]
    fn bad_formats_are_refused_with_the_position() {
        let e = TimeFormat::parse("%Y-%m-%d %Q", true).expect_err("bad");
        assert!(e.contains("%Q at position 10"), "{e}");
        assert!(
            TimeFormat::parse("%Y-%m-%d", true)
                .expect_err("no hour")
                .contains("hour")
        );
        assert!(TimeFormat::parse("%H:%M %", true).is_err());
    }

    #[test]
    fn impossible_values_find_nothing() {
        let f = utc("%Y-%m-%d %H:%M:%S");
        assert_eq!(f.find("2025-13-01 10:00:00", NOW), None);
        assert_eq!(f.find("2025-01-01 25:00:00", NOW), None);
        assert_eq!(
            f.find("2025-02-30 10:00:00", NOW),
            None,
            "a day that does not exist"
        );
        assert_eq!(
            f.find("2024-02-29 00:00:00", NOW),
            Some(1_709_164_800_000),
            "a leap day"
        );
    }
}
