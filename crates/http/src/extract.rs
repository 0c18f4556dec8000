//! Extractors: the caller ([`Caller`]), the `Idempotency-Key` header, and JSON, path and query
//! wrappers whose rejections are [`ApiError`]s.
//!
//! Key decision: every axum rejection is turned into our error format here, at the edge, so a
//! client never sees axum's plain-text messages ("Failed to deserialize the JSON body…") or its
//! statuses (422 for a wrong JSON type). JSON syntax and type errors are both `malformed_json`
//! (400): the body is not what the schema says. Field *values* that are wrong (an amount's
//! text that is not an amount, an unknown currency, a negative amount) are 422
//! `invalid_request` naming the field, or a ledger code from the service. Rejected: `WithRejection` from axum-extra (one more dependency for four
//! small impls).
//!
//! Authentication is an extractor rather than a middleware so that each handler states in its
//! signature that it needs a caller, and routes without one (`/healthz`) cannot accidentally
//! receive a principal.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use tally_service::Principal;
use tally_service::access::CLIENT_KEY_LEN_MAX;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// The `Idempotency-Key` header name.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header set on replays.
pub const IDEMPOTENCY_REPLAYED: &str = "idempotency-replayed";

/// The authenticated caller, from `Authorization: Bearer <api key>`.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// The bearer token of a request, if it has a well-formed one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(key) = bearer(&parts.headers) else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "send `Authorization: Bearer <api key>`",
            ));
        };
        let principal = state.node.authenticate(key).await?;
        if let Some(seen) = parts.extensions.get::<crate::middleware::Authenticated>() {
            seen.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // The key's id (not the key) goes on the request span: logs say who did what.
        tracing::Span::current().record("caller", tracing::field::display(principal.key_id));
        // Also as an event, so the id is logged even where the span is not the current one.
        tracing::debug!(caller = %principal.key_id, role = principal.role.as_str(), "authenticated");
        Ok(Caller(principal))
    }
}

/// A required `Idempotency-Key` header (1 to 128 printable ASCII characters). Use
/// `Option<IdempotencyKey>` where it is optional.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

fn idempotency_key(parts: &Parts) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // Two keys would leave a retry's meaning to whichever one a proxy keeps.
    if values.next().is_some() {
        return Err(ApiError::new(
            ErrorCode::IdempotencyKeyInvalid,
            "send one Idempotency-Key header, not several",
        ));
    }
    let invalid = || {
        ApiError::new(
            ErrorCode::IdempotencyKeyInvalid,
            format!("Idempotency-Key must be 1 to {CLIENT_KEY_LEN_MAX} printable ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| invalid())?;
    let ok = !key.is_empty()
        && key.len() <= CLIENT_KEY_LEN_MAX
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(Some(IdempotencyKey(key.to_string())))
    } else {
        Err(invalid())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        idempotency_key(parts)?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::IdempotencyKeyRequired,
                "this operation moves money: send an `Idempotency-Key` header so a retry cannot apply it twice",
            )
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        idempotency_key(parts)
    }
}

/// A JSON body; every failure is `malformed_json`, `payload_too_large` or
/// `unsupported_media_type` in our format.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = json_content_type(&req);
        let bytes = body_bytes(req, state).await?;
        if !json {
            return Err(unsupported_media_type());
        }
        decode(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be empty (then `T::default()`), for `POST /v1/holds/{id}/post`.
#[derive(Debug, Clone)]
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = json_content_type(&req);
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !json {
            return Err(unsupported_media_type());
        }
        decode(&bytes).map(OptionalJson)
    }
}

fn json_content_type(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"))
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body too large")
        } else {
            ApiError::new(
                ErrorCode::MalformedJson,
                format!("could not read the body: {}", e.body_text()),
            )
        }
    })
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedMediaType,
        "send the body with `Content-Type: application/json`",
    )
}

/// Decodes a body. JSON that does not match the schema (syntax, types, missing or unknown
/// fields: axum would say 422) is 400 `malformed_json` naming where; an amount whose text is
/// not an amount is 422 `invalid_request` naming the field, as when a handler parses one.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let (decoded, refused_amount) = tally_wire::amount_text::watch(|| {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize::<_, T>(&mut de).map(|value| (value, de.end()))
    });
    match decoded {
        Ok((value, Ok(()))) => Ok(value),
        Ok((_, Err(trailing))) => Err(ApiError::new(
            ErrorCode::MalformedJson,
            trailing.to_string(),
        )),
        Err(e) => {
            let field = e.path().to_string();
            Err(match refused_amount {
                // Inside an internally tagged enum serde buffers the fields and the path is
                // lost: the field is the one holding the refused text.
                Some(refused) if field == "." => {
                    let field =
                        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
                            .ok()
                            .and_then(|fields| {
                                fields
                                    .into_iter()
                                    .find(|(_, v)| v.as_str() == Some(&refused.text))
                            })
                            .map_or_else(|| "amount".to_owned(), |(name, _)| name);
                    ApiError::invalid_field(&field, refused.error)
                }
                Some(refused) => ApiError::invalid_field(&field, refused.error),
                None if field == "." => {
                    ApiError::new(ErrorCode::MalformedJson, e.inner().to_string())
                }
                None => ApiError::new(ErrorCode::MalformedJson, format!("{field}: {}", e.inner())),
            })
        }
    }
}

/// A path parameter; a malformed one (e.g. not a UUID) is 400 `invalid_request`.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match <axum::extract::Path<T> as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
        {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(ApiError::bad_parameter("path", e.body_text())),
        }
    }
}

/// Query parameters; malformed ones are 400 `invalid_request`.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match <axum::extract::Query<T> as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
        {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(ApiError::bad_parameter("query", e.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_wire::delivery::PayReference;
    use tally_wire::oob::AppRequest;

    fn refusal<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> ApiError {
        decode::<T>(body.as_bytes()).expect_err("refused")
    }

    #[test]
    fn an_amount_of_the_wrong_form_is_an_invalid_field_and_a_wrong_type_malformed_json() {
        let id = uuid::Uuid::nil();
        let pay = |amount: &str| {
            format!(r#"{{"reference": "R", "from_account": "{id}", "amount": {amount}}}"#)
        };
        let e = refusal::<PayReference>(&pay(r#""2.505 EUR""#));
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRequest)
        );
        assert_eq!(e.details, Some(serde_json::json!({"field": "amount"})));
        let e = refusal::<PayReference>(&pay("250"));
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::BAD_REQUEST, ErrorCode::MalformedJson)
        );
        let e = refusal::<PayReference>(&format!("{} x", pay(r#""2.50 EUR""#)));
        assert_eq!(e.code(), ErrorCode::MalformedJson);

        // Inside an internally tagged enum (the out-of-band session's application).
        let e = refusal::<AppRequest>(&format!(
            r#"{{"application": "transfer", "debit_account": "{id}", "credit_account": "{id}", "amount": "lots"}}"#
        ));
        assert_eq!(e.code(), ErrorCode::InvalidRequest);
        assert_eq!(e.details, Some(serde_json::json!({"field": "amount"})));
        // A refusal does not leak into the next decode on the thread.
        let e = refusal::<PayReference>(&pay("null"));
        assert_eq!(e.code(), ErrorCode::MalformedJson);
    }
}
