//! Memory Vault's graph through HTTP: entities, links, events, feedback and batches (all or
//! nothing), in context packs, scoped to their account and workspace, with bad input refused.

use serde_json::{json, Value};

use crate::harness::*;

async fn ok(gw: &Gateway, path: &str, key: &str, body: Value) -> Value {
    let r = gw.post(path, key, body.clone()).await;
    assert_eq!(r.status, 200, "{path} {body}: {}", r.text);
    r.body
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

/// A batch writes everything together, later parts naming earlier ones by external id; a
/// pack then shows the linked entity, the link and the recent event with the memory.
#[tokio::test]
async fn a_batch_writes_a_graph_that_packs_follow() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let batch = json!({
        "entities": [
            {"name": "Priya Raman", "type": "user", "description": "Head of platform engineering",
             "aliases": ["Priya"], "external_source": "crm", "external_id": "u-1"},
            {"name": "Atlas", "type": "project", "external_source": "crm", "external_id": "p-9"},
        ],
        "notes": [
            {"content": "The Atlas migration to Kubernetes must finish before the March audit.",
             "external_source": "crm", "external_id": "n-1"},
        ],
        "links": [
            {"from": {"type": "entity", "external_source": "crm", "external_id": "u-1"},
             "to": {"type": "entity", "external_source": "crm", "external_id": "p-9"}, "relation": "leads"},
            {"from": {"type": "note", "external_source": "crm", "external_id": "n-1"},
             "to": {"type": "entity", "external_source": "crm", "external_id": "p-9"}, "relation": "about"},
        ],
        "events": [
            {"type": "mission.started", "summary": "Kicked off the Atlas migration mission.",
             "subjects": [{"type": "entity", "external_source": "crm", "external_id": "p-9"}],
             "external_source": "crm", "external_id": "e-1"},
        ],
    });
    let written = ok(&gw, "/v1/memory/batch", &key, batch.clone()).await;
    assert_eq!(written["object"], "memory.batch");
    for (part, n) in [("entities", 2), ("notes", 1), ("links", 2), ("events", 1)] {
        assert_eq!(written[part].as_array().unwrap().len(), n, "{part}: {written:#}");
        assert!(written[part].as_array().unwrap().iter().all(|r| r["created"] == true), "{part}");
    }
    let atlas = written["entities"][1]["id"].as_str().unwrap().to_owned();
    let note = written["notes"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(written["links"][1]["from"], json!({"type": "note", "id": note}));
    assert_eq!(written["links"][1]["to"], json!({"type": "entity", "id": atlas}));

    // The same batch again updates, never duplicates.
    let again = ok(&gw, "/v1/memory/batch", &key, batch).await;
    for part in ["entities", "notes", "links", "events"] {
        assert!(again[part].as_array().unwrap().iter().all(|r| r["created"] == false), "{part}: {again:#}");
    }
    assert_eq!(ids(&gw.get("/v1/memory/entities", &key).await.body["data"]).len(), 2);
    assert_eq!(ids(&gw.get("/v1/memory/events", &key).await.body["data"]).len(), 1);
    let at_atlas = gw.get(&format!("/v1/memory/links?entity_id={atlas}"), &key).await.body;
    assert_eq!(ids(&at_atlas["data"]).len(), 2, "{at_atlas:#}");

    let pack = ok(&gw, "/v1/memory/context-pack", &key, json!({"query": "When must the migration finish?"})).await;
    assert_eq!(ids(&pack["memories"])[0], note, "{pack:#}");
    assert!(ids(&pack["entities"]).contains(&atlas), "the linked entity comes along: {pack:#}");
    assert!(!pack["links"].as_array().unwrap().is_empty(), "{pack:#}");
    assert_eq!(ids(&pack["events"]).len(), 1, "{pack:#}");
    let context = pack["context"].as_str().unwrap();
    for needle in ["Memories:", "Entities:", "Atlas (project)", "—about→", "Recent events:", "mission.started"] {
        assert!(context.contains(needle), "{needle}: {context}");
    }
    let kinds: Vec<&str> =
        pack["telemetry"]["included"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    for kind in ["memory", "entity", "link", "event"] {
        assert!(kinds.contains(&kind), "{kind}: {kinds:?}");
    }
    assert!(pack["used_tokens"].as_u64().unwrap() <= 2000);

    // An entity named by the query comes in on its own.
    let pack = ok(&gw, "/v1/memory/context-pack", &key, json!({"query": "Who is Priya?"})).await;
    assert!(pack["context"].as_str().unwrap().contains("Head of platform engineering"), "{pack:#}");

    // Entities change by PATCH; links go by DELETE; forgetting a note takes its links.
    let r = gw.patch(&format!("/v1/memory/entities/{atlas}"), &key, json!({"description": "Cloud migration"})).await;
    assert_eq!(
        (r.status.as_u16(), r.body["description"].clone(), r.body["name"].clone()),
        (200, json!("Cloud migration"), json!("Atlas"))
    );
    let leads = again["links"][0]["id"].as_str().unwrap();
    let r = gw.delete(&format!("/v1/memory/links/{leads}"), &key).await;
    assert_eq!((r.status.as_u16(), r.body["deleted"].clone()), (200, json!(true)), "{}", r.text);
    assert_eq!(gw.delete(&format!("/v1/memory/links/{leads}"), &key).await.status, 404);
    assert_eq!(gw.delete(&format!("/v1/memory/notes/{note}"), &key).await.status, 200);
    assert!(ids(&gw.get(&format!("/v1/memory/links?entity_id={atlas}"), &key).await.body["data"]).is_empty());
}

/// One bad part fails the whole batch: nothing of it is written.
#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let cases = [
        // A link to an entity that does not exist.
        (
            json!({"entities": [{"name": "Orion"}], "notes": [{"content": "Orion ships in June."}],
                "links": [{"from": {"type": "entity", "id": "ent_missing"}, "to": {"type": "entity", "id": "ent_missing2"}, "relation": "x"}]}),
            "links[0]",
        ),
        // An event whose subject names an unknown external id.
        (
            json!({"notes": [{"content": "Orion ships in June."}],
                "events": [{"type": "t", "summary": "s", "subjects": [{"type": "note", "external_source": "a", "external_id": "zzz"}]}]}),
            "events[0]",
        ),
        // An invalid note after valid ones.
        (
            json!({"entities": [{"name": "Orion"}], "notes": [{"content": "Orion ships in June."}, {"content": ""}]}),
            "notes[1]",
        ),
    ];
    for (batch, needle) in cases {
        let r = gw.post("/v1/memory/batch", &key, batch.clone()).await;
        assert_eq!(r.status, 400, "{batch}: {}", r.text);
        assert!(r.text.contains(needle), "{needle}: {}", r.text);
    }
    assert!(ids(&gw.get("/v1/memory/notes", &key).await.body["data"]).is_empty());
    assert!(ids(&gw.get("/v1/memory/entities", &key).await.body["data"]).is_empty());
    assert!(ids(&gw.get("/v1/memory/events", &key).await.body["data"]).is_empty());
    let pack = ok(&gw, "/v1/memory/context-pack", &key, json!({"query": "When does Orion ship?"})).await;
    assert!(ids(&pack["memories"]).is_empty(), "{pack:#}");
}

