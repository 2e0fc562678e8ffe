//! The alarm state machine (reference section 2.3): M out of N, the four ways of treating
//! missing data, and the premature-alarm rule; and CloudWatch-shaped reason text.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ComparisonOperator, TreatMissingData};

/// An alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlarmState {
    /// Within the threshold.
    #[serde(rename = "OK")]
    Ok,
    /// Outside the threshold.
    #[serde(rename = "ALARM")]
    Alarm,
    /// Just created, or not enough data.
    #[serde(rename = "INSUFFICIENT_DATA")]
    InsufficientData,
}

impl AlarmState {
    /// The name as CloudWatch spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }

    /// Parses `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OK" => Some(AlarmState::Ok),
            "ALARM" => Some(AlarmState::Alarm),
            "INSUFFICIENT_DATA" => Some(AlarmState::InsufficientData),
            _ => None,
        }
    }
}

impl fmt::Display for AlarmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an alarm compares: N, M, the operator and threshold, and the missing-data policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// EvaluationPeriods.
    pub n: usize,
    /// DatapointsToAlarm.
    pub m: usize,
    /// ComparisonOperator.
    pub op: ComparisonOperator,
    /// Threshold.
    pub threshold: f64,
    /// TreatMissingData.
    pub treat: TreatMissingData,
}

/// How many periods an evaluation looks at for N evaluation periods. CloudWatch does not
/// document its formula; its one example is N = 3 → 5, which N + 2 reproduces.
pub fn evaluation_range(n: usize) -> usize {
    n + 2
}

/// Why the state is what it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Basis {
    /// Real datapoints (with missing ones filled where needed) were compared with the threshold.
    Threshold {
        /// The evaluated real datapoints: (index in the range, value), oldest first.
        evaluated: Vec<(usize, f64)>,
        /// How many of them breach.
        breaching: usize,
        /// Missing datapoints filled in by the policy.
        filled: usize,
        /// Whether the filled datapoints counted as breaching.
        filled_breaching: bool,
        /// ALARM came from the premature-alarm rule.
        premature: bool,
    },
    /// Every datapoint in the range is missing and the policy is `missing`.
    AllMissing,
    /// The policy is `ignore` and the data cannot decide: the current state stays.
    Retained,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The state the alarm should be in.
    pub state: AlarmState,
    /// Why.
    pub basis: Basis,
}

impl Rule {
    fn breaches(&self, v: f64) -> bool {
        self.op.breaches(v, self.threshold)
    }

    /// Decides the state from the datapoints of the evaluation range, oldest first (`None` =
    /// missing).
    pub fn decide(&self, points: &[Option<f64>], current: AlarmState) -> Decision {
        let n = self.n.max(1);
        let m = self.m.clamp(1, n);
        let real: Vec<(usize, f64)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|v| (i, v)))
            .collect();
        let threshold = |evaluated: Vec<(usize, f64)>, filled: usize, filled_breaching: bool| {
            let breaching = evaluated.iter().filter(|(_, v)| self.breaches(*v)).count();
            let total = breaching + if filled_breaching { filled } else { 0 };
            Decision {
                state: if total >= m {
                    AlarmState::Alarm
                } else {
                    AlarmState::Ok
                },
                basis: Basis::Threshold {
                    evaluated,
                    breaching,
                    filled,
                    filled_breaching,
                    premature: false,
                },
            }
        };
        // Enough real points: the N most recent, reaching back past missing ones; the policy
        // plays no part.
        if real.len() >= n {
            return threshold(real[real.len() - n..].to_vec(), 0, false);
        }
        let missing = n - real.len();
        if real.is_empty() {
            return match self.treat {
                TreatMissingData::Missing => Decision {
                    state: AlarmState::InsufficientData,
                    basis: Basis::AllMissing,
                },
                TreatMissingData::Ignore => Decision {
                    state: current,
                    basis: Basis::Retained,
                },
                TreatMissingData::Breaching => threshold(Vec::new(), missing, true),
                TreatMissingData::NotBreaching => threshold(Vec::new(), missing, false),
            };
        }
        match self.treat {
            TreatMissingData::Breaching => threshold(real, missing, true),
            TreatMissingData::NotBreaching => threshold(real, missing, false),
            TreatMissingData::Missing | TreatMissingData::Ignore => {
                let decided = threshold(real.clone(), 0, false);
                if decided.state == AlarmState::Alarm {
                    return decided;
                }
                // The premature-alarm rule: every real point breaches and the oldest is at
                // least M periods old.
                let all_breach = real.iter().all(|(_, v)| self.breaches(*v));
                let oldest_age = points.len() - real[0].0;
                if all_breach && oldest_age >= m {
                    if self.treat == TreatMissingData::Ignore {
                        return Decision {
                            state: current,
                            basis: Basis::Retained,
                        };
                    }
                    let breaching = real.len();
                    return Decision {
                        state: AlarmState::Alarm,
                        basis: Basis::Threshold {
                            evaluated: real,
                            breaching,
                            filled: 0,
                            filled_breaching: false,
                            premature: true,
                        },
                    };
                }
                decided
            }
        }
    }
}

