//! Usage history, grouped breakdowns, stats and balance (`/v1/usage`, `/v1/usage/breakdown`,
//! `/v1/stats`, `/v1/balance`), and the operator's `/admin/usage` and ledger routes.
//!
//! Stats and breakdowns read the ledger's daily rollups, never the history itself.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokaroo_actors::{
    chat::Mode,
    routing::upstreams::BillingMode,
    usage::{RollupCell, UsageFilter, UsageRow, MICROS_PER_DAY},
};

use super::{
    error::ApiError,
    extract::{Caller, JsonBody, Operator, QueryParams},
    wire::{iso_us, parse_iso_us, usd},
    AppState,
};

const REQUEST_TYPES: &[&str] =
    &["chat", "embeddings", "reflection", "url_analysis", "url_batch", "image", "speech", "transcription", "video"];
const MAX_DAYS: u32 = 366;

/// The read routes runtime keys may use; `http::router` mounts them behind admission.
pub fn read_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/usage", get(usage))
        .route("/v1/usage/breakdown", get(breakdown))
        .route("/v1/stats", get(stats))
        .route("/v1/balance", get(balance))
}

/// The operator's routes.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/usage", get(admin_usage))
        .route("/admin/ledger/reconcile", post(reconcile))
        .route("/admin/accounts/{id}/credits", get(list_credits).post(add_credits))
}

/// An account's credits and adjustments (refunds, disputes: negative, with their reason).
async fn list_credits(
    State(state): State<AppState>,
    _op: Operator,
    Path(account_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let data: Vec<Value> = state
        .engine
        .funding()
        .credits(&account_id)
        .await?
        .into_iter()
        .map(|c| {
            json!({
                "id": c.id,
                "amount_usd": usd(c.amount_units),
                "kind": if c.amount_units < 0 { "adjustment" } else { "credit" },
                "source": c.source,
                "reference": c.reference,
                "note": c.note,
                "created_at": iso_us(c.created_at_us),
            })
        })
        .collect();
    Ok(Json(json!({ "object": "list", "account_id": account_id, "data": data })))
}

/// The query parameters of every route here (each reads the ones it documents). One flat
/// struct: `serde(flatten)` would hand numbers to serde as strings.
#[derive(Deserialize, Default)]
struct UsageQuery {
    api_key_id: Option<String>,
    workspace_id: Option<String>,
    request_type: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
    days: Option<u32>,
    daily_days: Option<u32>,
    group_by: Option<String>,
    /// `/admin/usage` only.
    account_id: Option<String>,
}

/// The filter a caller may use: a runtime key is pinned to its own key and workspace; a
/// session's filters must name things in its account.
fn scoped_filter(state: &AppState, caller: &Caller, f: &UsageQuery) -> Result<UsageFilter, ApiError> {
    if let Some(t) = &f.request_type {
        if !REQUEST_TYPES.contains(&t.as_str()) {
            return Err(ApiError::BadRequest(format!("request_type must be one of: {}", REQUEST_TYPES.join(", "))));
        }
    }
    let mut filter = UsageFilter {
        api_key_id: f.api_key_id.clone(),
        workspace_slug: f.workspace_id.clone(),
        request_type: f.request_type.clone(),
    };
    match caller {
        Caller::Key(key) => {
            if f.api_key_id.as_ref().is_some_and(|id| *id != key.id) {
                return Err(ApiError::Forbidden("A runtime key can read only its own usage".into()));
            }
            if f.workspace_id.is_some() && f.workspace_id != key.workspace_slug {
                return Err(ApiError::Forbidden("A runtime key can read only its own workspace's usage".into()));
            }
            filter.api_key_id = Some(key.id.clone());
        }
        Caller::Session(identity) => {
            if let Some(slug) = &f.workspace_id {
                state.engine.directory().get_workspace(&identity.account_id, slug)?;
            }
            if let Some(id) = &f.api_key_id {
                if !state.engine.directory().list_keys(&identity.account_id)?.iter().any(|k| k.record.id == *id) {
                    return Err(ApiError::NotFound { what: "API key" });
                }
            }
        }
    }
    Ok(filter)
}

fn workspace_names(state: &AppState, account_id: &str) -> BTreeMap<String, String> {
    state
        .engine
        .directory()
        .list_workspaces(account_id)
        .map(|list| list.into_iter().map(|w| (w.slug, w.name)).collect())
        .unwrap_or_default()
}

/// What a customer sees of a row: never the upstream model, and the provider only when the
/// connection is their own.
fn customer_row(row: &UsageRow, names: &BTreeMap<String, String>) -> Value {
    let provider = match BillingMode::parse(&row.billing_mode) {
        Some(BillingMode::Byok) => row.provider.as_str(),
        Some(BillingMode::SelfHosted) => "self_hosted",
        _ => "tokaroo",
    };
    json!({
        "id": row.id,
        "api_key_id": row.api_key_id,
        "workspace_id": row.workspace_slug,
        "workspace_name": row.workspace_slug.as_ref().and_then(|s| names.get(s)),
        "metadata": row.metadata,
        "tier": row.tier,
        "model": row.tier,
        "provider": provider,
        "routing_method": row.routing_method,
        "execution_source": row.execution_source,
        "billing_mode": row.billing_mode,
        "request_type": row.request_type,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "actual_cost_usd": usd(row.actual_cost_units),
        "charged_usd": usd(row.charged_units),
        "baseline_usd": usd(row.baseline_units),
        "latency_ms": row.latency_ms,
        "cache": row.cache,
        "streamed": row.streamed,
        "unit": row.unit,
        "units": row.units,
        "created_at": iso_us(row.created_at_us),
    })
}

fn page_params(q: &UsageQuery, default_limit: usize) -> Result<(usize, Option<i64>), ApiError> {
    let limit = q.limit.unwrap_or(default_limit);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 1000".into()));
    }
    let before = match &q.before {
        Some(s) => Some(parse_iso_us(s).ok_or_else(|| {
            ApiError::BadRequest(format!("before must be an ISO 8601 timestamp such as a row's created_at, got {s:?}"))
        })?),
        None => None,
    };
    Ok((limit, before))
}

