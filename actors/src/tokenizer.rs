//! Counting tokens where no provider reports them: the simulator, streams that end without a
//! usage event, embeddings servers that send no usage, and the router's prompt-size check.
//! We count with OpenAI's `o200k_base` encoding (tiktoken); other providers' tokenizers differ
//! by a few percent, which is the accuracy a fallback count needs.

use tiktoken_rs::{o200k_base_singleton, CoreBPE};

use crate::chat::ChatRequest;

/// Tokens OpenAI adds per message for its role and separators, and once to prime the reply.
const PER_MESSAGE: u32 = 3;
const REPLY_PRIMER: u32 = 3;
/// A low-detail image as OpenAI bills it; a fallback count cannot see the image's size.
const PER_IMAGE: u32 = 85;

fn bpe() -> &'static CoreBPE {
    o200k_base_singleton()
}

/// Builds the encoder off the request path (it takes a few hundred milliseconds once).
pub fn warm_up() {
    let _ = std::thread::Builder::new().name("tokenizer-warm-up".into()).spawn(|| count(""));
}

/// The number of tokens in `text`.
pub fn count(text: &str) -> u32 {
    if text.is_empty() {
        return 0;
    }
    u32::try_from(bpe().encode_ordinary(text).len()).unwrap_or(u32::MAX)
}

/// The prompt tokens of a chat request: message text, tool definitions and images.
pub fn prompt_tokens(req: &ChatRequest) -> u32 {
    u32::try_from(prompt_size(req, |text| u64::from(count(text)))).unwrap_or(u32::MAX)
}

/// At least [`prompt_tokens`], without tokenizing: a token covers at least one byte, so the
/// same sum over bytes bounds it.
pub fn prompt_tokens_upper_bound(req: &ChatRequest) -> u64 {
    prompt_size(req, |text| text.len() as u64)
}

/// The prompt's size with each piece of text measured by `measure`.
fn prompt_size(req: &ChatRequest, measure: impl Fn(&str) -> u64) -> u64 {
    let messages: u64 = req
        .messages
        .iter()
        .map(|m| {
            let images =
                m.content.iter().filter(|p| matches!(p, crate::chat::ContentPart::Image { .. })).count() as u64;
            let calls: u64 = m.tool_calls.iter().map(|c| measure(&c.name) + measure(&c.arguments)).sum();
            u64::from(PER_MESSAGE) + measure(&m.joined_text()) + calls + images * u64::from(PER_IMAGE)
        })
        .sum();
    let tools: u64 = req
        .tools
        .iter()
        .map(|t| measure(&t.name) + t.description.as_deref().map_or(0, &measure) + measure(&t.parameters.to_string()))
        .sum();
    messages + tools + u64::from(REPLY_PRIMER)
}

#[cfg(test)]
mod tests {
    use super::*;

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
