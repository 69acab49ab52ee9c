//! The lexical fallback: hashed word and character n-grams into a fixed dimension,
//! L2-normalised. Deterministic (its own FNV-1a hash, so the same text gives the same vector
//! in every build and process) and instant, but it only sees shared words: it stands in only
//! when the neural model is absent, and says so.

use super::{EmbedderId, EmbedderKind, LocalModel};

pub const LEXICAL_DIMS: usize = 384;
pub const LEXICAL_MODEL: &str = "hashed-ngrams-v1";

pub struct Lexical;

impl LocalModel for Lexical {
    fn id(&self) -> EmbedderId {
        EmbedderId { kind: EmbedderKind::Lexical, model: LEXICAL_MODEL.to_owned(), dims: LEXICAL_DIMS }
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        Ok(texts.iter().map(|t| embed_one(t)).collect())
    }
}

/// FNV-1a, 64 bits: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        // A separator between parts, so ("ab", "c") and ("a", "bc") differ.
        let bytes = part.as_bytes().iter().chain(if i > 0 { &[0x1f][..] } else { &[][..] });
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Adds one feature: its hash picks the dimension and (one more bit) the sign, so features
/// that collide tend to cancel rather than pile up.
fn add(vector: &mut [f32], hash: u64, weight: f32) {
    let index = (hash % LEXICAL_DIMS as u64) as usize;
    let sign = if (hash >> 63) & 1 == 0 { 1.0 } else { -1.0 };
    vector[index] += sign * weight;
}

pub fn embed_one(text: &str) -> Vec<f32> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let mut vector = vec![0f32; LEXICAL_DIMS];
    for word in &words {
        add(&mut vector, fnv1a(&["w", word]), 1.0);
        // Character trigrams of the word with its boundaries: "password" and "passwords" share most.
        let chars: Vec<char> = format!("<{word}>").chars().collect();
        for gram in chars.windows(3) {
            let gram: String = gram.iter().collect();
            add(&mut vector, fnv1a(&["c", &gram]), 0.25);
        }
    }
    for pair in words.windows(2) {
        add(&mut vector, fnv1a(&["b", pair[0], pair[1]]), 0.5);
    }
    super::l2_normalise(&mut vector);
    vector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_vector_and_unit_length() {
        let a = embed_one("How do I reset my password?");
        assert_eq!(a, embed_one("How do I reset my password?"));
        assert_eq!(a.len(), LEXICAL_DIMS);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn shared_words_score_higher_than_none() {
        let a = embed_one("reset my password");
        let b = embed_one("I need to reset the password");
        let c = embed_one("weather in Paris tomorrow");
        assert!(super::super::cosine(&a, &b) > super::super::cosine(&a, &c));
    }

    #[test]
    fn empty_text_is_the_zero_vector_not_nan() {
        let v = embed_one("  ");
        assert!(v.iter().all(|x| *x == 0.0));
    }

    /// Pinned: a change to the hashing would silently make stored vectors incomparable.
    #[test]
    fn the_hash_is_stable() {
        assert_eq!(fnv1a(&["w", "password"]), fnv1a(&["w", "password"]));
        assert_eq!(fnv1a(&["a"]), 0xaf63_dc4c_8601_ec8c);
    }
}
