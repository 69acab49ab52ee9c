//! The mission harness through HTTP: missions upserted by identity (also concurrently), the
//! status machine, steps and artifacts, each unfinished mission a `mission:{uuid}` actor that
//! leaves the tree when it finishes, heartbeat staleness, mission budgets on chat and
//! knowledge replies, isolation, bad input, and everything back after a `kill -9`.

use serde_json::{json, Value};

use crate::{
    fakes::{openai::OpenAi, Fake},
    harness::*,
};

async fn create(gw: &Gateway, key: &str, body: Value) -> Value {
    let r = gw.post("/v1/harness/missions", key, body.clone()).await;
    assert_eq!(r.status, 201, "{body}: {}", r.text);
    r.body
}

fn id(mission: &Value) -> String {
    mission["id"].as_str().expect("a mission id").to_owned()
}

async fn mission_actor(gw: &Gateway, id: &str) -> Option<Value> {
    let tree = gw.actor_tree().await;
    let missions = find_actor(&tree, "missions")?;
    find_actor(missions, &format!("mission:{id}")).filter(|a| a["status"] == "running").cloned()
}

#[tokio::test]
async fn a_mission_identity_names_one_mission_even_under_concurrent_creation() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let first = create(&gw, &key, json!({"mission_id": "mission_123", "title": "Book the offsite"})).await;
    assert_eq!((first["status"].as_str(), first["created"].as_bool()), (Some("pending"), Some(true)));
    assert_eq!(first["workspace_id"], "default", "the key's workspace");
    let again = gw.post("/v1/harness/missions", &key, json!({"mission_id": "mission_123", "progress": 10})).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!((again.body["id"].clone(), again.body["created"].clone()), (first["id"].clone(), json!(false)));
    assert_eq!(again.body["progress"], 10.0);
    assert_eq!(again.body["title"], "Book the offsite", "an upsert changes only what it names");

    // Twelve agents racing to create one external identity get one mission.
    let body = json!({"external_source": "gwendolyn", "external_id": "mission:mission_456", "app": "gwendolyn"});
    let racing = (0..12).map(|_| gw.post("/v1/harness/missions", &key, body.clone()));
    let answers = futures_util::future::join_all(racing).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|r| {
            assert!(r.status == 201 || r.status == 200, "{}", r.text);
            r.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(answers.iter().filter(|r| r.status == 201).count(), 1, "created once");
    let list = gw.get("/v1/harness/missions?app=gwendolyn", &key).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1, "{}", list.text);
    let all = gw.get("/v1/harness/missions", &key).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 2, "{}", all.text);
    // Both are live actors under `missions`.
    for mission in [id(&first), ids.into_iter().next().unwrap()] {
        let actor = mission_actor(&gw, &mission).await.expect("a live mission actor");
        assert_eq!(actor["kind"], "mission");
        assert_eq!(actor["snapshot"]["status"], "pending", "{actor}");
    }
}

#[tokio::test]
async fn the_status_machine_refuses_what_it_does_not_allow_and_a_finished_mission_leaves_the_tree() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let mission = create(&gw, &key, json!({"mission_id": "m-1"})).await;
    let path = format!("/v1/harness/missions/{}", id(&mission));
    let r = gw.patch(&path, &key, json!({"status": "succeeded"})).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["error"], "illegal_transition");
    assert_eq!(r.body["allowed"], json!(["running", "waiting_approval", "failed", "cancelled"]));
    assert!(r.body["message"].as_str().unwrap().contains("pending to succeeded"), "{}", r.text);

    let running = gw.patch(&path, &key, json!({"status": "running", "progress": 40, "risk": "low"})).await;
    assert_eq!((running.status.as_u16(), running.body["status"].as_str()), (200, Some("running")), "{}", running.text);
    let done = gw.patch(&path, &key, json!({"status": "succeeded", "outcome": "Booked for 12 people"})).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!((done.body["progress"].as_f64(), done.body["success"].as_bool()), (Some(100.0), Some(true)));
    assert!(done.body["finished_at"].is_string());
    eventually("the finished mission's actor gone", || async {
        mission_actor(&gw, &id(&mission)).await.is_none().then_some(())
    })
    .await;
    // Its record stays; its status no longer moves, its outcome may still be corrected.
    let read = gw.get(&path, &key).await;
    assert_eq!((read.status.as_u16(), read.body["status"].as_str()), (200, Some("succeeded")));
    let again = gw.patch(&path, &key, json!({"status": "running"})).await;
    assert_eq!((again.status.as_u16(), again.body["allowed"].clone()), (409, json!([])), "{}", again.text);
    let step = gw.post(&format!("{path}/steps"), &key, json!({"step_ref": "late"})).await;
    assert_eq!(step.status, 409, "no steps once finished: {}", step.text);
    let corrected = gw.patch(&path, &key, json!({"outcome": "Booked for 14 people"})).await;
    assert_eq!((corrected.status.as_u16(), corrected.body["outcome"].as_str()), (200, Some("Booked for 14 people")));
    // Its lifecycle is in the workspace's memory events, for context packs.
    let events = gw.get("/v1/memory/events?workspace_id=default", &key).await;
    let lifecycle: Vec<&Value> =
        events.body["data"].as_array().unwrap().iter().filter(|e| e["type"] == "mission_lifecycle").collect();
    assert_eq!(lifecycle.len(), 3, "created, running, succeeded: {}", events.text);
    assert!(lifecycle.iter().any(|e| e["summary"].as_str().unwrap().contains("running → succeeded")), "{lifecycle:?}");
}

