//! Stripe's REST API: form-encoded requests with bracket notation, JSON answers, errors as
//! `{"error": {"type", "code", "decline_code", "message", "param"}}`. Only this file knows
//! Stripe's wire format.

use std::{fmt, time::Duration};

use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{
    CardInfo, Charge, ChargeRequest, CheckoutRequest, CheckoutSession, CompletedCheckout, PaymentError,
    PaymentProcessor, ProcessorPayment, WebhookEvent,
};

pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";
/// Pinned so that a change of the Stripe account's default version cannot reshape the objects
/// read here.
const API_VERSION: &str = "2024-06-20";
/// Someone is waiting on a page for every call; a timed-out top-up is retried with the same
/// idempotency key, so giving up early never charges twice.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Stripe's own libraries' default: a captured webhook cannot be replayed after this.
const SIGNATURE_TOLERANCE_SECS: u64 = 300;
const CURRENCY: &str = "usd";
const PRODUCT_NAME: &str = "Tokaroo credits";
/// Stripe's largest page of a list.
const LIST_PAGE: &str = "100";
/// Pages read per listing at most: the reconciler looks at days, not years.
const LIST_MAX_PAGES: usize = 20;

pub struct StripeProcessor {
    http: reqwest::Client,
    base_url: String,
    secret_key: String,
    webhook_secret: Option<String>,
}

impl fmt::Debug for StripeProcessor {
    // Hand-written so that the secrets can never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeProcessor")
            .field("base_url", &self.base_url)
            .field("webhooks", &self.webhook_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl StripeProcessor {
    /// `http` must come from [`crate::routing::providers::http::client`].
    pub fn new(http: reqwest::Client, base_url: &str, secret_key: &str, webhook_secret: Option<String>) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret_key: secret_key.to_owned(),
            webhook_secret,
        }
    }

    async fn post(&self, path: &str, form: String, idempotency_key: Option<&str>) -> Result<Value, PaymentError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    async fn get(&self, path_and_query: &str) -> Result<Value, PaymentError> {
        self.send(self.http.get(format!("{}{path_and_query}", self.base_url))).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, PaymentError> {
        let response = request
            .bearer_auth(&self.secret_key)
            .header("Stripe-Version", API_VERSION)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(network_error)?;
        if !(200..300).contains(&status) {
            return Err(error_from_response(status, &body));
        }
        serde_json::from_str(&body).map_err(|e| PaymentError::Upstream(format!("Stripe's answer is not JSON: {e}")))
    }
}

impl PaymentProcessor for StripeProcessor {
    fn kind(&self) -> &'static str {
        "stripe"
    }

