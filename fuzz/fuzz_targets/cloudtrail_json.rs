//! Any bytes into the CloudTrail event parser: an error or a row with every `audit` column,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use watchtrail_model::cloudtrail::parse_event;
use watchtrail_model::tables::TableKind;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_event(text) {
        Ok(event) => {
            let row = event
                .row
                .as_object()
                .expect("a parsed event projects to an object");
            for field in TableKind::Audit.schema().fields() {
                assert!(
                    row.contains_key(field.name()),
                    "row lacks column {}",
                    field.name()
                );
            }
            assert!(!event.event_id.is_empty());
        }
        Err(e) => assert!(!e.reason.is_empty(), "an error says what is wrong"),
    }
});
