//! A fake Stripe API on a loopback port, for tests of the payment layer and of the billing
//! routes. It speaks Stripe's wire format — bearer auth with the secret key, form bodies in
//! bracket notation, Stripe's error bodies, `Idempotency-Key` replay — and keeps customers,
//! checkout sessions, payment intents and payment methods in memory. What a customer would do
//! on Stripe's hosted pages, and card declines, are test controls.
//!
//! ```ignore
//! let stripe = FakeStripe::start().await;
//! let payments = stripe.processor();
//! let customer = payments.create_customer("acc_1", "Ada").await?;
//! let session = payments.create_checkout(/* ... */).await?;
//! stripe.complete_checkout(&session.id, TestCard::VISA);
//! ```

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json, Router,
};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use tokaroo_actors::money::payments::{self, PaymentProcessor, PaymentSettings, ProcessorKind};

/// The endpoint secret that [`FakeStripe::settings`] configures for webhooks.
pub const WEBHOOK_SECRET: &str = "whsec_fake_endpoint_secret";

/// A card as a customer would enter it on the hosted checkout page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestCard {
    pub brand: &'static str,
    pub last4: &'static str,
    pub exp_month: u32,
    pub exp_year: u32,
}

impl TestCard {
    pub const VISA: TestCard = TestCard { brand: "visa", last4: "4242", exp_month: 12, exp_year: 2034 };
    pub const MASTERCARD: TestCard = TestCard { brand: "mastercard", last4: "4444", exp_month: 3, exp_year: 2031 };
}

/// One request as the fake received it (replays included).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The form body (or query) decoded from bracket notation into nested JSON.
    pub params: Value,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
}

/// What [`FakeStripe::complete_checkout`] created.
#[derive(Debug, Clone)]
pub struct PaidCheckout {
    pub payment_intent_id: String,
    pub payment_method_id: String,
}

pub struct FakeStripe {
    pub base_url: String,
    pub secret_key: String,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Inner {
    secret_key: String,
    base_url: String,
    state: Mutex<Ledger>,
}

struct Session {
    object: Value,
    /// `payment_intent_data[...]`: applied to the PaymentIntent that paying creates.
    setup_future_usage: Option<String>,
    intent_metadata: Value,
}

struct Saved {
    request: String,
    params: Value,
    status: StatusCode,
    body: Value,
}

#[derive(Default)]
struct Ledger {
    next_id: u64,
    customers: HashMap<String, Value>,
    sessions: HashMap<String, Session>,
    intents: HashMap<String, Value>,
    methods: HashMap<String, Value>,
    idempotent: HashMap<String, Saved>,
    decline_next: Option<String>,
    /// Responses to these paths are cut off after the request was carried out (a lost answer).
    lose_responses: HashMap<String, u32>,
    /// Charge id → cents refunded so far.
    refunded: HashMap<String, i64>,
    charges: Vec<Value>,
    requests: Vec<RecordedRequest>,
}

impl Ledger {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_fake{:06}", self.next_id)
    }
}