    fn create_customer(&self, account_id: &str, name: &str) -> BoxFuture<'_, Result<String, PaymentError>> {
        let form = encode(&[("name", name), ("metadata[account_id]", account_id)]);
        // Keyed by account so that a retry after a lost answer finds the customer it created.
        let idempotency_key = format!("tokaroo-customer-{account_id}");
        Box::pin(async move {
            let customer = self.post("/v1/customers", form, Some(&idempotency_key)).await?;
            text(&customer, "id", "customer")
        })
    }

    fn create_checkout(&self, req: CheckoutRequest) -> BoxFuture<'_, Result<CheckoutSession, PaymentError>> {
        Box::pin(async move {
            positive(req.amount_cents)?;
            let session = self.post("/v1/checkout/sessions", checkout_form(&req), None).await?;
            Ok(CheckoutSession {
                id: text(&session, "id", "checkout session")?,
                url: text(&session, "url", "checkout session")?,
            })
        })
    }

    fn checkout_result(&self, session_id: &str) -> BoxFuture<'_, Result<Option<CompletedCheckout>, PaymentError>> {
        let path = path_id(session_id, "checkout session").map(|id| {
            format!("/v1/checkout/sessions/{id}?{}", encode(&[("expand[]", "payment_intent.payment_method")]))
        });
        Box::pin(async move {
            let session = self.get(&path?).await?;
            completed_checkout(&session)
        })
    }

    fn charge_saved_card(&self, req: ChargeRequest) -> BoxFuture<'_, Result<Charge, PaymentError>> {
        Box::pin(async move {
            positive(req.amount_cents)?;
            if req.idempotency_key.is_empty() || req.idempotency_key.len() > 255 {
                return Err(PaymentError::InvalidRequest("an idempotency key has 1 to 255 characters".into()));
            }
            let form = encode(&[
                ("amount", &req.amount_cents.to_string()),
                ("currency", CURRENCY),
                ("customer", &req.customer_id),
                ("payment_method", &req.payment_method_id),
                ("off_session", "true"),
                ("confirm", "true"),
                ("description", PRODUCT_NAME),
                ("metadata[account_id]", &req.account_id),
                ("metadata[attempt_id]", &req.attempt_id),
                ("metadata[kind]", &req.kind),
            ]);
            let intent = self.post("/v1/payment_intents", form, Some(&req.idempotency_key)).await?;
            let payment_id = text(&intent, "id", "payment")?;
            match intent["status"].as_str() {
                // A charge that went through must not be reported as failed over a missing field.
                Some("succeeded") => {
                    Ok(Charge { payment_id, amount_cents: intent["amount"].as_i64().unwrap_or(req.amount_cents) })
                }
                // Off-session confirmation normally reports this as a 402 card error; an
                // intent left waiting for the customer is the same outcome.
                Some("requires_action") => Err(PaymentError::CardDeclined {
                    code: "authentication_required".into(),
                    decline_code: None,
                    message: "The card asks the customer to authenticate; pay through a checkout instead.".into(),
                }),
                other => Err(PaymentError::Upstream(format!(
                    "payment {payment_id} is {}, not succeeded",
                    other.unwrap_or("without a status")
                ))),
            }
        })
    }

    fn card_details(&self, payment_method_id: &str) -> BoxFuture<'_, Result<CardInfo, PaymentError>> {
        let path = path_id(payment_method_id, "payment method").map(|id| format!("/v1/payment_methods/{id}"));
        Box::pin(async move { card_info(&self.get(&path?).await?) })
    }

    fn detach_card(&self, payment_method_id: &str) -> BoxFuture<'_, Result<(), PaymentError>> {
        let path = path_id(payment_method_id, "payment method").map(|id| format!("/v1/payment_methods/{id}/detach"));
        Box::pin(async move {
            self.post(&path?, String::new(), None).await?;
            Ok(())
        })
    }

    fn recent_payments(
        &self,
        customer_id: &str,
        since_unix: i64,
    ) -> BoxFuture<'_, Result<Vec<ProcessorPayment>, PaymentError>> {
        let customer_id = customer_id.to_owned();
        Box::pin(async move {
            let mut out = Vec::new();
            let mut after: Option<String> = None;
            for _ in 0..LIST_MAX_PAGES {
                let since = since_unix.to_string();
                let mut query =
                    vec![("customer", customer_id.as_str()), ("created[gte]", since.as_str()), ("limit", LIST_PAGE)];
                if let Some(after) = &after {
                    query.push(("starting_after", after));
                }
                let page = self.get(&format!("/v1/payment_intents?{}", encode(&query))).await?;
                let intents = page["data"].as_array().cloned().unwrap_or_default();
                for intent in &intents {
                    out.push(processor_payment(intent)?);
                }
                match (page["has_more"].as_bool(), out.last()) {
                    (Some(true), Some(last)) => after = Some(last.payment_id.clone()),
                    _ => break,
                }
            }
            Ok(out)
        })
    }

    fn parse_webhook(
        &self,
        payload: &[u8],
        signature_header: &str,
        now_unix: i64,
    ) -> Result<Option<WebhookEvent>, PaymentError> {
        let Some(secret) = &self.webhook_secret else {
            return Err(PaymentError::NotSupported(
                "Stripe webhooks are not configured on this server (stripe_webhook_secret)".into(),
            ));
        };
        verify_signature(payload, signature_header, secret, now_unix)?;
        let event: Value = serde_json::from_slice(payload)
            .map_err(|e| PaymentError::InvalidRequest(format!("the webhook body is not JSON: {e}")))?;
        match event["type"].as_str() {
            Some("checkout.session.completed" | "checkout.session.async_payment_succeeded") => {
                let session = &event["data"]["object"];
                // The Stripe account may serve other integrations too; their sessions are not ours.
                if session["metadata"]["account_id"].as_str().is_none() {
                    return Ok(None);
                }
                Ok(completed_checkout(session)?.map(WebhookEvent::CheckoutCompleted))
            }
            Some("payment_intent.succeeded") => {
                let payment = processor_payment(&event["data"]["object"])?;
                Ok(payment.account_id.is_some().then_some(WebhookEvent::PaymentSucceeded(payment)))
            }
            Some("charge.refunded") => {
                // A Charge; `amount_refunded` is the running total over all its refunds.
                let charge = &event["data"]["object"];
                let (Some(payment_id), Some(total)) =
                    (charge["payment_intent"].as_str(), charge["amount_refunded"].as_i64())
                else {
                    return Ok(None); // a charge made without a PaymentIntent is not ours
                };
                Ok(Some(WebhookEvent::Refunded {
                    charge_id: text(charge, "id", "charge")?,
                    payment_id: payment_id.to_owned(),
                    total_refunded_cents: total,
                }))
            }
            Some("charge.dispute.created") => {
                let dispute = &event["data"]["object"];
                let Some(payment_id) = dispute["payment_intent"].as_str() else { return Ok(None) };
                Ok(Some(WebhookEvent::Disputed {
                    dispute_id: text(dispute, "id", "dispute")?,
                    payment_id: payment_id.to_owned(),
                    amount_cents: dispute["amount"]
                        .as_i64()
                        .ok_or_else(|| PaymentError::Upstream("Stripe's dispute has no `amount`".into()))?,
                    reason: dispute["reason"].as_str().unwrap_or("unspecified").to_owned(),
                }))
            }
            _ => Ok(None),
        }
    }
}

