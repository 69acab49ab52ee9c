//! How accounts get money: Checkout, direct top-ups on the saved card, auto pay, and the
//! first-key activation checklist of self-serve accounts. The processor ([`PaymentProcessor`])
//! moves the money; the ledger credits it, keyed by the processor's payment id so one payment
//! is never credited twice (a webhook, a poll, a retry and the reconciler may all report it).
//!
//! A card charge is a stored [`PaymentAttempt`] before Stripe is asked. When the answer is
//! lost (a timeout, a dropped connection) the attempt is `unknown`: it is retried with its
//! idempotency key (here, and when the account asks for the same top-up again), and the
//! `payment_intent.succeeded` webhook or the periodic reconciler credits it if Stripe charged.
//! Refunds and disputes take money back through ledger adjustments, once per refund total
//! or dispute.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::Serialize;
use tokaroo_storage::records::{BillingProfile, PaymentAttempt, PendingAdjustment, SavedCard, UNITS_PER_USD};

use crate::{
    config::{EngineConfig, FundingSettings},
    directory::Directory,
    directory::{KeyView, NewKey},
    error::EngineError,
    money::billing::{units_to_usd, usd_to_units},
    money::ledger::{AccountMoney, AdjustAmount, AdjustOutcome, Adjustment, CreditFault, CreditOutcome},
    money::payments::{
        ChargeRequest, CheckoutRequest, CheckoutSession, CompletedCheckout, PaymentError, ProcessorPayment,
        WebhookEvent,
    },
    money::{ledger::LedgerClient, payments::PaymentProcessor},
    tree::{
        supervisor::{self, Restart},
        task::TaskSpec,
    },
};
use tokaroo_storage::{
    ledger::UsageFilter,
    records::{Credit, UsageRow},
};

/// How long a refund or dispute for a payment not credited here is kept waiting for it.
const PENDING_ADJUSTMENT_TTL_MS: i64 = 90 * 24 * 60 * 60 * 1000;
/// Retries of a charge whose answer was lost, with the same idempotency key, before the
/// caller is told the outcome is unknown.
const CHARGE_RETRIES: u32 = 2;
const CHARGE_RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Stripe keeps an idempotency key for 24 hours: an older unknown attempt is not retried
/// with its key (that could charge again); the reconciler still credits it if it succeeded.
const ATTEMPT_KEY_LIFETIME_MS: i64 = 23 * 3600 * 1000;

/// Test-only fault (`Engine::payment_fault`): the process dies right after a payment is
/// credited and before the billing profile or attempt records it, as `kill -9` would.
static CRASH_AFTER_CREDIT: AtomicBool = AtomicBool::new(false);

/// Test-only faults of the payment path (`debug.fault_injection`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PaymentFault {
    CrashAfterCredit,
    Ledger(CreditFault),
}

/// What one reconciliation pass found.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PaymentsReconciled {
    pub customers: usize,
    pub payments_seen: usize,
    pub credited: usize,
}

/// The spec's `ActivationStatus`.
#[derive(Debug, Clone, Serialize)]
pub struct ActivationStatus {
    pub key_count: usize,
    pub has_api_key: bool,
    pub requires_first_key_activation: bool,
    pub balance_usd: f64,
    pub funded: bool,
    pub has_saved_card: bool,
    pub auto_pay_enabled: bool,
    pub auto_pay_amount_usd: Option<f64>,
    pub activation_terms_accepted: bool,
    pub activation_terms_accepted_at: Option<String>,
    pub activation_terms_version: String,
    pub missing_requirements: Vec<&'static str>,
    pub ready_for_activation_payment: bool,
    pub ready_for_first_key: bool,
    pub payments_url: String,
    pub terms_url: String,
}

impl From<PaymentError> for EngineError {
    fn from(error: PaymentError) -> Self {
        match error {
            PaymentError::NotSupported(message) | PaymentError::InvalidRequest(message) => {
                EngineError::Invalid(message)
            }
            PaymentError::CardDeclined { .. } => {
                EngineError::Payment { code: "payment_failed", message: error.to_string() }
            }
            PaymentError::NoCard => EngineError::Payment { code: "no_card", message: error.to_string() },
            PaymentError::BadSignature => EngineError::Invalid(error.to_string()),
            PaymentError::Misconfigured(detail) => {
                tracing::error!(%detail, "payments are misconfigured");
                EngineError::Unavailable("Payments are misconfigured on this server; the operator has been told".into())
            }
            PaymentError::Upstream(detail) => EngineError::Unavailable(format!(
                "The payment processor could not be reached; retry shortly ({detail})"
            )),
        }
    }
}

fn cents(usd: f64) -> i64 {
    (usd * 100.0).round() as i64
}

fn cents_to_units(cents: i64) -> i64 {
    cents * (UNITS_PER_USD / 100)
}

fn crash_point() {
    if CRASH_AFTER_CREDIT.load(Ordering::SeqCst) {
        eprintln!("fault injection: the process dies between the credit and the profile update");
        std::process::abort();
    }
}

/// Marks an account's auto pay as running until dropped.
struct AutoPayInFlight {
    funding: Funding,
    account_id: String,
}

impl Drop for AutoPayInFlight {
    fn drop(&mut self) {
        self.funding.0.auto_pay_in_flight.remove(&self.account_id);
    }
}

/// Balances, credits and payments: checkout, webhooks, saved cards, auto pay, activation,
/// usage history and reconciliation. One `Arc`: background jobs hold clones.
#[derive(Clone)]
pub struct Funding(Arc<FundingParts>);

