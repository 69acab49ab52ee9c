//! Guards for the semantic cache: whether two prompts that embed close together still ask
//! different questions.
//!
//! A sentence embedding scores "convert 30 USD to EUR" and "convert 50 USD to EUR" as nearly
//! the same sentence, and so they are — but not the same question, and serving one's answer
//! for the other is a wrong answer that looks right. Similarity cannot see the one token that
//! changes the answer: a number, a unit, a quoted string, a flipped direction, a negation, an
//! antonym, a requested format or language. These guards look at exactly those tokens, and
//! veto a cache hit when they disagree.
//!
//! The guards are deliberately lexical and cheap (hand-written tokenising, small tables): they
//! run on every candidate hit, so a prompt's features are computed once
//! ([`PromptFeatures::of`]) and compared many times ([`disagreement`]). They lean towards
//! vetoing: a vetoed paraphrase costs one model call, a wrong hit costs a wrong answer. They
//! only look at the prompt text; the system prompt and tools are matched exactly elsewhere.

mod facts;
mod language;
mod poles;
mod tokens;
mod wording;

use self::{facts::*, language::*, poles::*, tokens::*, wording::*};

/// Why two prompts that embed close together still ask different questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disagreement {
    /// Different numbers ("30" vs "50", "three" vs "ten", "Python 2" vs "Python 3").
    Numbers,
    /// Different units or currencies (km vs miles, USD vs EUR, °C vs °F).
    Units,
    /// A quoted string of one is not in the other.
    Quoted,
    /// A code span or code-looking token of one is not in the other.
    Code,
    /// A URL, e-mail address, domain or path of one is not in the other.
    Urls,
    /// Different dates, months, weekdays or relative days.
    Dates,
    /// One is negated where the other is not.
    Negation,
    /// A name, acronym or capitalised term of one is not in the other.
    Entities,
    /// The same terms in the opposite order or direction ("list to tuple" vs "tuple to list").
    Direction,
    /// Different quantifiers or positions (first/last, all/any, minimum/maximum).
    Quantifier,
    /// Opposite comparatives or changes (larger/smaller, increase/decrease, cheaper/dearer).
    Comparative,
    /// A different aspect or action on the same subject (pros/cons, causes/symptoms,
    /// install/uninstall, who/when).
    Aspect,
    /// A different output format (JSON/YAML, table/list, one sentence/in detail).
    Format,
    /// A different audience or platform (beginners/experts, Windows/Linux, child/adult).
    Scope,
    /// A different reply language, requested or written in.
    Language,
    /// One content word swapped for another that is not a known variant of it.
    Wording,
    /// The prompts differ past the length the guards read.
    Overflow,
}

/// Characters of a prompt the guards analyse; the rest is compared by hash only, so a huge
/// prompt costs no more than this much work.
const MAX_CHARS: usize = 8192;
/// Content words past which the word-by-word alignment is skipped (it is quadratic).
const MAX_ALIGN: usize = 160;

/// The features of one prompt that must agree; computed once per prompt, cheap to compare.
#[derive(Debug, Clone, Default)]
pub struct PromptFeatures {
    numbers: Vec<String>,
    units: Vec<&'static str>,
    /// Units tied to a number or a conversion target ("in miles"): these must be in the other.
    anchored_units: Vec<&'static str>,
    quoted: Vec<String>,
    code: Vec<String>,
    links: Vec<String>,
    dates: Vec<String>,
    negations: u32,
    /// Each entity with its aliases (the acronym of a camel-case name: "JavaScript", "js").
    entities: Vec<Vec<String>>,
    /// (group, pole) of every antonym/alternative group word, see [`POLES`].
    poles: Vec<(u8, u8)>,
    /// Reply languages asked for ("in Spanish", "into German").
    reply_languages: Vec<&'static str>,
    /// The language the prompt is written in, when the guess is confident.
    written_language: Option<&'static str>,
    /// Question words opening a sentence (who/when/where/why).
    question_words: Vec<&'static str>,
    /// (before, after) content-word pairs across a directional marker ("to", "from", "into").
    directed: Vec<(String, String)>,
    /// Every word (lowercase, folded) in order, for permutation and containment checks.
    words: Vec<String>,
    /// The parts of camel-case words ("JavaScript": "java", "script").
    camel: Vec<String>,
    /// Content words in order, for the substitution check.
    content: Vec<Content>,
    /// Lowercased whole text with whitespace collapsed, for containment of links and quotes.
    flat: String,
    /// Raw text with whitespace collapsed, for containment of code (case matters there).
    raw: String,
    /// Hash of whatever follows the analysed prefix.
    overflow: Option<u64>,
}