impl FakeStripe {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake Stripe");
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let secret_key = format!("sk_test_{}", uuid::Uuid::new_v4().simple());
        let inner = Arc::new(Inner {
            secret_key: secret_key.clone(),
            base_url: base_url.clone(),
            state: Mutex::new(Ledger::default()),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake Stripe serves");
        });
        Self { base_url, secret_key, inner, server }
    }

    /// Settings for a `stripe` processor pointed at this fake, webhooks signed with
    /// [`WEBHOOK_SECRET`].
    pub fn settings(&self) -> PaymentSettings {
        PaymentSettings {
            processor: ProcessorKind::Stripe,
            stripe_secret_key: Some(self.secret_key.clone()),
            stripe_base_url: self.base_url.clone(),
            stripe_webhook_secret: Some(WEBHOOK_SECRET.into()),
        }
    }

    pub fn processor(&self) -> Arc<dyn PaymentProcessor> {
        payments::processor(&self.settings(), tokaroo_actors::routing::client::client()).expect("a stripe processor")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner.state.lock().unwrap()
    }

    /// What the customer does on the hosted page: pays the session's total with `card`. The
    /// card is saved to the session's customer only if the session asked for
    /// `setup_future_usage`, as on Stripe.
    pub fn complete_checkout(&self, session_id: &str, card: TestCard) -> PaidCheckout {
        let mut st = self.state();
        let (customer, amount, setup_future_usage, intent_metadata) = {
            let session = st.sessions.get(session_id).unwrap_or_else(|| panic!("no checkout session {session_id}"));
            assert_eq!(session.object["status"], "open", "checkout session {session_id} is not open");
            (
                session.object["customer"].clone(),
                session.object["amount_total"].clone(),
                session.setup_future_usage.clone(),
                session.intent_metadata.clone(),
            )
        };
        let payment_method_id = st.id("pm");
        let attached_to = if setup_future_usage.is_some() { customer.clone() } else { Value::Null };
        let method = json!({
            "id": payment_method_id, "object": "payment_method", "type": "card", "customer": attached_to,
            "card": {"brand": card.brand, "last4": card.last4, "exp_month": card.exp_month,
                     "exp_year": card.exp_year, "funding": "credit", "country": "US"},
            "billing_details": {"name": null, "email": null}, "metadata": {}, "livemode": false,
        });
        st.methods.insert(payment_method_id.clone(), method);
        let payment_intent_id = st.id("pi");
        let charge_id = st.id("ch");
        let intent = json!({
            "id": payment_intent_id, "object": "payment_intent", "amount": amount, "amount_received": amount,
            "currency": "usd", "customer": customer, "payment_method": payment_method_id, "status": "succeeded",
            "setup_future_usage": setup_future_usage, "latest_charge": charge_id, "metadata": intent_metadata,
            "created": now(), "livemode": false,
        });
        st.intents.insert(payment_intent_id.clone(), intent);
        let session = st.sessions.get_mut(session_id).unwrap();
        session.object["status"] = json!("complete");
        session.object["payment_status"] = json!("paid");
        session.object["payment_intent"] = json!(payment_intent_id);
        PaidCheckout { payment_intent_id, payment_method_id }
    }

    /// The next confirmed PaymentIntent fails as a card error with `code: card_declined` and
    /// this `decline_code` (e.g. `insufficient_funds`).
    pub fn decline_next_charge(&self, decline_code: &str) {
        self.state().decline_next = Some(decline_code.to_owned());
    }

    /// The next `n` answers to `path` (e.g. `/v1/payment_intents`) are lost: the request is
    /// carried out (and saved under its idempotency key), then the connection breaks before
    /// the body arrives, as when a network drops an answer.
    pub fn lose_responses(&self, path: &str, n: u32) {
        self.state().lose_responses.insert(path.to_owned(), n);
    }

    /// Every PaymentIntent, checkout payments included.
    pub fn payment_intents(&self) -> Vec<Value> {
        self.state().intents.values().cloned().collect()
    }

    fn event(st: &mut Ledger, kind: &str, object: Value) -> Vec<u8> {
        let id = st.id("evt");
        let event = json!({
            "id": id, "object": "event", "type": kind, "api_version": "2024-06-20", "created": now(),
            "livemode": false, "pending_webhooks": 1, "data": {"object": object},
        });
        serde_json::to_vec(&event).unwrap()
    }

    /// The `payment_intent.succeeded` event Stripe would post for a PaymentIntent.
    pub fn payment_intent_succeeded_event(&self, payment_intent_id: &str) -> Vec<u8> {
        let mut st = self.state();
        let intent = st.intents.get(payment_intent_id).cloned().expect("a PaymentIntent");
        assert_eq!(intent["status"], "succeeded");
        Self::event(&mut st, "payment_intent.succeeded", intent)
    }

    /// Refunds `amount_cents` of a PaymentIntent's charge (as the dashboard would) and returns
    /// the `charge.refunded` event; `amount_refunded` is the charge's running total.
    pub fn refund(&self, payment_intent_id: &str, amount_cents: i64) -> Vec<u8> {
        let mut st = self.state();
        let intent = st.intents.get(payment_intent_id).cloned().expect("a PaymentIntent");
        let charge_id = intent["latest_charge"].as_str().expect("a charge").to_owned();
        let amount = intent["amount_received"].as_i64().unwrap();
        let total = st.refunded.entry(charge_id.clone()).or_default();
        *total = (*total + amount_cents).min(amount);
        let total = *total;
        let charge = json!({
            "id": charge_id, "object": "charge", "amount": amount, "amount_captured": amount,
            "amount_refunded": total, "refunded": total == amount, "captured": true, "paid": true,
            "currency": "usd", "customer": intent["customer"], "payment_intent": payment_intent_id,
            "payment_method": intent["payment_method"], "status": "succeeded", "metadata": {},
            "livemode": false,
        });
        Self::event(&mut st, "charge.refunded", charge)
    }

    /// The cardholder disputes a PaymentIntent's charge: the `charge.dispute.created` event.
    pub fn dispute(&self, payment_intent_id: &str, reason: &str) -> Vec<u8> {
        let mut st = self.state();
        let intent = st.intents.get(payment_intent_id).cloned().expect("a PaymentIntent");
        let dispute_id = st.id("dp");
        let dispute = json!({
            "id": dispute_id, "object": "dispute", "amount": intent["amount_received"],
            "charge": intent["latest_charge"], "payment_intent": payment_intent_id, "currency": "usd",
            "reason": reason, "status": "needs_response", "is_charge_refundable": false,
            "created": now(), "metadata": {}, "livemode": false,
        });
        Self::event(&mut st, "charge.dispute.created", dispute)
    }

    /// PaymentIntents confirmed through the API that succeeded, in order (replays are not
    /// charges; checkout payments are not here).
    pub fn charges(&self) -> Vec<Value> {
        self.state().charges.clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    pub fn customers(&self) -> Vec<Value> {
        self.state().customers.values().cloned().collect()
    }

    pub fn customer(&self, id: &str) -> Option<Value> {
        self.state().customers.get(id).cloned()
    }

    pub fn payment_method(&self, id: &str) -> Option<Value> {
        self.state().methods.get(id).cloned()
    }

    /// The `checkout.session.completed` event Stripe would post for a session, as its raw body.
    pub fn checkout_completed_event(&self, session_id: &str) -> Vec<u8> {
        let st = self.state();
        let session = &st.sessions.get(session_id).unwrap_or_else(|| panic!("no checkout session {session_id}")).object;
        let event = json!({
            "id": format!("evt_for_{session_id}"), "object": "event", "type": "checkout.session.completed",
            "api_version": "2024-06-20", "created": session["created"], "livemode": false,
            "data": {"object": session},
        });
        serde_json::to_vec(&event).unwrap()
    }
}

