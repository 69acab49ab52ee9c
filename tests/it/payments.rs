//! The payment processors against the fake Stripe: customers, checkout, off-session charges
//! with idempotency, declines, saved cards, webhook signatures, and the manual processor.

use std::sync::Arc;

use serde_json::Value;
use tokaroo_actors::money::payments::{
    self, CardInfo, ChargeRequest, CheckoutRequest, CompletedCheckout, PaymentError, PaymentProcessor, PaymentSettings,
    ProcessorPayment, WebhookEvent,
};
use tokaroo_actors::routing::client::client;

use crate::fakes_stripe::{sign_webhook, FakeStripe, PaidCheckout, TestCard, WEBHOOK_SECRET};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn checkout(customer_id: &str, amount_cents: i64) -> CheckoutRequest {
    CheckoutRequest {
        customer_id: customer_id.into(),
        account_id: "acc_1".into(),
        amount_cents,
        success_url: "https://gw.example/billing?paid={CHECKOUT_SESSION_ID}".into(),
        cancel_url: "https://gw.example/billing".into(),
    }
}

fn charge(customer_id: &str, payment_method_id: &str, amount_cents: i64, key: &str) -> ChargeRequest {
    ChargeRequest {
        customer_id: customer_id.into(),
        payment_method_id: payment_method_id.into(),
        amount_cents,
        idempotency_key: key.into(),
        account_id: "acc_1".into(),
        attempt_id: format!("att-{key}"),
        kind: "top_up".into(),
    }
}

/// A customer who paid a first checkout with `card`, which is now saved for off-session use.
async fn customer_with_card(
    stripe: &FakeStripe,
    payments: &Arc<dyn PaymentProcessor>,
    card: TestCard,
) -> (String, String, PaidCheckout) {
    let customer = payments.create_customer("acc_1", "Ada Lovelace").await.unwrap();
    let session = payments.create_checkout(checkout(&customer, 2500)).await.unwrap();
    let paid = stripe.complete_checkout(&session.id, card);
    (customer, session.id, paid)
}

#[tokio::test]
async fn customers_carry_the_account_and_a_retried_creation_finds_the_same_one() {
    let stripe = FakeStripe::start().await;
    let payments = stripe.processor();
    assert_eq!(payments.kind(), "stripe");

    let id = payments.create_customer("acc_1", "Ada Lovelace").await.unwrap();
    let customer = stripe.customer(&id).expect("created on the fake");
    assert_eq!(customer["name"], "Ada Lovelace");
    assert_eq!(customer["metadata"]["account_id"], "acc_1");

    assert_eq!(payments.create_customer("acc_1", "Ada Lovelace").await.unwrap(), id);
    let other = payments.create_customer("acc_2", "Grace Hopper").await.unwrap();
    assert_ne!(other, id);
    assert_eq!(stripe.customers().len(), 2);
    let requests = stripe.requests();
    assert!(requests.iter().all(|r| r.stripe_version.as_deref() == Some("2024-06-20")), "{requests:?}");
    assert!(requests.iter().all(|r| (r.method.as_str(), r.path.as_str()) == ("POST", "/v1/customers")), "{requests:?}");
}

#[tokio::test]
async fn a_paid_checkout_reports_its_amount_payment_and_saved_card() {
    let stripe = FakeStripe::start().await;
    let payments = stripe.processor();
    let customer = payments.create_customer("acc_1", "Ada Lovelace").await.unwrap();

    let session = payments.create_checkout(checkout(&customer, 2500)).await.unwrap();
    assert!(session.id.starts_with("cs_test_") && session.url.contains(&session.id), "{session:?}");
    let sent = stripe.requests().pop().unwrap().params;
    assert_eq!(sent["line_items"][0]["price_data"]["unit_amount"], "2500");
    assert_eq!(sent["payment_intent_data"]["setup_future_usage"], "off_session");
    assert_eq!(sent["success_url"], "https://gw.example/billing?paid={CHECKOUT_SESSION_ID}");

    assert_eq!(payments.checkout_result(&session.id).await.unwrap(), None, "still open");

    let paid = stripe.complete_checkout(&session.id, TestCard::VISA);
    let result = payments.checkout_result(&session.id).await.unwrap();
    let expand = stripe.requests().pop().unwrap().params["expand"].clone();
    assert_eq!(expand, serde_json::json!(["payment_intent.payment_method"]));
    assert_eq!(
        result,
        Some(CompletedCheckout {
            session_id: session.id.clone(),
            payment_id: paid.payment_intent_id,
            amount_cents: 2500,
            account_id: "acc_1".into(),
            payment_method_id: Some(paid.payment_method_id.clone()),
            card: Some(CardInfo { brand: "visa".into(), last4: "4242".into(), exp_month: 12, exp_year: 2034 }),
        })
    );
    // Saved for off-session use: attached to the customer.
    assert_eq!(stripe.payment_method(&paid.payment_method_id).unwrap()["customer"], customer.as_str());
}

