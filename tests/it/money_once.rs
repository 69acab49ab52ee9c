//! Money moves exactly once: a payment is credited once whatever is retried or crashes, a
//! card charge whose answer is lost is resolved through its stored attempt (same idempotency
//! key, `payment_intent.succeeded`, the reconciler), and refunds and disputes take money back
//! once each. All against the fake Stripe.

use std::path::Path;

use serde_json::{json, Value};

use crate::{
    fakes_stripe::{sign_webhook, FakeStripe, PaidCheckout, TestCard, WEBHOOK_SECRET},
    harness::*,
};

fn stripe_options(stripe: &FakeStripe) -> Options {
    Options::default()
        .env("TOKAROO_BILLING_PROCESSOR", "stripe")
        .env("STRIPE_SECRET_KEY", &stripe.secret_key)
        .env("TOKAROO_STRIPE_BASE_URL", &stripe.base_url)
        .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("TOKAROO_PAYMENTS_RECONCILE_SECS", "0")
}

/// Posts a webhook as Stripe would; `None` when the connection broke (the server died).
async fn try_deliver(gw: &Gateway, event: &[u8]) -> Option<Resp> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let request = gw
        .client()
        .post(gw.url("/v1/billing/webhook"))
        .header("stripe-signature", sign_webhook(event, WEBHOOK_SECRET, now))
        .body(event.to_vec());
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            Some(Resp { status, headers: Default::default(), body, text })
        }
        Err(_) => None,
    }
}

async fn deliver(gw: &Gateway, event: &[u8]) -> Resp {
    try_deliver(gw, event).await.expect("the server answers the webhook")
}

