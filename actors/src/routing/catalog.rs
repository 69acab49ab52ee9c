//! The reference pricing catalog (`config/catalog.json`): the models Tokaroo can route to,
//! their public list prices per 1M tokens, capabilities, context windows, a quality score and
//! a latency class. Read-mostly: held as an `Arc` snapshot.

use std::{collections::HashMap, path::Path};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EngineError;

/// Shipped inside the binary so the server works from any directory; an operator's file
/// (`catalog.path`) replaces it and `catalog.extra_path` adds models to it.
pub const BUILTIN_CATALOG: &str = include_str!("../../../config/catalog.json");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogModel {
    pub id: String,
    pub name: String,
    pub provider: String,
    pub input_per_1m: f64,
    pub output_per_1m: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_1m: Option<f64>,
    pub capabilities: Vec<String>,
    pub context_window: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_dims: Option<u32>,
    pub quality: f64,
    pub latency_class: String,
    #[serde(default)]
    pub deprecated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Value>,
    /// How many times the provider-neutral image estimate (`tokenizer::image_tokens`) this
    /// model may bill for an image (GPT-4o mini bills images at about 33× GPT-4o's count).
    /// Used for the hold only; the charge follows the provider's own report.
    #[serde(default, skip_serializing)]
    pub image_token_multiplier: Option<f64>,
    /// A media model's unit prices, options and limits (images, speech, transcription,
    /// video); `docs/research/media-catalog.md` says where each came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaSpec>,
}

/// What a media model takes and what it costs per unit. Sizes and qualities are the
/// provider's own words (`1024x1536`, `high`; Google: `16:9`, `2K`); prices in USD.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MediaSpec {
    /// `image`, `speech`, `transcription` or `video`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sizes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qualities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_n: Option<u32>,
    /// `{size}/{quality}` → USD per image.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub price_per_image: std::collections::BTreeMap<String, f64>,
    /// What the provider answers images with: `url`, `b64_json` or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voices: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_chars: Option<u64>,
    /// The `speed`s a speech model takes, `[min, max]` (Groq's Orpheus speaks at 1.0 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_range: Option<(f64, f64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_1k_chars: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_1m_input_tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_minute_audio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_formats: Vec<String>,
    /// The ISO 639-1 languages a transcription model hears; empty for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_second_by_size: Option<std::collections::BTreeMap<String, f64>>,
    /// Allowed lengths: a list of seconds, or `{min, max}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durations_secs: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aspect_ratios: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fps: Option<u32>,
    /// A deprecated model's announced shutdown (`YYYY-MM-DD`): routed until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_until: Option<String>,
}

impl MediaSpec {
    /// Whether `model` (of this spec) may be routed to on `today` (`YYYY-MM-DD`): current, or
    /// deprecated with its shutdown still ahead.
    pub fn routable(&self, deprecated: bool, today: &str) -> bool {
        !deprecated || self.available_until.as_deref().is_some_and(|until| until > today)
    }

    /// Every price is a finite, non-negative number.
    fn prices_valid(&self) -> bool {
        let ok = |p: f64| p.is_finite() && p >= 0.0;
        self.price_per_image.values().all(|p| ok(*p))
            && self.price_per_second_by_size.iter().flat_map(|m| m.values()).all(|p| ok(*p))
            && [
                self.price_per_1k_chars,
                self.price_per_1m_input_tokens,
                self.price_per_minute_audio,
                self.price_per_minute,
                self.price_per_second,
            ]
            .into_iter()
            .flatten()
            .all(ok)
    }
}

impl CatalogModel {
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// A model a self-hosted endpoint serves: not in the catalog, free at list price (its
    /// billing is the self-hosted share of the baseline), with what it was found able to do.
    pub fn self_hosted(id: &str, capabilities: Vec<String>) -> Self {
        Self {
            id: id.to_owned(),
            name: id.to_owned(),
            provider: "local".into(),
            input_per_1m: 0.0,
            output_per_1m: 0.0,
            cached_input_per_1m: None,
            capabilities,
            context_window: u64::MAX,
            max_output_tokens: None,
            embedding_dims: None,
            quality: 0.0,
            latency_class: "fast".into(),
            deprecated: false,
            unit_price: None,
            image_token_multiplier: None,
            media: None,
        }
    }

    /// USD for these tokens at list price.
    pub fn cost(&self, prompt_tokens: u32, completion_tokens: u32) -> f64 {
        (f64::from(prompt_tokens) * self.input_per_1m + f64::from(completion_tokens) * self.output_per_1m) / 1_000_000.0
    }

    /// Expected latency from the catalog's class, used until measurements exist.
    pub fn class_latency_ms(&self) -> f64 {
        match self.latency_class.as_str() {
            "fast" => 400.0,
            "medium" => 1200.0,
            _ => 3000.0,
        }
    }
}

#[derive(Deserialize)]
struct CatalogFile {
    researched_at: Option<String>,
    models: Vec<CatalogModel>,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub researched_at: Option<String>,
    pub models: Vec<CatalogModel>,
    by_id: HashMap<String, usize>,
}

