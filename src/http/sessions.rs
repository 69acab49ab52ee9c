//! Dashboard sessions (dashboard session): `GET /v1/sessions`, `DELETE /v1/sessions/:id`,
//! `POST /v1/sessions/rotate`. Each account sees and changes only its own sessions.
//!
//! `TOKAROO_ADMIN_TOKEN` is configuration, not a stored session: it is listed (to the
//! operator) as [`ADMIN_TOKEN_ID`], and rotating or revoking it is a 400 that says how.

use axum::{
    body::Bytes,
    extract::{Path, State},
    routing::{delete, get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokaroo_actors::records::Session as SessionRecord;

use super::{
    error::ApiError,
    extract::{parse_json, Session},
    wire::iso,
    AppState,
};

/// The id `GET /v1/sessions` shows for `TOKAROO_ADMIN_TOKEN`.
const ADMIN_TOKEN_ID: &str = "admin-token";
const ADMIN_TOKEN_FIXED: &str = "TOKAROO_ADMIN_TOKEN is configuration, not a stored session: it cannot be rotated or \
     revoked here; change or unset it and restart the server";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/rotate", post(rotate_session))
        .route("/v1/sessions/{id}", delete(revoke_session))
}

fn session_json(s: &SessionRecord, current: bool) -> Value {
    json!({
        "id": s.id,
        "label": s.label,
        "kind": "session",
        "created_at": iso(s.created_at_ms),
        "last_used_at": s.last_used_at_ms.map(iso),
        "expires_at": s.expires_at_ms.map(iso),
        "current": current,
        "revocable": true,
    })
}

/// Ids come from the path: refuse what no id we issue can contain, with a 400 saying so.
fn checked_id(id: &str) -> Result<&str, ApiError> {
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("session id must be 1-128 characters without control characters".into()));
    }
    Ok(id)
}

async fn list_sessions(State(state): State<AppState>, Session(who): Session) -> Result<Json<Value>, ApiError> {
    let sessions = state.engine.directory().list_sessions(&who.account_id)?;
    let mut data: Vec<Value> =
        sessions.iter().map(|s| session_json(s, who.session_id.as_deref() == Some(s.id.as_str()))).collect();
    if who.is_operator && state.config.server.admin_token.is_some() {
        data.push(json!({
            "id": ADMIN_TOKEN_ID,
            "label": "TOKAROO_ADMIN_TOKEN",
            "kind": "admin_token",
            "created_at": null,
            "last_used_at": null,
            "expires_at": null,
            "current": who.session_id.is_none(),
            "revocable": false,
        }));
    }
    Ok(Json(json!({ "object": "list", "data": data })))
}

async fn revoke_session(
    State(state): State<AppState>,
    Session(who): Session,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = checked_id(&id)?;
    if id == ADMIN_TOKEN_ID && who.is_operator {
        return Err(ApiError::BadRequest(ADMIN_TOKEN_FIXED.into()));
    }
    state.engine.directory().revoke_session(&who.account_id, id).await?;
    Ok(Json(json!({ "revoked": true, "id": id, "current": who.session_id.as_deref() == Some(id) })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// Another of the caller's own sessions; by default the one making the request.
    id: Option<String>,
}

async fn rotate_session(
    State(state): State<AppState>,
    Session(who): Session,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // The body is optional: `{}` or nothing rotates the caller's own session.
    let req: RotateRequest =
        if body.iter().all(u8::is_ascii_whitespace) { RotateRequest::default() } else { parse_json(&body)? };
    let id = match (req.id, &who.session_id) {
        (Some(id), _) => id,
        (None, Some(own)) => own.clone(),
        (None, None) => return Err(ApiError::BadRequest(ADMIN_TOKEN_FIXED.into())),
    };
    let id = checked_id(&id)?;
    if id == ADMIN_TOKEN_ID && who.is_operator {
        return Err(ApiError::BadRequest(ADMIN_TOKEN_FIXED.into()));
    }
    let (session, token) = state.engine.directory().rotate_session(&who.account_id, id).await?;
    let mut body = session_json(&session, who.session_id.as_deref() == Some(id));
    body["session_token"] = json!(token);
    Ok(Json(body))
}