pub(crate) struct FundingParts {
    store: tokaroo_storage::Store,
    registry: crate::tree::registry::Registry,
    /// Per account: serialises changes to its billing profile (checkouts, top-ups, auto pay,
    /// card changes). Per account, so one tenant's slow payment calls never hold another's.
    funding_locks: dashmap::DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Accounts with an auto pay job running: one at a time each.
    auto_pay_in_flight: dashmap::DashMap<String, ()>,
    settings: FundingSettings,
    /// Enables the test-only payment faults.
    fault_injection: bool,
    ledger: LedgerClient,
    payments: Arc<dyn PaymentProcessor>,
    /// Creates the first key when an account's activation payment lands.
    directory: Directory,
}

impl Funding {
    pub(crate) fn new(
        store: tokaroo_storage::Store,
        registry: crate::tree::registry::Registry,
        config: &EngineConfig,
        ledger: LedgerClient,
        payments: Arc<dyn PaymentProcessor>,
        directory: Directory,
    ) -> Self {
        let (settings, fault_injection) = (config.funding.clone(), config.fault_injection);
        let parts = FundingParts {
            store,
            registry,
            funding_locks: Default::default(),
            auto_pay_in_flight: Default::default(),
            settings,
            fault_injection,
            ledger,
            payments,
            directory: directory.clone(),
        };
        let funding = Self(Arc::new(parts));
        // Weak: the directory must not keep funding (which holds the directory) alive.
        let weak = Arc::downgrade(&funding.0);
        directory.set_first_key_gate(Arc::new(move |account_id| {
            let funding = weak.upgrade().map(Funding);
            Box::pin(async move {
                match funding {
                    Some(funding) => funding.check_first_key_allowed(&account_id).await,
                    None => Err(EngineError::Unavailable("the server is stopping".into())),
                }
            })
        }));
        funding
    }

    fn profile(&self, account_id: &str) -> Result<BillingProfile, EngineError> {
        Ok(self
            .0
            .store
            .billing
            .get(&account_id)?
            .unwrap_or_else(|| BillingProfile { account_id: account_id.to_owned(), ..BillingProfile::default() }))
    }

    async fn save_profile(&self, profile: &BillingProfile) -> Result<(), EngineError> {
        self.0.store.billing.insert(&profile.account_id.as_str(), profile)?;
        self.0.store.flush().await?;
        Ok(())
    }

    fn check_amount(&self, amount_usd: f64) -> Result<(), EngineError> {
        let min = self.0.settings.min_payment_usd;
        if !(amount_usd.is_finite() && amount_usd >= min && amount_usd <= 100_000.0) {
            return Err(EngineError::invalid(format!("amount_usd must be between {min} and 100000")));
        }
        Ok(())
    }

    async fn customer_id(&self, profile: &mut BillingProfile) -> Result<String, EngineError> {
        if let Some(id) = &profile.customer_id {
            return Ok(id.clone());
        }
        let name = self.0.store.accounts.get(&profile.account_id.as_str())?.map(|a| a.name).unwrap_or_default();
        let id = self.0.payments.create_customer(&profile.account_id, &name).await?;
        profile.customer_id = Some(id.clone());
        self.save_profile(profile).await?;
        Ok(id)
    }

    /// Serialises one account's billing-profile changes (see `Shared::funding_locks`).
    async fn funding_guard(&self, account_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.0.funding_locks.entry(account_id.to_owned()).or_default().clone();
        lock.lock_owned().await
    }

    /// `POST /v1/billing/checkout`: a hosted page to pay `amount_usd` and save the card.
    pub async fn checkout(&self, account_id: &str, amount_usd: f64) -> Result<CheckoutSession, EngineError> {
        self.check_amount(amount_usd)?;
        let _guard = self.funding_guard(account_id).await;
        let mut profile = self.profile(account_id)?;
        let customer_id = self.customer_id(&mut profile).await?;
        let back = self.0.settings.payments_url();
        let session = self
            .0
            .payments
            .create_checkout(CheckoutRequest {
                customer_id,
                account_id: account_id.to_owned(),
                amount_cents: cents(amount_usd),
                success_url: format!("{back}?checkout={{CHECKOUT_SESSION_ID}}"),
                cancel_url: back,
            })
            .await?;
        profile.pending_checkouts.push(session.id.clone());
        self.save_profile(&profile).await?;
        Ok(session)
    }

    /// Credits a paid checkout once and keeps its card. Reported by the webhook or by polling.
    pub async fn complete_checkout(&self, paid: CompletedCheckout) -> Result<(), EngineError> {
        let _guard = self.funding_guard(&paid.account_id).await;
        self.complete_checkout_locked(paid).await
    }

    async fn complete_checkout_locked(&self, paid: CompletedCheckout) -> Result<(), EngineError> {
        let mut profile = self.profile(&paid.account_id)?;
        let Some(pos) = profile.pending_checkouts.iter().position(|s| *s == paid.session_id) else {
            return Ok(()); // already credited (or never ours)
        };
        let amount_usd = paid.amount_cents as f64 / 100.0;
        // Already credited when an earlier delivery died after the credit and before the
        // profile was saved: the ledger answers idempotently and the profile is completed now.
        self.add_credit(&paid.account_id, amount_usd, "checkout", Some(paid.payment_id.clone()), None).await?;
        crash_point();
        profile.pending_checkouts.remove(pos);
        profile.successful_payments += 1;
        let card = match (paid.card, &paid.payment_method_id) {
            (Some(card), _) => Some(card),
            (None, Some(pm)) => self.0.payments.card_details(pm).await.ok(),
            (None, None) => None,
        };
        if let (Some(card), Some(pm)) = (card, paid.payment_method_id) {
            profile.card = Some(SavedCard {
                payment_method_id: pm,
                brand: card.brand,
                last4: card.last4,
                exp_month: card.exp_month,
                exp_year: card.exp_year,
            });
        }
        self.save_profile(&profile).await
    }

