//! The JSON error every API answers with: `{"error": "code", "message": "..."}`
//! ([`ErrorBody`], defined with the API contracts in `waterworks-api`).
//! Internal causes are logged with a reference, never sent to the caller.

use crate::auth::Role;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
pub use waterworks_api::error::{ErrorBody, ErrorCode, Problem};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("this action needs the {} role", .0.as_str())]
    Forbidden(Role),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    /// Well-formed, but the domain refuses it (422).
    #[error("{0}")]
    Invalid(String),
    #[error("the service is not ready")]
    Unavailable,
    /// A statement or request ran past its time limit (503, retry later).
    #[error("the request took too long; narrow it or retry later")]
    TooSlow,
    /// Logged in full; the caller sees only "internal error".
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::Invalid),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            ApiError::TooSlow => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Timeout),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }

    /// Wraps any internal failure (database, IO) without exposing it.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }

    /// A database error: PostgreSQL's `statement_timeout` cancelling a
    /// statement (SQLSTATE 57014) is [`ApiError::TooSlow`]; text it cannot
    /// store (a NUL character, 22021) is the request's fault,
    /// [`ApiError::Invalid`]; anything else is internal.
    #[cfg(feature = "db")]
    pub fn from_db(e: &sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("57014") => {
                tracing::warn!(error = %d, "statement cancelled by its time limit");
                ApiError::TooSlow
            }
            sqlx::Error::Database(d) if d.code().as_deref() == Some("22021") => {
                ApiError::Invalid("text must not contain NUL characters".into())
            }
            e => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.code();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error answering a request");
        }
        let mut resp = (status, Json(ErrorBody::new(code, self.to_string()))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
