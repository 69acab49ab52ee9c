//! Our action policies as Cedar policies, and a check decided by Cedar.
//!
//! The mapping:
//! - `deny` is a `forbid`; `allow` is a `permit`; `approval` is a `permit` tagged
//!   `@effect("approval")` (Cedar itself only knows permit and forbid).
//! - A workspace-bound policy's scope is `resource == Workspace::"<ws>"`; an account-wide one
//!   leaves `resource` free. The request's resource is the check's workspace.
//! - A field constraint is `context has f && (context.f like "..." || context.f == "...")`;
//!   the amount range compares `context.amount` (ledger units, a Long); metadata constraints
//!   test `context.metadata has "k"` and then `context.metadata["k"]`.
//! - A disabled policy is left out of the set: Cedar has no notion of status.
//! - Cedar only says Allow or Deny, with the satisfied policies (the forbids for a Deny, the
//!   permits for an Allow) as the reason. Our tie-break (effect rank, specificity, priority,
//!   name) runs here over that reason, reading `@name`, `@priority` and `@specificity` (read
//!   into a side table when the set is built).
//!
//! This module depends on Cedar, serde_json and std only: the callers hand in plain views of
//! a policy and of a check.

use std::{collections::HashMap, str::FromStr};

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet, Request,
    ResourceConstraint, RestrictedExpression,
};
use serde_json::{Map, Value};

/// A policy as the translation needs it (the fields of `ActionPolicy` it reads).
pub struct PolicyView<'a> {
    pub workspace: &'a str,
    pub name: &'a str,
    pub effect: &'a str,
    pub priority: i64,
    pub status: &'a str,
    pub patterns: &'a [(String, Vec<String>)],
    pub amount_min_units: Option<i64>,
    pub amount_max_units: Option<i64>,
    pub metadata: &'a [(String, Vec<String>)],
}

/// A check as Cedar's request needs it.
pub struct CheckView<'a> {
    pub workspace: &'a str,
    pub fields: &'a HashMap<String, String>,
    pub amount_units: Option<i64>,
    pub metadata: &'a Map<String, Value>,
}

/// Why a policy has no Cedar form.
#[derive(Debug)]
pub enum Untranslatable {
    /// Cedar's `like` has `*` but nothing that matches exactly one character.
    QuestionMark { field: String, pattern: String },
}

impl std::fmt::Display for Untranslatable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Untranslatable::QuestionMark { field, pattern } => {
                write!(f, "{field} pattern {pattern:?} uses `?`, which Cedar's `like` cannot express (it has only `*`)")
            }
        }
    }
}

/// A Cedar string literal (escapes `\` and `"`; our patterns and ids carry no control
/// characters).
fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// One glob as a Cedar test of `value` (an expression such as `context.tool_ref`): `==` when
/// it has no wildcard, `like` when it has `*`. Our globs have no literal `*`, so Cedar's
/// `\*` escape is never needed.
fn glob_test(value: &str, field: &str, pattern: &str) -> Result<String, Untranslatable> {
    if pattern.contains('?') {
        return Err(Untranslatable::QuestionMark { field: field.to_owned(), pattern: pattern.to_owned() });
    }
    Ok(if pattern.contains('*') {
        format!("{value} like {}", literal(pattern))
    } else {
        format!("{value} == {}", literal(pattern))
    })
}

/// `(t1 || t2 ...)`, or `t1` alone.
fn any_of(value: &str, field: &str, patterns: &[String]) -> Result<String, Untranslatable> {
    let tests = patterns.iter().map(|p| glob_test(value, field, p)).collect::<Result<Vec<_>, _>>()?;
    Ok(if tests.len() == 1 { tests.into_iter().next().unwrap() } else { format!("({})", tests.join(" || ")) })
}

