//! Action guardrails through HTTP: policies (validated, sessions only), and the check's
//! decision by precedence, specificity, wildcards, defaults per risk level and spend, with
//! idempotent approvals and an audit id for every check.

use serde_json::{json, Value};

use crate::harness::*;

async fn policy(gw: &Gateway, body: Value) -> Value {
    let r = gw.post("/v1/actions/policies", ADMIN_TOKEN, body.clone()).await;
    assert!(r.status.is_success(), "{body}: {}", r.text);
    r.body
}

async fn decide(gw: &Gateway, id: &str, token: &str, decision: &str) -> Resp {
    let body = json!({"decision": decision, "note": "ok by finance"});
    gw.post(&format!("/v1/actions/approvals/{id}/decide"), token, body).await
}

async fn check(gw: &Gateway, key: &str, body: Value) -> Value {
    let r = gw.post("/v1/actions/check", key, body.clone()).await;
    assert_eq!(r.status, 200, "{body}: {}", r.text);
    r.body
}

#[tokio::test]
async fn checks_decide_by_precedence_specificity_wildcards_defaults_and_spend() {
    let gw = Gateway::start().await;
    let keys = gw.neighbours().await;
    let key = &keys.default_ws;
    policy(&gw, json!({"name": "allow-reads", "effect": "allow", "match": {"action_type": "read"}})).await;
    policy(
        &gw,
        json!({"name": "allow-doc-reads", "effect": "allow", "workspace_id": "default",
                       "match": {"action_type": "read", "tool_ref": "docs.*"}}),
    )
    .await;
    policy(&gw, json!({"name": "deny-deletes", "effect": "deny", "match": {"tool_ref": "*.delete"}})).await;
    policy(&gw, json!({"name": "approve-email", "effect": "approval", "match": {"tool_ref": "gmail.send"}})).await;
    policy(
        &gw,
        json!({"name": "allow-team-email", "effect": "allow",
                       "match": {"tool_ref": "gmail.send", "metadata": {"to_domain": "example.com"}}}),
    )
    .await;
    policy(
        &gw,
        json!({"name": "small-spend", "effect": "allow",
                       "match": {"action_type": "spend", "requested_amount_usd": {"max": 50}}}),
    )
    .await;
    policy(
        &gw,
        json!({"name": "big-spend", "effect": "approval",
                       "match": {"action_type": "spend", "requested_amount_usd": {"min": 50.01}}}),
    )
    .await;
    policy(
        &gw,
        json!({"name": "no-destruction-here", "effect": "deny", "workspace_id": "default",
                       "match": {"access_level": "destructive"}}),
    )
    .await;
    let mission = gw
        .post("/v1/harness/missions", key, json!({"mission_id": "m-spend", "status": "running", "budget_usd": 5}))
        .await;
    assert_eq!(mission.status, 201);

    let base = |tool: &str, action: &str| json!({"app": "gwendolyn", "tool_ref": tool, "action_type": action});
    let with = |mut body: Value, extra: Value| {
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    // (what, body, decision, policy that decided or null)
    let table = [
        ("an allow policy", base("search.web", "read"), "allow", Some("allow-reads")),
        ("the more specific of two allows", base("docs.fetch", "read"), "allow", Some("allow-doc-reads")),
        ("a wildcard deny", base("github.repo.delete", "write"), "deny", Some("deny-deletes")),
        ("deny over allow", base("docs.delete", "read"), "deny", Some("deny-deletes")),
        ("approval", base("gmail.send", "communication"), "approval_required", Some("approve-email")),
        (
            "approval over a more specific allow",
            with(base("gmail.send", "communication"), json!({"metadata": {"to_domain": "example.com"}})),
            "approval_required",
            Some("approve-email"),
        ),
        (
            "a spend under the threshold",
            with(base("stripe.charge", "spend"), json!({"requested_amount_usd": 10})),
            "allow",
            Some("small-spend"),
        ),
        (
            "a spend over it",
            with(base("stripe.charge", "spend"), json!({"requested_amount_usd": 120})),
            "approval_required",
            Some("big-spend"),
        ),
        (
            "a workspace deny",
            with(base("db.migrate", "write"), json!({"access_level": "destructive"})),
            "deny",
            Some("no-destruction-here"),
        ),
        ("default, low risk", with(base("calendar.read", "write"), json!({"risk_level": "low"})), "allow", None),
        (
            "default, medium risk",
            with(base("calendar.read", "write"), json!({"risk_level": "medium"})),
            "approval_required",
            None,
        ),
        ("default, no risk given", base("calendar.read", "write"), "approval_required", None),
        ("default, high risk", with(base("calendar.read", "write"), json!({"risk_level": "high"})), "deny", None),
        (
            "default, critical risk",
            with(base("calendar.read", "write"), json!({"risk_level": "critical"})),
            "deny",
            None,
        ),
        (
            "a spend over the mission's remaining budget",
            with(base("stripe.charge", "spend"), json!({"requested_amount_usd": 10, "mission_id": "m-spend"})),
            "deny",
            Some("small-spend"),
        ),
    ];
    for (what, body, decision, decided_by) in table {
        let answer = check(&gw, key, body.clone()).await;
        assert_eq!(answer["decision"], decision, "{what}: {answer}");
        assert_eq!(answer["policy"]["name"].as_str(), decided_by, "{what}: {answer}");
        assert!(answer["audit_id"].as_str().unwrap().starts_with("au_"), "{what}");
        assert!(!answer["reason"].as_str().unwrap().is_empty());
        assert_eq!(answer["approval_id"].is_string(), decision == "approval_required", "{what}: {answer}");
    }
    let over = check(
        &gw,
        key,
        with(base("stripe.charge", "spend"), json!({"requested_amount_usd": 10, "mission_id": "m-spend"})),
    )
    .await;
    assert!(over["reason"].as_str().unwrap().contains("mission's remaining budget"), "{over}");

    // Another workspace's key is not under the workspace's policies; another account under none.
    let research = check(
        &gw,
        &keys.research,
        with(base("db.migrate", "write"), json!({"access_level": "destructive", "risk_level": "low"})),
    )
    .await;
    assert_eq!(research["decision"], "allow", "{research}");
    let tenant = check(&gw, &keys.other_account, base("github.repo.delete", "write")).await;
    assert_eq!(
        (tenant["decision"].as_str(), tenant["policy"].clone()),
        (Some("approval_required"), Value::Null),
        "{tenant}"
    );
    // A tenant cannot spend past its balance ($5), whatever its policies allow.
    let broke = check(
        &gw,
        &keys.other_account,
        with(base("stripe.charge", "spend"), json!({"requested_amount_usd": 10, "risk_level": "low"})),
    )
    .await;
    assert_eq!(broke["decision"], "deny", "{broke}");
    assert!(broke["reason"].as_str().unwrap().contains("available balance"), "{broke}");

    // A retried check names the same approval.
    let retried =
        with(base("gmail.send", "communication"), json!({"external_source": "gwendolyn", "external_id": "act-1"}));
    let first = check(&gw, key, retried.clone()).await;
    let second = check(&gw, key, retried).await;
    assert_eq!(first["approval_id"], second["approval_id"]);
    assert_ne!(first["audit_id"], second["audit_id"], "every check is an audit event");
}

#[tokio::test]
async fn policies_are_validated_and_written_by_sessions_only() {
    let gw = Gateway::start().await;
    let keys = gw.neighbours().await;
    let created = gw
        .post(
            "/v1/actions/policies",
            ADMIN_TOKEN,
            json!({"name": "p", "effect": "deny", "match": {"tool_ref": ["a.*", "b.*"]}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["match"]["tool_ref"], json!(["a.*", "b.*"]));
    let replaced =
        gw.post("/v1/actions/policies", ADMIN_TOKEN, json!({"name": "p", "effect": "allow", "priority": 5})).await;
    assert_eq!(
        (replaced.status.as_u16(), replaced.body["id"].clone()),
        (200, created.body["id"].clone()),
        "upsert by name"
    );
    let by_key = gw.post("/v1/actions/policies", &keys.default_ws, json!({"name": "k", "effect": "allow"})).await;
    assert_eq!(by_key.status, 403, "{}", by_key.text);
    for (body, field) in [
        (json!({"name": "x", "effect": "maybe"}), "effect"),
        (json!({"name": "x", "effect": "deny", "match": {"tool_ref": ""}}), "match.tool_ref"),
        (json!({"name": "x", "effect": "deny", "match": {"tool_ref": []}}), "match.tool_ref"),
        (json!({"name": "x", "effect": "deny", "match": {"tool": "a"}}), "match.tool"),
        (
            json!({"name": "x", "effect": "deny", "match": {"requested_amount_usd": {"min": 10, "max": 5}}}),
            "min is above max",
        ),
        (
            json!({"name": "x", "effect": "deny", "match": {"requested_amount_usd": {"min": -1}}}),
            "requested_amount_usd.min",
        ),
        (json!({"name": "x", "effect": "deny", "status": "sleeping"}), "status"),
        (json!({"name": "", "effect": "deny"}), "name"),
        (
            json!({"name": "x", "effect": "deny", "match": {"metadata": (0..33).map(|i| (format!("k{i}"), json!("v")))
                .collect::<serde_json::Map<String, Value>>()}}),
            "match.metadata",
        ),
    ] {
        let r = gw.post("/v1/actions/policies", ADMIN_TOKEN, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }
    let listed = gw.get("/v1/actions/policies", &keys.default_ws).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1, "{}", listed.text);
    assert_eq!(gw.get("/v1/actions/policies", &keys.other_account).await.body["data"], json!([]));
    for (body, field) in [
        (json!({"tool_ref": "x", "action_type": "read"}), "app"),
        (json!({"app": "a", "tool_ref": "x", "action_type": "read", "risk_level": "extreme"}), "risk_level"),
        (
            json!({"app": "a", "tool_ref": "x", "action_type": "read", "requested_amount_usd": -5}),
            "requested_amount_usd",
        ),
        (json!({"app": "a", "tool_ref": "x", "action_type": "read", "tool": "y"}), "tool"),
        (json!({"app": "a", "tool_ref": 5, "action_type": "read"}), "tool_ref"),
        (json!({"app": "a", "tool_ref": "x", "action_type": "read", "external_source": "s"}), "external_id"),
    ] {
        let r = gw.post("/v1/actions/check", &keys.default_ws, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }
}

/// Approvals: listed by mission and status; decided by sessions only, idempotently; the
/// mission waiting on one moves at once (running when approved, failed when rejected), also
/// after a restart; every check, decision and reported outcome is in the append-only audit
/// and in the mission's detail; other tenants see none of it; an undecided approval expires.
#[tokio::test]
async fn approvals_wake_their_mission_and_everything_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let keys = gw.neighbours().await;
    let key = keys.default_ws.clone();
    policy(&gw, json!({"name": "approve-payments", "effect": "approval", "match": {"tool_ref": "stripe.*"}})).await;
    let mission = gw.post("/v1/harness/missions", &key, json!({"mission_id": "m-pay", "status": "running"})).await.body
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/harness/missions/{mission}");
    let body = json!({"app": "gwendolyn", "tool_ref": "stripe.charge", "action_type": "spend", "mission_id": "m-pay",
                      "requested_amount_usd": 3, "external_source": "gwendolyn", "external_id": "pay-1"});
    let asked = check(&gw, &key, body.clone()).await;
    let approval = asked["approval_id"].as_str().unwrap().to_owned();
    let waiting = gw.get(&path, &key).await;
    assert_eq!(waiting.body["status"], "waiting_approval", "the check moved the mission: {}", waiting.text);
    let pending = gw.get("/v1/actions/approvals?mission=m-pay&status=pending", &key).await;
    assert_eq!(pending.body["data"][0]["id"], approval, "{}", pending.text);
    assert_eq!(pending.body["data"][0]["mission"], mission);

    // The decision survives a restart of the server while the mission waits.
    gw.stop().await;
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    assert_eq!(decide(&gw, &approval, &key, "approve").await.status, 403, "a runtime key cannot decide");
    let approved = decide(&gw, &approval, ADMIN_TOKEN, "approve").await;
    assert_eq!(
        (approved.status.as_u16(), approved.body["status"].as_str()),
        (200, Some("approved")),
        "{}",
        approved.text
    );
    let now = gw.get(&path, &key).await;
    assert_eq!(now.body["status"], "running", "woken at once: {}", now.text);
    assert_eq!(decide(&gw, &approval, ADMIN_TOKEN, "approve").await.status, 200, "the same decision again is a no-op");
    let other_way = decide(&gw, &approval, ADMIN_TOKEN, "reject").await;
    assert_eq!(other_way.status, 409, "{}", other_way.text);
    // The agent retries its check: the person's decision is the answer now.
    let retried = check(&gw, &key, body.clone()).await;
    assert_eq!(
        (retried["decision"].as_str(), retried["approval_id"].as_str()),
        (Some("allow"), Some(approval.as_str()))
    );
    assert!(retried["reason"].as_str().unwrap().contains("approved"), "{retried}");
    // The same external identity for another action, or another mission, is a conflict,
    // never the first action's approval.
    for (field, value) in [("requested_amount_usd", json!(5000)), ("tool_ref", json!("github.repo.delete"))] {
        let mut other = body.clone();
        other[field] = value;
        let r = gw.post("/v1/actions/check", &key, other).await;
        assert_eq!(r.status, 409, "{field}: {}", r.text);
        assert!(r.text.contains(&approval), "{}", r.text);
    }
    let mut unnamed = body.clone();
    unnamed.as_object_mut().unwrap().remove("mission_id");
    assert_eq!(gw.post("/v1/actions/check", &key, unnamed).await.status, 409, "another mission (none)");

    // A rejection fails the waiting mission.
    let refund = json!({"app": "gwendolyn", "tool_ref": "stripe.refund", "action_type": "spend",
                        "mission_id": "m-pay", "external_source": "gwendolyn", "external_id": "refund-1"});
    let second = check(&gw, &key, refund.clone()).await;
    assert_eq!(gw.get(&path, &key).await.body["status"], "waiting_approval");
    let rejected = decide(&gw, second["approval_id"].as_str().unwrap(), ADMIN_TOKEN, "reject").await;
    assert_eq!(rejected.status, 200, "{}", rejected.text);
    let failed = gw.get(&path, &key).await;
    assert_eq!(failed.body["status"], "failed", "{}", failed.text);
    let retried = check(&gw, &key, refund).await;
    assert_eq!(retried["decision"], "deny", "a rejected approval denies the retry: {retried}");

    // The agent reports the outcome; the audit holds every check, decision and report.
    let reported = gw
        .post(
            "/v1/actions/audit",
            &key,
            json!({"event": "executed", "tool_ref": "stripe.charge", "mission_id": "m-pay",
                                                 "approval_id": approval}),
        )
        .await;
    assert_eq!(reported.status, 201, "{}", reported.text);
    let trail = gw.get("/v1/actions/audit?mission=m-pay", &key).await;
    let events: Vec<&str> =
        trail.body["data"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["executed", "checked", "rejected", "checked", "checked", "approved", "checked"],
        "{}",
        trail.text
    );
    let checked = gw.get("/v1/actions/audit?decision=approval_required&tool_ref=stripe.charge", &key).await;
    assert_eq!(checked.body["data"].as_array().unwrap().len(), 1, "{}", checked.text);
    let page = gw.get("/v1/actions/audit?mission=m-pay&limit=2", &key).await;
    let next = page.body["next_before"].as_str().unwrap();
    let rest = gw.get(&format!("/v1/actions/audit?mission=m-pay&before={next}"), &key).await;
    assert_eq!(rest.body["data"].as_array().unwrap().len(), 5);
    let detail = gw.get(&path, &key).await;
    assert_eq!(detail.body["approvals"].as_array().unwrap().len(), 2);
    assert_eq!(detail.body["action_audit"].as_array().unwrap().len(), 7);
    // Append-only: no route changes or deletes an event.
    let id = trail.body["data"][0]["id"].as_str().unwrap();
    assert_eq!(gw.delete(&format!("/v1/actions/audit/{id}"), ADMIN_TOKEN).await.status, 404);
    assert_eq!(gw.delete("/v1/actions/audit", ADMIN_TOKEN).await.status, 405);

    for other in [&keys.research, &keys.other_account] {
        assert_eq!(gw.get("/v1/actions/approvals", other).await.body["data"], json!([]));
        assert_eq!(gw.get("/v1/actions/audit", other).await.body["data"], json!([]));
    }
    let (_, tenant_session) = gw.create_account("stranger").await;
    assert_eq!(decide(&gw, &approval, &tenant_session, "reject").await.status, 404);
    for (body, field) in [
        (json!({"event": "exploded", "tool_ref": "x"}), "event"),
        (json!({"event": "executed", "approval_id": "apr_nope"}), "approval"),
        (json!({"event": "executed", "colour": "red"}), "colour"),
    ] {
        let r = gw.post("/v1/actions/audit", &key, body.clone()).await;
        assert!(r.status == 400 || r.status == 404, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }
    assert_eq!(decide(&gw, &approval, ADMIN_TOKEN, "maybe").await.status, 400);
}

#[tokio::test]
async fn an_undecided_approval_expires() {
    let gw = Gateway::start_with(Options::default().env("TOKAROO_APPROVAL_TTL_SECS", "2")).await;
    let key = gw.first_key.clone().unwrap();
    let asked = check(&gw, &key, json!({"app": "a", "tool_ref": "x", "action_type": "write"})).await;
    let id = asked["approval_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    let listed = gw.get("/v1/actions/approvals?status=expired", &key).await;
    assert_eq!(listed.body["data"][0]["id"], id, "{}", listed.text);
    let late =
        gw.post(&format!("/v1/actions/approvals/{id}/decide"), ADMIN_TOKEN, json!({"decision": "approve"})).await;
    assert_eq!(late.status, 409, "{}", late.text);

    // A retried check whose approval expired asks a person again.
    let body =
        json!({"app": "a", "tool_ref": "x", "action_type": "write", "external_source": "s", "external_id": "e1"});
    let first = check(&gw, &key, body.clone()).await["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(check(&gw, &key, body.clone()).await["approval_id"], first, "a retry names the same approval");
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    let again = check(&gw, &key, body).await;
    assert_eq!(again["decision"], "approval_required");
    assert_eq!(again["approval"]["status"], "pending");
    assert_ne!(again["approval_id"], first, "{again}");
    let third = check(
        &gw,
        &key,
        json!({"app": "a", "tool_ref": "x", "action_type": "write", "external_source": "s",
                                        "external_id": "e1"}),
    )
    .await;
    assert_eq!(third["approval_id"], again["approval_id"], "the identity now names the new approval");
}
