use super::*;

const DOC_MESSAGES: [&str; 5] = [
    "[ERROR 400] BAD REQUEST",
    "[ERROR 401] UNAUTHORIZED REQUEST",
    "[ERROR 419] MISSING ARGUMENTS",
    "[ERROR 420] INVALID ARGUMENTS",
    "[ERROR 500] INTERNAL SERVER ERROR",
];

fn which(pattern: &str) -> Vec<usize> {
    let p = FilterPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
    DOC_MESSAGES
        .iter()
        .enumerate()
        .filter(|(_, m)| p.matches(m))
        .map(|(i, _)| i)
        .collect()
}

fn json(pattern: &str, doc: &str) -> bool {
    FilterPattern::parse(pattern)
        .unwrap_or_else(|e| panic!("{pattern}: {e}"))
        .matches(doc)
}

fn error(pattern: &str) -> PatternError {
    match FilterPattern::parse(pattern) {
        Ok(p) => panic!("{pattern:?} parsed as {p:?}"),
        Err(e) => e,
    }
}

#[test]
fn term_patterns_follow_the_documented_examples() {
    assert_eq!(which("ERROR"), [0, 1, 2, 3, 4]);
    assert_eq!(which("ERROR ARGUMENTS"), [2, 3]);
    assert_eq!(which("?ERROR ?ARGUMENTS"), [0, 1, 2, 3, 4]);
    assert_eq!(which("?BAD ?INVALID"), [0, 3]);
    assert_eq!(which("\"INTERNAL SERVER ERROR\""), [4]);
    assert_eq!(which("ERROR -ARGUMENTS"), [0, 1, 4]);
    assert_eq!(which("\" \""), [0, 1, 2, 3, 4]);
    assert_eq!(which(""), [0, 1, 2, 3, 4]);
    // Case-sensitive.
    assert_eq!(which("error"), Vec::<usize>::new());
    assert_eq!(which("%4[0-9]9%"), [2]);
    assert_eq!(which("%^\\[ERROR 4%"), [0, 1, 2, 3]);
}

