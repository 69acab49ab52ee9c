//! How accounts get money: Checkout, direct top-ups on the saved card, auto pay, and the
//! first-key activation checklist of self-serve accounts. The processor ([`PaymentProcessor`])
//! moves the money; the ledger credits it, keyed by the processor's payment id so one payment
//! is never credited twice (a webhook and a poll may both report it).

use std::sync::Arc;

use serde::Serialize;
use tokaroo_storage::records::{BillingProfile, SavedCard};

use crate::{
    billing::{units_to_usd, usd_to_units},
    ledger::AccountMoney,
    payments::{ChargeRequest, CheckoutRequest, CheckoutSession, CompletedCheckout, PaymentError},
    Engine, EngineError, KeyView, NewKey,
};

/// The `[billing]` settings the engine needs.
#[derive(Debug, Clone)]
pub struct FundingSettings {
    /// Smallest checkout or top-up, in USD.
    pub min_payment_usd: f64,
    pub terms_version: String,
    /// Where clients reach this server (links in answers).
    pub public_url: String,
    pub terms_url: String,
    /// Auto pay tops an account up when its balance falls below this.
    pub auto_pay_threshold_usd: f64,
}

impl Default for FundingSettings {
    fn default() -> Self {
        Self {
            min_payment_usd: 5.0,
            terms_version: "2026-11".into(),
            public_url: "http://127.0.0.1:8080".into(),
            terms_url: "http://127.0.0.1:8080/v1/billing/activation".into(),
            auto_pay_threshold_usd: 5.0,
        }
    }
}

impl FundingSettings {
    pub fn payments_url(&self) -> String {
        format!("{}/v1/billing/activation", self.public_url)
    }
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

impl Engine {
    fn profile(&self, account_id: &str) -> Result<BillingProfile, EngineError> {
        Ok(self
            .store()
            .billing
            .get(&account_id)?
            .unwrap_or_else(|| BillingProfile { account_id: account_id.to_owned(), ..BillingProfile::default() }))
    }

    async fn save_profile(&self, profile: &BillingProfile) -> Result<(), EngineError> {
        self.store().billing.insert(&profile.account_id.as_str(), profile)?;
        self.store().flush().await?;
        Ok(())
    }

    fn check_amount(&self, amount_usd: f64) -> Result<(), EngineError> {
        let min = self.config.funding.min_payment_usd;
        if !(amount_usd.is_finite() && amount_usd >= min && amount_usd <= 100_000.0) {
            return Err(EngineError::invalid(format!("amount_usd must be between {min} and 100000")));
        }
        Ok(())
    }

    async fn customer_id(&self, profile: &mut BillingProfile) -> Result<String, EngineError> {
        if let Some(id) = &profile.customer_id {
            return Ok(id.clone());
        }
        let name = self.store().accounts.get(&profile.account_id.as_str())?.map(|a| a.name).unwrap_or_default();
        let id = self.payments.create_customer(&profile.account_id, &name).await?;
        profile.customer_id = Some(id.clone());
        self.save_profile(profile).await?;
        Ok(id)
    }

    /// `POST /v1/billing/checkout`: a hosted page to pay `amount_usd` and save the card.
    pub async fn checkout(&self, account_id: &str, amount_usd: f64) -> Result<CheckoutSession, EngineError> {
        self.check_amount(amount_usd)?;
        let _guard = self.shared.funding_lock.lock().await;
        let mut profile = self.profile(account_id)?;
        let customer_id = self.customer_id(&mut profile).await?;
        let back = self.config.funding.payments_url();
        let session = self
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
        let _guard = self.shared.funding_lock.lock().await;
        self.complete_checkout_locked(paid).await
    }

