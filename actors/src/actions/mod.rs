//! Action guardrails: policies over the actions agents describe before they run a tool, and
//! the check that decides `allow`, `deny` or `approval_required` (`engine.actions()`).
//!
//! A policy matches a check when every field it constrains matches one of its glob patterns
//! (`*` any run of characters, `?` one), the requested amount is in its range, and its
//! metadata patterns match. Among the active policies that match, deny wins over approval
//! over allow; among equals, the most specific (workspace over account-wide, then more
//! constrained fields), then the higher priority. With none, the default of the action's
//! risk level applies. A requested amount above the mission's remaining budget or the
//! account's balance is denied whatever the policies say. Every check is an audit event; an
//! approval decision leaves a pending approval (one per external identity).

pub mod glob;
pub mod index;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde_json::{json, Map, Value};
use tokaroo_storage::{
    actions::{ActionApproval, ActionAudit, ActionPolicy, ApprovalRef},
    Store,
};

use self::index::PolicyIndex;
use crate::{
    directory::state::DirectoryState, error::EngineError, harness::Missions, knowledge::KbScope,
    money::billing::usd_to_units, money::ledger::LedgerClient,
};

pub use tokaroo_storage::actions;

/// The check's fields a policy can constrain with patterns.
pub const FIELDS: [&str; 9] =
    ["app", "mission_id", "task_id", "actor_ref", "tool_ref", "action_type", "operation", "access_level", "risk_level"];
pub const EFFECTS: [&str; 3] = ["allow", "approval", "deny"];
pub const RISK_LEVELS: [&str; 4] = ["low", "medium", "high", "critical"];
const MAX_PATTERNS_PER_FIELD: usize = 32;
/// Also keeps specificity below a workspace's bonus (1000).
const MAX_METADATA_KEYS: usize = 32;
const MAX_PATTERN_CHARS: usize = 256;
const MAX_POLICIES_PER_ACCOUNT: usize = 100_000;
const MAX_AMOUNT_USD: f64 = 1_000_000_000.0;

/// The operator's settings (`[actions]`).
#[derive(Debug, Clone)]
pub struct ActionSettings {
    /// The effect for a check no policy matches, by risk level (a check without one is
    /// `medium`).
    pub defaults: [(&'static str, &'static str); 4],
    /// How long an approval stays pending before it expires.
    pub approval_ttl_secs: u64,
}

impl Default for ActionSettings {
    fn default() -> Self {
        Self {
            defaults: [("low", "allow"), ("medium", "approval"), ("high", "deny"), ("critical", "deny")],
            approval_ttl_secs: 24 * 3600,
        }
    }
}

/// A policy to create or (same name in the same scope) replace.
#[derive(Debug, Clone, Default)]
pub struct PolicyInput {
    pub name: String,
    pub description: Option<String>,
    pub effect: String,
    pub priority: Option<i64>,
    pub status: Option<String>,
    /// `field: pattern | [patterns]`, `requested_amount_usd: {min, max}`, `metadata: {key:
    /// pattern | [patterns]}`.
    pub matches: Map<String, Value>,
}

/// An action to check.
#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    /// The values of [`FIELDS`] (absent ones match only policies that leave them free).
    pub fields: HashMap<String, String>,
    pub requested_amount_usd: Option<f64>,
    pub metadata: Map<String, Value>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    /// Who asks (`key:...`, `session:...`), for the audit.
    pub by: String,
}

/// What a check decided.
#[derive(Debug, Clone)]
pub struct Decision {
    /// `allow`, `deny` or `approval_required`.
    pub decision: &'static str,
    pub policy: Option<ActionPolicy>,
    pub reason: String,
    pub approval: Option<ActionApproval>,
    pub audit_id: String,
}

#[derive(Clone)]
pub struct Actions(Arc<ActionsParts>);

