//! AWS Signature Version 4, verified: the `Authorization: AWS4-HMAC-SHA256 ...` header and
//! presigned query strings (`X-Amz-Signature=...`). The server recomputes the canonical request
//! from what arrived, signs it with the key's derived secret and compares in constant time.
//!
//! Checks, in the order an SDK's error says what to fix: the algorithm and the credential's
//! shape, the scope's region (the server's `--aws-region`) and service (the one the call is
//! for), the time (within 15 minutes of the server's clock for signed headers; before
//! `X-Amz-Date + X-Amz-Expires` for presigned URLs, at most 7 days), then the signature.

use axum::http::HeaderMap;
use ring::{digest, hmac};

/// How far a signed request's time may be from the server's clock.
pub const MAX_SKEW_MS: i64 = 15 * 60 * 1000;
/// The longest a presigned URL may live (AWS's limit).
pub const MAX_PRESIGN_SECS: i64 = 7 * 24 * 3600;
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The signature parts of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The access key id.
    pub access_key_id: String,
    /// The scope's date (`YYYYMMDD`).
    pub scope_date: String,
    /// The scope's region.
    pub region: String,
    /// The scope's service.
    pub service: String,
    /// The signed header names, lower case, in order.
    pub signed_headers: Vec<String>,
    /// The signature, hex.
    pub signature: String,
    /// `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`).
    pub amz_date: String,
    /// Presigned: how long the URL lives, seconds.
    pub expires: Option<i64>,
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed or incomplete signature parts.
    Incomplete(String),
    /// The scope names another region or service.
    Scope(String),
    /// Too far from the server's clock, or a presigned URL past its life.
    Expired(String),
    /// The signature does not match.
    Mismatch,
}

/// Decodes `%XX` escapes (leaves `+` alone: SigV4 encodes spaces as `%20`).
fn percent_decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

/// SigV4's URI encoding: everything but `A-Z a-z 0-9 - _ . ~` (and `/` when `keep_slash`).
fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query's parameters, decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&percent_decode(k)).into_owned(),
                String::from_utf8_lossy(&percent_decode(v)).into_owned(),
            )
        })
        .collect()
}

fn parse_credential(cred: &str) -> Result<(String, String, String, String), Refusal> {
    let parts: Vec<&str> = cred.split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"]
            if !key.is_empty() && date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok((
                key.to_string(),
                date.to_string(),
                region.to_string(),
                service.to_string(),
            ))
        }
        _ => Err(Refusal::Incomplete(format!(
            "Credential `{cred}` is not <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request"
        ))),
    }
}

/// The signature parts of a request, or `None` when it carries no signature at all.
///
/// # Errors
/// A signature that is there but malformed.
pub fn parse(headers: &HeaderMap, query: Option<&str>) -> Result<Option<Signed>, Refusal> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(auth) = header("authorization") {
        let Some(rest) = auth.strip_prefix(ALGORITHM) else {
            return Err(Refusal::Incomplete(format!(
                "Authorization: only {ALGORITHM} signatures are accepted"
            )));
        };
        let mut cred = None;
        let mut signed = None;
        let mut sig = None;
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("Credential=") {
                cred = Some(v);
            } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                signed = Some(v);
            } else if let Some(v) = part.strip_prefix("Signature=") {
                sig = Some(v);
            }
        }
        let (Some(cred), Some(signed), Some(sig)) = (cred, signed, sig) else {
            return Err(Refusal::Incomplete(
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'"
                    .into(),
            ));
        };
        let (access_key_id, scope_date, region, service) = parse_credential(cred)?;
        let amz_date = header("x-amz-date")
            .ok_or_else(|| Refusal::Incomplete("the X-Amz-Date header is required".into()))?;
        return Ok(Some(Signed {
            access_key_id,
            scope_date,
            region,
            service,
            signed_headers: signed.split(';').map(str::to_string).collect(),
            signature: sig.to_string(),
            amz_date: amz_date.to_string(),
            expires: None,
        }));
    }
    let pairs = query_pairs(query);
    let get = |n: &str| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let Some(sig) = get("X-Amz-Signature") else {
        return Ok(None);
    };
    if get("X-Amz-Algorithm") != Some(ALGORITHM) {
        return Err(Refusal::Incomplete(format!(
            "X-Amz-Algorithm: only {ALGORITHM} is accepted"
        )));
    }
    let need = |n: &str| {
        get(n).ok_or_else(|| Refusal::Incomplete(format!("the query parameter {n} is required")))
    };
    let (access_key_id, scope_date, region, service) = parse_credential(need("X-Amz-Credential")?)?;
    let expires: i64 = need("X-Amz-Expires")?
        .parse()
        .ok()
        .filter(|e| (1..=MAX_PRESIGN_SECS).contains(e))
        .ok_or_else(|| {
            Refusal::Incomplete(format!(
                "X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGN_SECS}"
            ))
        })?;
    Ok(Some(Signed {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers: need("X-Amz-SignedHeaders")?
            .split(';')
            .map(str::to_string)
            .collect(),
        signature: sig.to_string(),
        amz_date: need("X-Amz-Date")?.to_string(),
        expires: Some(expires),
    }))
}