#[tokio::test]
async fn stripe_refusals_of_a_checkout_reach_the_caller_with_the_param() {
    let stripe = FakeStripe::start().await;
    let payments = stripe.processor();
    let customer = payments.create_customer("acc_1", "Ada Lovelace").await.unwrap();

    let err = payments.create_checkout(checkout(&customer, 10)).await.unwrap_err();
    assert!(matches!(&err, PaymentError::InvalidRequest(m) if m.contains("at least $0.50")), "{err:?}");
    let err = payments
        .create_checkout(CheckoutRequest { success_url: "gw.example/billing".into(), ..checkout(&customer, 500) })
        .await
        .unwrap_err();
    assert!(matches!(&err, PaymentError::InvalidRequest(m) if m.contains("success_url")), "{err:?}");
    let err = payments.create_checkout(checkout("cus_nobody", 500)).await.unwrap_err();
    assert!(matches!(&err, PaymentError::InvalidRequest(m) if m.contains("cus_nobody")), "{err:?}");
    let err = payments.checkout_result("cs_test_unknown").await.unwrap_err();
    assert_eq!(err.code(), "invalid_payment_request", "{err:?}");
}

#[tokio::test]
async fn an_off_session_charge_with_a_repeated_idempotency_key_charges_once() {
    let stripe = FakeStripe::start().await;
    let payments = stripe.processor();
    let (customer, _, paid) = customer_with_card(&stripe, &payments, TestCard::VISA).await;
    let card = paid.payment_method_id;

    let first = payments.charge_saved_card(charge(&customer, &card, 2000, "topup-1")).await.unwrap();
    assert_eq!(first.amount_cents, 2000);
    let retried = payments.charge_saved_card(charge(&customer, &card, 2000, "topup-1")).await.unwrap();
    assert_eq!(retried, first);
    let charges = stripe.charges();
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0]["id"], first.payment_id.as_str());
    assert_eq!(charges[0]["metadata"]["account_id"], "acc_1");
    let last = stripe.requests().pop().unwrap();
    assert_eq!(last.idempotency_key.as_deref(), Some("topup-1"));
    assert_eq!((last.params["off_session"].as_str(), last.params["confirm"].as_str()), (Some("true"), Some("true")));

    // Reusing a key for a different charge is refused rather than charged or replayed.
    let err = payments.charge_saved_card(charge(&customer, &card, 3000, "topup-1")).await.unwrap_err();
    assert!(matches!(&err, PaymentError::InvalidRequest(m) if m.contains("idempotent")), "{err:?}");

    let second = payments.charge_saved_card(charge(&customer, &card, 3000, "topup-2")).await.unwrap();
    assert_ne!(second.payment_id, first.payment_id);
    assert_eq!(stripe.charges().len(), 2);
}

