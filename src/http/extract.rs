//! Extractors: JSON bodies whose rejections become [`ApiError`]s, and one extractor per
//! credential type.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts, StatusCode},
};
use serde::de::DeserializeOwned;
use tokaroo_actors::{Identity, KeyEntry, SessionRejection};

use super::{error::ApiError, AppState};

/// A JSON request body. Accepts any content type (curl's `-d` sends a form type), names the
/// offending field on type errors, and turns oversized bodies into 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!(
                    "Request body is larger than the limit of {} bytes",
                    state.config.server.max_body_bytes
                ))
            } else {
                ApiError::BadRequest(format!("Could not read the request body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::BadRequest("Request body is empty; expected a JSON object".into())),
        // serde would read a struct from a JSON array positionally; every body here is an object.
        Some(b'[') => {
            return Err(ApiError::BadRequest("Invalid request body: expected a JSON object, got an array".into()))
        }
        Some(_) => {}
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = if inner.is_syntax() || inner.is_eof() {
            format!("Malformed JSON in request body: {inner}")
        } else if path == "." {
            format!("Invalid request body: {inner}")
        } else {
            format!("Invalid value for `{path}`: {inner}")
        };
        ApiError::BadRequest(detail)
    })
}

/// A JSON object body as a `Value`, for routes that validate field by field. Only syntax can
/// fail here, so it skips [`parse_json`]'s path tracking, a measurable share of a chat request.
pub fn parse_json_object(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(serde_json::Value::Array(_)) => {
            Err(ApiError::BadRequest("Invalid request body: expected a JSON object, got an array".into()))
        }
        Ok(_) => Err(ApiError::BadRequest("Request body must be a JSON object".into())),
        Err(e) if e.is_eof() && bytes.iter().all(u8::is_ascii_whitespace) => {
            Err(ApiError::BadRequest("Request body is empty; expected a JSON object".into()))
        }
        Err(e) => Err(ApiError::BadRequest(format!("Malformed JSON in request body: {e}"))),
    }
}

/// The bearer credential, if any.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or(ApiError::MissingCredential)?;
    let value = value.to_str().map_err(|_| ApiError::InvalidCredential)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(ApiError::InvalidCredential)?
        .trim();
    if token.is_empty() {
        return Err(ApiError::MissingCredential);
    }
    Ok(token)
}

pub fn is_api_key(token: &str) -> bool {
    token.starts_with(tokaroo_actors::security::tokens::API_KEY_PREFIX)
}

/// A dashboard session token's identity, or the 401 that says why not.
fn session_identity(state: &AppState, token: &str) -> Result<Identity, ApiError> {
    state.engine.directory().authenticate_session(token).map_err(|rejection| match rejection {
        SessionRejection::Unknown => ApiError::InvalidCredential,
        SessionRejection::Expired => ApiError::SessionExpired,
    })
}

/// A dashboard session (management routes). A valid runtime key here is the wrong
/// credential type: 403.
pub struct Session(pub Identity);

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if is_api_key(token) {
            return Err(match state.engine.directory().authenticate_key(token) {
                Some(_) => ApiError::SessionRequired,
                None => ApiError::InvalidCredential,
            });
        }
        session_identity(state, token).map(Session)
    }
}

/// The operator's dashboard session (`/admin/*`).
pub struct Operator(pub Identity);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Session(identity) = Session::from_request_parts(parts, state).await?;
        if identity.is_operator {
            Ok(Operator(identity))
        } else {
            Err(ApiError::OperatorRequired)
        }
    }
}

/// Authenticates a runtime key without admitting it (the admission middleware does both).
pub fn runtime_key(parts: &Parts, state: &AppState) -> Result<Arc<KeyEntry>, ApiError> {
    let token = bearer(parts)?;
    if !is_api_key(token) {
        return Err(match session_identity(state, token) {
            Ok(_) => ApiError::ApiKeyRequired,
            Err(error) => error,
        });
    }
    state.engine.directory().authenticate_key(token).ok_or(ApiError::InvalidCredential)
}

/// A runtime API key that has been admitted (authenticated and under its rate limit) by
/// [`super::admission::admit`].
#[derive(Clone)]
pub struct ApiKey(pub Arc<KeyEntry>);

impl FromRequestParts<AppState> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ApiKey>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("runtime route mounted without the admission layer".into()))
    }
}

/// Query parameters whose rejections become a 400 naming the parameter.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(QueryParams).map_err(|e| {
            let path = e.path().to_string();
            ApiError::BadRequest(format!("Invalid query parameter `{path}`: {}", e.into_inner()))
        })
    }
}

/// Routes both credentials may read (usage, stats, balance): a dashboard session sees its
/// account; a runtime key sees only its own key and workspace. A runtime key here has
/// passed admission like on any runtime route ([`super::admission::admit_runtime_keys`]
/// mounted on the route); a session is not metered.
pub enum Caller {
    Session(Identity),
    Key(Arc<KeyEntry>),
}

impl Caller {
    pub fn account_id(&self) -> &str {
        match self {
            Self::Session(identity) => &identity.account_id,
            Self::Key(key) => &key.account_id,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if is_api_key(token) {
            let ApiKey(key) = ApiKey::from_request_parts(parts, state).await?;
            Ok(Caller::Key(key))
        } else {
            session_identity(state, token).map(Caller::Session)
        }
    }
}

/// The request's `x-request-id` (the caller's own, or the one the server assigned).
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(|v| v.chars().take(128).collect());
        Ok(RequestId(id))
    }
}