/// The `Stripe-Signature` header Stripe would send with `payload` at unix time `t`.
pub fn sign_webhook(payload: &[u8], secret: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(payload);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

type Reply = (StatusCode, Value);

fn stripe_error(status: StatusCode, kind: &str, code: Option<&str>, param: Option<&str>, message: String) -> Reply {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
        error["doc_url"] = json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")));
    }
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    (status, json!({ "error": error }))
}

fn invalid(code: Option<&str>, param: Option<&str>, message: impl Into<String>) -> Reply {
    stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", code, param, message.into())
}

fn missing(param: &str) -> Reply {
    invalid(Some("parameter_missing"), Some(param), format!("Missing required param: {param}."))
}

fn no_such(what: &str, id: &str, param: &str) -> Reply {
    stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("resource_missing"),
        Some(param),
        format!("No such {what}: '{id}'"),
    )
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (status, body, replayed) = serve(&inner, &method, &uri, &text, &body);
    let lose = {
        let mut st = inner.state.lock().unwrap();
        match st.lose_responses.get_mut(uri.path()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    };
    if lose {
        // Headers go out, then the body fails: the client sees a broken answer.
        let broken = futures_util::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("the fake Stripe dropped this answer"))
        });
        return (status, axum::body::Body::from_stream(broken)).into_response();
    }
    let mut response = (status, Json(body)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", "true".parse().unwrap());
    }
    response
}

