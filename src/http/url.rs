//! URL intelligence: `POST /v1/url/analyse`, `POST /v1/url/batch`,
//! `GET /v1/url/batches[/:id]`, `GET /v1/url/history`, `GET /v1/url/stats`, and
//! `GET/POST /v1/url/profiles`, `PATCH /v1/url/profiles/:id`.
//!
//! Keys and sessions analyse (charged per URL to the account); a key bound to a workspace
//! reads only that workspace's checks and batches. Only sessions write profiles.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, patch, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokaroo_actors::url::{
    batch::BatchInput,
    score::{Thresholds, SIGNALS},
    service::{HistoryFilter, ProfileEntry, ProfileInput, UrlCaller, DECISIONS},
};

use super::{
    error::ApiError,
    extract::{Caller, JsonBody, QueryParams, RequestId, Session},
    wire::{cost_header, iso},
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/url/analyse", post(analyse))
        .route("/v1/url/batch", post(create_batch))
        .route("/v1/url/batches", get(list_batches))
        .route("/v1/url/batches/{id}", get(get_batch))
        .route("/v1/url/history", get(history))
        .route("/v1/url/stats", get(stats))
        .route("/v1/url/profiles", get(list_profiles).post(create_profile))
        .route("/v1/url/profiles/{id}", patch(update_profile))
}

fn url_caller(caller: &Caller, request_id: Option<String>) -> UrlCaller {
    match caller {
        Caller::Key(key) => UrlCaller {
            account_id: key.account_id.clone(),
            workspace: key.workspace_slug.clone().unwrap_or_default(),
            api_key_id: Some(key.id.clone()),
            request_id,
            bound_to_workspace: key.workspace_slug.is_some(),
        },
        Caller::Session(identity) => UrlCaller {
            account_id: identity.account_id.clone(),
            workspace: String::new(),
            api_key_id: None,
            request_id,
            bound_to_workspace: false,
        },
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalyseBody {
    url: String,
    profile: Option<String>,
    #[serde(default)]
    weights: BTreeMap<String, f64>,
}

async fn analyse(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    JsonBody(body): JsonBody<AnalyseBody>,
) -> Result<Response, ApiError> {
    let caller = url_caller(&caller, request_id);
    let (analysis, charge) =
        state.engine.url().analyse(&caller, &body.url, body.profile.as_deref(), &body.weights).await?;
    let mut response = Json(analysis).into_response();
    response.headers_mut().insert("x-tokaroo-cost", cost_header(charge.charged_usd()));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    urls: Vec<String>,
    label: Option<String>,
    profile: Option<String>,
    #[serde(default)]
    weights: BTreeMap<String, f64>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
}

async fn create_batch(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = url_caller(&caller, request_id);
    let input = BatchInput {
        urls: body.urls,
        label: body.label,
        profile: body.profile,
        weights: body.weights,
        webhook_url: body.webhook_url,
        webhook_secret: body.webhook_secret,
    };
    let batch = state.engine.url().create_batch(&caller, input).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(batch))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_batches(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_of(q.limit, 20, 100)?;
    let batches = state.engine.url().batches(&url_caller(&caller, None), limit)?;
    Ok(Json(json!({ "object": "list", "data": batches })))
}

async fn get_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.engine.url().batch(&url_caller(&caller, None), &id)?)))
}

fn limit_of(asked: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match asked {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest(format!("limit must be from 1 to {max}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<usize>,
    before: Option<String>,
    decision: Option<String>,
    domain: Option<String>,
}

async fn history(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_of(q.limit, 50, 500)?;
    if let Some(decision) = q.decision.as_deref().filter(|d| !DECISIONS.contains(d)) {
        return Err(ApiError::BadRequest(format!("decision {decision:?} is not allow, review, warn or block")));
    }
    let is_check_id = |b: &str| {
        b.strip_prefix("uc_").is_some_and(|hex| hex.len() <= 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()))
    };
    if q.before.as_deref().is_some_and(|b| !is_check_id(b)) {
        return Err(ApiError::BadRequest("before must be a check's id (uc_...) from an earlier page".into()));
    }
    let filter = HistoryFilter { decision: q.decision, domain: q.domain, before: q.before, limit: limit + 1 };
    let mut checks = state.engine.url().history(&url_caller(&caller, None), filter).await?;
    let has_more = checks.len() > limit;
    checks.truncate(limit);
    let data: Vec<Value> = checks
        .iter()
        .map(|c| {
            let mut entry = c.result.clone();
            entry["profile"] = json!(c.profile);
            entry["batch_id"] = json!(c.batch_id);
            entry["workspace_id"] = json!((!c.workspace.is_empty()).then_some(&c.workspace));
            entry["created_at"] = json!(iso(c.created_at_ms));
            entry
        })
        .collect();
    let next = if has_more { checks.last().map(|c| c.id.clone()) } else { None };
    Ok(Json(json!({ "object": "list", "data": data, "has_more": has_more, "next_before": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    days: Option<u32>,
}

async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    let days = q.days.unwrap_or(30);
    if !(1..=365).contains(&days) {
        return Err(ApiError::BadRequest("days must be from 1 to 365".into()));
    }
    let stats = state.engine.url().stats(&url_caller(&caller, None), days).await?;
    let mut answer = json!(stats);
    answer["object"] = json!("url.stats");
    Ok(Json(answer))
}

fn profile_json(entry: &ProfileEntry) -> Value {
    let p = &entry.profile;
    json!({
        "object": "url.profile",
        "id": entry.id,
        "name": p.name,
        "description": p.description,
        "builtin": entry.builtin,
        "weights": p.weights,
        "thresholds": p.thresholds,
        "created_at": entry.created_at_ms.map(iso),
        "updated_at": entry.updated_at_ms.map(iso),
    })
}

async fn list_profiles(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let profiles = state.engine.url().profiles(caller.account_id())?;
    let signals: Vec<Value> = SIGNALS
        .iter()
        .map(|(id, weight, means)| json!({"id": id, "default_weight": weight, "description": means}))
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": profiles.iter().map(profile_json).collect::<Vec<_>>(),
        "signals": signals,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileBody {
    name: Option<String>,
    description: Option<String>,
    weights: Option<BTreeMap<String, f64>>,
    thresholds: Option<Thresholds>,
}

impl From<ProfileBody> for ProfileInput {
    fn from(b: ProfileBody) -> Self {
        ProfileInput { name: b.name, description: b.description, weights: b.weights, thresholds: b.thresholds }
    }
}

async fn create_profile(
    State(state): State<AppState>,
    Session(identity): Session,
    JsonBody(body): JsonBody<ProfileBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let entry = state.engine.url().create_profile(&identity.account_id, body.into()).await?;
    Ok((StatusCode::CREATED, Json(profile_json(&entry))))
}

async fn update_profile(
    State(state): State<AppState>,
    Session(identity): Session,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ProfileBody>,
) -> Result<Json<Value>, ApiError> {
    let entry = state.engine.url().update_profile(&identity.account_id, &id, body.into()).await?;
    Ok(Json(profile_json(&entry)))
}
