//! Embeds text lists for the retrieval experiment with the forward pass of
//! /work/main/actors/src/embed/neural.rs (copied verbatim; same crate versions via the repo's
//! Cargo.lock). Reads a JSON {"name": [texts]} and writes `<out>/<name>.f32`: little-endian f32
//! rows of 384, L2-normalised, in input order.
use std::path::Path;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

// Pinned SHA-256 from actors/src/embed/model_files.rs.
const PINNED: [(&str, &str); 3] = [
    ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
];

fn l2_normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

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
        let read = |name: &str| -> Result<Vec<u8>, String> {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let pinned = PINNED.iter().find(|f| f.0 == name).map(|f| f.1).unwrap_or_default();
            let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            if actual != pinned {
                return Err(format!(
                    "{} has SHA-256 {actual}, expected {pinned}: refusing it (tampered, truncated or another \
                     revision)",
                    path.display()
                ));
            }
            Ok(bytes)
        };
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
        vectors.iter_mut().for_each(|v| l2_normalise(v));
        Ok(vectors)
    }
}


fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (input, out) = (&args[1], &args[2]);
    let model = Neural::load(Path::new("/work/main/target/test-models/all-MiniLM-L6-v2")).expect("model loads");
    let lists: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_slice(&std::fs::read(input).unwrap()).unwrap();
    std::fs::create_dir_all(out).unwrap();
    for (name, texts) in lists {
        let path = Path::new(out).join(format!("{name}.f32"));
        if path.exists() { eprintln!("skip {name}"); continue; }
        let mut bytes = Vec::with_capacity(texts.len() * NEURAL_DIMS * 4);
        let t0 = std::time::Instant::now();
        for chunk in texts.chunks(32) {
            for v in model.forward(chunk).unwrap() {
                assert_eq!(v.len(), NEURAL_DIMS);
                for x in v { bytes.extend_from_slice(&x.to_le_bytes()); }
            }
        }
        std::fs::write(&path, bytes).unwrap();
        eprintln!("{name}: {} texts in {:?}", texts.len(), t0.elapsed());
    }
}