fn serve(
    inner: &Inner,
    method: &Method,
    uri: &Uri,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> (StatusCode, Value, bool) {
    let unauthorized = |message: String| {
        let (s, b) = stripe_error(StatusCode::UNAUTHORIZED, "invalid_request_error", None, None, message);
        (s, b, false)
    };
    match header(header::AUTHORIZATION.as_str()).as_deref().and_then(|v| v.strip_prefix("Bearer ")) {
        None => {
            return unauthorized(
                "You did not provide an API key. You need to provide your API key in the Authorization header, \
                 using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
                    .into(),
            )
        }
        Some(key) if key != inner.secret_key => {
            let shown: String = key.chars().take(8).collect();
            let last4: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            return unauthorized(format!("Invalid API Key provided: {shown}****{last4}"));
        }
        Some(_) => {}
    }

    let is_post = method == Method::POST;
    let raw_params: &[u8] = if is_post {
        let content_type = header(header::CONTENT_TYPE.as_str()).unwrap_or_default();
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            let (s, b) = invalid(
                None,
                None,
                format!(
                    "Invalid request: Content-Type must be application/x-www-form-urlencoded, not `{content_type}`"
                ),
            );
            return (s, b, false);
        }
        body
    } else {
        uri.query().unwrap_or_default().as_bytes()
    };
    let pairs = match parse_pairs(raw_params) {
        Ok(pairs) => pairs,
        Err(reply) => return (reply.0, reply.1, false),
    };
    let params = nest(&pairs);
    let idempotency_key = header("idempotency-key");
    let path = uri.path().to_owned();

    let mut st = inner.state.lock().unwrap();
    st.requests.push(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        params: params.clone(),
        idempotency_key: idempotency_key.clone(),
        stripe_version: header("stripe-version"),
    });

    let request = format!("{method} {path}");
    let key = idempotency_key.filter(|_| is_post);
    if let Some(key) = &key {
        if key.len() > 255 {
            let (s, b) = invalid(None, None, "Idempotency-Key must be at most 255 characters long.");
            return (s, b, false);
        }
        if let Some(saved) = st.idempotent.get(key) {
            if saved.request != request || saved.params != params {
                let (s, b) = stripe_error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    None,
                    None,
                    format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first \
                         used with. Try using a key other than '{key}' if you meant to execute a different request."
                    ),
                );
                return (s, b, false);
            }
            return (saved.status, saved.body.clone(), true);
        }
    }

    let (status, body) = route(inner, &mut st, method, &path, &pairs, &params);
    // As on Stripe, a request that failed validation is not saved: the key stays free.
    if let Some(key) = key {
        if status.is_success() || status == StatusCode::PAYMENT_REQUIRED {
            st.idempotent.insert(key, Saved { request, params, status, body: body.clone() });
        }
    }
    (status, body, false)
}

/// `a[b][0]=x` as (["a", "b", "0"], "x"); `expand[]=y` as (["expand", ""], "y").
type Pair = (Vec<String>, String);

fn parse_pairs(raw: &[u8]) -> Result<Vec<Pair>, Reply> {
    form_urlencoded::parse(raw)
        .map(|(key, value)| {
            let (head, rest) = key.split_once('[').unwrap_or((&key, ""));
            let mut path = vec![head.to_owned()];
            if !rest.is_empty() {
                let inner =
                    rest.strip_suffix(']').ok_or_else(|| invalid(None, Some(&key), format!("Invalid param: {key}")))?;
                path.extend(inner.split("][").map(str::to_owned));
            }
            if head.is_empty() || path.iter().any(|s| s.contains('[') || s.contains(']')) {
                return Err(invalid(None, Some(&key), format!("Invalid param: {key}")));
            }
            Ok((path, value.into_owned()))
        })
        .collect()
}