/// A form body (or query string) in Stripe's bracket notation: keys are passed already
/// bracketed (`metadata[account_id]`) and percent-encoded with everything else.
fn encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

fn checkout_form(req: &CheckoutRequest) -> String {
    encode(&[
        ("mode", "payment"),
        ("customer", &req.customer_id),
        // Cards only: the saved method must be chargeable off-session and shown as a card.
        ("payment_method_types[0]", "card"),
        ("line_items[0][price_data][currency]", CURRENCY),
        ("line_items[0][price_data][product_data][name]", PRODUCT_NAME),
        ("line_items[0][price_data][unit_amount]", &req.amount_cents.to_string()),
        ("line_items[0][quantity]", "1"),
        ("payment_intent_data[setup_future_usage]", "off_session"),
        ("payment_intent_data[metadata][account_id]", &req.account_id),
        ("success_url", &req.success_url),
        ("cancel_url", &req.cancel_url),
        ("metadata[account_id]", &req.account_id),
    ])
}

fn positive(amount_cents: i64) -> Result<(), PaymentError> {
    if amount_cents > 0 {
        Ok(())
    } else {
        Err(PaymentError::InvalidRequest(format!("the amount must be positive, not {amount_cents} cents")))
    }
}

/// An id that goes into a URL path: Stripe's ids are `prefix_` plus base62, so anything else
/// (a `/`, `..`, `?`) would address another resource.
fn path_id<'a>(id: &'a str, what: &str) -> Result<&'a str, PaymentError> {
    if !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(id)
    } else {
        Err(PaymentError::InvalidRequest(format!("not a Stripe {what} id")))
    }
}

fn text(object: &Value, field: &str, what: &str) -> Result<String, PaymentError> {
    object[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| PaymentError::Upstream(format!("Stripe's {what} has no `{field}`")))
}

fn network_error(error: reqwest::Error) -> PaymentError {
    if error.is_timeout() {
        PaymentError::Upstream("Stripe did not answer in time".into())
    } else {
        PaymentError::Upstream(format!("could not reach Stripe: {error}"))
    }
}

