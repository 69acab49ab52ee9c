//! Sources through HTTP: ingestion of text, Markdown, HTML and PDF (JSON, multipart upload,
//! or the file as the body), documents and chunks with citations, search, re-ingestion by
//! external id replacing chunks, deletion, packs with `include_sources`, isolation, bad input
//! and a crash before the index commit.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::harness::*;

const HANDBOOK_PDF: &[u8] = include_bytes!("../data/handbook.pdf");

async fn ok(gw: &Gateway, path: &str, key: &str, body: Value) -> Value {
    let r = gw.post(path, key, body.clone()).await;
    assert_eq!(r.status, 200, "{path} {body}: {}", r.text);
    r.body
}

async fn search(gw: &Gateway, key: &str, query: &str) -> Value {
    ok(gw, "/v1/sources/search", key, json!({"query": query})).await
}

const RUNBOOK: &str = "# Deploy runbook\n\nHow we ship the API.\n\n## Rollback\n\nTo roll back a release, run `tok deploy rollback --to <version>` and page the on-call engineer.\n\n## Canary\n\nEvery release goes to 5% of traffic for 30 minutes before the full rollout.\n";

#[tokio::test]
async fn sources_become_documents_and_chunks_that_search_cites() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    // Markdown in a JSON body.
    let md = ok(
        &gw,
        "/v1/sources",
        &key,
        json!({
            "name": "Runbook", "content": RUNBOOK, "content_type": "text/markdown",
            "url": "https://wiki.example.com/runbook", "external_source": "wiki", "external_id": "runbook",
        }),
    )
    .await;
    assert_eq!((md["object"].clone(), md["created"].clone()), (json!("source"), json!(true)));
    assert_eq!(md["documents"][0]["kind"], "markdown");
    let source_id = md["id"].as_str().unwrap().to_owned();
    // HTML, and a PDF as base64.
    let html = "<html><head><title>Office guide</title></head><body><h1>Office</h1><p>The office wifi password rotates every Monday.</p><script>alert(1)</script></body></html>";
    let page = ok(&gw, "/v1/sources", &key, json!({"content": html, "content_type": "text/html"})).await;
    assert_eq!((page["name"].clone(), page["documents"][0]["kind"].clone()), (json!("Office guide"), json!("html")));
    let pdf = base64::engine::general_purpose::STANDARD.encode(HANDBOOK_PDF);
    let handbook =
        ok(&gw, "/v1/sources", &key, json!({"name": "Handbook", "content_base64": pdf, "filename": "handbook.pdf"}))
            .await;
    assert_eq!(
        (handbook["documents"][0]["kind"].clone(), handbook["documents"][0]["pages"].clone()),
        (json!("pdf"), json!(2))
    );

    // Search answers with chunks and their citations.
    let found = search(&gw, &key, "How do I roll back a release?").await;
    let top = &found["data"][0];
    assert!(top["text"].as_str().unwrap().contains("tok deploy rollback"), "{found:#}");
    let citation = &top["citation"];
    assert_eq!(citation["source_id"], source_id);
    assert_eq!(citation["source_name"], "Runbook");
    assert_eq!(citation["url"], "https://wiki.example.com/runbook");
    assert_eq!(citation["chunk_id"], top["id"]);
    assert!(citation["document_title"].as_str().unwrap().contains("Deploy runbook"), "{citation}");
    assert!(citation["score"].as_f64().unwrap() > 0.0);
    let found = search(&gw, &key, "What do I do about a lost laptop?").await;
    let top = &found["data"][0];
    assert!(top["text"].as_str().unwrap().contains("lost laptop"), "{found:#}");
    assert_eq!(
        top["citation"]["pages"],
        json!({"first": 1, "last": 2}),
        "a short PDF is one chunk over both pages: {found:#}"
    );
    assert!(!search(&gw, &key, "wifi password").await.to_string().contains("<script"), "scripts are not text");

    // The source with its documents and chunks; the list.
    let got = gw.get(&format!("/v1/sources/{source_id}"), &key).await;
    assert_eq!(got.status, 200, "{}", got.text);
    let chunks = got.body["documents"][0]["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty() && chunks.iter().all(|c| c["tokens"].as_u64().unwrap() <= 200));
    assert_eq!(gw.get("/v1/sources", &key).await.body["data"].as_array().unwrap().len(), 3);

    // Re-ingesting the same external id replaces the chunks.
    let changed = RUNBOOK.replace("tok deploy rollback --to <version>", "tok release revert");
    let again = ok(
        &gw,
        "/v1/sources",
        &key,
        json!({
            "name": "Runbook", "content": changed, "content_type": "text/markdown",
            "external_source": "wiki", "external_id": "runbook",
        }),
    )
    .await;
    assert_eq!((again["id"].clone(), again["created"].clone()), (json!(source_id), json!(false)));
    assert!(again["replaced_chunks"].as_u64().unwrap() >= 1);
    let found = search(&gw, &key, "How do I roll back a release?").await;
    assert!(!found.to_string().contains("tok deploy rollback"), "old chunks are gone: {found:#}");
    assert!(found["data"][0]["text"].as_str().unwrap().contains("tok release revert"), "{found:#}");
    assert_eq!(gw.get("/v1/sources", &key).await.body["data"].as_array().unwrap().len(), 3);

    // A pack with include_sources cites chunks; without, it has none.
    ok(&gw, "/v1/memory/notes", &key, json!({"content": "Releases are frozen during the last week of December."}))
        .await;
    let pack = ok(
        &gw,
        "/v1/memory/context-pack",
        &key,
        json!({"query": "How do I roll back a release?", "include_sources": true}),
    )
    .await;
    let context = pack["context"].as_str().unwrap();
    assert!(
        context.contains("Sources:") && context.contains("[1]") && context.contains("tok release revert"),
        "{context}"
    );
    assert_eq!(pack["citations"][0]["index"], 1);
    assert_eq!(pack["citations"][0]["source_id"], source_id);
    assert!(pack["telemetry"]["included"].as_array().unwrap().iter().any(|i| i["type"] == "source_chunk"));
    assert!(pack["used_tokens"].as_u64().unwrap() <= 2000);
    let small = ok(
        &gw,
        "/v1/memory/context-pack",
        &key,
        json!({"query": "How do I roll back a release?", "include_sources": true, "max_tokens": 40}),
    )
    .await;
    assert!(small["used_tokens"].as_u64().unwrap() <= 40, "{small:#}");
    let without = ok(&gw, "/v1/memory/context-pack", &key, json!({"query": "How do I roll back a release?"})).await;
    assert!(without["sources"].as_array().unwrap().is_empty() && without["citations"].as_array().unwrap().is_empty());

    // Deleting takes the source, its documents and its chunks out of search.
    let r = gw.delete(&format!("/v1/sources/{source_id}"), &key).await;
    assert_eq!((r.status.as_u16(), r.body["deleted"].clone()), (200, json!(true)), "{}", r.text);
    assert_eq!(gw.get(&format!("/v1/sources/{source_id}"), &key).await.status, 404);
    assert!(!search(&gw, &key, "How do I roll back a release?").await.to_string().contains("tok release revert"));
}

