//! The media half of the conformance suite: every provider's image, speech, transcription
//! and video adapter, named directly so it is the only route, against the fakes' copies of
//! each provider's media wire format. Each passes the same four cases (an answer in the
//! spec's shape charged in a usage row of its type; a provider 400 is the client's 400; a
//! 500 and a timeout are a 503 that charges nothing), then fallback for each kind.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{rig, Provider, Rig};
use crate::{
    fakes::{Behavior, FAKE_AUDIO, FAKE_VIDEO},
    harness::*,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Image,
    Speech,
    Transcription,
    Video,
}

impl Kind {
    fn request_type(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Speech => "speech",
            Self::Transcription => "transcription",
            Self::Video => "video",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Speech => "character",
            Self::Transcription => "minute",
            Self::Video => "second",
        }
    }
}

/// What a transcription test uploads: bytes a provider takes as audio.
const AUDIO_UPLOAD: &[u8] = b"ID3-conformance-audio";

/// One media request naming `model`, as a client sends it.
fn request(gw: &Gateway, key: &str, kind: Kind, model: &str) -> reqwest::RequestBuilder {
    let client = gw.client();
    match kind {
        Kind::Image => client.post(gw.url("/v1/images/generations")).bearer_auth(key).json(&json!({
            "prompt": "A lighthouse at dusk", "model": model, "size": "1024x1024", "response_format": "b64_json"
        })),
        // WAV: the one format every provider's speech model gives.
        Kind::Speech => client.post(gw.url("/v1/audio/speech")).bearer_auth(key).json(&json!({
            "input": "Hello from the conformance suite.", "model": model, "voice": "alloy", "response_format": "wav"
        })),
        Kind::Transcription => {
            let file = reqwest::multipart::Part::bytes(AUDIO_UPLOAD.to_vec())
                .file_name("call.mp3")
                .mime_str("audio/mpeg")
                .unwrap();
            let form = reqwest::multipart::Form::new()
                .part("file", file)
                .text("model", model.to_owned())
                .text("response_format", "verbose_json");
            client.post(gw.url("/v1/audio/transcriptions")).bearer_auth(key).multipart(form)
        }
        Kind::Video => client
            .post(gw.url("/v1/videos/generations"))
            .bearer_auth(key)
            .json(&json!({"prompt": "Waves on a pebble beach", "model": model, "duration": 4})),
    }
}

/// The model an upstream request asked for: in the JSON body, the multipart form, or the
/// path (Gemini's `models/{model}:action`).
fn upstream_model(sent: &crate::fakes::Recorded) -> String {
    if let Some(m) = sent.body["model"].as_str() {
        return m.to_owned();
    }
    if let Some(m) = crate::fakes::openai::form_field(&sent.raw, "model") {
        return m;
    }
    let after = sent.path.split("/models/").nth(1).unwrap_or_default();
    after.split(':').next().unwrap_or_default().to_owned()
}

struct Case {
    provider: Provider,
    kind: Kind,
    model: &'static str,
}

impl Case {
    async fn send(&self, rig: &Rig) -> Resp {
        rig.gw.raw(request(&rig.gw, &rig.key, self.kind, self.model)).await
    }

    async fn rows(&self, rig: &Rig) -> Vec<Value> {
        let path = format!("/admin/usage?request_type={}", self.kind.request_type());
        rig.gw.get(&path, ADMIN_TOKEN).await.body["data"].as_array().unwrap().clone()
    }