async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    let (limit, before) = page_params(&q, 100)?;
    let filter = scoped_filter(&state, &caller, &q)?;
    let account = caller.account_id();
    let (rows, has_more) = state.engine.funding().usage_page(account, &filter, before, limit).await?;
    let names = workspace_names(&state, account);
    let data: Vec<Value> = rows.iter().map(|r| customer_row(r, &names)).collect();
    Ok(Json(json!({ "object": "list", "data": data, "has_more": has_more })))
}

fn window(days: Option<u32>, name: &str, default: u32) -> Result<u32, ApiError> {
    let days = days.unwrap_or(default);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::BadRequest(format!("{name} must be between 1 and {MAX_DAYS}")));
    }
    Ok(days)
}

fn today() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64 / MICROS_PER_DAY
}

fn date_of(day: i64) -> String {
    iso_us(day * MICROS_PER_DAY)[..10].to_owned()
}

/// Sums of rollup cells.
#[derive(Default)]
struct Totals(RollupCell);

impl Totals {
    fn add(&mut self, c: &RollupCell) {
        self.0.merge(c);
    }

    fn avg_latency_ms(&self) -> f64 {
        if self.0.latency_count == 0 {
            0.0
        } else {
            self.0.latency_sum_ms as f64 / self.0.latency_count as f64
        }
    }

    fn json(&self) -> Map<String, Value> {
        let v = json!({
            "requests": self.0.requests,
            "input_tokens": self.0.input_tokens,
            "output_tokens": self.0.output_tokens,
            "total_tokens": self.0.input_tokens + self.0.output_tokens,
            "avg_latency_ms": self.avg_latency_ms(),
            "charged_usd": usd(self.0.charged_units),
            "actual_cost_usd": usd(self.0.actual_cost_units),
            "baseline_usd": usd(self.0.baseline_units),
            "savings_usd": usd((self.0.baseline_units - self.0.charged_units).max(0)),
        });
        v.as_object().cloned().unwrap_or_default()
    }
}

