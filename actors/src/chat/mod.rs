//! Provider-neutral chat types. The HTTP layer builds a [`ChatRequest`] from the client's
//! JSON; each provider adapter turns it into its own wire format and its answer back into a
//! [`ChatResponse`] or a stream of [`ChatDelta`]s.

pub mod tokenizer;

use serde::Serialize;

use serde_json::Value;

/// The three routing modes of the managed surface. A request is also priced at a mode (its
/// tier, on usage rows): the one it asked for, or `auto` when it named a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Auto,
    Fast,
    Max,
}

impl Mode {
    pub const ALL: [Self; 3] = [Self::Auto, Self::Fast, Self::Max];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "fast" => Some(Self::Fast),
            "max" => Some(Self::Max),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Fast => "fast",
            Self::Max => "max",
        }
    }
}

/// What the client asked for in `model`: a mode, or a native model name used directly.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelChoice {
    Mode(Mode),
    Native(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    Text(String),
    /// An https URL or a `data:` URL.
    Image {
        url: String,
        detail: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text, as the model produced it.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<ContentPart>,
    /// Assistant turns that called tools.
    pub tool_calls: Vec<ToolCall>,
    /// Tool turns: which call this answers.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: vec![ContentPart::Text(text.into())],
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    /// All text parts joined (images left out).
    pub fn joined_text(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            if let ContentPart::Text(t) = part {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(t);
            }
        }
        out
    }

    pub fn has_image(&self) -> bool {
        self.content.iter().any(|p| matches!(p, ContentPart::Image { .. }))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { name: String, schema: Value, strict: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: ModelChoice,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolDef>,
    pub tool_choice: Option<ToolChoice>,
    pub response_format: Option<ResponseFormat>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub user: Option<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Memo of the prompt's size; build requests with it empty (`Default`).
    pub prompt_size: PromptSize,
}

/// The prompt's token count and a cheap upper bound on it, each computed at most once.
#[derive(Debug, Clone, Default)]
pub struct PromptSize {
    exact: std::sync::OnceLock<u32>,
    upper_bound: std::sync::OnceLock<u64>,
}

/// A memo follows from the request's content, so it never makes two requests differ.
impl PartialEq for PromptSize {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Output tokens allowed for a request that sets no `max_tokens` (capped by the model's own
/// output limit). The bound is sent upstream and reserved, so a charge cannot outgrow its hold.
pub const DEFAULT_OUTPUT_RESERVE: u64 = 4_096;

impl ChatRequest {
    /// The output tokens this request may produce on `model`: the client's `max_tokens`, or
    /// [`DEFAULT_OUTPUT_RESERVE`], within the model's own limit. Adapters send it upstream
    /// and the hold reserves it.
    pub fn output_bound(&self, model_max_output_tokens: Option<u64>) -> u32 {
        let wanted = self.max_tokens.map_or(DEFAULT_OUTPUT_RESERVE, u64::from);
        let bound = wanted.min(model_max_output_tokens.unwrap_or(u64::MAX)).max(1);
        u32::try_from(bound).unwrap_or(u32::MAX)
    }

    /// A request with only a model and messages; every option unset.
    pub fn new(model: ModelChoice, messages: Vec<Message>) -> Self {
        Self {
            model,
            messages,
            tools: Vec::new(),
            tool_choice: None,
            response_format: None,
            max_tokens: None,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            seed: None,
            user: None,
            stream: false,
            include_usage: false,
            prompt_size: PromptSize::default(),
        }
    }

    /// The prompt's token count, counted once per request (routing asks several times).
    pub fn prompt_tokens(&self) -> u32 {
        *self.prompt_size.exact.get_or_init(|| prompt_tokens(self))
    }

    /// Whether the prompt has at most `budget` tokens. Tokenizing is the dearest step of
    /// routing, and most prompts are far below the limit; their byte count settles it.
    pub fn prompt_fits(&self, budget: u64) -> bool {
        let upper_bound = *self.prompt_size.upper_bound.get_or_init(|| prompt_tokens_upper_bound(self));
        upper_bound <= budget || u64::from(self.prompt_tokens()) <= budget
    }

    pub fn needs_vision(&self) -> bool {
        self.messages.iter().any(Message::has_image)
    }

    pub fn needs_tools(&self) -> bool {
        !self.tools.is_empty() || self.messages.iter().any(|m| !m.tool_calls.is_empty() || m.role == Role::Tool)
    }

    pub fn needs_json(&self) -> bool {
        matches!(self.response_format, Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }))
    }

    pub fn system_text(&self) -> Option<String> {
        let parts: Vec<String> =
            self.messages.iter().filter(|m| m.role == Role::System).map(Message::joined_text).collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl Usage {
    pub fn total(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    /// `None` when the provider reported no usage (then we count tokens ourselves).
    pub usage: Option<Usage>,
}

/// One event of a streamed answer, in provider-neutral form.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatDelta {
    Text(String),
    /// A tool call begins: its position among this answer's calls, id and function name.
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    /// A fragment of a tool call's JSON arguments.
    ToolCallArguments {
        index: u32,
        fragment: String,
    },
    Finish(FinishReason),
    Usage(Usage),
}

/// Tokens OpenAI adds per message for its role and separators, and once to prime the reply.
const PER_MESSAGE: u32 = 3;
const REPLY_PRIMER: u32 = 3;

/// The prompt tokens of a chat request: message text, tool definitions and images.
pub(crate) fn prompt_tokens(req: &ChatRequest) -> u32 {
    u32::try_from(prompt_size(req, |text| u64::from(tokenizer::count(text)))).unwrap_or(u32::MAX)
}

/// At least [`prompt_tokens`], without tokenizing: a token covers at least one byte, so the
/// same sum over bytes bounds it.
pub(crate) fn prompt_tokens_upper_bound(req: &ChatRequest) -> u64 {
    prompt_size(req, |text| text.len() as u64)
}

/// The prompt's size with each piece of text measured by `measure`.
fn prompt_size(req: &ChatRequest, measure: impl Fn(&str) -> u64) -> u64 {
    let messages: u64 = req
        .messages
        .iter()
        .map(|m| {
            let images: u64 = m
                .content
                .iter()
                .map(|p| match p {
                    ContentPart::Image { url, detail } => tokenizer::image_tokens(url, detail.as_deref()),
                    ContentPart::Text(_) => 0,
                })
                .fold(0u64, u64::saturating_add);
            let calls: u64 = m.tool_calls.iter().map(|c| measure(&c.name) + measure(&c.arguments)).sum();
            u64::from(PER_MESSAGE) + measure(&m.joined_text()) + calls + images
        })
        .sum();
    let tools: u64 = req
        .tools
        .iter()
        .map(|t| measure(&t.name) + t.description.as_deref().map_or(0, &measure) + measure(&t.parameters.to_string()))
        .sum();
    let format = match &req.response_format {
        Some(ResponseFormat::JsonSchema { name, schema, .. }) => measure(name) + measure(&schema.to_string()),
        _ => 0,
    };
    messages + tools + format + u64::from(REPLY_PRIMER)
}

/// The images of a request, by [`tokenizer::image_tokens`] (already inside `prompt_tokens`).
pub fn request_image_tokens(req: &ChatRequest) -> u64 {
    req.messages
        .iter()
        .flat_map(|m| &m.content)
        .map(|p| match p {
            ContentPart::Image { url, detail } => tokenizer::image_tokens(url, detail.as_deref()),
            ContentPart::Text(_) => 0,
        })
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strings are on the wire (`model`) and on stored usage rows (`tier`).
    #[test]
    fn modes_parse_what_they_print() {
        assert_eq!(Mode::ALL.map(Mode::as_str), ["auto", "fast", "max"]);
        for mode in Mode::ALL {
            assert_eq!(Mode::parse(mode.as_str()), Some(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
        }
        assert_eq!(Mode::parse("Auto"), None);
        assert_eq!(Mode::parse("gpt-4o-mini"), None);
    }
}
