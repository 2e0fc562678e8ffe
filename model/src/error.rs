//! The one error shape for input that breaks a rule: which field (as the caller wrote it, with
//! indexes: `Dimensions[2].Value`, `.eventTime`, `logs.files[0].path`) and why. Alarm
//! definitions, CloudTrail events, the agent's configuration and its audit intake all report
//! through it, so every door names the culprit the same way.

/// A field that breaks a rule, and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct FieldError {
    /// The field's path; empty for the input as a whole.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_leads_the_message_when_there_is_one() {
        assert_eq!(
            FieldError::new("Period", "must be 10, 30 or a multiple of 60").to_string(),
            "Period: must be 10, 30 or a multiple of 60"
        );
        assert_eq!(FieldError::new("", "not JSON").to_string(), "not JSON");
    }
}
