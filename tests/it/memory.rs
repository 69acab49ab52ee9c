//! Memory Vault through HTTP: notes (create, upsert by external id, patch, approve, forget
//! with an audit record), context packs within their token budget, isolation between
//! accounts and workspaces, bad input, and a crash between a write and its index commit.

use serde_json::{json, Value};

use crate::harness::*;

async fn note(gw: &Gateway, key: &str, body: Value) -> Value {
    let r = gw.post("/v1/memory/notes", key, body.clone()).await;
    assert_eq!(r.status, 200, "{body}: {}", r.text);
    r.body
}

async fn pack(gw: &Gateway, key: &str, body: Value) -> Value {
    let r = gw.post("/v1/memory/context-pack", key, body.clone()).await;
    assert_eq!(r.status, 200, "{body}: {}", r.text);
    r.body
}

fn ids(pack: &Value) -> Vec<String> {
    pack["memories"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn notes_are_written_upserted_approved_and_forgotten_and_packs_follow() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let dog = note(
        &gw,
        &key,
        json!({"title": "Pet", "content": "Caroline adopted a golden retriever named Max in May.",
        "kind": "fact", "tags": ["pets"], "importance": 0.9, "external_source": "crm", "external_id": "c-1"}),
    )
    .await;
    assert_eq!((dog["created"].clone(), dog["status"].clone()), (json!(true), json!("active")));
    note(&gw, &key, json!({"content": "The team prefers Postgres over MySQL for new services.", "kind": "preference"}))
        .await;
    let pending =
        note(&gw, &key, json!({"content": "Caroline might be allergic to cats.", "status": "inferred"})).await;

    let found = pack(&gw, &key, json!({"query": "What is the name of Caroline's dog?", "max_tokens": 200})).await;
    assert_eq!(ids(&found)[0], dog["id"].as_str().unwrap(), "{found:#}");
    assert!(!ids(&found).contains(&pending["id"].as_str().unwrap().to_owned()), "inferred notes wait for approval");
    assert!(found["used_tokens"].as_u64().unwrap() <= 200);
    assert!(found["context"].as_str().unwrap().contains("golden retriever"));
    assert!(found["trace_id"].as_str().unwrap().starts_with("tr_"));
    let included = &found["telemetry"]["included"][0];
    assert_eq!(included["id"], dog["id"]);
    for component in ["relevance", "importance", "confidence", "recency"] {
        assert!(included["components"][component].is_number(), "{component}: {included}");
    }
    for component in ["bm25_norm", "cosine_norm", "base", "neighbour", "thread", "author"] {
        assert!(!included["components"]["fusion"][component].is_null(), "{component}: {included}");
    }
    for raw in ["bm25", "cosine"] {
        assert!(included["components"]["fusion"].get(raw).is_none(), "raw {raw} leaks other tenants' statistics");
    }

    // Upsert by external id: the same note, changed.
    let again = note(
        &gw,
        &key,
        json!({"content": "Caroline adopted a golden retriever named Rex in May.",
        "external_source": "crm", "external_id": "c-1"}),
    )
    .await;
    assert_eq!((again["id"].clone(), again["created"].clone()), (dog["id"].clone(), json!(false)));
    let listed = gw.get("/v1/memory/notes?limit=10", &key).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 3, "{}", listed.text);
    let found = pack(&gw, &key, json!({"query": "Caroline's dog name"})).await;
    assert!(found["context"].as_str().unwrap().contains("Rex") && !found["context"].as_str().unwrap().contains("Max"));

    // Approving puts an inferred note in packs.
    let pending_id = pending["id"].as_str().unwrap();
    let approved = gw.post(&format!("/v1/memory/notes/{pending_id}/approve"), &key, json!({})).await;
    assert_eq!(approved.body["status"], "active", "{}", approved.text);
    assert!(
        ids(&pack(&gw, &key, json!({"query": "Is Caroline allergic to cats?"})).await).contains(&pending_id.to_owned())
    );

    // Patching content moves the note's place in packs.
    let patched = gw
        .patch(
            &format!("/v1/memory/notes/{pending_id}"),
            &key,
            json!({"content": "Caroline is allergic to peanuts.", "tags": ["health"]}),
        )
        .await;
    assert_eq!(patched.body["tags"], json!(["health"]), "{}", patched.text);
    let peanuts = pack(&gw, &key, json!({"query": "peanuts allergy"})).await;
    assert_eq!(ids(&peanuts)[0], pending_id);

    // Forgetting: out of every pack at once; the audit record stays.
    let dog_id = dog["id"].as_str().unwrap();
    let forgot = gw.delete(&format!("/v1/memory/notes/{dog_id}"), &key).await;
    assert_eq!((forgot.status.as_u16(), forgot.body["deleted"].clone()), (200, json!(true)), "{}", forgot.text);
    let after = pack(&gw, &key, json!({"query": "What is the name of Caroline's dog?"})).await;
    assert!(!ids(&after).contains(&dog_id.to_owned()), "{after:#}");
    assert!(!after["context"].as_str().unwrap().contains("retriever"));
    assert_eq!(gw.get(&format!("/v1/memory/notes/{dog_id}"), &key).await.status, 404);
    let audit = gw.get("/v1/memory/forgotten", &key).await;
    let records = audit.body["data"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{}", audit.text);
    assert_eq!((records[0]["note_id"].as_str(), records[0]["external_id"].as_str()), (Some(dog_id), Some("c-1")));
    assert!(!audit.text.contains("retriever"), "the audit keeps no content");
    // Its external id is free again: writing it creates a new note.
    let reborn = note(
        &gw,
        &key,
        json!({"content": "Caroline has a new puppy.", "external_source": "crm", "external_id": "c-1"}),
    )
    .await;
    assert_eq!(reborn["created"], true);
}

#[tokio::test]
async fn a_pack_never_exceeds_its_budget_and_takes_the_best_that_fit() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    for i in 0..12 {
        let filler = "The quarterly planning meeting covered hiring, budgets and the roadmap. ".repeat(1 + i % 4);
        note(&gw, &key, json!({"content": format!("Meeting {i}: {filler}")})).await;
    }
    for budget in [1, 20, 60, 150, 400, 5000] {
        let found = pack(&gw, &key, json!({"query": "quarterly planning meeting roadmap", "max_tokens": budget})).await;
        let used = found["used_tokens"].as_u64().unwrap();
        assert!(used <= budget, "budget {budget}: used {used}");
        let items: u64 = found["memories"].as_array().unwrap().iter().map(|m| m["tokens"].as_u64().unwrap()).sum();
        assert!(items <= budget);
        if budget >= 5000 {
            assert_eq!(found["memories"].as_array().unwrap().len(), 12);
            assert_eq!(found["telemetry"]["dropped_for_budget"], 0);
        }
        if budget == 1 {
            assert!(found["memories"].as_array().unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn memory_never_crosses_accounts_or_workspaces() {
    let gw = Gateway::start().await;
    // The first key works in the "default" workspace; the operator's session, bound to none,
    // writes the account's own memory.
    let account = ADMIN_TOKEN.to_owned();
    let Neighbours { default_ws, research, other_account: tenant_key } = gw.neighbours().await;

    let secret = note(&gw, &research, json!({"content": "The launch code name is BLUEHERON."})).await;
    let secret_id = secret["id"].as_str().unwrap();
    assert_eq!(secret["workspace_id"], "research");
    let query = json!({"query": "What is the launch code name?"});
    assert!(pack(&gw, &research, query.clone()).await["context"].as_str().unwrap().contains("BLUEHERON"));
    // Neither the account's own memory nor another workspace sees a workspace's; another
    // account sees nothing.
    for (who, key) in
        [("the account level", &account), ("another workspace", &default_ws), ("another account", &tenant_key)]
    {
        let found = pack(&gw, key, query.clone()).await;
        assert!(!found.to_string().contains("BLUEHERON"), "{who}: {found}");
        assert_eq!(gw.get(&format!("/v1/memory/notes/{secret_id}"), key).await.status, 404, "{who}");
        let r = gw.patch(&format!("/v1/memory/notes/{secret_id}"), key, json!({"content": "pwned"})).await;
        assert_eq!(r.status, 404, "{who}: {}", r.text);
        assert_eq!(gw.delete(&format!("/v1/memory/notes/{secret_id}"), key).await.status, 404, "{who}");
        assert!(!gw.get("/v1/memory/notes", key).await.text.contains("BLUEHERON"), "{who}");
    }
    // A workspace key cannot step into another workspace; another account cannot name ours.
    let r = gw.post("/v1/memory/context-pack", &research, json!({"query": "x", "workspace_id": "default"})).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = gw.post("/v1/memory/context-pack", &tenant_key, json!({"query": "x", "workspace_id": "research"})).await;
    assert_eq!(r.status, 404, "{}", r.text);
    // Account-level memory is shared with the account's workspaces.
    note(&gw, &account, json!({"content": "Company holiday: the office closes on December 24."})).await;
    assert!(pack(&gw, &research, json!({"query": "When does the office close?"})).await["context"]
        .as_str()
        .unwrap()
        .contains("December 24"));
    assert!(!pack(&gw, &tenant_key, json!({"query": "When does the office close?"}))
        .await
        .to_string()
        .contains("December"));
}

#[tokio::test]
async fn bad_memory_input_gets_a_clear_4xx() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let huge = "x".repeat(70 * 1024);
    let cases = [
        ("/v1/memory/notes", json!({"content": ""}), 400, "content"),
        ("/v1/memory/notes", json!({"content": "   "}), 400, "content"),
        ("/v1/memory/notes", json!({"title": "t"}), 400, "content"),
        ("/v1/memory/notes", json!({"content": huge}), 400, "larger"),
        ("/v1/memory/notes", json!({"content": "x", "importance": 1.5}), 400, "importance"),
        ("/v1/memory/notes", json!({"content": "x", "confidence": -0.1}), 400, "confidence"),
        ("/v1/memory/notes", json!({"content": "x", "status": "deleted"}), 400, "status"),
        ("/v1/memory/notes", json!({"content": "x", "external_id": "only-id"}), 400, "together"),
        ("/v1/memory/notes", json!({"content": "x", "external_source": "a", "external_id": "b\u{0}c"}), 400, "control"),
        ("/v1/memory/notes", json!({"content": "x", "workspace_id": "nope"}), 403, "works in workspace"),
        ("/v1/memory/notes", json!({"content": "x", "colour": "red"}), 400, "colour"),
        ("/v1/memory/context-pack", json!({"query": ""}), 400, "query"),
        ("/v1/memory/context-pack", json!({"query": "x", "max_tokens": -5}), 400, "max_tokens"),
        ("/v1/memory/context-pack", json!({"query": "x", "max_tokens": 0}), 400, "max_tokens"),
        ("/v1/memory/context-pack", json!({"query": "x", "max_tokens": 10_000_000}), 400, "max_tokens"),
        ("/v1/memory/context", json!({"max_tokens": 10}), 400, "query"),
    ];
    for (path, body, status, needle) in cases {
        let r = gw.post(path, &key, body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{path} {body}: {}", r.text);
        assert!(r.text.contains(needle), "{path} {body}: {}", r.text);
    }
    // A session (not bound to a workspace) may name one, if it exists.
    let r = gw.post("/v1/memory/notes", ADMIN_TOKEN, json!({"content": "x", "workspace_id": "nope"})).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let unknown = "00000000-0000-0000-0000-000000000000";
    assert_eq!(gw.patch(&format!("/v1/memory/notes/{unknown}"), &key, json!({"content": "x"})).await.status, 404);
    assert_eq!(gw.post(&format!("/v1/memory/notes/{unknown}/approve"), &key, json!({})).await.status, 404);
    assert_eq!(gw.delete(&format!("/v1/memory/notes/{unknown}"), &key).await.status, 404);
    assert_eq!(gw.get("/v1/memory/notes?limit=0", &key).await.status, 400);
    for workspace in ["%00", "a%0Ab", ""] {
        let r = gw.get(&format!("/v1/memory/notes?workspace_id={workspace}"), ADMIN_TOKEN).await;
        assert_eq!(r.status, 400, "{workspace}: {}", r.text);
    }
    // Approving: an active note is answered as it is; an archived one is restored by a patch.
    let active = note(&gw, &key, json!({"content": "Active already."})).await;
    let id = active["id"].as_str().unwrap();
    let again = gw.post(&format!("/v1/memory/notes/{id}/approve"), &key, json!({})).await;
    assert_eq!((again.status.as_u16(), again.body["updated_at"].clone()), (200, active["updated_at"].clone()));
    gw.patch(&format!("/v1/memory/notes/{id}"), &key, json!({"status": "archived"})).await;
    assert_eq!(gw.post(&format!("/v1/memory/notes/{id}/approve"), &key, json!({})).await.status, 409);
    assert_eq!(gw.get("/v1/memory/notes?limit=abc", &key).await.status, 400);
    assert_eq!(gw.get("/v1/memory/notes", "tok_nope").await.status, 401);
}

#[tokio::test]
async fn a_crash_between_the_record_write_and_the_index_commit_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let key = gw.first_key.clone().unwrap();
    let kept = note(&gw, &key, json!({"content": "The staging database runs on port 6543."})).await;
    gw.kill().await;
    // As if the process died after writing a record and before the index committed: the
    // text index is rolled back to an empty one, the records in sled stay.
    std::fs::remove_dir_all(dir.path().join("index").join("text")).unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let key = gw.first_key.clone().unwrap_or(key);
    let found = pack(&gw, &key, json!({"query": "Which port does the staging database use?"})).await;
    assert_eq!(ids(&found).first().map(String::as_str), kept["id"].as_str(), "{found:#}");
    let fusion = &found["telemetry"]["included"][0]["components"]["fusion"];
    assert!(fusion["bm25_norm"].as_f64().unwrap() > 0.0, "text index rebuilt: {fusion}");
    let tree = gw.actor_tree().await;
    let indexer = find_actor(&tree, "indexer").expect("the indexer in the tree");
    assert_eq!(indexer["snapshot"]["recovered_at_start"], 1, "{indexer}");
    assert_eq!(indexer["snapshot"]["backlog"], 0);
}

#[tokio::test]
async fn a_tenant_holds_at_most_its_cap_of_notes_and_the_operator_is_not_capped() {
    let gw = Gateway::start_with(Options::default().env("TOKAROO_MAX_MEMORY_NOTES_PER_ACCOUNT", "3")).await;
    let (tenant_id, tenant) = gw.create_account("tenant").await;
    let credit = gw.post(&format!("/admin/accounts/{tenant_id}/credits"), ADMIN_TOKEN, json!({"amount_usd": 5})).await;
    assert!(credit.status.is_success(), "{}", credit.text);
    let key = gw.post("/v1/keys", &tenant, json!({"name": "k"})).await.body["key"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..3 {
        let n = note(
            &gw,
            &key,
            json!({"content": format!("note {i}"), "external_source": "s", "external_id": format!("{i}")}),
        )
        .await;
        ids.push(n["id"].as_str().unwrap().to_owned());
    }
    let over = gw.post("/v1/memory/notes", &key, json!({"content": "one too many"})).await;
    assert_eq!(over.status, 400, "{}", over.text);
    assert!(over.text.contains("limits.memory_notes_per_account"), "{}", over.text);
    // Updating a note it holds is not a new one.
    note(&gw, &key, json!({"content": "note 0, edited", "external_source": "s", "external_id": "0"})).await;
    assert_eq!(gw.delete(&format!("/v1/memory/notes/{}", ids[1]), &key).await.status, 200);
    note(&gw, &key, json!({"content": "room again"})).await;
    // The same cap holds each kind of graph record: entities, links, events, feedback.
    let entities: Vec<Value> = (0..4).map(|i| json!({"name": format!("e{i}")})).collect();
    let over = gw.post("/v1/memory/batch", &key, json!({"entities": entities})).await;
    assert_eq!(over.status, 400, "{}", over.text);
    assert!(over.text.contains("entities") && over.text.contains("limits.memory_notes_per_account"), "{}", over.text);
    let events: Vec<Value> = (0..3).map(|i| json!({"type": "t", "summary": format!("event {i}")})).collect();
    assert_eq!(gw.post("/v1/memory/batch", &key, json!({"events": events})).await.status, 200);
    let over = gw.post("/v1/memory/events", &key, json!({"type": "t", "summary": "one too many"})).await;
    assert_eq!(over.status, 400, "{}", over.text);
    // The operator's account is not capped.
    let operator = gw.first_key.clone().unwrap();
    for i in 0..4 {
        note(&gw, &operator, json!({"content": format!("operator note {i}")})).await;
    }
    let entities: Vec<Value> = (0..4).map(|i| json!({"name": format!("e{i}")})).collect();
    assert_eq!(gw.post("/v1/memory/batch", &operator, json!({"entities": entities})).await.status, 200);
}

/// A forget is its audit record first, then the removals. A crash between the two is
/// finished at the next start: the note never comes back in a pack.
#[tokio::test]
async fn a_forget_cut_short_by_a_crash_is_finished_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let key = gw.first_key.clone().unwrap();
    let kept = note(
        &gw,
        &key,
        json!({"content": "The VPN gateway is vpn.example.com.", "external_source": "wiki", "external_id": "vpn"}),
    )
    .await;
    note(&gw, &key, json!({"content": "Lunch is served at noon."})).await;
    gw.kill().await;
    {
        // What a crash right after the audit write leaves behind.
        let store = tokaroo_actors::Store::open(dir.path()).unwrap();
        let account = store.notes.all().unwrap().into_iter().find(|n| n.id == kept["id"]).unwrap().account_id;
        let audit = tokaroo_actors::knowledge::ForgottenNote {
            note_id: kept["id"].as_str().unwrap().to_owned(),
            account_id: account.clone(),
            workspace: "default".into(),
            kind: "fact".into(),
            external_source: Some("wiki".into()),
            external_id: Some("vpn".into()),
            created_at_ms: 0,
            forgotten_at_ms: 1,
            forgotten_by: "test".into(),
            seq: store.next_kb_seq().unwrap(),
        };
        store.forgotten_notes.insert(&(account.as_str(), audit.note_id.as_str()), &audit).unwrap();
        store.flush_blocking().unwrap();
    }
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let key = gw.first_key.clone().unwrap_or(key);
    let found = pack(&gw, &key, json!({"query": "What is the VPN gateway address?"})).await;
    assert!(!found["context"].as_str().unwrap().contains("vpn.example.com"), "{found:#}");
    assert_eq!(gw.get(&format!("/v1/memory/notes/{}", kept["id"].as_str().unwrap()), &key).await.status, 404);
    // Its external id names nothing now: writing it creates a new note.
    let again =
        note(&gw, &key, json!({"content": "New VPN host.", "external_source": "wiki", "external_id": "vpn"})).await;
    assert_eq!(again["created"], true);
}

/// The turn after the one that matches a question joins the candidates though neither
/// retriever found it: its neighbour's score carries it (notes with `thread`/`position`).
#[tokio::test]
async fn a_hit_brings_its_neighbouring_turns() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let mut notes: Vec<Value> = (0..300)
        .map(|i| {
            json!({"content": format!("Alice: the climbing gym in district {i} has new routes on the bouldering wall."),
                   "metadata": {"thread": format!("other-{i}"), "position": 0}})
        })
        .collect();
    notes.push(json!({"content": "Bob: Do you still go climbing at the gym on Fridays?",
                      "metadata": {"thread": "chat-1", "position": 7}}));
    notes.push(json!({"content": "Alice: Yes, twice a week now.", "metadata": {"thread": "chat-1", "position": 8}}));
    let written = gw.post("/v1/memory/batch", &key, json!({"notes": notes})).await;
    assert_eq!(written.status, 200, "{}", written.text);
    let answer = written.body["notes"][301]["id"].as_str().unwrap().to_owned();
    let found =
        pack(&gw, &key, json!({"query": "Does Bob still go climbing at the gym on Fridays?", "max_tokens": 100_000}))
            .await;
    let item = found["telemetry"]["included"].as_array().unwrap().iter().find(|i| i["id"] == answer.as_str());
    let item = item.unwrap_or_else(|| panic!("the answer turn is in the pack: {found:#}"));
    let fusion = &item["components"]["fusion"];
    assert!(fusion["neighbour"].as_f64().unwrap() > 0.0, "{item}");
    assert_eq!(fusion["bm25_norm"].as_f64().unwrap(), 0.0, "BM25 did not find it: {item}");
}