fn amz_date_ms(s: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// What a request is, for its canonical form.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: &'a str,
    /// The path as received (percent-encoded).
    pub path: &'a str,
    /// The query string as received.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The body as received (before any `Content-Encoding` is undone).
    pub body: &'a [u8],
}

/// The canonical request of `req` under `s`'s signed headers.
fn canonical_request(s: &Signed, req: &Request<'_>) -> String {
    let path = uri_encode(
        &percent_decode(if req.path.is_empty() { "/" } else { req.path }),
        true,
    );
    let mut pairs: Vec<(String, String)> = query_pairs(req.query)
        .into_iter()
        .filter(|(k, _)| s.expires.is_none() || k != "X-Amz-Signature")
        .map(|(k, v)| {
            (
                uri_encode(k.as_bytes(), false),
                uri_encode(v.as_bytes(), false),
            )
        })
        .collect();
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers = String::new();
    for name in &s.signed_headers {
        let values: Vec<String> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&values.join(","));
        headers.push('\n');
    }
    let payload = req
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || hex::encode(digest::digest(&digest::SHA256, req.body)),
            str::to_string,
        );
    format!(
        "{}\n{path}\n{query}\n{headers}\n{}\n{payload}",
        req.method,
        s.signed_headers.join(";")
    )
}

fn hmac_sign(key: &[u8], msg: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg.as_bytes())
        .as_ref()
        .to_vec()
}

/// The signing key and the string to sign of `req` with `secret` under `s`'s scope.
fn signing_parts(s: &Signed, req: &Request<'_>, secret: &str) -> (Vec<u8>, String) {
    let scope = format!("{}/{}/{}/aws4_request", s.scope_date, s.region, s.service);
    let canonical = canonical_request(s, req);
    let to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        s.amz_date,
        hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
    );
    let k_date = hmac_sign(format!("AWS4{secret}").as_bytes(), &s.scope_date);
    let k_region = hmac_sign(&k_date, &s.region);
    let k_service = hmac_sign(&k_region, &s.service);
    (hmac_sign(&k_service, "aws4_request"), to_sign)
}

/// The signature of `req` with `secret` under `s`'s scope (hex).
pub fn signature(s: &Signed, req: &Request<'_>, secret: &str) -> String {
    let (key, to_sign) = signing_parts(s, req, secret);
    hex::encode(hmac_sign(&key, &to_sign))
}

