//! `POST /v1/audio/speech` against fake OpenAI and Gemini speech APIs: raw audio with the
//! format's content type, streamed; voices mapped per provider; charged per character in a
//! `speech` usage row; fallback; bad input.

use serde_json::json;

use crate::{
    fakes::{gemini::Gemini, openai::OpenAi, Behavior, Fake, FAKE_AUDIO},
    harness::*,
};

fn posts(fake: &Fake) -> Vec<serde_json::Value> {
    fake.requests().into_iter().filter(|r| r.method == "POST").map(|r| r.body).collect()
}

#[tokio::test]
async fn speech_streams_raw_audio_in_the_asked_format_and_is_charged_per_character() {
    let openai = Fake::start(OpenAi { models: vec![] }, "openai-key-speech").await;
    let gw = Gateway::start_with(Options::default().openai(&openai)).await;
    let key = gw.first_key.clone().unwrap();
    let input = "Hello, welcome to Tokaroo!";
    let r = gw
        .raw(
            gw.client()
                .post(gw.url("/v1/audio/speech"))
                .bearer_auth(&key)
                .json(&json!({"input": input, "model": "auto", "voice": "nova"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("audio/mpeg"));
    assert_eq!(r.text.as_bytes(), FAKE_AUDIO, "the provider's bytes, unchanged");
    let sent = &posts(&openai)[0];
    assert_eq!((sent["voice"].as_str(), sent["response_format"].as_str()), (Some("nova"), Some("mp3")));
    assert_eq!(sent["input"], input);
    let cost: f64 = r.header("x-tokaroo-cost").unwrap().parse().unwrap();
    // auto: a fast model at the lowest price, tts-1 at $0.015 per 1,000 characters, plus the margin.
    assert_eq!(sent["model"], "tts-1");
    let expected = input.chars().count() as f64 / 1000.0 * 0.015 * 1.1;
    assert!((cost - expected).abs() < 1e-6, "{cost} vs {expected}");
    let usage = gw.get("/v1/usage?request_type=speech", &key).await;
    let row = &usage.body["data"][0];
    assert_eq!((row["unit"].as_str(), row["units"].as_f64()), (Some("character"), Some(input.chars().count() as f64)));

    for (format, content_type) in
        [("opus", "audio/opus"), ("flac", "audio/flac"), ("wav", "audio/wav"), ("pcm", "audio/pcm")]
    {
        let body = json!({"input": "Hi", "voice": "alloy", "response_format": format, "speed": 1.5});
        let r = gw.raw(gw.client().post(gw.url("/v1/audio/speech")).bearer_auth(&key).json(&body)).await;
        assert_eq!((r.status.as_u16(), r.header("content-type")), (200, Some(content_type)), "{format}: {}", r.text);
    }
    assert_eq!(posts(&openai).last().unwrap()["speed"], 1.5);

    let before = gw.get("/v1/usage?request_type=speech", &key).await.body["data"].as_array().unwrap().len();
    for (body, says) in [
        (json!({"voice": "alloy"}), "input"),
        (json!({"input": ""}), "input"),
        (json!({"input": "x".repeat(4097)}), "4096"),
        (json!({"input": "x", "response_format": "ogg"}), "response_format"),
        (json!({"input": "x", "speed": 9}), "speed"),
        (json!({"input": "x", "voice": "nobody"}), "voice"),
        (json!({"input": "x", "voice": "../x"}), "voice"),
        (json!({"input": "x", "model": "gpt-4o-mini"}), "does not generate speech"),
        (json!({"input": "x", "pitch": 2}), "pitch"),
    ] {
        let r = gw.post("/v1/audio/speech", &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains(says), "{body}: {}", r.text);
    }
    let after = gw.get("/v1/usage?request_type=speech", &key).await.body["data"].as_array().unwrap().len();
    assert_eq!(before, after, "refused requests are not charged");
}

#[tokio::test]
async fn a_failing_speech_provider_falls_back_with_the_voice_mapped_for_the_next() {
    let openai = Fake::start(OpenAi { models: vec![] }, "openai-key-speech").await;
    let gemini = Fake::start(Gemini, "gemini-key-speech").await;
    let options = Options::default()
        .openai(&openai)
        .env("GEMINI_API_KEY", &gemini.key)
        .env("TOKAROO_GEMINI_BASE_URL", &gemini.root);
    let gw = Gateway::start_with(options).await;
    let key = gw.first_key.clone().unwrap();
    openai.set(Behavior::Status { status: 503, retry_after: None });
    let body = json!({"input": "Good morning", "voice": "onyx", "response_format": "wav"});
    let r = gw.raw(gw.client().post(gw.url("/v1/audio/speech")).bearer_auth(&key).json(&body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("audio/wav"));
    let bytes = gw.client().post(gw.url("/v1/audio/speech")).bearer_auth(&key).json(&body).send().await.unwrap();
    let bytes = bytes.bytes().await.unwrap();
    assert_eq!(&bytes[..4], b"RIFF", "Gemini's PCM wrapped as WAV");
    assert_eq!(&bytes[44..], FAKE_AUDIO);
    let sent = gemini.requests().into_iter().find(|r| r.method == "POST").unwrap();
    let voice = &sent.body["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"];
    assert_eq!(voice, "Charon", "onyx is Charon on Gemini (README's voice table)");
    // Gemini gives no mp3: with OpenAI down, an mp3 is a 503, not a mislabelled WAV.
    let r = gw.post("/v1/audio/speech", &key, json!({"input": "x", "voice": "onyx"})).await;
    assert_eq!(r.status, 503, "{}", r.text);
}

fn upload(gw: &Gateway, key: &str, audio: Vec<u8>, fields: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let file = reqwest::multipart::Part::bytes(audio).file_name("call.mp3").mime_str("audio/mpeg").unwrap();
    let mut form = reqwest::multipart::Form::new().part("file", file);
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    gw.client().post(gw.url("/v1/audio/transcriptions")).bearer_auth(key).multipart(form)
}

#[tokio::test]
async fn transcriptions_are_multipart_capped_rendered_in_each_format_and_charged_per_minute() {
    let openai = Fake::start(OpenAi { models: vec![] }, "openai-key-stt").await;
    let gw = Gateway::start_with(Options::default().openai(&openai)).await;
    let key = gw.first_key.clone().unwrap();
    let r = gw.raw(upload(&gw, &key, vec![7u8; 4096], &[("model", "auto"), ("language", "en")])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"text": "Hello there. General Kenobi."}));
    let sent = openai.requests().into_iter().find(|r| r.path.ends_with("/audio/transcriptions")).unwrap();
    use crate::fakes::openai::form_field;
    assert_eq!(form_field(&sent.raw, "response_format").as_deref(), Some("verbose_json"), "asked for the duration");
    assert_eq!(form_field(&sent.raw, "language").as_deref(), Some("en"));
    assert!(sent.raw.windows(4096).any(|w| w.iter().all(|b| *b == 7)), "the file went up whole");
    let usage = gw.get("/v1/usage?request_type=transcription", &key).await;
    let row = &usage.body["data"][0];
    assert_eq!((row["unit"].as_str(), row["units"].as_f64()), (Some("minute"), Some(0.208)), "12.5 s: {row}");
    let cost: f64 = r.header("x-tokaroo-cost").unwrap().parse().unwrap();
    assert!((row["charged_usd"].as_f64().unwrap() - cost).abs() < 1e-9 && cost > 0.0);

    for (format, content_type, starts) in [
        ("text", "text/plain; charset=utf-8", "Hello there."),
        ("srt", "application/x-subrip", "1\n00:00:00,000 --> 00:00:01,250\nHello there."),
        ("vtt", "text/vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:01.250"),
        ("verbose_json", "application/json", "{"),
    ] {
        let r = gw.raw(upload(&gw, &key, vec![1u8; 100], &[("response_format", format)])).await;
        assert_eq!((r.status.as_u16(), r.header("content-type")), (200, Some(content_type)), "{format}: {}", r.text);
        assert!(r.text.starts_with(starts), "{format}: {}", r.text);
    }
    let verbose = gw.raw(upload(&gw, &key, vec![1u8; 100], &[("response_format", "verbose_json")])).await;
    assert_eq!(verbose.body["duration"], 12.5);

    // 25 MiB is taken; a byte more is a 413; bad fields are 400s; none of them is charged.
    let at_cap = gw.raw(upload(&gw, &key, vec![0u8; 25 * 1024 * 1024], &[])).await;
    assert_eq!(at_cap.status, 200, "{}", at_cap.text);
    let before = gw.get("/v1/usage?request_type=transcription", &key).await.body["data"].as_array().unwrap().len();
    let over = gw.raw(upload(&gw, &key, vec![0u8; 25 * 1024 * 1024 + 1], &[])).await;
    assert_eq!(over.status, 413, "{}", over.text);
    for (fields, says) in [
        (vec![("response_format", "docx")], "response_format"),
        (vec![("language", "english")], "language"),
        (vec![("temperature", "3")], "temperature"),
        (vec![("model", "gpt-4o-mini")], "does not transcribe"),
        (vec![("colour", "red")], "colour"),
    ] {
        let r = gw.raw(upload(&gw, &key, vec![1u8; 10], &fields)).await;
        assert_eq!(r.status, 400, "{fields:?}: {}", r.text);
        assert!(r.text.contains(says), "{fields:?}: {}", r.text);
    }
    let no_file = gw.raw(
        gw.client()
            .post(gw.url("/v1/audio/transcriptions"))
            .bearer_auth(&key)
            .multipart(reqwest::multipart::Form::new().text("model", "auto")),
    );
    let no_file = no_file.await;
    assert_eq!(no_file.status, 400, "{}", no_file.text);
    assert!(no_file.text.contains("file is required"));
    let after = gw.get("/v1/usage?request_type=transcription", &key).await.body["data"].as_array().unwrap().len();
    assert_eq!(before, after);
    assert!(!gw.data_dir.join("media").exists() || std::fs::read_dir(gw.data_dir.join("media")).unwrap().count() == 0);
}

/// A named model its provider shut down is a 400 that says so; a transcription model that
/// hears only some languages is asked only in those.
#[tokio::test]
async fn named_models_must_still_run_and_hear_the_language() {
    let openai = Fake::start(OpenAi { models: vec![] }, "openai-key-lang").await;
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra.json");
    std::fs::write(
        &extra,
        r#"{"models": [{"id": "whisper-en-only", "name": "English Whisper", "provider": "openai", "input_per_1m": 0,
            "output_per_1m": 0, "capabilities": ["stt"], "context_window": 224, "quality": 60, "latency_class": "fast",
            "media": {"kind": "transcription", "price_per_minute": 0.002, "response_formats": ["json", "verbose_json"],
                      "languages": ["en"]}}]}"#,
    )
    .unwrap();
    let options = Options::default().openai(&openai).env("TOKAROO_CATALOG_EXTRA", extra.to_str().unwrap());
    let gw = Gateway::start_in(&dir.path().join("data"), options).await;
    let key = gw.first_key.clone().unwrap();

    let french = gw.raw(upload(&gw, &key, vec![1u8; 10], &[("model", "whisper-en-only"), ("language", "fr")])).await;
    assert_eq!(french.status, 400, "{}", french.text);
    assert!(french.text.contains("languages they hear"), "{}", french.text);
    assert!(posts(&openai).is_empty() && openai.requests().is_empty(), "the provider was not asked");
    let english = gw.raw(upload(&gw, &key, vec![1u8; 10], &[("model", "whisper-en-only"), ("language", "en")])).await;
    assert_eq!(english.status, 200, "{}", english.text);
    let sent = openai.requests().into_iter().find(|r| r.path.ends_with("/audio/transcriptions")).unwrap();
    assert_eq!(crate::fakes::openai::form_field(&sent.raw, "model").as_deref(), Some("whisper-en-only"));

    let gone = gw.post("/v1/audio/speech", &key, json!({"input": "hi", "model": "playai-tts", "voice": "alloy"})).await;
    assert_eq!(gone.status, 400, "{}", gone.text);
    assert!(gone.text.contains("shut down by its provider on 2025-12-31"), "{}", gone.text);
    let gone = gw.raw(upload(&gw, &key, vec![1u8; 10], &[("model", "distil-whisper-large-v3-en")])).await;
    assert_eq!(gone.status, 400, "{}", gone.text);
    assert!(gone.text.contains("shut down"), "{}", gone.text);
}
