//! The one error body of every operation of every service:
//! `{"error": "<code>", "message": "...", ...}`. Internal causes are logged
//! by the service with a reference, never sent.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What went wrong, for a program; `message` says it for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is not what the operation accepts.
    BadRequest,
    /// 401: no valid bearer token.
    Unauthorized,
    /// 403: the token's role may not do this.
    Forbidden,
    /// 404: no such resource.
    NotFound,
    /// 409: the resource's state forbids the change.
    Conflict,
    /// 409: the billing period is not over yet in Korea (see `billable_from`).
    PeriodNotOver,
    /// 413: the body is over the operation's limit.
    TooLarge,
    /// 422: the body is well-formed but items in it are at fault (`problems`).
    Invalid,
    /// 429: over the rate limit; `Retry-After` says when to come back.
    TooManyRequests,
    /// 503: not ready, or shedding load; `Retry-After` when known.
    Unavailable,
    /// 503: the request or one of its statements ran past its time limit.
    Timeout,
    /// 500: logged in full by the service; the caller sees only this.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PeriodNotOver => "period_not_over",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Invalid => "invalid",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }
}

/// One item at fault in a batch (422 `invalid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Position of the item in the request's array, from 0.
    pub index: usize,
    /// The field at fault (empty when the item as a whole is).
    pub field: String,
    pub reason: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorCode,
    /// For a person; never an internal cause.
    pub message: String,
    /// With `invalid`: every item at fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    /// With `period_not_over`: the period asked for (`YYYY-MM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// With `period_not_over`: when that period may be billed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billable_from: Option<chrono::DateTime<chrono::Utc>>,
}

impl ErrorBody {
    pub fn new(error: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error,
            message: message.into(),
            problems: Vec::new(),
            period: None,
            billable_from: None,
        }
    }
}