/// The pairs as nested JSON; objects whose keys are all indices become arrays.
fn nest(pairs: &[Pair]) -> Value {
    fn insert(node: &mut Value, path: &[String], value: &str) {
        if !node.is_object() {
            *node = json!({});
        }
        let map = node.as_object_mut().unwrap();
        match path {
            [last] => {
                map.insert(last.clone(), json!(value));
            }
            [list, empty] if empty.is_empty() => {
                let entry = map.entry(list.clone()).or_insert_with(|| json!([]));
                if !entry.is_array() {
                    *entry = json!([]);
                }
                entry.as_array_mut().unwrap().push(json!(value));
            }
            [first, rest @ ..] => insert(map.entry(first.clone()).or_insert_with(|| json!({})), rest, value),
            [] => {}
        }
    }
    fn arrays(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let indexed = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
                let mut entries: Vec<(String, Value)> = map.into_iter().map(|(k, v)| (k, arrays(v))).collect();
                if indexed {
                    entries.sort_by_key(|(k, _)| k.parse::<usize>().unwrap());
                    Value::Array(entries.into_iter().map(|(_, v)| v).collect())
                } else {
                    Value::Object(entries.into_iter().collect::<Map<_, _>>())
                }
            }
            other => other,
        }
    }
    let mut root = json!({});
    for (path, value) in pairs {
        insert(&mut root, path, value);
    }
    arrays(root)
}

/// The first parameter that is not among `allowed`, written as patterns where `[N]` is any
/// index and `metadata[*]` any metadata key.
fn unknown_param(pairs: &[Pair], allowed: &[&str]) -> Option<Reply> {
    pairs.iter().find_map(|(path, _)| {
        let mut pattern = path[0].clone();
        for (i, segment) in path.iter().enumerate().skip(1) {
            if path[i - 1] == "metadata" {
                pattern.push_str("[*]");
            } else if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
                pattern.push_str("[N]");
            } else {
                pattern.push_str(&format!("[{segment}]"));
            }
        }
        if allowed.contains(&pattern.as_str()) {
            return None;
        }
        let name = path[0].clone() + &path[1..].iter().map(|s| format!("[{s}]")).collect::<String>();
        Some(invalid(Some("parameter_unknown"), Some(&name), format!("Received unknown parameter: {name}")))
    })
}

fn integer(params: &Value, pointer: &str, param: &str) -> Result<Option<i64>, Reply> {
    match params.pointer(pointer).and_then(Value::as_str) {
        None => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|_| invalid(Some("parameter_invalid_integer"), Some(param), format!("Invalid integer: {raw}"))),
    }
}

fn string<'a>(params: &'a Value, field: &str) -> Option<&'a str> {
    params[field].as_str().filter(|s| !s.is_empty())
}

fn metadata(params: &Value) -> Value {
    params.get("metadata").cloned().unwrap_or_else(|| json!({}))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn route(inner: &Inner, st: &mut Ledger, method: &Method, path: &str, pairs: &[Pair], params: &Value) -> Reply {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match (method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "customers"]) => create_customer(st, pairs, params),
        ("GET", ["v1", "customers", id]) => st.customers.get(*id).cloned().ok_or_else(|| no_such("customer", id, "id")),
        ("POST", ["v1", "checkout", "sessions"]) => create_session(inner, st, pairs, params),
        ("GET", ["v1", "checkout", "sessions", id]) => retrieve_session(st, id, pairs, params),
        ("POST", ["v1", "payment_intents"]) => {
            return create_intent(st, pairs, params).unwrap_or_else(|reply| reply);
        }
        ("GET", ["v1", "payment_intents"]) => list_intents(st, pairs, params),
        ("GET", ["v1", "payment_intents", id]) => {
            st.intents.get(*id).cloned().ok_or_else(|| no_such("payment_intent", id, "intent"))
        }
        ("GET", ["v1", "payment_methods", id]) => {
            st.methods.get(*id).cloned().ok_or_else(|| no_such("PaymentMethod", id, "payment_method"))
        }
        ("POST", ["v1", "payment_methods", id, "detach"]) => detach(st, id, pairs),
        _ => Err(stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            None,
            format!("Unrecognized request URL ({method}: {path})."),
        )),
    };
    result.map(|object| (StatusCode::OK, object)).unwrap_or_else(|reply| reply)
}