/// Helpful feedback lifts an item for the same and similar queries; unhelpful sinks it; an
/// unrelated query is not moved; `forget` forgets; `remember` with text writes a note.
#[tokio::test]
async fn feedback_moves_items_in_later_packs_for_similar_queries() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let notes = [
        "Deploys to production run from the release pipeline every Tuesday.",
        "Production deploys need an approval from the on-call engineer.",
        "Staging deploys happen automatically after every merge to main.",
    ];
    let mut note_ids = Vec::new();
    for content in notes {
        note_ids.push(
            ok(&gw, "/v1/memory/notes", &key, json!({"content": content})).await["id"].as_str().unwrap().to_owned(),
        );
    }
    let query = "How do production deploys work?";
    let pack = |q: &'static str| {
        let gw = &gw;
        let key = key.clone();
        async move { ok(gw, "/v1/memory/context-pack", &key, json!({"query": q})).await }
    };
    let before = pack(query).await;
    let order = ids(&before["memories"]);
    let (top, last) = (order[0].clone(), order[order.len() - 1].clone());
    let trace = before["trace_id"].as_str().unwrap();

    // The last item was the one that helped; the top one did not.
    for (item, signal) in [(&last, "helpful"), (&top, "unhelpful")] {
        let r = ok(
            &gw,
            "/v1/memory/feedback",
            &key,
            json!({"trace_id": trace, "item": {"type": "note", "id": item}, "signal": signal}),
        )
        .await;
        assert_eq!(r["feedback"][0]["query"], query, "the trace's query is kept: {r:#}");
    }
    let after = pack(query).await;
    let moved = ids(&after["memories"]);
    let position = |order: &[String], id: &str| order.iter().position(|i| i == id).unwrap();
    assert!(position(&moved, &last) < position(&order, &last), "helpful rises: {after:#}");
    assert_eq!(moved[moved.len() - 1], top, "unhelpful sinks: {after:#}");
    let factor = |p: &Value, id: &str| {
        p["telemetry"]["included"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap()["components"]["feedback"]
            .as_f64()
            .unwrap()
    };
    assert!(factor(&after, &last) > 1.2 && factor(&after, &top) < 0.8, "{after:#}");
    // A similar query moves too; an unrelated one does not.
    let similar = pack("How does deploying to production work?").await;
    assert!(factor(&similar, &last) > 1.1, "{similar:#}");
    let unrelated = pack("What runs on Tuesday?").await;
    for item in ids(&unrelated["memories"]) {
        assert!((factor(&unrelated, &item) - 1.0).abs() < 0.2, "{unrelated:#}");
    }

    // Forget through feedback forgets the note; remember with text writes one.
    let r =
        ok(&gw, "/v1/memory/feedback", &key, json!({"item": {"type": "note", "id": top}, "signal": "forget"})).await;
    assert_eq!(r["forgotten"], json!([top]));
    assert_eq!(gw.get(&format!("/v1/memory/notes/{top}"), &key).await.status, 404);
    let r = ok(
        &gw,
        "/v1/memory/feedback",
        &key,
        json!({"signal": "remember", "text": "The user wants deploy summaries in three bullet points."}),
    )
    .await;
    assert_eq!(r["notes"][0]["kind"], "feedback", "{r:#}");
    let found = pack("How should deploy summaries be formatted?").await;
    assert!(found["context"].as_str().unwrap().contains("three bullet points"), "{found:#}");
}

