//! The harness's observation stream through HTTP: every context pack and knowledge reply
//! writes a trace (linked to the mission and task its request names), agents record their own,
//! traces page and filter, and feedback on a trace moves its memories in later packs.

use serde_json::{json, Value};

use crate::{
    fakes::{openai::OpenAi, Fake},
    harness::*,
};

async fn ok(gw: &Gateway, path: &str, key: &str, body: Value) -> Value {
    let r = gw.post(path, key, body.clone()).await;
    assert!(r.status.is_success(), "{path} {body}: {}", r.text);
    r.body
}

async fn trace(gw: &Gateway, key: &str, id: &str) -> Value {
    let r = gw.get(&format!("/v1/harness/traces/{id}"), key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

#[tokio::test]
async fn packs_and_replies_write_traces_linked_to_their_mission() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-traces").await;
    let gw = Gateway::start_with(Options::default().openai(&fake)).await;
    let key = gw.first_key.clone().unwrap();
    let mission = ok(&gw, "/v1/harness/missions", &key, json!({"mission_id": "m-trace", "status": "running"})).await;
    let uuid = mission["id"].as_str().unwrap();
    ok(&gw, "/v1/memory/notes", &key, json!({"content": "Deploys happen on Tuesdays after the standup."})).await;
    ok(
        &gw,
        "/v1/sources",
        &key,
        json!({"content": "# Deploys\n\nA deploy needs two approvals.", "content_type": "text/markdown"}),
    )
    .await;

    let pack = ok(
        &gw,
        "/v1/memory/context-pack",
        &key,
        json!({"query": "When do deploys happen?", "include_sources": true,
               "metadata": {"mission_id": "m-trace", "gwen_task_id": "task_9"}}),
    )
    .await;
    let id = pack["telemetry"]["trace_id"].as_str().or(pack["trace_id"].as_str()).unwrap().to_owned();
    assert!(id.starts_with("tr_"), "{id}");
    let traced = trace(&gw, &key, &id).await;
    assert_eq!(traced["trace_type"], "context_pack");
    assert_eq!((traced["mission"].as_str(), traced["task_id"].as_str()), (Some(uuid), Some("task_9")));
    assert_eq!(traced["input_summary"], "When do deploys happen?");
    assert_eq!(traced["context_strategy"], "hybrid_pack+sources");
    let memory = &traced["context"]["memories"][0];
    for part in ["score", "relevance_score", "recency_score", "importance_score", "confidence_score"] {
        assert!(memory[part].as_f64().is_some(), "{part}: {traced}");
    }
    assert!(!traced["context"]["documents"].as_array().unwrap().is_empty(), "{traced}");
    assert_eq!((traced["charged_usd"].as_f64(), traced["outcome"].as_str()), (Some(0.0), Some("unknown")));

    let reply = gw
        .post(
            "/v1/knowledge/reply",
            &key,
            json!({"query": "When do deploys happen?", "metadata": {"mission_id": "m-trace"}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply_trace = trace(&gw, &key, reply.body["context"]["trace_id"].as_str().unwrap()).await;
    assert_eq!(reply_trace["trace_type"], "knowledge_reply");
    assert_eq!(reply_trace["mission"].as_str(), Some(uuid));
    let cost: f64 = reply.header("x-tokaroo-cost").unwrap().parse().unwrap();
    assert!((reply_trace["charged_usd"].as_f64().unwrap() - cost).abs() < 1e-9, "{reply_trace} vs {cost}");
    assert_eq!(reply_trace["output_summary"], reply.body["answer"]);

    // Streamed, the trace is completed when the stream ends.
    let streamed = gw
        .raw(
            gw.client().post(gw.url("/v1/knowledge/reply")).bearer_auth(&key).json(
                &json!({"query": "When do deploys happen?", "stream": true, "metadata": {"mission_id": "m-trace"}}),
            ),
        )
        .await;
    assert_eq!(streamed.status, 200, "{}", streamed.text);
    let streamed_id = streamed.header("x-tokaroo-context-trace").unwrap().to_owned();
    let done = eventually("the streamed reply's trace completed", || async {
        let t = trace(&gw, &key, &streamed_id).await;
        (t["trace_type"] == "knowledge_reply").then_some(t)
    })
    .await;
    assert!(done["charged_usd"].as_f64().unwrap() > 0.0, "{done}");
    assert!(!done["output_summary"].as_str().unwrap().is_empty());

    // The mission's detail lists its traces, newest first.
    let detail = gw.get(&format!("/v1/harness/missions/{uuid}"), &key).await;
    let ids: Vec<&str> = detail.body["traces"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{}", detail.text);
    assert_eq!(ids[0], streamed_id);
    assert_eq!(ids[2], id);
}

#[tokio::test]
async fn agents_record_traces_that_page_and_filter_and_stay_in_their_tenant() {
    let gw = Gateway::start().await;
    let keys = gw.neighbours().await;
    let key = &keys.default_ws;
    let mission = ok(&gw, "/v1/harness/missions", key, json!({"mission_id": "m-obs"})).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = json!({
            "trace_type": if i % 2 == 0 { "tool_call" } else { "external_observation" },
            "mission_id": if i < 3 { Some("m-obs") } else { None },
            "input_summary": format!("step {i}"),
            "outcome": if i == 4 { "failure" } else { "success" },
            "charged_usd": 0.01,
            "context": {"documents": [{"id": "doc-1", "score": 0.5}], "memories": [{"id": "n-1", "score": 0.7}]},
        });
        let r = gw.post("/v1/harness/traces", key, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let page = |query: String| {
        let gw = &gw;
        async move {
            let r = gw.get(&format!("/v1/harness/traces?{query}"), key).await;
            assert_eq!(r.status, 200, "{query}: {}", r.text);
            r.body
        }
    };
    let first = page("limit=2".into()).await;
    let got: Vec<&str> = first["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()], "newest first");
    let next = page(format!("limit=2&before={}", first["next_before"].as_str().unwrap())).await;
    assert_eq!(next["data"][0]["id"], ids[2]);
    assert_eq!(page("type=tool_call".into()).await["data"].as_array().unwrap().len(), 3);
    assert_eq!(page("outcome=failure".into()).await["data"][0]["id"], ids[4]);
    let of_mission = page(format!("mission={}", mission["id"].as_str().unwrap())).await;
    assert_eq!(of_mission["data"].as_array().unwrap().len(), 3);
    assert_eq!(page("mission=m-obs".into()).await["data"].as_array().unwrap().len(), 3, "by mission_id too");
    assert_eq!(page("until=2020-01-01T00:00:00Z".into()).await["data"], json!([]));
    assert_eq!(page("since=2020-01-01T00:00:00Z".into()).await["data"].as_array().unwrap().len(), 5);

    for other in [&keys.research, &keys.other_account] {
        assert_eq!(gw.get(&format!("/v1/harness/traces/{}", ids[0]), other).await.status, 404);
        assert_eq!(gw.get("/v1/harness/traces", other).await.body["data"], json!([]));
        let r = gw.post("/v1/harness/feedback", other, json!({"trace_id": ids[0], "rating": 1})).await;
        assert_eq!(r.status, 404, "{}", r.text);
    }
    for (body, status, field) in [
        (json!({"mission_id": "no-such"}), 404, "mission"),
        (json!({"trace_type": ""}), 400, "trace_type"),
        (json!({"charged_usd": -1}), 400, "charged_usd"),
        (json!({"context": {"documents": [{"id": "", "score": 1}]}}), 400, "context.documents"),
        (json!({"context": {"memories": [{"score": 1}]}}), 400, "id"),
        (json!({"shade": "blue"}), 400, "shade"),
    ] {
        let r = gw.post("/v1/harness/traces", key, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }
    assert_eq!(gw.get("/v1/harness/traces?since=yesterday", key).await.status, 400);
    assert_eq!(gw.get("/v1/harness/traces?limit=0", key).await.status, 400);
    assert_eq!(gw.get("/v1/harness/traces/tr_nope", key).await.status, 404);
}

/// Feedback on a trace moves the memories it included in the next pack for a similar query,
/// remembers text as a pending note, and forgets what it is told to.
#[tokio::test]
async fn feedback_on_a_trace_moves_its_memories_in_later_packs() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let office =
        ok(&gw, "/v1/memory/notes", &key, json!({"content": "The office Wi-Fi password is on the fridge."})).await;
    let guest =
        ok(&gw, "/v1/memory/notes", &key, json!({"content": "Guest Wi-Fi details are at the reception desk."})).await;
    let stale = ok(&gw, "/v1/memory/notes", &key, json!({"content": "The Wi-Fi router was replaced in 2019."})).await;
    let scores = |pack: &Value| {
        let find = |id: &Value| {
            pack["memories"].as_array().unwrap().iter().find(|m| m["id"] == *id).map(|m| m["score"].as_f64().unwrap())
        };
        (find(&office["id"]), find(&guest["id"]))
    };
    let before = ok(&gw, "/v1/memory/context-pack", &key, json!({"query": "Where is the Wi-Fi password?"})).await;
    let (office_before, guest_before) = scores(&before);
    let trace_id = before["telemetry"]["trace_id"].as_str().or(before["trace_id"].as_str()).unwrap().to_owned();

    let r = gw
        .post(
            "/v1/harness/feedback",
            &key,
            json!({"trace_id": trace_id, "rating": -1, "items": [office["id"]], "outcome": "failure",
                   "correction": "Ask reception.", "remember_text": "Visitors get the Wi-Fi code at reception.",
                   "forget": [stale["id"]]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["signals"], 1);
    assert_eq!(
        (r.body["trace"]["feedback_score"].as_f64(), r.body["trace"]["outcome"].as_str()),
        (Some(-1.0), Some("failure"))
    );
    assert_eq!(r.body["trace"]["correction"], "Ask reception.");
    let remembered = r.body["remembered_note_id"].as_str().unwrap();
    let note = gw.get(&format!("/v1/memory/notes/{remembered}"), &key).await;
    assert_eq!(note.body["status"], "pending", "remembered text waits for approval: {}", note.text);
    let forgotten = gw.get(&format!("/v1/memory/notes/{}", stale["id"].as_str().unwrap()), &key).await;
    assert_eq!(forgotten.status, 404, "{}", forgotten.text);

    let after = ok(&gw, "/v1/memory/context-pack", &key, json!({"query": "Where can I find the wifi password?"})).await;
    let (office_after, guest_after) = scores(&after);
    let (office_before, office_after) = (office_before.unwrap(), office_after.unwrap());
    assert!(office_after < office_before * 0.9, "unhelpful moved it down: {office_before} -> {office_after}");
    if let (Some(b), Some(a)) = (guest_before, guest_after) {
        assert!((a - b).abs() < 0.2 * b, "the unrated note stays about where it was: {b} -> {a}");
    }
    // Helpful moves it up again.
    let next_trace = after["telemetry"]["trace_id"].as_str().or(after["trace_id"].as_str()).unwrap().to_owned();
    let up = gw
        .post("/v1/harness/feedback", &key, json!({"trace_id": next_trace, "rating": 1, "items": [office["id"]]}))
        .await;
    assert_eq!(up.status, 200, "{}", up.text);
    let again = ok(&gw, "/v1/memory/context-pack", &key, json!({"query": "Where is the Wi-Fi password?"})).await;
    assert!(scores(&again).0.unwrap() > office_after, "helpful moved it back up");

    for (body, field) in [
        (json!({"trace_id": trace_id, "rating": 3}), "rating"),
        (json!({"trace_id": trace_id}), "at least one"),
        (
            json!({"trace_id": trace_id, "rating": 1, "items": ["note_not_in_trace"]}),
            "not a memory this trace included",
        ),
    ] {
        let r = gw.post("/v1/harness/feedback", &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }
}

/// Harness versions: a draft changes nothing; activating one changes the next pack (its
/// weights and default budget), its trace records the version, and the version it replaced
/// is retired.
#[tokio::test]
async fn activating_a_harness_version_changes_the_next_pack() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let sure = ok(
        &gw,
        "/v1/memory/notes",
        &key,
        json!({"content": "The quarterly report is due on Friday.",
                                                       "importance": 1.0, "confidence": 1.0}),
    )
    .await;
    let unsure = ok(
        &gw,
        "/v1/memory/notes",
        &key,
        json!({"content": "The quarterly report might be due on Friday.",
                                                         "importance": 0.0, "confidence": 0.0}),
    )
    .await;
    let ratio = |pack: &Value| {
        let score = |id: &Value| {
            pack["memories"].as_array().unwrap().iter().find(|m| m["id"] == *id).unwrap()["score"].as_f64().unwrap()
        };
        score(&unsure["id"]) / score(&sure["id"])
    };
    let query = json!({"query": "When is the quarterly report due?"});
    let before = ok(&gw, "/v1/memory/context-pack", &key, query.clone()).await;
    assert_eq!(before["max_tokens"], 2000);

    let body = json!({"name": "meta-heavy", "retrieval": {"meta": 1.0}, "context": {"max_tokens": 300}});
    let draft = gw.post("/v1/harness/versions", &key, body).await;
    assert_eq!(draft.status, 201, "{}", draft.text);
    assert_eq!(
        (draft.body["status"].as_str(), draft.body["effective_retrieval"]["meta"].as_f64()),
        (Some("draft"), Some(1.0))
    );
    assert_eq!(draft.body["effective_retrieval"]["recency"], 0.2, "the rest are the built-in weights");
    let still = ok(&gw, "/v1/memory/context-pack", &key, query.clone()).await;
    assert!((ratio(&still) - ratio(&before)).abs() < 1e-9, "a draft changes nothing");

    let id = draft.body["id"].as_str().unwrap();
    let active = gw.post(&format!("/v1/harness/versions/{id}/activate"), &key, json!({})).await;
    assert_eq!((active.status.as_u16(), active.body["status"].as_str()), (200, Some("active")), "{}", active.text);
    let after = ok(&gw, "/v1/memory/context-pack", &key, query.clone()).await;
    assert_eq!(after["max_tokens"], 300, "the version's budget");
    assert!(
        ratio(&after) < ratio(&before) * 0.7,
        "importance and confidence weigh more: {} -> {}",
        ratio(&before),
        ratio(&after)
    );
    let traced = trace(&gw, &key, after["trace_id"].as_str().unwrap()).await;
    assert_eq!(traced["harness_version_id"], id);
    let asked = ok(
        &gw,
        "/v1/memory/context-pack",
        &key,
        json!({"query": "When is the quarterly report due?", "max_tokens": 900}),
    )
    .await;
    assert_eq!(asked["max_tokens"], 900, "a request's own budget wins");

    let next = gw.post("/v1/harness/versions", &key, json!({"name": "plain", "status": "active"})).await;
    assert_eq!((next.status.as_u16(), next.body["status"].as_str()), (201, Some("active")), "{}", next.text);
    let versions = gw.get("/v1/harness/versions", &key).await;
    let statuses: Vec<(&str, &str)> = versions.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [("plain", "active"), ("meta-heavy", "retired")]);
    let plain = ok(&gw, "/v1/memory/context-pack", &key, query).await;
    assert!((ratio(&plain) - ratio(&before)).abs() < 1e-6, "the built-in weights again");

    for (body, field) in [
        (json!({"name": "x", "retrieval": {"meta": 2}}), "meta"),
        (json!({"name": "x", "retrieval": {"colour": 1}}), "colour"),
        (json!({"name": "x", "context": {"max_tokens": 0}}), "context.max_tokens"),
        (json!({"name": "x", "context": {"budget": 5}}), "context.budget"),
        (json!({"name": "x", "reflection": {"mode": "slow"}}), "reflection.mode"),
        (json!({"name": "x", "status": "live"}), "status"),
        (json!({"retrieval": {}}), "name"),
    ] {
        let r = gw.post("/v1/harness/versions", &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }
    let keys = gw.neighbours().await;
    assert_eq!(gw.get(&format!("/v1/harness/versions/{id}"), &keys.other_account).await.status, 404);
    assert_eq!(gw.post(&format!("/v1/harness/versions/{id}/activate"), &keys.research, json!({})).await.status, 404);
}

/// A reflection: traces selected by id or by filter, a model asked through routing (billed,
/// with a usage row of its own type), its answer stored whole with the traces it came from,
/// and, when asked, as a memory note that later packs use.
#[tokio::test]
async fn reflections_are_synthesized_from_traces_billed_and_stored() {
    const INSIGHT: &str = "- Deploy questions are answered from the runbook; cite it.\n- Ask for approvals early.";
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-reflect").await;
    fake.set(crate::fakes::Behavior::Text(INSIGHT));
    let gw = Gateway::start_with(Options::default().openai(&fake)).await;
    let key = gw.first_key.clone().unwrap();
    let mission = ok(&gw, "/v1/harness/missions", &key, json!({"mission_id": "m-reflect", "status": "running"})).await;
    let mut ids = Vec::new();
    for (input, outcome) in [("Deploy on Friday?", "failure"), ("Who approves deploys?", "success")] {
        let body = json!({"mission_id": "m-reflect", "input_summary": input, "output_summary": "answered", "outcome": outcome});
        ids.push(ok(&gw, "/v1/harness/traces", &key, body).await["id"].as_str().unwrap().to_owned());
    }
    let r = gw
        .post(
            "/v1/harness/reflections/generate",
            &key,
            json!({"mission": "m-reflect", "mode": "fast", "title": "Deploys",
                                                               "store_as_memory": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["content"], INSIGHT, "the model's answer, whole");
    let mut got: Vec<String> =
        r.body["trace_ids"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    assert_eq!(r.body["mission"], mission["id"]);
    let cost: f64 = r.header("x-tokaroo-cost").unwrap().parse().unwrap();
    assert!(cost > 0.0 && (r.body["charged_usd"].as_f64().unwrap() - cost).abs() < 1e-12, "{}", r.text);
    // The model saw the traces.
    let asked = fake.answer_requests().pop().unwrap();
    let prompt = asked.body["messages"].to_string();
    assert!(prompt.contains("Deploy on Friday?") && prompt.contains("failure"), "{prompt}");
    // Billed with a row of its own type.
    let usage = gw.get("/v1/usage?request_type=reflection", &key).await;
    assert_eq!(usage.body["data"].as_array().map(Vec::len), Some(1), "{}", usage.text);
    // Stored as an active note, used by later packs.
    let note_id = r.body["note_id"].as_str().unwrap();
    let note = gw.get(&format!("/v1/memory/notes/{note_id}"), &key).await;
    assert_eq!((note.body["status"].as_str(), note.body["kind"].as_str()), (Some("active"), Some("reflection")));
    let pack = ok(&gw, "/v1/memory/context-pack", &key, json!({"query": "Who should approve a deploy?"})).await;
    assert!(pack["memories"].as_array().unwrap().iter().any(|m| m["id"] == note_id), "{pack}");
    let listed = gw.get("/v1/harness/reflections?mission=m-reflect", &key).await;
    assert_eq!(listed.body["data"][0]["id"], r.body["id"], "{}", listed.text);

    // By ids, without storing a note.
    let by_ids = gw.post("/v1/harness/reflections/generate", &key, json!({"trace_ids": [ids[0]]})).await;
    assert_eq!((by_ids.status.as_u16(), by_ids.body["note_id"].clone()), (201, Value::Null), "{}", by_ids.text);
    for (body, status) in [
        (json!({"trace_ids": ["tr_nope"]}), 404),
        (json!({"mission": "no-such-mission"}), 400),
        (json!({"mode": "slow"}), 400),
        (json!({"limit": 51}), 400),
        (json!({"trace_ids": ids, "colour": 1}), 400),
    ] {
        let r = gw.post("/v1/harness/reflections/generate", &key, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
    }
    let session = gw.post("/v1/harness/reflections/generate", ADMIN_TOKEN, json!({"trace_ids": [ids[0]]})).await;
    assert_eq!(session.status, 403, "a reflection is billed to a runtime key: {}", session.text);
}