/// Maps an error answer. Stripe's 401 and 403 messages quote part of the key, so those are
/// replaced by our own words.
fn error_from_response(status: u16, body: &str) -> PaymentError {
    let parsed = serde_json::from_str::<Value>(body).unwrap_or(Value::Null);
    let error = &parsed["error"];
    let field = |name: &str| error[name].as_str().map(str::to_owned);
    let message = field("message").unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        401 => PaymentError::Misconfigured("Stripe rejected the secret key (HTTP 401): check stripe_secret_key".into()),
        403 => PaymentError::Misconfigured(
            "the Stripe secret key lacks a permission this server needs (HTTP 403): check stripe_secret_key".into(),
        ),
        _ if field("type").as_deref() == Some("card_error") => PaymentError::CardDeclined {
            code: field("code").unwrap_or_else(|| "card_declined".into()),
            decline_code: field("decline_code"),
            message,
        },
        // A card removed in Stripe's dashboard, or never saved.
        _ if field("code").as_deref() == Some("resource_missing")
            && field("param").as_deref() == Some("payment_method") =>
        {
            PaymentError::NoCard
        }
        400 | 404 => PaymentError::InvalidRequest(match field("param") {
            Some(param) => format!("Stripe refused the request ({param}): {message}"),
            None => format!("Stripe refused the request: {message}"),
        }),
        _ => PaymentError::Upstream(format!("Stripe answered {status}: {message}")),
    }
}

/// Checks `t=<unix>,v1=<hex>[,v1=...]`: some `v1` must be the HMAC-SHA256 of `"<t>.<payload>"`
/// under the endpoint secret, and `t` within the tolerance of `now_unix` (either way).
fn verify_signature(payload: &[u8], header: &str, secret: &str, now_unix: i64) -> Result<(), PaymentError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", signature)) => signatures.push(signature),
            _ => {}
        }
    }
    let t = timestamp.ok_or(PaymentError::BadSignature)?;
    let sent_at: i64 = t.parse().map_err(|_| PaymentError::BadSignature)?;
    if sent_at.abs_diff(now_unix) > SIGNATURE_TOLERANCE_SECS {
        return Err(PaymentError::BadSignature);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(payload);
    let expected = mac.finalize().into_bytes();
    let matches = signatures
        .iter()
        .filter_map(|s| hex::decode(s).ok())
        .any(|candidate| bool::from(candidate.as_slice().ct_eq(expected.as_slice())));
    if matches {
        Ok(())
    } else {
        Err(PaymentError::BadSignature)
    }
}

/// A checkout session (its `payment_intent` and that intent's `payment_method` expanded or
/// not) as a completed checkout, or `None` until it is paid.
fn completed_checkout(session: &Value) -> Result<Option<CompletedCheckout>, PaymentError> {
    if session["status"] != "complete" || session["payment_status"] != "paid" {
        return Ok(None);
    }
    let session_id = text(session, "id", "checkout session")?;
    let account_id = session["metadata"]["account_id"]
        .as_str()
        .ok_or_else(|| {
            PaymentError::Upstream(format!("checkout session {session_id} carries no metadata[account_id]"))
        })?
        .to_owned();
    let amount_cents = session["amount_total"]
        .as_i64()
        .ok_or_else(|| PaymentError::Upstream(format!("checkout session {session_id} has no amount_total")))?;
    let (payment_id, payment_method) = match &session["payment_intent"] {
        Value::String(id) => (id.clone(), &Value::Null),
        intent @ Value::Object(_) => (text(intent, "id", "payment")?, &intent["payment_method"]),
        _ => return Err(PaymentError::Upstream(format!("paid checkout session {session_id} has no payment_intent"))),
    };
    let (payment_method_id, card) = match payment_method {
        Value::String(id) => (Some(id.clone()), None),
        method @ Value::Object(_) => (Some(text(method, "id", "payment method")?), card_info(method).ok()),
        _ => (None, None),
    };
    Ok(Some(CompletedCheckout { session_id, payment_id, amount_cents, account_id, payment_method_id, card }))
}

/// A PaymentIntent as a [`ProcessorPayment`].
fn processor_payment(intent: &Value) -> Result<ProcessorPayment, PaymentError> {
    let succeeded = intent["status"] == "succeeded";
    let metadata = |field: &str| intent["metadata"][field].as_str().map(str::to_owned);
    Ok(ProcessorPayment {
        payment_id: text(intent, "id", "payment")?,
        amount_cents: intent["amount_received"].as_i64().filter(|_| succeeded).unwrap_or(0),
        succeeded,
        account_id: metadata("account_id"),
        attempt_id: metadata("attempt_id"),
    })
}