struct ActionsParts {
    store: Store,
    directory: Arc<DirectoryState>,
    ledger: LedgerClient,
    missions: Missions,
    settings: ActionSettings,
    /// Each account's policies, read once and dropped when one of them is written.
    policies: Mutex<PolicyCache>,
    /// Approvals by external identity are created one at a time.
    approving: tokio::sync::Mutex<()>,
}

/// An account's policies as read from the store, and compiled for checks.
pub struct AccountPolicies {
    pub all: Vec<ActionPolicy>,
    pub index: PolicyIndex,
}

#[derive(Default)]
struct PolicyCache {
    accounts: HashMap<String, Arc<AccountPolicies>>,
    /// Per account, bumped by every policy write, so a read that raced a write is not kept
    /// (and one tenant's writes never hold back another's reads).
    generations: HashMap<String, u64>,
}

/// A time-ordered audit event id (`au_` and a UUIDv7), so pages read newest first by key.
fn new_audit_id() -> String {
    format!("au_{}", uuid::Uuid::now_v7().simple())
}

fn invalid(message: String) -> EngineError {
    EngineError::Invalid(message)
}

/// A `pattern | [patterns]` value, checked.
fn patterns(field: &str, value: &Value) -> Result<Vec<String>, EngineError> {
    let list: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    if list.is_empty() || list.len() > MAX_PATTERNS_PER_FIELD {
        return Err(invalid(format!("{field} must be a pattern or a list of 1 to {MAX_PATTERNS_PER_FIELD} patterns")));
    }
    list.into_iter()
        .map(|p| match p.as_str() {
            Some(p) if !p.is_empty() && p.chars().count() <= MAX_PATTERN_CHARS && !p.chars().any(char::is_control) => {
                Ok(p.to_owned())
            }
            _ => Err(invalid(format!(
                "{field} patterns must be strings of 1 to {MAX_PATTERN_CHARS} characters without control characters \
                 (`*` matches any run of characters, `?` one)"
            ))),
        })
        .collect()
}

fn amount(field: &str, value: Option<&Value>) -> Result<Option<i64>, EngineError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(usd) if usd.is_finite() && (0.0..=MAX_AMOUNT_USD).contains(&usd) => Ok(Some(usd_to_units(usd))),
            _ => Err(invalid(format!("{field} must be a number from 0 to {MAX_AMOUNT_USD}"))),
        },
    }
}

/// A policy as it would be stored in `workspace` (`""`: account-wide), checked: a bad
/// pattern, effect, status or range is `Invalid` naming the field. It gets a new id.
pub fn compile_policy(
    account_id: &str,
    workspace: &str,
    input: PolicyInput,
    now_ms: i64,
) -> Result<ActionPolicy, EngineError> {
    let (patterns, min, max, metadata) = input.checked_matches()?;
    if let Some(description) = &input.description {
        if description.chars().count() > 4_000 {
            return Err(invalid("description must be at most 4000 characters".into()));
        }
    }
    Ok(ActionPolicy {
        id: format!("pol_{}", uuid::Uuid::now_v7().simple()),
        account_id: account_id.to_owned(),
        workspace: workspace.to_owned(),
        name: input.name,
        description: input.description,
        effect: input.effect,
        priority: input.priority.unwrap_or(0),
        status: input.status.unwrap_or_else(|| "active".into()),
        patterns,
        amount_min_units: min,
        amount_max_units: max,
        metadata,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    })
}