impl Catalog {
    pub fn parse(text: &str, origin: &str) -> Result<Self, EngineError> {
        let file: CatalogFile = serde_json::from_str(text)
            .map_err(|e| EngineError::invalid(format!("catalog {origin} is invalid: {e}")))?;
        let mut catalog = Catalog { researched_at: file.researched_at, ..Catalog::default() };
        for model in file.models {
            catalog.upsert(model, origin)?;
        }
        catalog.inherit_image_multipliers();
        Ok(catalog)
    }

    /// A dated snapshot (`gpt-4o-mini-2024-07-18`) bills images as its family (`gpt-4o-mini`)
    /// does: it takes the multiplier of the longest model id it extends, unless it has its own.
    fn inherit_image_multipliers(&mut self) {
        let families: Vec<(String, f64)> =
            self.models.iter().filter_map(|m| m.image_token_multiplier.map(|x| (format!("{}-", m.id), x))).collect();
        for model in self.models.iter_mut().filter(|m| m.image_token_multiplier.is_none()) {
            model.image_token_multiplier = families
                .iter()
                .filter(|(prefix, _)| model.id.starts_with(prefix.as_str()))
                .max_by_key(|(prefix, _)| prefix.len())
                .map(|(_, x)| *x);
        }
    }

    pub fn builtin() -> Self {
        Self::parse(BUILTIN_CATALOG, "builtin").expect("the shipped catalog parses (tested)")
    }

    /// The catalog for a config: `path` replaces the built-in one, `extra` adds or overrides models.
    pub fn load(path: Option<&Path>, extra: Option<&Path>) -> Result<Self, EngineError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| EngineError::invalid(format!("cannot read catalog {}: {e}", p.display())))
        };
        let mut catalog = match path {
            Some(p) => Self::parse(&read(p)?, &p.display().to_string())?,
            None => Self::builtin(),
        };
        if let Some(p) = extra {
            let more = Self::parse(&read(p)?, &p.display().to_string())?;
            for model in more.models {
                catalog.upsert(model, &p.display().to_string())?;
            }
            catalog.inherit_image_multipliers();
        }
        Ok(catalog)
    }

    fn upsert(&mut self, model: CatalogModel, origin: &str) -> Result<(), EngineError> {
        let valid_price = |p: f64| p.is_finite() && p >= 0.0;
        if model.id.is_empty()
            || !valid_price(model.input_per_1m)
            || !valid_price(model.output_per_1m)
            || model.media.as_ref().is_some_and(|m| !m.prices_valid())
        {
            return Err(EngineError::invalid(format!(
                "catalog {origin}: model {:?} needs an id and non-negative prices",
                model.id
            )));
        }
        match self.by_id.get(&model.id) {
            Some(&i) => self.models[i] = model,
            None => {
                self.by_id.insert(model.id.clone(), self.models.len());
                self.models.push(model);
            }
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&CatalogModel> {
        self.by_id.get(id).map(|&i| &self.models[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_snapshots_reserve_images_as_their_family_bills_them() {
        let catalog = Catalog::builtin();
        let multiplier = |id: &str| catalog.get(id).and_then(|m| m.image_token_multiplier);
        assert_eq!(multiplier("gpt-4o-mini"), Some(33.4));
        assert_eq!(multiplier("gpt-4o-mini-2024-07-18"), Some(33.4));
        assert_eq!(multiplier("gpt-4.1-mini-2025-04-14"), Some(1.7));
        assert_eq!(multiplier("gpt-5-nano-2025-08-07"), Some(2.5));
        assert_eq!(multiplier("gpt-4o"), None, "GPT-4o is the reference count");
    }

    #[test]
    fn shipped_catalog_has_150_real_models_from_the_four_providers() {
        let c = Catalog::builtin();
        assert!(c.models.len() >= 150, "{}", c.models.len());
        for provider in ["openai", "anthropic", "google", "groq"] {
            assert!(c.models.iter().filter(|m| m.provider == provider).count() >= 15, "{provider}");
        }
        let chat = c.models.iter().filter(|m| m.has("chat") && !m.deprecated).count();
        assert!(chat >= 40, "{chat} current chat models");
        let small = c.get("text-embedding-3-small").expect("default embedding model");
        assert_eq!(small.embedding_dims, Some(1536));
    }

    #[test]
    fn cost_is_list_price_per_million() {
        let c = Catalog::parse(
            r#"{"researched_at":null,"models":[{"id":"m","name":"M","provider":"openai","input_per_1m":2.5,"output_per_1m":10,"capabilities":["chat"],"context_window":1000,"quality":50,"latency_class":"fast"}]}"#,
            "test",
        )
        .unwrap();
        let cost = c.get("m").unwrap().cost(1000, 500);
        assert!((cost - 0.0075).abs() < 1e-12, "{cost}");
        assert!(Catalog::parse(r#"{"models":[{"id":"x"}]}"#, "bad").is_err());
    }
}