fn card_info(payment_method: &Value) -> Result<CardInfo, PaymentError> {
    let card = &payment_method["card"];
    let number = |field: &str| card[field].as_u64().and_then(|n| u32::try_from(n).ok());
    match (card["brand"].as_str(), card["last4"].as_str(), number("exp_month"), number("exp_year")) {
        (Some(brand), Some(last4), Some(exp_month), Some(exp_year)) => {
            Ok(CardInfo { brand: brand.to_owned(), last4: last4.to_owned(), exp_month, exp_year })
        }
        _ => Err(PaymentError::InvalidRequest("the payment method is not a card".into())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pairs(body: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(body.as_bytes()).into_owned().collect()
    }

    #[test]
    fn checkout_form_uses_bracket_notation_and_escapes_values() {
        let body = checkout_form(&CheckoutRequest {
            customer_id: "cus_1".into(),
            account_id: "acct 7&x=y".into(),
            amount_cents: 2500,
            success_url: "https://gw.example/billing?done=1&s={CHECKOUT_SESSION_ID}".into(),
            cancel_url: "https://gw.example/billing".into(),
        });
        assert!(body.contains("line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=2500"), "{body}");
        assert!(body.contains("metadata%5Baccount_id%5D=acct+7%26x%3Dy"), "{body}");
        let pairs = pairs(&body);
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("mode"), Some("payment"));
        assert_eq!(get("customer"), Some("cus_1"));
        assert_eq!(get("line_items[0][price_data][currency]"), Some("usd"));
        assert_eq!(get("line_items[0][quantity]"), Some("1"));
        assert_eq!(get("payment_intent_data[setup_future_usage]"), Some("off_session"));
        assert_eq!(get("metadata[account_id]"), Some("acct 7&x=y"));
        assert_eq!(get("success_url"), Some("https://gw.example/billing?done=1&s={CHECKOUT_SESSION_ID}"));
        assert_eq!(pairs.len(), 12);
    }

    const SECRET: &str = "whsec_known_answer";
    const PAYLOAD: &[u8] = br#"{"id":"evt_1"}"#;
    // HMAC-SHA256("whsec_known_answer", "1700000000.{\"id\":\"evt_1\"}"), computed independently.
    const KNOWN_SIGNATURE: &str = "b9a1350d1d8b33e38577292ab22745a18a63d34be6f8d184f8260a8ce35d8796";

    #[test]
    fn a_signature_matches_a_known_answer_and_any_v1_may_match() {
        let header = format!("t=1700000000,v1={KNOWN_SIGNATURE}");
        assert_eq!(verify_signature(PAYLOAD, &header, SECRET, 1_700_000_000), Ok(()));
        assert_eq!(verify_signature(PAYLOAD, &header, SECRET, 1_700_000_000 + 300), Ok(()));
        let rolled = format!("t=1700000000, v1={}, v0=abc, v1={KNOWN_SIGNATURE}", "00".repeat(32));
        assert_eq!(verify_signature(PAYLOAD, &rolled, SECRET, 1_700_000_100), Ok(()));
    }

    #[test]
    fn signatures_are_refused_when_anything_differs() {
        let good = format!("t=1700000000,v1={KNOWN_SIGNATURE}");
        let now = 1_700_000_000;
        let refused = |payload: &[u8], header: &str, secret: &str, now: i64| {
            verify_signature(payload, header, secret, now) == Err(PaymentError::BadSignature)
        };
        assert!(refused(br#"{"id":"evt_2"}"#, &good, SECRET, now), "tampered payload");
        assert!(refused(PAYLOAD, &good, "whsec_other", now), "wrong secret");
        assert!(refused(PAYLOAD, &good, SECRET, now + 301), "stale");
        assert!(refused(PAYLOAD, &good, SECRET, now - 301), "from the future");
        assert!(refused(PAYLOAD, &format!("t=1700000001,v1={KNOWN_SIGNATURE}"), SECRET, now), "other timestamp");
        assert!(refused(PAYLOAD, &format!("v1={KNOWN_SIGNATURE}"), SECRET, now), "no timestamp");
        assert!(refused(PAYLOAD, "t=1700000000", SECRET, now), "no signature");
        assert!(refused(PAYLOAD, &format!("t=1700000000,v0={KNOWN_SIGNATURE}"), SECRET, now), "only v0");
        assert!(refused(PAYLOAD, "garbage", SECRET, now));
    }

    #[test]
    fn stripe_errors_map_to_payment_errors_without_quoting_the_key() {
        let decline = json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.", "payment_intent": {"id": "pi_1"}}});
        assert_eq!(
            error_from_response(402, &decline.to_string()),
            PaymentError::CardDeclined {
                code: "card_declined".into(),
                decline_code: Some("insufficient_funds".into()),
                message: "Your card has insufficient funds.".into(),
            }
        );
        let bad_key = json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****WXYZ"}});
        let err = error_from_response(401, &bad_key.to_string());
        assert_eq!(err.code(), "payments_misconfigured");
        assert!(!err.to_string().contains("WXYZ") && !err.to_string().contains("sk_"), "{err}");

        let gone = json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "payment_method",
            "message": "No such PaymentMethod: 'pm_x'"}});
        assert_eq!(error_from_response(404, &gone.to_string()), PaymentError::NoCard);
        let missing = json!({"error": {"type": "invalid_request_error", "code": "parameter_missing", "param": "amount",
            "message": "Missing required param: amount."}});
        assert_eq!(
            error_from_response(400, &missing.to_string()),
            PaymentError::InvalidRequest("Stripe refused the request (amount): Missing required param: amount.".into())
        );
        assert_eq!(
            error_from_response(502, "<html>bad gateway</html>"),
            PaymentError::Upstream("Stripe answered 502: HTTP 502".into())
        );
        assert_eq!(error_from_response(429, "{}").code(), "payment_processor_error");
    }

    fn paid_session(payment_intent: Value) -> Value {
        json!({"id": "cs_1", "object": "checkout.session", "status": "complete", "payment_status": "paid",
            "amount_total": 2500, "metadata": {"account_id": "acc_1"}, "payment_intent": payment_intent})
    }

    #[test]
    fn sessions_read_as_completed_checkouts_only_once_paid() {
        let card = json!({"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034});
        let expanded = paid_session(json!({"id": "pi_1", "payment_method": {"id": "pm_1", "card": card}}));
        assert_eq!(
            completed_checkout(&expanded).unwrap(),
            Some(CompletedCheckout {
                session_id: "cs_1".into(),
                payment_id: "pi_1".into(),
                amount_cents: 2500,
                account_id: "acc_1".into(),
                payment_method_id: Some("pm_1".into()),
                card: Some(CardInfo { brand: "visa".into(), last4: "4242".into(), exp_month: 12, exp_year: 2034 }),
            })
        );
        let plain = completed_checkout(&paid_session(json!("pi_1"))).unwrap().unwrap();
        assert_eq!((plain.payment_id.as_str(), plain.payment_method_id, plain.card), ("pi_1", None, None));

        let mut open = paid_session(json!(null));
        open["status"] = json!("open");
        open["payment_status"] = json!("unpaid");
        assert_eq!(completed_checkout(&open).unwrap(), None);
        let mut unpaid = paid_session(json!("pi_1"));
        unpaid["payment_status"] = json!("unpaid");
        assert_eq!(completed_checkout(&unpaid).unwrap(), None);

        let mut foreign = paid_session(json!("pi_1"));
        foreign["metadata"] = json!({});
        assert_eq!(completed_checkout(&foreign).unwrap_err().code(), "payment_processor_error");
    }

    #[test]
    fn only_plain_stripe_ids_go_into_paths() {
        assert_eq!(path_id("cs_test_a1B2c3", "checkout session"), Ok("cs_test_a1B2c3"));
        for bad in ["", "../v1/customers", "pm_1/detach", "pm_1?expand[]=x", "pm 1"] {
            assert!(path_id(bad, "payment method").is_err(), "{bad:?}");
        }
    }
}