impl PolicyInput {
    /// The checked parts of a policy: field patterns, amount range, metadata patterns.
    #[allow(clippy::type_complexity)]
    fn checked_matches(
        &self,
    ) -> Result<(Vec<(String, Vec<String>)>, Option<i64>, Option<i64>, Vec<(String, Vec<String>)>), EngineError> {
        crate::harness::inputs::check_id("name", &self.name)?;
        if !EFFECTS.contains(&self.effect.as_str()) {
            return Err(invalid(format!("effect must be one of {}; got {:?}", EFFECTS.join(", "), self.effect)));
        }
        if let Some(status) = &self.status {
            if !matches!(status.as_str(), "active" | "disabled") {
                return Err(invalid(format!("status must be active or disabled; got {status:?}")));
            }
        }
        let mut fields = Vec::new();
        let (mut min, mut max) = (None, None);
        let mut metadata = Vec::new();
        for (field, value) in &self.matches {
            match field.as_str() {
                "requested_amount_usd" => {
                    let Value::Object(range) = value else {
                        return Err(invalid("match.requested_amount_usd must be {\"min\": n, \"max\": n}".into()));
                    };
                    if let Some(other) = range.keys().find(|k| !matches!(k.as_str(), "min" | "max")) {
                        return Err(invalid(format!("match.requested_amount_usd.{other} is not min or max")));
                    }
                    min = amount("match.requested_amount_usd.min", range.get("min"))?;
                    max = amount("match.requested_amount_usd.max", range.get("max"))?;
                    if let (Some(lo), Some(hi)) = (min, max) {
                        if lo > hi {
                            return Err(invalid(
                                "match.requested_amount_usd: min is above max, so nothing matches".into(),
                            ));
                        }
                    }
                }
                "metadata" => {
                    let Value::Object(keys) = value else {
                        return Err(invalid("match.metadata must be an object of key: pattern".into()));
                    };
                    if keys.len() > MAX_METADATA_KEYS {
                        return Err(invalid(format!("match.metadata may name at most {MAX_METADATA_KEYS} keys")));
                    }
                    for (key, value) in keys {
                        crate::harness::inputs::check_id("match.metadata key", key)?;
                        metadata.push((key.clone(), patterns(&format!("match.metadata.{key}"), value)?));
                    }
                }
                field if FIELDS.contains(&field) => {
                    fields.push((field.to_owned(), patterns(&format!("match.{field}"), value)?))
                }
                other => {
                    return Err(invalid(format!(
                    "match.{other} is not a field of a check; a policy matches {}, requested_amount_usd and metadata",
                    FIELDS.join(", ")
                )))
                }
            }
        }
        fields.sort();
        metadata.sort();
        Ok((fields, min, max, metadata))
    }
}

impl Actions {
    pub(crate) fn new(
        store: Store,
        directory: Arc<DirectoryState>,
        ledger: LedgerClient,
        missions: Missions,
        settings: ActionSettings,
    ) -> Self {
        Self(Arc::new(ActionsParts {
            store,
            directory,
            ledger,
            missions,
            settings,
            policies: Mutex::default(),
            approving: tokio::sync::Mutex::new(()),
        }))
    }

    /// Creates a policy, or replaces the one of that name in the same scope.
    pub async fn upsert_policy(
        &self,
        scope: &KbScope,
        input: PolicyInput,
    ) -> Result<(ActionPolicy, bool), EngineError> {
        let now = crate::clock::now_ms();
        let mut policy = compile_policy(&scope.account_id, &scope.workspace, input, now)?;
        let store = &self.0.store;
        let key = (scope.account_id.as_str(), scope.workspace.as_str(), policy.name.as_str());
        let existing = store.action_policies.get(&key)?;
        if existing.is_none()
            && store.action_policies.count_prefix(&(scope.account_id.as_str(),)) >= MAX_POLICIES_PER_ACCOUNT
        {
            return Err(invalid(format!("this account has {MAX_POLICIES_PER_ACCOUNT} policies, the most it may have")));
        }
        if let Some(existing) = &existing {
            policy.id = existing.id.clone();
            policy.created_at_ms = existing.created_at_ms;
        }
        store.action_policies.insert(&key, &policy)?;
        // Forgotten before the flush: a failed flush must not leave checks on the old set.
        {
            let mut cache = self.0.policies.lock().unwrap_or_else(|p| p.into_inner());
            *cache.generations.entry(scope.account_id.clone()).or_default() += 1;
            cache.accounts.remove(&scope.account_id);
        }
        store.flush().await?;
        Ok((policy, existing.is_none()))
    }