/// A file can be uploaded as multipart form data, or sent as the body with its own type.
#[tokio::test]
async fn files_are_uploaded_as_multipart_or_as_the_body() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let form = reqwest::multipart::Form::new()
        .text("name", "Handbook")
        .text("external_source", "drive")
        .text("external_id", "hb-1")
        .part(
            "file",
            reqwest::multipart::Part::bytes(HANDBOOK_PDF.to_vec())
                .file_name("handbook.pdf")
                .mime_str("application/pdf")
                .unwrap(),
        );
    let r = gw.raw(gw.client().post(gw.url("/v1/sources")).bearer_auth(&key).multipart(form)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.body["name"].clone(), r.body["documents"][0]["kind"].clone()), (json!("Handbook"), json!("pdf")));
    let r = gw
        .raw(
            gw.client()
                .post(gw.url("/v1/sources?name=Notes&filename=notes.md"))
                .bearer_auth(&key)
                .header("content-type", "text/markdown")
                .body("# Notes\n\nThe parking garage closes at 22:00."),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["documents"][0]["kind"], "markdown");
    let found = search(&gw, &key, "When does the parking garage close?").await;
    assert!(found["data"][0]["text"].as_str().unwrap().contains("22:00"), "{found:#}");
    let found = search(&gw, &key, "How many days of annual leave?").await;
    assert!(found["data"][0]["text"].as_str().unwrap().contains("28 days"), "{found:#}");
    assert_eq!(found["data"][0]["citation"]["pages"]["first"], 1);
}