/// Another workspace or account can neither read nor link to nor give feedback on a
/// workspace's graph.
#[tokio::test]
async fn the_graph_never_crosses_accounts_or_workspaces() {
    let gw = Gateway::start().await;
    let Neighbours { default_ws, research, other_account: tenant_key } = gw.neighbours().await;

    let written = ok(
        &gw,
        "/v1/memory/batch",
        &research,
        json!({
            "entities": [{"name": "Project Nightjar", "type": "project", "description": "codename NIGHTJAR"}],
            "notes": [{"content": "Nightjar launches on the ninth."}],
            "events": [{"type": "note", "summary": "NIGHTJAR kickoff"}],
        }),
    )
    .await;
    let entity = written["entities"][0]["id"].as_str().unwrap();
    let note = written["notes"][0]["id"].as_str().unwrap();
    for (who, key) in [("another workspace", &default_ws), ("another account", &tenant_key)] {
        assert_eq!(gw.get(&format!("/v1/memory/entities/{entity}"), key).await.status, 404, "{who}");
        let r = gw.patch(&format!("/v1/memory/entities/{entity}"), key, json!({"name": "pwned"})).await;
        assert_eq!(r.status, 404, "{who}: {}", r.text);
        for list in ["/v1/memory/entities", "/v1/memory/events", "/v1/memory/links"] {
            assert!(!gw.get(list, key).await.text.to_lowercase().contains("nightjar"), "{who} {list}");
        }
        let link =
            json!({"from": {"type": "entity", "id": entity}, "to": {"type": "note", "id": note}, "relation": "x"});
        let r = gw.post("/v1/memory/links", key, link).await;
        assert_eq!(r.status, 400, "{who} links to a node it cannot see: {}", r.text);
        let r = gw
            .post("/v1/memory/feedback", key, json!({"item": {"type": "note", "id": note}, "signal": "forget"}))
            .await;
        assert_eq!(r.status, 400, "{who} cannot forget it through feedback: {}", r.text);
        let pack = ok(&gw, "/v1/memory/context-pack", key, json!({"query": "When does Nightjar launch?"})).await;
        for part in ["context", "memories", "entities", "events", "links"] {
            assert!(!pack[part].to_string().to_lowercase().contains("nightjar"), "{who} {part}: {pack}");
        }
    }
    assert_eq!(gw.get(&format!("/v1/memory/notes/{note}"), &research).await.status, 200);
}

