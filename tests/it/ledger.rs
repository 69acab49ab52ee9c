//! Money: prepaid balances, holds under concurrency, budgets, usage history, stats, the
//! operator's views, reconciliation, and a real `kill -9` in the middle of traffic.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::harness::*;

/// A tenant account with a session and a key whose rate limit is out of the way.
struct Tenant {
    id: String,
    session: String,
    key: String,
}

async fn tenant(gw: &Gateway, name: &str, workspace: Option<&str>) -> Tenant {
    let (id, session) = gw.create_account(name).await;
    let mut body = json!({"name": "k", "rate_limit_rpm": 100000});
    if let Some(ws) = workspace {
        body["workspace_id"] = json!(ws);
    }
    let r = gw.post("/v1/keys", &session, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    Tenant { id, session, key: r.body["key"].as_str().unwrap().to_owned() }
}

/// A priced model named directly, so a request has exactly one route and a known price.
fn chat_body(max_tokens: u32) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hello there"}]})
}

async fn credit(gw: &Gateway, account: &str, usd: f64) -> Resp {
    gw.post(&format!("/admin/accounts/{account}/credits"), ADMIN_TOKEN, json!({"amount_usd": usd})).await
}

async fn balance(gw: &Gateway, token: &str) -> f64 {
    let r = gw.get("/v1/balance", token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["currency"], "usd");
    r.body["balance_usd"].as_f64().unwrap()
}

/// Every usage row of an account, through the operator's paged view.
async fn all_rows(gw: &Gateway, account: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut path = format!("/admin/usage?account_id={account}&limit=1000");
        if let Some(b) = &before {
            path.push_str(&format!("&before={b}"));
        }
        let r = gw.get(&path, ADMIN_TOKEN).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.body["data"].as_array().unwrap().clone();
        before = page.last().map(|row| row["created_at"].as_str().unwrap().to_owned());
        rows.extend(page);
        if r.body["has_more"] != true {
            return rows;
        }
    }
}

fn sum(rows: &[Value], field: &str) -> f64 {
    rows.iter().map(|r| r[field].as_f64().unwrap()).sum()
}

async fn reconcile_is_clean(gw: &Gateway) {
    let r = gw.post("/admin/ledger/reconcile", ADMIN_TOKEN, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["ok"], true, "drift: {}", r.text);
    assert_eq!(r.body["drift_usd"], 0.0);
}

