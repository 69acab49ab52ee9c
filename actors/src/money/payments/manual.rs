//! The processor of a server that takes no card payments: the operator adds credits with
//! `tokaroo credits add`, and every card operation says so.

use futures_util::future::BoxFuture;

use super::{
    CardInfo, Charge, ChargeRequest, CheckoutRequest, CheckoutSession, CompletedCheckout, PaymentError,
    PaymentProcessor, ProcessorPayment, WebhookEvent,
};

#[derive(Debug, Clone, Copy, Default)]
pub struct ManualProcessor;

pub const NOT_SUPPORTED: &str =
    "Card payments are not enabled on this server; the operator adds credits with `tokaroo credits add`";

fn not_supported() -> PaymentError {
    PaymentError::NotSupported(NOT_SUPPORTED.into())
}

fn refuse<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, PaymentError>> {
    Box::pin(std::future::ready(Err(not_supported())))
}

impl PaymentProcessor for ManualProcessor {
    fn kind(&self) -> &'static str {
        "manual"
    }

    fn create_customer(&self, _account_id: &str, _name: &str) -> BoxFuture<'_, Result<String, PaymentError>> {
        refuse()
    }

    fn create_checkout(&self, _req: CheckoutRequest) -> BoxFuture<'_, Result<CheckoutSession, PaymentError>> {
        refuse()
    }

    fn checkout_result(&self, _session_id: &str) -> BoxFuture<'_, Result<Option<CompletedCheckout>, PaymentError>> {
        refuse()
    }

    fn charge_saved_card(&self, _req: ChargeRequest) -> BoxFuture<'_, Result<Charge, PaymentError>> {
        refuse()
    }

    fn card_details(&self, _payment_method_id: &str) -> BoxFuture<'_, Result<CardInfo, PaymentError>> {
        refuse()
    }

    fn detach_card(&self, _payment_method_id: &str) -> BoxFuture<'_, Result<(), PaymentError>> {
        refuse()
    }

    fn recent_payments(
        &self,
        _customer_id: &str,
        _since_unix: i64,
    ) -> BoxFuture<'_, Result<Vec<ProcessorPayment>, PaymentError>> {
        refuse()
    }

    fn parse_webhook(
        &self,
        _payload: &[u8],
        _signature_header: &str,
        _now_unix: i64,
    ) -> Result<Option<WebhookEvent>, PaymentError> {
        Err(not_supported())
    }
}