#[tokio::test]
async fn bad_graph_input_gets_a_clear_4xx() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"name": format!("e{i}")})).collect();
    let cases = [
        ("/v1/memory/entities", json!({"name": ""}), 400, "name"),
        ("/v1/memory/entities", json!({"type": "user"}), 400, "name"),
        ("/v1/memory/entities", json!({"name": "x", "aliases": ["a\u{0}"]}), 400, "control"),
        ("/v1/memory/entities", json!({"name": "x", "id": "ent_1"}), 400, "PATCH"),
        (
            "/v1/memory/links",
            json!({"from": {"type": "user", "id": "a"}, "to": {"type": "note", "id": "b"}, "relation": "x"}),
            400,
            "from.type",
        ),
        (
            "/v1/memory/links",
            json!({"from": {"type": "note"}, "to": {"type": "note", "id": "b"}, "relation": "x"}),
            400,
            "from",
        ),
        (
            "/v1/memory/links",
            json!({"from": {"type": "note", "id": "a"}, "to": {"type": "note", "id": "a"}, "relation": "x"}),
            400,
            "different",
        ),
        (
            "/v1/memory/links",
            json!({"from": {"type": "note", "id": "a"}, "to": {"type": "note", "id": "b"}, "relation": "x", "weight": 3}),
            400,
            "weight",
        ),
        (
            "/v1/memory/links",
            json!({"from": {"type": "note", "id": "a"}, "to": {"type": "note", "id": "b"}, "relation": "x"}),
            400,
            "no such note",
        ),
        ("/v1/memory/events", json!({"type": "t", "summary": ""}), 400, "summary"),
        ("/v1/memory/events", json!({"type": "t", "summary": "s", "occurred_at": "yesterday"}), 400, "RFC 3339"),
        ("/v1/memory/events", json!({"type": "t", "summary": "s", "occurred_at": -5}), 400, "occurred_at"),
        ("/v1/memory/feedback", json!({"signal": "love", "item": {"type": "note", "id": "a"}}), 400, "signal"),
        ("/v1/memory/feedback", json!({"signal": "helpful"}), 400, "item"),
        ("/v1/memory/batch", json!({}), 400, "empty"),
        ("/v1/memory/batch", json!({"entities": too_many}), 400, "at most"),
        (
            "/v1/memory/batch",
            json!({"notes": [{"content": "x", "workspace_id": "default"}]}),
            400,
            "belongs on the batch",
        ),
        ("/v1/memory/batch", json!({"unlinks": ["lnk_nope"]}), 400, "unlinks[0]"),
    ];
    for (path, body, status, needle) in cases {
        let r = gw.post(path, &key, body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{path} {body}: {}", r.text);
        assert!(r.text.contains(needle), "{path} {body}: {}", r.text);
    }
    assert_eq!(gw.patch("/v1/memory/entities/ent_nope", &key, json!({"name": "x"})).await.status, 404);
    assert_eq!(gw.patch("/v1/memory/entities", &key, json!({"name": "x"})).await.status, 400);
    assert_eq!(gw.get("/v1/memory/links?note_id=a&entity_id=b", &key).await.status, 400);
    assert_eq!(gw.get("/v1/memory/events?limit=0", &key).await.status, 400);
}