#[tokio::test]
async fn a_tenant_pays_from_a_prepaid_balance_and_an_empty_one_gets_402() {
    let gw = Gateway::start().await;
    let t = tenant(&gw, "acme", None).await;
    assert_eq!(balance(&gw, &t.key).await, 0.0);

    let r = gw.post("/v1/chat/completions", &t.key, chat_body(50)).await;
    assert_eq!(r.status, 402, "{}", r.text);
    let error = &r.body["error"];
    assert_eq!(error["code"], "billing_required", "{}", r.text);
    assert_eq!(error["balance_usd"], 0.0);
    assert!(error["required_usd"].as_f64().unwrap() > 0.0);
    assert!(error["payment_url"].as_str().unwrap().starts_with("http"));
    // Tokaroo's own routes carry the same fields in the spec's flat ErrorResponse.
    let e = gw.post("/v1/embeddings", &t.key, json!({"input": "x"})).await;
    assert_eq!(e.status, 402, "{}", e.text);

    // Bad credits are refused and change nothing.
    for bad in [json!({"amount_usd": -5}), json!({"amount_usd": 0}), json!({"amount_usd": "ten"}), json!({})] {
        let r = gw.post(&format!("/admin/accounts/{}/credits", t.id), ADMIN_TOKEN, bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    assert_eq!(credit(&gw, "no-such-account", 5.0).await.status, 404);
    assert_eq!(
        gw.post(&format!("/admin/accounts/{}/credits", t.id), &t.session, json!({"amount_usd": 5})).await.status,
        403
    );

    // A manual credit sent again with its Idempotency-Key (a retry) counts once.
    let url = gw.url(&format!("/admin/accounts/{}/credits", t.id));
    for _ in 0..2 {
        let once = gw.client().post(&url).bearer_auth(ADMIN_TOKEN).header("idempotency-key", "grant-7");
        let r = gw.raw(once.json(&json!({"amount_usd": 2.5}))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["balance_usd"], 2.5, "{}", r.text);
    }
    let bad_key = gw.client().post(&url).bearer_auth(ADMIN_TOKEN).header("idempotency-key", "k".repeat(201));
    assert_eq!(gw.raw(bad_key.json(&json!({"amount_usd": 1}))).await.status, 400);
    let mut charged = 0.0;
    for _ in 0..3 {
        let r = gw.post("/v1/chat/completions", &t.key, chat_body(50)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        charged += r.header("x-tokaroo-cost").unwrap().parse::<f64>().unwrap();
    }
    let s = gw
        .raw(gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&t.key).json(&json!({
            "model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Stream it"}]
        })))
        .await;
    assert!(s.text.ends_with("data: [DONE]\n\n"), "{}", s.text);
    let rows = all_rows(&gw, &t.id).await;
    assert_eq!(rows.len(), 4);
    let streamed = rows.iter().find(|r| r["streamed"] == true).unwrap();
    assert!(streamed["charged_usd"].as_f64().unwrap() > 0.0, "a streamed answer is never free: {streamed}");
    charged += streamed["charged_usd"].as_f64().unwrap();
    assert!((sum(&rows, "charged_usd") - charged).abs() < 1e-9);
    let left = balance(&gw, &t.key).await;
    assert!((left - (2.5 - charged)).abs() < 1e-9, "balance = credits - charges: {left}");
    assert_eq!(balance(&gw, &t.session).await, left, "a session sees the same balance");
    // The operator's own account is not metered.
    let op = gw.first_key.clone().unwrap();
    assert_eq!(gw.post("/v1/chat/completions", &op, chat_body(50)).await.status, 200);
    reconcile_is_clean(&gw).await;
}

#[tokio::test]
async fn two_hundred_concurrent_requests_cannot_overspend_a_balance_that_covers_twenty() {
    let gw = Gateway::start().await;
    let t = tenant(&gw, "burst", None).await;
    let refused = gw.post("/v1/chat/completions", &t.key, chat_body(40)).await;
    let worst = refused.body["error"]["required_usd"].as_f64().expect("the 402 names the worst case");
    let funded = worst * 20.0;
    credit(&gw, &t.id, funded).await;

    let requests = (0..200).map(|_| {
        let req = gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&t.key).json(&chat_body(40));
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let cost = r.headers().get("x-tokaroo-cost").map(|v| v.to_str().unwrap().parse::<f64>().unwrap());
            (status, cost)
        }
    });
    let results = futures_util::future::join_all(requests).await;
    let ok: Vec<f64> = results.iter().filter(|(s, _)| *s == 200).map(|(_, c)| c.unwrap()).collect();
    let refused = results.iter().filter(|(s, _)| *s == 402).count();
    assert_eq!(ok.len() + refused, 200, "every request is answered 200 or 402: {results:?}");
    assert!(ok.len() >= 20, "the balance covers at least 20 worst cases: {} served", ok.len());
    assert!(refused > 0, "the balance ran out");
    let spent: f64 = ok.iter().sum();
    let left = balance(&gw, &t.key).await;
    assert!(left >= -1e-9, "the balance never goes below zero: {left}");
    assert!((left - (funded - spent)).abs() < 1e-9, "balance = credits - charges");
    let rows = all_rows(&gw, &t.id).await;
    assert_eq!(rows.len(), ok.len(), "one row per served request, none for refused ones");
    reconcile_is_clean(&gw).await;
}

