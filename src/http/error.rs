//! [`ApiError`]: the only error that becomes an HTTP response.
//!
//! Tokaroo's own routes answer the spec's shape `{"error": "...", "message": "..."}`. Routes
//! that mirror OpenAI's API are wrapped in [`openai_error_shape`], which re-renders the same
//! error as `{"error": {"message", "type", "code"}}` so that OpenAI SDKs surface the message.

use std::time::Duration;

use axum::{
    extract::Request,
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;
use tokaroo_actors::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("This request came from this gateway's own call to a self-hosted endpoint: the endpoint leads back to the gateway")]
    LoopDetected,
    #[error("Missing Authorization header: send `Authorization: Bearer <credential>`")]
    MissingCredential,
    #[error("Invalid or expired credential")]
    InvalidCredential,
    #[error("Dashboard session expired: it was unused for longer than the session lifetime; sign in again for a new session token")]
    SessionExpired,
    #[error("Session authentication required: this route takes a dashboard session token, not a tok_... API key")]
    SessionRequired,
    #[error("API key required: this route takes a tok_... runtime API key, not a dashboard session token")]
    ApiKeyRequired,
    #[error("Operator session required: this route is for the operator account")]
    OperatorRequired,
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("No route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("Method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("{0}")]
    Conflict(String),
    /// 409 with a code and fields of its own (an illegal status transition and what is allowed).
    #[error("{message}")]
    ConflictWith { code: &'static str, message: String, extra: serde_json::Map<String, serde_json::Value> },
    #[error("Rate limit exceeded: {limit} requests per minute for this API key; retry after {retry_after_secs} s")]
    RateLimited { limit: u32, retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// 501: a part of a route this build does not have yet, saying which.
    #[error("{0}")]
    NotImplemented(String),
    /// 402: `billing_required`, `budget_exceeded`, `payment_failed`, `no_card`, with the
    /// fields the spec's ErrorResponse shows (balance, required amount, payment URL, ...).
    #[error("{message}")]
    PaymentRequired { code: &'static str, message: String, extra: serde_json::Map<String, serde_json::Value> },
    #[error("Internal error; the server logged it (request id in x-request-id)")]
    Internal(String),
}

/// The parts of an error response, kept as a response extension so that
/// [`openai_error_shape`] can re-render it without parsing the body.
#[derive(Debug, Clone)]
pub struct ErrorParts {
    pub status: StatusCode,
    pub error: String,
    pub message: String,
    /// Route-specific fields beside `error` and `message`.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::LoopDetected => StatusCode::LOOP_DETECTED,
            Self::MissingCredential | Self::InvalidCredential | Self::SessionExpired => StatusCode::UNAUTHORIZED,
            Self::SessionRequired | Self::ApiKeyRequired | Self::OperatorRequired | Self::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            Self::NotFound { .. } | Self::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) | Self::ConflictWith { .. } => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::PaymentRequired { .. } => StatusCode::PAYMENT_REQUIRED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The spec's `error` string: a short phrase or code clients can match on.
    pub fn error_code(&self) -> String {
        match self {
            Self::BadRequest(_) => "invalid_request".into(),
            Self::PayloadTooLarge(_) => "payload_too_large".into(),
            Self::UnsupportedMediaType(_) => "unsupported_media_type".into(),
            Self::RequestTimeout(_) => "request_timeout".into(),
            Self::LoopDetected => "loop_detected".into(),
            Self::MissingCredential => "Missing Authorization header".into(),
            Self::InvalidCredential | Self::SessionExpired => "Invalid or expired credential".into(),
            Self::SessionRequired => "Session authentication required".into(),
            Self::ApiKeyRequired => "API key required".into(),
            Self::OperatorRequired => "Operator session required".into(),
            Self::Forbidden(_) => "forbidden".into(),
            Self::NotFound { what } => format!("{what} not found"),
            Self::RouteNotFound { .. } => "not_found".into(),
            Self::MethodNotAllowed { .. } => "method_not_allowed".into(),
            Self::Conflict(_) => "conflict".into(),
            Self::ConflictWith { code, .. } => (*code).into(),
            Self::RateLimited { .. } => "Rate limit exceeded".into(),
            Self::Unavailable(_) => "service_unavailable".into(),
            Self::NotImplemented(_) => "not_implemented".into(),
            Self::PaymentRequired { code, .. } => (*code).into(),
            Self::Internal(_) => "internal_error".into(),
        }
    }

    pub fn rate_limited(limit: u32, retry_after: Duration) -> Self {
        // Round up: a client that waits the advertised seconds must find a permit.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        Self::RateLimited { limit, retry_after_secs: secs.max(1) }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::NotFound { what } => Self::NotFound { what },
            EngineError::Invalid(msg) => Self::BadRequest(msg),
            EngineError::Conflict(msg) => Self::Conflict(msg),
            EngineError::IllegalTransition { ref from, ref to, ref allowed, .. } => Self::ConflictWith {
                code: "illegal_transition",
                message: error.to_string(),
                extra: json!({ "status": from, "requested": to, "allowed": allowed })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
            EngineError::MissionBudgetExceeded { budget_usd, spent_usd, required_usd } => Self::PaymentRequired {
                code: "mission_budget_exceeded",
                message: error.to_string(),
                extra: json!({ "budget_usd": budget_usd, "spent_usd": spent_usd, "required_usd": required_usd })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
            EngineError::Forbidden(msg) => Self::Forbidden(msg),
            EngineError::RateLimited { limit, retry_after } => Self::rate_limited(limit, retry_after),
            EngineError::Unavailable(msg) => Self::Unavailable(msg),
            EngineError::TooLarge(msg) => Self::PayloadTooLarge(msg),
            EngineError::UnsupportedType(msg) => Self::UnsupportedMediaType(msg),
            EngineError::BillingRequired { balance_usd, required_usd, ref payment_url } => Self::PaymentRequired {
                code: "billing_required",
                message: error.to_string(),
                extra: json!({ "payment_url": payment_url, "balance_usd": balance_usd, "required_usd": required_usd })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
            EngineError::BudgetExceeded { budget_usd, spent_usd } => Self::PaymentRequired {
                code: "budget_exceeded",
                message: error.to_string(),
                extra: json!({ "budget_usd": budget_usd, "spent_usd": spent_usd })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
            EngineError::ActivationRequired { ref missing, ref payment_url, balance_usd } => Self::PaymentRequired {
                code: "billing_required",
                message: error.to_string(),
                extra:
                    json!({ "missing_requirements": missing, "payment_url": payment_url, "balance_usd": balance_usd })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
            },
            EngineError::Payment { code, message } => {
                Self::PaymentRequired { code, message, extra: serde_json::Map::new() }
            }
            EngineError::Storage(tokaroo_actors::StorageError::Closed) => {
                Self::Unavailable("The server is shutting down; retry against the restarted server".into())
            }
            EngineError::Storage(e) => Self::Internal(e.to_string()),
            EngineError::Internal(msg) => Self::Internal(msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let extra = match &self {
            Self::PaymentRequired { extra, .. } | Self::ConflictWith { extra, .. } => extra.clone(),
            _ => serde_json::Map::new(),
        };
        let parts = ErrorParts { status: self.status(), error: self.error_code(), message: self.to_string(), extra };
        let mut body = json!({ "error": parts.error, "message": parts.message });
        body.as_object_mut().into_iter().for_each(|b| b.extend(parts.extra.clone()));
        let mut response = (parts.status, Json(body)).into_response();
        if let Self::RateLimited { limit, retry_after_secs } = &self {
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            headers.insert("x-ratelimit-limit", HeaderValue::from(*limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(0u32));
        }
        response.extensions_mut().insert(parts);
        response
    }
}

fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Middleware for OpenAI-compatible routes: re-renders any [`ApiError`] in OpenAI's shape.
pub async fn openai_error_shape(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    match response.extensions().get::<ErrorParts>().cloned() {
        Some(parts) => to_openai_shape(response, &parts),
        None => response,
    }
}

pub fn to_openai_shape(response: Response, parts: &ErrorParts) -> Response {
    let (mut head, _) = response.into_parts();
    let mut error = json!({
        "message": parts.message,
        "type": openai_type(parts.status),
        "code": parts.error,
        "param": null,
    });
    error.as_object_mut().into_iter().for_each(|e| e.extend(parts.extra.clone()));
    let body = json!({ "error": error });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Response::from_parts(head, axum::body::Body::from(bytes))
}
