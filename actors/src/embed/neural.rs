//! all-MiniLM-L6-v2 in-process on the CPU with candle: sentence-transformers' pipeline for
//! this model (`modules.json`: Transformer → Pooling → Normalize; `1_Pooling/config.json`:
//! mean over the tokens the attention mask keeps), inputs truncated at 256 tokens
//! (`sentence_bert_config.json`'s `max_seq_length`).
//!
//! Loading reads each file once, checks the bytes against their pinned SHA-256 and builds
//! from those same bytes, so what was checked is what runs.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{
    model_files::{PinnedModel, MINILM},
    EmbedderId, EmbedderKind, LocalModel,
};

const MODEL: &PinnedModel = &MINILM;
const MODEL_NAME: &str = MINILM.name;

/// sentence-transformers' `max_seq_length` for this model.
pub const MAX_TOKENS: usize = 256;
pub const NEURAL_DIMS: usize = 384;

pub struct Neural {
    model: BertModel,
    tokenizer: Tokenizer,
    dims: usize,
}

impl Neural {
    /// Loads the model from `dir`, refusing any file whose SHA-256 is not the pinned one.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let read = |name: &str| MODEL.read_checked(dir, name);
        let (config, tokenizer, weights) = (read("config.json")?, read("tokenizer.json")?, read("model.safetensors")?);
        let config: Config = serde_json::from_slice(&config).map_err(|e| format!("config.json: {e}"))?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer).map_err(|e| format!("tokenizer.json: {e}"))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..TruncationParams::default() }))
            .map_err(|e| format!("tokenizer truncation: {e}"))?;
        // Padding to the batch's longest; the attention mask keeps the padding out of the mean.
        tokenizer
            .with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..PaddingParams::default() }));
        let device = Device::Cpu;
        let weights = VarBuilder::from_buffered_safetensors(weights, DTYPE, &device)
            .map_err(|e| format!("model.safetensors: {e}"))?;
        let model = BertModel::load(weights, &config).map_err(|e| format!("loading the BERT weights: {e}"))?;
        Ok(Self { model, tokenizer, dims: config.hidden_size })
    }

    fn forward(&self, texts: &[String]) -> candle_core::Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| candle_core::Error::Msg(format!("tokenizing: {e}")))?;
        let device = &self.model.device;
        let ids: Vec<Tensor> =
            encodings.iter().map(|e| Tensor::new(e.get_ids(), device)).collect::<candle_core::Result<_>>()?;
        let masks: Vec<Tensor> = encodings
            .iter()
            .map(|e| Tensor::new(e.get_attention_mask(), device))
            .collect::<candle_core::Result<_>>()?;
        let input_ids = Tensor::stack(&ids, 0)?;
        let attention_mask = Tensor::stack(&masks, 0)?;
        let token_type_ids = input_ids.zeros_like()?;
        // [batch, tokens, hidden]
        let hidden = self.model.forward(&input_ids, &token_type_ids, Some(&attention_mask))?;
        // Mean pooling over the tokens the mask keeps.
        let mask = attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let pooled = summed.broadcast_div(&counts)?;
        let mut vectors = pooled.to_vec2::<f32>()?;
        vectors.iter_mut().for_each(|v| super::l2_normalise(v));
        Ok(vectors)
    }
}