#[tokio::test]
async fn steps_upsert_by_ref_and_artifacts_attach_within_their_limits() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let mission = create(&gw, &key, json!({"mission_id": "m-steps", "status": "running"})).await;
    let path = format!("/v1/harness/missions/{}", id(&mission));
    let step = json!({"step_ref": "task_456:step_1", "task_id": "task_456", "title": "Find venues",
                      "status": "running", "metadata": {"mission_id": "m-steps", "task_id": "task_456"}});
    let first = gw.post(&format!("{path}/steps"), &key, step.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert!(first.body["started_at"].is_string(), "running stamps its start");
    let again = gw
        .post(&format!("{path}/steps"), &key, json!({"step_ref": "task_456:step_1", "output_summary": "3 venues"}))
        .await;
    assert_eq!((again.status.as_u16(), again.body["id"].clone()), (200, first.body["id"].clone()), "{}", again.text);
    let step_id = first.body["id"].as_str().unwrap();
    let finished =
        gw.patch(&format!("{path}/steps/{step_id}"), &key, json!({"status": "succeeded", "cost_usd": 0.25})).await;
    assert_eq!(finished.status, 200, "{}", finished.text);
    assert!(finished.body["finished_at"].is_string());
    assert_eq!(finished.body["output_summary"], "3 venues");
    let missing = gw.patch(&format!("{path}/steps/step_nope"), &key, json!({"status": "failed"})).await;
    assert_eq!(missing.status, 404, "{}", missing.text);

    let artifact = gw
        .post(
            &format!("{path}/artifacts"),
            &key,
            json!({"kind": "report", "title": "Shortlist", "content": "1. Hall A",
                                                          "step_id": step_id}),
        )
        .await;
    assert_eq!(artifact.status, 201, "{}", artifact.text);
    let url =
        gw.post(&format!("{path}/artifacts"), &key, json!({"kind": "url", "url": "https://venues.example/a"})).await;
    assert_eq!(url.status, 201, "{}", url.text);
    let huge = "x".repeat(300 * 1024);
    let too_big = gw.post(&format!("{path}/artifacts"), &key, json!({"kind": "doc", "content": huge})).await;
    assert_eq!(too_big.status, 413, "{}", too_big.text);
    for (body, field) in [
        (json!({"kind": "spreadsheet", "title": "x"}), "kind"),
        (json!({"kind": "url", "url": "ftp://x"}), "url"),
        (json!({"kind": "doc"}), "content"),
        (json!({"kind": "doc", "title": "x", "step_id": "step_other"}), "step_id"),
    ] {
        let r = gw.post(&format!("{path}/artifacts"), &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }

    let detail = gw.get(&path, &key).await;
    assert_eq!(detail.status, 200, "{}", detail.text);
    assert_eq!(detail.body["steps"].as_array().unwrap().len(), 1);
    assert_eq!(detail.body["steps"][0]["task_id"], "task_456");
    assert_eq!(detail.body["artifacts"].as_array().unwrap().len(), 2);
    assert_eq!(detail.body["usage"]["steps_cost_usd"], 0.25);
    for part in ["approvals", "action_audit", "traces"] {
        assert!(detail.body[part].is_array(), "{part}");
    }
    let actor = mission_actor(&gw, &id(&mission)).await.unwrap();
    assert_eq!((actor["snapshot"]["steps"].as_u64(), actor["snapshot"]["artifacts"].as_u64()), (Some(1), Some(2)));
}

#[tokio::test]
async fn a_mission_with_no_update_within_its_timeout_is_stale_until_it_moves_again() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let mission =
        create(&gw, &key, json!({"mission_id": "m-quiet", "status": "running", "heartbeat_timeout_secs": 1})).await;
    assert_eq!(mission["stale"], false);
    let path = format!("/v1/harness/missions/{}", id(&mission));
    eventually("the mission stale", || async {
        let r = gw.get(&path, &key).await;
        (r.body["stale"] == true).then_some(())
    })
    .await;
    let stale = gw.get("/v1/harness/missions?stale=true", &key).await;
    assert_eq!(stale.body["data"].as_array().unwrap().len(), 1, "{}", stale.text);
    let moved = gw.post(&format!("{path}/steps"), &key, json!({"step_ref": "s1"})).await;
    assert_eq!(moved.status, 201);
    let fresh = gw.get(&path, &key).await;
    assert_eq!((fresh.body["stale"].as_bool(), fresh.body["stale_since"].clone()), (Some(false), Value::Null));
}