fn create_customer(st: &mut Ledger, pairs: &[Pair], params: &Value) -> Result<Value, Reply> {
    if let Some(reply) = unknown_param(pairs, &["name", "email", "description", "metadata[*]", "expand[]"]) {
        return Err(reply);
    }
    let id = st.id("cus");
    let customer = json!({
        "id": id, "object": "customer", "name": string(params, "name"), "email": string(params, "email"),
        "description": string(params, "description"), "metadata": metadata(params), "created": now(),
        "invoice_settings": {"default_payment_method": null}, "livemode": false,
    });
    st.customers.insert(id, customer.clone());
    Ok(customer)
}

fn create_session(inner: &Inner, st: &mut Ledger, pairs: &[Pair], params: &Value) -> Result<Value, Reply> {
    let allowed = [
        "mode",
        "customer",
        "success_url",
        "cancel_url",
        "client_reference_id",
        "payment_method_types[N]",
        "line_items[N][quantity]",
        "line_items[N][price_data][currency]",
        "line_items[N][price_data][unit_amount]",
        "line_items[N][price_data][product_data][name]",
        "payment_intent_data[setup_future_usage]",
        "payment_intent_data[metadata][*]",
        "metadata[*]",
        "expand[]",
    ];
    if let Some(reply) = unknown_param(pairs, &allowed) {
        return Err(reply);
    }
    let mode = string(params, "mode").ok_or_else(|| missing("mode"))?;
    if mode != "payment" {
        return Err(invalid(None, Some("mode"), format!("The fake Stripe supports only mode=payment, not `{mode}`.")));
    }
    let success_url = string(params, "success_url").ok_or_else(|| missing("success_url"))?;
    for (param, url) in [("success_url", Some(success_url)), ("cancel_url", string(params, "cancel_url"))] {
        if let Some(url) = url.filter(|u| !(u.starts_with("https://") || u.starts_with("http://"))) {
            return Err(invalid(Some("url_invalid"), Some(param), format!("Not a valid URL: {url}")));
        }
    }
    let customer = string(params, "customer");
    if let Some(customer) = customer.filter(|c| !st.customers.contains_key(*c)) {
        return Err(invalid(Some("resource_missing"), Some("customer"), format!("No such customer: '{customer}'")));
    }
    let items =
        params["line_items"].as_array().filter(|items| !items.is_empty()).ok_or_else(|| missing("line_items"))?;
    let mut total = 0;
    for (i, item) in items.iter().enumerate() {
        let param = |fields: &str| format!("line_items[{i}]{fields}");
        let price = &item["price_data"];
        if price.is_null() {
            return Err(missing(&param("[price_data]")));
        }
        match price["currency"].as_str() {
            None => return Err(missing(&param("[price_data][currency]"))),
            Some("usd") => {}
            Some(other) => {
                return Err(invalid(
                    None,
                    Some(&param("[price_data][currency]")),
                    format!("Invalid currency: {other}."),
                ))
            }
        }
        if price["product_data"]["name"].as_str().is_none_or(str::is_empty) {
            return Err(missing(&param("[price_data][product_data][name]")));
        }
        let unit_amount = integer(item, "/price_data/unit_amount", &param("[price_data][unit_amount]"))?
            .ok_or_else(|| missing(&param("[price_data][unit_amount]")))?;
        let quantity =
            integer(item, "/quantity", &param("[quantity]"))?.ok_or_else(|| missing(&param("[quantity]")))?;
        if unit_amount < 0 || quantity < 1 {
            return Err(invalid(None, Some(&param("[quantity]")), "Amounts and quantities must be positive."));
        }
        total += unit_amount * quantity;
    }
    if total < 50 {
        return Err(invalid(
            Some("amount_too_small"),
            None,
            "The Checkout Session's total amount due must add up to at least $0.50 usd",
        ));
    }
    let setup_future_usage = params["payment_intent_data"]["setup_future_usage"].as_str().map(str::to_owned);
    if let Some(usage) = setup_future_usage.as_deref().filter(|u| !matches!(*u, "on_session" | "off_session")) {
        return Err(invalid(
            None,
            Some("payment_intent_data[setup_future_usage]"),
            format!("Invalid setup_future_usage: must be one of on_session or off_session, not {usage}"),
        ));
    }
    let id = st.id("cs_test");
    let object = json!({
        "id": id, "object": "checkout.session", "mode": "payment", "status": "open", "payment_status": "unpaid",
        "amount_subtotal": total, "amount_total": total, "currency": "usd", "customer": customer,
        "metadata": metadata(params), "success_url": success_url, "cancel_url": string(params, "cancel_url"),
        "client_reference_id": string(params, "client_reference_id"),
        "payment_method_types": params.get("payment_method_types").cloned().unwrap_or_else(|| json!(["card"])),
        "payment_intent": null, "url": format!("{}/c/pay/{id}", inner.base_url),
        "created": now(), "expires_at": now() + 24 * 3600, "livemode": false,
    });
    let intent_metadata = params["payment_intent_data"].get("metadata").cloned().unwrap_or_else(|| json!({}));
    st.sessions.insert(id, Session { object: object.clone(), setup_future_usage, intent_metadata });
    Ok(object)
}

