//! PLACEHOLDER until the guards branch merges: compares prompts word for word.

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disagreement {
    Words,
}

#[derive(Debug, Clone)]
pub struct PromptFeatures {
    words: Vec<String>,
}

impl PromptFeatures {
    pub fn of(text: &str) -> Self {
        Self { words: text.split_whitespace().map(str::to_lowercase).collect() }
    }
}

pub fn disagreement(a: &PromptFeatures, b: &PromptFeatures) -> Option<Disagreement> {
    (a.words != b.words).then_some(Disagreement::Words)
}