#[tokio::test]
async fn requests_naming_a_mission_are_charged_to_it_and_refused_past_its_budget() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-missions").await;
    let gw = Gateway::start_with(Options::default().openai(&fake)).await;
    let key = gw.first_key.clone().unwrap();
    let chat = |mission: Option<&str>, metadata: Value| {
        let mut req = gw
            .client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "fast", "max_tokens": 20, "metadata": metadata,
                           "messages": [{"role": "user", "content": "Say hi"}]}));
        if let Some(mission) = mission {
            req = req.header("x-tokaroo-mission", mission);
        }
        gw.raw(req)
    };

    let broke = create(&gw, &key, json!({"mission_id": "m-broke", "status": "running", "budget_usd": 0.0000001})).await;
    let asked_before = fake.answer_requests().len();
    let refused = chat(Some(&id(&broke)), json!({})).await;
    assert_eq!(refused.status, 402, "{}", refused.text);
    assert_eq!(refused.body["error"]["code"], "mission_budget_exceeded", "{}", refused.text);
    assert_eq!(fake.answer_requests().len(), asked_before, "refused before any provider is asked");

    let funded = create(&gw, &key, json!({"mission_id": "m-funded", "status": "running", "budget_usd": 1.0})).await;
    let by_header = chat(Some("m-funded"), json!({})).await;
    assert_eq!(by_header.status, 200, "{}", by_header.text);
    let by_metadata = chat(None, json!({"mission_id": "m-funded"})).await;
    assert_eq!(by_metadata.status, 200, "{}", by_metadata.text);
    let unrelated = chat(None, json!({"mission_id": "no-such-mission"})).await;
    assert_eq!(unrelated.status, 200, "a mission_id naming no mission is the account's alone: {}", unrelated.text);
    let cost = |r: &Resp| r.header("x-tokaroo-cost").unwrap().parse::<f64>().unwrap();
    let charged = cost(&by_header) + cost(&by_metadata);
    assert!(charged > 0.0);
    let path = format!("/v1/harness/missions/{}", id(&funded));
    let usage = eventually("the mission's spend", || async {
        let r = gw.get(&path, &key).await;
        (r.body["usage"]["requests"] == 2).then(|| r.body["usage"].clone())
    })
    .await;
    assert!((usage["charged_usd"].as_f64().unwrap() - charged).abs() < 1e-9, "{usage} vs {charged}");
    assert!((usage["remaining_usd"].as_f64().unwrap() - (1.0 - charged)).abs() < 1e-9, "{usage}");
    // A budget just above what was spent refuses the next request's worst case.
    let tight = gw.patch(&path, &key, json!({"budget_usd": charged + 0.0000001})).await;
    assert_eq!(tight.status, 200, "{}", tight.text);
    let over = chat(Some("m-funded"), json!({})).await;
    assert_eq!(over.status, 402, "{}", over.text);
    let reply =
        gw.post("/v1/knowledge/reply", &key, json!({"query": "Say hi", "metadata": {"mission_id": "m-funded"}})).await;
    assert_eq!(reply.status, 402, "knowledge replies are charged to the mission too: {}", reply.text);
    assert_eq!(reply.body["error"]["code"], "mission_budget_exceeded");
    let lifted = gw.patch(&path, &key, json!({"budget_usd": null})).await;
    assert_eq!(lifted.body["budget_usd"], Value::Null, "{}", lifted.text);
    assert_eq!(chat(Some("m-funded"), json!({})).await.status, 200);
}