    /// An account's policies (from memory after the first read). Reading and indexing up to
    /// [`MAX_POLICIES_PER_ACCOUNT`] runs on a blocking thread, off the request workers.
    async fn account_policies(&self, account_id: &str) -> Result<Arc<AccountPolicies>, EngineError> {
        let generation = {
            let cache = self.0.policies.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(cached) = cache.accounts.get(account_id) {
                return Ok(cached.clone());
            }
            cache.generations.get(account_id).copied().unwrap_or(0)
        };
        let (store, account) = (self.0.store.clone(), account_id.to_owned());
        let read = tokio::task::spawn_blocking(move || -> Result<_, EngineError> {
            let all = store.action_policies.scan_prefix(&(account.as_str(),))?;
            Ok(Arc::new(AccountPolicies { index: PolicyIndex::build(&all), all }))
        })
        .await
        .map_err(|e| EngineError::Internal(format!("indexing policies: {e}")))??;
        let mut cache = self.0.policies.lock().unwrap_or_else(|p| p.into_inner());
        if cache.generations.get(account_id).copied().unwrap_or(0) == generation {
            cache.accounts.insert(account_id.to_owned(), read.clone());
        }
        Ok(read)
    }

    /// The policies that apply in a workspace (its own and the account-wide ones); with
    /// `None`, all of the account's.
    pub async fn policies(&self, account_id: &str, workspace: Option<&str>) -> Result<Vec<ActionPolicy>, EngineError> {
        Ok(self
            .account_policies(account_id)
            .await?
            .all
            .iter()
            .filter(|p| workspace.is_none_or(|w| p.workspace.is_empty() || p.workspace == w))
            .cloned()
            .collect())
    }