#[tokio::test]
async fn sources_never_cross_accounts_or_workspaces() {
    let gw = Gateway::start().await;
    let Neighbours { default_ws, research, other_account: tenant_key } = gw.neighbours().await;
    let secret =
        ok(&gw, "/v1/sources", &research, json!({"content": "The merger partner is codenamed KESTREL."})).await;
    let id = secret["id"].as_str().unwrap();
    for (who, key) in [("another workspace", &default_ws), ("another account", &tenant_key)] {
        assert_eq!(gw.get(&format!("/v1/sources/{id}"), key).await.status, 404, "{who}");
        assert_eq!(gw.delete(&format!("/v1/sources/{id}"), key).await.status, 404, "{who}");
        assert!(!gw.get("/v1/sources", key).await.text.contains("KESTREL"), "{who}");
        let found = search(&gw, key, "What is the merger partner's codename?").await;
        assert!(!found["data"].to_string().contains("KESTREL"), "{who}: {found}");
        let r = ok(&gw, "/v1/sources/search", key, json!({"query": "merger codename", "source_ids": [id]})).await;
        assert!(r["data"].as_array().unwrap().is_empty(), "{who}: {r}");
        let pack = ok(
            &gw,
            "/v1/memory/context-pack",
            key,
            json!({"query": "merger partner codename", "include_sources": true}),
        )
        .await;
        assert!(!pack["context"].to_string().contains("KESTREL"), "{who}: {pack}");
    }
    assert!(search(&gw, &research, "What is the merger partner's codename?").await.to_string().contains("KESTREL"));
}

#[tokio::test]
async fn bad_source_input_gets_a_clear_4xx() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let cases = [
        (json!({"name": "x"}), "content"),
        (json!({"content": ""}), "empty"),
        (json!({"content": "   \n  "}), "no text"),
        (json!({"content_base64": "!!!"}), "base64"),
        (json!({"content": "a", "content_base64": "YQ=="}), "not both"),
        (json!({"content_base64": "JVBERi0xLjQKZ2FyYmFnZQ=="}), "PDF"),
        (json!({"content": "x", "filename": "f".repeat(300)}), "filename"),
        (json!({"content": "x", "url": "file:///etc/passwd"}), "http(s)"),
        (json!({"content": "x", "external_id": "only"}), "together"),
        (json!({"documents": []}), "content"),
        (json!({"content": "x", "documents": [{"content": "y"}]}), "not both"),
        (json!({"documents": [{"content": "ok"}, {"title": "t"}]}), "documents[1]"),
        (json!({"content": "x", "colour": "red"}), "colour"),
    ];
    for (body, needle) in cases {
        let r = gw.post("/v1/sources", &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(needle), "{needle}: {}", r.text);
    }
    for (body, needle) in [
        (json!({"query": ""}), "query"),
        (json!({"query": "x", "limit": 0}), "limit"),
        (json!({"query": "x", "limit": 1000}), "limit"),
    ] {
        let r = gw.post("/v1/sources/search", &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(needle), "{needle}: {}", r.text);
    }
    let r = gw.post("/v1/sources", &key, json!({"content": "x", "content_type": "image/png"})).await;
    assert_eq!(r.status, 415, "{}", r.text);
    assert!(r.text.contains("not supported"), "{}", r.text);
    // A one-line "heading" of 1 MB is cut to a title's length in every chunk it heads.
    let huge_heading = format!("# {}\n\nThe body text.\n", "h".repeat(1 << 20));
    let r = gw.post("/v1/sources", &key, json!({"content": huge_heading, "content_type": "text/markdown"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["documents"][0]["title"].as_str().unwrap().chars().count() <= 201);
    let got = gw.get(&format!("/v1/sources/{}", r.body["id"].as_str().unwrap()), &key).await;
    for chunk in got.body["documents"][0]["chunks"].as_array().unwrap() {
        assert!(chunk["section"].as_str().unwrap().chars().count() <= 201, "{chunk}");
    }
    assert_eq!(gw.get("/v1/sources/src_nope", &key).await.status, 404);
    assert_eq!(gw.delete("/v1/sources/src_nope", &key).await.status, 404);
    assert_eq!(gw.get("/v1/sources?limit=0", &key).await.status, 400);
    let r = gw
        .raw(
            gw.client()
                .post(gw.url("/v1/sources"))
                .bearer_auth(&key)
                .header("content-type", "multipart/form-data; boundary=x")
                .body("--x\r\nbroken"),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}

/// Chunks written before a crash and missing from the indexes are found after it.
#[tokio::test]
async fn sources_are_indexed_again_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let key = gw.first_key.clone().unwrap();
    ok(&gw, "/v1/sources", &key, json!({"content": RUNBOOK, "content_type": "text/markdown"})).await;
    gw.kill().await;
    std::fs::remove_dir_all(dir.path().join("index").join("text")).unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let key = gw.first_key.clone().unwrap_or(key);
    let found = search(&gw, &key, "canary rollout traffic").await;
    assert!(found["data"][0]["text"].as_str().unwrap().contains("5% of traffic"), "{found:#}");
    // Its vector, lost with the crash, is made again in the background.
    eventually("the chunk's vector", || async {
        let tree = gw.actor_tree().await;
        let vectoriser = find_actor(&tree, "kb-vectoriser")?;
        (vectoriser["snapshot"]["embedded"].as_u64()? >= 1).then_some(())
    })
    .await;
}

/// With the static chunk embedder (the default) an ingestion embeds its own chunks: once it
/// is answered, a search by meaning alone (no word in common) finds the right chunk.
#[tokio::test]
async fn chunk_vectors_are_written_with_the_source() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let documents = json!({"documents": [
        {"title": "Parking", "content": "Parking permits are renewed at the front desk each January."},
        {"title": "Canteen", "content": "The cafeteria serves vegetarian lasagna every Thursday."},
        {"title": "Taxes", "content": "Quarterly tax filings go to the finance team before the deadline."},
    ]});
    ok(&gw, "/v1/sources", &key, documents).await;
    let found = search(&gw, &key, "Which day is the meatless pasta dish on the lunch menu?").await;
    let hit = &found["data"][0];
    assert!(hit["text"].as_str().unwrap().contains("lasagna"), "{found:#}");
    assert!(hit["score"].as_f64().unwrap() > 0.0);
    let tree = gw.actor_tree().await;
    let indexer = find_actor(&tree, "indexer").expect("the indexer in the tree");
    let chunk_embedder = indexer["snapshot"]["chunk_embedder"].as_str().unwrap();
    assert_eq!(chunk_embedder, "static:wordllama-l2-supercat-256:256", "{indexer}");
    let vectoriser = find_actor(&tree, "kb-vectoriser").expect("the vectoriser in the tree");
    assert_eq!(vectoriser["snapshot"]["embedded"], 0, "nothing was left for the background: {vectoriser}");
}

