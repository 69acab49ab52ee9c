//! Hybrid ranking of knowledge-base notes: one query's BM25 hits and vector (cosine) hits fused
//! into one ordering.
//!
//! Why not plain reciprocal-rank fusion: on LoCoMo (7 long conversations, every turn a note) RRF
//! of BM25 and all-MiniLM-L6-v2 ranks *worse* than BM25 alone (recall@10 0.43 against 0.54),
//! because it throws away how far ahead the best hits are and gives a weak retriever's noise the
//! same say as a strong one's. What measurably works (see docs/research/locomo/REPORT.md, every parameter
//! chosen leave-one-conversation-out) is, per query, over the candidates only:
//!
//! 1. **score fusion**: each retriever's scores normalised over the candidates
//!    ([`Normalisation`]), then `base = w · bm25_norm + (1 − w) · cosine_norm`;
//! 2. **neighbour smoothing**: `+ a · max(base of the previous note, base of the next note)` in
//!    the same thread — an answer often sits next to the turn that matches the question (the
//!    question asked, the reply that answers it);
//! 3. **thread pooling**: `+ s · max(base over the candidates of the same thread)` — a thread
//!    with a strong hit is about the topic, so its other notes are likelier to be relevant too;
//! 4. **author cue**: `+ sp` when the query names the note's author (a word of the author's name
//!    appears as a word of the query).
//!
//! Inputs are only the candidate lists, never the whole corpus: production takes the top N
//! (N = 50 or 100 measured; same result within 0.01 of recall@10) from the BM25 index and from
//! the vector index, adds the ±1 neighbours (same thread, position ± 1) of every hit as
//! candidates — without them the neighbour term has nothing to lift, and recall@10 drops by
//! about 0.02–0.03 — and gives every candidate its cosine (the vectors are stored with the
//! notes, a dot product is cheap). A candidate without a BM25 score (not among the lexical hits)
//! counts as BM25 0; one without a cosine counts as the lowest cosine among the candidates.
//!
//! Pure: std + serde, no I/O, deterministic (ties: newer `created_at_ms`, then `id`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One candidate note for one query, as the retrievers and the note store give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: String,
    /// BM25 score from the lexical index; `None` when the note was not among its hits.
    pub bm25: Option<f32>,
    /// Cosine between the query's and the note's vectors; `None` when unknown.
    pub cosine: Option<f32>,
    /// The thread (conversation session, document) the note belongs to, if any.
    pub thread: Option<String>,
    /// The note's position within its thread (consecutive integers), if known.
    pub position: Option<i64>,
    /// Creation time; only a tie-break here (newer first).
    pub created_at_ms: i64,
    /// Who wrote the note (speaker, user, agent), for the author cue.
    pub author: Option<String>,
}

/// How each retriever's scores are mapped onto a common scale, per query, over the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalisation {
    /// `x / max`: keeps the ratio to the best hit, so a retriever whose best hit is only
    /// slightly ahead of the rest does not get an inflated spread.
    Max,
    /// `(x − min) / (max − min)`: spreads every retriever over [0, 1].
    MinMax,
}

/// How the neighbour term combines the previous and the next note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeighbourMode {
    /// The stronger of the two: an answer needs only one matching neighbour.
    Max,
    /// Their mean (a missing neighbour counts as 0).
    Mean,
}

/// The fusion's parameters. The defaults are the values chosen on LoCoMo with all-MiniLM-L6-v2
/// and tantivy-style BM25 (see REPORT.md for how each was chosen).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FusionParams {
    /// `w`: the BM25 share of the base score; the cosine gets `1 − w`.
    pub lexical_weight: f64,
    pub normalisation: Normalisation,
    /// `a`: weight of the neighbours' base score.
    pub neighbour_weight: f64,
    pub neighbour_mode: NeighbourMode,
    /// `s`: weight of the best base score in the note's thread.
    pub thread_weight: f64,
    /// `sp`: added when the query names the note's author.
    pub author_boost: f64,
}

impl Default for FusionParams {
    fn default() -> Self {
        Self {
            lexical_weight: 0.45,
            normalisation: Normalisation::Max,
            neighbour_weight: 0.5,
            neighbour_mode: NeighbourMode::Max,
            thread_weight: 0.5,
            author_boost: 0.3,
        }
    }
}