/// Our specificity: 1000 for a workspace-bound policy, plus one per constrained field, per
/// metadata key, and one for an amount range.
pub fn specificity(p: &PolicyView) -> i64 {
    (if p.workspace.is_empty() { 0 } else { 1000 })
        + p.patterns.len() as i64
        + p.metadata.len() as i64
        + i64::from(p.amount_min_units.is_some() || p.amount_max_units.is_some())
}

/// A policy as Cedar text (`None` for a disabled one, which has no Cedar form).
pub fn to_cedar(p: &PolicyView) -> Result<Option<String>, Untranslatable> {
    if p.status != "active" {
        return Ok(None);
    }
    let mut text = String::new();
    text.push_str(&format!("@name({})\n", literal(p.name)));
    if p.effect == "approval" {
        text.push_str("@effect(\"approval\")\n");
    }
    text.push_str(&format!("@priority(\"{}\")\n@specificity(\"{}\")\n", p.priority, specificity(p)));
    let head = if p.effect == "deny" { "forbid" } else { "permit" };
    let resource = if p.workspace.is_empty() {
        "resource".to_owned()
    } else {
        format!("resource == Workspace::{}", literal(p.workspace))
    };
    text.push_str(&format!("{head} (principal, action == Action::\"check\", {resource})"));
    let mut conditions = Vec::new();
    for (field, patterns) in p.patterns {
        // Field names are our fixed identifiers (`tool_ref`, ...): valid Cedar attribute names.
        let value = format!("context.{field}");
        conditions.push(format!("context has {field} && {}", any_of(&value, field, patterns)?));
    }
    match (p.amount_min_units, p.amount_max_units) {
        (None, None) => {}
        (min, max) => {
            let mut amount = vec!["context has amount".to_owned()];
            if let Some(min) = min {
                amount.push(format!("context.amount >= {min}"));
            }
            if let Some(max) = max {
                amount.push(format!("context.amount <= {max}"));
            }
            conditions.push(amount.join(" && "));
        }
    }
    for (key, patterns) in p.metadata {
        let value = format!("context.metadata[{}]", literal(key));
        let field = format!("metadata.{key}");
        conditions.push(format!("context.metadata has {} && {}", literal(key), any_of(&value, &field, patterns)?));
    }
    if conditions.is_empty() {
        text.push_str(";\n");
    } else {
        text.push_str(&format!("\nwhen {{\n  {}\n}};\n", conditions.join(" &&\n  ")));
    }
    Ok(Some(text))
}

/// What the tie-break needs of a Cedar policy, read from its annotations and scope.
struct Meta {
    name: String,
    workspace: String,
    /// deny 2, approval 1, allow 0.
    rank: u8,
    specificity: i64,
    priority: i64,
}

impl Meta {
    /// Whether `self` wins over `other` (effect rank, specificity, priority, smaller name).
    fn beats(&self, other: &Meta) -> bool {
        (self.rank, self.specificity, self.priority)
            .cmp(&(other.rank, other.specificity, other.priority))
            .then_with(|| other.name.cmp(&self.name))
            == std::cmp::Ordering::Greater
    }
}

/// The parsed set, and what deciding needs besides.
pub struct CedarEngine {
    set: PolicySet,
    meta: HashMap<PolicyId, Meta>,
    authorizer: Authorizer,
    entities: Entities,
    principal: EntityUid,
    action: EntityUid,
    workspace_type: EntityTypeName,
}

/// The decision (`allow`, `deny`, `approval_required`) and the winner (workspace, name).
pub type Outcome<'a> = (&'static str, Option<(&'a str, &'a str)>);

/// The effect of a check no policy matches, by its risk level (none is `medium`).
pub fn default_decision(fields: &HashMap<String, String>) -> &'static str {
    match fields.get("risk_level").map_or("medium", String::as_str) {
        "low" => "allow",
        "high" | "critical" => "deny",
        _ => "approval_required",
    }
}

fn annotation_i64(set: &PolicySet, id: &PolicyId, key: &str) -> Result<i64, String> {
    set.annotation(id, key).ok_or_else(|| format!("{id}: no @{key}"))?.parse().map_err(|e| format!("{id}: @{key}: {e}"))
}