#[derive(Debug, Clone)]
struct Content {
    /// Plural-stripped form, what the alignment compares.
    key: String,
    low: String,
    cap: bool,
    /// Numbers, units, dates, links, code: aligned like words, but left to their own guards.
    guarded: bool,
    poles: Vec<(u8, u8)>,
    /// Bit i: the word belongs to [`SYNONYMS`]`[i]`.
    synonyms: u64,
    /// The initials of a camel-case name ("JavaScript": "js").
    alias: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Number,
    Link,
    Code,
    Punct,
}

#[derive(Debug, Clone)]
struct Tok {
    raw: String,
    /// Lowercase, accents folded, possessive dropped.
    low: String,
    kind: Kind,
    cap: bool,
    sentence_start: bool,
    /// Written right after the previous token, without a space ("10-year", "3x").
    glued: bool,
}

impl PromptFeatures {
    /// Extracts the features of one prompt (normally its last user message).
    pub fn of(text: &str) -> Self {
        let (text, overflow) = match text.char_indices().nth(MAX_CHARS) {
            Some((cut, _)) => (&text[..cut], Some(fnv(&text.as_bytes()[cut..]))),
            None => (text, None),
        };
        let mut f = PromptFeatures { overflow, ..Default::default() };
        f.raw = collapse_ws(text);
        f.flat = f.raw.to_lowercase();
        f.written_language = guess_language(text);
        let (segments, code_spans) = split_code(text);
        f.code = code_spans;
        f.quoted =
            quoted_spans(&segments).into_iter().map(|q| words_of(&q).join(" ")).filter(|q| !q.is_empty()).collect();
        let toks = tokenize(&segments);
        f.collect(&toks);
        f
    }

    fn collect(&mut self, toks: &[Tok]) {
        for t in toks {
            match t.kind {
                Kind::Link => self.links.push(t.low.clone()),
                Kind::Code if t.raw.len() > 1 => self.code.push(t.raw.clone()),
                _ => {}
            }
        }
        self.numbers = numbers(toks);
        let (units, anchored) = units(toks);
        self.units = units;
        self.anchored_units = anchored;
        self.dates = dates(toks);
        self.negations = negations(toks);
        self.entities = entities(toks);
        let (content, poles) = content_and_poles(toks);
        self.content = content;
        self.poles = poles;
        self.reply_languages = reply_languages(toks);
        self.question_words = question_words(toks);
        self.directed = directed_pairs(toks);
        self.words = toks.iter().filter(|t| t.kind != Kind::Punct).map(|t| t.low.clone()).collect();
        self.camel = toks
            .iter()
            .filter(|t| t.kind == Kind::Word && t.cap)
            .map(|t| camel_parts(&t.raw))
            .filter(|p| p.len() > 1)
            .flatten()
            .collect();
        for v in [&mut self.numbers, &mut self.links, &mut self.dates] {
            v.sort();
            v.dedup();
        }
        self.entities.sort();
        self.entities.dedup();
        self.units.sort_unstable();
        self.units.dedup();
        self.anchored_units.sort_unstable();
        self.anchored_units.dedup();
        self.poles.sort_unstable();
        self.poles.dedup();
        self.reply_languages.sort_unstable();
        self.reply_languages.dedup();
        self.question_words.sort_unstable();
        self.question_words.dedup();
    }
}