/// With `knowledge.chunk_embedder = "main"` an ingestion is answered once its chunks are
/// written and searchable by text; MiniLM's vectors follow from the vectoriser, and then a
/// search by meaning alone finds them.
#[tokio::test]
async fn with_the_main_chunk_embedder_vectors_follow_in_the_background() {
    let options = Options::default().env("TOKAROO_KB_CHUNK_EMBEDDER", "main");
    let gw = Gateway::start_with(options).await;
    let key = gw.first_key.clone().unwrap();
    ok(&gw, "/v1/sources", &key, json!({"content": "The cafeteria serves vegetarian lasagna every Thursday."})).await;
    let found = eventually("a search by meaning", || async {
        let found = search(&gw, &key, "Which day is the meatless pasta dish on the lunch menu?").await;
        let hit = found["data"].as_array()?.first()?.clone();
        hit["text"].as_str()?.contains("lasagna").then_some(hit)
    })
    .await;
    assert!(found["score"].as_f64().unwrap() > 0.0);
    let tree = gw.actor_tree().await;
    let vectoriser = find_actor(&tree, "kb-vectoriser").expect("the vectoriser in the tree");
    assert_eq!(vectoriser["snapshot"]["queued"], 0, "{vectoriser}");
    assert_eq!(vectoriser["snapshot"]["embedded"], 1, "{vectoriser}");
    let indexer = find_actor(&tree, "indexer").expect("the indexer in the tree");
    assert_eq!(indexer["snapshot"]["chunk_embedder"], "neural:all-MiniLM-L6-v2:384", "{indexer}");
}

const THREE_DOCUMENTS: &str = r#"{"documents": [
    {"title": "Parking", "content": "Parking permits are renewed at the front desk each January."},
    {"title": "Canteen", "content": "The cafeteria serves vegetarian lasagna every Thursday."},
    {"title": "Taxes", "content": "Quarterly tax filings go to the finance team before the deadline."}
]}"#;