/// The answer to a charge is lost after Stripe charged: a retry with the same idempotency key
/// gets the same PaymentIntent (a replay), never a second charge; the PaymentIntent carries
/// the attempt in its metadata and is listed for the customer.
#[tokio::test]
async fn a_lost_charge_answer_is_replayed_under_its_key_and_listed_with_its_attempt() {
    let stripe = FakeStripe::start().await;
    let payments = stripe.processor();
    let (customer, _, paid) = customer_with_card(&stripe, &payments, TestCard::VISA).await;
    let card = paid.payment_method_id;
    let since = now() - 60;

    stripe.lose_responses("/v1/payment_intents", 1);
    let lost = payments.charge_saved_card(charge(&customer, &card, 2000, "topup-lost")).await.unwrap_err();
    assert_eq!(lost.code(), "payment_processor_error", "{lost:?}");
    assert_eq!(stripe.charges().len(), 1, "Stripe charged although the answer was lost");
    let retried = payments.charge_saved_card(charge(&customer, &card, 2000, "topup-lost")).await.unwrap();
    assert_eq!(retried.payment_id, stripe.charges()[0]["id"].as_str().unwrap());
    assert_eq!(stripe.charges().len(), 1, "the retry is a replay");

    let listed = payments.recent_payments(&customer, since).await.unwrap();
    assert_eq!(listed.len(), 2, "the checkout's payment and the top-up: {listed:?}");
    assert_eq!(
        listed[0],
        ProcessorPayment {
            payment_id: retried.payment_id.clone(),
            amount_cents: 2000,
            succeeded: true,
            account_id: Some("acc_1".into()),
            attempt_id: Some("att-topup-lost".into()),
        }
    );
    assert_eq!(listed[1].attempt_id, None, "checkout payments carry no attempt");
    let request = stripe.requests().pop().unwrap();
    assert_eq!((request.method.as_str(), request.path.as_str()), ("GET", "/v1/payment_intents"));
    assert_eq!(request.params["customer"], customer.as_str());
    assert_eq!(request.params["created"]["gte"], since.to_string().as_str());
    assert!(payments.recent_payments(&customer, now() + 60).await.unwrap().is_empty());
}

#[tokio::test]
async fn payment_refund_and_dispute_webhooks_read_as_events() {
    let stripe = FakeStripe::start().await;
    let payments = stripe.processor();
    let (customer, _, paid) = customer_with_card(&stripe, &payments, TestCard::VISA).await;
    let charged = payments.charge_saved_card(charge(&customer, &paid.payment_method_id, 1500, "k1")).await.unwrap();
    let now = now();
    let parse = |payload: Vec<u8>| {
        payments.parse_webhook(&payload, &sign_webhook(&payload, WEBHOOK_SECRET, now), now).unwrap().unwrap()
    };
    let WebhookEvent::PaymentSucceeded(p) = parse(stripe.payment_intent_succeeded_event(&charged.payment_id)) else {
        panic!("a payment")
    };
    assert_eq!(
        (p.payment_id.as_str(), p.amount_cents, p.attempt_id.as_deref()),
        (charged.payment_id.as_str(), 1500, Some("att-k1"))
    );
    parse(stripe.refund(&charged.payment_id, 500));
    let WebhookEvent::Refunded { payment_id, total_refunded_cents, .. } =
        parse(stripe.refund(&charged.payment_id, 300))
    else {
        panic!("a refund")
    };
    assert_eq!((payment_id.as_str(), total_refunded_cents), (charged.payment_id.as_str(), 800), "a running total");
    let WebhookEvent::Disputed { payment_id, amount_cents, reason, .. } =
        parse(stripe.dispute(&charged.payment_id, "fraudulent"))
    else {
        panic!("a dispute")
    };
    assert_eq!((payment_id.as_str(), amount_cents, reason.as_str()), (charged.payment_id.as_str(), 1500, "fraudulent"));
}

#[tokio::test]
async fn a_declined_charge_is_card_declined_with_stripes_codes() {
    let stripe = FakeStripe::start().await;
    let payments = stripe.processor();
    let (customer, _, paid) = customer_with_card(&stripe, &payments, TestCard::VISA).await;
    let card = paid.payment_method_id;

    stripe.decline_next_charge("insufficient_funds");
    let declined = payments.charge_saved_card(charge(&customer, &card, 2000, "auto-1")).await.unwrap_err();
    assert_eq!(
        declined,
        PaymentError::CardDeclined {
            code: "card_declined".into(),
            decline_code: Some("insufficient_funds".into()),
            message: "Your card has insufficient funds.".into(),
        }
    );
    assert_eq!(declined.code(), "card_declined");
    // Stripe keeps the decline under its key: a retry reports it again and charges nothing.
    assert_eq!(payments.charge_saved_card(charge(&customer, &card, 2000, "auto-1")).await.unwrap_err(), declined);
    assert!(stripe.charges().is_empty());

    payments.charge_saved_card(charge(&customer, &card, 2000, "auto-2")).await.unwrap();
    assert_eq!(stripe.charges().len(), 1);
}