impl CedarEngine {
    /// Parses a policy text (all the policies, as a `.cedar` file would hold them).
    pub fn build(text: &str) -> Result<Self, String> {
        let set = PolicySet::from_str(text).map_err(|e| format!("cedar parse: {e}"))?;
        let mut meta = HashMap::new();
        for policy in set.policies() {
            let id = policy.id();
            let name = policy.annotation("name").ok_or_else(|| format!("{id}: no @name"))?.to_owned();
            let workspace = match policy.resource_constraint() {
                ResourceConstraint::Eq(uid) => uid.id().unescaped().to_owned(),
                _ => String::new(),
            };
            let rank = match (policy.effect(), policy.annotation("effect")) {
                (cedar_policy::Effect::Forbid, _) => 2,
                (cedar_policy::Effect::Permit, Some("approval")) => 1,
                (cedar_policy::Effect::Permit, _) => 0,
            };
            let specificity = annotation_i64(&set, id, "specificity")?;
            let priority = annotation_i64(&set, id, "priority")?;
            meta.insert(id.clone(), Meta { name, workspace, rank, specificity, priority });
        }
        Ok(Self {
            set,
            meta,
            authorizer: Authorizer::new(),
            entities: Entities::empty(),
            principal: EntityUid::from_str("Account::\"eval\"").expect("principal"),
            action: EntityUid::from_str("Action::\"check\"").expect("action"),
            workspace_type: EntityTypeName::from_str("Workspace").expect("type name"),
        })
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// The check as a Cedar request: the fields present, `amount` when given, and the string
    /// metadata values (a non-string value cannot match a pattern, so it is left out rather
    /// than turned into an evaluation error).
    pub fn request(&self, check: &CheckView) -> Result<Request, String> {
        let mut pairs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(check.fields.len() + 2);
        for (field, value) in check.fields {
            pairs.push((field.clone(), RestrictedExpression::new_string(value.clone())));
        }
        if let Some(units) = check.amount_units {
            pairs.push(("amount".into(), RestrictedExpression::new_long(units)));
        }
        let metadata = check
            .metadata
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), RestrictedExpression::new_string(s.to_owned()))));
        pairs.push(("metadata".into(), RestrictedExpression::new_record(metadata).map_err(|e| e.to_string())?));
        let context = Context::from_pairs(pairs).map_err(|e| e.to_string())?;
        let resource = EntityUid::from_type_name_and_id(self.workspace_type.clone(), EntityId::new(check.workspace));
        Request::new(self.principal.clone(), self.action.clone(), resource, context, None).map_err(|e| e.to_string())
    }

    /// Authorizes a request and resolves the winner among the satisfied policies. Evaluation
    /// errors (a policy Cedar skipped) are returned as an error: none is expected here.
    pub fn decide(&self, request: &Request, fields: &HashMap<String, String>) -> Result<Outcome<'_>, String> {
        let response = self.authorizer.is_authorized(request, &self.set, &self.entities);
        let diagnostics = response.diagnostics();
        if let Some(error) = diagnostics.errors().next() {
            return Err(format!("cedar evaluation error: {error}"));
        }
        let mut best: Option<&Meta> = None;
        for id in diagnostics.reason() {
            let m = self.meta.get(id).ok_or_else(|| format!("{id}: not in the side table"))?;
            if best.is_none_or(|b| m.beats(b)) {
                best = Some(m);
            }
        }
        Ok(match (response.decision(), best) {
            (_, None) => (default_decision(fields), None),
            (Decision::Deny, Some(m)) => ("deny", Some((m.workspace.as_str(), m.name.as_str()))),
            (Decision::Allow, Some(m)) => {
                (if m.rank == 1 { "approval_required" } else { "allow" }, Some((m.workspace.as_str(), m.name.as_str())))
            }
        })
    }
}