    /// Decides an action (see the module's doc).
    pub async fn check(&self, scope: &KbScope, input: CheckInput) -> Result<Decision, EngineError> {
        for (field, value) in &input.fields {
            if !FIELDS.contains(&field.as_str()) {
                return Err(invalid(format!("{field} is not a field of a check")));
            }
            crate::harness::inputs::check_id(field, value)?;
        }
        for required in ["app", "tool_ref", "action_type"] {
            if !input.fields.contains_key(required) {
                return Err(invalid(format!("{required} is required")));
            }
        }
        if let Some(risk) = input.fields.get("risk_level") {
            if !RISK_LEVELS.contains(&risk.as_str()) {
                return Err(invalid(format!("risk_level must be one of {}", RISK_LEVELS.join(", "))));
            }
        }
        crate::harness::inputs::check_metadata("metadata", &input.metadata)?;
        let amount_units = amount("requested_amount_usd", input.requested_amount_usd.map(|v| json!(v)).as_ref())?;
        if input.external_source.is_some() != input.external_id.is_some() {
            return Err(invalid("external_source and external_id go together: give both or neither".into()));
        }
        for (field, value) in [("external_source", &input.external_source), ("external_id", &input.external_id)] {
            if let Some(value) = value {
                crate::harness::inputs::check_id(field, value)?;
            }
        }
        let policies = self.account_policies(&scope.account_id).await?;
        let best = policies
            .index
            .decide(&scope.workspace, &input, amount_units)
            .map_err(|_| {
                invalid(format!(
                    "this check's metadata against this account's policies would compare more than {} characters; \
                     shorten its metadata values or simplify the policies' patterns",
                    index::MAX_CHECK_STEPS
                ))
            })?
            .cloned();
        let mission = match input.fields.get("mission_id") {
            Some(reference) => self.0.missions.find(&scope.account_id, &scope.workspace, reference)?,
            None => None,
        };
        let (mut effect, mut reason) = match &best {
            Some(policy) => (policy.effect.clone(), format!("policy {:?} ({})", policy.name, policy.effect)),
            None => {
                let risk = input.fields.get("risk_level").map_or("medium", String::as_str);
                let effect = self.0.settings.defaults.iter().find(|(r, _)| *r == risk).map_or("approval", |(_, e)| e);
                (effect.to_string(), format!("no policy matches; the default for {risk} risk is {effect}"))
            }
        };
        // Spend is checked whatever the policies say.
        if let Some(units) = amount_units {
            if let Some(m) = mission.as_ref().filter(|m| !crate::harness::mission::is_finished(&m.status)) {
                if let Some(budget) = m.budget_units {
                    let remaining = (budget - m.spent_units).max(0);
                    if units > remaining {
                        effect = "deny".into();
                        reason = format!(
                            "requested ${:.6} is more than the mission's remaining budget ${:.6}",
                            crate::money::billing::units_to_usd(units),
                            crate::money::billing::units_to_usd(remaining)
                        );
                    }
                }
            }
            let metered = self.0.directory.operator_account_id().as_deref() != Some(scope.account_id.as_str());
            if metered && effect != "deny" {
                let money =
                    self.0.ledger.money(&scope.account_id).await.map_err(|e| EngineError::Internal(e.to_string()))?;
                let available = money.balance_units() - money.held_units;
                if units > available {
                    effect = "deny".into();
                    reason = format!(
                        "requested ${:.6} is more than the account's available balance ${:.6}",
                        crate::money::billing::units_to_usd(units),
                        crate::money::billing::units_to_usd(available.max(0))
                    );
                }
            }
        }
        let mut action = Map::new();
        for (field, value) in &input.fields {
            action.insert(field.clone(), json!(value));
        }
        if let Some(usd) = input.requested_amount_usd {
            action.insert("requested_amount_usd".into(), json!(usd));
        }
        if !input.metadata.is_empty() {
            action.insert("metadata".into(), Value::Object(input.metadata.clone()));
        }
        let mut decision: &'static str = match effect.as_str() {
            "allow" => "allow",
            "deny" => "deny",
            _ => "approval_required",
        };
        let approval = if decision == "approval_required" {
            let mission_id = mission.as_ref().map(|m| m.id.clone());
            let asking = Asking { scope, input: &input, action: &action, mission: mission_id, policy: best.as_ref() };
            let (approval, status) = self.pending_approval(asking, &reason).await?;
            // A retried check (same external identity) learns what a person decided.
            let by = approval.decided_by.as_deref().unwrap_or("a person");
            match status {
                "approved" => {
                    decision = "allow";
                    reason = format!("approval {} was approved by {by}", approval.id);
                }
                "rejected" => {
                    decision = "deny";
                    reason = format!("approval {} was rejected by {by}", approval.id);
                }
                _ => {}
            }
            Some(approval)
        } else {
            None
        };
        let audit = ActionAudit {
            id: new_audit_id(),
            account_id: scope.account_id.clone(),
            workspace: scope.workspace.clone(),
            event: "checked".into(),
            decision: Some(decision.into()),
            tool_ref: input.fields.get("tool_ref").cloned(),
            mission: mission.map(|m| m.id),
            policy_id: best.as_ref().map(|p| p.id.clone()),
            approval_id: approval.as_ref().map(|a| a.id.clone()),
            reason: Some(reason.clone()),
            action,
            by: input.by.clone(),
            created_at_ms: crate::clock::now_ms(),
        };
        self.0.store.action_audit.insert(&(scope.account_id.as_str(), audit.id.as_str()), &audit)?;
        self.0.store.flush().await?;
        Ok(Decision { decision, policy: best, reason, approval, audit_id: audit.id })
    }

    /// The approval a check asks for, and its effective status: the one its external
    /// identity already names (a retried check; it must be the same action and mission, or
    /// it is a conflict), or a new pending one. The mission of a pending approval is moved
    /// to `waiting_approval` before another decision can be taken, so a decision always
    /// finds it waiting.
    async fn pending_approval(
        &self,
        asking: Asking<'_>,
        reason: &str,
    ) -> Result<(ActionApproval, &'static str), EngineError> {
        let Asking { scope, input, action, mission, policy } = asking;
        let store = &self.0.store;
        let _guard = self.0.approving.lock().await;
        let now = crate::clock::now_ms();
        let identity = input.external_source.as_deref().zip(input.external_id.as_deref());
        let known = match identity {
            Some((source, external)) => {
                let key = (scope.account_id.as_str(), scope.workspace.as_str(), source, external);
                match store.approval_refs.get(&key)? {
                    Some(found) => store.action_approvals.get(&(scope.account_id.as_str(), found.approval.as_str()))?,
                    None => None,
                }
            }
            None => None,
        };
        // An expired one is replaced: the retry asks a person again.
        if let Some(approval) = known.filter(|a| effective_status(a, now) != "expired") {
            if approval.action != *action || approval.mission != mission {
                return Err(EngineError::Conflict(format!(
                    "external_source and external_id already name approval {} for a different action or mission;                      give this action its own external_id",
                    approval.id
                )));
            }
            let status = match effective_status(&approval, now) {
                "approved" => "approved",
                "rejected" => "rejected",
                _ => "pending",
            };
            return Ok((approval, status));
        }
        let ttl_ms = i64::try_from(self.0.settings.approval_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let approval = ActionApproval {
            id: format!("apr_{}", uuid::Uuid::now_v7().simple()),
            account_id: scope.account_id.clone(),
            workspace: scope.workspace.clone(),
            status: "pending".into(),
            action: action.clone(),
            mission,
            policy_id: policy.map(|p| p.id.clone()),
            reason: reason.to_owned(),
            external_source: input.external_source.clone(),
            external_id: input.external_id.clone(),
            decided_by: None,
            decision_note: None,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
            decided_at_ms: None,
        };
        if let Some((source, external)) = identity {
            let key = (scope.account_id.as_str(), scope.workspace.as_str(), source, external);
            store.approval_refs.insert(&key, &ApprovalRef { approval: approval.id.clone() })?;
        }
        store.action_approvals.insert(&(scope.account_id.as_str(), approval.id.as_str()), &approval)?;
        if let Some(mission) = &approval.mission {
            self.move_mission(&scope.account_id, mission, &["pending", "running"], "waiting_approval", None).await;
        }
        Ok((approval, "pending"))
    }
}