/// Entities written before a crash and missing from the text index are found after it.
#[tokio::test]
async fn entities_are_indexed_again_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let key = gw.first_key.clone().unwrap();
    ok(
        &gw,
        "/v1/memory/entities",
        &key,
        json!({"name": "Zephyr Labs", "type": "company", "description": "our hosting vendor"}),
    )
    .await;
    gw.kill().await;
    std::fs::remove_dir_all(dir.path().join("index").join("text")).unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let key = gw.first_key.clone().unwrap_or(key);
    let pack = ok(&gw, "/v1/memory/context-pack", &key, json!({"query": "Who is Zephyr Labs?"})).await;
    assert!(pack["context"].as_str().unwrap().contains("hosting vendor"), "{pack:#}");
}

/// The account's own memory is shared with its workspaces, but what one workspace says about
/// it (feedback, links) stays in that workspace.
#[tokio::test]
async fn one_workspaces_feedback_and_links_stay_in_it() {
    let gw = Gateway::start().await;
    let Neighbours { default_ws, research, .. } = gw.neighbours().await;
    // Account-level notes and an entity, written by the operator's session (no workspace).
    let shared = ok(
        &gw,
        "/v1/memory/batch",
        ADMIN_TOKEN,
        json!({
            "notes": [{"content": "Expense reports are due on the fifth of each month."},
                      {"content": "Expense reports over 500 dollars need a manager's approval."}],
            "entities": [{"name": "Finance team", "type": "team"}],
        }),
    )
    .await;
    let (first, entity) = (shared["notes"][0]["id"].as_str().unwrap(), shared["entities"][0]["id"].as_str().unwrap());
    let query = "When are expense reports due?";
    let before = ok(&gw, "/v1/memory/context-pack", &default_ws, json!({"query": query})).await;

    // The research workspace marks a shared note unhelpful and links it to the entity.
    ok(
        &gw,
        "/v1/memory/feedback",
        &research,
        json!({"query": query, "item": {"type": "note", "id": first}, "signal": "unhelpful"}),
    )
    .await;
    ok(
        &gw,
        "/v1/memory/links",
        &research,
        json!({"from": {"type": "note", "id": first}, "to": {"type": "entity", "id": entity}, "relation": "INJECTED"}),
    )
    .await;
    let in_research = ok(&gw, "/v1/memory/context-pack", &research, json!({"query": query})).await;
    assert!(in_research["context"].as_str().unwrap().contains("INJECTED"), "{in_research:#}");

    // The default workspace's pack is as it was: same scores, no link, no entity via it.
    let after = ok(&gw, "/v1/memory/context-pack", &default_ws, json!({"query": query})).await;
    // Scores as before (recency moves them by a hair in between).
    let scores =
        |p: &Value| p["memories"].as_array().unwrap().iter().map(|m| m["score"].as_f64().unwrap()).collect::<Vec<_>>();
    for (a, b) in scores(&after).iter().zip(scores(&before)) {
        assert!((a - b).abs() < 1e-6, "{after:#}");
    }
    assert_eq!(scores(&after).len(), scores(&before).len());
    assert!(!after["context"].as_str().unwrap().contains("INJECTED"), "{after:#}");
    assert!(after["links"].as_array().unwrap().is_empty(), "{after:#}");
    // Nor can a workspace forget the account's note through feedback.
    let r = gw
        .post("/v1/memory/feedback", &research, json!({"item": {"type": "note", "id": first}, "signal": "forget"}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("account level"), "{}", r.text);
    let r = gw
        .post(
            "/v1/memory/events",
            &research,
            json!({"type": "t", "summary": "s", "occurred_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}
