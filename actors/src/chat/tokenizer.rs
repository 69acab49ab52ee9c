//! Counting tokens where no provider reports them: the simulator, streams that end without a
//! usage event, embeddings servers that send no usage, and the router's prompt-size check.
//! We count with OpenAI's `o200k_base` encoding (tiktoken); other providers' tokenizers differ
//! by a few percent, which is the accuracy a fallback count needs.

use tiktoken_rs::{o200k_base_singleton, CoreBPE};

/// Assumed for an image whose size cannot be read (an https URL): providers scale larger
/// images down to about this before counting.
const UNKNOWN_IMAGE_SIDE: u64 = 2048;
/// How much of a base64 data URL is decoded to find the image's dimensions: enough for the
/// headers of PNG, GIF and WebP, and for JPEG's frame header behind a large EXIF block.
const IMAGE_HEADER_BASE64_CHARS: usize = 256 * 1024;

fn bpe() -> &'static CoreBPE {
    o200k_base_singleton()
}

/// Builds the encoder off the request path (it takes a few hundred milliseconds once).
pub fn warm_up() {
    // Allow-list: a one-off thread that ends when the encoder is built.
    #[allow(clippy::disallowed_methods)]
    let _ = std::thread::Builder::new().name("tokenizer-warm-up".into()).spawn(|| count(""));
}

/// The number of tokens in `text`.
pub fn count(text: &str) -> u32 {
    if text.is_empty() {
        return 0;
    }
    u32::try_from(bpe().encode_ordinary(text).len()).unwrap_or(u32::MAX)
}

/// An upper bound on what one image costs in prompt tokens, whichever provider serves it:
/// each provider's own rule, from the image's size when a data URL shows it.
pub fn image_tokens(url: &str, detail: Option<&str>) -> u64 {
    let (w, h) = data_url_dimensions(url).unwrap_or((UNKNOWN_IMAGE_SIDE, UNKNOWN_IMAGE_SIDE));
    openai_image_tokens(w, h, detail).max(anthropic_image_tokens(w, h)).max(gemini_image_tokens(w, h))
}

fn data_url_dimensions(url: &str) -> Option<(u64, u64)> {
    use base64::Engine as _;
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    if !meta.ends_with(";base64") || !data.is_ascii() {
        return None;
    }
    // A prefix of whole 4-character groups decodes on its own.
    let prefix = &data[..data.len().min(IMAGE_HEADER_BASE64_CHARS) / 4 * 4];
    let bytes = base64::engine::general_purpose::STANDARD.decode(prefix).ok()?;
    let size = imagesize::blob_size(&bytes).ok()?;
    // A header can claim any size; no provider takes more than a few thousand pixels a side.
    let side = |n: usize| (n as u64).min(1 << 16);
    Some((side(size.width), side(size.height))).filter(|(w, h)| *w > 0 && *h > 0)
}

/// OpenAI (GPT-4o family): 85 at low detail; otherwise fit in 2048×2048, shortest side to
/// 768, then 85 + 170 per 512-pixel tile.
fn openai_image_tokens(w: u64, h: u64, detail: Option<&str>) -> u64 {
    if detail == Some("low") {
        return 85;
    }
    let (mut w, mut h) = (w as f64, h as f64);
    let fit = (2048.0 / w.max(h)).min(1.0);
    (w, h) = (w * fit, h * fit);
    let shortest = (768.0 / w.min(h)).min(1.0);
    (w, h) = (w * shortest, h * shortest);
    85 + 170 * ((w / 512.0).ceil() * (h / 512.0).ceil()) as u64
}

/// Anthropic: width × height / 750, after scaling to a long edge of at most 1568 pixels and
/// about 1.15 megapixels.
fn anthropic_image_tokens(w: u64, h: u64) -> u64 {
    let (w, h) = (w as f64, h as f64);
    let scale = (1568.0 / w.max(h)).min((1_150_000.0 / (w * h)).sqrt()).min(1.0);
    ((w * scale) * (h * scale) / 750.0).ceil() as u64
}