/// A check that asks for approval, as [`Actions::pending_approval`] takes it.
struct Asking<'a> {
    scope: &'a KbScope,
    input: &'a CheckInput,
    action: &'a Map<String, Value>,
    mission: Option<String>,
    policy: Option<&'a ActionPolicy>,
}

/// A pending approval past its expiry shows as `expired`.
pub fn effective_status(approval: &ActionApproval, now: i64) -> &str {
    if approval.status == "pending" && now > approval.expires_at_ms {
        "expired"
    } else {
        approval.status.as_str()
    }
}

/// An event an agent reports (`POST /v1/actions/audit`).
#[derive(Debug, Clone, Default)]
pub struct AuditInput {
    pub event: String,
    pub fields: HashMap<String, String>,
    pub approval_id: Option<String>,
    pub reason: Option<String>,
    pub metadata: Map<String, Value>,
    pub by: String,
}

/// `GET /v1/actions/audit` filters.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub workspace: Option<String>,
    pub mission: Option<String>,
    pub tool_ref: Option<String>,
    pub decision: Option<String>,
    pub event: Option<String>,
    pub since_ms: Option<i64>,
    pub before: Option<String>,
    pub limit: usize,
}

pub const AUDIT_EVENTS: [&str; 6] = ["executed", "failed", "blocked", "approved", "rejected", "cancelled"];