    /// The answer is in the spec's shape, the provider was asked in its own words for the
    /// named model, and one usage row of the kind's type carries the answer's cost.
    async fn answers(&self) {
        let rig = rig(self.provider).await;
        let r = self.send(&rig).await;
        assert_eq!(r.status, 200, "{self:?}: {}", r.text);
        let sent = rig.fake.answer_requests();
        let sent = sent.first().unwrap_or_else(|| panic!("{self:?}: the provider was asked"));
        assert_eq!(upstream_model(sent), self.model, "{self:?}: {} {}", sent.path, sent.body);
        let cost = match self.kind {
            Kind::Image => {
                let b64 = r.body["data"][0]["b64_json"].as_str().unwrap_or_else(|| panic!("{}", r.text));
                use base64::Engine as _;
                let png = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
                assert!(png.starts_with(b"\x89PNG"), "{self:?}");
                r.header("x-tokaroo-cost")
            }
            Kind::Speech => {
                assert_eq!(r.header("content-type"), Some("audio/wav"), "{self:?}");
                if self.provider == Provider::Gemini {
                    // Gemini answers PCM, which the gateway wraps in a WAV header.
                    assert!(r.text.as_bytes().starts_with(b"RIFF"), "{self:?}");
                } else {
                    assert_eq!(r.text.as_bytes(), FAKE_AUDIO, "{self:?}: the provider's bytes, unchanged");
                }
                r.header("x-tokaroo-cost")
            }
            Kind::Transcription => {
                assert_eq!(r.body["text"], "Hello there. General Kenobi.", "{self:?}");
                assert_eq!(r.body["segments"].as_array().map(Vec::len), Some(2), "{self:?}: {}", r.text);
                let upload = &sent.raw;
                assert!(upload.windows(AUDIO_UPLOAD.len()).any(|w| w == AUDIO_UPLOAD), "the file went up whole");
                r.header("x-tokaroo-cost")
            }
            Kind::Video => {
                assert_eq!(r.body["status"], "processing", "{self:?}: answered at once: {}", r.text);
                let cost: f64 = r.header("x-tokaroo-cost").unwrap().parse().unwrap();
                assert_eq!(cost, 0.0, "nothing is charged before it completes");
                let id = r.body["id"].as_str().unwrap();
                let done = finished_video(&rig.gw, &rig.key, id).await;
                assert_eq!(done.body["status"], "completed", "{self:?}: {}", done.text);
                let video = rig.gw.client().get(done.body["url"].as_str().unwrap()).send().await.unwrap();
                assert_eq!(video.bytes().await.unwrap().as_ref(), FAKE_VIDEO);
                return self.charged_once(&rig, done.header("x-tokaroo-cost")).await;
            }
        };
        self.charged_once(&rig, cost).await;
    }

    async fn charged_once(&self, rig: &Rig, cost: Option<&str>) {
        let cost: f64 = cost.unwrap_or_else(|| panic!("{self:?}: x-tokaroo-cost")).parse().unwrap();
        assert!(cost > 0.0, "{self:?}");
        let rows = self.rows(rig).await;
        assert_eq!(rows.len(), 1, "{self:?}: {rows:?}");
        let row = &rows[0];
        assert_eq!(row["provider"], self.provider.name(), "{self:?}: {row}");
        assert_eq!(row["unit"], self.kind.unit(), "{self:?}: {row}");
        assert!(row["units"].as_f64().is_some_and(|u| u > 0.0), "{self:?}: {row}");
        assert!((row["charged_usd"].as_f64().unwrap() - cost).abs() < 1e-6, "{self:?}: {row} vs {cost}");
    }

