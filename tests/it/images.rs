//! `POST /v1/images/generations` against fake OpenAI and Gemini image APIs: the request in
//! each model's own words, `b64_json` and gateway-served URLs, per-image charges in a usage
//! row of type `image`, fallback to another provider, and bad input.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::{json, Value};

use crate::{
    fakes::{gemini::Gemini, openai::OpenAi, Behavior, Fake},
    harness::*,
};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

async fn openai_fake() -> Fake {
    Fake::start(OpenAi { models: vec![] }, "openai-test-key-1").await
}

async fn gemini_fake() -> Fake {
    Fake::start(Gemini, "gemini-test-key-1").await
}

fn with_gemini(options: Options, fake: &Fake) -> Options {
    options
        .env("GEMINI_API_KEY", &fake.key)
        .env("TOKAROO_GEMINI_BASE_URL", &fake.root)
        .env("TOKAROO_GEMINI_TIMEOUT_SECS", "5")
}

fn image_requests(fake: &Fake) -> Vec<Value> {
    fake.requests().into_iter().filter(|r| r.method == "POST").map(|r| r.body).collect()
}

#[tokio::test]
async fn images_are_generated_in_each_models_words_charged_per_image_and_served_by_url() {
    let openai = openai_fake().await;
    let gw = Gateway::start_with(Options::default().openai(&openai)).await;
    let key = gw.first_key.clone().unwrap();

    let body = json!({"prompt": "A sunset over mountains", "model": "auto", "size": "1024x1024", "quality": "hd",
                      "response_format": "b64_json", "n": 2});
    let r = gw.post("/v1/images/generations", &key, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["created"].is_u64());
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(STANDARD.decode(data[0]["b64_json"].as_str().unwrap()).unwrap().starts_with(PNG_MAGIC));
    assert!(data[0].get("url").is_none());
    let cost: f64 = r.header("x-tokaroo-cost").unwrap().parse().unwrap();
    let sent = image_requests(&openai);
    let upstream = &sent[0];
    let model = upstream["model"].as_str().unwrap().to_owned();
    assert!(model.starts_with("gpt-image"), "auto picks a current GPT Image model: {upstream}");
    assert_eq!((upstream["size"].as_str(), upstream["quality"].as_str()), (Some("1024x1024"), Some("high")));
    assert!(upstream.get("response_format").is_none(), "GPT Image models take none: {upstream}");
    assert_eq!(upstream["n"], 2);
    // Charged as the catalog prices two images of that size and quality, plus the margin.
    let pricing = gw.get("/v1/pricing", &key).await;
    let entry = pricing.body["data"].as_array().unwrap().iter().find(|m| m["id"] == model.as_str()).unwrap().clone();
    let per_image = entry["media"]["price_per_image"]["1024x1024/high"].as_f64().expect("a price in /v1/pricing");
    assert!((cost - per_image * 2.0 * 1.1).abs() < 1e-6, "{cost} vs {per_image}");
    let usage = gw.get("/v1/usage?request_type=image", &key).await;
    let row = &usage.body["data"][0];
    assert_eq!((row["unit"].as_str(), row["units"].as_f64()), (Some("image"), Some(2.0)), "{row}");
    assert!((row["charged_usd"].as_f64().unwrap() - cost).abs() < 1e-9);
    assert_eq!(row["model"], "auto", "the customer never sees the upstream model");

    // The spec's portrait size goes to the model's own portrait; the default answer is a URL
    // this gateway serves, without a key, until it expires.
    let body = json!({"prompt": "A tall tower", "size": "1024x1792"});
    let r = gw.post("/v1/images/generations", &key, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(image_requests(&openai)[1]["size"], "1024x1536");
    let url = r.body["data"][0]["url"].as_str().unwrap();
    let fetched = gw.raw(gw.client().get(url)).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.header("content-type"), Some("image/png"));
    let bytes = gw.client().get(url).send().await.unwrap().bytes().await.unwrap();
    assert!(bytes.starts_with(PNG_MAGIC));
    // Served from the file with ranges, as players and resumed downloads ask.
    let part = gw.raw(gw.client().get(url).header("range", "bytes=1-3")).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some(format!("bytes 1-3/{}", bytes.len()).as_str()));
    assert_eq!(part.text.as_bytes(), &bytes[1..4]);
    assert_eq!(part.header("content-type"), Some("image/png"));
    let beyond = gw.raw(gw.client().get(url).header("range", format!("bytes={}-", bytes.len() + 10))).await;
    assert_eq!(beyond.status, 416);
    assert_ne!(beyond.header("content-type"), Some("image/png"), "a 416 is not labelled as the image");
    let missing = gw.raw(gw.client().get(gw.url("/v1/media/0123456789abcdef0123456789abcdef"))).await;
    assert_eq!(missing.status, 404);

    // Bad input: a 400 that names the field, in OpenAI's error shape, nothing charged.
    let before = gw.get("/v1/usage?request_type=image", &key).await.body["data"].as_array().unwrap().len();
    for (body, says) in [
        (json!({"prompt": "x", "size": "999x999"}), "size"),
        (json!({"prompt": "x", "n": 0}), "n must"),
        (json!({"prompt": "x", "n": 11}), "n must"),
        (json!({"prompt": "x", "quality": "ultra"}), "quality"),
        (json!({"prompt": "x", "style": "cubist"}), "style"),
        (json!({"prompt": "x", "response_format": "gif"}), "response_format"),
        (json!({"size": "1024x1024"}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"prompt": "x", "colour": "red"}), "colour"),
        (json!({"prompt": "x", "model": "gpt-4o-mini"}), "does not generate images"),
        (json!({"prompt": "x", "model": "no-such-model"}), "not an image model"),
    ] {
        let r = gw.post("/v1/images/generations", &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains(says), "{body}: {}", r.text);
    }
    let after = gw.get("/v1/usage?request_type=image", &key).await.body["data"].as_array().unwrap().len();
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_failing_provider_falls_back_to_another_and_the_charge_follows_what_served() {
    let (openai, gemini) = (openai_fake().await, gemini_fake().await);
    let gw = Gateway::start_with(with_gemini(Options::default().openai(&openai), &gemini)).await;
    let key = gw.first_key.clone().unwrap();
    openai.set(Behavior::Status { status: 500, retry_after: None });
    let r = gw.post("/v1/images/generations", &key, json!({"prompt": "A red fox", "model": "max"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(image_requests(&openai).len(), 1, "the failed provider is tried once");
    let sent = gemini.requests().into_iter().find(|r| r.method == "POST").expect("Gemini was asked");
    assert!(sent.path.contains("image"), "{}", sent.path);
    let config = &sent.body["generationConfig"];
    assert_eq!(config["responseModalities"], json!(["IMAGE"]));
    assert_eq!(config["imageConfig"]["aspectRatio"], "1:1");
    let usage = gw.get("/v1/usage?request_type=image", ADMIN_TOKEN).await;
    assert_eq!(usage.body["data"].as_array().unwrap().len(), 1);

    // Both failing: a 503 in OpenAI's shape, and nothing charged.
    gemini.set(Behavior::Status { status: 503, retry_after: None });
    let r = gw.post("/v1/images/generations", &key, json!({"prompt": "A red fox", "model": "fast"})).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.body["error"]["message"].is_string());
    let usage = gw.get("/v1/usage?request_type=image", ADMIN_TOKEN).await;
    assert_eq!(usage.body["data"].as_array().unwrap().len(), 1);
}

/// One account's media requests beyond its share are refused at once (429) while they run;
/// another account is served meanwhile.
#[tokio::test]
async fn one_account_cannot_take_every_media_slot() {
    let openai = openai_fake().await;
    let gw = Gateway::start_with(Options::default().openai(&openai)).await;
    let (account, session) = gw.create_account("other").await;
    gw.post(&format!("/admin/accounts/{account}/credits"), ADMIN_TOKEN, json!({"amount_usd": 10})).await;
    let other = gw.post("/v1/keys", &session, json!({"name": "k"})).await.body["key"].as_str().unwrap().to_owned();
    openai.set(Behavior::Slow { text: "", completion_tokens: 0, gap_ms: 1500 });
    let key = gw.first_key.clone().unwrap();
    let body = json!({"prompt": "A slow picture", "response_format": "b64_json"});
    let busy = (0..10).map(|_| gw.post("/v1/images/generations", &key, body.clone()));
    let (busy, theirs) = tokio::join!(futures_util::future::join_all(busy), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        gw.post("/v1/images/generations", &other, body.clone()).await
    });
    let statuses: Vec<u16> = busy.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 8, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2, "{statuses:?}");
    let refused = busy.iter().find(|r| r.status == 429).unwrap();
    assert!(refused.header("retry-after").is_some(), "{}", refused.text);
    assert_eq!(theirs.status, 200, "another account is served meanwhile: {}", theirs.text);
    // Once they finished, the account may go again.
    assert_eq!(gw.post("/v1/images/generations", &key, body).await.status, 200);
}

