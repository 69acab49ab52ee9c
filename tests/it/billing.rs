//! Balance & billing routes end to end: the manual processor, and Stripe (against the fake)
//! through the whole first-key activation flow, top-ups, declines, auto pay and the card.

use serde_json::json;

use crate::{
    fakes_stripe::{sign_webhook, FakeStripe, TestCard, WEBHOOK_SECRET},
    harness::*,
};

#[tokio::test]
async fn the_manual_processor_refuses_card_routes_clearly_and_operator_accounts_skip_activation() {
    let gw = Gateway::start().await;
    let (_, session) = gw.create_account("manual-co").await;
    for (method, path) in [
        ("POST", "/v1/billing/checkout"),
        ("POST", "/v1/billing/add"),
        ("GET", "/v1/billing/card"),
        ("DELETE", "/v1/billing/card"),
    ] {
        let body = (method == "POST").then(|| json!({"amount_usd": 25}));
        let r = gw.request(HttpMethod::from_bytes(method.as_bytes()).unwrap(), path, Some(&session), body).await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text);
        assert!(r.body["message"].as_str().unwrap().contains("tokaroo credits add"), "{}", r.text);
    }
    let a = gw.get("/v1/billing/activation", &session).await;
    assert_eq!(a.status, 200, "{}", a.text);
    for field in [
        "key_count",
        "has_api_key",
        "requires_first_key_activation",
        "balance_usd",
        "funded",
        "has_saved_card",
        "auto_pay_enabled",
        "auto_pay_amount_usd",
        "activation_terms_accepted",
        "activation_terms_accepted_at",
        "activation_terms_version",
        "missing_requirements",
        "ready_for_activation_payment",
        "ready_for_first_key",
        "payments_url",
        "terms_url",
    ] {
        assert!(a.body.get(field).is_some(), "{field} in {}", a.text);
    }
    assert_eq!(a.body["requires_first_key_activation"], false, "operator-created accounts skip the checklist");
    assert_eq!(gw.post("/v1/keys", &session, json!({"name": "k"})).await.status, 200);
    // Billing routes are for sessions.
    let key = gw.first_key.clone().unwrap();
    assert_eq!(gw.get("/v1/billing/activation", &key).await.status, 403);
    assert_eq!(gw.post("/v1/billing/webhook", "x", json!({})).await.status, 400, "a webhook needs its signature");
}