#[tokio::test]
async fn a_wrong_secret_key_or_an_unreachable_stripe_is_a_clear_error() {
    let stripe = FakeStripe::start().await;
    let wrong = "sk_test_wrongKEYwrongKEY9876";
    let settings = PaymentSettings { stripe_secret_key: Some(wrong.into()), ..stripe.settings() };
    let payments = payments::processor(&settings, client()).unwrap();

    let err = payments.create_customer("acc_1", "Ada").await.unwrap_err();
    assert_eq!(err.code(), "payments_misconfigured");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("stripe_secret_key"), "{shown}");
    assert!(!shown.contains(wrong) && !shown.contains("9876") && !shown.contains("sk_"), "{shown}");
    assert!(stripe.customers().is_empty());

    let gone = PaymentSettings { stripe_base_url: "http://127.0.0.1:1".into(), ..stripe.settings() };
    let err = payments::processor(&gone, client()).unwrap().create_customer("acc_1", "Ada").await.unwrap_err();
    assert_eq!(err.code(), "payment_processor_error", "{err:?}");
    assert!(!err.to_string().contains(&stripe.secret_key), "{err}");
}

#[tokio::test]
async fn a_saved_card_is_shown_and_detached() {
    let stripe = FakeStripe::start().await;
    let payments = stripe.processor();
    let (customer, _, paid) = customer_with_card(&stripe, &payments, TestCard::MASTERCARD).await;
    let card = paid.payment_method_id;

    assert_eq!(
        payments.card_details(&card).await.unwrap(),
        CardInfo { brand: "mastercard".into(), last4: "4444".into(), exp_month: 3, exp_year: 2031 }
    );
    payments.detach_card(&card).await.unwrap();
    let detach = stripe.requests().pop().unwrap();
    assert_eq!((detach.method.as_str(), detach.path), ("POST", format!("/v1/payment_methods/{card}/detach")));
    assert_eq!(stripe.payment_method(&card).unwrap()["customer"], Value::Null);
    let err = payments.charge_saved_card(charge(&customer, &card, 1000, "after-detach")).await.unwrap_err();
    assert_eq!(err.code(), "invalid_payment_request", "{err:?}");
    assert!(stripe.charges().is_empty());

    assert_eq!(payments.card_details("pm_missing").await.unwrap_err(), PaymentError::NoCard);
    assert_eq!(
        payments.charge_saved_card(charge(&customer, "pm_missing", 1000, "k")).await.unwrap_err(),
        PaymentError::NoCard
    );
    let before = stripe.requests().len();
    assert_eq!(payments.detach_card("../v1/customers").await.unwrap_err().code(), "invalid_payment_request");
    assert_eq!(stripe.requests().len(), before, "a malformed id never reaches Stripe");
}

#[tokio::test]
async fn webhooks_are_accepted_only_with_a_valid_recent_signature() {
    let stripe = FakeStripe::start().await;
    let payments = stripe.processor();
    let (_, session_id, paid) = customer_with_card(&stripe, &payments, TestCard::VISA).await;
    let payload = stripe.checkout_completed_event(&session_id);
    let now = now();

    let completed = payments.parse_webhook(&payload, &sign_webhook(&payload, WEBHOOK_SECRET, now), now).unwrap();
    assert_eq!(
        completed,
        Some(WebhookEvent::CheckoutCompleted(CompletedCheckout {
            session_id: session_id.clone(),
            payment_id: paid.payment_intent_id,
            amount_cents: 2500,
            account_id: "acc_1".into(),
            payment_method_id: None,
            card: None,
        }))
    );

    let tampered = String::from_utf8(payload.clone()).unwrap().replace("2500", "250000");
    assert_ne!(tampered.as_bytes(), payload.as_slice());
    let header = sign_webhook(&payload, WEBHOOK_SECRET, now);
    assert_eq!(payments.parse_webhook(tampered.as_bytes(), &header, now), Err(PaymentError::BadSignature));
    let stale = sign_webhook(&payload, WEBHOOK_SECRET, now - 301);
    assert_eq!(payments.parse_webhook(&payload, &stale, now), Err(PaymentError::BadSignature));
    let forged = sign_webhook(&payload, "whsec_someone_else", now);
    assert_eq!(payments.parse_webhook(&payload, &forged, now), Err(PaymentError::BadSignature));
    assert_eq!(payments.parse_webhook(&payload, "", now), Err(PaymentError::BadSignature));

    let other = br#"{"id":"evt_2","object":"event","type":"customer.created","data":{"object":{}}}"#;
    assert_eq!(payments.parse_webhook(other, &sign_webhook(other, WEBHOOK_SECRET, now), now), Ok(None));

    let unconfigured = PaymentSettings { stripe_webhook_secret: None, ..stripe.settings() };
    let err = payments::processor(&unconfigured, client()).unwrap().parse_webhook(&payload, &header, now);
    assert_eq!(err.unwrap_err().code(), "payments_not_supported");
}

