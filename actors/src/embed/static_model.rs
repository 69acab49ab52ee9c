//! A static embedding model in-process: each token has a fixed vector in a table, and a text's
//! vector is the mean of its tokens' vectors, L2-normalised (WordLlama's `embed(norm=True)`).
//! No attention and no layers: a chunk costs a tokenisation and a few hundred row additions,
//! where all-MiniLM-L6-v2 costs about 4.6 GFLOP for 200 tokens. Source chunks use it, so a
//! large source is searchable by meaning as fast as it is ingested; it is weaker than MiniLM
//! (measured in the README), so memory notes and the cache keep MiniLM.
//!
//! The table is WordLlama `l2_supercat` (see [`WORDLLAMA`]), checked against its pinned
//! SHA-256 before a byte of it is used.

use std::path::Path;

use candle_core::{DType, Device};
use tokenizers::Tokenizer;

use super::{
    model_files::{PinnedModel, WORDLLAMA},
    EmbedderId, EmbedderKind, LocalModel,
};

const MODEL: &PinnedModel = &WORDLLAMA;
/// The table's tensor in `model.safetensors`.
const TABLE: &str = "embedding.weight";
/// Only a text's first 32 KiB are read: a chunk is far shorter, and a query longer than that
/// is no better represented by a mean over more of it.
const MAX_TEXT_BYTES: usize = 32 << 10;

pub struct StaticModel {
    /// `vocabulary × dims`, row-major, as f32.
    table: Vec<f32>,
    dims: usize,
    tokenizer: Tokenizer,
}

impl StaticModel {
    /// Loads the model from `dir`, refusing any file whose SHA-256 is not the pinned one.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let (weights, tokenizer) =
            (MODEL.read_checked(dir, "model.safetensors")?, MODEL.read_checked(dir, "tokenizer.json")?);
        let tensors = candle_core::safetensors::load_buffer(&weights, &Device::Cpu)
            .map_err(|e| format!("model.safetensors: {e}"))?;
        let table = tensors.get(TABLE).ok_or_else(|| format!("model.safetensors has no tensor {TABLE}"))?;
        let (rows, dims) = table.dims2().map_err(|e| format!("{TABLE}: {e}"))?;
        let table = table
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| format!("{TABLE}: {e}"))?;
        let tokenizer = Tokenizer::from_bytes(&tokenizer).map_err(|e| format!("tokenizer.json: {e}"))?;
        if tokenizer.get_vocab_size(true) > rows {
            return Err(format!("the tokenizer has more tokens than the table's {rows} rows"));
        }
        Ok(Self { table, dims, tokenizer })
    }

    fn embed_one(&self, text: &str) -> Result<Vec<f32>, String> {
        let mut end = text.len().min(MAX_TEXT_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = &text[..end];
        let encoding = self.tokenizer.encode(text, false).map_err(|e| format!("tokenizing: {e}"))?;
        let mut vector = vec![0f32; self.dims];
        let mut counted = 0usize;
        for &id in encoding.get_ids() {
            let Some(row) = self.table.get(id as usize * self.dims..(id as usize + 1) * self.dims) else { continue };
            vector.iter_mut().zip(row).for_each(|(v, x)| *v += x);
            counted += 1;
        }
        // The mean's divisor changes nothing once normalised; an empty text stays all zeros.
        if counted > 0 {
            super::l2_normalise(&mut vector);
        }
        Ok(vector)
    }
}

impl LocalModel for StaticModel {
    fn id(&self) -> EmbedderId {
        EmbedderId { kind: EmbedderKind::Static, model: MODEL.name.to_owned(), dims: self.dims }
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        texts.iter().map(|t| self.embed_one(t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::cosine;

    async fn model() -> &'static StaticModel {
        static MODEL: tokio::sync::OnceCell<StaticModel> = tokio::sync::OnceCell::const_new();
        MODEL
            .get_or_init(|| async {
                let dir = crate::test_support::test_static_model_dir().await;
                tokio::task::spawn_blocking(move || StaticModel::load(&dir))
                    .await
                    .unwrap()
                    .expect("the pinned model loads")
            })
            .await
    }

    fn one(model: &StaticModel, text: &str) -> Vec<f32> {
        model.embed_batch(&[text.to_owned()]).unwrap().remove(0)
    }

    /// Checked against WordLlama's own pipeline in Python (`tokenizers` and numpy over the same
    /// two files: token ids without special tokens, mean of the float16 rows, normalised).
    #[tokio::test]
    async fn a_vector_matches_the_reference_pipeline() {
        let model = model().await;
        assert_eq!(model.id(), EmbedderId { kind: EmbedderKind::Static, model: MODEL.name.into(), dims: 256 });
        let cases: [(&str, &[u32], [f32; 8]); 3] = [
            (
                "How do I reset my password?",
                &[1128, 437, 306, 10092, 590, 4800, 29973],
                [0.228507, 0.135355, 0.10887, -0.01851, 0.081181, -0.009962, -0.072655, -0.01793],
            ),
            (
                "naïve café — unicode survives",
                &[1055, 30085, 345, 274, 28059, 813, 29104, 10503, 3145],
                [0.007282, 0.039559, -0.006965, -0.122802, -0.031669, 0.009165, 0.184448, -0.146883],
            ),
            (
                "Convert 30 USD to EUR",
                &[14806, 29871, 29941, 29900, 3148, 29928, 304, 382, 4574],
                [0.108553, 0.060342, -0.06641, 0.076126, 0.032444, 0.000889, -0.060588, -0.035526],
            ),
        ];
        for (text, ids, head) in cases {
            assert_eq!(model.tokenizer.encode(text, false).unwrap().get_ids(), ids, "{text:?}");
            let vector = one(model, text);
            for (i, (got, want)) in vector.iter().zip(head).enumerate() {
                assert!((got - want).abs() < 1e-4, "{text:?} dim {i}: {got} vs reference {want}");
            }
        }
    }

    #[tokio::test]
    async fn paraphrases_score_higher_than_unrelated_sentences() {
        let model = model().await;
        let question = one(model, "How do I reset my password?");
        let (close, far) = (
            cosine(&question, &one(model, "I forgot my password, how can I change it?")),
            cosine(&question, &one(model, "What's the weather in Paris?")),
        );
        assert!(close > 0.6 && far < 0.2, "paraphrase {close}, unrelated {far}");
    }

    #[tokio::test]
    async fn empty_and_huge_texts_are_answered() {
        let model = model().await;
        assert!(one(model, "").iter().all(|x| *x == 0.0), "no tokens, no direction");
        let huge = "é".repeat(1 << 20);
        assert_eq!(one(model, &huge).len(), 256, "read up to a char boundary, never split inside one");
    }

    #[tokio::test]
    async fn a_tampered_table_is_refused() {
        let copy = crate::test_support::tampered_copy(MODEL, &crate::test_support::test_static_model_dir().await);
        let error = StaticModel::load(copy.path()).err().expect("refused");
        assert!(error.contains("model.safetensors has SHA-256"), "{error}");
    }
}