/// Gemini: 258 for an image within 384×384, else 258 per 768×768 tile.
fn gemini_image_tokens(w: u64, h: u64) -> u64 {
    if w <= 384 && h <= 384 {
        return 258;
    }
    258u64.saturating_mul(w.div_ceil(768)).saturating_mul(h.div_ceil(768))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::chat::{prompt_tokens, prompt_tokens_upper_bound, ChatRequest};
    use crate::test_support::png_data_url;

    #[test]
    fn images_cost_what_the_dearest_provider_counts_for_their_size() {
        // Small: Gemini's flat 258 is the most.
        assert_eq!(image_tokens(&png_data_url(200, 200), None), 258);
        // 1024×1024: OpenAI 85 + 170×4 = 765; Anthropic 1024²/750 = 1399; Gemini 4 tiles = 1032.
        assert_eq!(image_tokens(&png_data_url(1024, 1024), Some("high")), 1399);
        assert_eq!(openai_image_tokens(1024, 1024, Some("high")), 765);
        assert_eq!(openai_image_tokens(4096, 4096, Some("low")), 85);
        // OpenAI's own example: 2048×4096 fits to 1024×2048, then 768×1536: 6 tiles, 1105.
        assert_eq!(openai_image_tokens(2048, 4096, None), 1105);
        assert_eq!(openai_image_tokens(4000, 3000, None), 765);
        // An image whose size cannot be read is assumed large, never small.
        assert_eq!(image_tokens("https://example.com/cat.png", Some("low")), gemini_image_tokens(2048, 2048));
        assert!(image_tokens("data:image/png;base64,not-base64!", None) >= 2000);
        // A header claiming 4 billion pixels a side is capped, not overflowed.
        let huge = image_tokens(&png_data_url(u32::MAX, u32::MAX), None);
        assert!(huge > 1_000_000 && huge < u64::from(u32::MAX), "{huge}");
    }

    #[test]
    fn response_format_schemas_and_tools_count_toward_the_prompt() {
        use crate::chat::{Message, ModelChoice, ResponseFormat, Role};
        let plain = ChatRequest::new(ModelChoice::Native("m".into()), vec![Message::text(Role::User, "hi")]);
        let mut with_schema = plain.clone();
        let schema = serde_json::json!({"type": "object", "properties": {"answer": {"type": "string", "description": "x".repeat(400)}}});
        with_schema.response_format = Some(ResponseFormat::JsonSchema { name: "reply".into(), schema, strict: true });
        assert!(prompt_tokens(&with_schema) > prompt_tokens(&plain) + 40);
        assert!(prompt_tokens_upper_bound(&with_schema) >= u64::from(prompt_tokens(&with_schema)));
    }

    #[test]
    fn counts_real_tokens_not_characters() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello"), 1);
        assert_eq!(count("Hello, world!"), 4);
        let long = "tokenization ".repeat(100);
        let n = count(&long);
        assert!((100..=300).contains(&n), "{n}");
    }

    #[test]
    fn the_upper_bound_is_never_below_the_count_and_settles_the_context_check() {
        let text = |t: &str| crate::chat::Message {
            role: crate::chat::Role::User,
            content: vec![crate::chat::ContentPart::Text(t.to_owned())],
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        };
        let request = |messages| ChatRequest::new(crate::chat::ModelChoice::Native("gpt-4o-mini".into()), messages);
        for messages in [
            vec![text("Say hello.")],
            vec![text("ünïcödé 日本語のテキスト 🎉🎉🎉"), text(&"x".repeat(5000))],
            vec![text("")],
        ] {
            let req = request(messages);
            let exact = prompt_tokens(&req);
            let bound = prompt_tokens_upper_bound(&req);
            assert!(u64::from(exact) <= bound, "{exact} > {bound}");
            assert!(req.prompt_fits(u64::from(exact)), "the exact count fits its own budget");
            assert!(!req.prompt_fits(u64::from(exact) - 1), "one token less does not fit");
        }
    }
}
