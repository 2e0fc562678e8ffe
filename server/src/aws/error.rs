//! AWS error answers: operations raise an [`AwsError`] of a [`Kind`]; the answer spells it as
//! the service does (CloudWatch's `InvalidParameterValue`, Logs' `InvalidParameterException`)
//! in the envelope of the protocol the call came in (Query XML `ErrorResponse`, awsJson and
//! rpc-v2-cbor `__type`), so the SDKs raise their usual exception classes and retry what they
//! retry. CloudWatch moved from Query to JSON and CBOR keeping its Query codes: those travel in
//! `x-amzn-query-error` as well.

use super::Service;

/// What kind of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A parameter with a wrong value.
    Invalid,
    /// A required parameter not given.
    Missing,
    /// A named resource does not exist.
    NotFound,
    /// A resource exists already.
    Exists,
    /// A limit is reached.
    Limit,
    /// Too many calls, or the WAL is full: retry later.
    Throttled,
    /// The key's role does not allow the call.
    Denied,
    /// The body could not be read.
    Serialization,
    /// The server failed.
    Internal,
    /// Storage is unavailable: retry.
    Unavailable,
    /// A pagination token no answer gave.
    BadToken,
    /// An operation this server does not have.
    UnknownOperation,
}

/// An AWS error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AwsError {
    /// The kind.
    pub kind: Kind,
    /// What went wrong.
    pub message: String,
    /// A code that overrides the kind's (signature errors, CloudTrail's own exceptions).
    pub code: Option<(u16, &'static str)>,
}

/// An error as one service spells it: HTTP status, the JSON/CBOR `__type`, the Query code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spelled {
    /// HTTP status.
    pub status: u16,
    /// `__type` (awsJson, CBOR).
    pub json_code: &'static str,
    /// The Query protocol's code (CloudWatch only; also sent as `x-amzn-query-error`).
    pub query_code: Option<&'static str>,
    /// The caller's fault.
    pub sender: bool,
}

impl AwsError {
    /// An error of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            code: None,
        }
    }

    /// A parameter with a wrong value, named.
    pub fn invalid(field: impl AsRef<str>, message: impl std::fmt::Display) -> Self {
        Self::new(Kind::Invalid, format!("{}: {message}", field.as_ref()))
    }

    /// A required parameter not given, named.
    pub fn missing(field: impl AsRef<str>) -> Self {
        Self::new(
            Kind::Missing,
            format!("The parameter {} is required.", field.as_ref()),
        )
    }

    /// A body that does not parse.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(Kind::Serialization, message)
    }

    /// An error with a code of its own.
    pub fn coded(kind: Kind, status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            code: Some((status, code)),
        }
    }

    /// The error as `service` spells it.
    pub fn spelled(&self, service: Service) -> Spelled {
        if let Some((status, code)) = self.code {
            return Spelled {
                status,
                json_code: code,
                query_code: (service == Service::CloudWatch).then_some(code),
                sender: status < 500,
            };
        }
        let cw = |status, json_code, query_code| Spelled {
            status,
            json_code,
            query_code: Some(query_code),
            sender: status < 500,
        };
        let other = |status, json_code| Spelled {
            status,
            json_code,
            query_code: None,
            sender: status < 500,
        };
        match (service, self.kind) {
            (Service::CloudWatch, kind) => match kind {
                Kind::Invalid => cw(
                    400,
                    "InvalidParameterValueException",
                    "InvalidParameterValue",
                ),
                Kind::Missing => cw(400, "MissingRequiredParameterException", "MissingParameter"),
                Kind::NotFound => cw(404, "ResourceNotFound", "ResourceNotFound"),
                Kind::Exists => cw(409, "ResourceConflict", "ResourceConflict"),
                Kind::Limit => cw(400, "LimitExceededFault", "LimitExceeded"),
                Kind::Throttled => cw(400, "ThrottlingException", "Throttling"),
                Kind::Denied => cw(403, "AccessDeniedException", "AccessDenied"),
                Kind::Serialization => cw(400, "SerializationException", "MalformedInput"),
                Kind::Internal => cw(500, "InternalServiceFault", "InternalServiceError"),
                Kind::Unavailable => cw(503, "ServiceUnavailableException", "ServiceUnavailable"),
                Kind::BadToken => cw(400, "InvalidNextToken", "InvalidNextToken"),
                Kind::UnknownOperation => cw(400, "UnknownOperationException", "InvalidAction"),
            },
            (_, kind) => match kind {
                Kind::Invalid | Kind::Missing => other(400, "InvalidParameterException"),
                Kind::NotFound => other(400, "ResourceNotFoundException"),
                Kind::Exists => other(400, "ResourceAlreadyExistsException"),
                Kind::Limit => other(400, "LimitExceededException"),
                Kind::Throttled => other(400, "ThrottlingException"),
                Kind::Denied => other(400, "AccessDeniedException"),
                Kind::Serialization => other(400, "SerializationException"),
                Kind::Internal | Kind::Unavailable => other(500, "ServiceUnavailableException"),
                Kind::BadToken if service == Service::CloudTrail => {
                    other(400, "InvalidNextTokenException")
                }
                Kind::BadToken => other(400, "InvalidParameterException"),
                Kind::UnknownOperation => other(400, "UnknownOperationException"),
            },
        }
    }
}
