//! A JSON body extractor whose rejections are problem+json naming the field.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `axum::Json`, with errors that say which field is wrong.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(reject(rejection)),
        }
    }
}

/// serde's messages name the field as "`name`"; pull it out.
fn field_of(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

fn reject(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("application/json")
        }
        JsonRejection::JsonDataError(e) => {
            let msg =
                std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string());
            // "path: message" names the field (an unknown enum value's message quotes the
            // value, not the field); at the root, the message quotes the field.
            let path = msg
                .split_once(": ")
                .map(|(p, _)| p.trim())
                .filter(|p| !p.is_empty() && *p != "." && !p.contains(char::is_whitespace))
                .map(str::to_owned);
            let field = path
                .or_else(|| field_of(&msg))
                .or_else(|| msg.split(':').next().map(|p| p.trim().to_owned()));
            ApiError::Invalid {
                field: field.unwrap_or_else(|| "body".into()),
                detail: msg,
            }
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest {
            field: None,
            detail: format!(
                "malformed JSON: {}",
                std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string())
            ),
        },
        JsonRejection::BytesRejection(_) => ApiError::TooLarge,
        other => ApiError::BadRequest {
            field: None,
            detail: other.body_text(),
        },
    }
}

/// `axum::extract::Path` whose rejection (a non-numeric or out-of-range id) is problem+json.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::BadRequest {
                field: Some("path".into()),
                detail: e.body_text(),
            })
    }
}

/// `axum::extract::Query` whose rejection (unknown parameter, wrong type) is problem+json
/// naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| {
                let text = e.body_text();
                ApiError::Invalid {
                    field: field_of(&text).unwrap_or_else(|| "query".into()),
                    detail: text,
                }
            })
    }
}