/// The parts of a fused score, for telemetry and debugging: `score = base + neighbour + thread
/// + author` (each already weighted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Components {
    pub bm25: Option<f32>,
    pub cosine: Option<f32>,
    pub bm25_norm: f64,
    pub cosine_norm: f64,
    pub base: f64,
    pub neighbour: f64,
    pub thread: f64,
    pub author: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub id: String,
    pub score: f64,
    pub components: Components,
    pub created_at_ms: i64,
}

/// Ranks one query's candidates, best first. Candidates sharing an `id` (a note found by both
/// retrievers) are merged first: each score taken from whichever copy has it.
pub fn rank(query: &str, candidates: Vec<Candidate>, params: &FusionParams) -> Vec<Ranked> {
    let cands = merge(candidates);
    if cands.is_empty() {
        return Vec::new();
    }
    // A note outside the lexical hits scored below every hit: 0 is the honest floor.
    let bm: Vec<f64> = cands.iter().map(|c| c.bm25.map_or(0.0, f64::from)).collect();
    // An unknown cosine is given the lowest known one, so it neither helps nor drags the scale.
    let known_min = cands.iter().filter_map(|c| c.cosine).map(f64::from).fold(f64::INFINITY, f64::min);
    let cs: Vec<f64> =
        cands.iter().map(|c| c.cosine.map_or(if known_min.is_finite() { known_min } else { 0.0 }, f64::from)).collect();
    let nb = normalise(&bm, params.normalisation);
    let nc = normalise(&cs, params.normalisation);
    let w = params.lexical_weight;
    let base: Vec<f64> = nb.iter().zip(&nc).map(|(b, c)| w * b + (1.0 - w) * c).collect();

    // (thread, position) -> candidate index, and the best base per thread.
    let mut at: HashMap<(&str, i64), usize> = HashMap::new();
    let mut thread_best: HashMap<&str, f64> = HashMap::new();
    for (i, c) in cands.iter().enumerate() {
        if let Some(t) = c.thread.as_deref() {
            if let Some(p) = c.position {
                at.insert((t, p), i);
            }
            let best = thread_best.entry(t).or_insert(f64::NEG_INFINITY);
            *best = best.max(base[i]);
        }
    }
    let query_words: Vec<String> = words(query);

    let mut out: Vec<Ranked> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let neighbour = match (c.thread.as_deref(), c.position) {
                (Some(t), Some(p)) => {
                    // A neighbour that is not a candidate contributes 0: its scores are unknown.
                    let prev = at.get(&(t, p - 1)).map_or(0.0, |&j| base[j]);
                    let next = at.get(&(t, p + 1)).map_or(0.0, |&j| base[j]);
                    let combined = match params.neighbour_mode {
                        NeighbourMode::Max => prev.max(next),
                        NeighbourMode::Mean => (prev + next) / 2.0,
                    };
                    params.neighbour_weight * combined
                }
                _ => 0.0,
            };
            // Floored at 0 so that a thread of weak candidates never pushes its notes down.
            let thread = c
                .thread
                .as_deref()
                .and_then(|t| thread_best.get(t))
                .map_or(0.0, |&best| params.thread_weight * best.max(0.0));
            let author = match c.author.as_deref() {
                Some(a) if names(&query_words, a) => params.author_boost,
                _ => 0.0,
            };
            let components = Components {
                bm25: c.bm25,
                cosine: c.cosine,
                bm25_norm: nb[i],
                cosine_norm: nc[i],
                base: base[i],
                neighbour,
                thread,
                author,
            };
            Ranked {
                id: c.id.clone(),
                score: base[i] + neighbour + thread + author,
                components,
                created_at_ms: c.created_at_ms,
            }
        })
        .collect();
    out.sort_by(|x, y| {
        y.score.total_cmp(&x.score).then(y.created_at_ms.cmp(&x.created_at_ms)).then_with(|| x.id.cmp(&y.id))
    });
    out
}

/// One entry per id, keeping every known score and field (first copy wins on conflicts).
fn merge(candidates: Vec<Candidate>) -> Vec<Candidate> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Candidate> = Vec::with_capacity(candidates.len());
    for c in candidates {
        match index.get(&c.id) {
            Some(&i) => {
                let m = &mut out[i];
                m.bm25 = m.bm25.or(c.bm25);
                m.cosine = m.cosine.or(c.cosine);
                m.thread = m.thread.take().or(c.thread);
                m.position = m.position.or(c.position);
                m.author = m.author.take().or(c.author);
            }
            None => {
                index.insert(c.id.clone(), out.len());
                out.push(c);
            }
        }
    }
    out
}