/// Checks a signature's scope, time and value.
///
/// # Errors
/// The first check that fails.
pub fn verify(
    s: &Signed,
    req: &Request<'_>,
    secret: &str,
    region: &str,
    service: &str,
    now_ms: i64,
) -> Result<(), Refusal> {
    if s.region != region {
        return Err(Refusal::Scope(format!(
            "Credential should be scoped to a valid region, not '{}'. This server's region is '{region}'.",
            s.region
        )));
    }
    if s.service != service {
        return Err(Refusal::Scope(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    if !s.signed_headers.iter().any(|h| h == "host") {
        return Err(Refusal::Incomplete(
            "the host header must be signed (SignedHeaders)".into(),
        ));
    }
    let signed_at = amz_date_ms(&s.amz_date).ok_or_else(|| {
        Refusal::Incomplete(format!(
            "X-Amz-Date `{}` is not YYYYMMDDTHHMMSSZ",
            s.amz_date
        ))
    })?;
    if !s.amz_date.starts_with(&s.scope_date) {
        return Err(Refusal::Incomplete(format!(
            "the credential's date {} is not the day of X-Amz-Date {}",
            s.scope_date, s.amz_date
        )));
    }
    let stamp = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_default()
    };
    match s.expires {
        None if (now_ms - signed_at).abs() > MAX_SKEW_MS => {
            let (cmp, edge) = if signed_at < now_ms {
                ("earlier", now_ms - MAX_SKEW_MS)
            } else {
                ("later", now_ms + MAX_SKEW_MS)
            };
            let sign = if cmp == "earlier" { '-' } else { '+' };
            return Err(Refusal::Expired(format!(
                "Signature expired: {} is now {cmp} than {} ({} {sign} 15 min.)",
                s.amz_date,
                stamp(edge),
                stamp(now_ms)
            )));
        }
        Some(e) if now_ms > signed_at + e * 1000 => {
            return Err(Refusal::Expired(format!(
                "Request has expired: signed at {} for {e} s; it is now {}",
                s.amz_date,
                stamp(now_ms)
            )));
        }
        Some(_) if signed_at > now_ms + MAX_SKEW_MS => {
            return Err(Refusal::Expired(format!(
                "Request is not yet valid: signed at {}, it is now {}",
                s.amz_date,
                stamp(now_ms)
            )));
        }
        _ => {}
    }
    let Ok(given) = hex::decode(&s.signature) else {
        return Err(Refusal::Mismatch);
    };
    let (key, to_sign) = signing_parts(s, req, secret);
    // In constant time.
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, &key),
        to_sign.as_bytes(),
        &given,
    )
    .map_err(|_| Refusal::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn sign_headers(h: &mut HeaderMap, body: &[u8], date: &str, region: &str, service: &str) {
        let mut s = Signed {
            access_key_id: "AKID".into(),
            scope_date: date[..8].into(),
            region: region.into(),
            service: service.into(),
            signed_headers: vec!["content-type".into(), "host".into(), "x-amz-date".into()],
            signature: String::new(),
            amz_date: date.into(),
            expires: None,
        };
        let req = Request {
            method: "POST",
            path: "/",
            query: None,
            headers: h,
            body,
        };
        s.signature = signature(&s, &req, SECRET);
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKID/{}/{region}/{service}/aws4_request, SignedHeaders={}, Signature={}",
            s.scope_date,
            s.signed_headers.join(";"),
            s.signature
        );
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
    }

    #[test]
    fn a_signed_request_verifies_and_each_change_is_caught() {
        let date = "20261203T120000Z";
        let now = amz_date_ms(date).unwrap();
        let body = b"Action=ListMetrics&Version=2010-08-01";
        let mut h = headers(&[
            ("host", "127.0.0.1:4000"),
            ("x-amz-date", date),
            (
                "content-type",
                "application/x-www-form-urlencoded;  charset=utf-8",
            ),
        ]);
        sign_headers(&mut h, body, date, "us-east-1", "monitoring");
        let req = |h: &'static HeaderMap, body: &'static [u8]| Request {
            method: "POST",
            path: "/",
            query: None,
            headers: h,
            body,
        };
        let h: &'static HeaderMap = Box::leak(Box::new(h));
        let s = parse(h, None).unwrap().unwrap();
        assert_eq!(s.access_key_id, "AKID");
        assert_eq!(
            verify(&s, &req(h, body), SECRET, "us-east-1", "monitoring", now),
            Ok(())
        );
        // Another body, secret, region, service, or a time 16 minutes away: refused.
        assert_eq!(
            verify(
                &s,
                &req(h, b"Action=ListMetrics&Version=2010-08-02"),
                SECRET,
                "us-east-1",
                "monitoring",
                now
            ),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            verify(&s, &req(h, body), "x", "us-east-1", "monitoring", now),
            Err(Refusal::Mismatch)
        );
        assert!(matches!(
            verify(&s, &req(h, body), SECRET, "eu-west-1", "monitoring", now),
            Err(Refusal::Scope(m)) if m.contains("'us-east-1'")
        ));
        assert!(matches!(
            verify(&s, &req(h, body), SECRET, "us-east-1", "logs", now),
            Err(Refusal::Scope(m)) if m.contains("'logs'")
        ));
        assert!(matches!(
            verify(&s, &req(h, body), SECRET, "us-east-1", "monitoring", now + 16 * 60_000),
            Err(Refusal::Expired(m)) if m.starts_with("Signature expired: 20261203T120000Z is now earlier than")
        ));
        assert_eq!(
            verify(
                &s,
                &req(h, body),
                SECRET,
                "us-east-1",
                "monitoring",
                now + 14 * 60_000
            ),
            Ok(())
        );
    }

    #[test]
    fn presigned_urls_verify_until_they_expire() {
        let date = "20261203T120000Z";
        let now = amz_date_ms(date).unwrap();
        let h: &'static HeaderMap = Box::leak(Box::new(headers(&[("host", "localhost:1")])));
        let base = "Action=ListMetrics&Version=2010-08-01&X-Amz-Algorithm=AWS4-HMAC-SHA256\
                    &X-Amz-Credential=AKID%2F20261203%2Fus-east-1%2Fmonitoring%2Faws4_request\
                    &X-Amz-Date=20261203T120000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host";
        let unsigned = format!("{base}&X-Amz-Signature=00");
        let mut s = parse(h, Some(&unsigned)).unwrap().unwrap();
        let req = Request {
            method: "GET",
            path: "/",
            query: Some(Box::leak(unsigned.into_boxed_str())),
            headers: h,
            body: b"",
        };
        s.signature = signature(&s, &req, SECRET);
        let q = format!("{base}&X-Amz-Signature={}", s.signature);
        let q: &'static str = Box::leak(q.into_boxed_str());
        let s = parse(h, Some(q)).unwrap().unwrap();
        let req = Request {
            query: Some(q),
            ..req
        };
        assert_eq!(s.expires, Some(60));
        assert_eq!(
            verify(&s, &req, SECRET, "us-east-1", "monitoring", now + 59_000),
            Ok(())
        );
        assert!(matches!(
            verify(&s, &req, SECRET, "us-east-1", "monitoring", now + 61_000),
            Err(Refusal::Expired(m)) if m.starts_with("Request has expired")
        ));
        // A changed parameter breaks the signature.
        let changed: &'static str =
            Box::leak(q.replace("ListMetrics", "PutMetricData").into_boxed_str());
        let s2 = parse(h, Some(changed)).unwrap().unwrap();
        assert_eq!(
            verify(
                &s2,
                &Request {
                    query: Some(changed),
                    ..req
                },
                SECRET,
                "us-east-1",
                "monitoring",
                now
            ),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn malformed_signatures_say_what_is_missing() {
        let h = headers(&[(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request",
        )]);
        assert!(matches!(parse(&h, None), Err(Refusal::Incomplete(_))));
        let h = headers(&[("authorization", "Bearer wt_x")]);
        assert!(
            matches!(parse(&h, None), Err(Refusal::Incomplete(m)) if m.contains("AWS4-HMAC-SHA256"))
        );
        assert_eq!(
            parse(&HeaderMap::new(), Some("Action=ListMetrics")),
            Ok(None)
        );
        assert!(matches!(
            parse(&HeaderMap::new(), Some("X-Amz-Signature=1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k%2F20261203%2Fr%2Fs%2Faws4_request&X-Amz-Date=20261203T120000Z&X-Amz-Expires=604801&X-Amz-SignedHeaders=host")),
            Err(Refusal::Incomplete(m)) if m.contains("X-Amz-Expires")
        ));
    }
}
