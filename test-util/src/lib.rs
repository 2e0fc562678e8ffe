//! `watchtrail-test-util`: what the test suites share and production code never links. Today
//! that is a small mutation fuzzer: no input may panic a parser.
//!
//! Not coverage-guided: it starts from real inputs and breaks them (byte flips, insertions of
//! JSON and protobuf boundary tokens, truncations, duplicated runs) for a bounded time.
//! `WATCHTRAIL_FUZZ_SECONDS` (default 2 per target) sets the budget; the seed is printed, and
//! `WATCHTRAIL_FUZZ_SEED` replays a run. A panic names the input in hex.

use std::time::{Duration, Instant};

/// A seed for a randomized test: the number in the variable `var`, else the clock's
/// nanoseconds. It is printed, so that a failing run can be replayed.
pub fn seed_from_env(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("seed {seed} (set {var}={seed} to replay)");
    seed
}

/// xorshift64*: enough randomness for mutations, no dependency.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `WATCHTRAIL_FUZZ_SEED`, else the clock (printed either way).
    pub fn from_env() -> Self {
        Self(seed_from_env("WATCHTRAIL_FUZZ_SEED") | 1)
    }

    /// Seeded with `seed` (a run printed by [`seed_from_env`] replays with it).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// How long each target runs.
pub fn budget() -> Duration {
    Duration::from_secs_f64(
        std::env::var("WATCHTRAIL_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    )
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b":",
    b",",
    b"null",
    b"true",
    b"-",
    b"1e999",
    b"-0",
    b"18446744073709551616",
    b"\\u0000",
    b"\\ud800",
    b"\xff",
    b"\xc3\x28",
    b"\xf0\x9f\x92\xa5",
    b"\x00",
    b"\x08",
    b"\x0a",
    b"\x12",
    b"\x1a",
    b"\x22",
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    b"\xff\xff\xff\xff\x0f",
    b"\"eventTime\":",
    b"\"eventID\":",
    b"\"userIdentity\":",
    b"2023-07-10T11:45:00Z",
    b"9999-99-99T99:99:99Z",
];

/// One random change of `input`.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            2 if at < v.len() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            3 if at < v.len() => {
                let end = (at + 1 + rng.below(32)).min(v.len());
                let run = v[at..end].to_vec();
                v.splice(at..at, run);
            }
            4 => v.truncate(at),
            _ => {
                let b = (rng.next_u64() & 0xff) as u8;
                v.insert(at, b);
            }
        }
    }
    v
}

/// Runs `target` on mutations of `seeds` for the budget; a panic names the input.
pub fn run(name: &str, seeds: &[Vec<u8>], mut target: impl FnMut(&[u8])) -> usize {
    let mut rng = Rng::from_env();
    let deadline = Instant::now() + budget();
    let mut n = 0;
    while Instant::now() < deadline {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        if result.is_err() {
            panic!("{name}: panicked on input {}", hex::encode(&input));
        }
        n += 1;
    }
    println!("{name}: {n} inputs, no panic");
    n
}

#[cfg(test)]
mod tests {
    use watchtrail_model::pattern::FilterPattern;

    #[test]
    #[should_panic(expected = "panicked on input")]
    fn a_target_that_panics_is_caught_and_its_input_named() {
        // A parser with a bug on `{`: mutations of "a" reach it within the budget.
        super::run("buggy", &[b"a".to_vec()], |input| {
            assert!(!input.contains(&b'{'), "bug");
        });
    }

    #[test]
    fn the_filter_pattern_parser_and_matcher_never_panic() {
        let seeds: Vec<Vec<u8>> = [
            r#"{ ($.errorCode = "*UnauthorizedOperation") || ($.errorCode = "AccessDenied*") }"#,
            r#"{ $.userIdentity.type = "Root" && $.userIdentity.invokedBy NOT EXISTS && $.eventType != "AwsServiceEvent" }"#,
            r#"{ $.latency > 100 && $.tags[0] = "a" }"#,
            "[ip, user, username, timestamp, request = \"*GET*\", status_code = 4*, bytes]",
            "ERROR -Debug \"connection reset\"",
            "?ERROR ?WARN",
            "%[a-z]+ [0-9]{3}%",
            "",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let doc: serde_json::Value = serde_json::json!({
            "errorCode": "AccessDenied", "latency": 120, "tags": ["a"],
            "userIdentity": {"type": "Root"}, "eventType": "AwsApiCall"
        });
        let n = super::run("FilterPattern", &seeds, |input| {
            let text = String::from_utf8_lossy(input);
            if let Ok(p) = FilterPattern::parse(&text) {
                let _ = p.matches("10.0.0.1 - bob [10/Jul/2023] \"GET /x\" 404 512 ERROR");
                let _ = p.matches(&text);
                let _ = p.matches_value(&doc);
            }
        });
        assert!(n > 100, "only {n} inputs in the budget");
    }
}