/// `None` when nothing the guards look at differs between the two prompts.
pub fn disagreement(a: &PromptFeatures, b: &PromptFeatures) -> Option<Disagreement> {
    use Disagreement as D;
    if a.overflow != b.overflow {
        return Some(D::Overflow);
    }
    if let (Some(x), Some(y)) = (a.written_language, b.written_language) {
        if x != y {
            return Some(D::Language);
        }
    }
    if a.reply_languages != b.reply_languages {
        return Some(D::Language);
    }
    if !contained_all(&a.links, &b.flat) || !contained_all(&b.links, &a.flat) {
        return Some(D::Urls);
    }
    if !contained_all(&a.code, &b.raw) || !contained_all(&b.code, &a.raw) {
        return Some(D::Code);
    }
    let (fa, fb) = (words_of(&a.flat).join(" "), words_of(&b.flat).join(" "));
    if !contained_all(&a.quoted, &fb) || !contained_all(&b.quoted, &fa) {
        return Some(D::Quoted);
    }
    if a.numbers != b.numbers {
        return Some(D::Numbers);
    }
    if units_differ(a, b) {
        return Some(D::Units);
    }
    if a.dates != b.dates {
        return Some(D::Dates);
    }
    if a.negations != b.negations {
        return Some(D::Negation);
    }
    if let Some(d) = poles_differ(&a.poles, &b.poles) {
        return Some(d);
    }
    if !a.question_words.is_empty()
        && !b.question_words.is_empty()
        && !a.question_words.iter().all(|w| b.question_words.contains(w))
        && !b.question_words.iter().all(|w| a.question_words.contains(w))
    {
        return Some(D::Aspect);
    }
    if reversed(a, b) {
        return Some(D::Direction);
    }
    if !entities_contained(a, b) || !entities_contained(b, a) {
        return Some(D::Entities);
    }
    substitution(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Disagreement as D;

    fn check(a: &str, b: &str) -> Option<Disagreement> {
        let (fa, fb) = (PromptFeatures::of(a), PromptFeatures::of(b));
        let d = disagreement(&fa, &fb);
        let back = disagreement(&fb, &fa);
        assert_eq!(d.is_some(), back.is_some(), "asymmetric: {a:?} / {b:?}: {d:?} vs {back:?}");
        d
    }

    #[test]
    fn near_misses_disagree() {
        let cases: &[(&str, &str, Disagreement)] = &[
            ("Convert 30 USD to EUR.", "Convert 50 USD to EUR.", D::Numbers),
            ("Give me three tips for sleeping better.", "Give me ten tips for sleeping better.", D::Numbers),
            ("Plan a party for a 10-year-old.", "Plan a party for a 7-year-old.", D::Numbers),
            ("How much is 1,000 yen?", "How much is 1,500 yen?", D::Numbers),
            ("How do I print in Python 2?", "How do I print in Python 3?", D::Numbers),
            ("Who won World War II?", "Who won World War I?", D::Numbers),
            ("How many kilometers is a marathon?", "How many miles is a marathon?", D::Units),
            ("Convert 20 USD to EUR.", "Convert 20 USD to GBP.", D::Units),
            ("Bake it at 180 °C for how long?", "Bake it at 180 °F for how long?", D::Units),
            ("Translate 'good morning' into French.", "Translate 'good night' into French.", D::Quoted),
            ("What does “carpe diem” mean?", "What does “carpe noctem” mean?", D::Quoted),
            ("What does `git reset --soft` do?", "What does `git reset --hard` do?", D::Code),
            ("What does sorted(xs) return?", "What does reversed(xs) return?", D::Code),
            ("Summarize https://example.com/a for me.", "Summarize https://example.com/b for me.", D::Urls),
            ("Email bob@example.com a summary.", "Email alice@example.com a summary.", D::Urls),
            ("Redirect /old-page to /new-page.", "Redirect /old-page to /home.", D::Urls),
            ("Is the museum open on Mondays?", "Is the museum open on Tuesdays?", D::Dates),
            ("What's the weather tomorrow?", "What's the weather today?", D::Dates),
            ("What happened in May 2020?", "What happened in June 2020?", D::Dates),
            ("Which foods should I eat with the flu?", "Which foods should I not eat with the flu?", D::Negation),
            ("Why does my component re-render?", "Why doesn't my component re-render?", D::Negation),
            ("A pancake recipe with eggs.", "A pancake recipe without eggs.", D::Negation),
            ("Run the container as root.", "Run the container as a non-root user.", D::Negation),
            ("What foods are high in vitamin D?", "What foods are high in vitamin C?", D::Entities),
            ("Explain Kant's moral philosophy.", "Explain Hume's moral philosophy.", D::Entities),
            ("How do I deploy a Flask app to Heroku?", "How do I deploy a Django app to Heroku?", D::Entities),
            ("How do I convert a list to a tuple?", "How do I convert a tuple to a list?", D::Direction),
            ("Flights from New York to London", "Flights from London to New York", D::Direction),
            ("If A depends on B, what deploys first?", "If B depends on A, what deploys first?", D::Direction),
            (
                "Mistakes English speakers make learning French",
                "Mistakes French speakers make learning English",
                D::Direction,
            ),
            ("What is the largest planet?", "What is the smallest planet?", D::Comparative),
            ("Is a bus cheaper than a train?", "Is a bus more expensive than a train?", D::Comparative),
            ("How do I increase the font size?", "How do I decrease the font size?", D::Comparative),
            ("Get the first element of a list.", "Get the last element of a list.", D::Quantifier),
            ("What is the minimum age to vote?", "What is the maximum age to vote?", D::Quantifier),
            ("Check if all values are NaN.", "Check if any values are NaN.", D::Quantifier),
            ("Customers with at least one order", "Customers with exactly one order", D::Quantifier),
            ("What are the pros of remote work?", "What are the cons of remote work?", D::Aspect),
            ("How do I install Docker?", "How do I uninstall Docker?", D::Aspect),
            ("What are the symptoms of flu?", "What are the causes of flu?", D::Aspect),
            ("Who designed the Eiffel Tower?", "When was the Eiffel Tower designed?", D::Aspect),
            ("List the planets as JSON.", "List the planets as YAML.", D::Format),
            ("Explain DNS in one sentence.", "Explain DNS in detail.", D::Format),
            ("Compare the three in a table.", "Compare the three as a bulleted list.", D::Format),
            ("Explain Kubernetes for beginners.", "Explain Kubernetes for experts.", D::Scope),
            ("Vaccines an adult needs", "Vaccines a newborn needs", D::Scope),
            ("Explain closures, and answer in Spanish.", "Explain closures, and answer in French.", D::Language),
            ("Write a birthday message.", "Write a birthday message in Italian.", D::Language),
            ("What is the capital of Australia?", "¿Cuál es la capital de Australia?", D::Language),
            (
                "How do I configure a firewall for a home network?",
                "How do I configure a firewall for an enterprise network?",
                D::Wording,
            ),
            ("What is the capital of Japan?", "What is the currency of Japan?", D::Wording),
        ];
        let wrong: Vec<_> = cases
            .iter()
            .map(|(a, b, want)| (a, b, want, check(a, b)))
            .filter(|(_, _, want, got)| *got != Some(**want))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn paraphrases_agree() {
        let cases: &[(&str, &str)] = &[
            ("How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
            (
                "How can I read a CSV file into a pandas DataFrame?",
                "Tell me how to load a CSV file into a pandas DataFrame.",
            ),
            (
                "What is the difference between a list and a tuple in Python?",
                "Explain how Python lists differ from tuples.",
            ),
            ("How does X differ from Y?", "How does Y differ from X?"),
            ("What is the difference between TCP and UDP?", "What is the difference between UDP and TCP?"),
            ("What does the `yield` keyword do in Python?", "Explain what the yield keyword does in Python."),
            ("Why does Rust not have a garbage collector?", "Why doesn't Rust use a garbage collector?"),
            ("How do I cook rice without a rice cooker?", "How do I cook rice when I don't have a rice cooker?"),
            ("Convert 30 USD to EUR.", "How much is 30 USD in EUR?"),
            ("Recommend three books about habits.", "Can you recommend 3 books on habits?"),
            ("Give me 5 ideas for a 10-year-old's party.", "Suggest 5 party ideas for a 10 year old."),
            ("Explain recursion like I'm five.", "Explain recursion to me as if I were five years old."),
            ("When did World War II end?", "When did the Second World War end?"),
            ("Who was the first emperor of China?", "Who was China's first emperor?"),
            ("How do I debounce a function in JavaScript?", "Show me how to debounce a function in JS."),
            ("What is the least common multiple of 12 and 18?", "Find the LCM of 12 and 18."),
            ("How do I make my résumé stand out?", "How can I make my resume stand out?"),
            ("How do I make a pie chart in Excel?", "How can I make a pie chart in Exel?"),
            ("How do I enable two-factor authentication?", "Tell me how to turn on two-factor authentication."),
            ("How do I undo the last git commit?", "How can I undo my most recent git commit?"),
            (
                "How do I check if a key exists in a Python dictionary?",
                "how can i check whether a key is present in a python dict?",
            ),
            ("What is the tallest mountain in Africa?", "Which is the highest mountain in Africa?"),
            ("How do I install Rust on macOS?", "What are the steps to install Rust on a Mac?"),
            (
                "Summarize the plot of 'Hamlet' in a few sentences.",
                "In a few sentences, summarize the plot of 'Hamlet'.",
            ),
            ("How do I find duplicate rows in a SQL table?", "What's a SQL query to detect duplicate rows in a table?"),
        ];
        let wrong: Vec<_> =
            cases.iter().map(|(a, b)| (a, b, check(a, b))).filter(|(_, _, got)| got.is_some()).collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn apostrophes_are_not_quotes() {
        let f = PromptFeatures::of("What's Kant's view, and isn't it 'odd'? Users' data.");
        assert_eq!(f.quoted, vec!["odd".to_string()]);
        assert_eq!(f.negations, 1);
        assert_eq!(f.entities, vec![vec!["kant".to_string()]]);
    }

    #[test]
    fn number_words_and_separators() {
        assert_eq!(
            PromptFeatures::of("twenty-one, three hundred, 1,000 and 2.50 and half").numbers,
            ["0.5", "1000", "2.5", "21", "300"]
        );
        // A lone "one" and "1" are "a": not a number to compare.
        assert_eq!(check("Lose one pound a week", "Lose 1 pound a week"), None);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let long = "é😀`'\"“‘ ".repeat(5000);
        let inputs = [
            "",
            " ",
            "'",
            "`",
            "```",
            "``unclosed",
            "\"",
            "'a",
            "a'",
            "’’’",
            "1,,2..3",
            "9999999999999999999999999999 million",
            "twenty-",
            "-",
            "°",
            "$",
            "x/",
            "/",
            "@.",
            "a@b.",
            "..",
            "日本語の文章です。",
            "Привет, как дела?",
            "ﷺ ǅ ß İ",
            "\u{0}\u{200b}\u{feff}",
            &long,
        ];
        for a in inputs {
            for b in inputs {
                let _ = disagreement(&PromptFeatures::of(a), &PromptFeatures::of(b));
            }
        }
    }

    #[test]
    fn huge_prompts_compare_their_tails() {
        let base = "word ".repeat(5000);
        let (a, b) = (format!("{base} apples"), format!("{base} pears"));
        assert_eq!(check(&a, &a), None);
        assert_eq!(check(&a, &b), Some(D::Overflow));
    }
}
