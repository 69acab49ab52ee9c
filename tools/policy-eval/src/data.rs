//! The policies and checks both engines see: the shape of `benches/actions.rs` (the same
//! bodies it posts), then a few hand-made ones for what the bench's shape leaves out
//! (metadata, account-wide and other-workspace policies, min-only ranges, disabled policies,
//! several patterns per field, tie-breaks on priority and name, and checks no policy
//! matches). Plain JSON, as the HTTP API takes it, with no engine types.

use serde_json::{json, Value};

const ACTION_TYPES: [&str; 3] = ["read", "write", "spend"];

/// A policy body (`POST /v1/actions/policies`) and the workspace it is written in (`""` =
/// account-wide).
pub struct PolicyBody {
    pub workspace: String,
    pub body: Value,
}

/// A check body (`POST /v1/actions/check`) and the workspace it runs in.
pub struct CheckBody {
    pub workspace: String,
    pub body: Value,
}

/// `benches/actions.rs`'s policy `i`.
fn bench_policy(i: usize) -> PolicyBody {
    let effect = ["allow", "approval", "deny"][i % 3];
    let tool = if i.is_multiple_of(4) { format!("svc{}.*", i % 97) } else { format!("svc{}.op{}", i % 97, i) };
    let body = json!({"name": format!("p{i}"), "workspace_id": "default", "effect": effect,
                      "priority": (i % 10) as i64,
                      "match": {"tool_ref": tool, "action_type": ACTION_TYPES[i % 3],
                                "requested_amount_usd": {"max": (i % 500) as f64}}});
    PolicyBody { workspace: "default".into(), body }
}

/// `benches/actions.rs`'s check `i`.
fn bench_check(i: usize) -> CheckBody {
    let body = json!({"app": "bench", "tool_ref": format!("svc{}.op{}", i % 97, i * 7), "action_type": ACTION_TYPES[i % 3],
                      "requested_amount_usd": (i % 300) as f64, "risk_level": "low"});
    CheckBody { workspace: "default".into(), body }
}

fn policy(workspace: &str, body: Value) -> PolicyBody {
    PolicyBody { workspace: workspace.into(), body }
}

fn check(workspace: &str, body: Value) -> CheckBody {
    CheckBody { workspace: workspace.into(), body }
}

/// The hand-made policies.
pub fn extra_policies() -> Vec<PolicyBody> {
    vec![
        // Account-wide versus workspace-bound: both approve mail; the workspace's wins on
        // specificity wherever both match.
        policy("", json!({"name": "acct-approve-mail", "effect": "approval", "match": {"app": "mail*"}})),
        policy(
            "default",
            json!({"name": "ws-approve-mail", "effect": "approval",
                                 "match": {"app": "mailer", "action_type": "send"}}),
        ),
        // Deny beats allow whatever the specificity: account-wide deny of deletes.
        policy("", json!({"name": "acct-deny-delete", "effect": "deny", "match": {"tool_ref": "*.delete"}})),
        policy(
            "default",
            json!({"name": "ws-allow-delete-admin", "effect": "allow", "priority": 100,
                                 "match": {"tool_ref": "*.delete", "metadata": {"role": "admin"}}}),
        ),
        // Metadata patterns (several per key, and a key with a space).
        policy(
            "default",
            json!({"name": "meta-deny-prod", "effect": "deny",
                                 "match": {"tool_ref": "db.*", "metadata": {"env": ["prod", "production"]}}}),
        ),
        policy(
            "default",
            json!({"name": "meta-allow-staging", "effect": "allow",
                                 "match": {"tool_ref": "db.*", "metadata": {"env": "stag*", "team name": "core*"}}}),
        ),
        policy(
            "default",
            json!({"name": "meta-approve-db-write", "effect": "approval", "match": {"tool_ref": "db.write*"}}),
        ),
        // A min-only range (matches only checks that carry an amount) over an account-wide
        // allow.
        policy(
            "default",
            json!({"name": "big-spend", "effect": "approval",
                                 "match": {"action_type": "pay", "requested_amount_usd": {"min": 1000}}}),
        ),
        policy("", json!({"name": "any-pay", "effect": "allow", "match": {"action_type": "pay"}})),
        policy(
            "default",
            json!({"name": "mid-spend", "effect": "approval", "priority": -3,
                                 "match": {"action_type": "pay", "requested_amount_usd": {"min": 100.5, "max": 200}}}),
        ),
        // Disabled: never wins.
        policy(
            "default",
            json!({"name": "disabled-deny-all", "effect": "deny", "status": "disabled",
                                 "match": {"app": "*"}}),
        ),
        // Another workspace's: applies to its own checks only.
        policy("other", json!({"name": "other-deny-all", "effect": "deny", "match": {"app": "*"}})),
        // Priority, then the smaller name, among equals.
        policy("default", json!({"name": "prio-low", "effect": "allow", "priority": 1, "match": {"app": "tie"}})),
        policy("default", json!({"name": "prio-high", "effect": "allow", "priority": 5, "match": {"app": "tie"}})),
        policy("default", json!({"name": "tie-b", "effect": "allow", "priority": 2, "match": {"app": "tie2"}})),
        policy("default", json!({"name": "tie-a", "effect": "allow", "priority": 2, "match": {"app": "tie2"}})),
        // Several patterns for one field; a field the check may leave out.
        policy(
            "default",
            json!({"name": "multi", "effect": "allow",
                                 "match": {"tool_ref": ["gh.repo.read", "gh.issue.*"], "app": "gh"}}),
        ),
        policy(
            "default",
            json!({"name": "export-deny", "effect": "deny",
                                 "match": {"app": "gh", "operation": "export"}}),
        ),
        // A name that needs escaping in Cedar text.
        policy("default", json!({"name": "esc \"q\" \\ b", "effect": "deny", "match": {"app": "esc"}})),
        // Same name in two scopes: the workspace's wins on specificity.
        policy("", json!({"name": "dup", "effect": "allow", "match": {"app": "dup"}})),
        policy("default", json!({"name": "dup", "effect": "allow", "match": {"app": "dup"}})),
        // Risk level as a constrained field.
        policy(
            "",
            json!({"name": "critical-ops", "effect": "deny", "match": {"risk_level": "critical", "app": "ops*"}}),
        ),
    ]
}