    /// A request the provider refuses (400) is the client's 400, in our words, uncharged;
    /// no other route is tried for it.
    async fn upstream_400(&self) {
        let rig = rig(self.provider).await;
        rig.fake.set(Behavior::Status { status: 400, retry_after: None });
        let r = self.send(&rig).await;
        assert_eq!(r.status, 400, "{self:?}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("rejected the request"), "{}", r.text);
        self.nothing_charged(&rig, &r).await;
    }

    async fn upstream_500(&self) {
        let rig = rig(self.provider).await;
        rig.fake.set(Behavior::Status { status: 500, retry_after: None });
        let r = self.send(&rig).await;
        self.unavailable(&rig, &r).await;
    }

    async fn upstream_timeout(&self) {
        let rig = rig(self.provider).await;
        rig.fake.set(Behavior::Hang);
        let started = Instant::now();
        let r = self.send(&rig).await;
        self.unavailable(&rig, &r).await;
        assert!(started.elapsed() < Duration::from_secs(8), "{self:?}: the 2 s timeout fired: {:?}", started.elapsed());
    }

    async fn unavailable(&self, rig: &Rig, r: &Resp) {
        assert_eq!(r.status, 503, "{self:?}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("No provider could serve"), "{}", r.text);
        self.nothing_charged(rig, r).await;
    }

    async fn nothing_charged(&self, rig: &Rig, r: &Resp) {
        assert!(!r.text.contains("The fake was told to fail"), "the upstream's words stay in the log: {}", r.text);
        assert!(!r.text.contains(&rig.fake.key));
        assert!(!rig.gw.log().contains(&rig.fake.key), "the provider key is never logged");
        assert_eq!(self.rows(rig).await, Vec::<Value>::new(), "{self:?}: nothing charged");
        let tree = rig.gw.actor_tree().await;
        let ledger = &find_actor(&tree, "ledger").unwrap()["snapshot"];
        assert_eq!(ledger["open_holds"], 0, "{self:?}: no hold outlives the request: {ledger}");
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {:?} {}", self.provider, self.kind, self.model)
    }
}

/// Polls a video job until it leaves `processing`.
async fn finished_video(gw: &Gateway, key: &str, id: &str) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = gw.get(&format!("/v1/videos/generations/{id}"), key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.body["status"] != "processing" {
            return r;
        }
        assert!(Instant::now() < deadline, "the video job never finished: {}", r.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

macro_rules! media_conformance {
    ($($name:ident: $provider:expr, $kind:expr, $model:literal;)+) => {
        $(
            mod $name {
                use super::*;
                const CASE: Case = Case { provider: $provider, kind: $kind, model: $model };
                #[tokio::test] async fn answers() { CASE.answers().await }
                #[tokio::test] async fn upstream_400() { CASE.upstream_400().await }
                #[tokio::test] async fn upstream_500() { CASE.upstream_500().await }
                #[tokio::test] async fn upstream_timeout() { CASE.upstream_timeout().await }
            }
        )+
    };
}

media_conformance! {
    openai_images: Provider::OpenAi, Kind::Image, "gpt-image-2";
    openai_speech: Provider::OpenAi, Kind::Speech, "gpt-4o-mini-tts";
    openai_transcription: Provider::OpenAi, Kind::Transcription, "whisper-1";
    groq_speech: Provider::Groq, Kind::Speech, "canopylabs/orpheus-v1-english";
    groq_transcription: Provider::Groq, Kind::Transcription, "whisper-large-v3-turbo";
    gemini_images: Provider::Gemini, Kind::Image, "gemini-3.1-flash-image";
    imagen_images: Provider::Gemini, Kind::Image, "imagen-4.0-generate-001";
    gemini_speech: Provider::Gemini, Kind::Speech, "gemini-2.5-flash-preview-tts";
    veo_video: Provider::Gemini, Kind::Video, "veo-3.1-fast-generate-preview";
}

// ---------------------------------------------------------------------------------------------
// Fallback, per kind. Images and speech fall back between OpenAI and Gemini in
// `tests/it/images.rs` and `tests/it/speech.rs`.

/// A failing transcription provider moves on to the next (Groq to OpenAI), and the row is
/// charged at the price of what served.
#[tokio::test]
async fn a_failing_transcription_provider_falls_back_to_another() {
    let openai = Provider::OpenAi.fake().await;
    let groq = Provider::Groq.fake().await;
    let options = Provider::Groq.env(&groq, Provider::OpenAi.env(&openai, Options::default()));
    let gw = Gateway::start_with(options).await;
    let key = gw.first_key.clone().unwrap();
    // `max` prefers Groq's Whisper Large v3; it fails.
    groq.set(Behavior::Status { status: 503, retry_after: None });
    let r = gw.raw(request(&gw, &key, Kind::Transcription, "max")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(groq.answer_requests().len(), 1, "the preferred provider was tried once");
    assert_eq!(upstream_model(&groq.answer_requests()[0]), "whisper-large-v3");
    assert_eq!(upstream_model(&openai.answer_requests()[0]), "whisper-1");
    let rows = gw.get("/admin/usage?request_type=transcription", ADMIN_TOKEN).await.body["data"].clone();
    let row = &rows[0];
    assert_eq!(row["provider"], "openai", "{row}");
    assert_eq!(row["failed_attempts"].as_array().map(Vec::len), Some(1), "{row}");
    let cost: f64 = r.header("x-tokaroo-cost").unwrap().parse().unwrap();
    assert!((row["charged_usd"].as_f64().unwrap() - cost).abs() < 1e-9);
}

/// A tenant's own Gemini key failing (401) falls back to the managed Gemini connection for
/// the same video model: media routes take every connection of a provider, as chat does.
#[tokio::test]
async fn a_failing_byok_video_connection_falls_back_to_the_managed_one() {
    let gemini = Provider::Gemini.fake().await;
    let gw = Gateway::start_with(Provider::Gemini.env(&gemini, Options::default())).await;
    let (account, session) = gw.create_account("veo-byok").await;
    gw.post(&format!("/admin/accounts/{account}/credits"), ADMIN_TOKEN, json!({"amount_usd": 10})).await;
    let key = gw.post("/v1/keys", &session, json!({"name": "k"})).await.body["key"].as_str().unwrap().to_owned();
    let r = gw
        .post("/v1/provider-keys", &session, json!({"provider": "google", "label": "mine", "secret": "AIza-byok-bad"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = gw.raw(request(&gw, &key, Kind::Video, "veo-3.1-fast-generate-preview")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let starts: Vec<_> =
        gemini.answer_requests().into_iter().filter(|r| r.path.ends_with(":predictLongRunning")).collect();
    assert_eq!(starts.len(), 2, "the tenant's key first, then the managed one");
    assert_eq!(starts[0].header("x-goog-api-key"), Some("AIza-byok-bad"));
    assert_eq!(starts[1].header("x-goog-api-key"), Some(gemini.key.as_str()));
    let done = finished_video(&gw, &key, r.body["id"].as_str().unwrap()).await;
    assert_eq!(done.body["status"], "completed", "{}", done.text);
    let rows = gw.get(&format!("/admin/usage?account_id={account}"), ADMIN_TOKEN).await.body["data"].clone();
    assert_eq!(rows[0]["billing_mode"], "managed", "billed as what served: {rows}");
}
