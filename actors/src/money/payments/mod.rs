//! Card payments for prepaid credits, behind [`PaymentProcessor`]: `stripe.rs` speaks Stripe's
//! REST API, `manual.rs` refuses every card operation (the operator adds credits by hand).
//! Nothing here knows the ledger: a processor moves money and reports what happened, and the
//! caller credits the account. Amounts are integer US cents, Stripe's own unit.

pub mod manual;
pub mod stripe;

use std::{fmt, str::FromStr, sync::Arc};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// A saved card as shown to its owner; never enough to charge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardInfo {
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    pub customer_id: String,
    /// Stored in the session's metadata so a webhook can be credited without our own lookup.
    pub account_id: String,
    pub amount_cents: i64,
    pub success_url: String,
    pub cancel_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    /// The hosted page to send the customer to.
    pub url: String,
}

/// A paid checkout. `payment_id` (the PaymentIntent) is the key to credit it exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedCheckout {
    pub session_id: String,
    pub payment_id: String,
    pub amount_cents: i64,
    pub account_id: String,
    /// The card saved for off-session charges. A webhook event does not carry it (the session
    /// in an event is not expanded): ask [`PaymentProcessor::checkout_result`] for it.
    pub payment_method_id: Option<String>,
    pub card: Option<CardInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    pub customer_id: String,
    pub payment_method_id: String,
    pub amount_cents: i64,
    /// The same key for every attempt at one top-up: a retry after a timeout then returns
    /// the first attempt's result instead of charging again. At most 255 characters.
    pub idempotency_key: String,
    pub account_id: String,
    /// Our [`PaymentAttempt`](tokaroo_storage::records::PaymentAttempt) id and kind, kept in
    /// the payment's metadata so that a webhook or the reconciler can find the attempt whose
    /// answer was lost.
    pub attempt_id: String,
    pub kind: String,
}

/// A payment as the processor lists or reports it (a PaymentIntent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorPayment {
    pub payment_id: String,
    /// Received so far (the whole amount once it succeeded).
    pub amount_cents: i64,
    pub succeeded: bool,
    /// From the payment's metadata: absent on payments this server did not make.
    pub account_id: Option<String>,
    /// Set on off-session charges ([`ChargeRequest::attempt_id`]); checkout payments have none.
    pub attempt_id: Option<String>,
}

/// A webhook event this server acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    CheckoutCompleted(CompletedCheckout),
    /// A payment succeeded (`payment_intent.succeeded`): credits an attempt whose answer was lost.
    PaymentSucceeded(ProcessorPayment),
    /// Money given back (`charge.refunded`). Stripe reports the charge's running total, so
    /// partial refunds arrive as growing totals.
    Refunded {
        charge_id: String,
        payment_id: String,
        total_refunded_cents: i64,
    },
    /// The cardholder disputed the payment (`charge.dispute.created`): its amount is withdrawn.
    Disputed {
        dispute_id: String,
        payment_id: String,
        amount_cents: i64,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub payment_id: String,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("{0}")]
    NotSupported(String),
    /// `code` is Stripe's error code (`card_declined`, `expired_card`, `authentication_required`,
    /// ...), `decline_code` the issuer's reason when Stripe gives one.
    #[error("the card was declined ({code}): {message}")]
    CardDeclined { code: String, decline_code: Option<String>, message: String },
    #[error("no saved card: add one with a checkout first")]
    NoCard,
    #[error("{0}")]
    InvalidRequest(String),
    /// The server's payment settings are wrong (missing or rejected secret key): the operator's
    /// problem, not the customer's.
    #[error("{0}")]
    Misconfigured(String),
    /// The processor could not be reached or failed on its side; safe to retry with the same
    /// idempotency key.
    #[error("the payment processor failed: {0}")]
    Upstream(String),
    #[error("the webhook signature is not valid")]
    BadSignature,
}

impl PaymentError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotSupported(_) => "payments_not_supported",
            Self::CardDeclined { .. } => "card_declined",
            Self::NoCard => "no_card",
            Self::InvalidRequest(_) => "invalid_payment_request",
            Self::Misconfigured(_) => "payments_misconfigured",
            Self::Upstream(_) => "payment_processor_error",
            Self::BadSignature => "bad_signature",
        }
    }
}

/// One way of taking money for credits. Methods return boxed futures (no `async-trait`) so the
/// processor can live behind `Arc<dyn PaymentProcessor>`.
pub trait PaymentProcessor: Send + Sync {
    /// `"stripe"` or `"manual"`.
    fn kind(&self) -> &'static str;

    /// Creates the processor's customer for an account and returns its id. Call it once per
    /// account and keep the id; a retry of the same account's creation returns the same
    /// customer for a day.
    fn create_customer(&self, account_id: &str, name: &str) -> BoxFuture<'_, Result<String, PaymentError>>;

    /// A hosted checkout page to pre-load credits that also saves the card for off-session use.
    fn create_checkout(&self, req: CheckoutRequest) -> BoxFuture<'_, Result<CheckoutSession, PaymentError>>;

    /// The result of a checkout once the customer has paid: `None` while it is open or unpaid
    /// (and for an expired one, which will never be paid).
    fn checkout_result(&self, session_id: &str) -> BoxFuture<'_, Result<Option<CompletedCheckout>, PaymentError>>;