/// An account with a checkout of $25 paid on the fake (not yet reported to the server).
async fn paid_checkout(gw: &Gateway, stripe: &FakeStripe) -> (String, String, String, PaidCheckout) {
    let (account_id, session) = gw.create_account("payer").await;
    let r = gw.post("/v1/billing/checkout", &session, json!({"amount_usd": 25})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let checkout_id = r.body["session_id"].as_str().unwrap().to_owned();
    let paid = stripe.complete_checkout(&checkout_id, TestCard::VISA);
    (account_id, session, checkout_id, paid)
}

/// As [`paid_checkout`], reported by webhook: $25 credited and the card saved.
async fn funded(gw: &Gateway, stripe: &FakeStripe) -> (String, String, PaidCheckout) {
    let (account_id, session, checkout_id, paid) = paid_checkout(gw, stripe).await;
    assert_eq!(deliver(gw, &stripe.checkout_completed_event(&checkout_id)).await.status, 200);
    assert_eq!(balance(gw, &session).await, 25.0);
    (account_id, session, paid)
}

async fn balance(gw: &Gateway, session: &str) -> f64 {
    gw.get("/v1/balance", session).await.body["balance_usd"].as_f64().unwrap()
}

async fn credits(gw: &Gateway, account_id: &str) -> Vec<Value> {
    let r = gw.get(&format!("/admin/accounts/{account_id}/credits"), ADMIN_TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

async fn attempts(gw: &Gateway, account_id: &str) -> Vec<Value> {
    let r = gw.get(&format!("/admin/accounts/{account_id}/payment_attempts"), ADMIN_TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

async fn assert_no_drift(gw: &Gateway) {
    let r = gw.post("/admin/ledger/reconcile", ADMIN_TOKEN, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["ok"], true, "balance = credits - charges: {}", r.text);
}

fn top_up_intents(stripe: &FakeStripe) -> Vec<Value> {
    stripe.payment_intents().into_iter().filter(|i| !i["metadata"]["attempt_id"].is_null()).collect()
}

async fn fault(gw: &Gateway, body: Value) {
    let r = gw.post("/admin/debug/payments", ADMIN_TOKEN, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn a_crash_between_the_credit_and_the_profile_save_credits_once_and_completes_the_profile() {
    let stripe = FakeStripe::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), stripe_options(&stripe)).await;
    let (account_id, session, checkout_id, _) = paid_checkout(&gw, &stripe).await;
    let event = stripe.checkout_completed_event(&checkout_id);

    fault(&gw, json!({"crash_after_credit": true})).await;
    let answer = try_deliver(&gw, &event).await;
    assert!(answer.is_none(), "the process died mid-webhook: {:?}", answer.map(|r| r.text));
    drop(gw);

    // Stripe delivers the event again to the restarted server.
    let gw = restart(dir.path(), &stripe).await;
    assert_eq!(deliver(&gw, &event).await.status, 200);
    assert_eq!(balance(&gw, &session).await, 25.0, "credited once, not twice");
    let a = gw.get("/v1/billing/activation", &session).await.body;
    assert_eq!((a["funded"].clone(), a["has_saved_card"].clone()), (json!(true), json!(true)), "{a}");
    assert_eq!(credits(&gw, &account_id).await.len(), 1);
    assert_eq!(deliver(&gw, &event).await.status, 200);
    assert_eq!(balance(&gw, &session).await, 25.0);
    assert_no_drift(&gw).await;
}

async fn restart(dir: &Path, stripe: &FakeStripe) -> Gateway {
    Gateway::start_in(dir, stripe_options(stripe)).await
}

#[tokio::test]
async fn a_webhook_retried_after_a_ledger_timeout_or_a_full_disk_credits_once() {
    let stripe = FakeStripe::start().await;
    let gw = Gateway::start_with(stripe_options(&stripe).env("TOKAROO_CREDIT_TIMEOUT_MS", "300")).await;
    let (account_id, session, checkout_id, _) = paid_checkout(&gw, &stripe).await;
    let event = stripe.checkout_completed_event(&checkout_id);

    // The log cannot be written: the webhook fails and nothing is credited, not even in memory.
    fault(&gw, json!({"fail_ledger_appends": 1})).await;
    let r = deliver(&gw, &event).await;
    assert!(r.status.is_server_error(), "{} {}", r.status, r.text);
    assert_eq!(balance(&gw, &session).await, 0.0, "no phantom credit");

    // The ledger records the credit but its answer comes too late: the webhook fails (Stripe
    // retries it) and the client does not send the credit again.
    fault(&gw, json!({"delay_credit_replies": 1, "delay_ms": 1500})).await;
    let r = deliver(&gw, &event).await;
    assert_eq!(r.status, 503, "{}", r.text);
    let r = deliver(&gw, &event).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(balance(&gw, &session).await, 25.0, "credited once");
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert_eq!(balance(&gw, &session).await, 25.0, "the late answer changes nothing");
    assert_eq!(gw.get("/v1/billing/activation", &session).await.body["funded"], true);
    assert_eq!(credits(&gw, &account_id).await.len(), 1);
    assert_no_drift(&gw).await;
}

#[tokio::test]
async fn a_top_up_whose_answer_is_lost_is_retried_with_its_key_and_charged_and_credited_once() {
    let stripe = FakeStripe::start().await;
    let gw = Gateway::start_with(stripe_options(&stripe)).await;
    let (account_id, session, _) = funded(&gw, &stripe).await;

    // One answer lost: the server retries with the same key and gets Stripe's replay.
    stripe.lose_responses("/v1/payment_intents", 1);
    let r = gw.post("/v1/billing/add", &session, json!({"amount_usd": 10})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(balance(&gw, &session).await, 35.0);
    let posts: Vec<_> = stripe
        .requests()
        .into_iter()
        .filter(|r| (r.method.as_str(), r.path.as_str()) == ("POST", "/v1/payment_intents"))
        .collect();
    assert_eq!(posts.len(), 2, "the first try and its retry");
    assert!(posts[0].idempotency_key.is_some() && posts[0].idempotency_key == posts[1].idempotency_key);
    assert_eq!(top_up_intents(&stripe).len(), 1, "one PaymentIntent");

    // Every answer lost: the account is told the outcome is unknown; asking again for the
    // same amount is the same attempt, under the same key.
    stripe.lose_responses("/v1/payment_intents", 3);
    let r = gw.post("/v1/billing/add", &session, json!({"amount_usd": 10})).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(balance(&gw, &session).await, 35.0);
    let unknown = attempts(&gw, &account_id).await[0].clone();
    assert_eq!(unknown["status"], "unknown", "{unknown}");
    let r = gw.post("/v1/billing/add", &session, json!({"amount_usd": 10})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(balance(&gw, &session).await, 45.0);
    assert_eq!(top_up_intents(&stripe).len(), 2, "Stripe charged twice for two top-ups, not three");
    let listed = attempts(&gw, &account_id).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["id"], unknown["id"]);
    assert_eq!(listed[0]["status"], "succeeded");
    assert_eq!(listed[0]["idempotency_key"], unknown["idempotency_key"]);
    assert_no_drift(&gw).await;
}

#[tokio::test]
async fn payment_intent_succeeded_credits_a_top_up_whose_answers_were_lost_once() {
    let stripe = FakeStripe::start().await;
    let gw = Gateway::start_with(stripe_options(&stripe)).await;
    let (account_id, session, _) = funded(&gw, &stripe).await;

    stripe.lose_responses("/v1/payment_intents", 3);
    let r = gw.post("/v1/billing/add", &session, json!({"amount_usd": 10})).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(balance(&gw, &session).await, 25.0);
    let intents = top_up_intents(&stripe);
    assert_eq!(intents.len(), 1, "Stripe did charge");
    let event = stripe.payment_intent_succeeded_event(intents[0]["id"].as_str().unwrap());
    for _ in 0..2 {
        assert_eq!(deliver(&gw, &event).await.status, 200);
    }
    assert_eq!(balance(&gw, &session).await, 35.0, "credited once");
    let attempt = attempts(&gw, &account_id).await[0].clone();
    assert_eq!(
        (attempt["status"].as_str(), attempt["payment_intent_id"].as_str()),
        (Some("succeeded"), intents[0]["id"].as_str())
    );
    // Checkout payments also produce this event; they are credited through their session.
    let other = stripe.payment_intents().into_iter().find(|i| i["metadata"]["attempt_id"].is_null()).unwrap();
    assert_eq!(deliver(&gw, &stripe.payment_intent_succeeded_event(other["id"].as_str().unwrap())).await.status, 200);
    assert_eq!(balance(&gw, &session).await, 35.0);
    assert_no_drift(&gw).await;
}

#[tokio::test]
async fn the_periodic_check_credits_a_charge_whose_answer_was_lost_once() {
    let stripe = FakeStripe::start().await;
    let gw = Gateway::start_with(stripe_options(&stripe).env("TOKAROO_PAYMENTS_RECONCILE_SECS", "1")).await;
    let (account_id, session, _) = funded(&gw, &stripe).await;

    stripe.lose_responses("/v1/payment_intents", 3);
    let r = gw.post("/v1/billing/add", &session, json!({"amount_usd": 10})).await;
    assert_eq!(r.status, 503, "{}", r.text);
    // No webhook: the reconciler finds the PaymentIntent by its attempt.
    eventually("the reconciler's credit", || async { (balance(&gw, &session).await == 35.0).then_some(()) }).await;
    assert_eq!(attempts(&gw, &account_id).await[0]["status"], "succeeded");
    let listed = stripe
        .requests()
        .into_iter()
        .filter(|r| (r.method.as_str(), r.path.as_str()) == ("GET", "/v1/payment_intents"))
        .count();
    assert!(listed >= 1);
    // On demand, and again: nothing more to credit.
    let r = gw.post("/admin/billing/reconcile", ADMIN_TOKEN, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["credited"], 0, "{}", r.text);
    assert!(r.body["payments_seen"].as_u64().unwrap() >= 2, "{}", r.text);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(balance(&gw, &session).await, 35.0);
    assert_eq!(credits(&gw, &account_id).await.len(), 2);
    assert_no_drift(&gw).await;
}

#[tokio::test]
async fn refunds_and_disputes_take_money_back_once_with_their_reason() {
    let stripe = FakeStripe::start().await;
    let gw = Gateway::start_with(stripe_options(&stripe)).await;
    let (account_id, session, checkout) = funded(&gw, &stripe).await;
    let r = gw.post("/v1/billing/add", &session, json!({"amount_usd": 10})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let top_up = top_up_intents(&stripe)[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(balance(&gw, &session).await, 35.0);

    // A partial refund, delivered twice; then a second one (Stripe sends the running total).
    let first = stripe.refund(&top_up, 400);
    for _ in 0..2 {
        assert_eq!(deliver(&gw, &first).await.status, 200);
    }
    assert_eq!(balance(&gw, &session).await, 31.0);
    let second = stripe.refund(&top_up, 600);
    assert_eq!(deliver(&gw, &second).await.status, 200);
    assert_eq!(deliver(&gw, &first).await.status, 200, "an old total arriving late takes nothing");
    assert_eq!(balance(&gw, &session).await, 25.0);

    // The checkout's payment is disputed: its $25 is withdrawn once.
    let dispute = stripe.dispute(&checkout.payment_intent_id, "fraudulent");
    for _ in 0..2 {
        assert_eq!(deliver(&gw, &dispute).await.status, 200);
    }
    assert_eq!(balance(&gw, &session).await, 0.0);

    let listed = credits(&gw, &account_id).await;
    let adjustments: Vec<(String, f64)> = listed
        .iter()
        .filter(|c| c["kind"] == "adjustment")
        .map(|c| (c["source"].as_str().unwrap().to_owned(), c["amount_usd"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        adjustments,
        vec![("refund".into(), -4.0), ("refund".into(), -6.0), ("dispute".into(), -25.0)],
        "{listed:?}"
    );
    let dispute_row = listed.iter().find(|c| c["source"] == "dispute").unwrap();
    assert_eq!(dispute_row["reference"], checkout.payment_intent_id.as_str());
    assert!(dispute_row["note"].as_str().unwrap().contains("fraudulent"), "{dispute_row}");
    assert_no_drift(&gw).await;
}

/// A refund reported before its payment was credited here (the top-up's answers were lost)
/// is kept, and taken back when the payment is credited: the customer never keeps both.
#[tokio::test]
async fn a_refund_that_comes_before_its_lost_top_up_is_credited_is_taken_back_after() {
    let stripe = FakeStripe::start().await;
    let gw = Gateway::start_with(stripe_options(&stripe)).await;
    let (_, session, _) = funded(&gw, &stripe).await;
    stripe.lose_responses("/v1/payment_intents", 3);
    let r = gw.post("/v1/billing/add", &session, json!({"amount_usd": 10})).await;
    assert_eq!(r.status, 503, "{}", r.text);
    let top_up = top_up_intents(&stripe)[0]["id"].as_str().unwrap().to_owned();
    // Refunded in full before anything credited it.
    assert_eq!(deliver(&gw, &stripe.refund(&top_up, 1000)).await.status, 200);
    assert_eq!(balance(&gw, &session).await, 25.0);
    // Now the reconciler credits the payment, and the refund follows it.
    let r = gw.post("/admin/billing/reconcile", ADMIN_TOKEN, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["credited"], 1, "{}", r.text);
    assert_eq!(balance(&gw, &session).await, 25.0, "credited $10 and refunded $10");
    // A retried refund event changes nothing.
    assert_eq!(deliver(&gw, &stripe.refund(&top_up, 0)).await.status, 200);
    assert_eq!(balance(&gw, &session).await, 25.0);
    assert_no_drift(&gw).await;
}