/// The hand-made checks.
pub fn extra_checks() -> Vec<CheckBody> {
    let c = |app: &str, tool: &str, action: &str| json!({"app": app, "tool_ref": tool, "action_type": action});
    let with = |mut v: Value, key: &str, value: Value| {
        v[key] = value;
        v
    };
    vec![
        check("default", c("mailer", "smtp.send", "send")),
        check("default", c("mailbox", "smtp.send", "send")),
        check("other", c("mailer", "smtp.send", "send")),
        check("default", with(c("gh", "gh.repo.delete", "write"), "metadata", json!({"role": "admin"}))),
        check("default", c("gh", "gh.repo.read", "read")),
        check("default", c("gh", "gh.issue.comment", "write")),
        check("default", with(c("gh", "gh.issue.comment", "write"), "operation", json!("export"))),
        check("default", c("gh", "gh.pr.merge", "write")),
        check("default", with(c("api", "db.query", "read"), "metadata", json!({"env": "prod"}))),
        check("default", with(c("api", "db.query", "read"), "metadata", json!({"env": "production"}))),
        check(
            "default",
            with(c("api", "db.query", "read"), "metadata", json!({"env": "staging", "team name": "core-db"})),
        ),
        check("default", with(c("api", "db.query", "read"), "metadata", json!({"env": "staging"}))),
        check("default", with(c("api", "db.query", "read"), "metadata", json!({"env": 5}))),
        check("default", c("api", "db.query", "read")),
        check(
            "default",
            with(c("api", "db.write.row", "write"), "metadata", json!({"env": "staging", "team name": "core"})),
        ),
        check("default", with(c("shop", "stripe.charge", "pay"), "requested_amount_usd", json!(5000))),
        check("default", with(c("shop", "stripe.charge", "pay"), "requested_amount_usd", json!(1000))),
        check("default", with(c("shop", "stripe.charge", "pay"), "requested_amount_usd", json!(999.99))),
        check("default", with(c("shop", "stripe.charge", "pay"), "requested_amount_usd", json!(150))),
        check("default", with(c("shop", "stripe.charge", "pay"), "requested_amount_usd", json!(100.4))),
        check("default", c("shop", "stripe.charge", "pay")),
        check("other", with(c("shop", "stripe.charge", "pay"), "requested_amount_usd", json!(5000))),
        check("default", c("tie", "x.y", "read")),
        check("default", c("tie2", "x.y", "read")),
        check("default", c("esc", "x.y", "read")),
        check("default", c("dup", "x.y", "read")),
        check("other", c("dup", "x.y", "read")),
        check("elsewhere", c("dup", "x.y", "read")),
        check("default", with(c("ops-bot", "k8s.scale", "write"), "risk_level", json!("critical"))),
        check("default", with(c("ops-bot", "k8s.scale", "write"), "risk_level", json!("high"))),
        // No policy matches: the risk level's default.
        check("default", c("nomatch", "none.at.all", "read")),
        check("default", with(c("nomatch", "none.at.all", "read"), "risk_level", json!("low"))),
        check("default", with(c("nomatch", "none.at.all", "read"), "risk_level", json!("medium"))),
        check("default", with(c("nomatch", "none.at.all", "read"), "risk_level", json!("high"))),
        check("default", with(c("nomatch", "none.at.all", "read"), "risk_level", json!("critical"))),
        check("elsewhere", with(c("nomatch", "none.at.all", "read"), "risk_level", json!("low"))),
    ]
}

/// `n` bench policies, then the hand-made ones.
pub fn policies(n: usize) -> Vec<PolicyBody> {
    let mut out: Vec<PolicyBody> = (0..n).map(bench_policy).collect();
    out.extend(extra_policies());
    out
}

/// `n` bench checks, then the hand-made ones.
pub fn checks(n: usize) -> Vec<CheckBody> {
    let mut out: Vec<CheckBody> = (0..n).map(bench_check).collect();
    out.extend(extra_checks());
    out
}
