//! Any bytes into the filter-pattern parser and matcher. The input is a pattern, a newline and
//! a log message; the message is matched as text, as JSON when it parses, and extracted from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use watchtrail_model::pattern::FilterPattern;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, message) = text.split_once('\n').unwrap_or((&text, ""));
    match FilterPattern::parse(pattern) {
        Ok(p) => {
            let _ = p.matches(message);
            if let Ok(doc) = serde_json::from_str::<serde_json::Value>(message) {
                let _ = p.matches_value(&doc);
            }
            for selector in ["$.a", "$.a.b[0]", "$1", "ip"] {
                let _ = p.extract(message, selector);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty(), "an error says what is wrong"),
    }
});
