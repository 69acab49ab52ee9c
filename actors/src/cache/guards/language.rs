//! The reply language: asked for ("answer in Spanish") or written in.

use super::*;

pub(super) const LANGUAGES: &[&str] = &[
    "english",
    "spanish",
    "french",
    "german",
    "italian",
    "portuguese",
    "dutch",
    "russian",
    "chinese",
    "mandarin",
    "cantonese",
    "japanese",
    "korean",
    "hindi",
    "bengali",
    "arabic",
    "turkish",
    "swahili",
    "polish",
    "ukrainian",
    "greek",
    "hebrew",
    "swedish",
    "norwegian",
    "danish",
    "finnish",
    "czech",
    "hungarian",
    "romanian",
    "vietnamese",
    "thai",
    "indonesian",
    "malay",
    "tagalog",
    "persian",
    "farsi",
    "urdu",
    "tamil",
    "punjabi",
    "latin",
    "esperanto",
];

pub(super) fn reply_languages(toks: &[Tok]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let Some(&lang) = LANGUAGES.iter().find(|l| **l == t.low) else { continue };
        let prev = toks[..i].iter().rev().find(|p| p.kind == Kind::Word);
        // "in Spanish", "into German", "to English": the language of the answer, unlike
        // "French Revolution" or "Spanish phrases" (left to the entity guard).
        if prev.is_some_and(|p| matches!(p.low.as_str(), "in" | "into" | "to")) {
            out.push(lang);
        }
    }
    out
}

/// A cheap guess at the language a prompt is written in: its script, or for Latin script the
/// language with clearly the most stopwords. `None` when unsure.
pub(super) fn guess_language(text: &str) -> Option<&'static str> {
    let (mut latin, mut other) = (0usize, [0usize; 9]);
    for c in text.chars().take(2000) {
        let idx = match c as u32 {
            0x0041..=0x024F if c.is_alphabetic() => {
                latin += 1;
                continue;
            }
            0x0400..=0x04FF => 0,
            0x0370..=0x03FF => 1,
            0x0590..=0x05FF => 2,
            0x0600..=0x06FF => 3,
            0x0900..=0x097F => 4,
            0x0E00..=0x0E7F => 5,
            0x3040..=0x30FF => 6,
            0xAC00..=0xD7AF | 0x1100..=0x11FF => 7,
            0x4E00..=0x9FFF | 0x3400..=0x4DBF => 8,
            _ => continue,
        };
        other[idx] += 1;
    }
    let (best, &n) = other.iter().enumerate().max_by_key(|x| x.1)?;
    if n > latin {
        // Kana with kanji is Japanese, kanji alone Chinese.
        return Some(match best {
            0 => "cyrillic",
            1 => "el",
            2 => "he",
            3 => "ar",
            4 => "hi",
            5 => "th",
            6 => "ja",
            7 => "ko",
            _ if other[6] > 0 => "ja",
            _ => "zh",
        });
    }
    const STOP: &[(&str, &[&str])] = &[
        (
            "en",
            &[
                "the", "is", "what", "how", "do", "does", "i", "you", "of", "to", "and", "in", "for", "my", "can",
                "with", "it", "why", "when", "are", "which", "who", "this", "that", "should", "me", "on", "be", "a",
                "an", "if", "from", "your", "please", "there",
            ],
        ),
        (
            "es",
            &[
                "el", "la", "los", "las", "es", "una", "un", "que", "qué", "cómo", "cuál", "por", "con", "se", "y",
                "del", "mi", "hace", "hacer", "está", "para", "puedo", "de",
            ],
        ),
        (
            "fr",
            &[
                "le", "la", "les", "des", "est", "une", "un", "je", "et", "du", "pour", "comment", "quel", "quelle",
                "puis", "mon", "ma", "mes", "il", "vous", "te", "pas", "ce", "qui", "en", "de", "s'il",
            ],
        ),
        (
            "de",
            &[
                "der", "die", "das", "und", "ist", "ein", "eine", "wie", "ich", "nicht", "es", "mit", "zu", "wenn",
                "uhr", "sie", "bitte", "mein", "für", "auf", "bedeutet", "deutsche", "wort", "spät",
            ],
        ),
        (
            "pt",
            &[
                "o", "os", "um", "uma", "é", "que", "para", "com", "do", "da", "em", "qual", "como", "não", "melhor",
                "meu", "minha", "você", "de",
            ],
        ),
        ("it", &["il", "lo", "gli", "è", "di", "che", "per", "come", "della", "sono", "mi", "una", "un"]),
        ("nl", &["het", "een", "van", "hoe", "wat", "ik", "niet", "voor", "op", "en", "de", "is"]),
    ];
    static INDEX: std::sync::OnceLock<std::collections::HashMap<&'static str, u8>> = std::sync::OnceLock::new();
    let index = INDEX.get_or_init(|| {
        let mut map = std::collections::HashMap::new();
        for (i, (_, list)) in STOP.iter().enumerate() {
            for w in *list {
                *map.entry(*w).or_insert(0u8) |= 1 << i;
            }
        }
        map
    });
    let mut counts = [0usize; STOP.len()];
    let lower = text.to_lowercase();
    let words = lower.split(|c: char| !(c.is_alphanumeric() || c == '\'')).filter(|w| !w.is_empty()).take(400);
    for w in words {
        let bits = index.get(w).copied().unwrap_or(0);
        for (i, c) in counts.iter_mut().enumerate() {
            *c += usize::from(bits >> i & 1);
        }
    }
    let mut scores: Vec<(usize, &'static str)> = counts.iter().zip(STOP).map(|(c, (lang, _))| (*c, *lang)).collect();
    scores.sort_by_key(|x| std::cmp::Reverse(x.0));
    let (top, lang) = scores[0];
    let second = scores[1].0;
    (top >= 2 && top >= second + 2 && top * 2 > second * 3).then_some(lang)
}