impl LocalModel for Neural {
    fn id(&self) -> EmbedderId {
        EmbedderId { kind: EmbedderKind::Neural, model: MODEL_NAME.to_owned(), dims: self.dims }
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.forward(texts).map_err(|e| format!("{MODEL_NAME}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::cosine;

    async fn model() -> &'static Neural {
        static MODEL: tokio::sync::OnceCell<Neural> = tokio::sync::OnceCell::const_new();
        MODEL
            .get_or_init(|| async {
                let dir = crate::test_support::test_model_dir().await;
                tokio::task::spawn_blocking(move || Neural::load(&dir)).await.unwrap().expect("the pinned model loads")
            })
            .await
    }

    fn one(model: &Neural, text: &str) -> Vec<f32> {
        model.embed_batch(&[text.to_owned()]).unwrap().remove(0)
    }

    #[tokio::test]
    async fn paraphrases_score_high_and_unrelated_sentences_low() {
        let model = model().await;
        assert_eq!(model.id(), EmbedderId { kind: EmbedderKind::Neural, model: MODEL_NAME.into(), dims: 384 });
        let question = one(model, "How do I reset my password?");
        let paraphrase = one(model, "I forgot my password, how can I change it?");
        let unrelated = one(model, "What's the weather in Paris?");
        assert_eq!(question.len(), NEURAL_DIMS);
        let (close, far) = (cosine(&question, &paraphrase), cosine(&question, &unrelated));
        assert!(close > 0.7, "paraphrase cosine {close}");
        assert!(far < 0.3, "unrelated cosine {far}");
        let norm: f32 = question.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "unit length, got {norm}");
    }

    /// Checked against an independent implementation: BERT's forward pass written in numpy
    /// (float64) over the same files with sentence-transformers' pooling and normalisation
    /// (`tests/data/minilm_reference.py`). sentence-transformers itself needs torch, whose
    /// PyPI wheel brings gigabytes of CUDA libraries, so it was not run here.
    #[tokio::test]
    async fn a_vector_matches_an_independent_reference() {
        let model = model().await;
        let cases: [(&str, [f32; 8]); 3] = [
            (
                "How do I reset my password?",
                [0.006903, -0.063023, -0.072044, -0.032496, -0.042709, 0.070429, 0.009074, 0.015408],
            ),
            (
                "I forgot my password, how can I change it?",
                [-0.023783, -0.016202, -0.070469, -0.008919, -0.010652, 0.106891, 0.00338, 0.035869],
            ),
            (
                "What's the weather in Paris?",
                [0.040237, 0.012741, 0.081245, 0.015445, 0.026367, -0.026271, 0.01371, -0.047629],
            ),
        ];
        for (text, head) in cases {
            let vector = one(model, text);
            for (i, (got, want)) in vector.iter().zip(head).enumerate() {
                assert!((got - want).abs() < 1e-4, "{text:?} dim {i}: {got} vs reference {want}");
            }
        }
    }

    #[tokio::test]
    async fn the_same_text_gives_the_same_vector() {
        let model = model().await;
        let text = "Deterministic output, run after run.";
        assert_eq!(one(model, text), one(model, text));
    }

    /// Padding in a batch changes nothing: the mask keeps it out of attention and the mean.
    #[tokio::test]
    async fn a_batch_equals_one_by_one() {
        let model = model().await;
        let texts: Vec<String> = [
            "short",
            "A somewhat longer sentence, with punctuation and several more words in it.",
            "Convert 30 USD to EUR",
            "",
            "naïve café — unicode survives tokenisation",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let batched = model.embed_batch(&texts).unwrap();
        for (text, together) in texts.iter().zip(&batched) {
            let alone = one(model, text);
            let diff = alone.iter().zip(together).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "{text:?}: batched and alone differ by {diff}");
        }
    }

    /// Inputs past 256 tokens are truncated, not refused.
    #[tokio::test]
    async fn long_inputs_are_truncated() {
        let model = model().await;
        let long = "word ".repeat(2_000);
        let longer = format!("{long} and then something else entirely at the very end");
        let (a, b) = (one(model, &long), one(model, &longer));
        assert!(cosine(&a, &b) > 0.9999, "both are cut at {MAX_TOKENS} tokens");
    }

    #[tokio::test]
    async fn a_tampered_weights_file_is_refused() {
        let copy = crate::test_support::tampered_copy(MODEL, &crate::test_support::test_model_dir().await);
        let error = Neural::load(copy.path()).err().expect("refused");
        assert!(error.contains("model.safetensors has SHA-256"), "{error}");
    }
}