impl Actions {
    /// The caller's approvals, newest first (`status` is the effective one).
    pub fn approvals(
        &self,
        access: &crate::harness::Access,
        mission: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ActionApproval>, EngineError> {
        let now = crate::clock::now_ms();
        Ok(self.0.store.action_approvals.page_rev(&(access.account_id.as_str(),), None, limit, 50_000, |a| {
            access.workspace.as_ref().is_none_or(|w| *w == a.workspace)
                && mission.is_none_or(|m| a.mission.as_deref() == Some(m))
                && status.is_none_or(|s| s == effective_status(a, now))
        })?)
    }

    /// Approves or rejects a pending approval, as `by`. Deciding it the same way again
    /// changes nothing; the other way, or once expired, is a 409. The mission waiting on it
    /// moves at once (through its actor): back to `running` when approved, `failed` when
    /// rejected.
    pub async fn decide(
        &self,
        access: &crate::harness::Access,
        id: &str,
        approve: bool,
        note: Option<String>,
        by: &str,
    ) -> Result<ActionApproval, EngineError> {
        let store = &self.0.store;
        if crate::harness::inputs::check_id("id", id).is_err() {
            return Err(EngineError::NotFound { what: "approval" });
        }
        if let Some(note) = &note {
            if note.chars().count() > 4_000 {
                return Err(invalid("note must be at most 4000 characters".into()));
            }
        }
        let wanted = if approve { "approved" } else { "rejected" };
        let guard = self.0.approving.lock().await;
        let mut approval = match store.action_approvals.get(&(access.account_id.as_str(), id))? {
            Some(a) if access.workspace.as_ref().is_none_or(|w| *w == a.workspace) => a,
            _ => return Err(EngineError::NotFound { what: "approval" }),
        };
        let now = crate::clock::now_ms();
        match effective_status(&approval, now) {
            "pending" => {}
            same if same == wanted => return Ok(approval),
            other => {
                return Err(EngineError::IllegalTransition {
                    what: "approval",
                    from: other.to_owned(),
                    to: wanted.to_owned(),
                    allowed: Vec::new(),
                })
            }
        }
        approval.status = wanted.into();
        approval.decided_by = Some(by.to_owned());
        approval.decision_note = note;
        approval.decided_at_ms = Some(now);
        store.action_approvals.insert(&(approval.account_id.as_str(), approval.id.as_str()), &approval)?;
        let audit = ActionAudit {
            id: new_audit_id(),
            account_id: approval.account_id.clone(),
            workspace: approval.workspace.clone(),
            event: wanted.into(),
            decision: None,
            tool_ref: approval.action.get("tool_ref").and_then(Value::as_str).map(str::to_owned),
            mission: approval.mission.clone(),
            policy_id: approval.policy_id.clone(),
            approval_id: Some(approval.id.clone()),
            reason: approval.decision_note.clone(),
            action: approval.action.clone(),
            by: by.to_owned(),
            created_at_ms: now,
        };
        store.action_audit.insert(&(audit.account_id.as_str(), audit.id.as_str()), &audit)?;
        store.flush().await?;
        drop(guard);
        if let Some(mission) = &approval.mission {
            let (to, outcome) = match approve {
                true => ("running", None),
                false => ("failed", Some(format!("approval {} was rejected", approval.id))),
            };
            self.move_mission(&approval.account_id, mission, &["waiting_approval"], to, outcome).await;
        }
        Ok(approval)
    }

    /// Moves a mission from one of `from` to `to`, through its actor. Best effort: a mission
    /// in another status (the agent moved it meanwhile) is left as it is.
    async fn move_mission(&self, account_id: &str, mission: &str, from: &[&str], to: &str, outcome: Option<String>) {
        let access = crate::harness::Access { account_id: account_id.to_owned(), workspace: None };
        let missions = &self.0.missions;
        match missions.get(&access, mission) {
            Ok(m) if from.contains(&m.status.as_str()) => {
                let patch =
                    crate::harness::inputs::MissionPatch { status: Some(to.into()), outcome, ..Default::default() };
                match missions.update(&access, mission, patch).await {
                    Ok(_) | Err(EngineError::IllegalTransition { .. }) => {}
                    Err(error) => tracing::warn!(mission, to, %error, "moving a mission for an approval failed"),
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(mission, %error, "reading the mission of an approval failed"),
        }
    }

    /// Records an event the agent reports.
    pub async fn report(&self, scope: &KbScope, input: AuditInput) -> Result<ActionAudit, EngineError> {
        if !AUDIT_EVENTS.contains(&input.event.as_str()) {
            return Err(invalid(format!("event must be one of {}", AUDIT_EVENTS.join(", "))));
        }
        for (field, value) in &input.fields {
            if !FIELDS.contains(&field.as_str()) {
                return Err(invalid(format!("{field} is not a field of an action")));
            }
            crate::harness::inputs::check_id(field, value)?;
        }
        crate::harness::inputs::check_metadata("metadata", &input.metadata)?;
        if let Some(reason) = &input.reason {
            if reason.chars().count() > 4_000 {
                return Err(invalid("reason must be at most 4000 characters".into()));
            }
        }
        let store = &self.0.store;
        if let Some(approval) = &input.approval_id {
            crate::harness::inputs::check_id("approval_id", approval)?;
            match store.action_approvals.get(&(scope.account_id.as_str(), approval.as_str()))? {
                Some(a) if a.workspace == scope.workspace => {}
                _ => return Err(EngineError::NotFound { what: "approval" }),
            }
        }
        let mission = match input.fields.get("mission_id") {
            Some(reference) => self.0.missions.find(&scope.account_id, &scope.workspace, reference)?.map(|m| m.id),
            None => None,
        };
        let mut action: Map<String, Value> = input.fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        if !input.metadata.is_empty() {
            action.insert("metadata".into(), Value::Object(input.metadata.clone()));
        }
        let audit = ActionAudit {
            id: new_audit_id(),
            account_id: scope.account_id.clone(),
            workspace: scope.workspace.clone(),
            event: input.event,
            decision: None,
            tool_ref: input.fields.get("tool_ref").cloned(),
            mission,
            policy_id: None,
            approval_id: input.approval_id,
            reason: input.reason,
            action,
            by: input.by,
            created_at_ms: crate::clock::now_ms(),
        };
        store.action_audit.insert(&(audit.account_id.as_str(), audit.id.as_str()), &audit)?;
        store.flush().await?;
        Ok(audit)
    }

    /// A page of audit events, newest first.
    pub fn audit(
        &self,
        access: &crate::harness::Access,
        filter: &AuditFilter,
    ) -> Result<Vec<ActionAudit>, EngineError> {
        let account = access.account_id.as_str();
        let before = filter.before.as_ref().map(|id| (account, id.as_str()));
        Ok(self.0.store.action_audit.page_rev(
            &(account,),
            before.as_ref().map(|k| k as &dyn tokaroo_storage::KeyTuple),
            filter.limit,
            50_000,
            |a| {
                access.workspace.as_ref().is_none_or(|w| *w == a.workspace)
                    && filter.workspace.as_ref().is_none_or(|w| *w == a.workspace)
                    && filter.mission.as_ref().is_none_or(|m| a.mission.as_ref() == Some(m))
                    && filter.tool_ref.as_ref().is_none_or(|t| a.tool_ref.as_ref() == Some(t))
                    && filter.decision.as_ref().is_none_or(|d| a.decision.as_ref() == Some(d))
                    && filter.event.as_ref().is_none_or(|e| *e == a.event)
                    && filter.since_ms.is_none_or(|s| a.created_at_ms >= s)
            },
        )?)
    }
}