fn normalise(xs: &[f64], how: Normalisation) -> Vec<f64> {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    match how {
        // A non-positive best means no signal: everything 0 rather than a division blow-up.
        Normalisation::Max if max > 1e-12 => xs.iter().map(|x| x / max).collect(),
        Normalisation::MinMax if max - min > 1e-12 => xs.iter().map(|x| (x - min) / (max - min)).collect(),
        _ => vec![0.0; xs.len()],
    }
}

/// Lowercased alphanumeric runs: tantivy's default tokenizer (SimpleTokenizer + LowerCaser), so
/// the author cue sees the query the way the BM25 index does.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Whether the query names the author: a whole word of the author's name appears in the query
/// ("Melanie" matches "What did melanie paint?", not "Mel", so a short name does not match
/// inside longer words).
fn names(query_words: &[String], author: &str) -> bool {
    words(author).iter().any(|a| query_words.iter().any(|q| q == a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(
        id: &str,
        bm25: Option<f32>,
        cosine: Option<f32>,
        thread: Option<&str>,
        position: Option<i64>,
    ) -> Candidate {
        Candidate {
            id: id.to_owned(),
            bm25,
            cosine,
            thread: thread.map(str::to_owned),
            position,
            created_at_ms: 0,
            author: None,
        }
    }

    fn ids(r: &[Ranked]) -> Vec<&str> {
        r.iter().map(|x| x.id.as_str()).collect()
    }

    /// Only the base fusion: no structure terms.
    fn plain(w: f64, normalisation: Normalisation) -> FusionParams {
        FusionParams {
            lexical_weight: w,
            normalisation,
            neighbour_weight: 0.0,
            neighbour_mode: NeighbourMode::Max,
            thread_weight: 0.0,
            author_boost: 0.0,
        }
    }

    #[test]
    fn normalisation_table() {
        let cases: &[(&[f64], Normalisation, &[f64])] = &[
            (&[2.0, 1.0, 0.0], Normalisation::Max, &[1.0, 0.5, 0.0]),
            (&[2.0, 1.0, 0.0], Normalisation::MinMax, &[1.0, 0.5, 0.0]),
            (&[0.8, 0.6, 0.4], Normalisation::Max, &[1.0, 0.75, 0.5]),
            (&[0.8, 0.6, 0.4], Normalisation::MinMax, &[1.0, 0.5, 0.0]),
            // No signal: all zero instead of NaN.
            (&[0.0, 0.0], Normalisation::Max, &[0.0, 0.0]),
            (&[0.3, 0.3], Normalisation::MinMax, &[0.0, 0.0]),
            (&[], Normalisation::Max, &[]),
        ];
        for (xs, how, want) in cases {
            let got = normalise(xs, *how);
            assert_eq!(got.len(), want.len(), "{xs:?} {how:?}");
            for (g, w) in got.iter().zip(want.iter()) {
                assert!((g - w).abs() < 1e-9, "{xs:?} {how:?}: got {got:?}, want {want:?}");
            }
        }
    }

    #[test]
    fn lexical_weight_moves_the_order_between_the_retrievers() {
        // "lex" is BM25's best, "vec" the vectors' best.
        let cands = || {
            vec![
                cand("lex", Some(10.0), Some(0.30), None, None),
                cand("vec", Some(2.0), Some(0.70), None, None),
                cand("none", None, Some(0.10), None, None),
            ]
        };
        let cases: &[(f64, Normalisation, &[&str])] = &[
            (1.0, Normalisation::Max, &["lex", "vec", "none"]),
            (0.0, Normalisation::Max, &["vec", "lex", "none"]),
            (0.0, Normalisation::MinMax, &["vec", "lex", "none"]),
            // lex: 0.7·1 + 0.3·(0.3/0.7) = 0.83 ; vec: 0.7·0.2 + 0.3·1 = 0.44
            (0.7, Normalisation::Max, &["lex", "vec", "none"]),
            // lex: 0.3·1 + 0.7·(0.3/0.7) = 0.6 ; vec: 0.3·0.2 + 0.7·1 = 0.76
            (0.3, Normalisation::Max, &["vec", "lex", "none"]),
        ];
        for (w, how, want) in cases {
            let got = rank("q", cands(), &plain(*w, *how));
            assert_eq!(ids(&got), *want, "w={w} {how:?}");
        }
    }

    #[test]
    fn missing_scores_count_as_the_floor() {
        let got = rank(
            "q",
            vec![
                cand("a", Some(4.0), None, None, None),
                cand("b", None, Some(0.9), None, None),
                cand("c", None, Some(0.3), None, None),
            ],
            &plain(0.5, Normalisation::MinMax),
        );
        let by_id: HashMap<&str, &Components> = got.iter().map(|r| (r.id.as_str(), &r.components)).collect();
        // a: no cosine → the lowest known (0.3) → normalised 0; b, c: no BM25 → 0.
        assert_eq!(by_id["a"].cosine_norm, 0.0);
        assert_eq!(by_id["a"].bm25_norm, 1.0);
        assert_eq!(by_id["b"].bm25_norm, 0.0);
        assert!((by_id["b"].cosine_norm - 1.0).abs() < 1e-9);
        assert_eq!(by_id["c"].base, 0.0);
    }

    #[test]
    fn neighbour_smoothing_lifts_the_reply_next_to_a_strong_match() {
        // "answer" matches nothing itself but follows the strong "question" turn; "stray" has the
        // same own score in another thread with no strong neighbour.
        let cands = || {
            vec![
                cand("question", Some(10.0), Some(0.8), Some("t1"), Some(4)),
                cand("answer", Some(1.0), Some(0.4), Some("t1"), Some(5)),
                cand("stray", Some(1.0), Some(0.4), Some("t2"), Some(9)),
                cand("far", Some(1.0), Some(0.4), Some("t1"), Some(7)),
            ]
        };
        let mut p = plain(0.5, Normalisation::Max);
        let flat = rank("q", cands(), &p);
        assert_eq!(flat[1].score, flat[2].score, "without smoothing the three weak notes tie");
        p.neighbour_weight = 0.5;
        let got = rank("q", cands(), &p);
        assert_eq!(got[0].id, "question");
        assert_eq!(got[1].id, "answer");
        let answer = &got[1].components;
        assert!((answer.neighbour - 0.5 * got[0].components.base).abs() < 1e-9);
        // Position 7 is two away from 4: no lift.
        let far = got.iter().find(|r| r.id == "far").unwrap();
        assert_eq!(far.components.neighbour, 0.0, "no candidate at 6 or 8");
    }

    #[test]
    fn neighbour_mode_table() {
        // Note "m" sits between a strong (base 1.0) and an absent neighbour.
        let cands = vec![
            cand("s", Some(1.0), Some(1.0), Some("t"), Some(0)),
            cand("m", Some(0.0), Some(0.0), Some("t"), Some(1)),
        ];
        let cases = [(NeighbourMode::Max, 0.5), (NeighbourMode::Mean, 0.25)];
        for (mode, want) in cases {
            let p = FusionParams { neighbour_weight: 0.5, neighbour_mode: mode, ..plain(0.5, Normalisation::Max) };
            let got = rank("q", cands.clone(), &p);
            let m = got.iter().find(|r| r.id == "m").unwrap();
            assert!((m.components.neighbour - want).abs() < 1e-9, "{mode:?}: {}", m.components.neighbour);
        }
    }

    #[test]
    fn thread_pooling_prefers_notes_of_the_thread_with_the_strong_hit() {
        let cands = vec![
            cand("hit", Some(10.0), Some(0.9), Some("t1"), Some(0)),
            cand("same-thread", Some(1.0), Some(0.3), Some("t1"), Some(20)),
            cand("other-thread", Some(1.0), Some(0.3), Some("t2"), Some(20)),
            cand("no-thread", Some(1.0), Some(0.3), None, None),
        ];
        let p = FusionParams { thread_weight: 0.5, ..plain(0.5, Normalisation::Max) };
        let got = rank("q", cands, &p);
        assert_eq!(ids(&got)[..2], ["hit", "same-thread"]);
        let get = |id: &str| got.iter().find(|r| r.id == id).unwrap().components;
        assert!((get("same-thread").thread - 0.5 * get("hit").base).abs() < 1e-9);
        assert!((get("other-thread").thread - 0.5 * get("other-thread").base).abs() < 1e-9, "pools its own score");
        assert_eq!(get("no-thread").thread, 0.0);
    }

    #[test]
    fn author_cue_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("What did Melanie paint?", "Melanie", true),
            ("what did melanie paint", "Melanie", true),
            ("When did Caroline's friend visit?", "Caroline", true), // apostrophe splits the word
            ("What did Mel paint?", "Melanie", false),               // whole words only
            ("What did Melanies paint?", "Melanie", false),
            ("Where does Jon Smith work?", "Smith", true),
            ("Where does Jon work?", "Jon Smith", true), // any word of the name
            ("Where does Gina work?", "Jon", false),
        ];
        for (query, author, want) in cases {
            assert_eq!(names(&words(query), author), *want, "{query:?} / {author:?}");
        }
    }

    #[test]
    fn author_boost_applies_only_to_the_named_authors_notes() {
        let mut a = cand("by-jon", Some(1.0), Some(0.5), None, None);
        a.author = Some("Jon".into());
        let mut b = cand("by-gina", Some(1.0), Some(0.5), None, None);
        b.author = Some("Gina".into());
        let p = FusionParams { author_boost: 0.3, ..plain(0.5, Normalisation::Max) };
        let got = rank("Where did Jon go?", vec![b, a], &p);
        assert_eq!(ids(&got), ["by-jon", "by-gina"]);
        assert_eq!(got[0].components.author, 0.3);
        assert_eq!(got[1].components.author, 0.0);
    }

    #[test]
    fn duplicates_from_both_retrievers_are_merged() {
        let got = rank(
            "q",
            vec![
                cand("x", Some(5.0), None, Some("t"), Some(3)),
                cand("y", Some(1.0), None, None, None),
                cand("x", None, Some(0.7), None, None),
                cand("y", None, Some(0.2), None, None),
            ],
            &FusionParams::default(),
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, "x");
        assert_eq!((got[0].components.bm25, got[0].components.cosine), (Some(5.0), Some(0.7)));
    }

    #[test]
    fn score_is_the_sum_of_its_components_and_output_is_sorted() {
        let mut cands = Vec::new();
        for i in 0..30i64 {
            let mut c = cand(
                &format!("n{i}"),
                if i % 3 == 0 { None } else { Some((i * 7 % 11) as f32) },
                if i % 5 == 0 { None } else { Some(((i * 13 % 17) as f32) / 17.0) },
                Some(if i < 15 { "a" } else { "b" }),
                Some(i % 15),
            );
            c.author = Some(if i % 2 == 0 { "Ann".into() } else { "Bob".into() });
            cands.push(c);
        }
        let got = rank("Did Ann call?", cands, &FusionParams::default());
        assert_eq!(got.len(), 30);
        for r in &got {
            let c = r.components;
            assert!((r.score - (c.base + c.neighbour + c.thread + c.author)).abs() < 1e-9, "{r:?}");
            assert!(c.score_parts_finite());
        }
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn ties_break_by_newer_then_id() {
        let mut old = cand("b-old", Some(1.0), Some(0.5), None, None);
        old.created_at_ms = 1;
        let mut new = cand("c-new", Some(1.0), Some(0.5), None, None);
        new.created_at_ms = 2;
        let mut old2 = cand("a-old", Some(1.0), Some(0.5), None, None);
        old2.created_at_ms = 1;
        let got = rank("q", vec![old, new, old2], &FusionParams::default());
        assert_eq!(ids(&got), ["c-new", "a-old", "b-old"]);
    }

    #[test]
    fn empty_and_signal_free_inputs() {
        assert!(rank("q", Vec::new(), &FusionParams::default()).is_empty());
        let got = rank("q", vec![cand("a", None, None, None, None)], &FusionParams::default());
        assert_eq!(got[0].score, 0.0);
    }

    #[test]
    fn params_defaults_and_serde() {
        let p: FusionParams = serde_json::from_str(r#"{"lexical_weight": 0.6}"#).unwrap();
        assert_eq!(p, FusionParams { lexical_weight: 0.6, ..FusionParams::default() });
        let back: FusionParams = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    impl Components {
        fn score_parts_finite(&self) -> bool {
            [self.bm25_norm, self.cosine_norm, self.base, self.neighbour, self.thread, self.author]
                .iter()
                .all(|x| x.is_finite())
        }
    }
}