#[test]
fn json_patterns_compare_strings_with_wildcards() {
    let doc = r#"{"eventType":"UpdateTrail","errorCode":"AccessDeniedException","sourceIPAddress":"123.123.4.5","user":{"id":1,"name":"a"},"users":[{"email":"John.Doe@example.com"}]}"#;
    assert!(json(r#"{ $.eventType = "UpdateTrail" }"#, doc));
    assert!(json("{ $.eventType = UpdateTrail }", doc));
    assert!(!json("{ $.eventType = Update }", doc));
    assert!(json(r#"{ $.errorCode = "AccessDenied*" }"#, doc));
    assert!(json(r#"{ $.errorCode = "*Exception" }"#, doc));
    assert!(json(r#"{ $.errorCode = "Access*Exc*" }"#, doc));
    assert!(!json(r#"{ $.errorCode = "*UnauthorizedOperation" }"#, doc));
    assert!(!json("{ $.sourceIPAddress != 123.123.* }", doc));
    assert!(json("{ $.sourceIPAddress != 10.* }", doc));
    assert!(json(r#"{ $.eventType = "*" }"#, doc));
    assert!(!json(r#"{ $.missing = "*" }"#, doc));
    // A selector that points at an object never matches, not even with !=.
    assert!(!json(r#"{ $.user = "*" }"#, doc));
    assert!(!json(r#"{ $.user != "x" }"#, doc));
    assert!(json(
        r#"{ ($.user.id = 1) && ($.users[0].email = "John.Doe@example.com") }"#,
        doc
    ));
}

#[test]
fn json_patterns_compare_numbers() {
    let doc = r#"{"number":[0.001, 5],"latency":50,"coordinates":[[1,2],[3,4]],"code":"404"}"#;
    assert!(json("{ $.number[0] = 1e-3 }", doc));
    assert!(json("{ $.number[1] > 4 }", doc));
    assert!(json("{ $.number[1] >= 5 }", doc));
    assert!(!json("{ $.number[1] < 5 }", doc));
    assert!(json("{ $.number[1] <= +5.0 }", doc));
    assert!(json("{ $.latency != 49 }", doc));
    assert!(json("{ $.coordinates[1][0] = 3 }", doc));
    assert!(!json("{ $.coordinates[5][0] = 3 }", doc));
    assert!(json("{ $.code = 404 }", doc));
    assert!(json("{ $.code > 400 }", doc));
    assert!(json("{ $.latency > -1 }", doc));
}

#[test]
fn json_patterns_test_null_booleans_and_absence() {
    let doc = r#"{"a":null,"t":true,"f":false,"o":{"x":1}}"#;
    assert!(json("{ $.a IS NULL }", doc));
    assert!(!json("{ $.t IS NULL }", doc));
    assert!(!json("{ $.nope IS NULL }", doc));
    assert!(json("{ $.t IS TRUE }", doc));
    assert!(json("{ $.f IS FALSE }", doc));
    assert!(!json("{ $.f IS TRUE }", doc));
    assert!(json("{ $.nope NOT EXISTS }", doc));
    assert!(json("{ $.o.y NOT EXISTS }", doc));
    assert!(!json("{ $.o.x NOT EXISTS }", doc));
    assert!(!json("{ $.a NOT EXISTS }", doc));
}

/// CloudWatch's documentation gives `IS NULL` for a field whose value is JSON `null` and `NOT
/// EXISTS` for an absent one, and says comparisons need the field. So a comparison reads a null
/// field as a present value that equals no string and no number: `!=` matches it, `=` does not
/// (except the wildcard `*`, "the field is present"), and an absent field matches neither.
#[test]
fn not_equal_against_a_null_field_matches_and_against_an_absent_one_does_not() {
    let doc = r#"{"mfa":null,"code":null,"present":"Yes"}"#;
    assert!(json(r#"{ $.mfa != "Yes" }"#, doc));
    assert!(!json(r#"{ $.mfa = "Yes" }"#, doc));
    assert!(json(r#"{ $.mfa = "*" }"#, doc));
    assert!(json("{ $.code != 5 }", doc));
    assert!(!json("{ $.code = 5 }", doc));
    assert!(!json("{ $.code > 5 }", doc));
    assert!(!json(r#"{ $.absent != "Yes" }"#, doc));
    assert!(!json(r#"{ $.absent = "*" }"#, doc));
    assert!(!json(r#"{ $.present != "Yes" }"#, doc));
    // The string "null" is not JSON null.
    assert!(!json(r#"{ $.mfa = "null" }"#, doc));
}

#[test]
fn and_binds_tighter_than_or() {
    let doc = r#"{"a":1,"b":2,"c":3}"#;
    // a=9 || (b=2 && c=3)
    assert!(json("{ $.a = 9 || $.b = 2 && $.c = 3 }", doc));
    // (a=1 || b=9) && c=9
    assert!(!json("{ ($.a = 1 || $.b = 9) && $.c = 9 }", doc));
    // a=1 || (b=9 && c=9)
    assert!(json("{ $.a = 1 || $.b = 9 && $.c = 9 }", doc));
}

#[test]
fn non_json_messages_never_match_json_patterns() {
    assert!(!json(r#"{ $.a = "*" }"#, "plain text"));
    assert!(!json(r#"{ $.a NOT EXISTS }"#, "plain text"));
}

#[test]
fn space_delimited_patterns_bind_fields_by_position() {
    let line =
        r#"127.0.0.1 Prod frank [10/Oct/2000:13:25:15 -0700] "GET /index.html HTTP/1.0" 404 1534"#;
    let p = FilterPattern::parse(
        "[ip, user, username, timestamp, request =*.html*, status_code = 4*, bytes]",
    )
    .expect("parse");
    assert!(p.matches(line));
    assert_eq!(
        p.extract(line, "$timestamp").as_deref(),
        Some("10/Oct/2000:13:25:15 -0700")
    );
    assert_eq!(
        p.extract(line, "$request").as_deref(),
        Some("GET /index.html HTTP/1.0")
    );
    assert_eq!(p.extract(line, "$bytes").as_deref(), Some("1534"));
    assert_eq!(p.extract(line, "$nope"), None);

    let tail = FilterPattern::parse("[..., request =*.html*, status_code = 4*, bytes]").expect("p");
    assert!(tail.matches(line));
    assert_eq!(tail.extract(line, "$status_code").as_deref(), Some("404"));

    let either = FilterPattern::parse(
        "[ip, user, username, timestamp, request, status_code = 404 || status_code = 410, bytes]",
    )
    .expect("p");
    assert!(either.matches(line));
    assert!(!either.matches(&line.replace(" 404 ", " 200 ")));
    assert!(either.matches(&line.replace(" 404 ", " 410 ")));

    let numeric =
        FilterPattern::parse("[..., status_code >= 400 && status_code < 500, bytes > 1000]")
            .expect("p");
    assert!(numeric.matches(line));
    assert!(!numeric.matches(&line.replace(" 1534", " 15")));

    assert!(
        !FilterPattern::parse("[a, b, c, d, e, f, g, h]")
            .expect("p")
            .matches(line)
    );
}

#[test]
fn positional_words() {
    let p = FilterPattern::parse("[w1=ERROR, w2]").expect("parse");
    assert!(p.matches("ERROR disk full on /var"));
    assert_eq!(
        p.extract("ERROR disk full on /var", "$w2").as_deref(),
        Some("disk full on /var")
    );
    assert!(!p.matches("WARNING disk full"));
    let p = FilterPattern::parse("[w1=ERROR || w1=WARNING, w2]").expect("parse");
    assert!(p.matches("WARNING disk full"));
    assert!(!p.matches("INFO disk full"));
    let p = FilterPattern::parse("[w1!=ERROR && w1!=WARNING, w2]").expect("parse");
    assert!(p.matches("INFO disk full"));
    assert!(!p.matches("ERROR disk full"));
}

#[test]
fn extract_reads_json_values_of_matching_events() {
    let p = FilterPattern::parse("{ $.latency = * }").expect("parse");
    let doc = r#"{"latency": 50, "requestType": "GET"}"#;
    assert_eq!(p.extract(doc, "$.latency").as_deref(), Some("50"));
    assert_eq!(p.extract(doc, "$.requestType").as_deref(), Some("GET"));
    assert_eq!(
        p.extract(r#"{"requestType": "GET"}"#, "$.requestType"),
        None
    );
    assert!(is_selector("$.a.b[0]"));
    assert!(is_selector("$bytes"));
    assert!(!is_selector("bytes"));
    assert!(!is_selector("$.a b"));
}

#[test]
fn errors_name_the_position() {
    let e = error("{ $.eventName = }");
    assert_eq!(e.position, 17, "{e}");
    let e = error("{ ($.a = 1 }");
    assert_eq!(e.position, 3, "{e}");
    assert!(e.message.contains("never closed"), "{e}");
    let e = error("{ $.a = 1 ");
    assert_eq!(e.position, 11, "{e}");
    let e = error("{ $.a < abc }");
    assert_eq!(e.position, 9, "{e}");
    let e = error("{ $.a IS NOT NULL }");
    assert_eq!(e.position, 10, "{e}");
    let e = error("{ eventName = 1 }");
    assert_eq!(e.position, 3, "{e}");
    let e = error("{ $.a EXISTS }");
    assert_eq!(e.position, 7, "{e}");
    let e = error("[a, b");
    assert_eq!(e.position, 6, "{e}");
    let e = error("[a, , b]");
    assert_eq!(e.position, 5, "{e}");
    let e = error("[a = 1 || b = 2, c]");
    assert_eq!(e.position, 11, "{e}");
    let e = error("\"unterminated");
    assert_eq!(e.position, 1, "{e}");
    let e = error("%a(b)%");
    assert_eq!(e.position, 3, "{e}");
    let e = error("%a% %b% %c%");
    assert_eq!(e.position, 9, "{e}");
    let e = error(&"x".repeat(MAX_PATTERN_LEN + 1));
    assert_eq!(e.position, MAX_PATTERN_LEN + 1, "{e}");
    assert!(e.to_string().starts_with("at position"));
}

/// The 14 CIS patterns as the repository ships them, each with CloudTrail events that must and
/// must not match.
#[test]
fn the_fourteen_cis_patterns_parse_and_match_as_intended() {
    // Read at run time: a test binary built in another checkout is reused from a shared target
    // directory, and its compile-time path may no longer exist.
    let root = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo");
    let dir = std::path::Path::new(&root).join("../examples/alarms/cis/filters");
    let mut patterns = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let v: Value = serde_json::from_str(&text).expect("json");
        let pattern = v["filterPattern"]
            .as_str()
            .expect("filterPattern")
            .to_string();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        patterns.push((
            name,
            FilterPattern::parse(&pattern).expect("CIS pattern parses"),
        ));
    }
    patterns.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(patterns.len(), 14);
    let by = |prefix: &str| {
        patterns
            .iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, p)| p.clone())
            .expect("pattern")
    };
    let ev = |s: &str| s.to_string();

    let root = by("01");
    assert!(root.matches(&ev(
        r#"{"userIdentity":{"type":"Root"},"eventType":"AwsApiCall"}"#
    )));
    assert!(!root.matches(&ev(r#"{"userIdentity":{"type":"Root","invokedBy":"s3.amazonaws.com"},"eventType":"AwsApiCall"}"#)));
    assert!(!root.matches(&ev(
        r#"{"userIdentity":{"type":"Root"},"eventType":"AwsServiceEvent"}"#
    )));
    assert!(!root.matches(&ev(
        r#"{"userIdentity":{"type":"IAMUser"},"eventType":"AwsApiCall"}"#
    )));

    let unauthorized = by("02");
    assert!(unauthorized.matches(r#"{"errorCode":"Client.UnauthorizedOperation"}"#));
    assert!(unauthorized.matches(r#"{"errorCode":"AccessDenied"}"#));
    assert!(unauthorized.matches(r#"{"errorCode":"AccessDeniedException"}"#));
    assert!(!unauthorized.matches(r#"{"errorCode":"ThrottlingException"}"#));
    assert!(!unauthorized.matches(r#"{"eventName":"GetObject"}"#));

    // Reference section 5's sample sign-in events.
    let no_mfa = r#"{"eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","eventType":"AwsConsoleSignIn","userIdentity":{"type":"IAMUser"},"responseElements":{"ConsoleLogin":"Success"},"additionalEventData":{"MFAUsed":"No"}}"#;
    let failed = r#"{"eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","userIdentity":{"type":"IAMUser"},"errorMessage":"Failed authentication","responseElements":{"ConsoleLogin":"Failure"},"additionalEventData":{"MFAUsed":"No"}}"#;
    assert!(by("03").matches(no_mfa));
    assert!(!by("03").matches(&no_mfa.replace(r#""MFAUsed":"No""#, r#""MFAUsed":"Yes""#)));
    assert!(!by("03").matches(failed));
    assert!(by("06").matches(failed));
    assert!(!by("06").matches(no_mfa));

    let one_of = |prefix: &str, source: Option<&str>, hits: &[&str], miss: &str| {
        let p = by(prefix);
        let event = |name: &str| match source {
            Some(s) => format!(r#"{{"eventSource":"{s}","eventName":"{name}"}}"#),
            None => format!(r#"{{"eventSource":"ec2.amazonaws.com","eventName":"{name}"}}"#),
        };
        for h in hits {
            assert!(p.matches(&event(h)), "{prefix} should match {h}");
        }
        assert!(!p.matches(&event(miss)), "{prefix} should not match {miss}");
        if let Some(s) = source {
            let elsewhere = format!(r#"{{"eventSource":"x{s}","eventName":"{}"}}"#, hits[0]);
            assert!(!p.matches(&elsewhere), "{prefix} is bound to {s}");
        }
    };
    one_of(
        "04",
        None,
        &["DeleteGroupPolicy", "PutUserPolicy", "DetachGroupPolicy"],
        "GetPolicy",
    );
    one_of(
        "05",
        None,
        &["CreateTrail", "StopLogging"],
        "DescribeTrails",
    );
    one_of(
        "07",
        Some("kms.amazonaws.com"),
        &["DisableKey", "ScheduleKeyDeletion"],
        "Encrypt",
    );
    one_of(
        "08",
        Some("s3.amazonaws.com"),
        &["PutBucketAcl", "DeleteBucketReplication"],
        "GetObject",
    );
    one_of(
        "09",
        Some("config.amazonaws.com"),
        &["StopConfigurationRecorder", "PutDeliveryChannel"],
        "DescribeDeliveryChannels",
    );
    one_of(
        "10",
        None,
        &["AuthorizeSecurityGroupIngress", "DeleteSecurityGroup"],
        "DescribeSecurityGroups",
    );
    one_of(
        "11",
        None,
        &["CreateNetworkAcl", "ReplaceNetworkAclAssociation"],
        "DescribeNetworkAcls",
    );
    one_of(
        "12",
        None,
        &["CreateCustomerGateway", "DetachInternetGateway"],
        "DescribeInternetGateways",
    );
    one_of(
        "13",
        None,
        &["CreateRoute", "DisassociateRouteTable"],
        "DescribeRouteTables",
    );
    one_of(
        "14",
        None,
        &["CreateVpc", "EnableVpcClassicLink"],
        "DescribeVpcs",
    );
}
