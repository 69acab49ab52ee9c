//! The built-in `simulator` provider: answers offline so the quickstart works with no
//! provider key. On only while no real provider is configured; every usage row and log line
//! names it. Answers are deterministic, streamed in several chunks, with token counts and a
//! small latency; when tools are offered it calls the first one.

use std::time::Duration;

use futures_util::{future::BoxFuture, StreamExt};
use serde_json::{Map, Value};

use super::{ChatProvider, Connection, DeltaStream, ProviderError};
use crate::chat::{ChatDelta, ChatRequest, ChatResponse, FinishReason, ResponseFormat, Role, ToolCall, Usage};

pub struct SimulatorChat {
    pub latency: Duration,
}

fn answer(req: &ChatRequest, max_output_tokens: u32) -> ChatResponse {
    let last_user =
        req.messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.joined_text()).unwrap_or_default();
    let answered_tool = req.messages.last().is_some_and(|m| m.role == Role::Tool);
    let (content, tool_calls, finish) = if !req.tools.is_empty() && !answered_tool {
        let tool = &req.tools[0];
        let mut args = Map::new();
        for name in tool.parameters["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            args.insert(name.to_owned(), Value::String("simulated".into()));
        }
        let call = ToolCall {
            id: format!("call_sim_{}", crate::clock::new_id().replace('-', "")[..12].to_owned()),
            name: tool.name.clone(),
            arguments: Value::Object(args).to_string(),
        };
        (None, vec![call], FinishReason::ToolCalls)
    } else if matches!(req.response_format, Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })) {
        (Some(serde_json::json!({ "simulated": true, "echo": last_user }).to_string()), Vec::new(), FinishReason::Stop)
    } else {
        let text = format!(
            "[simulator] This is a simulated answer: no provider is configured. You said: {}",
            last_user.chars().take(200).collect::<String>()
        );
        (Some(text), Vec::new(), FinishReason::Stop)
    };
    let mut completion = crate::chat::tokenizer::count(content.as_deref().unwrap_or_default());
    completion += tool_calls.iter().map(|c| crate::chat::tokenizer::count(&c.arguments) + 5).sum::<u32>();
    let (content, finish) = match (content, max_output_tokens) {
        (Some(text), max) if completion > max => {
            completion = max;
            (Some(text.chars().take(max as usize * 4).collect()), FinishReason::Length)
        }
        (content, _) => (content, finish),
    };
    ChatResponse {
        content,
        tool_calls,
        finish_reason: finish,
        usage: Some(Usage { prompt_tokens: req.prompt_tokens(), completion_tokens: completion }),
    }
}

impl ChatProvider for SimulatorChat {
    fn chat<'a>(
        &'a self,
        _conn: &'a Connection,
        _model: &'a str,
        req: &'a ChatRequest,
        max_output_tokens: u32,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            tokio::time::sleep(self.latency).await;
            Ok(answer(req, max_output_tokens))
        })
    }

    fn chat_stream<'a>(
        &'a self,
        _conn: &'a Connection,
        _model: &'a str,
        req: &'a ChatRequest,
        max_output_tokens: u32,
    ) -> BoxFuture<'a, Result<DeltaStream, ProviderError>> {
        Box::pin(async move {
            tokio::time::sleep(self.latency).await;
            let full = answer(req, max_output_tokens);
            let mut deltas = Vec::new();
            if let Some(text) = &full.content {
                let words: Vec<&str> = text.split_inclusive(' ').collect();
                for chunk in words.chunks(4) {
                    deltas.push(ChatDelta::Text(chunk.concat()));
                }
            }
            for (i, call) in full.tool_calls.iter().enumerate() {
                deltas.push(ChatDelta::ToolCallStart { index: i as u32, id: call.id.clone(), name: call.name.clone() });
                deltas.push(ChatDelta::ToolCallArguments { index: i as u32, fragment: call.arguments.clone() });
            }
            deltas.push(ChatDelta::Finish(full.finish_reason));
            if let Some(usage) = full.usage {
                deltas.push(ChatDelta::Usage(usage));
            }
            let gap = self.latency / 10;
            Ok(futures_util::stream::iter(deltas)
                .then(move |d| async move {
                    tokio::time::sleep(gap).await;
                    Ok(d)
                })
                .boxed())
        })
    }
}

/// Deterministic unit vectors from hashed words: similar texts get similar vectors, so the
/// offline quickstart's embeddings behave plausibly.
pub fn embed(inputs: &[String], dims: u32) -> super::Embeddings {
    use sha2::{Digest, Sha256};
    let vectors = inputs
        .iter()
        .map(|text| {
            let mut v = vec![0f32; dims as usize];
            for word in text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                let h = Sha256::digest(word.as_bytes());
                let idx = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) % dims;
                v[idx as usize] += if h[4] & 1 == 0 { 1.0 } else { -1.0 };
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
            v
        })
        .collect();
    super::Embeddings { vectors, prompt_tokens: Some(inputs.iter().map(|t| crate::chat::tokenizer::count(t)).sum()) }
}

/// A labelled stand-in: one tiny PNG per image asked for, the prompt echoed as the revised
/// prompt, so the quickstart shows the whole path offline.
pub fn images(call: &super::ImageCall<'_>) -> Vec<super::GeneratedImage> {
    // A 1×1 PNG.
    const PIXEL: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4, 0x89, 0x00, 0x00, 0x00,
        0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0, 0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF,
        0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ];
    (0..call.n.max(1))
        .map(|_| super::GeneratedImage {
            bytes: PIXEL.to_vec(),
            mime: "image/png".into(),
            revised_prompt: Some(format!("[simulated] {}", call.prompt)),
        })
        .collect()
}

/// A labelled stand-in for speech: a quarter second of silence, in the formats that need
/// no encoder (`wav`, `pcm`, and `mp3` as silent frames).
pub fn speech(call: &super::SpeechCall<'_>) -> Result<super::ByteStream, super::ProviderError> {
    use futures_util::StreamExt as _;
    let audio = match call.format {
        "pcm" => vec![0u8; 12_000],
        "wav" => {
            let mut wav = super::wav_header(12_000, 24_000);
            wav.resize(44 + 12_000, 0);
            wav
        }
        // MPEG-1 Layer III, 128 kb/s, 44.1 kHz frames with empty main data: silence.
        "mp3" => (0..10)
            .flat_map(|_| {
                let mut frame = vec![0u8; 417];
                frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
                frame
            })
            .collect(),
        other => {
            return Err(super::ProviderError::Status {
                status: 400,
                message: format!("the simulator speaks mp3, wav or pcm, not {other}; configure a provider"),
                retry_after: None,
            })
        }
    };
    Ok(futures_util::stream::once(async move { Ok(bytes::Bytes::from(audio)) }).boxed())
}

/// A labelled stand-in transcript: the audio's length guessed at 16 kb/s.
pub fn transcribe(call: &super::TranscriptionCall<'_>) -> super::Transcript {
    let duration_secs = (call.audio.len() as f64 * 8.0 / 16_000.0).max(1.0);
    let text = format!("[simulated] a transcript of {} ({} bytes)", call.filename, call.audio.len());
    super::Transcript {
        segments: vec![(0.0, duration_secs, text.clone())],
        text,
        language: Some(call.language.unwrap_or("en").to_owned()),
        duration_secs,
    }
}
