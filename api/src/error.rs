//! The one error type of the API, rendered as RFC 9457 problem+json.
//!
//! Client mistakes say which field is wrong; server faults are logged and shown as a bare 500
//! that leaks nothing.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, wrong type).
    #[error("{detail}")]
    BadRequest {
        /// Offending field, if known.
        field: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// The request is well-formed but a value is invalid.
    #[error("{field}: {detail}")]
    Invalid {
        /// Offending field.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// No or unknown API key.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The API key lacks the scope this route needs.
    #[error("this API key lacks the `{0}` scope this request needs")]
    Forbidden(&'static str),
    /// The tenant's sending quota does not cover the request.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Not found (or not this tenant's — indistinguishable on purpose).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The route exists but does not take this method (`Allow` says which it takes).
    #[error("this route does not take the method {0}")]
    MethodNotAllowed(String),
    /// Conflicts with the current state (duplicate, wrong status).
    #[error("{detail}")]
    Conflict {
        /// Offending field, if any.
        field: Option<String>,
        /// What conflicts.
        detail: String,
    },
    /// A list would hold more subscribers than its tenant's lists may (`max_list_size`).
    #[error("{0}")]
    ListFull(String),
    /// The body is larger than allowed.
    #[error("request body too large")]
    TooLarge,
    /// The content type is not accepted here.
    #[error("unsupported content type; expected {0}")]
    UnsupportedMediaType(&'static str),
    /// The API key made more requests than its rate allows; retry after this many seconds.
    #[error("too many requests for this API key; retry after {0} s")]
    TooManyRequests(u64),
    /// A dependency (PostgreSQL, Redis) is unavailable.
    #[error("service unavailable")]
    Unavailable,
    /// Anything else: logged, shown as a bare 500.
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// An invalid field.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.to_owned(),
            detail: detail.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, Option<&str>) {
        match self {
            ApiError::BadRequest { field, .. } => {
                (StatusCode::BAD_REQUEST, "bad-request", field.as_deref())
            }
            ApiError::Invalid { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                Some(field),
            ),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "missing-scope", None),
            ApiError::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "quota-exceeded", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", None),
            ApiError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", None)
            }
            ApiError::Conflict { field, .. } => {
                (StatusCode::CONFLICT, "conflict", field.as_deref())
            }
            ApiError::ListFull(_) => (StatusCode::CONFLICT, "list-full", None),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too-large", None),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                None,
            ),
            ApiError::TooManyRequests(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "too-many-requests", None)
            }
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = %e, "internal error");
        }
        let (status, kind, field) = self.parts();
        let kind_uri = format!("https://hikyaku.dev/problems/{kind}");
        let body = Problem {
            kind: &kind_uri,
            title: status.canonical_reason().unwrap_or("error"),
            status: status.as_u16(),
            detail: self.to_string(),
            field,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (status, json).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::TooManyRequests(secs) = &self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(*secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => ApiError::Conflict {
                field: None,
                detail: "already exists".into(),
            },
            // Raised by the trigger of migration 0010: the statement changed nothing.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("HK001") => {
                ApiError::ListFull(db.message().to_owned())
            }
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => ApiError::Conflict {
                field: None,
                detail: "still referenced by another resource (a campaign uses this list)".into(),
            },
            // SQLSTATE class 22 (data exception): a value PostgreSQL cannot hold (NUL byte,
            // out-of-range date or number) came from the request.
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")) => {
                ApiError::Invalid {
                    field: "request".into(),
                    detail: format!("a value cannot be stored: {}", db.message()),
                }
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable
            }
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        tracing::warn!(error = %e, "redis unavailable");
        ApiError::Unavailable
    }
}