    /// Charges a saved card off-session now (direct top-ups and auto pay).
    fn charge_saved_card(&self, req: ChargeRequest) -> BoxFuture<'_, Result<Charge, PaymentError>>;

    fn card_details(&self, payment_method_id: &str) -> BoxFuture<'_, Result<CardInfo, PaymentError>>;

    fn detach_card(&self, payment_method_id: &str) -> BoxFuture<'_, Result<(), PaymentError>>;

    /// A customer's payments created at or after `since_unix`, newest first (the reconciler
    /// looks for succeeded ones whose answer was lost).
    fn recent_payments(
        &self,
        customer_id: &str,
        since_unix: i64,
    ) -> BoxFuture<'_, Result<Vec<ProcessorPayment>, PaymentError>>;

    /// Verifies a webhook's `Stripe-Signature` header against the raw body and returns the
    /// event it reports, if we act on it. Events of other types, and objects that this server
    /// did not create, are `Ok(None)`: acknowledge them so they are not redelivered.
    fn parse_webhook(
        &self,
        payload: &[u8],
        signature_header: &str,
        now_unix: i64,
    ) -> Result<Option<WebhookEvent>, PaymentError>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessorKind {
    #[default]
    Manual,
    Stripe,
}

impl FromStr for ProcessorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manual" => Ok(Self::Manual),
            "stripe" => Ok(Self::Stripe),
            other => Err(format!("unknown payment processor `{other}`: expected `manual` or `stripe`")),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PaymentSettings {
    pub processor: ProcessorKind,
    /// `sk_live_...`, `sk_test_...` or a restricted `rk_...` key.
    pub stripe_secret_key: Option<String>,
    pub stripe_base_url: String,
    /// The endpoint's `whsec_...` secret; without it webhooks are refused and checkouts are
    /// settled by polling [`PaymentProcessor::checkout_result`].
    pub stripe_webhook_secret: Option<String>,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self {
            processor: ProcessorKind::Manual,
            stripe_secret_key: None,
            stripe_base_url: stripe::DEFAULT_BASE_URL.to_owned(),
            stripe_webhook_secret: None,
        }
    }
}

impl fmt::Debug for PaymentSettings {
    // Hand-written so that the secrets can never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentSettings")
            .field("processor", &self.processor)
            .field("stripe_secret_key", &self.stripe_secret_key.as_ref().map(|_| "<redacted>"))
            .field("stripe_base_url", &self.stripe_base_url)
            .field("stripe_webhook_secret", &self.stripe_webhook_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The processor the settings ask for. `http` must come from [`crate::routing::providers::http::client`].
pub fn processor(settings: &PaymentSettings, http: reqwest::Client) -> Result<Arc<dyn PaymentProcessor>, PaymentError> {
    match settings.processor {
        ProcessorKind::Manual => Ok(Arc::new(manual::ManualProcessor)),
        ProcessorKind::Stripe => {
            let key = settings.stripe_secret_key.as_deref().map(str::trim).unwrap_or_default();
            if key.is_empty() {
                return Err(PaymentError::Misconfigured(
                    "the stripe payment processor needs a Stripe secret key (stripe_secret_key)".into(),
                ));
            }
            if !(key.starts_with("sk_") || key.starts_with("rk_")) {
                return Err(PaymentError::Misconfigured(
                    "stripe_secret_key must be a Stripe secret (sk_...) or restricted (rk_...) key, not a publishable one"
                        .into(),
                ));
            }
            let webhook_secret = settings.stripe_webhook_secret.as_deref().map(str::trim).filter(|s| !s.is_empty());
            Ok(Arc::new(stripe::StripeProcessor::new(
                http,
                &settings.stripe_base_url,
                key,
                webhook_secret.map(str::to_owned),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http() -> reqwest::Client {
        crate::routing::client::client()
    }

    #[test]
    fn stripe_without_a_usable_key_is_refused_without_echoing_it() {
        let mut settings = PaymentSettings { processor: ProcessorKind::Stripe, ..Default::default() };
        let err = processor(&settings, http()).err().expect("no key");
        assert_eq!(err.code(), "payments_misconfigured");
        assert!(err.to_string().contains("stripe_secret_key"), "{err}");

        settings.stripe_secret_key = Some("pk_test_publishable123".into());
        let err = processor(&settings, http()).err().expect("publishable key");
        assert!(!err.to_string().contains("pk_test_publishable123"), "{err}");

        settings.stripe_secret_key = Some(" sk_test_abc ".into());
        assert_eq!(processor(&settings, http()).unwrap().kind(), "stripe");
    }

    #[test]
    fn manual_is_the_default_and_the_settings_debug_hides_secrets() {
        let settings = PaymentSettings {
            stripe_secret_key: Some("sk_test_hidden".into()),
            stripe_webhook_secret: Some("whsec_hidden".into()),
            ..Default::default()
        };
        assert_eq!(processor(&settings, http()).unwrap().kind(), "manual");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hidden"), "{shown}");
        assert_eq!("stripe".parse::<ProcessorKind>(), Ok(ProcessorKind::Stripe));
        assert!("paypal".parse::<ProcessorKind>().unwrap_err().contains("`manual` or `stripe`"));
    }
}