#[tokio::test]
async fn the_manual_processor_refuses_every_card_operation() {
    let payments = payments::processor(&PaymentSettings::default(), client()).unwrap();
    assert_eq!(payments.kind(), "manual");
    let refusals = [
        payments.create_customer("acc_1", "Ada").await.unwrap_err(),
        payments.create_checkout(checkout("cus_1", 2500)).await.unwrap_err(),
        payments.checkout_result("cs_1").await.unwrap_err(),
        payments.charge_saved_card(charge("cus_1", "pm_1", 2500, "k")).await.unwrap_err(),
        payments.card_details("pm_1").await.unwrap_err(),
        payments.detach_card("pm_1").await.unwrap_err(),
        payments.parse_webhook(b"{}", "t=1,v1=00", 1).unwrap_err(),
    ];
    for err in refusals {
        assert_eq!(err.code(), "payments_not_supported");
        assert!(err.to_string().contains("tokaroo credits add"), "{err}");
    }
}

/// The fake itself answers like Stripe, so that the tests above can fail for the right reasons.
#[tokio::test]
async fn the_fake_checks_auth_content_type_and_params_like_stripe() {
    let stripe = FakeStripe::start().await;
    let http = client();
    let post = |path: &str, body: &str, key: Option<&str>, content_type: &str| {
        let mut request =
            http.post(format!("{}{path}", stripe.base_url)).header("content-type", content_type).body(body.to_owned());
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let form = "application/x-www-form-urlencoded";
    let key = Some(stripe.secret_key.as_str());

    let (status, body) = post("/v1/customers", "name=x", None, form).await;
    assert_eq!((status, body["error"]["type"].as_str()), (401, Some("invalid_request_error")), "{body}");
    let (status, _) = post("/v1/customers", "name=x", Some("sk_test_other"), form).await;
    assert_eq!(status, 401);
    let (status, body) = post("/v1/customers", r#"{"name":"x"}"#, key, "application/json").await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = post("/v1/payment_intents", "currency=usd", key, form).await;
    assert_eq!(
        (status, body["error"]["code"].as_str(), body["error"]["param"].as_str()),
        (400, Some("parameter_missing"), Some("amount"))
    );
    let (status, body) = post("/v1/payment_intents", "amount=500", key, form).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("currency")));

    let customer = post("/v1/customers", "name=x", key, form).await.1["id"].as_str().unwrap().to_owned();
    let no_success = format!(
        "mode=payment&customer={customer}&line_items[0][price_data][currency]=usd\
         &line_items[0][price_data][product_data][name]=c&line_items[0][price_data][unit_amount]=500&line_items[0][quantity]=1"
    );
    let (status, body) = post("/v1/checkout/sessions", &no_success, key, form).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("success_url")), "{body}");
    let (status, body) =
        post("/v1/checkout/sessions", &format!("{no_success}&success_url=https://x&colour=red"), key, form).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("parameter_unknown")), "{body}");
    let (status, body) = post("/v1/checkout/sessions", &format!("{no_success}&success_url=https://x"), key, form).await;
    assert_eq!(
        (status, body["amount_total"].as_i64(), body["status"].as_str()),
        (200, Some(500), Some("open")),
        "{body}"
    );
}