fn retrieve_session(st: &Ledger, id: &str, pairs: &[Pair], params: &Value) -> Result<Value, Reply> {
    if let Some(reply) = unknown_param(pairs, &["expand[]"]) {
        return Err(reply);
    }
    let mut session = st.sessions.get(id).ok_or_else(|| no_such("checkout.session", id, "session"))?.object.clone();
    for path in params["expand"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        match path {
            "payment_intent" | "payment_intent.payment_method" => {
                let intent_id = session["payment_intent"].as_str().map(str::to_owned);
                if let Some(mut intent) = intent_id.and_then(|i| st.intents.get(&i).cloned()) {
                    if path == "payment_intent.payment_method" {
                        let method_id = intent["payment_method"].as_str().map(str::to_owned);
                        if let Some(method) = method_id.and_then(|m| st.methods.get(&m).cloned()) {
                            intent["payment_method"] = method;
                        }
                    }
                    session["payment_intent"] = intent;
                }
            }
            other => {
                return Err(invalid(None, Some("expand"), format!("This property cannot be expanded ({other}).")));
            }
        }
    }
    Ok(session)
}

fn create_intent(st: &mut Ledger, pairs: &[Pair], params: &Value) -> Result<Reply, Reply> {
    let allowed = [
        "amount",
        "currency",
        "customer",
        "payment_method",
        "off_session",
        "confirm",
        "description",
        "payment_method_types[N]",
        "metadata[*]",
        "expand[]",
    ];
    if let Some(reply) = unknown_param(pairs, &allowed) {
        return Err(reply);
    }
    let amount = integer(params, "/amount", "amount")?.ok_or_else(|| missing("amount"))?;
    let currency = string(params, "currency").ok_or_else(|| missing("currency"))?;
    if currency != "usd" {
        return Err(invalid(None, Some("currency"), format!("Invalid currency: {currency}.")));
    }
    if amount < 50 {
        return Err(invalid(Some("amount_too_small"), Some("amount"), "Amount must be at least $0.50 usd"));
    }
    let boolean = |field: &str| match string(params, field) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(invalid(None, Some(field), format!("Invalid boolean: {other}"))),
    };
    let (confirm, off_session) = (boolean("confirm")?, boolean("off_session")?);
    if off_session && !confirm {
        return Err(invalid(None, Some("off_session"), "off_session can only be used when confirm=true."));
    }
    let customer = string(params, "customer");
    if let Some(customer) = customer.filter(|c| !st.customers.contains_key(*c)) {
        return Err(invalid(Some("resource_missing"), Some("customer"), format!("No such customer: '{customer}'")));
    }
    let payment_method = string(params, "payment_method");
    if let Some(id) = payment_method {
        let method = st.methods.get(id).ok_or_else(|| {
            invalid(Some("resource_missing"), Some("payment_method"), format!("No such PaymentMethod: '{id}'"))
        })?;
        let owner = method["customer"].as_str();
        if owner.is_none() || owner != customer {
            return Err(invalid(
                None,
                Some("payment_method"),
                "The provided PaymentMethod was previously used without being attached to a Customer or was \
                 detached from a Customer, and may not be used again.",
            ));
        }
    } else if confirm {
        return Err(invalid(
            Some("payment_intent_unexpected_state"),
            None,
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
        ));
    }

    let id = st.id("pi");
    let mut intent = json!({
        "id": id, "object": "payment_intent", "amount": amount, "amount_received": 0, "currency": currency,
        "customer": customer, "payment_method": payment_method, "description": string(params, "description"),
        "metadata": metadata(params), "status": "requires_confirmation", "latest_charge": null,
        "last_payment_error": null, "created": now(), "livemode": false,
    });
    if !confirm {
        st.intents.insert(id, intent.clone());
        return Ok((StatusCode::OK, intent));
    }
    let charge_id = st.id("ch");
    intent["latest_charge"] = json!(charge_id);
    if let Some(decline_code) = st.decline_next.take() {
        let message = match decline_code.as_str() {
            "insufficient_funds" => "Your card has insufficient funds.",
            "expired_card" => "Your card has expired.",
            _ => "Your card was declined.",
        };
        let error = json!({
            "type": "card_error", "code": "card_declined", "decline_code": decline_code, "message": message,
            "charge": charge_id, "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        });
        intent["status"] = json!("requires_payment_method");
        intent["last_payment_error"] = error.clone();
        st.intents.insert(id, intent.clone());
        let mut error = error;
        error["payment_intent"] = intent;
        error["payment_method"] = st.methods[payment_method.unwrap()].clone();
        return Ok((StatusCode::PAYMENT_REQUIRED, json!({ "error": error })));
    }
    intent["status"] = json!("succeeded");
    intent["amount_received"] = json!(amount);
    st.intents.insert(id, intent.clone());
    st.charges.push(intent.clone());
    Ok((StatusCode::OK, intent))
}

/// `GET /v1/payment_intents`: newest first, filtered by `customer` and `created[gte|gt|lte|lt]`,
/// paged by `limit` (1..=100, default 10) and `starting_after`.
fn list_intents(st: &Ledger, pairs: &[Pair], params: &Value) -> Result<Value, Reply> {
    let allowed = ["customer", "created[gte]", "created[gt]", "created[lte]", "created[lt]", "limit", "starting_after"];
    if let Some(reply) = unknown_param(pairs, &allowed) {
        return Err(reply);
    }
    let limit = integer(params, "/limit", "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(invalid(None, Some("limit"), "limit must be between 1 and 100"));
    }
    let bound = |op: &str| integer(params, &format!("/created/{op}"), &format!("created[{op}]"));
    let (gte, gt, lte, lt) = (bound("gte")?, bound("gt")?, bound("lte")?, bound("lt")?);
    let customer = string(params, "customer");
    let mut intents: Vec<&Value> = st
        .intents
        .values()
        .filter(|i| customer.is_none_or(|c| i["customer"] == c))
        .filter(|i| {
            let created = i["created"].as_i64().unwrap_or(0);
            gte.is_none_or(|t| created >= t)
                && gt.is_none_or(|t| created > t)
                && lte.is_none_or(|t| created <= t)
                && lt.is_none_or(|t| created < t)
        })
        .collect();
    intents.sort_by(|a, b| {
        let key = |i: &Value| (i["created"].as_i64().unwrap_or(0), i["id"].as_str().unwrap_or("").to_owned());
        key(b).cmp(&key(a))
    });
    if let Some(after) = string(params, "starting_after") {
        let pos = intents
            .iter()
            .position(|i| i["id"] == after)
            .ok_or_else(|| no_such("payment_intent", after, "starting_after"))?;
        intents.drain(..=pos);
    }
    let has_more = intents.len() > limit as usize;
    intents.truncate(limit as usize);
    Ok(json!({ "object": "list", "url": "/v1/payment_intents", "has_more": has_more, "data": intents }))
}

fn detach(st: &mut Ledger, id: &str, pairs: &[Pair]) -> Result<Value, Reply> {
    if let Some(reply) = unknown_param(pairs, &["expand[]"]) {
        return Err(reply);
    }
    let method = st.methods.get_mut(id).ok_or_else(|| no_such("PaymentMethod", id, "payment_method"))?;
    if method["customer"].is_null() {
        return Err(invalid(
            None,
            None,
            "The payment method you provided is not attached to a customer so detachment is impossible.",
        ));
    }
    method["customer"] = Value::Null;
    Ok(method.clone())
}