async fn vectoriser_snapshot(gw: &Gateway) -> Value {
    let tree = gw.actor_tree().await;
    find_actor(&tree, "kb-vectoriser").expect("the vectoriser in the tree")["snapshot"].clone()
}

/// Switching the chunk embedder remakes the chunks' vectors once (at the next start, in the
/// background), never again after; a stand-in for a static model that failed to load leaves
/// the static vectors alone (the chunks are found by text meanwhile), and they serve again
/// once the model is back.
#[tokio::test]
async fn switching_the_chunk_embedder_remakes_vectors_once_and_a_stand_in_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let main = || Options::default().env("TOKAROO_KB_CHUNK_EMBEDDER", "main");
    let gw = Gateway::start_in(dir.path(), main()).await;
    let key = gw.first_key.clone().unwrap();
    ok(&gw, "/v1/sources", &key, serde_json::from_str(THREE_DOCUMENTS).unwrap()).await;
    eventually("MiniLM's three vectors", || async { (vectoriser_snapshot(&gw).await["embedded"] == 3).then_some(()) })
        .await;
    gw.stop().await;

    let by_meaning = "Which day is the meatless pasta dish on the lunch menu?";
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    eventually("the static model's three vectors", || async {
        (vectoriser_snapshot(&gw).await["embedded"] == 3).then_some(())
    })
    .await;
    let found = search(&gw, &key, by_meaning).await;
    assert!(found["data"][0]["text"].as_str().unwrap().contains("lasagna"), "{found:#}");
    gw.stop().await;

    let missing = dir.path().join("no-static-model");
    let stand_in = Options::default()
        .env("TOKAROO_STATIC_MODEL_DIR", missing.to_str().unwrap())
        .env("TOKAROO_EMBED_AUTO_PULL", "false");
    let gw = Gateway::start_in(dir.path(), stand_in).await;
    let found = search(&gw, &key, "vegetarian lasagna").await;
    assert!(found["data"][0]["text"].as_str().unwrap().contains("lasagna"), "found by text: {found:#}");
    let snapshot = vectoriser_snapshot(&gw).await;
    assert_eq!((snapshot["queued"].as_u64(), snapshot["embedded"].as_u64()), (Some(0), Some(0)), "{snapshot}");
    gw.stop().await;

    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let found = search(&gw, &key, by_meaning).await;
    assert!(found["data"][0]["text"].as_str().unwrap().contains("lasagna"), "{found:#}");
    let snapshot = vectoriser_snapshot(&gw).await;
    assert_eq!((snapshot["queued"].as_u64(), snapshot["embedded"].as_u64()), (Some(0), Some(0)), "kept: {snapshot}");
}

/// A vectoriser that fails loses its queue; back, it has the indexer find those chunks again,
/// and every chunk gets its vector without a restart of the server.
#[tokio::test]
async fn a_restarted_vectoriser_gets_back_what_it_lost() {
    let gw = Gateway::start_with(Options::default().env("TOKAROO_KB_CHUNK_EMBEDDER", "main")).await;
    let key = gw.first_key.clone().unwrap();
    let sections: String = (0..30)
        .map(|i| format!("## Procedure {i}\n\nStep {i} of the runbook: restart the worker pool number {i} and check its queue.\n\n"))
        .collect();
    let source = ok(&gw, "/v1/sources", &key, json!({"content": sections, "content_type": "text/markdown"})).await;
    let chunks = source["chunk_count"].as_u64().unwrap();
    assert!(chunks >= 10, "{source:#}");
    let r = gw.post("/admin/actors/fail", ADMIN_TOKEN, json!({"name": "kb-vectoriser"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("every chunk's vector", || async {
        let tree = gw.actor_tree().await;
        let indexer = find_actor(&tree, "indexer")?;
        (indexer["snapshot"]["vectors"].as_u64()? == chunks).then_some(())
    })
    .await;
    let tree = gw.actor_tree().await;
    let vectoriser = find_actor(&tree, "kb-vectoriser").unwrap();
    assert!(vectoriser["restarts"].as_u64().unwrap() >= 1, "{vectoriser}");
    assert!(vectoriser["snapshot"]["embedded"].as_u64().unwrap() > 0, "embedded after its restart: {vectoriser}");
}