#[tokio::test]
async fn missions_are_isolated_by_account_and_bound_workspace_and_bad_input_is_refused() {
    let gw = Gateway::start().await;
    let keys = gw.neighbours().await;
    let mission = create(&gw, &keys.default_ws, json!({"mission_id": "shared-name"})).await;
    let path = format!("/v1/harness/missions/{}", id(&mission));
    for other in [&keys.research, &keys.other_account] {
        assert_eq!(gw.get(&path, other).await.status, 404);
        assert_eq!(gw.patch(&path, other, json!({"progress": 50})).await.status, 404);
        assert_eq!(gw.post(&format!("{path}/steps"), other, json!({"step_ref": "x"})).await.status, 404);
        let list = gw.get("/v1/harness/missions", other).await;
        assert_eq!(list.body["data"], json!([]), "{}", list.text);
        // The same mission_id elsewhere is another mission.
        let theirs = create(&gw, other, json!({"mission_id": "shared-name"})).await;
        assert_ne!(theirs["id"], mission["id"]);
    }
    let forbidden = gw.post("/v1/harness/missions", &keys.research, json!({"workspace_id": "default"})).await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.text);
    // The operator's dashboard session sees every workspace of its account.
    let all = gw.get("/v1/harness/missions", ADMIN_TOKEN).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 2, "{}", all.text);

    let key = &keys.default_ws;
    let cases = [
        (json!({"status": "done"}), "status"),
        (json!({"status": "succeeded"}), "pending or running"),
        (json!({"progress": 101}), "progress"),
        (json!({"risk": "extreme"}), "risk"),
        (json!({"mission_id": ""}), "mission_id"),
        (json!({"external_source": "gwen"}), "external_id"),
        (json!({"budget_usd": -1}), "budget_usd"),
        (json!({"heartbeat_timeout_secs": 0}), "heartbeat_timeout_secs"),
        (json!({"metadata": {"blob": "x".repeat(20_000)}}), "metadata"),
        (json!({"colour": "blue"}), "colour"),
        (json!({"progress": "half"}), "progress"),
    ];
    for (body, field) in cases {
        let r = gw.post("/v1/harness/missions", key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }
    let patch = gw.patch(&path, key, json!({"mission_id": "renamed"})).await;
    assert_eq!(patch.status, 400, "{}", patch.text);
    let bad_time = gw.post(&format!("{path}/steps"), key, json!({"step_ref": "a", "started_at": "yesterday"})).await;
    assert_eq!(bad_time.status, 400, "{}", bad_time.text);
    assert_eq!(gw.get("/v1/harness/missions/not-a-mission", key).await.status, 404);
    assert_eq!(gw.get("/v1/harness/missions?status=sleeping", key).await.status, 400);
    let header = gw
        .raw(
            gw.client()
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(key)
                .header("x-tokaroo-mission", "")
                .json(&json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(header.status, 400, "{}", header.text);
}

/// `kill -9` with missions in flight: after the restart every unfinished mission's actor is
/// back with its state, its spend and its heartbeat deadline (one that passed while the
/// server was down is stale at once); a finished one stays finished and has no actor.
#[tokio::test]
async fn unfinished_missions_are_back_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let key = gw.first_key.clone().unwrap();
    let working =
        create(&gw, &key, json!({"mission_id": "m-working", "status": "running", "budget_usd": 2.5, "progress": 30}))
            .await;
    let step = gw.post(&format!("/v1/harness/missions/{}/steps", id(&working)), &key, json!({"step_ref": "s1"})).await;
    assert_eq!(step.status, 201);
    let quiet =
        create(&gw, &key, json!({"mission_id": "m-quiet", "status": "running", "heartbeat_timeout_secs": 2})).await;
    let done = create(&gw, &key, json!({"mission_id": "m-done", "status": "running"})).await;
    let finished = gw.patch(&format!("/v1/harness/missions/{}", id(&done)), &key, json!({"status": "failed"})).await;
    assert_eq!(finished.status, 200);
    gw.kill().await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;

    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let actor = mission_actor(&gw, &id(&working)).await.expect("the working mission's actor is back");
    assert_eq!(actor["snapshot"]["status"], "running", "{actor}");
    assert_eq!(actor["snapshot"]["progress"], 30.0);
    assert_eq!(actor["snapshot"]["budget_usd"], 2.5);
    assert_eq!(actor["snapshot"]["steps"], 1);
    assert!(mission_actor(&gw, &id(&done)).await.is_none(), "a finished mission has no actor");
    let quiet_path = format!("/v1/harness/missions/{}", id(&quiet));
    eventually("the quiet mission stale after the restart", || async {
        (gw.get(&quiet_path, &key).await.body["stale"] == true).then_some(())
    })
    .await;
    let moved = gw.patch(&format!("/v1/harness/missions/{}", id(&working)), &key, json!({"status": "succeeded"})).await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let same = gw.post("/v1/harness/missions", &key, json!({"mission_id": "m-working"})).await;
    assert_eq!(
        (same.status.as_u16(), same.body["id"].clone()),
        (200, working["id"].clone()),
        "identity survives: {}",
        same.text
    );
}

/// A mission from an agent's point of view, end to end: created, steps as it works, a
/// knowledge reply charged to it (its trace and cost in the detail), a wait for approval (here
/// the agent resumes it itself; `actions.rs` has an approval's decision do it), a `kill -9` in the middle
/// with everything back after the restart, then success and its actor leaving the tree.
#[tokio::test]
async fn an_agents_mission_end_to_end_across_a_kill() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-e2e").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default().openai(&fake)).await;
    let key = gw.first_key.clone().unwrap();
    let mission = create(
        &gw,
        &key,
        json!({"mission_id": "mission_123", "external_source": "gwendolyn", "external_id": "mission:mission_123",
               "app": "gwendolyn", "title": "Plan the offsite", "status": "running", "budget_usd": 5}),
    )
    .await;
    let path = format!("/v1/harness/missions/{}", id(&mission));
    let steps = format!("{path}/steps");
    let step = |step_ref: &str, status: &str| {
        gw.post(&steps, &key, json!({"step_ref": step_ref, "task_id": "task_456", "status": status,
                                                        "metadata": {"mission_id": "mission_123", "task_id": "task_456"}}))
    };
    assert_eq!(step("task_456:step_1", "running").await.status, 201);
    let note = json!({"content": "The offsite budget is 40 EUR per person per day."});
    assert!(gw.post("/v1/memory/notes", &key, note).await.status.is_success());
    let reply = gw
        .post(
            "/v1/knowledge/reply",
            &key,
            json!({"query": "What is the offsite budget per person?", "mode": "fast",
                                                   "metadata": {"mission_id": "mission_123", "task_id": "task_456"}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let cost: f64 = reply.header("x-tokaroo-cost").unwrap().parse().unwrap();
    assert_eq!(step("task_456:step_1", "succeeded").await.status, 200);
    let waiting = gw.patch(&path, &key, json!({"status": "waiting_approval", "progress": 60})).await;
    assert_eq!(waiting.status, 200, "{}", waiting.text);

    gw.kill().await;
    let gw = Gateway::start_in(dir.path(), Options::default().openai(&fake)).await;
    let detail = eventually("the mission's spend recorded", || async {
        let r = gw.get(&path, &key).await;
        (r.body["usage"]["requests"] == 1).then_some(r.body)
    })
    .await;
    assert_eq!((detail["status"].as_str(), detail["progress"].as_f64()), (Some("waiting_approval"), Some(60.0)));
    assert!((detail["usage"]["charged_usd"].as_f64().unwrap() - cost).abs() < 1e-9, "{detail}");
    assert_eq!(detail["steps"][0]["status"], "succeeded");
    let trace = &detail["traces"][0];
    assert_eq!((trace["trace_type"].as_str(), trace["task_id"].as_str()), (Some("knowledge_reply"), Some("task_456")));
    assert!((trace["charged_usd"].as_f64().unwrap() - cost).abs() < 1e-9, "{trace}");
    let actor = mission_actor(&gw, &id(&mission)).await.expect("the mission's actor is back after the kill");
    assert_eq!(actor["snapshot"]["status"], "waiting_approval");

    let resumed = gw.patch(&path, &key, json!({"status": "running"})).await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    let step_2 = gw
        .post(
            &format!("{path}/steps"),
            &key,
            json!({"step_ref": "task_456:step_2", "status": "succeeded",
                                                                 "output_summary": "Venue booked"}),
        )
        .await;
    assert_eq!(step_2.status, 201);
    let receipt = json!({"kind": "receipt", "title": "Venue deposit", "url": "https://venues.example/receipts/1"});
    assert_eq!(gw.post(&format!("{path}/artifacts"), &key, receipt).await.status, 201);
    let done = gw.patch(&path, &key, json!({"status": "succeeded", "outcome": "Offsite planned"})).await;
    assert_eq!((done.status.as_u16(), done.body["success"].as_bool()), (200, Some(true)), "{}", done.text);
    eventually("the finished mission's actor gone", || async {
        mission_actor(&gw, &id(&mission)).await.is_none().then_some(())
    })
    .await;
    let same = gw
        .post(
            "/v1/harness/missions",
            &key,
            json!({"external_source": "gwendolyn", "external_id": "mission:mission_123"}),
        )
        .await;
    assert_eq!((same.status.as_u16(), same.body["id"].clone()), (200, mission["id"].clone()));
    assert_eq!(same.body["status"], "succeeded");
}

/// What a hostile or careless tenant tries: a key of no workspace naming another workspace's
/// mission still pays from its budget; a header naming no mission is a 404; refused creations
/// do not use up the live-mission cap, and a finished mission frees its place; a detail does
/// not ship unbounded artifact contents; a cursor with a NUL is refused.
#[tokio::test]
async fn budgets_caps_and_reads_hold_against_a_careless_or_hostile_tenant() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-hostile-missions").await;
    let gw =
        Gateway::start_with(Options::default().openai(&fake).env("TOKAROO_MAX_LIVE_MISSIONS_PER_ACCOUNT", "2")).await;
    let keys = gw.neighbours().await;
    let (_, unbound) = gw.create_key(json!({"name": "no workspace"})).await;
    let mission =
        create(&gw, &keys.default_ws, json!({"mission_id": "m-tight", "status": "running", "budget_usd": 0.0000001}))
            .await;
    let chat = |key: &str, mission: &str| {
        gw.raw(
            gw.client()
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(key)
                .header("x-tokaroo-mission", mission)
                .json(&json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]})),
        )
    };
    let refused = chat(&unbound, &id(&mission)).await;
    assert_eq!(refused.status, 402, "{}", refused.text);
    let unknown = chat(&unbound, "no-such-mission").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    let elsewhere = chat(&keys.research, &id(&mission)).await;
    assert_eq!(elsewhere.status, 404, "a key of another workspace cannot name it: {}", elsewhere.text);

    let tenant = &keys.other_account;
    for _ in 0..5 {
        let r = gw.post("/v1/harness/missions", tenant, json!({"status": "succeeded"})).await;
        assert_eq!(r.status, 400, "{}", r.text);
    }
    let first = create(&gw, tenant, json!({"status": "running"})).await;
    create(&gw, tenant, json!({})).await;
    let third = gw.post("/v1/harness/missions", tenant, json!({})).await;
    assert_eq!(third.status, 400, "{}", third.text);
    assert!(third.text.contains("live_missions_per_account"), "{}", third.text);
    let done = gw.patch(&format!("/v1/harness/missions/{}", id(&first)), tenant, json!({"status": "succeeded"})).await;
    assert_eq!(done.status, 200);
    let freed = gw.post("/v1/harness/missions", tenant, json!({})).await;
    assert_eq!(freed.status, 201, "a finished mission frees its place: {}", freed.text);

    let path = format!("/v1/harness/missions/{}", id(&mission));
    let big = "x".repeat(250 * 1024);
    let mut artifact_ids = Vec::new();
    for i in 0..6 {
        let r = gw
            .post(
                &format!("{path}/artifacts"),
                &keys.default_ws,
                json!({"kind": "doc", "title": format!("d{i}"), "content": big}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        artifact_ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let detail = gw.get(&path, &keys.default_ws).await;
    let artifacts = detail.body["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 6);
    let shipped = artifacts.iter().filter(|a| a["content"].is_string()).count();
    assert_eq!(shipped, 4, "1 MiB of contents at most in a detail");
    assert!(artifacts.iter().any(|a| a["content_omitted_bytes"] == 250 * 1024));
    let whole = gw.get(&format!("{path}/artifacts/{}", artifact_ids[5]), &keys.default_ws).await;
    assert_eq!(whole.body["content"].as_str().map(str::len), Some(250 * 1024), "read alone, whole");
    assert_eq!(gw.get(&format!("{path}/artifacts/{}", artifact_ids[5]), &keys.research).await.status, 404);
    assert_eq!(gw.get("/v1/harness/traces?before=tr_%00x", &keys.default_ws).await.status, 400);
    assert_eq!(gw.get("/v1/harness/traces?mission=%01", &keys.default_ws).await.status, 400);
}