    async fn complete_checkout_locked(&self, paid: CompletedCheckout) -> Result<(), EngineError> {
        let mut profile = self.profile(&paid.account_id)?;
        let Some(pos) = profile.pending_checkouts.iter().position(|s| *s == paid.session_id) else {
            return Ok(()); // already credited (or never ours)
        };
        let amount_usd = paid.amount_cents as f64 / 100.0;
        self.add_credit(&paid.account_id, amount_usd, "checkout", Some(paid.payment_id.clone()), None).await?;
        profile.pending_checkouts.remove(pos);
        profile.successful_payments += 1;
        let card = match (paid.card, &paid.payment_method_id) {
            (Some(card), _) => Some(card),
            (None, Some(pm)) => self.payments.card_details(pm).await.ok(),
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
        let _guard = self.shared.funding_lock.lock().await;
        for session_id in self.profile(account_id)?.pending_checkouts {
            if let Some(paid) = self.payments.checkout_result(&session_id).await? {
                self.complete_checkout_locked(paid).await?;
            }
        }
        Ok(())
    }

    /// `POST /v1/billing/webhook`: a signed processor event.
    pub async fn payment_webhook(&self, payload: &[u8], signature: &str) -> Result<(), EngineError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some(paid) = self.payments.parse_webhook(payload, signature, now)? {
            // The event carries no card; the session does.
            let paid = match self.payments.checkout_result(&paid.session_id).await {
                Ok(Some(full)) => full,
                _ => paid,
            };
            self.complete_checkout(paid).await?;
        }
        Ok(())
    }

    pub async fn activation(&self, account_id: &str) -> Result<ActivationStatus, EngineError> {
        if !self.profile(account_id)?.pending_checkouts.is_empty() {
            if let Err(error) = self.sync_checkouts(account_id).await {
                tracing::warn!(%error, "could not check pending checkouts");
            }
        }
        let profile = self.profile(account_id)?;
        let account = self.store().accounts.get(&account_id)?.ok_or(EngineError::NotFound { what: "Account" })?;
        let key_count = self.list_keys(account_id)?.len();
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
            activation_terms_accepted_at: profile.terms_accepted_at_ms.map(crate::iso8601),
            activation_terms_version: profile
                .terms_version
                .clone()
                .unwrap_or(self.config.funding.terms_version.clone()),
            ready_for_activation_payment: terms_accepted && profile.auto_pay_enabled,
            ready_for_first_key: !requires || missing.is_empty(),
            missing_requirements: missing,
            payments_url: self.config.funding.payments_url(),
            terms_url: self.config.funding.terms_url.clone(),
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
            let _guard = self.shared.funding_lock.lock().await;
            let mut profile = self.profile(account_id)?;
            profile.terms_accepted_at_ms = Some(crate::now_ms());
            profile.terms_version = Some(self.config.funding.terms_version.clone());
            self.save_profile(&profile).await?;
        }
        self.activation(account_id).await
    }

    pub fn auto_pay(&self, account_id: &str) -> Result<(bool, f64), EngineError> {
        let p = self.profile(account_id)?;
        Ok((p.auto_pay_enabled, p.auto_pay_amount_usd.unwrap_or(self.config.funding.min_payment_usd)))
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
        let _guard = self.shared.funding_lock.lock().await;
        let mut profile = self.profile(account_id)?;
        if let Some(amount) = amount_usd {
            profile.auto_pay_amount_usd = Some(amount);
        }
        if let Some(enabled) = enabled {
            profile.auto_pay_enabled = enabled;
            if enabled && profile.auto_pay_amount_usd.is_none() {
                profile.auto_pay_amount_usd = Some(self.config.funding.min_payment_usd);
            }
        }
        self.save_profile(&profile).await?;
        Ok((profile.auto_pay_enabled, profile.auto_pay_amount_usd.unwrap_or(self.config.funding.min_payment_usd)))
    }

    pub fn saved_card(&self, account_id: &str) -> Result<Option<SavedCard>, EngineError> {
        if self.payments.kind() == "manual" {
            return Err(PaymentError::NotSupported(crate::payments::manual::NOT_SUPPORTED.into()).into());
        }
        Ok(self.profile(account_id)?.card)
    }