/// One evaluated period: its start (epoch milliseconds) and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Start of the period, epoch milliseconds.
    pub start_ms: i64,
    /// The statistic, `None` when the period had no data.
    pub value: Option<f64>,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "2 missing datapoints were treated as [Breaching]".
fn filled_text(filled: usize, breaching: bool) -> String {
    format!(
        "{} treated as [{}]",
        if filled == 1 {
            "1 missing datapoint was".to_string()
        } else {
            format!("{filled} missing datapoints were")
        },
        if breaching {
            "Breaching"
        } else {
            "NonBreaching"
        }
    )
}

fn short_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%d/%m/%y %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// CloudWatch's timestamp format in reasons and payloads: `2019-10-02T17:04:40.985+0000`.
pub fn cloudwatch_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string())
        .unwrap_or_default()
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

impl Decision {
    /// The reason text, shaped like CloudWatch's: `Threshold Crossed: 1 out of the last 1
    /// datapoints [99.5 (02/10/19 16:59:00)] was greater than the threshold (50.0) (minimum 1
    /// datapoint for OK -> ALARM transition).`
    pub fn reason(&self, rule: &Rule, points: &[Point], previous: AlarmState) -> String {
        match &self.basis {
            Basis::AllMissing => format!(
                "Insufficient Data: {} unknown.",
                if rule.n == 1 {
                    "1 datapoint was".to_string()
                } else {
                    format!("{} were", plural(rule.n, "datapoint", "datapoints"))
                }
            ),
            Basis::Retained => format!(
                "Missing data is ignored: the alarm stays in {}.",
                self.state
            ),
            Basis::Threshold {
                evaluated,
                breaching,
                filled,
                filled_breaching,
                premature,
            } => {
                let to_alarm = self.state == AlarmState::Alarm;
                if evaluated.is_empty() {
                    return format!(
                        "Threshold Crossed: no datapoints were received for {} and {}.",
                        plural(*filled, "period", "periods"),
                        filled_text(*filled, *filled_breaching)
                    );
                }
                let shown: Vec<String> = evaluated
                    .iter()
                    .rev()
                    .filter(|(_, v)| rule.breaches(*v) == to_alarm)
                    .map(|(i, v)| {
                        let at = points.get(*i).map_or(0, |p| p.start_ms);
                        format!("{} ({})", number(*v), short_time(at))
                    })
                    .collect();
                let count = if to_alarm {
                    *breaching
                } else {
                    evaluated.len() - breaching
                };
                let minimum = if to_alarm {
                    rule.m
                } else {
                    rule.n.saturating_sub(rule.m) + 1
                };
                let mut text = format!(
                    "Threshold Crossed: {count} out of the last {} datapoints [{}] {} {}{} the threshold ({}) (minimum {} for {} -> {} transition).",
                    evaluated.len(),
                    shown.join(", "),
                    if count == 1 { "was" } else { "were" },
                    if to_alarm { "" } else { "not " },
                    rule.op.words(),
                    number(rule.threshold),
                    plural(minimum, "datapoint", "datapoints"),
                    previous,
                    self.state,
                );
                if *filled > 0 {
                    text.push_str(&format!(" {}.", filled_text(*filled, *filled_breaching)));
                }
                if *premature {
                    text.push_str(
                        " The remaining datapoints are missing; the oldest breaching one is old enough to alarm.",
                    );
                }
                text
            }
        }
    }