    /// Asks the processor about checkouts still pending (for servers without a webhook).
    async fn sync_checkouts(&self, account_id: &str) -> Result<(), EngineError> {
        let _guard = self.funding_guard(account_id).await;
        for session_id in self.profile(account_id)?.pending_checkouts {
            if let Some(paid) = self.0.payments.checkout_result(&session_id).await? {
                self.complete_checkout_locked(paid).await?;
            }
        }
        Ok(())
    }

    /// `POST /v1/billing/webhook`: a signed processor event. An error answer makes Stripe
    /// deliver it again; every event is idempotent here.
    pub async fn payment_webhook(&self, payload: &[u8], signature: &str) -> Result<(), EngineError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match self.0.payments.parse_webhook(payload, signature, now)? {
            None => {}
            Some(WebhookEvent::CheckoutCompleted(paid)) => {
                // The event carries no card; the session does.
                let paid = match self.0.payments.checkout_result(&paid.session_id).await {
                    Ok(Some(full)) => full,
                    _ => paid,
                };
                self.complete_checkout(paid).await?;
            }
            Some(WebhookEvent::PaymentSucceeded(payment)) => {
                let _guard = self.funding_guard(payment.account_id.as_deref().unwrap_or_default()).await;
                self.resolve_payment(&payment).await?;
            }
            Some(WebhookEvent::Refunded { charge_id, payment_id, total_refunded_cents }) => {
                self.take_back(Adjustment {
                    id: format!("refund:{charge_id}:{total_refunded_cents}"),
                    payment_id,
                    reason: "refund".into(),
                    amount: AdjustAmount::TotalUnits(cents_to_units(total_refunded_cents)),
                    note: Some(format!(
                        "Stripe refunded charge {charge_id} (total refunded: {total_refunded_cents} cents)"
                    )),
                })
                .await?;
            }
            Some(WebhookEvent::Disputed { dispute_id, payment_id, amount_cents, reason }) => {
                self.take_back(Adjustment {
                    id: format!("dispute:{dispute_id}"),
                    payment_id,
                    reason: "dispute".into(),
                    amount: AdjustAmount::Units(cents_to_units(amount_cents)),
                    note: Some(format!("Stripe dispute {dispute_id}: {reason}")),
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn take_back(&self, adjustment: Adjustment) -> Result<(), EngineError> {
        let (id, payment) = (adjustment.id.clone(), adjustment.payment_id.clone());
        match self.0.ledger.adjust(adjustment.clone()).await? {
            AdjustOutcome::Applied { account_id, units, .. } => {
                tracing::info!(account = %account_id, %id, %payment, usd = units_to_usd(units), "took money back")
            }
            AdjustOutcome::Duplicate | AdjustOutcome::Nothing => {}
            // Not credited here: another integration's payment, or one of ours whose answer
            // was lost and that the reconciler has not credited yet. Kept, and taken back
            // when (if ever) that payment is credited: the customer never keeps both.
            AdjustOutcome::UnknownPayment => {
                tracing::warn!(%id, %payment, "an adjustment for a payment not credited here; kept until it is");
                let (running_total, amount_units) = match adjustment.amount {
                    AdjustAmount::Units(units) => (false, units),
                    AdjustAmount::TotalUnits(units) => (true, units),
                };
                let pending = PendingAdjustment {
                    id: adjustment.id,
                    payment_id: adjustment.payment_id,
                    reason: adjustment.reason,
                    running_total,
                    amount_units,
                    note: adjustment.note,
                    received_at_ms: crate::clock::now_ms(),
                };
                self.0
                    .store
                    .pending_adjustments
                    .insert(&(pending.payment_id.as_str(), pending.id.as_str()), &pending)?;
                self.0.store.flush().await?;
                // The payment may have been credited while this was being kept.
                self.apply_pending_adjustments(&pending.payment_id).await?;
            }
        }
        Ok(())
    }

    /// Takes back what was reported for `payment` before it was credited here.
    /// (Kept up to [`PENDING_ADJUSTMENT_TTL_MS`].)
    async fn apply_pending_adjustments(&self, payment: &str) -> Result<(), EngineError> {
        for pending in self.0.store.pending_adjustments.scan_prefix(&(payment,))? {
            let amount = if pending.running_total {
                AdjustAmount::TotalUnits(pending.amount_units)
            } else {
                AdjustAmount::Units(pending.amount_units)
            };
            let adjustment = Adjustment {
                id: pending.id.clone(),
                payment_id: pending.payment_id.clone(),
                reason: pending.reason.clone(),
                amount,
                note: pending.note.clone(),
            };
            match self.0.ledger.adjust(adjustment).await? {
                AdjustOutcome::UnknownPayment => continue,
                AdjustOutcome::Applied { account_id, units, .. } => {
                    tracing::info!(account = %account_id, id = %pending.id, %payment, usd = units_to_usd(units), "took back an adjustment reported before its payment was credited");
                }
                AdjustOutcome::Duplicate | AdjustOutcome::Nothing => {}
            }
            self.0.store.pending_adjustments.remove(&(pending.payment_id.as_str(), pending.id.as_str()))?;
        }
        Ok(())
    }

    /// Credits a succeeded payment of one of our attempts (webhook, reconciler), once.
    /// Checkout payments carry no attempt: their session credits them. Call under the funding lock.
    async fn resolve_payment(&self, payment: &ProcessorPayment) -> Result<bool, EngineError> {
        let (Some(account_id), Some(attempt_id), true) = (&payment.account_id, &payment.attempt_id, payment.succeeded)
        else {
            return Ok(false);
        };
        let Some(mut attempt) = self.0.store.payment_attempts.get(&(account_id.as_str(), attempt_id.as_str()))? else {
            tracing::warn!(account = %account_id, attempt = %attempt_id, "a payment names an attempt this server does not have");
            return Ok(false);
        };
        if attempt.status == "succeeded" {
            return Ok(false);
        }
        let outcome = self.finish_attempt(&mut attempt, &payment.payment_id, payment.amount_cents).await?;
        Ok(outcome.applied)
    }

    /// One reconciliation pass: every customer's PaymentIntents of the lookback window;
    /// succeeded ones of our attempts that are not credited yet are credited.
    pub async fn reconcile_payments(&self) -> Result<PaymentsReconciled, EngineError> {
        let mut report = PaymentsReconciled::default();
        if self.0.payments.kind() == "manual" {
            return Ok(report);
        }
        let since =
            time::OffsetDateTime::now_utc().unix_timestamp() - self.0.settings.reconcile_lookback.as_secs() as i64;
        // Adjustments for payments never credited here within the window are other
        // integrations' (or lost for good): forgotten.
        let forget_before = crate::clock::now_ms() - PENDING_ADJUSTMENT_TTL_MS;
        let mut stale = Vec::new();
        self.0.store.pending_adjustments.for_each(|p: PendingAdjustment| {
            if p.received_at_ms < forget_before {
                stale.push((p.payment_id, p.id));
            }
            Ok::<_, EngineError>(())
        })?;
        for (payment, id) in stale {
            self.0.store.pending_adjustments.remove(&(payment.as_str(), id.as_str()))?;
        }
        for profile in self.0.store.billing.all()? {
            let Some(customer_id) = &profile.customer_id else { continue };
            report.customers += 1;
            for payment in self.0.payments.recent_payments(customer_id, since).await? {
                report.payments_seen += 1;
                if payment.account_id.as_deref() != Some(profile.account_id.as_str()) {
                    continue;
                }
                let _guard = self.funding_guard(&profile.account_id).await;
                if self.resolve_payment(&payment).await? {
                    tracing::info!(account = %profile.account_id, payment = %payment.payment_id, "reconciler credited a payment whose answer was lost");
                    report.credited += 1;
                }
            }
        }
        Ok(report)
    }

    /// Test-only (`fault_injection`): see [`PaymentFault`].
    pub fn payment_fault(&self, fault: PaymentFault) -> Result<(), EngineError> {
        if !self.0.fault_injection {
            return Err(EngineError::Forbidden("fault injection is disabled".into()));
        }
        match fault {
            PaymentFault::CrashAfterCredit => CRASH_AFTER_CREDIT.store(true, Ordering::SeqCst),
            PaymentFault::Ledger(fault) => self.0.ledger.credit_fault(fault)?,
        }
        Ok(())
    }

    /// An account's credits and adjustments, oldest first (everything logged so far).
    pub async fn credits(&self, account_id: &str) -> Result<Vec<tokaroo_storage::records::Credit>, EngineError> {
        self.0.ledger.commit().await?;
        Ok(self.0.store.ledger.account_credits(account_id)?)
    }

    /// An account's attempts, newest first.
    pub fn payment_attempts(&self, account_id: &str) -> Result<Vec<PaymentAttempt>, EngineError> {
        let mut attempts = self.0.store.payment_attempts.scan_prefix(&(account_id,))?;
        attempts.sort_by_key(|a| std::cmp::Reverse(a.created_at_ms));
        Ok(attempts)
    }

    pub async fn activation(&self, account_id: &str) -> Result<ActivationStatus, EngineError> {
        if !self.profile(account_id)?.pending_checkouts.is_empty() {
            if let Err(error) = self.sync_checkouts(account_id).await {
                tracing::warn!(%error, "could not check pending checkouts");
            }
        }
        let profile = self.profile(account_id)?;
        let account = self.0.store.accounts.get(&account_id)?.ok_or(EngineError::NotFound { what: "Account" })?;
        let key_count = self.0.directory.list_keys(account_id)?.len();
        let money = self.money(account_id).await?;
        let funded = profile.successful_payments > 0;
        let terms_accepted = profile.terms_accepted_at_ms.is_some();
        let mut missing = Vec::new();
        if !funded {
            missing.push("payment");
        }
        if profile.card.is_none() {
            missing.push("saved_card");
        }
        if !profile.auto_pay_enabled {
            missing.push("auto_pay");
        }
        if !terms_accepted {
            missing.push("terms_acceptance");
        }
        let requires = account.self_serve && key_count == 0;
        Ok(ActivationStatus {
            key_count,
            has_api_key: key_count > 0,
            requires_first_key_activation: requires,
            balance_usd: units_to_usd(money.balance_units()),
            funded,
            has_saved_card: profile.card.is_some(),
            auto_pay_enabled: profile.auto_pay_enabled,
            auto_pay_amount_usd: profile.auto_pay_amount_usd,
            activation_terms_accepted: terms_accepted,
            activation_terms_accepted_at: profile.terms_accepted_at_ms.map(crate::clock::iso8601),
            activation_terms_version: profile.terms_version.clone().unwrap_or(self.0.settings.terms_version.clone()),
            ready_for_activation_payment: terms_accepted && profile.auto_pay_enabled,
            ready_for_first_key: !requires || missing.is_empty(),
            missing_requirements: missing,
            payments_url: self.0.settings.payments_url(),
            terms_url: self.0.settings.terms_url.clone(),
        })
    }

    /// Refuses the first key of a self-serve account until its checklist is complete.
    pub(crate) async fn check_first_key_allowed(&self, account_id: &str) -> Result<(), EngineError> {
        let status = self.activation(account_id).await?;
        if status.ready_for_first_key {
            return Ok(());
        }
        Err(EngineError::ActivationRequired {
            missing: status.missing_requirements,
            payment_url: status.payments_url,
            balance_usd: status.balance_usd,
        })
    }

    pub async fn accept_terms(&self, account_id: &str) -> Result<ActivationStatus, EngineError> {
        {
            let _guard = self.funding_guard(account_id).await;
            let mut profile = self.profile(account_id)?;
            profile.terms_accepted_at_ms = Some(crate::clock::now_ms());
            profile.terms_version = Some(self.0.settings.terms_version.clone());
            self.save_profile(&profile).await?;
        }
        self.activation(account_id).await
    }

    pub fn auto_pay(&self, account_id: &str) -> Result<(bool, f64), EngineError> {
        let p = self.profile(account_id)?;
        Ok((p.auto_pay_enabled, p.auto_pay_amount_usd.unwrap_or(self.0.settings.min_payment_usd)))
    }

    pub async fn set_auto_pay(
        &self,
        account_id: &str,
        enabled: Option<bool>,
        amount_usd: Option<f64>,
    ) -> Result<(bool, f64), EngineError> {
        if let Some(amount) = amount_usd {
            self.check_amount(amount)?;
        }
        let _guard = self.funding_guard(account_id).await;
        let mut profile = self.profile(account_id)?;
        if let Some(amount) = amount_usd {
            profile.auto_pay_amount_usd = Some(amount);
        }
        if let Some(enabled) = enabled {
            profile.auto_pay_enabled = enabled;
            if enabled && profile.auto_pay_amount_usd.is_none() {
                profile.auto_pay_amount_usd = Some(self.0.settings.min_payment_usd);
            }
        }
        self.save_profile(&profile).await?;
        Ok((profile.auto_pay_enabled, profile.auto_pay_amount_usd.unwrap_or(self.0.settings.min_payment_usd)))
    }

    pub fn saved_card(&self, account_id: &str) -> Result<Option<SavedCard>, EngineError> {
        if self.0.payments.kind() == "manual" {
            return Err(PaymentError::NotSupported(crate::money::payments::manual::NOT_SUPPORTED.into()).into());
        }
        Ok(self.profile(account_id)?.card)
    }

    pub async fn remove_card(&self, account_id: &str) -> Result<(), EngineError> {
        self.saved_card(account_id)?;
        let _guard = self.funding_guard(account_id).await;
        let mut profile = self.profile(account_id)?;
        let card = profile.card.take().ok_or(PaymentError::NoCard)?;
        self.0.payments.detach_card(&card.payment_method_id).await?;
        self.save_profile(&profile).await
    }

    async fn save_attempt(&self, attempt: &mut PaymentAttempt) -> Result<(), EngineError> {
        attempt.updated_at_ms = crate::clock::now_ms();
        self.0.store.payment_attempts.insert(&(attempt.account_id.as_str(), attempt.id.as_str()), attempt)?;
        self.0.store.flush().await?;
        Ok(())
    }

    /// The account's attempt of this kind and amount whose answer was lost (or whose process
    /// died while asking), recent enough for Stripe to still know its idempotency key: asking
    /// for the same top-up again is that attempt's retry, not a second charge.
    fn unresolved_attempt(
        &self,
        account_id: &str,
        amount_cents: i64,
        kind: &str,
    ) -> Result<Option<PaymentAttempt>, EngineError> {
        let now = crate::clock::now_ms();
        Ok(self.payment_attempts(account_id)?.into_iter().find(|a| {
            matches!(a.status.as_str(), "pending" | "unknown")
                && a.amount_cents == amount_cents
                && a.kind == kind
                && now - a.created_at_ms < ATTEMPT_KEY_LIFETIME_MS
        }))
    }

    /// Credits an attempt's payment (idempotently, by payment id) and marks it succeeded.
    async fn finish_attempt(
        &self,
        attempt: &mut PaymentAttempt,
        payment_id: &str,
        amount_cents: i64,
    ) -> Result<CreditOutcome, EngineError> {
        let outcome = self
            .add_credit(
                &attempt.account_id,
                amount_cents as f64 / 100.0,
                &attempt.kind,
                Some(payment_id.to_owned()),
                None,
            )
            .await?;
        crash_point();
        if attempt.status != "succeeded" {
            attempt.status = "succeeded".into();
            attempt.payment_intent_id = Some(payment_id.to_owned());
            attempt.error = None;
            // The attempt first: it is what decides whether this payment is counted again.
            self.save_attempt(attempt).await?;
            let mut profile = self.profile(&attempt.account_id)?;
            profile.successful_payments += 1;
            self.save_profile(&profile).await?;
        }
        Ok(outcome)
    }

    /// Charges the saved card `amount_usd` now and credits it, through a stored attempt whose
    /// idempotency key every retry reuses. Call under the funding lock.
    async fn charge_card(&self, account_id: &str, amount_usd: f64, kind: &str) -> Result<AccountMoney, EngineError> {
        let mut profile = self.profile(account_id)?;
        let card = profile.card.clone().ok_or(PaymentError::NoCard)?;
        let customer_id = self.customer_id(&mut profile).await?;
        let amount_cents = cents(amount_usd);
        let mut attempt = match self.unresolved_attempt(account_id, amount_cents, kind)? {
            Some(attempt) => attempt,
            None => {
                let id = crate::clock::new_id();
                let now = crate::clock::now_ms();
                let mut attempt = PaymentAttempt {
                    idempotency_key: format!("tokaroo-attempt-{id}"),
                    id,
                    account_id: account_id.to_owned(),
                    amount_cents,
                    kind: kind.to_owned(),
                    status: "pending".into(),
                    payment_intent_id: None,
                    error: None,
                    created_at_ms: now,
                    updated_at_ms: now,
                };
                // Stored (flushed) before Stripe is asked: a crash mid-call leaves a pending
                // attempt that the webhook or the reconciler resolves.
                self.save_attempt(&mut attempt).await?;
                attempt
            }
        };
        let request = ChargeRequest {
            customer_id,
            payment_method_id: card.payment_method_id,
            amount_cents,
            idempotency_key: attempt.idempotency_key.clone(),
            account_id: account_id.to_owned(),
            attempt_id: attempt.id.clone(),
            kind: kind.to_owned(),
        };
        let mut tries = 0;
        loop {
            match self.0.payments.charge_saved_card(request.clone()).await {
                Ok(charge) => {
                    return Ok(self.finish_attempt(&mut attempt, &charge.payment_id, charge.amount_cents).await?.money)
                }
                // Nothing was charged: the attempt is over.
                Err(error @ (PaymentError::CardDeclined { .. } | PaymentError::NoCard)) => {
                    attempt.status = "failed".into();
                    attempt.error = Some(error.to_string());
                    self.save_attempt(&mut attempt).await?;
                    return Err(error.into());
                }
                // No answer, or one we cannot read: Stripe may have charged. Same key again.
                Err(error) => {
                    attempt.status = "unknown".into();
                    attempt.error = Some(error.to_string());
                    self.save_attempt(&mut attempt).await?;
                    tries += 1;
                    if tries > CHARGE_RETRIES || !matches!(error, PaymentError::Upstream(_)) {
                        tracing::warn!(account = %account_id, attempt = %attempt.id, %error, "a card charge's outcome is unknown");
                        return Err(match error {
                            PaymentError::Upstream(detail) => EngineError::Unavailable(format!(
                                "The payment processor did not confirm this charge ({detail}). It is credited once if \
                                 it went through; asking again for the same amount retries it without charging twice"
                            )),
                            other => other.into(),
                        });
                    }
                    tokio::time::sleep(CHARGE_RETRY_BACKOFF * tries).await;
                }
            }
        }
    }

    /// `POST /v1/billing/add`: a top-up on the saved card; the first activation payment of a
    /// self-serve account also returns its first key when the checklist is then complete.
    pub async fn top_up(
        &self,
        account_id: &str,
        amount_usd: Option<f64>,
        activate_key_name: Option<String>,
    ) -> Result<(AccountMoney, Option<(KeyView, String)>), EngineError> {
        // No card can be saved on a server without a card processor: say so, rather than
        // "no saved card: add one with a checkout first" (checkout is refused there too).
        if self.0.payments.kind() == "manual" {
            return Err(PaymentError::NotSupported(crate::money::payments::manual::NOT_SUPPORTED.into()).into());
        }
        let amount = match amount_usd {
            Some(a) => a,
            None => self.auto_pay(account_id)?.1,
        };
        self.check_amount(amount)?;
        let money = {
            let _guard = self.funding_guard(account_id).await;
            self.charge_card(account_id, amount, "top_up").await?
        };
        let status = self.activation(account_id).await?;
        let activated = if status.requires_first_key_activation && status.ready_for_first_key {
            let name = activate_key_name.unwrap_or_else(|| "first key".into());
            Some(self.0.directory.create_key(account_id, NewKey { name: Some(name), ..NewKey::default() }).await?)
        } else {
            None
        };
        Ok((money, activated))
    }

    /// After a charge: when auto pay is on and the balance fell under the threshold, top up in
    /// the background (one attempt at a time per account).
    pub(crate) fn maybe_auto_pay(&self, account_id: &str, money: AccountMoney) {
        let threshold = usd_to_units(self.0.settings.auto_pay_threshold_usd);
        if money.balance_units() >= threshold || self.0.payments.kind() == "manual" {
            return;
        }
        let Ok(profile) = self.profile(account_id) else { return };
        let (Some(amount), true, Some(_)) = (profile.auto_pay_amount_usd, profile.auto_pay_enabled, &profile.card)
        else {
            return;
        };
        if self.0.auto_pay_in_flight.insert(account_id.to_owned(), ()).is_some() {
            return;
        }
        // The flag clears when the job's spec is dropped: once the supervisor forgets the
        // finished job, or at once if the job never starts. Never while one may still run.
        let in_flight = Arc::new(AutoPayInFlight { funding: self.clone(), account_id: account_id.into() });
        let job: crate::tree::task::Job = Arc::new(move || {
            let in_flight = in_flight.clone();
            Box::pin(async move {
                let (engine, account_id) = (&in_flight.funding, &in_flight.account_id);
                let _guard = engine.funding_guard(account_id).await;
                // Checked again under the lock: another top-up may have landed meanwhile.
                let result = match engine.money(account_id).await {
                    Ok(now) if now.balance_units() >= threshold => Ok(()),
                    _ => engine.charge_card(account_id, amount, "auto_pay").await.map(|_| ()),
                };
                result.map_err(|error| format!("auto pay failed: {error}"))
            })
        });
        // Temporary: a failed attempt is recorded, and the next charge under the threshold
        // tries again.
        let spec = TaskSpec::once(format!("autopay:{account_id}"), "autopay", Restart::Temporary, job);
        supervisor::adopt(&self.0.registry, crate::tree::task::TASKS, Arc::new(spec));
    }
    /// Usage rows of an account, newest first, strictly before `before_us`. Waits for the
    /// ledger to commit first, so a client sees the rows of every answer it has received.
    pub async fn usage_page(
        &self,
        account_id: &str,
        filter: &UsageFilter,
        before_us: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<UsageRow>, bool), EngineError> {
        self.0.ledger.commit().await?;
        Ok(self.0.store.ledger.usage_page(account_id, filter, before_us, limit)?)
    }

    /// An account's daily usage rollups for days `from_day..=to_day` (after a commit, as above).
    pub async fn rollups(
        &self,
        account_id: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<tokaroo_storage::records::RollupCell>, EngineError> {
        self.0.ledger.commit().await?;
        Ok(self.0.store.ledger.rollups(account_id, from_day, to_day)?)
    }

    pub async fn money(&self, account_id: &str) -> Result<AccountMoney, EngineError> {
        Ok(self.0.ledger.money(account_id).await?)
    }

    /// Adds credits to an account (operator top-ups and completed payments).
    pub async fn add_credit(
        &self,
        account_id: &str,
        amount_usd: f64,
        source: &str,
        reference: Option<String>,
        note: Option<String>,
    ) -> Result<crate::money::ledger::CreditOutcome, EngineError> {
        if !(amount_usd.is_finite() && amount_usd > 0.0 && amount_usd <= 1_000_000.0) {
            return Err(EngineError::invalid("amount_usd must be a positive number of dollars, at most 1000000"));
        }
        if self.0.store.accounts.get(&account_id)?.is_none() {
            return Err(EngineError::NotFound { what: "Account" });
        }
        let credit = Credit {
            // A processor's payment id makes the credit idempotent: the same payment twice is one credit.
            id: reference.clone().unwrap_or_else(crate::clock::new_id),
            account_id: account_id.to_owned(),
            amount_units: usd_to_units(amount_usd),
            source: source.to_owned(),
            reference,
            note,
            created_at_us: 0,
        };
        let payment = credit.reference.clone();
        let outcome = self.0.ledger.credit(credit, self.0.settings.credit_timeout).await?;
        if let Some(payment) = &payment {
            // Refunds or disputes that came first. The credit stands either way; one that
            // could not be taken back stays pending, in the log for the operator.
            if let Err(error) = self.apply_pending_adjustments(payment).await {
                tracing::error!(%error, %payment, "could not take back an adjustment reported before its credit");
            }
        }
        Ok(outcome)
    }

    /// A workspace's charges this calendar month (UTC).
    pub async fn workspace_month_spend_usd(&self, account_id: &str, slug: &str) -> Result<f64, EngineError> {
        Ok(units_to_usd(self.0.ledger.month_spend(account_id, slug).await?))
    }

    /// Recomputes balances from the ledger's rows and credits; lines with drift are errors.
    pub async fn reconcile(&self) -> Result<Vec<crate::money::ledger::ReconcileLine>, EngineError> {
        Ok(self.0.ledger.reconcile().await?)
    }

    /// Waits until everything the ledger logged is applied to storage (shutdown).
    pub(crate) async fn commit_ledger(&self) -> Result<(), EngineError> {
        Ok(self.0.ledger.commit().await?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::Engine;

    /// A whole engine on a temporary directory, bootstrapped, with the default settings: no
    /// provider (the simulator answers) and the manual payment processor.
    pub(crate) async fn engine() -> (Engine, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = tokaroo_storage::Store::open(dir.path()).unwrap();
        let engine = Engine::start(store, EngineConfig::default()).await.unwrap();
        engine.directory().bootstrap().await.unwrap().expect("a fresh store bootstraps");
        (engine, dir)
    }

    fn invalid(result: Result<impl std::fmt::Debug, EngineError>) -> String {
        match result {
            Err(EngineError::Invalid(message)) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn credits_of_bad_amounts_and_for_unknown_accounts_are_refused() {
        let (engine, _dir) = engine().await;
        let funding = engine.funding();
        let (account, _) = engine.directory().create_account("acme", false).await.unwrap();
        for bad in [0.0, -5.0, f64::NAN, f64::INFINITY, 1_000_000.01] {
            assert_eq!(
                invalid(funding.add_credit(&account.id, bad, "operator", None, None).await),
                "amount_usd must be a positive number of dollars, at most 1000000",
                "{bad}"
            );
        }
        assert!(matches!(
            funding.add_credit("no-such-account", 5.0, "operator", None, None).await,
            Err(EngineError::NotFound { what: "Account" })
        ));
        assert_eq!(funding.money(&account.id).await.unwrap(), Default::default(), "nothing was credited");
        let most = funding.add_credit(&account.id, 1_000_000.0, "operator", None, None).await.unwrap();
        assert_eq!(most.money.credited_units, usd_to_units(1_000_000.0), "the upper bound itself is allowed");
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn the_same_payment_credited_twice_counts_once() {
        let (engine, _dir) = engine().await;
        let funding = engine.funding();
        let (account, _) = engine.directory().create_account("acme", false).await.unwrap();
        let pay = || funding.add_credit(&account.id, 12.5, "checkout", Some("pi_123".into()), None);
        let first = pay().await.unwrap();
        let again = pay().await.unwrap();
        assert!(first.applied && !again.applied);
        assert_eq!(again.money.balance_units(), usd_to_units(12.5));
        // Credits without a reference are distinct operator top-ups.
        funding.add_credit(&account.id, 1.0, "operator", None, None).await.unwrap();
        funding.add_credit(&account.id, 1.0, "operator", None, None).await.unwrap();
        assert_eq!(funding.money(&account.id).await.unwrap().balance_units(), usd_to_units(14.5));
        let credits = funding.credits(&account.id).await.unwrap();
        assert_eq!(credits.len(), 3);
        assert_eq!(credits.iter().filter(|c| c.reference.as_deref() == Some("pi_123")).count(), 1);
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_fresh_self_serve_account_misses_every_activation_requirement_until_it_meets_them() {
        let (engine, _dir) = engine().await;
        let funding = engine.funding();
        let (account, _) = engine.directory().create_account("signup", true).await.unwrap();
        let status = funding.activation(&account.id).await.unwrap();
        assert_eq!(status.missing_requirements, ["payment", "saved_card", "auto_pay", "terms_acceptance"]);
        assert!(status.requires_first_key_activation && !status.ready_for_first_key && !status.has_api_key);
        assert!(!status.ready_for_activation_payment && !status.funded && status.balance_usd == 0.0);
        assert_eq!(status.payments_url, "http://127.0.0.1:8080/v1/billing/activation");

        // The first key waits for the checklist.
        match engine.directory().create_key(&account.id, crate::NewKey::default()).await {
            Err(EngineError::ActivationRequired { missing, .. }) => {
                assert_eq!(missing, ["payment", "saved_card", "auto_pay", "terms_acceptance"])
            }
            other => panic!("{:?}", other.map(|(k, _)| k.record.id)),
        }

        let accepted = funding.accept_terms(&account.id).await.unwrap();
        assert_eq!(accepted.missing_requirements, ["payment", "saved_card", "auto_pay"]);
        assert!(accepted.activation_terms_accepted && accepted.activation_terms_accepted_at.is_some());
        assert_eq!(accepted.activation_terms_version, "2026-11");
        assert_eq!(funding.set_auto_pay(&account.id, Some(true), None).await.unwrap(), (true, 5.0));
        let status = funding.activation(&account.id).await.unwrap();
        assert_eq!(status.missing_requirements, ["payment", "saved_card"]);
        assert!(status.ready_for_activation_payment, "terms and auto pay come before the activation payment");
        // An operator's credit is not a payment: the checklist still asks for one.
        funding.add_credit(&account.id, 10.0, "operator", None, None).await.unwrap();
        let status = funding.activation(&account.id).await.unwrap();
        assert_eq!((status.balance_usd, status.missing_requirements.len()), (10.0, 2));
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn an_account_the_operator_creates_needs_no_activation() {
        let (engine, _dir) = engine().await;
        let (account, _) = engine.directory().create_account("managed tenant", false).await.unwrap();
        let status = engine.funding().activation(&account.id).await.unwrap();
        assert!(!status.requires_first_key_activation && status.ready_for_first_key);
        engine.directory().create_key(&account.id, crate::NewKey::default()).await.unwrap();
        assert!(matches!(
            engine.funding().activation("no-such-account").await,
            Err(EngineError::NotFound { what: "Account" })
        ));
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn without_a_card_processor_checkouts_top_ups_and_cards_are_refused() {
        let (engine, _dir) = engine().await;
        let funding = engine.funding();
        let (account, _) = engine.directory().create_account("acme", false).await.unwrap();
        let manual = crate::money::payments::manual::NOT_SUPPORTED;
        assert_eq!(invalid(funding.checkout(&account.id, 20.0).await), manual);
        assert_eq!(invalid(funding.checkout(&account.id, 1.0).await), "amount_usd must be between 5 and 100000");
        assert_eq!(invalid(funding.saved_card(&account.id)), manual);
        assert_eq!(invalid(funding.remove_card(&account.id).await), manual);
        // No card can ever be saved here: a top-up says card payments are off (not "add a
        // card with a checkout", which is refused too).
        for amount in [Some(20.0), Some(0.5), None] {
            assert_eq!(invalid(funding.top_up(&account.id, amount, None).await.map(|(m, _)| m)), manual, "{amount:?}");
        }
        assert_eq!(funding.money(&account.id).await.unwrap().balance_units(), 0);
        assert!(funding.payment_attempts(&account.id).unwrap().is_empty(), "no attempt is recorded");
        let reconciled = funding.reconcile_payments().await.unwrap();
        assert_eq!(reconciled.customers, 0, "the manual processor has nothing to reconcile");
        engine.shutdown().await.unwrap();
    }
}