    pub async fn remove_card(&self, account_id: &str) -> Result<(), EngineError> {
        self.saved_card(account_id)?;
        let _guard = self.shared.funding_lock.lock().await;
        let mut profile = self.profile(account_id)?;
        let card = profile.card.take().ok_or(PaymentError::NoCard)?;
        self.payments.detach_card(&card.payment_method_id).await?;
        self.save_profile(&profile).await
    }

    /// Charges the saved card `amount_usd` now and credits it. `key` makes retries of one
    /// top-up charge once.
    async fn charge_card(
        &self,
        account_id: &str,
        amount_usd: f64,
        key: String,
        source: &str,
    ) -> Result<AccountMoney, EngineError> {
        let mut profile = self.profile(account_id)?;
        let card = profile.card.clone().ok_or(PaymentError::NoCard)?;
        let customer_id = self.customer_id(&mut profile).await?;
        let charge = self
            .payments
            .charge_saved_card(ChargeRequest {
                customer_id,
                payment_method_id: card.payment_method_id,
                amount_cents: cents(amount_usd),
                idempotency_key: key,
                account_id: account_id.to_owned(),
            })
            .await?;
        let money = self
            .add_credit(account_id, charge.amount_cents as f64 / 100.0, source, Some(charge.payment_id), None)
            .await?;
        let mut profile = self.profile(account_id)?;
        profile.successful_payments += 1;
        self.save_profile(&profile).await?;
        Ok(money)
    }

    /// `POST /v1/billing/add`: a top-up on the saved card; the first activation payment of a
    /// self-serve account also returns its first key when the checklist is then complete.
    pub async fn top_up(
        &self,
        account_id: &str,
        amount_usd: Option<f64>,
        activate_key_name: Option<String>,
    ) -> Result<(AccountMoney, Option<(KeyView, String)>), EngineError> {
        let amount = match amount_usd {
            Some(a) => a,
            None => self.auto_pay(account_id)?.1,
        };
        self.check_amount(amount)?;
        let money = {
            let _guard = self.shared.funding_lock.lock().await;
            self.charge_card(account_id, amount, crate::new_id(), "top_up").await?
        };
        let status = self.activation(account_id).await?;
        let activated = if status.requires_first_key_activation && status.ready_for_first_key {
            let name = activate_key_name.unwrap_or_else(|| "first key".into());
            Some(self.create_key(account_id, NewKey { name: Some(name), ..NewKey::default() }).await?)
        } else {
            None
        };
        Ok((money, activated))
    }

    /// After a charge: when auto pay is on and the balance fell under the threshold, top up in
    /// the background (one attempt at a time per account).
    pub(crate) fn maybe_auto_pay(&self, account_id: &str, money: AccountMoney) {
        let threshold = usd_to_units(self.config.funding.auto_pay_threshold_usd);
        if money.balance_units() >= threshold || self.payments.kind() == "manual" {
            return;
        }
        let Ok(profile) = self.profile(account_id) else { return };
        let (Some(amount), true, Some(_)) = (profile.auto_pay_amount_usd, profile.auto_pay_enabled, &profile.card)
        else {
            return;
        };
        if self.shared.auto_pay_in_flight.insert(account_id.to_owned(), ()).is_some() {
            return;
        }
        let engine = self.clone();
        let account_id: Arc<str> = account_id.into();
        tokio::spawn(async move {
            let result = {
                let _guard = engine.shared.funding_lock.lock().await;
                // Checked again under the lock: another top-up may have landed meanwhile.
                match engine.money(&account_id).await {
                    Ok(now) if now.balance_units() >= threshold => Ok(()),
                    _ => engine.charge_card(&account_id, amount, crate::new_id(), "auto_pay").await.map(|_| ()),
                }
            };
            if let Err(error) = result {
                tracing::warn!(account = %account_id, %error, "auto pay failed");
            }
            engine.shared.auto_pay_in_flight.remove(&*account_id);
        });
    }
}
