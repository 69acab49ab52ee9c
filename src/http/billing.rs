//! Balance & billing: Checkout, direct top-ups, the first-key activation checklist, auto pay,
//! the saved card, and the payment processor's webhook. Session auth except the webhook,
//! which is authenticated by its signature.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::HeaderMap,
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokaroo_actors::{money::ledger::CreditFault, PaymentFault};

use super::{
    error::ApiError,
    extract::{JsonBody, Operator, Session},
    wire::{iso, usd},
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/billing/checkout", post(checkout))
        .route("/v1/billing/add", post(add))
        .route("/v1/billing/activation", get(activation))
        .route("/v1/billing/activation/accept", post(accept))
        .route("/v1/billing/autopay", get(get_autopay).put(put_autopay))
        .route("/v1/billing/card", get(get_card).delete(delete_card))
        .route("/v1/billing/webhook", post(webhook))
        .route("/admin/billing/reconcile", post(reconcile_payments))
        .route("/admin/accounts/{id}/payment_attempts", get(payment_attempts))
        .route("/admin/debug/payments", post(payment_fault))
}

/// Runs the payment reconciler now (it also runs every `billing.reconcile_interval_secs`).
async fn reconcile_payments(State(state): State<AppState>, _op: Operator) -> Result<Json<Value>, ApiError> {
    let report = state.engine.funding().reconcile_payments().await?;
    Ok(Json(json!({
        "ok": true,
        "customers": report.customers,
        "payments_seen": report.payments_seen,
        "credited": report.credited,
    })))
}

async fn payment_attempts(
    State(state): State<AppState>,
    _op: Operator,
    Path(account_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let data: Vec<Value> = state
        .engine
        .funding()
        .payment_attempts(&account_id)?
        .into_iter()
        .map(|a| {
            json!({
                "id": a.id,
                "kind": a.kind,
                "amount_usd": a.amount_cents as f64 / 100.0,
                "status": a.status,
                "idempotency_key": a.idempotency_key,
                "payment_intent_id": a.payment_intent_id,
                "error": a.error,
                "created_at": iso(a.created_at_ms),
                "updated_at": iso(a.updated_at_ms),
            })
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct PaymentFaultBody {
    /// The process aborts right after the next payment credit, before its profile update.
    crash_after_credit: bool,
    /// The ledger's next `n` log appends fail (a full disk).
    fail_ledger_appends: u32,
    /// The next `n` credits are recorded but answered after `delay_ms`: their callers time out.
    delay_credit_replies: u32,
    delay_ms: u64,
}

/// Test-only (`debug.fault_injection`): faults of the payment path.
async fn payment_fault(
    State(state): State<AppState>,
    _op: Operator,
    JsonBody(body): JsonBody<PaymentFaultBody>,
) -> Result<Json<Value>, ApiError> {
    super::admin::require_fault_injection(&state, "/admin/debug/payments")?;
    if body.crash_after_credit {
        state.engine.funding().payment_fault(PaymentFault::CrashAfterCredit)?;
    }
    if body.fail_ledger_appends > 0 {
        state
            .engine
            .funding()
            .payment_fault(PaymentFault::Ledger(CreditFault::FailLogAppends(body.fail_ledger_appends)))?;
    }
    if body.delay_credit_replies > 0 {
        state.engine.funding().payment_fault(PaymentFault::Ledger(CreditFault::DelayCreditReplies {
            count: body.delay_credit_replies,
            delay: std::time::Duration::from_millis(body.delay_ms),
        }))?;
    }
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutBody {
    amount_usd: f64,
}

async fn checkout(
    State(state): State<AppState>,
    Session(who): Session,
    JsonBody(body): JsonBody<CheckoutBody>,
) -> Result<Json<Value>, ApiError> {
    let session = state.engine.funding().checkout(&who.account_id, body.amount_usd).await?;
    Ok(Json(json!({ "url": session.url, "session_id": session.id })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AddBody {
    amount_usd: Option<f64>,
    activate_key_name: Option<String>,
}

async fn add(
    State(state): State<AppState>,
    Session(who): Session,
    JsonBody(body): JsonBody<AddBody>,
) -> Result<Json<Value>, ApiError> {
    let (money, activated) =
        state.engine.funding().top_up(&who.account_id, body.amount_usd, body.activate_key_name).await?;
    let activated_key = activated
        .map(|(view, secret)| json!({ "key": secret, "name": view.record.name, "prefix": view.record.prefix }));
    Ok(Json(json!({ "ok": true, "balance_usd": usd(money.balance_units()), "activated_key": activated_key })))
}

async fn activation(State(state): State<AppState>, Session(who): Session) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.engine.funding().activation(&who.account_id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    accepted: bool,
}

async fn accept(
    State(state): State<AppState>,
    Session(who): Session,
    JsonBody(body): JsonBody<AcceptBody>,
) -> Result<Json<Value>, ApiError> {
    if !body.accepted {
        return Err(ApiError::BadRequest("accepted must be true to accept the activation terms".into()));
    }
    let activation = state.engine.funding().accept_terms(&who.account_id).await?;
    Ok(Json(json!({ "ok": true, "activation": activation })))
}

async fn get_autopay(State(state): State<AppState>, Session(who): Session) -> Result<Json<Value>, ApiError> {
    let (enabled, amount) = state.engine.funding().auto_pay(&who.account_id)?;
    Ok(Json(json!({ "enabled": enabled, "amount_usd": amount })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutopayBody {
    enabled: Option<bool>,
    amount_usd: Option<f64>,
}

async fn put_autopay(
    State(state): State<AppState>,
    Session(who): Session,
    JsonBody(body): JsonBody<AutopayBody>,
) -> Result<Json<Value>, ApiError> {
    let (enabled, amount) = state.engine.funding().set_auto_pay(&who.account_id, body.enabled, body.amount_usd).await?;
    Ok(Json(json!({ "enabled": enabled, "amount_usd": amount })))
}

async fn get_card(State(state): State<AppState>, Session(who): Session) -> Result<Json<Value>, ApiError> {
    let card = state
        .engine
        .funding()
        .saved_card(&who.account_id)?
        .map(|c| json!({ "brand": c.brand, "last4": c.last4, "exp_month": c.exp_month, "exp_year": c.exp_year }));
    Ok(Json(json!({ "card": card })))
}

async fn delete_card(State(state): State<AppState>, Session(who): Session) -> Result<Json<Value>, ApiError> {
    state.engine.funding().remove_card(&who.account_id).await?;
    Ok(Json(json!({ "ok": true })))
}

async fn webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest("Missing Stripe-Signature header".into()))?;
    state.engine.funding().payment_webhook(&body, signature).await?;
    Ok(Json(json!({ "received": true })))
}