#[tokio::test]
async fn a_workspace_budget_is_enforced_and_its_month_to_date_spend_shown() {
    let gw = Gateway::start().await;
    let (account, session) = gw.create_account("budgeted").await;
    credit(&gw, &account, 100.0).await;
    let r = gw
        .post("/v1/workspaces", &session, json!({"workspace_id": "team", "name": "Team", "monthly_budget_usd": 0.0001}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = gw.post("/v1/keys", &session, json!({"workspace_id": "team", "rate_limit_rpm": 100000})).await;
    let key = r.body["key"].as_str().unwrap().to_owned();

    let mut served = 0;
    let refusal = loop {
        let r = gw
            .post(
                "/v1/chat/completions",
                &key,
                json!({"model": "max", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        if r.status != 200 {
            break r;
        }
        served += 1;
        assert!(served < 1000, "the budget must stop this");
    };
    assert_eq!(refusal.status, 402, "{}", refusal.text);
    assert_eq!(refusal.body["error"]["code"], "budget_exceeded");
    assert_eq!(refusal.body["error"]["budget_usd"], 0.0001);
    let spent = refusal.body["error"]["spent_usd"].as_f64().unwrap();
    assert!(spent <= 0.0001 + 1e-12, "holds keep concurrent spend under the budget: {spent}");

    let ws = gw.get("/v1/workspaces/team", &session).await;
    assert!((ws.body["month_to_date_usd"].as_f64().unwrap() - spent).abs() < 1e-12, "{}", ws.text);
    // Raising the budget lets traffic through again at once.
    let r = gw.patch("/v1/workspaces/team", &session, json!({"monthly_budget_usd": 50})).await;
    assert_eq!(r.status, 200);
    let r = gw.post("/v1/chat/completions", &key, chat_body(20)).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn usage_pages_by_cursor_with_scopes_filters_and_clear_errors() {
    let gw = Gateway::start().await;
    let (account, session) = gw.create_account("pager").await;
    credit(&gw, &account, 50.0).await;
    gw.post("/v1/workspaces", &session, json!({"workspace_id": "blue", "name": "Blue"})).await;
    let mk = |ws: Option<&str>| {
        let mut body = json!({"rate_limit_rpm": 100000});
        if let Some(ws) = ws {
            body["workspace_id"] = json!(ws);
        }
        body
    };
    let a = gw.post("/v1/keys", &session, mk(None)).await.body.clone();
    let b = gw.post("/v1/keys", &session, mk(Some("blue"))).await.body.clone();
    let (key_a, key_b) = (a["key"].as_str().unwrap(), b["key"].as_str().unwrap());
    for i in 0..7 {
        gw.post("/v1/chat/completions", key_a, chat_body(10 + i)).await;
    }
    for i in 0..5 {
        gw.post("/v1/chat/completions", key_b, chat_body(10 + i)).await;
    }
    gw.post("/v1/embeddings", key_b, json!({"input": ["one", "two"]})).await;

    // A session pages through all 13 rows, newest first, with no repeats and no gaps.
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(b) => format!("/v1/usage?limit=4&before={b}"),
            None => "/v1/usage?limit=4".into(),
        };
        let r = gw.get(&path, &session).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.body["data"].as_array().unwrap();
        seen.extend(page.iter().map(|row| row["created_at"].as_str().unwrap().to_owned()));
        before = page.last().map(|row| row["created_at"].as_str().unwrap().to_owned());
        if r.body["has_more"] == false {
            break;
        }
    }
    assert_eq!(seen.len(), 13);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 13);
    let mut sorted = seen.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(seen, sorted, "newest first");

    let row = &gw.get("/v1/usage?limit=1", &session).await.body["data"][0];
    for field in [
        "id",
        "api_key_id",
        "workspace_id",
        "workspace_name",
        "metadata",
        "tier",
        "model",
        "provider",
        "routing_method",
        "execution_source",
        "billing_mode",
        "request_type",
        "input_tokens",
        "output_tokens",
        "actual_cost_usd",
        "charged_usd",
        "baseline_usd",
        "latency_ms",
        "created_at",
    ] {
        assert!(row.get(field).is_some(), "{field} in {row}");
    }
    assert_eq!(row["workspace_name"], "Blue");
    assert!(row.get("upstream_model").is_none() && row["provider"] == "tokaroo", "customers never see the upstream");

    // A runtime key sees only its own rows; it may not ask for another key's or workspace's.
    let own = gw.get("/v1/usage", key_a).await;
    assert_eq!(own.body["data"].as_array().unwrap().len(), 7);
    assert!(own.body["data"].as_array().unwrap().iter().all(|r| r["api_key_id"] == a["id"]));
    let other = format!("/v1/usage?api_key_id={}", b["id"].as_str().unwrap());
    assert_eq!(gw.get(&other, key_a).await.status, 403);
    assert_eq!(gw.get("/v1/usage?workspace_id=blue", key_a).await.status, 403);
    // Filters.
    let blue = gw.get("/v1/usage?workspace_id=blue", &session).await;
    assert_eq!(blue.body["data"].as_array().unwrap().len(), 6);
    let emb = gw.get("/v1/usage?request_type=embeddings", &session).await;
    assert_eq!(emb.body["data"].as_array().unwrap().len(), 1);
    let by_key = gw.get(&other, &session).await;
    assert_eq!(by_key.body["data"].as_array().unwrap().len(), 6);
    // Another account sees none of it.
    let (_, stranger) = gw.create_account("stranger").await;
    assert_eq!(gw.get("/v1/usage", &stranger).await.body["data"], json!([]));
    assert_eq!(gw.get(&other, &stranger).await.status, 404);

    for (path, status) in [
        ("/v1/usage?limit=0", 400),
        ("/v1/usage?limit=1001", 400),
        ("/v1/usage?limit=ten", 400),
        ("/v1/usage?before=yesterday", 400),
        ("/v1/usage?request_type=telepathy", 400),
        ("/v1/usage?workspace_id=nope", 404),
        ("/v1/stats?days=0", 400),
        ("/v1/stats?days=9999", 400),
        ("/v1/usage/breakdown?group_by=planet", 400),
    ] {
        let r = gw.get(path, &session).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {}", r.text);
    }
    assert_eq!(gw.get("/v1/usage", "tok_wrong").await.status, 401);
}

#[tokio::test]
async fn stats_and_breakdowns_agree_with_the_rows() {
    let gw = Gateway::start().await;
    let (account, session) = gw.create_account("stats").await;
    credit(&gw, &account, 50.0).await;
    gw.post("/v1/workspaces", &session, json!({"workspace_id": "red", "name": "Red"})).await;
    let k1 = gw.post("/v1/keys", &session, json!({"rate_limit_rpm": 100000})).await.body.clone();
    let k2 = gw.post("/v1/keys", &session, json!({"workspace_id": "red", "rate_limit_rpm": 100000})).await.body.clone();
    for (key, mode, n) in [(&k1, "fast", 3), (&k2, "max", 2), (&k2, "auto", 1)] {
        for _ in 0..n {
            let body =
                json!({"model": mode, "max_tokens": 30, "messages": [{"role": "user", "content": "Stats please"}]});
            assert_eq!(gw.post("/v1/chat/completions", k1_or(key), body).await.status, 200);
        }
    }
    gw.post("/v1/embeddings", k2["key"].as_str().unwrap(), json!({"input": "embed me"})).await;
    let rows = all_rows(&gw, &account).await;
    assert_eq!(rows.len(), 7);

    let s = gw.get("/v1/stats?days=7&daily_days=3", &session).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.body["window_days"], 7);
    assert_eq!(s.body["daily_window_days"], 3);
    assert_eq!(s.body["requests"], 7);
    let tokens: u64 =
        rows.iter().map(|r| r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap()).sum();
    assert_eq!(s.body["total_tokens"], tokens);
    assert!((s.body["charged_usd"].as_f64().unwrap() - sum(&rows, "charged_usd")).abs() < 1e-9);
    assert!((s.body["actual_cost_usd"].as_f64().unwrap() - sum(&rows, "actual_cost_usd")).abs() < 1e-9);
    assert_eq!(s.body["tier_breakdown"], json!({"auto": 2, "fast": 3, "max": 2}));
    assert_eq!(s.body["request_type_breakdown"], json!({"chat": 6, "embeddings": 1}));
    assert!(s.body["avg_latency_ms"].as_f64().unwrap() > 0.0);
    let daily = s.body["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 3);
    assert_eq!(daily[2]["requests"], 7, "today is last: {}", s.text);
    assert_eq!(daily[0]["requests"], 0);

    let red = gw.get("/v1/stats?workspace_id=red", &session).await;
    assert_eq!(red.body["requests"], 4);
    assert_eq!(red.body["workspace_id"], "red");
    let as_key = gw.get("/v1/stats", k1["key"].as_str().unwrap()).await;
    assert_eq!(as_key.body["requests"], 3, "a runtime key's stats are its own");

    let b = gw.get("/v1/usage/breakdown?group_by=workspace&days=30", &session).await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(b.body["group_by"], "workspace");
    assert_eq!(b.body["window_days"], 30);
    let groups = b.body["data"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let red_group = groups.iter().find(|g| g["workspace_id"] == "red").unwrap();
    assert_eq!(red_group["requests"], 4);
    assert_eq!(red_group["workspace_name"], "Red");
    let by_key = gw.get("/v1/usage/breakdown?group_by=api_key", &session).await;
    let k1_group =
        by_key.body["data"].as_array().unwrap().iter().find(|g| g["api_key_id"] == k1["id"]).unwrap().clone();
    assert_eq!(k1_group["requests"], 3);
    let total: f64 = by_key.body["data"].as_array().unwrap().iter().map(|g| g["charged_usd"].as_f64().unwrap()).sum();
    assert!((total - sum(&rows, "charged_usd")).abs() < 1e-9);

    // The operator sees cost, charge and margin per row and summed.
    let admin = gw.get(&format!("/admin/usage?account_id={account}"), ADMIN_TOKEN).await;
    let first = &admin.body["data"][0];
    for field in ["provider", "upstream_model", "routing_reason", "actual_cost_usd", "charged_usd", "margin_usd"] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    let totals = &admin.body["totals"];
    assert!(
        (totals["margin_usd"].as_f64().unwrap() - (sum(&rows, "charged_usd") - sum(&rows, "actual_cost_usd"))).abs()
            < 1e-9
    );
    assert_eq!(gw.get("/admin/usage", &session).await.status, 403);
}

fn k1_or(key: &Value) -> &str {
    key["key"].as_str().unwrap()
}

/// `kill -9` under load, then a restart: every answer a client received has its usage row,
/// the dead process's holds are gone, and balance = credits - charges exactly.
#[tokio::test]
async fn a_kill_9_under_load_loses_no_answered_request() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let t = tenant(&gw, "crashy", None).await;
    credit(&gw, &t.id, 5.0).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..16 {
        let (client, url, key, stop) =
            (gw.client().clone(), gw.url("/v1/chat/completions"), t.key.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let id = format!("kill9-{w}-{i}");
                let stream = i % 3 == 0;
                let body = json!({"model": "gpt-4o-mini", "max_tokens": 20, "stream": stream, "messages": [{"role": "user", "content": "go"}]});
                let Ok(r) = client.post(&url).bearer_auth(&key).header("x-request-id", &id).json(&body).send().await else { break };
                let ok = r.status() == 200;
                let Ok(text) = r.text().await else { break };
                // An answer counts as received only when it is complete.
                if ok && (!stream || text.ends_with("data: [DONE]\n\n")) {
                    answered.push(id);
                }
            }
            answered
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    signal(gw.pid(), "-KILL");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = Vec::new();
    for w in workers {
        answered.extend(w.await.unwrap());
    }
    assert!(answered.len() > 20, "the load ran: {} answers", answered.len());
    drop(gw);

    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let rows = all_rows(&gw, &t.id).await;
    let recorded: HashSet<&str> = rows.iter().filter_map(|r| r["request_id"].as_str()).collect();
    let missing: Vec<&String> = answered.iter().filter(|id| !recorded.contains(id.as_str())).collect();
    assert!(missing.is_empty(), "{} answered requests have no usage row: {missing:?}", missing.len());
    let left = balance(&gw, &t.key).await;
    assert!((left - (5.0 - sum(&rows, "charged_usd"))).abs() < 1e-9, "balance = credits - charges after the crash");
    reconcile_is_clean(&gw).await;
    let tree = gw.actor_tree().await;
    assert_eq!(find_actor(&tree, "ledger").unwrap()["snapshot"]["open_holds"], 0, "the dead process's holds are gone");
    // The whole remaining balance is usable: nothing is still held.
    assert_eq!(gw.post("/v1/chat/completions", &t.key, chat_body(20)).await.status, 200);
}

#[tokio::test]
async fn the_cli_adds_credits_and_reconciles() {
    let gw = Gateway::start().await;
    let t = tenant(&gw, "cli-funded", None).await;
    let cli = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args).args(["--url", &gw.base]).env("TOKAROO_ADMIN_TOKEN", ADMIN_TOKEN);
        cmd
    };
    let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let out =
        cli(args(&format!("credits add --account {} --amount-usd 12.5 --note welcome", t.id))).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("balance $12.5"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(balance(&gw, &t.key).await, 12.5);
    let out = cli(args("credits add --account nobody --amount-usd 1")).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"), "{}", String::from_utf8_lossy(&out.stderr));

    gw.post("/v1/chat/completions", &t.key, chat_body(10)).await;
    let out = cli(args("ledger reconcile")).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&t.id) && stdout.contains("no drift"), "{stdout}");
}

/// The ledger actor failing mid-traffic: it comes back from its log, and no money is lost,
/// doubled or left held.
#[tokio::test]
async fn a_ledger_restart_under_traffic_keeps_the_books_exact() {
    let gw = Gateway::start().await;
    let t = tenant(&gw, "restarty", None).await;
    credit(&gw, &t.id, 3.0).await;
    let traffic = (0..40).map(|i| {
        let req = gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&t.key).json(&chat_body(10 + i));
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    });
    let fail = async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        gw.post("/admin/actors/fail", ADMIN_TOKEN, json!({"name": "ledger"})).await
    };
    let (statuses, failed) = tokio::join!(futures_util::future::join_all(traffic), fail);
    assert_eq!(failed.status, 200, "{}", failed.text);
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    let ledger = eventually("the ledger back", || async {
        let tree = gw.actor_tree().await;
        let node = find_actor(&tree, "ledger")?.clone();
        (node["status"] == "running" && node["restarts"] == 1).then_some(node)
    })
    .await;
    assert!(ledger["last_error"].as_str().unwrap().contains("injected"), "{ledger}");
    let rows = all_rows(&gw, &t.id).await;
    assert_eq!(rows.len(), served, "one row per answered request");
    let left = balance(&gw, &t.key).await;
    assert!((left - (3.0 - sum(&rows, "charged_usd"))).abs() < 1e-9, "balance = credits - charges: {left}");
    reconcile_is_clean(&gw).await;
    assert_eq!(gw.post("/v1/chat/completions", &t.key, chat_body(10)).await.status, 200);
}