#[tokio::test]
async fn an_unfunded_tenant_is_refused_before_any_image_is_made() {
    let openai = openai_fake().await;
    let gw = Gateway::start_with(Options::default().openai(&openai)).await;
    let (_, session) = gw.create_account("broke").await;
    let key = gw.post("/v1/keys", &session, json!({"name": "k"})).await.body["key"].as_str().unwrap().to_owned();
    let r = gw.post("/v1/images/generations", &key, json!({"prompt": "A red fox", "n": 4})).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert!(image_requests(&openai).is_empty());
}

/// Polls a video job until it leaves `processing`.
async fn finished_video(gw: &Gateway, key: &str, id: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = gw.get(&format!("/v1/videos/generations/{id}"), key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.body["status"] != "processing" {
            return r.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "the video job never finished: {}", r.text);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_video_job_is_answered_at_once_survives_a_kill_and_is_charged_once_on_completion() {
    let gemini = gemini_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let options = with_gemini(Options::default(), &gemini);
    let gw = Gateway::start_in(dir.path(), options.clone()).await;
    let key = gw.first_key.clone().unwrap();
    let body = json!({"prompt": "A timelapse of a flower blooming", "model": "auto", "duration": 5});
    let r = gw.post("/v1/videos/generations", &key, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "processing");
    assert!(r.body.get("url").is_none());
    let id = r.body["id"].as_str().unwrap().to_owned();
    let sent = gemini.requests().into_iter().find(|r| r.path.ends_with(":predictLongRunning")).unwrap();
    assert_eq!(sent.body["parameters"]["durationSeconds"], 6, "5 s asked: the model's next allowed length");
    assert_eq!(sent.body["parameters"]["aspectRatio"], "16:9");
    let tree = gw.actor_tree().await;
    let jobs = find_actor(&tree, "videojobs").expect("the videojobs supervisor");
    assert!(find_actor(jobs, &format!("videojob:{id}")).is_some(), "the job's actor is in the tree");
    assert_eq!(
        gw.get("/v1/usage?request_type=video", &key).await.body["data"],
        json!([]),
        "charged on completion only"
    );
    gw.kill().await;

    let gw = Gateway::start_in(dir.path(), options).await;
    let done = finished_video(&gw, &key, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let video = gw.client().get(done["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(video.headers()["content-type"], "video/mp4");
    assert_eq!(video.bytes().await.unwrap().as_ref(), crate::fakes::FAKE_VIDEO);
    let usage = gw.get("/v1/usage?request_type=video", &key).await;
    let rows = usage.body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{}", usage.text);
    assert_eq!((rows[0]["unit"].as_str(), rows[0]["units"].as_f64()), (Some("second"), Some(6.0)));
    // auto: the cheapest, Veo 3.1 Fast at 720p, $0.10 a second, plus the margin.
    let charged = rows[0]["charged_usd"].as_f64().unwrap();
    assert!((charged - 6.0 * 0.10 * 1.1).abs() < 1e-9, "{charged}");
    let again = gw.get(&format!("/v1/videos/generations/{id}"), &key).await;
    let cost: f64 = again.header("x-tokaroo-cost").unwrap().parse().unwrap();
    assert!((cost - charged).abs() < 1e-6, "{cost}");

    for (body, says) in [
        (json!({"prompt": "x", "duration": 0}), "duration"),
        (json!({"prompt": "x", "duration": 61}), "duration"),
        (json!({"prompt": "x", "size": "640x480"}), "size"),
        (json!({"prompt": "x", "aspect_ratio": "4:3"}), "aspect_ratio"),
        (json!({"prompt": "x", "fps": 60}), "fps"),
        (json!({"duration": 4}), "prompt"),
        (json!({"prompt": "x", "duration": 30}), "no video model"),
        (json!({"prompt": "x", "model": "gpt-4o-mini"}), "does not generate video"),
    ] {
        let r = gw.post("/v1/videos/generations", &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(says), "{body}: {}", r.text);
    }
    assert_eq!(gw.get("/v1/videos/generations/vid_nope", &key).await.status, 404);
    let (_, session) = gw.create_account("other").await;
    let other = gw.post("/v1/keys", &session, json!({"name": "k"})).await.body["key"].as_str().unwrap().to_owned();
    assert_eq!(gw.get(&format!("/v1/videos/generations/{id}"), &other).await.status, 404);
}

/// An open video job's price is held from its start until it is charged: parallel starts
/// cannot each see the whole balance, nor can other requests spend what the job will cost.
#[tokio::test]
async fn an_open_video_jobs_price_is_held_until_it_is_charged() {
    let (openai, gemini) = (openai_fake().await, gemini_fake().await);
    let gw = Gateway::start_with(with_gemini(Options::default().openai(&openai), &gemini)).await;
    let (account, session) = gw.create_account("filmmaker").await;
    // Enough for one 6 s Veo 3.1 Fast video ($0.66 with the margin), not two.
    gw.post(&format!("/admin/accounts/{account}/credits"), ADMIN_TOKEN, json!({"amount_usd": 1.0})).await;
    let key = gw.post("/v1/keys", &session, json!({"name": "k"})).await.body["key"].as_str().unwrap().to_owned();
    let body = json!({"prompt": "Waves", "model": "veo-3.1-fast-generate-preview", "duration": 6});
    let starts = (0..6).map(|_| gw.post("/v1/videos/generations", &key, body.clone()));
    let answers = futures_util::future::join_all(starts).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 402), "{statuses:?}");
    // The held price is not there to spend on anything else meanwhile.
    let images =
        json!({"prompt": "x", "model": "gpt-image-2", "n": 4, "quality": "high", "response_format": "b64_json"});
    let r = gw.post("/v1/images/generations", &key, images).await;
    assert_eq!(r.status, 402, "{}", r.text);
    let id = answers.iter().find(|r| r.status == 200).unwrap().body["id"].as_str().unwrap().to_owned();
    let done = finished_video(&gw, &key, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let rows = gw.get(&format!("/admin/usage?account_id={account}"), ADMIN_TOKEN).await.body["data"].clone();
    assert_eq!(rows.as_array().unwrap().len(), 1, "charged once: {rows}");
    let balance = gw.get("/v1/balance", &key).await.body["balance_usd"].as_f64().unwrap();
    assert!((balance - (1.0 - 0.66)).abs() < 1e-9, "{balance}");
    // Settled: the hold is gone, and the rest of the balance may be spent.
    let tree = gw.actor_tree().await;
    assert_eq!(find_actor(&tree, "ledger").unwrap()["snapshot"]["open_holds"], 0);
}
