//! Reading OpenAI's chat request JSON into the engine's [`ChatRequest`].

use serde_json::{json, Value};
use tokaroo_actors::chat::{
    ChatRequest, ContentPart, Message, Mode, ModelChoice, ResponseFormat, Role, ToolCall, ToolChoice, ToolDef,
};

use crate::http::error::ApiError;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

fn parse_content(v: &Value, at: &str) -> Result<Vec<ContentPart>, ApiError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![ContentPart::Text(s.clone())]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| match p["type"].as_str() {
                Some("text") => p["text"]
                    .as_str()
                    .map(|t| ContentPart::Text(t.to_owned()))
                    .ok_or_else(|| bad(format!("{at}.content[{i}].text must be a string"))),
                Some("image_url") => {
                    let url = p["image_url"]["url"]
                        .as_str()
                        .or_else(|| p["image_url"].as_str())
                        .ok_or_else(|| bad(format!("{at}.content[{i}].image_url.url must be a string")))?;
                    if !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with("data:image/")) {
                        return Err(bad(format!(
                            "{at}.content[{i}].image_url.url must be an http(s) URL or a data:image/... URL"
                        )));
                    }
                    Ok(ContentPart::Image {
                        url: url.to_owned(),
                        detail: p["image_url"]["detail"].as_str().map(str::to_owned),
                    })
                }
                other => Err(bad(format!("{at}.content[{i}].type {other:?} is not supported (text, image_url)"))),
            })
            .collect(),
        _ => Err(bad(format!("{at}.content must be a string or an array of content parts"))),
    }
}

fn parse_message(v: &Value, i: usize) -> Result<Message, ApiError> {
    let at = format!("messages[{i}]");
    let role = match v["role"].as_str() {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        Some(other) => return Err(bad(format!("{at}.role {other:?} is not one of system, user, assistant, tool"))),
        None => return Err(bad(format!("{at}.role is required"))),
    };
    let content = parse_content(&v["content"], &at)?;
    let mut tool_calls = Vec::new();
    for (j, c) in v["tool_calls"].as_array().into_iter().flatten().enumerate() {
        let name = c["function"]["name"]
            .as_str()
            .ok_or_else(|| bad(format!("{at}.tool_calls[{j}].function.name is required")))?;
        tool_calls.push(ToolCall {
            id: c["id"].as_str().unwrap_or_default().to_owned(),
            name: name.to_owned(),
            arguments: c["function"]["arguments"].as_str().unwrap_or("{}").to_owned(),
        });
    }
    let tool_call_id = v["tool_call_id"].as_str().map(str::to_owned);
    if role == Role::Tool && tool_call_id.is_none() {
        return Err(bad(format!("{at}.tool_call_id is required for role tool")));
    }
    if content.is_empty() && tool_calls.is_empty() {
        return Err(bad(format!("{at}.content is required")));
    }
    Ok(Message { role, content, tool_calls, tool_call_id, name: v["name"].as_str().map(str::to_owned) })
}

fn number(v: &Value, field: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
    match &v[field] {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            _ => Err(bad(format!("{field} must be between {min} and {max}"))),
        },
        _ => Err(bad(format!("{field} must be a number"))),
    }
}

/// Builds the engine's request from OpenAI's wire JSON, naming the first thing that is wrong.
pub fn parse_request(v: &Value) -> Result<(ChatRequest, String), ApiError> {
    if !v.is_object() {
        return Err(bad("Request body must be a JSON object"));
    }
    let model_name = v["model"].as_str().ok_or_else(|| bad("model is required: auto, fast or max"))?.to_owned();
    let model = match Mode::parse(&model_name) {
        Some(mode) => ModelChoice::Mode(mode),
        None => ModelChoice::Native(model_name.clone()),
    };
    let messages = v["messages"].as_array().ok_or_else(|| bad("messages must be a non-empty array"))?;
    if messages.is_empty() {
        return Err(bad("messages must be a non-empty array"));
    }
    let messages = messages.iter().enumerate().map(|(i, m)| parse_message(m, i)).collect::<Result<Vec<_>, _>>()?;
    let mut tools = Vec::new();
    for (i, t) in v["tools"].as_array().into_iter().flatten().enumerate() {
        if t["type"].as_str() != Some("function") {
            return Err(bad(format!("tools[{i}].type must be \"function\"")));
        }
        let name =
            t["function"]["name"].as_str().ok_or_else(|| bad(format!("tools[{i}].function.name is required")))?;
        tools.push(ToolDef {
            name: name.to_owned(),
            description: t["function"]["description"].as_str().map(str::to_owned),
            parameters: if t["function"]["parameters"].is_null() {
                json!({"type": "object", "properties": {}})
            } else {
                t["function"]["parameters"].clone()
            },
        });
    }
    let tool_choice = match &v["tool_choice"] {
        Value::Null => None,
        Value::String(s) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(bad(format!("tool_choice {other:?} is not auto, none or required"))),
        }),
        obj => Some(ToolChoice::Function(
            obj["function"]["name"].as_str().ok_or_else(|| bad("tool_choice.function.name is required"))?.to_owned(),
        )),
    };
    let response_format = match v["response_format"]["type"].as_str() {
        None => None,
        Some("text") => Some(ResponseFormat::Text),
        Some("json_object") => Some(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let s = &v["response_format"]["json_schema"];
            Some(ResponseFormat::JsonSchema {
                name: s["name"].as_str().unwrap_or("response").to_owned(),
                schema: s["schema"].clone(),
                strict: s["strict"].as_bool().unwrap_or(false),
            })
        }
        Some(other) => {
            return Err(bad(format!("response_format.type {other:?} is not text, json_object or json_schema")))
        }
    };
    let max_tokens =
        match number(v, "max_completion_tokens", 1.0, 10_000_000.0)?.or(number(v, "max_tokens", 1.0, 10_000_000.0)?) {
            Some(x) if x.fract() == 0.0 => Some(x as u32),
            Some(_) => return Err(bad("max_tokens must be a whole number")),
            None => None,
        };
    // One answer per request: the ledger charges one completion and the cache stores one.
    match &v["n"] {
        Value::Null => {}
        n if n.as_u64() == Some(1) => {}
        _ => return Err(bad("n must be 1 (one choice per request; send the request again for another answer)")),
    }
    let stop = match &v["stop"] {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|s| s.as_str().map(str::to_owned).ok_or_else(|| bad("stop must be a string or an array of strings")))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("stop must be a string or an array of strings")),
    };
    let stream = match &v["stream"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => return Err(bad("stream must be a boolean")),
    };
    let request = ChatRequest {
        model,
        messages,
        tools,
        tool_choice,
        response_format,
        max_tokens,
        temperature: number(v, "temperature", 0.0, 2.0)?,
        top_p: number(v, "top_p", 0.0, 1.0)?,
        stop,
        seed: v["seed"].as_i64(),
        user: v["user"].as_str().map(str::to_owned),
        stream,
        include_usage: v["stream_options"]["include_usage"].as_bool().unwrap_or(false),
        prompt_size: Default::default(),
    };
    Ok((request, model_name))
}
