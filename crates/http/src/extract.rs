//! Extractors: the caller ([`Caller`]), the `Idempotency-Key` header, and JSON, path and query
//! wrappers whose rejections are [`ApiError`]s.
//!
//! Key decision: every axum rejection is turned into our error format here, at the edge, so a
//! client never sees axum's plain-text messages ("Failed to deserialize the JSON body…") or its
//! statuses (422 for a wrong JSON type). JSON syntax and type errors are both `malformed_json`
//! (400): the body is not what the schema says. Field *values* that parse but are wrong
//! (unknown currency, negative amount) come back from the service as `invalid_request` or a
//! ledger code instead. Rejected: `WithRejection` from axum-extra (one more dependency for four
//! small impls).
//!
//! Authentication is an extractor rather than a middleware so that each handler states in its
//! signature that it needs a caller, and routes without one (`/healthz`) cannot accidentally
//! receive a principal.

use axum::extract::rejection::JsonRejection;
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
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// A JSON body that may be empty (then `T::default()`), for `POST /v1/holds/{id}/post`.
#[derive(Debug, Clone)]
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| json_rejection(JsonRejection::BytesRejection(e)))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !json_content_type {
            return Err(json_rejection(JsonRejection::MissingJsonContentType(
                Default::default(),
            )));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes).map_err(json_rejection)?;
        Ok(OptionalJson(value))
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => ApiError::new(ErrorCode::MalformedJson, e.body_text()),
        // Wrong types, missing or unknown fields: axum says 422, we say the JSON does not match.
        JsonRejection::JsonDataError(e) => ApiError::new(ErrorCode::MalformedJson, e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body with `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body too large")
        }
        JsonRejection::BytesRejection(e) => ApiError::new(
            ErrorCode::MalformedJson,
            format!("could not read the body: {}", e.body_text()),
        ),
        other => ApiError::new(ErrorCode::MalformedJson, other.body_text()),
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