#[tokio::test]
async fn a_self_serve_account_activates_through_stripe_then_tops_up_and_auto_pays() {
    let stripe = FakeStripe::start().await;
    let gw = Gateway::start_with(
        Options::default()
            .env("TOKAROO_BILLING_PROCESSOR", "stripe")
            .env("STRIPE_SECRET_KEY", &stripe.secret_key)
            .env("TOKAROO_STRIPE_BASE_URL", &stripe.base_url)
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("TOKAROO_AUTO_PAY_THRESHOLD_USD", "100"),
    )
    .await;
    let r = gw.post("/admin/accounts", ADMIN_TOKEN, json!({"name": "selfie", "self_serve": true})).await;
    let session = r.body["session_token"].as_str().unwrap().to_owned();

    // The first key waits for the whole checklist.
    let r = gw.post("/v1/keys", &session, json!({"name": "first"})).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["error"], "billing_required");
    assert_eq!(r.body["missing_requirements"], json!(["payment", "saved_card", "auto_pay", "terms_acceptance"]));
    assert!(r.body["payment_url"].as_str().unwrap().starts_with("http"));

    assert_eq!(gw.post("/v1/billing/activation/accept", &session, json!({"accepted": false})).await.status, 400);
    let r = gw.post("/v1/billing/activation/accept", &session, json!({"accepted": true})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["activation"]["activation_terms_accepted"], true);
    assert_eq!(
        gw.put_json("/v1/billing/autopay", &session, json!({"amount_usd": 1})).await.status,
        400,
        "under the minimum"
    );
    let r = gw.put_json("/v1/billing/autopay", &session, json!({"enabled": true, "amount_usd": 20})).await;
    assert_eq!(r.body, json!({"enabled": true, "amount_usd": 20.0}));
    assert_eq!(gw.get("/v1/billing/activation", &session).await.body["ready_for_activation_payment"], true);

    for bad in [json!({"amount_usd": 1}), json!({"amount_usd": "lots"}), json!({})] {
        assert_eq!(gw.post("/v1/billing/checkout", &session, bad.clone()).await.status, 400, "{bad}");
    }
    let r = gw.post("/v1/billing/checkout", &session, json!({"amount_usd": 25})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["url"].as_str().unwrap().starts_with("http"));
    let session_id = r.body["session_id"].as_str().unwrap().to_owned();
    stripe.complete_checkout(&session_id, TestCard::VISA);

    // Stripe reports the payment by webhook; a forged one is refused.
    let event = stripe.checkout_completed_event(&session_id);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let forged = gw
        .raw(
            gw.client()
                .post(gw.url("/v1/billing/webhook"))
                .header("stripe-signature", sign_webhook(&event, "whsec_wrong", now))
                .body(event.clone()),
        )
        .await;
    assert_eq!(forged.status, 400, "{}", forged.text);
    for _ in 0..2 {
        // Delivered twice, credited once.
        let r = gw
            .raw(
                gw.client()
                    .post(gw.url("/v1/billing/webhook"))
                    .header("stripe-signature", sign_webhook(&event, WEBHOOK_SECRET, now))
                    .body(event.clone()),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(gw.get("/v1/balance", &session).await.body["balance_usd"], 25.0);
    let card = gw.get("/v1/billing/card", &session).await;
    assert_eq!(card.body["card"], json!({"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034}));
    let a = gw.get("/v1/billing/activation", &session).await.body.clone();
    assert_eq!(a["missing_requirements"], json!([]));
    assert_eq!(a["ready_for_first_key"], true);

    // The first top-up also hands out the first key.
    let r = gw.post("/v1/billing/add", &session, json!({"amount_usd": 10, "activate_key_name": "prod"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["balance_usd"], 35.0);
    let key = r.body["activated_key"]["key"].as_str().expect("the first key").to_owned();
    assert_eq!(r.body["activated_key"]["name"], "prod");
    assert!(key.starts_with("tok_"));
    let r = gw.post("/v1/billing/add", &session, json!({"amount_usd": 10})).await;
    assert_eq!(r.body["activated_key"], json!(null), "only the first activation returns a key");

    // A decline is a 402 and changes nothing.
    stripe.decline_next_charge("insufficient_funds");
    let r = gw.post("/v1/billing/add", &session, json!({"amount_usd": 10})).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["error"], "payment_failed");
    assert_eq!(gw.get("/v1/balance", &session).await.body["balance_usd"], 45.0);

    // A checkout paid without a webhook is found when the account looks.
    let r = gw.post("/v1/billing/checkout", &session, json!({"amount_usd": 5})).await;
    stripe.complete_checkout(r.body["session_id"].as_str().unwrap(), TestCard::VISA);
    gw.get("/v1/billing/activation", &session).await;
    assert_eq!(gw.get("/v1/balance", &session).await.body["balance_usd"], 50.0);

    // Auto pay: the balance is under the (test) threshold of $100, so spending tops it up.
    let charges_before = stripe.charges().len();
    let r = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    eventually("an auto pay charge", || async { (stripe.charges().len() > charges_before).then_some(()) }).await;
    let balance = eventually("the auto pay credit", || async {
        let b = gw.get("/v1/balance", &session).await.body["balance_usd"].as_f64()?;
        (b > 60.0).then_some(b)
    })
    .await;
    assert!(balance < 70.0, "one top-up of $20: {balance}");

    // Removing the card detaches it; top-ups then need a card.
    assert_eq!(gw.delete("/v1/billing/card", &session).await.status, 200);
    assert_eq!(gw.get("/v1/billing/card", &session).await.body["card"], json!(null));
    let r = gw.post("/v1/billing/add", &session, json!({"amount_usd": 10})).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["error"], "no_card");
    assert!(!gw.log().contains(&stripe.secret_key), "the Stripe key is never logged");
}