async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    let days = window(q.days, "days", 30)?;
    let daily_days = window(q.daily_days, "daily_days", days.min(30))?;
    let filter = scoped_filter(&state, &caller, &q)?;
    let today = today();
    let first_day = today - i64::from(days.max(daily_days)) + 1;
    let cells = state.engine.funding().rollups(caller.account_id(), first_day, today).await?;
    let window_start = today - i64::from(days) + 1;
    let daily_start = today - i64::from(daily_days) + 1;
    let mut totals = Totals::default();
    let mut tiers: BTreeMap<String, u64> = Mode::ALL.iter().map(|t| (t.as_str().to_owned(), 0)).collect();
    let mut types: BTreeMap<String, u64> = BTreeMap::new();
    let mut daily: BTreeMap<i64, Totals> = (daily_start..=today).map(|d| (d, Totals::default())).collect();
    for cell in cells.iter().filter(|c| filter.matches_cell(c)) {
        if cell.day >= window_start {
            totals.add(cell);
            *tiers.entry(cell.tier.clone()).or_default() += cell.requests;
            *types.entry(cell.request_type.clone()).or_default() += cell.requests;
        }
        if let Some(day) = daily.get_mut(&cell.day) {
            day.add(cell);
        }
    }
    let daily: Vec<Value> = daily
        .iter()
        .map(|(day, t)| {
            json!({
                "date": date_of(*day),
                "requests": t.0.requests,
                "tokens": t.0.input_tokens + t.0.output_tokens,
                "charged_usd": usd(t.0.charged_units),
                "actual_cost_usd": usd(t.0.actual_cost_units),
            })
        })
        .collect();
    let mut body = totals.json();
    body.extend(
        json!({
            "window_days": days,
            "daily_window_days": daily_days,
            "api_key_id": filter.api_key_id,
            "workspace_id": filter.workspace_slug,
            "tier_breakdown": tiers,
            "request_type_breakdown": types,
            "daily": daily,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    Ok(Json(Value::Object(body)))
}

async fn breakdown(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    let group_by = match q.group_by.as_deref() {
        Some("api_key") => "api_key",
        Some("workspace") | None => "workspace",
        Some(other) => {
            return Err(ApiError::BadRequest(format!("group_by must be api_key or workspace, got {other:?}")))
        }
    };
    let days = window(q.days, "days", 30)?;
    let filter = scoped_filter(&state, &caller, &q)?;
    let account = caller.account_id();
    let today = today();
    let cells = state.engine.funding().rollups(account, today - i64::from(days) + 1, today).await?;
    let mut groups: BTreeMap<Option<String>, Totals> = BTreeMap::new();
    for cell in cells.iter().filter(|c| filter.matches_cell(c)) {
        let key = if group_by == "api_key" { cell.api_key_id.clone() } else { cell.workspace_slug.clone() };
        groups.entry(key).or_default().add(cell);
    }
    let names = workspace_names(&state, account);
    let key_names: BTreeMap<String, (String, Option<String>)> = state
        .engine
        .directory()
        .list_keys(account)?
        .into_iter()
        .map(|k| (k.record.id, (k.record.name, k.record.workspace_slug)))
        .collect();
    let mut data: Vec<Value> = groups
        .into_iter()
        .map(|(id, totals)| {
            let mut row = totals.json();
            if group_by == "api_key" {
                let (name, ws) = id.as_ref().and_then(|i| key_names.get(i)).cloned().unzip();
                row.insert("api_key_id".into(), json!(id));
                row.insert("api_key_name".into(), json!(name));
                row.insert("workspace_id".into(), json!(ws.flatten()));
            } else {
                row.insert("workspace_id".into(), json!(id));
                row.insert("workspace_name".into(), json!(id.as_ref().and_then(|s| names.get(s))));
            }
            Value::Object(row)
        })
        .collect();
    data.sort_by(|a, b| {
        b["charged_usd"].as_f64().partial_cmp(&a["charged_usd"].as_f64()).unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(Json(json!({ "object": "list", "group_by": group_by, "window_days": days, "data": data })))
}

async fn balance(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let money = state.engine.funding().money(caller.account_id()).await?;
    Ok(Json(json!({ "balance_usd": usd(money.balance_units()), "currency": "usd" })))
}

/// The operator's view: provider, upstream model, route and reason, provider cost, customer
/// charge and margin, per row and summed over the page.
async fn admin_usage(
    State(state): State<AppState>,
    Operator(op): Operator,
    QueryParams(q): QueryParams<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    let (limit, before) = page_params(&q, 100)?;
    let account = q.account_id.clone().unwrap_or(op.account_id);
    let caller =
        Caller::Session(tokaroo_actors::Identity { account_id: account.clone(), is_operator: false, session_id: None });
    let filter = scoped_filter(&state, &caller, &q)?;
    let (rows, has_more) = state.engine.funding().usage_page(&account, &filter, before, limit).await?;
    let mut sum = (0i64, 0i64, 0i64, 0u64, 0u64);
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            sum.0 += r.actual_cost_units;
            sum.1 += r.charged_units;
            sum.2 += r.baseline_units;
            sum.3 += r.input_tokens;
            sum.4 += r.output_tokens;
            json!({
                "id": r.id,
                "account_id": r.account_id,
                "api_key_id": r.api_key_id,
                "workspace_id": r.workspace_slug,
                "tier": r.tier,
                "requested_model": r.requested_model,
                "provider": r.provider,
                "upstream": r.upstream,
                "upstream_model": r.upstream_model,
                "routing_method": r.routing_method,
                "routing_reason": r.routing_reason,
                "execution_source": r.execution_source,
                "billing_mode": r.billing_mode,
                "request_type": r.request_type,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "actual_cost_usd": usd(r.actual_cost_units),
                "charged_usd": usd(r.charged_units),
                "margin_usd": usd(r.charged_units - r.actual_cost_units),
                "baseline_usd": usd(r.baseline_units),
                "latency_ms": r.latency_ms,
                "cache": r.cache,
                "streamed": r.streamed,
                "unit": r.unit,
                "units": r.units,
                "created_at": iso_us(r.created_at_us),
                "request_id": r.request_id,
                // Earlier routes' failures with the upstream's own words: the operator's to
                // read, never in a customer's `/v1/usage`.
                "failed_attempts": r.failed_attempts,
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "account_id": account,
        "data": data,
        "has_more": has_more,
        "totals": {
            "requests": rows.len(),
            "input_tokens": sum.3,
            "output_tokens": sum.4,
            "actual_cost_usd": usd(sum.0),
            "charged_usd": usd(sum.1),
            "margin_usd": usd(sum.1 - sum.0),
            "baseline_usd": usd(sum.2),
        },
    })))
}

/// Recomputes every balance from the ledger's rows and credits and reports any drift.
async fn reconcile(State(state): State<AppState>, _op: Operator) -> Result<Json<Value>, ApiError> {
    let lines = state.engine.funding().reconcile().await?;
    let drift: i64 = lines.iter().map(|l| l.drift_units).sum();
    let accounts: Vec<Value> = lines
        .iter()
        .map(|l| {
            json!({
                "account_id": l.account_id,
                "usage_rows": l.usage_rows,
                "credits": l.credits,
                "recomputed_balance_usd": usd(l.recomputed_balance_units),
                "stored_balance_usd": usd(l.stored_balance_units),
                "live_balance_usd": usd(l.live_balance_units),
                "drift_usd": usd(l.drift_units),
            })
        })
        .collect();
    Ok(Json(json!({ "ok": drift == 0, "drift_usd": usd(drift), "accounts": accounts })))
}

#[derive(Deserialize)]
struct AddCredits {
    amount_usd: f64,
    note: Option<String>,
}

/// The `manual` way to fund an account (also `tokaroo credits add`).
/// `Idempotency-Key` makes a manual credit count once however often it is sent (an admin
/// client retrying after a timeout).
async fn add_credits(
    State(state): State<AppState>,
    _op: Operator,
    Path(account_id): Path<String>,
    headers: axum::http::HeaderMap,
    JsonBody(req): JsonBody<AddCredits>,
) -> Result<Json<Value>, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 200).ok_or_else(|| {
                ApiError::BadRequest("Idempotency-Key must be 1 to 200 visible ASCII characters".into())
            })?;
            Some(format!("manual:{account_id}:{key}"))
        }
    };
    let money = state.engine.funding().add_credit(&account_id, req.amount_usd, "manual", key, req.note).await?.money;
    Ok(Json(json!({ "ok": true, "account_id": account_id, "balance_usd": usd(money.balance_units()) })))
}