    /// The reason data JSON, shaped like CloudWatch's `StateReasonData`.
    pub fn reason_data(
        &self,
        rule: &Rule,
        points: &[Point],
        statistic: &str,
        period: u32,
        query_ms: i64,
    ) -> Value {
        let (evaluated, recent): (Vec<Value>, Vec<f64>) = match &self.basis {
            Basis::Threshold { evaluated, .. } => evaluated
                .iter()
                .rev()
                .map(|(i, v)| {
                    let at = points.get(*i).map_or(0, |p| p.start_ms);
                    (json!({"timestamp": cloudwatch_time(at), "value": v}), *v)
                })
                .unzip(),
            _ => (Vec::new(), Vec::new()),
        };
        let start = points.first().map_or(query_ms, |p| p.start_ms);
        json!({
            "version": "1.0",
            "queryDate": cloudwatch_time(query_ms),
            "startDate": cloudwatch_time(start),
            "statistic": statistic,
            "period": period,
            "recentDatapoints": recent,
            "evaluatedDatapoints": evaluated,
            "threshold": rule.threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlarmState::{Alarm, InsufficientData as Insufficient, Ok as Okay};

    fn points(s: &str) -> Vec<Option<f64>> {
        s.split_whitespace()
            .map(|t| match t {
                "0" => Some(1.0),
                "X" => Some(10.0),
                _ => None,
            })
            .collect()
    }

    fn decide(
        data: &str,
        m: usize,
        n: usize,
        treat: TreatMissingData,
        current: AlarmState,
    ) -> AlarmState {
        Rule {
            n,
            m,
            op: ComparisonOperator::GreaterThanThreshold,
            threshold: 5.0,
            treat,
        }
        .decide(&points(data), current)
        .state
    }

    /// Data, M, N, then the state under missing, ignore (`None`: kept), breaching, notBreaching.
    type GoldenRow = (
        &'static str,
        usize,
        usize,
        AlarmState,
        Option<AlarmState>,
        AlarmState,
        AlarmState,
    );

    /// Reference section 2.3's golden table. `None` in the ignore column: the current state is
    /// kept, checked from each of the three states.
    #[test]
    fn the_reference_golden_table() {
        use TreatMissingData::*;
        let table: [GoldenRow; 10] = [
            ("0 - X - X", 3, 3, Okay, Some(Okay), Okay, Okay),
            ("0 - - - -", 3, 3, Okay, Some(Okay), Okay, Okay),
            ("- - - - -", 3, 3, Insufficient, None, Alarm, Okay),
            ("0 X X - X", 3, 3, Alarm, Some(Alarm), Alarm, Alarm),
            ("- - X - -", 3, 3, Alarm, None, Alarm, Okay),
            ("0 - X - X", 2, 3, Alarm, Some(Alarm), Alarm, Alarm),
            ("0 0 X 0 X", 2, 3, Alarm, Some(Alarm), Alarm, Alarm),
            ("0 - X - -", 2, 3, Okay, Some(Okay), Alarm, Okay),
            ("- - - - 0", 2, 3, Okay, Some(Okay), Alarm, Okay),
            ("- - - X -", 2, 3, Alarm, None, Alarm, Okay),
        ];
        for (data, m, n, missing, ignore, breaching, not_breaching) in table {
            for current in [Okay, Alarm, Insufficient] {
                let row = format!("{data} {m}/{n} from {current}");
                assert_eq!(
                    decide(data, m, n, Missing, current),
                    missing,
                    "missing: {row}"
                );
                assert_eq!(
                    decide(data, m, n, Ignore, current),
                    ignore.unwrap_or(current),
                    "ignore: {row}"
                );
                assert_eq!(
                    decide(data, m, n, Breaching, current),
                    breaching,
                    "breaching: {row}"
                );
                assert_eq!(
                    decide(data, m, n, NotBreaching, current),
                    not_breaching,
                    "notBreaching: {row}"
                );
            }
        }
    }

    #[test]
    fn premature_alarm_needs_an_old_enough_breaching_point() {
        use TreatMissingData::Missing;
        assert_eq!(decide("- - X - -", 3, 3, Missing, Okay), Alarm);
        assert_eq!(decide("- - - - X", 3, 3, Missing, Okay), Okay);
        assert_eq!(decide("- - - X -", 3, 3, Missing, Okay), Okay);
    }

    #[test]
    fn enough_real_points_reach_back_past_missing_ones() {
        use TreatMissingData::NotBreaching;
        // The three most recent real points are X X X even though two periods are missing.
        assert_eq!(decide("X X - X -", 3, 3, NotBreaching, Okay), Alarm);
        assert_eq!(decide("0 X X X", 3, 3, NotBreaching, Okay), Alarm);
        assert_eq!(decide("X X X 0", 3, 3, NotBreaching, Alarm), Okay);
    }

    #[test]
    fn reasons_read_like_cloudwatch() {
        let rule = Rule {
            n: 1,
            m: 1,
            op: ComparisonOperator::GreaterThanThreshold,
            threshold: 50.0,
            treat: TreatMissingData::Missing,
        };
        let at = chrono::DateTime::parse_from_rfc3339("2019-10-02T16:59:00Z")
            .expect("time")
            .timestamp_millis();
        let pts = [
            Point {
                start_ms: at - 120_000,
                value: None,
            },
            Point {
                start_ms: at - 60_000,
                value: None,
            },
            Point {
                start_ms: at,
                value: Some(99.50160229693434),
            },
        ];
        let values: Vec<Option<f64>> = pts.iter().map(|p| p.value).collect();
        let d = rule.decide(&values, Okay);
        assert_eq!(d.state, Alarm);
        assert_eq!(
            d.reason(&rule, &pts, Okay),
            "Threshold Crossed: 1 out of the last 1 datapoints [99.50160229693434 (02/10/19 16:59:00)] \
             was greater than the threshold (50.0) (minimum 1 datapoint for OK -> ALARM transition)."
        );
        let data = d.reason_data(&rule, &pts, "Average", 60, at + 340_985);
        assert_eq!(data["recentDatapoints"], json!([99.50160229693434]));
        assert_eq!(data["queryDate"], "2019-10-02T17:04:40.985+0000");
        assert_eq!(data["threshold"], 50.0);
        assert_eq!(data["statistic"], "Average");

        let none = rule.decide(&[None, None, None], Alarm);
        assert_eq!(none.state, Insufficient);
        assert_eq!(
            none.reason(&rule, &pts, Alarm),
            "Insufficient Data: 1 datapoint was unknown."
        );

        let filled = Rule {
            treat: TreatMissingData::NotBreaching,
            ..rule
        };
        let d = filled.decide(&[None, None, None], Alarm);
        assert_eq!(
            d.reason(&filled, &pts, Alarm),
            "Threshold Crossed: no datapoints were received for 1 period and 1 missing datapoint was treated as [NonBreaching]."
        );
    }
}
