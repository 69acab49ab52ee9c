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

// ---------------------------------------------------------------------------------------------
// Tokenising

enum Segment {
    Text(String),
    Code,
}

/// Splits out backtick spans (inline and fenced): their content is code, compared verbatim,
/// and must not be read as words, quotes or negations.
fn split_code(text: &str) -> (Vec<Segment>, Vec<String>) {
    let chars: Vec<char> = text.chars().collect();
    let (mut segs, mut code, mut cur) = (Vec::new(), Vec::new(), String::new());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            cur.push(chars[i]);
            i += 1;
            continue;
        }
        let ticks = chars[i..].iter().take_while(|c| **c == '`').count();
        let start = i + ticks;
        let close = (start..chars.len()).find(|&j| chars[j..].iter().take_while(|c| **c == '`').count() >= ticks);
        match close {
            Some(end) => {
                let body: String = chars[start..end].iter().collect();
                let body = collapse_ws(&body);
                if !body.is_empty() {
                    segs.push(Segment::Text(std::mem::take(&mut cur)));
                    segs.push(Segment::Code);
                    code.push(body);
                }
                i = end + ticks;
            }
            None => {
                // An unmatched backtick is punctuation, not code.
                cur.push(' ');
                i = start;
            }
        }
    }
    segs.push(Segment::Text(cur));
    (segs, code)
}

/// Quoted strings outside code: '...', "...", curly quotes, guillemets. A straight apostrophe
/// only opens after a space or bracket and only closes before a space or punctuation, so
/// "what's" and "Kant's" are not quotes.
fn quoted_spans(segments: &[Segment]) -> Vec<String> {
    let mut out = Vec::new();
    for seg in segments {
        let Segment::Text(s) = seg else { continue };
        let c: Vec<char> = s.chars().collect();
        let mut i = 0;
        while i < c.len() {
            let open = c[i];
            let close = match open {
                '"' => '"',
                '“' | '„' => '”',
                '‘' => '’',
                '«' => '»',
                '\'' => '\'',
                _ => {
                    i += 1;
                    continue;
                }
            };
            let opens = i == 0 || c[i - 1].is_whitespace() || "([{:=,".contains(c[i - 1]) || open != '\'';
            if !opens || i + 1 >= c.len() || c[i + 1].is_whitespace() {
                i += 1;
                continue;
            }
            let end = (i + 2..c.len()).find(|&j| {
                c[j] == close
                    && !c[j - 1].is_whitespace()
                    && (close != '\'' && close != '’'
                        || j + 1 == c.len()
                        || c[j + 1].is_whitespace()
                        || ".,;:!?)]}".contains(c[j + 1]))
            });
            match end {
                Some(j) => {
                    out.push(c[i + 1..j].iter().collect());
                    i = j + 1;
                }
                None => i += 1,
            }
        }
    }
    out
}

fn tokenize(segments: &[Segment]) -> Vec<Tok> {
    let mut toks: Vec<Tok> = Vec::new();
    for seg in segments {
        match seg {
            Segment::Code => toks.push(Tok {
                raw: "`".into(),
                low: "`".into(),
                kind: Kind::Code,
                cap: false,
                sentence_start: false,
                glued: false,
            }),
            Segment::Text(s) => {
                for chunk in s.split_whitespace() {
                    chunk_tokens(chunk, &mut toks);
                }
            }
        }
    }
    let mut start = true;
    for t in &mut toks {
        match t.kind {
            Kind::Punct => {
                if matches!(t.raw.as_str(), "." | "?" | "!" | ":" | ";" | "¿" | "¡") {
                    start = true;
                }
            }
            _ => {
                t.sentence_start = start;
                start = false;
            }
        }
    }
    toks
}

fn push(toks: &mut Vec<Tok>, raw: &str, kind: Kind, glued: bool) {
    let low = fold(raw.to_lowercase());
    let cap = raw.chars().any(char::is_uppercase);
    toks.push(Tok { raw: raw.to_string(), low, kind, cap, sentence_start: false, glued });
}

/// One whitespace-separated chunk: a link or code-looking token whole, otherwise words,
/// numbers and punctuation.
fn chunk_tokens(chunk: &str, toks: &mut Vec<Tok>) {
    const EDGE: &[char] = &[
        '.', ',', ';', ':', '!', '?', '(', ')', '[', ']', '{', '}', '"', '\'', '“', '”', '‘', '’', '«', '»', '¿', '¡',
        '„', '*',
    ];
    let core_start = chunk.trim_start_matches(EDGE);
    let lead = &chunk[..chunk.len() - core_start.len()];
    let core = core_start.trim_end_matches(EDGE);
    let trail = &core_start[core.len()..];
    for c in lead.chars() {
        push(toks, &c.to_string(), Kind::Punct, false);
    }
    if is_link(core) {
        push(toks, core.trim_end_matches('/'), Kind::Link, false);
    } else if is_code_like(core) {
        push(toks, core, Kind::Code, false);
    } else {
        word_tokens(core, toks);
    }
    for c in trail.chars() {
        push(toks, &c.to_string(), Kind::Punct, true);
    }
}

fn word_tokens(core: &str, toks: &mut Vec<Tok>) {
    let c: Vec<char> = core.chars().collect();
    let mut i = 0;
    let mut first = true;
    while i < c.len() {
        let glued = !first;
        first = false;
        if c[i].is_ascii_digit() {
            // Digits with inner separators: "1,000", "3.12", "0.375".
            let mut j = i + 1;
            while j < c.len() {
                if c[j].is_ascii_digit() || (c[j] == '.' || c[j] == ',') && j + 1 < c.len() && c[j + 1].is_ascii_digit()
                {
                    j += 1;
                } else {
                    break;
                }
            }
            push(toks, &c[i..j].iter().collect::<String>(), Kind::Number, glued);
            i = j;
        } else if c[i].is_alphabetic() {
            let mut j = i + 1;
            while j < c.len()
                && (c[j].is_alphanumeric()
                    || (c[j] == '\'' || c[j] == '’') && j + 1 < c.len() && c[j + 1].is_alphabetic())
            {
                j += 1;
            }
            let w: String = c[i..j].iter().collect();
            contraction(&w, toks, glued);
            i = j;
        } else {
            if !c[i].is_whitespace() {
                push(toks, &c[i].to_string(), if is_symbol_unit(c[i]) { Kind::Word } else { Kind::Punct }, glued);
            }
            i += 1;
        }
    }
}

fn is_symbol_unit(c: char) -> bool {
    matches!(c, '$' | '€' | '£' | '¥' | '%' | '°' | '₹')
}

/// Expands contractions so "doesn't" negates like "does not" and "what's" reads "what is";
/// a possessive "'s" is dropped so "Kant's" is the entity "Kant".
fn contraction(w: &str, toks: &mut Vec<Tok>, glued: bool) {
    let norm = w.replace('’', "'");
    let lower = norm.to_lowercase();
    let bare = [
        ("whats", "what is"),
        ("dont", "do not"),
        ("doesnt", "does not"),
        ("didnt", "did not"),
        ("cant", "can not"),
        ("cannot", "can not"),
        ("isnt", "is not"),
        ("arent", "are not"),
        ("wasnt", "was not"),
        ("shouldnt", "should not"),
        ("wouldnt", "would not"),
        ("couldnt", "could not"),
        ("hasnt", "has not"),
        ("havent", "have not"),
        ("wont", "will not"),
        ("im", "i am"),
        ("thats", "that is"),
        ("hows", "how is"),
    ];
    if let Some((_, exp)) = bare.iter().find(|(k, _)| *k == lower) {
        for (n, part) in exp.split(' ').enumerate() {
            push(toks, part, Kind::Word, glued && n == 0);
        }
        return;
    }
    let Some(ap) = norm.find('\'') else {
        push(toks, &norm, Kind::Word, glued);
        return;
    };
    let (base, suffix) = (&norm[..ap], norm[ap..].to_lowercase());
    if suffix == "'t" && (base.ends_with('n') || base.ends_with('N')) {
        let stem = &base[..base.len() - 1];
        let stem = match stem.to_lowercase().as_str() {
            "ca" => "can".to_string(),
            "wo" => "will".to_string(),
            "sha" => "shall".to_string(),
            _ => stem.to_string(),
        };
        push(toks, &stem, Kind::Word, glued);
        push(toks, "not", Kind::Word, true);
        return;
    }
    let expansion = match suffix.as_str() {
        "'s" => {
            let pron =
                ["it", "what", "that", "there", "here", "who", "where", "how", "he", "she", "let", "when", "why"];
            if pron.contains(&base.to_lowercase().as_str()) {
                Some("is")
            } else {
                None
            }
        }
        "'re" => Some("are"),
        "'ve" => Some("have"),
        "'ll" => Some("will"),
        "'d" => Some("would"),
        "'m" => Some("am"),
        _ => {
            push(toks, &norm.replace('\'', ""), Kind::Word, glued);
            return;
        }
    };
    push(toks, base, Kind::Word, glued);
    if let Some(e) = expansion {
        push(toks, e, Kind::Word, true);
    }
}

fn is_link(s: &str) -> bool {
    let l = s.to_lowercase();
    if l.contains("://") || l.starts_with("www.") || l.starts_with("~/") || l.starts_with("./") {
        return true;
    }
    if let Some(at) = l.find('@') {
        // An e-mail address or git@host:path, not a decorator or a version ("bootstrap@5").
        if at > 0 && l[at + 1..].contains('.') && l[at + 1..].chars().next().is_some_and(char::is_alphabetic) {
            return true;
        }
    }
    // A path: "/old-page", "/etc/hosts" (not a lone "/" or "km/h").
    if l.starts_with('/') && l.len() > 1 && l[1..].chars().next().is_some_and(|c| c.is_alphanumeric() || c == '.') {
        return true;
    }
    if l.matches('/').count() >= 2 && !l.contains(' ') {
        return true;
    }
    // A dotted name: a domain or a file ("example.org", "bootstrap.min.css", "Node.js").
    let parts: Vec<&str> = l.split('.').collect();
    parts.len() >= 2
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_'))
        && parts.last().is_some_and(|p| p.chars().all(char::is_alphabetic) && p.len() >= 2)
        && !parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
        && parts[0].chars().any(char::is_alphabetic)
}

/// Code outside backticks: calls, operators, snake_case, namespaces, flags.
fn is_code_like(s: &str) -> bool {
    let n = s.chars().count();
    if n < 2 {
        return false;
    }
    let has_alnum = s.chars().any(char::is_alphanumeric);
    has_alnum
        && (s.contains("::")
            || s.contains("->")
            || s.contains("=>")
            || s.chars()
                .any(|c| matches!(c, '(' | ')' | '[' | ']' | '{' | '}' | '=' | '<' | '>' | '|' | '^' | '\\' | '#'))
            || s.chars().skip(1).any(|c| c == '_') && !s.ends_with('_')
            || (s.starts_with('-') && s.chars().nth(1).is_some_and(|c| c.is_alphabetic() || c == '-')))
}

// ---------------------------------------------------------------------------------------------
// Numbers

fn cardinal(w: &str) -> Option<u64> {
    Some(match w {
        "zero" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        "dozen" => 12,
        _ => return None,
    })
}

fn scale(w: &str) -> Option<u64> {
    Some(match w {
        "hundred" => 100,
        "thousand" => 1_000,
        "million" => 1_000_000,
        "billion" => 1_000_000_000,
        _ => return None,
    })
}

/// Numbers a word stands for on its own: ordinals, multiples, fractions, plural digits
/// ("two sixes"), roman numerals after a name ("World War II").
fn number_word(t: &Tok, prev: Option<&Tok>) -> Option<String> {
    let w = t.low.as_str();
    let v = match w {
        "second" => {
            // "a second" is time, "the second highest" is an ordinal.
            if prev.is_some_and(|p| matches!(p.low.as_str(), "a" | "per" | "one") || p.kind == Kind::Number) {
                return None;
            }
            "2"
        }
        "third" | "thirds" | "triple" | "thrice" => "3",
        "twice" | "double" => "2",
        "half" | "halves" => "0.5",
        "quarter" => "0.25",
        "fourth" => "4",
        "fifth" => "5",
        "sixth" => "6",
        "seventh" => "7",
        "eighth" => "8",
        "ninth" => "9",
        "tenth" => "10",
        "twos" => "2",
        "threes" => "3",
        "fours" => "4",
        "fives" => "5",
        "sixes" => "6",
        "sevens" => "7",
        "eights" => "8",
        "nines" => "9",
        _ => {
            let roman = t.raw.len() >= 2
                && t.raw.chars().all(|c| matches!(c, 'I' | 'V' | 'X'))
                && prev.is_some_and(|p| p.cap && p.kind == Kind::Word);
            if roman {
                return roman_value(&t.raw).map(|v| v.to_string());
            }
            return None;
        }
    };
    Some(v.to_string())
}

fn roman_value(s: &str) -> Option<u32> {
    let val = |c| match c {
        'I' => 1,
        'V' => 5,
        'X' => 10,
        _ => 0,
    };
    let c: Vec<u32> = s.chars().map(val).collect();
    let mut total = 0u32;
    for i in 0..c.len() {
        if i + 1 < c.len() && c[i] < c[i + 1] {
            total = total.checked_sub(c[i])?;
        } else {
            total = total.checked_add(c[i])?;
        }
    }
    (total > 0).then_some(total)
}

/// Digits as written, thousands separators and leading/trailing zeros dropped.
fn canonical_number(s: &str) -> String {
    let grouped = s.split(',').skip(1).all(|g| g.len() == 3 || g.contains('.') && g.find('.') == Some(3));
    let s: String = if grouped { s.replace(',', "") } else { s.to_string() };
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) if !f.contains('.') && !f.contains(',') => (i.to_string(), f.trim_end_matches('0').to_string()),
        _ => return s,
    };
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

fn numbers(toks: &[Tok]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        if t.kind == Kind::Number {
            let mut n = canonical_number(&t.raw);
            // "2 million" is 2000000, as "two million" is.
            if let Some(next) = toks.get(i + 1).filter(|n| n.kind == Kind::Word) {
                if let (Some(m), Ok(v)) = (scale(&next.low), n.parse::<u64>()) {
                    n = v.saturating_mul(m).to_string();
                    i += 1;
                }
            }
            out.push(n);
            i += 1;
            continue;
        }
        if t.kind != Kind::Word {
            i += 1;
            continue;
        }
        if cardinal(&t.low).is_some() || scale(&t.low).is_some() {
            // Number words compose: "twenty-one", "three hundred", "two thousand five hundred".
            let (mut total, mut cur, mut j, mut words) = (0u64, 0u64, i, 0);
            while j < toks.len() {
                let w = &toks[j];
                if w.kind == Kind::Punct && w.raw == "-" {
                    j += 1;
                    continue;
                }
                if w.kind != Kind::Word {
                    break;
                }
                if let Some(v) = cardinal(&w.low) {
                    cur = cur.saturating_add(v);
                } else if let Some(m) = scale(&w.low) {
                    let base = if cur == 0 { 1 } else { cur };
                    if m >= 1000 {
                        total = total.saturating_add(base.saturating_mul(m));
                        cur = 0;
                    } else {
                        cur = base.saturating_mul(m);
                    }
                } else {
                    break;
                }
                words += 1;
                j += 1;
            }
            let v = total.saturating_add(cur);
            // A lone "one" is as often a pronoun or "a" as a number.
            if !(words == 1 && t.low == "one") {
                out.push(v.to_string());
            }
            i = j.max(i + 1);
            continue;
        }
        if let Some(v) = number_word(t, i.checked_sub(1).map(|p| &toks[p])) {
            out.push(v);
        }
        i += 1;
    }
    // "1" and "a"/"one" are the same quantity, and "one" is too ambiguous to count.
    out.retain(|n| n != "1");
    out
}

// ---------------------------------------------------------------------------------------------
// Units

/// Canonical unit for a word; `true` when the word is a unit wherever it appears, `false`
/// when it is one only after a number or as a conversion target ("bar", "cup", "m").
fn unit(w: &str) -> Option<(&'static str, bool)> {
    let s = plural_stem(w);
    Some(match s.as_str() {
        "km" | "kilometer" | "kilometre" | "kilometers" | "kilometres" => ("km", true),
        "mile" => ("mile", true),
        "mi" => ("mile", false),
        "meter" | "metre" => ("m", true),
        "m" => ("m", false),
        "cm" | "centimeter" | "centimetre" => ("cm", true),
        "mm" | "millimeter" | "millimetre" => ("mm", true),
        "inch" | "inche" => ("inch", true),
        "foot" | "feet" | "ft" => ("ft", true),
        "yard" | "yd" => ("yd", false),
        "mph" => ("mph", true),
        "kph" | "km/h" | "kmh" => ("km/h", true),
        "m/s" => ("m/s", true),
        "celsius" | "centigrade" => ("celsius", true),
        "fahrenheit" => ("fahrenheit", true),
        "kelvin" => ("kelvin", true),
        "c" => ("celsius", false),
        "f" => ("fahrenheit", false),
        "degree" | "°" => ("degree", true),
        "kg" | "kilogram" | "kilo" => ("kg", true),
        "g" | "gr" => ("g", false),
        "gram" => ("g", true),
        "mg" | "milligram" => ("mg", true),
        "lb" | "lbs" | "pound" => ("lb", true),
        "oz" | "ounce" => ("oz", true),
        "stone" | "st" => ("stone", false),
        "ton" | "tonne" => ("ton", true),
        "liter" | "litre" => ("l", true),
        "l" => ("l", false),
        "ml" | "milliliter" | "millilitre" => ("ml", true),
        "gallon" | "gal" => ("gallon", true),
        "quart" | "qt" => ("quart", true),
        "pint" => ("pint", true),
        "cup" => ("cup", false),
        "tablespoon" | "tbsp" => ("tbsp", true),
        "teaspoon" | "tsp" => ("tsp", true),
        "calorie" | "kcal" | "cal" => ("kcal", true),
        "joule" | "kj" => ("joule", true),
        "watt" | "kw" | "kwh" => ("watt", true),
        "byte" => ("byte", true),
        "b" => ("byte", false),
        "bit" => ("bit", true),
        "kb" | "kilobyte" => ("kb", true),
        "kib" => ("kib", true),
        "mb" | "megabyte" => ("mb", true),
        "mib" => ("mib", true),
        "gb" | "gigabyte" => ("gb", true),
        "gib" => ("gib", true),
        "tb" | "terabyte" => ("tb", true),
        "tib" => ("tib", true),
        "mbps" | "mbit" => ("mbps", true),
        "gbps" => ("gbps", true),
        "kbps" => ("kbps", true),
        "mb/s" => ("mb/s", true),
        "hz" | "mhz" | "ghz" | "khz" => ("hz", true),
        "ms" | "millisecond" | "msec" => ("ms", true),
        "s" | "sec" => ("s", false),
        "seconds" | "secs" => ("s", true),
        "minute" | "min" => ("minute", true),
        "hour" | "hr" | "h" | "hourly" => ("hour", true),
        "day" | "daily" => ("day", true),
        "week" | "weekly" => ("week", true),
        "month" | "monthly" => ("month", true),
        "year" | "yr" | "yearly" | "annual" | "annually" => ("year", true),
        "decade" => ("decade", true),
        "usd" | "dollar" | "$" => ("usd", true),
        "eur" | "euro" | "€" => ("eur", true),
        "gbp" | "sterling" | "£" => ("gbp", true),
        "jpy" | "yen" | "¥" => ("jpy", true),
        "inr" | "rupee" | "₹" => ("inr", true),
        "cad" | "aud" | "chf" | "cny" | "yuan" | "mxn" | "brl" => (canonical_currency(&s), true),
        "percent" | "%" | "percentage" => ("percent", true),
        "acre" => ("acre", true),
        "hectare" | "ha" => ("hectare", true),
        "atm" | "atmosphere" => ("atm", true),
        "bar" => ("bar", false),
        "pascal" | "pa" | "kpa" => ("pa", true),
        "psi" => ("psi", true),
        "parsec" => ("parsec", true),
        "lightyear" => ("lightyear", true),
        "am" | "pm" => ("clock", false),
        "mi/h" => ("mph", true),
        "mebibyte" => ("mib", true),
        _ => return None,
    })
}

fn canonical_currency(s: &str) -> &'static str {
    match s {
        "cad" => "cad",
        "aud" => "aud",
        "chf" => "chf",
        "mxn" => "mxn",
        "brl" => "brl",
        _ => "cny",
    }
}

fn units(toks: &[Tok]) -> (Vec<&'static str>, Vec<&'static str>) {
    let (mut all, mut anchored) = (Vec::new(), Vec::new());
    for (i, t) in toks.iter().enumerate() {
        if t.kind != Kind::Word {
            continue;
        }
        let prev = i.checked_sub(1).map(|p| &toks[p]);
        let prev_word = toks[..i].iter().rev().find(|p| !(p.kind == Kind::Punct && p.raw == "-"));
        let next_word = toks[i + 1..].iter().find(|p| !(p.kind == Kind::Punct && p.raw == "-"));
        // "light-years", "km/h", "MB/s" arrive split; join them back.
        let joined;
        let mut w = t.low.as_str();
        if w == "light"
            && toks.get(i + 1).is_some_and(|n| n.raw == "-")
            && next_word.is_some_and(|n| n.low.starts_with("year"))
        {
            w = "lightyear";
        } else if toks.get(i + 1).is_some_and(|n| n.raw == "/") {
            if let Some(n) = toks.get(i + 2).filter(|n| n.kind == Kind::Word) {
                joined = format!("{w}/{}", n.low);
                if unit(&joined).is_some() {
                    w = joined.as_str();
                }
            }
        }
        if w == "°" {
            if let Some(n) = toks.get(i + 1).filter(|n| n.glued) {
                if let Some(("celsius" | "fahrenheit" | "kelvin", _)) = unit(&n.low) {
                    continue;
                }
                if n.low == "k" {
                    all.push("kelvin");
                    anchored.push("kelvin");
                    continue;
                }
            }
        }
        if t.low == "year" || t.low == "years" {
            // "10-year-old", "five years old": an age, the number already says it.
            if next_word.is_some_and(|n| n.low == "old") {
                continue;
            }
        }
        let Some((u, strong)) = unit(w) else { continue };
        let after_number = prev.is_some_and(|p| p.raw == "°")
            || prev_word
                .is_some_and(|p| p.kind == Kind::Number || cardinal(&p.low).is_some() || scale(&p.low).is_some())
            || prev.is_some_and(|p| p.kind == Kind::Number && t.glued);
        let target = prev_word.is_some_and(|p| matches!(p.low.as_str(), "in" | "to" | "into" | "per"));
        // A symbol sits before its number: "$85".
        let symbol = is_symbol_unit(t.raw.chars().next().unwrap_or(' ')) && t.raw.chars().count() == 1;
        let before_number = symbol && toks.get(i + 1).is_some_and(|n| n.kind == Kind::Number);
        if !(strong || after_number || target) {
            continue;
        }
        // Single letters are units only when glued to or right after a number ("5m", "200 g").
        if w.chars().count() == 1 && !symbol && !after_number {
            continue;
        }
        all.push(u);
        if after_number || target || before_number {
            anchored.push(u);
        }
    }
    (all, anchored)
}

fn units_differ(a: &PromptFeatures, b: &PromptFeatures) -> bool {
    if a.units == b.units {
        return false;
    }
    if !a.units.is_empty() && !b.units.is_empty() {
        return true;
    }
    // Only one side names a unit: it matters when tied to a number or asked for ("in miles"),
    // not when it merely rephrases ("how long" / "how many minutes").
    !a.anchored_units.is_empty() || !b.anchored_units.is_empty()
}

// ---------------------------------------------------------------------------------------------
// Dates

fn month(t: &Tok, next: Option<&Tok>, prev: Option<&Tok>) -> Option<&'static str> {
    let full = match t.low.as_str() {
        "january" => "jan",
        "february" => "feb",
        "march" => "mar",
        "april" => "apr",
        "june" => "jun",
        "july" => "jul",
        "august" => "aug",
        "september" => "sep",
        "october" => "oct",
        "november" => "nov",
        "december" => "dec",
        _ => "",
    };
    let near_number = next.is_some_and(|n| n.kind == Kind::Number) || prev.is_some_and(|p| p.kind == Kind::Number);
    if !full.is_empty() {
        // "march" and "august" are also a verb and an adjective; capitalised or by a number
        // they are months.
        if matches!(full, "mar" | "aug") && !(t.cap || near_number) {
            return None;
        }
        return Some(full);
    }
    // Abbreviations and "May" only when written like a month.
    if !t.cap {
        return None;
    }
    let abbr = match t.low.as_str() {
        "jan" => "jan",
        "feb" => "feb",
        "mar" => "mar",
        "apr" => "apr",
        "may" => "may",
        "jun" => "jun",
        "jul" => "jul",
        "aug" => "aug",
        "sep" | "sept" => "sep",
        "oct" => "oct",
        "nov" => "nov",
        "dec" => "dec",
        _ => return None,
    };
    (near_number || abbr == "may" && !t.sentence_start).then_some(abbr)
}

fn dates(toks: &[Tok]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if t.kind != Kind::Word {
            continue;
        }
        let prev = i.checked_sub(1).map(|p| &toks[p]);
        if let Some(m) = month(t, toks.get(i + 1), prev) {
            out.push(m.to_string());
            continue;
        }
        let w = t.low.trim_end_matches('s');
        let day = match w {
            "monday" | "tuesday" | "wednesday" | "thursday" | "friday" | "saturday" | "sunday" | "weekend"
            | "weekday" => Some(w.to_string()),
            "today" | "tonight" | "tomorrow" | "yesterday" | "summer" | "winter" | "autumn" => Some(w.to_string()),
            _ => None,
        };
        if let Some(d) = day {
            out.push(d);
            continue;
        }
        if matches!(t.low.as_str(), "next" | "last" | "this" | "previous" | "coming" | "past") {
            if let Some(n) = toks.get(i + 1).filter(|n| n.kind == Kind::Word) {
                let span = plural_stem(&n.low);
                if matches!(span.as_str(), "week" | "month" | "year" | "weekend" | "quarter" | "night" | "decade") {
                    let rel = match t.low.as_str() {
                        "last" | "previous" | "past" => "last",
                        "this" => "this",
                        _ => "next",
                    };
                    out.push(format!("{rel} {span}"));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Negation

fn negations(toks: &[Tok]) -> u32 {
    let mut n = 0;
    for (i, t) in toks.iter().enumerate() {
        if t.kind != Kind::Word {
            continue;
        }
        let neg = match t.low.as_str() {
            "not" | "never" | "without" | "none" | "nobody" | "nothing" | "neither" | "nor" | "except"
            | "excluding" | "non" | "nowhere" | "lacking" | "unless" => true,
            // "yes or no" is a format, not a negation.
            "no" => {
                let near = |j: Option<&Tok>| j.is_some_and(|x| x.low == "yes" || x.low == "or");
                !(near(i.checked_sub(1).map(|p| &toks[p])) && near(i.checked_sub(2).map(|p| &toks[p])))
            }
            _ => false,
        };
        if neg {
            n += 1;
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Entities

fn entities(toks: &[Tok]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if t.kind != Kind::Word || !t.cap || t.sentence_start {
            continue;
        }
        let prev = i.checked_sub(1).map(|p| &toks[p]);
        if t.raw == "I"
            || cardinal(&t.low).is_some()
            || number_word(t, prev).is_some()
            || month(t, toks.get(i + 1), prev).is_some()
            || matches!(t.low.as_str(), "am" | "pm" | "ok" | "okay")
        {
            continue;
        }
        // "A"/"An" capitalised after a colon or quote is still the article.
        if matches!(t.raw.as_str(), "A" | "An" | "The") && prev.is_some_and(|p| p.kind == Kind::Punct) {
            continue;
        }
        let parts = camel_parts(&t.raw);
        let mut names = vec![t.low.clone()];
        if parts.len() > 1 {
            names.push(parts.iter().filter_map(|p| p.chars().next()).collect());
        }
        out.push(names);
    }
    out
}

fn camel_parts(raw: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in raw.chars() {
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            parts.push(fold(cur.to_lowercase()));
            cur.clear();
        }
        prev_lower = c.is_lowercase();
        cur.push(c);
    }
    if !cur.is_empty() {
        parts.push(fold(cur.to_lowercase()));
    }
    parts
}

/// Every entity of `a` appears in `b`: as a word (any case, any inflection, a typo away), or
/// as an acronym of consecutive words ("LCM" / "least common multiple", "JS" / "JavaScript").
fn entities_contained(a: &PromptFeatures, b: &PromptFeatures) -> bool {
    a.entities.iter().all(|names| names.iter().any(|e| contains_entity(b, e)))
}

fn contains_entity(b: &PromptFeatures, e: &String) -> bool {
    {
        b.words.iter().any(|w| w == e || related(w, e))
            || is_acronym_of(e, &b.words)
            || is_acronym_of(e, &b.camel)
            || b.camel.iter().any(|p| p == e)
            || b.links.iter().any(|l| l.split(|c: char| !c.is_alphanumeric()).any(|p| p == e))
            || e.chars().count() > 3 && b.flat.contains(e.as_str())
            || same_pole_word(e, &b.words)
    }
}

/// Another name for the same member of a group ("macOS" / "Mac").
fn same_pole_word(e: &str, words: &[String]) -> bool {
    let poles = |w: &str| {
        pole_index()
            .get(w)
            .map(|list| list.iter().filter(|x| x.0.len() == 1).map(|x| (x.1, x.2)).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let pe = poles(e);
    !pe.is_empty() && words.iter().any(|w| poles(w).iter().any(|p| pe.contains(p)))
}

fn is_acronym_of(e: &str, words: &[String]) -> bool {
    let letters: Vec<char> = e.chars().collect();
    if letters.len() < 2 || letters.len() > 6 {
        return false;
    }
    words.windows(letters.len()).any(|win| win.iter().zip(&letters).all(|(w, l)| w.starts_with(*l)))
        || words.iter().any(|w| {
            let p: Vec<char> = w.chars().collect();
            p.len() > letters.len() && p.starts_with(&letters[..1]) && abbreviates(e, std::slice::from_ref(w))
        })
}

// ---------------------------------------------------------------------------------------------
// Antonym and alternative groups

/// A group of mutually exclusive alternatives; two prompts naming different members of the
/// same group ask different questions.
struct Group {
    kind: Disagreement,
    /// Naming a member at all matters (a format asked for), not only naming a different one.
    one_sided: bool,
}

const FORMAT: u8 = 24;
const TABLE: u8 = 6;

const GROUPS: &[Group] = &[
    Group { kind: Disagreement::Comparative, one_sided: false }, // 0 magnitude
    Group { kind: Disagreement::Comparative, one_sided: false }, // 1 speed
    Group { kind: Disagreement::Comparative, one_sided: false }, // 2 ease
    Group { kind: Disagreement::Comparative, one_sided: false }, // 3 temperature
    Group { kind: Disagreement::Comparative, one_sided: false }, // 4 price
    Group { kind: Disagreement::Comparative, one_sided: false }, // 5 change
    Group { kind: Disagreement::Comparative, one_sided: false }, // 6 weight
    Group { kind: Disagreement::Comparative, one_sided: false }, // 7 shade
    Group { kind: Disagreement::Quantifier, one_sided: false },  // 8 extreme
    Group { kind: Disagreement::Quantifier, one_sided: false },  // 9 quantity
    Group { kind: Disagreement::Quantifier, one_sided: false },  // 10 top/bottom
    Group { kind: Disagreement::Comparative, one_sided: false }, // 11 age
    Group { kind: Disagreement::Direction, one_sided: false },   // 12 direction words
    Group { kind: Disagreement::Aspect, one_sided: false },      // 13 create/delete
    Group { kind: Disagreement::Aspect, one_sided: false },      // 14 install/uninstall
    Group { kind: Disagreement::Aspect, one_sided: false },      // 15 open/close
    Group { kind: Disagreement::Aspect, one_sided: false },      // 16 start/stop
    Group { kind: Disagreement::Aspect, one_sided: false },      // 17 enable/disable
    Group { kind: Disagreement::Aspect, one_sided: false },      // 18 pros/cons
    Group { kind: Disagreement::Aspect, one_sided: false },      // 19 cause/effect/symptom/...
    Group { kind: Disagreement::Scope, one_sided: false },       // 20 expertise
    Group { kind: Disagreement::Scope, one_sided: false },       // 21 age group
    Group { kind: Disagreement::Scope, one_sided: false },       // 22 education level
    Group { kind: Disagreement::Scope, one_sided: false },       // 23 platform
    Group { kind: Disagreement::Format, one_sided: true },       // 24 output format
    Group { kind: Disagreement::Comparative, one_sided: false }, // 25 quality
    Group { kind: Disagreement::Aspect, one_sided: false },      // 26 lock, login, connect, allow...
    Group { kind: Disagreement::Aspect, one_sided: false },      // 27 merge/split
    Group { kind: Disagreement::Aspect, one_sided: false },      // 28 buy/sell, win/lose, pass/fail
];

/// (phrase, group, pole). Words of one group and pole are interchangeable; poles of one group
/// exclude each other.
const POLES: &[(&str, u8, u8)] = &[
    // 0 magnitude
    ("larger", 0, 0),
    ("largest", 0, 0),
    ("large", 0, 0),
    ("bigger", 0, 0),
    ("biggest", 0, 0),
    ("big", 0, 0),
    ("greater", 0, 0),
    ("greatest", 0, 0),
    ("higher", 0, 0),
    ("highest", 0, 0),
    ("taller", 0, 0),
    ("tallest", 0, 0),
    ("longer", 0, 0),
    ("longest", 0, 0),
    ("more", 0, 0),
    ("most", 0, 0),
    ("above", 0, 0),
    ("smaller", 0, 1),
    ("smallest", 0, 1),
    ("small", 0, 1),
    ("little", 0, 1),
    ("lesser", 0, 1),
    ("lower", 0, 1),
    ("lowest", 0, 1),
    ("shorter", 0, 1),
    ("shortest", 0, 1),
    ("less", 0, 1),
    ("least", 0, 1),
    ("fewer", 0, 1),
    ("fewest", 0, 1),
    ("below", 0, 1),
    // 1 speed
    ("faster", 1, 0),
    ("fastest", 1, 0),
    ("quicker", 1, 0),
    ("quickest", 1, 0),
    ("slower", 1, 1),
    ("slowest", 1, 1),
    // 2 ease
    ("easier", 2, 0),
    ("easiest", 2, 0),
    ("simpler", 2, 0),
    ("harder", 2, 1),
    ("hardest", 2, 1),
    ("difficult", 2, 1),
    // 3 temperature
    ("warmer", 3, 0),
    ("warmest", 3, 0),
    ("hotter", 3, 0),
    ("hottest", 3, 0),
    ("warm", 3, 0),
    ("hot", 3, 0),
    ("colder", 3, 1),
    ("coldest", 3, 1),
    ("cooler", 3, 1),
    ("cold", 3, 1),
    ("cool", 3, 1),
    // 4 price
    ("expensive", 4, 0),
    ("pricier", 4, 0),
    ("costlier", 4, 0),
    ("costly", 4, 0),
    ("cheap", 4, 1),
    ("cheaper", 4, 1),
    ("cheapest", 4, 1),
    ("inexpensive", 4, 1),
    ("affordable", 4, 1),
    // 5 change
    ("increase", 5, 0),
    ("raise", 5, 0),
    ("boost", 5, 0),
    ("grow", 5, 0),
    ("gain", 5, 0),
    ("gaining", 5, 0),
    ("enlarge", 5, 0),
    ("expand", 5, 0),
    ("improve", 5, 0),
    ("maximize", 5, 0),
    ("decrease", 5, 1),
    ("reduce", 5, 1),
    ("lower", 5, 1),
    ("shrink", 5, 1),
    ("lose", 5, 1),
    ("losing", 5, 1),
    ("minimize", 5, 1),
    ("worsen", 5, 1),
    // 6 weight / boldness
    ("heavy", 6, 0),
    ("heavier", 6, 0),
    ("heaviest", 6, 0),
    ("bold", 6, 0),
    ("bolder", 6, 0),
    ("light", 6, 1),
    ("lighter", 6, 1),
    ("lightest", 6, 1),
    ("thin", 6, 1),
    ("thinner", 6, 1),
    // 7 shade
    ("dark", 7, 0),
    ("darker", 7, 0),
    ("light", 7, 1),
    ("lighter", 7, 1),
    ("bright", 7, 1),
    ("brighter", 7, 1),
    // order (in the quantity group: "all" / "the first" / "the last" exclude each other)
    ("first", 9, 7),
    ("earliest", 9, 7),
    ("oldest", 9, 7),
    ("initial", 9, 7),
    ("last", 9, 8),
    ("latest", 9, 8),
    ("final", 9, 8),
    ("newest", 9, 8),
    ("most recent", 9, 8),
    ("most recently", 9, 8),
    // 8 extreme
    ("minimum", 8, 0),
    ("min", 8, 0),
    ("minimal", 8, 0),
    ("maximum", 8, 1),
    ("max", 8, 1),
    ("maximal", 8, 1),
    // 9 quantity
    ("all", 9, 0),
    ("every", 9, 0),
    ("any", 9, 1),
    ("some", 9, 2),
    ("exactly", 9, 3),
    ("only", 9, 3),
    ("at least", 9, 4),
    ("at most", 9, 5),
    ("every other", 9, 6),
    // 10 top/bottom
    ("top", 10, 0),
    ("bottom", 10, 1),
    // 11 age
    ("old", 11, 0),
    ("older", 11, 0),
    ("oldest", 11, 0),
    ("young", 11, 1),
    ("younger", 11, 1),
    ("youngest", 11, 1),
    ("new", 11, 1),
    ("newer", 11, 1),
    // 12 direction words
    ("ascending", 12, 0),
    ("descending", 12, 1),
    ("import", 12, 2),
    ("export", 12, 3),
    ("upload", 12, 4),
    ("download", 12, 5),
    ("encrypt", 12, 6),
    ("decrypt", 12, 7),
    ("encode", 12, 8),
    ("decode", 12, 9),
    ("serialize", 12, 10),
    ("deserialize", 12, 11),
    ("compress", 12, 12),
    ("decompress", 12, 13),
    ("send", 12, 14),
    ("receive", 12, 15),
    ("horizontal", 12, 16),
    ("horizontally", 12, 16),
    ("vertical", 12, 17),
    ("vertically", 12, 17),
    ("before", 12, 18),
    ("after", 12, 19),
    ("north", 12, 20),
    ("south", 12, 21),
    ("left", 12, 22),
    ("right", 12, 23),
    ("input", 12, 24),
    ("output", 12, 25),
    ("inbound", 12, 26),
    ("outbound", 12, 27),
    ("push", 12, 28),
    ("pull", 12, 29),
    // 13 create/delete
    ("create", 13, 0),
    ("add", 13, 0),
    ("set up", 13, 0),
    ("setup", 13, 0),
    ("delete", 13, 1),
    ("remove", 13, 1),
    ("destroy", 13, 1),
    ("erase", 13, 1),
    // 14 install/uninstall
    ("install", 14, 0),
    ("reinstall", 14, 1),
    ("uninstall", 14, 2),
    ("upgrade", 14, 3),
    ("update", 14, 3),
    ("downgrade", 14, 4),
    // 15 open/close
    ("open", 15, 0),
    ("close", 15, 1),
    ("closed", 15, 1),
    // 16 start/stop
    ("start", 16, 0),
    ("begin", 16, 0),
    ("launch", 16, 0),
    ("stop", 16, 1),
    ("end", 16, 1),
    ("finish", 16, 1),
    ("quit", 16, 1),
    ("exit", 16, 1),
    ("kill", 16, 1),
    ("terminate", 16, 1),
    ("pause", 16, 2),
    ("resume", 16, 3),
    ("restart", 16, 4),
    // 17 enable/disable
    ("enable", 17, 0),
    ("turn on", 17, 0),
    ("activate", 17, 0),
    ("disable", 17, 1),
    ("turn off", 17, 1),
    ("deactivate", 17, 1),
    // 18 pros/cons
    ("pro", 18, 0),
    ("advantage", 18, 0),
    ("benefit", 18, 0),
    ("strength", 18, 0),
    ("upside", 18, 0),
    ("merit", 18, 0),
    ("con", 18, 1),
    ("disadvantage", 18, 1),
    ("drawback", 18, 1),
    ("downside", 18, 1),
    ("risk", 18, 1),
    ("weakness", 18, 1),
    ("limitation", 18, 1),
    ("danger", 18, 1),
    ("side effect", 18, 1),
    // 19 cause/effect/symptom/treatment
    ("cause", 19, 0),
    ("caused", 19, 0),
    ("reason", 19, 0),
    ("effect", 19, 1),
    ("consequence", 19, 1),
    ("impact", 19, 1),
    ("symptom", 19, 2),
    ("sign", 19, 2),
    ("treat", 19, 3),
    ("treatment", 19, 3),
    ("cure", 19, 3),
    ("remedy", 19, 3),
    ("prevent", 19, 4),
    ("prevention", 19, 4),
    ("diagnose", 19, 5),
    ("diagnosis", 19, 5),
    ("dose", 19, 6),
    ("dosage", 19, 6),
    ("side effect", 19, 7),
    // 20 expertise
    ("beginner", 20, 0),
    ("novice", 20, 0),
    ("newbie", 20, 0),
    ("new to", 20, 0),
    ("intermediate", 20, 1),
    ("expert", 20, 2),
    ("experienced", 20, 2),
    ("advanced", 20, 2),
    ("professional", 20, 2),
    // 21 age group
    ("child", 21, 0),
    ("children", 21, 0),
    ("kid", 21, 0),
    ("toddler", 21, 0),
    ("teen", 21, 1),
    ("teenager", 21, 1),
    ("adolescent", 21, 1),
    ("baby", 21, 2),
    ("newborn", 21, 2),
    ("infant", 21, 2),
    ("adult", 21, 3),
    ("senior", 21, 4),
    ("elderly", 21, 4),
    ("retiree", 21, 4),
    // 22 education level
    ("high school", 22, 0),
    ("middle school", 22, 0),
    ("elementary school", 22, 0),
    ("university", 22, 1),
    ("college", 22, 1),
    ("undergraduate", 22, 1),
    ("graduate", 22, 2),
    ("phd", 22, 2),
    // 23 platform
    ("windows", 23, 0),
    ("linux", 23, 1),
    ("ubuntu", 23, 1),
    ("debian", 23, 1),
    ("macos", 23, 2),
    ("mac", 23, 2),
    ("osx", 23, 2),
    ("android", 23, 3),
    ("ios", 23, 4),
    ("iphone", 23, 4),
    ("desktop", 23, 5),
    ("mobile", 23, 6),
    ("bash", 23, 7),
    ("zsh", 23, 8),
    ("powershell", 23, 9),
    ("cmd", 23, 10),
    // 24 output format
    ("json", 24, 0),
    ("yaml", 24, 1),
    ("yml", 24, 1),
    ("csv", 24, 2),
    ("xml", 24, 3),
    ("toml", 24, 4),
    ("markdown", 24, 5),
    ("as a table", 24, 6),
    ("in a table", 24, 6),
    ("as table", 24, 6),
    ("markdown table", 24, 6),
    ("tabular", 24, 6),
    ("bullet point", 24, 7),
    ("bulleted list", 24, 7),
    ("bullet list", 24, 7),
    ("bullet", 24, 7),
    ("numbered list", 24, 8),
    ("one sentence", 24, 9),
    ("single sentence", 24, 9),
    ("a sentence", 24, 9),
    ("one paragraph", 24, 10),
    ("a paragraph", 24, 10),
    ("short paragraph", 24, 10),
    ("single paragraph", 24, 10),
    ("in detail", 24, 11),
    ("detailed", 24, 11),
    ("in depth", 24, 11),
    ("step by step", 24, 12),
    ("show your working", 24, 12),
    ("show your work", 24, 12),
    ("yes or no", 24, 13),
    ("answer only", 24, 14),
    ("just the answer", 24, 14),
    ("only the answer", 24, 14),
    ("tweet", 24, 15),
    ("essay", 24, 16),
    ("diagram", 24, 17),
    ("outline", 24, 18),
    ("analogy", 24, 19),
    ("blog post", 24, 20),
    ("html", 24, 21),
    ("few sentences", 24, 22),
    ("summarize", 24, 23),
    ("summarise", 24, 23),
    ("summary", 24, 23),
    ("tl dr", 24, 23),
    // 25 quality
    ("best", 25, 0),
    ("better", 25, 0),
    ("good", 25, 0),
    ("worst", 25, 1),
    ("worse", 25, 1),
    ("bad", 25, 1),
    // 26 binary actions
    ("lock", 26, 0),
    ("unlock", 26, 1),
    ("log in", 26, 2),
    ("login", 26, 2),
    ("sign in", 26, 2),
    ("log out", 26, 3),
    ("logout", 26, 3),
    ("sign out", 26, 3),
    ("connect", 26, 4),
    ("disconnect", 26, 5),
    ("allow", 26, 6),
    ("permit", 26, 6),
    ("block", 26, 7),
    ("deny", 26, 7),
    ("forbid", 26, 7),
    ("include", 26, 8),
    ("exclude", 26, 9),
    ("subscribe", 26, 10),
    ("unsubscribe", 26, 11),
    ("mount", 26, 12),
    ("unmount", 26, 13),
    ("show", 26, 14),
    ("hide", 26, 15),
    ("attach", 26, 16),
    ("detach", 26, 17),
    ("accept", 26, 18),
    ("reject", 26, 19),
    ("follow", 26, 20),
    ("unfollow", 26, 21),
    // 27 merge/split
    ("merge", 27, 0),
    ("combine", 27, 0),
    ("join", 27, 0),
    ("concatenate", 27, 0),
    ("split", 27, 1),
    ("separate", 27, 1),
    // 28 opposed outcomes
    ("buy", 28, 0),
    ("sell", 28, 1),
    ("borrow", 28, 2),
    ("lend", 28, 3),
    ("win", 28, 4),
    ("won", 28, 4),
    ("lose", 28, 5),
    ("lost", 28, 5),
    ("pass", 28, 6),
    ("fail", 28, 7),
    ("hire", 28, 8),
    ("fire", 28, 9),
];

type PoleIndex = std::collections::HashMap<&'static str, Vec<(Vec<&'static str>, u8, u8)>>;

/// [`POLES`] by the first word of each phrase, built once.
fn pole_index() -> &'static PoleIndex {
    static INDEX: std::sync::OnceLock<PoleIndex> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        let mut map = PoleIndex::new();
        for &(phrase, g, p) in POLES {
            let words: Vec<&'static str> = phrase.split(' ').collect();
            map.entry(words[0]).or_default().push((words, g, p));
        }
        map
    })
}

/// The longest phrase of [`POLES`] starting at word `i`; all its (group, pole) entries and
/// its length in words.
fn pole_at(words: &[&str], stems: &[String], i: usize) -> (Vec<(u8, u8)>, usize) {
    let mut best: (Vec<(u8, u8)>, usize) = (Vec::new(), 0);
    let index = pole_index();
    let firsts = [words[i], stems[i].as_str()];
    let candidates =
        firsts.iter().enumerate().filter(|(k, w)| *k == 0 || **w != words[i]).filter_map(|(_, w)| index.get(w));
    for list in candidates {
        for (phrase, g, p) in list {
            let n = phrase.len();
            if n < best.1 || i + n > words.len() {
                continue;
            }
            if !phrase.iter().enumerate().all(|(k, pw)| words[i + k] == *pw || stems[i + k] == *pw) {
                continue;
            }
            if n > best.1 {
                best = (Vec::new(), n);
            }
            if !best.0.contains(&(*g, *p)) {
                best.0.push((*g, *p));
            }
        }
    }
    best
}

/// The content words in order (multi-word group phrases as one item), and the (group, pole)
/// of every group word or phrase.
fn content_and_poles(toks: &[Tok]) -> (Vec<Content>, Vec<(u8, u8)>) {
    let words: Vec<&str> = toks.iter().filter(|t| t.kind == Kind::Word).map(|t| t.low.as_str()).collect();
    let stems: Vec<String> = words.iter().map(|w| plural_stem(w)).collect();
    // "rows in a table" is a database table, not a request for a table.
    let data_table =
        stems.iter().any(|w| matches!(w.as_str(), "row" | "column" | "sql" | "database" | "query" | "record"));
    let (mut content, mut poles) = (Vec::new(), Vec::new());
    let (mut k, mut skip_to) = (0usize, 0usize);
    for t in toks {
        if t.kind != Kind::Word {
            if t.kind != Kind::Punct {
                let key = if t.kind == Kind::Number { canonical_number(&t.raw) } else { t.low.clone() };
                content.push(Content {
                    key,
                    low: t.low.clone(),
                    cap: false,
                    guarded: true,
                    poles: Vec::new(),
                    synonyms: 0,
                    alias: None,
                });
            }
            continue;
        }
        let i = k;
        k += 1;
        if i < skip_to {
            continue;
        }
        let (mut found, n) = pole_at(&words, &stems, i);
        if data_table && words[i] == "in" {
            found.retain(|&(g, p)| (g, p) != (FORMAT, TABLE));
        }
        poles.extend(found.iter().copied());
        if n > 1 {
            let low = words[i..i + n].join(" ");
            content.push(Content {
                key: low.clone(),
                low,
                cap: false,
                guarded: false,
                poles: found,
                synonyms: 0,
                alias: None,
            });
            skip_to = i + n;
            continue;
        }
        if is_ignorable(&t.low) {
            continue;
        }
        let guarded =
            unit(&t.low).is_some_and(|(_, strong)| strong) || cardinal(&t.low).is_some() || is_date_word(&t.low);
        content.push(Content {
            key: stems[i].clone(),
            low: t.low.clone(),
            cap: t.cap && !t.sentence_start,
            guarded,
            poles: found,
            synonyms: synonym_mask(&t.low),
            alias: Some(camel_parts(&t.raw))
                .filter(|p| p.len() > 1)
                .map(|p| p.iter().filter_map(|w| w.chars().next()).collect()),
        });
    }
    (content, poles)
}

fn is_date_word(w: &str) -> bool {
    matches!(
        w.trim_end_matches('s'),
        "january"
            | "february"
            | "april"
            | "june"
            | "july"
            | "september"
            | "october"
            | "november"
            | "december"
            | "monday"
            | "tuesday"
            | "wednesday"
            | "thursday"
            | "friday"
            | "saturday"
            | "sunday"
            | "today"
            | "tomorrow"
            | "yesterday"
            | "tonight"
    )
}

fn poles_differ(a: &[(u8, u8)], b: &[(u8, u8)]) -> Option<Disagreement> {
    let masks = |poles: &[(u8, u8)]| {
        let mut m = [0u64; GROUPS.len()];
        for &(g, p) in poles {
            m[usize::from(g)] |= 1 << p;
        }
        m
    };
    let (ma, mb) = (masks(a), masks(b));
    GROUPS
        .iter()
        .zip(ma.iter().zip(&mb))
        .find(|(group, (x, y))| x != y && (group.one_sided || **x != 0 && **y != 0))
        .map(|(group, _)| group.kind)
}

// ---------------------------------------------------------------------------------------------
// Language

const LANGUAGES: &[&str] = &[
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

fn reply_languages(toks: &[Tok]) -> Vec<&'static str> {
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
fn guess_language(text: &str) -> Option<&'static str> {
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

// ---------------------------------------------------------------------------------------------
// Question words and direction

fn question_words(toks: &[Tok]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for t in toks.iter().filter(|t| t.kind == Kind::Word && t.sentence_start) {
        match t.low.as_str() {
            "who" | "whom" | "whose" => out.push("who"),
            "when" => out.push("when"),
            "where" => out.push("where"),
            "why" => out.push("why"),
            _ => {}
        }
    }
    out
}

/// Pairs of content words on either side of a directional marker. "from" after "differ" is a
/// symmetric comparison and does not count.
fn directed_pairs(toks: &[Tok]) -> Vec<(String, String)> {
    let is_marker = |i: usize| -> bool {
        let t = &toks[i];
        match t.low.as_str() {
            "to" | "into" | "onto" | "towards" | "than" => true,
            "from" => !toks[..i].iter().rev().find(|p| p.kind == Kind::Word).is_some_and(|p| {
                matches!(p.low.as_str(), "differ" | "differs" | "different" | "distinguish" | "apart" | "tell")
            }),
            "on" => i > 0 && matches!(toks[i - 1].low.as_str(), "depends" | "depend" | "relies" | "rely" | "based"),
            _ => false,
        }
    };
    let content = |t: &Tok| t.kind == Kind::Word && !is_ignorable(&t.low) && !is_marker_word(&t.low);
    let mut out = Vec::new();
    for i in 0..toks.len() {
        if toks[i].kind != Kind::Word || !is_marker(i) {
            continue;
        }
        let mut left = Vec::new();
        for t in toks[..i].iter().rev() {
            if t.kind == Kind::Punct && t.raw != "-" || is_marker_word(&t.low) || left.len() == 3 {
                break;
            }
            if content(t) {
                left.push(plural_stem(&t.low));
            }
        }
        let mut right = Vec::new();
        for t in &toks[i + 1..] {
            if t.kind == Kind::Punct && t.raw != "-" || is_marker_word(&t.low) || right.len() == 3 {
                break;
            }
            if content(t) {
                right.push(plural_stem(&t.low));
            }
        }
        for l in &left {
            for r in &right {
                if l != r {
                    out.push((l.clone(), r.clone()));
                }
            }
        }
    }
    out
}

fn is_marker_word(w: &str) -> bool {
    matches!(w, "to" | "into" | "onto" | "towards" | "than" | "from" | "when" | "if" | "while" | "and" | "or")
}

fn reversed(a: &PromptFeatures, b: &PromptFeatures) -> bool {
    let flipped = a.directed.iter().any(|(x, y)| {
        b.directed.iter().any(|(u, v)| u == y && v == x)
            && !a.directed.iter().any(|(u, v)| u == y && v == x)
            && !b.directed.iter().any(|(u, v)| u == x && v == y)
    });
    flipped || swapped(&a.words, &b.words)
}

/// The same words with two spans exchanged ("English speakers learning French" / "French
/// speakers learning English"), unless the exchange is inside a list ("X and Y" / "Y and X"),
/// where order does not matter.
fn swapped(a: &[String], b: &[String]) -> bool {
    if a.len() != b.len() || a == b {
        return false;
    }
    let key = |w: &String| plural_stem(w);
    let mut sa: Vec<String> = a.iter().map(key).collect();
    let mut sb: Vec<String> = b.iter().map(key).collect();
    let (ka, kb) = (sa.clone(), sb.clone());
    sa.sort();
    sb.sort();
    if sa != sb {
        return false;
    }
    let Some(first) = (0..ka.len()).find(|&i| ka[i] != kb[i]) else { return false };
    let Some(last) = (0..ka.len()).rev().find(|&i| ka[i] != kb[i]) else { return false };
    if first == last {
        return false;
    }
    // Symmetric relations: lists, comparisons, differences.
    let list = |w: &String| {
        matches!(
            w.as_str(),
            "and"
                | "or"
                | "vs"
                | "versus"
                | "between"
                | "&"
                | "nor"
                | "with"
                | "differ"
                | "different"
                | "difference"
                | "compare"
                | "compared"
                | "comparison"
                | "similar"
                | "same"
                | "equal"
                | "equivalent"
                | "like"
        )
    };
    if ka[first..=last].iter().any(list) {
        return false;
    }
    // Two spans exchanged around an unchanged middle: "X to Y" / "Y to X". Without a middle it
    // is a clause moved to the front, which paraphrases do all the time.
    let (wa, wb) = (&ka[first..=last], &kb[first..=last]);
    let len = wa.len();
    (1..len).any(|lx| {
        (1..len - lx).any(|ly| {
            let mid = len - lx - ly;
            wa[..lx] == wb[len - lx..] && wa[len - ly..] == wb[..ly] && wa[lx..lx + mid] == wb[ly..ly + mid]
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Substitution

/// Words that carry no question of their own: function words, politeness, the ways of asking
/// ("tell me how to", "what's the way to"), and words whose own guard compares them.
fn is_ignorable(w: &str) -> bool {
    matches!(
        w,
        "a" | "an"
            | "the"
            | "this"
            | "that"
            | "these"
            | "those"
            | "i"
            | "me"
            | "my"
            | "mine"
            | "myself"
            | "you"
            | "your"
            | "yours"
            | "u"
            | "we"
            | "us"
            | "our"
            | "it"
            | "its"
            | "they"
            | "them"
            | "their"
            | "he"
            | "she"
            | "him"
            | "her"
            | "his"
            | "do"
            | "does"
            | "did"
            | "doing"
            | "done"
            | "can"
            | "could"
            | "should"
            | "would"
            | "will"
            | "shall"
            | "may"
            | "might"
            | "must"
            | "is"
            | "are"
            | "was"
            | "were"
            | "be"
            | "been"
            | "being"
            | "am"
            | "have"
            | "has"
            | "had"
            | "having"
            | "to"
            | "of"
            | "in"
            | "on"
            | "at"
            | "for"
            | "with"
            | "by"
            | "from"
            | "into"
            | "onto"
            | "about"
            | "as"
            | "if"
            | "whether"
            | "so"
            | "and"
            | "or"
            | "but"
            | "then"
            | "than"
            | "also"
            | "just"
            | "please"
            | "pls"
            | "kindly"
            | "hey"
            | "hi"
            | "hello"
            | "quick"
            | "question"
            | "tell"
            | "explain"
            | "describe"
            | "help"
            | "let"
            | "know"
            | "want"
            | "need"
            | "way"
            | "ways"
            | "method"
            | "steps"
            | "how"
            | "what"
            | "which"
            | "there"
            | "here"
            | "thing"
            | "things"
            | "actually"
            | "really"
            | "very"
            | "too"
            | "much"
            | "many"
            | "not"
            | "no"
            | "never"
            | "without"
            | "yet"
            | "still"
            | "ever"
            | "each"
            | "other"
            | "difference"
            | "differ"
            | "differs"
            | "different"
            | "differently"
            | "between"
            | "versus"
            | "vs"
            | "compare"
            | "compared"
            | "use"
            | "using"
            | "used"
            | "command"
            | "idiomatic"
            | "proper"
            | "properly"
            | "correct"
            | "right"
            | "correctly"
            | "possible"
            | "able"
            | "someone"
            | "something"
            | "some"
            | "any"
            | "all"
            | "every"
            | "both"
            | "go"
            | "like"
            | "walk"
            | "through"
            | "mean"
            | "meaning"
            | "define"
            | "definition"
            | "best"
            | "good"
            | "simple"
            | "basic"
            | "typical"
            | "usually"
            | "main"
            | "core"
            | "key"
            | "while"
            | "when"
            | "where"
            | "who"
            | "why"
            | "work"
            | "works"
            | "purpose"
            | "returned"
            | "returns"
            | "return"
            | "getting"
            | "get"
    )
}

/// Small, general synonym sets: different words for the same request.
const SYNONYMS: &[&[&str]] = &[
    &[
        "write",
        "give",
        "provide",
        "create",
        "generate",
        "produce",
        "compose",
        "draft",
        "make",
        "suggest",
        "recommend",
        "share",
        "show",
        "list",
    ],
    &["read", "load", "open", "import", "parse"],
    &["check", "test", "verify", "determine", "tell", "see", "find", "detect", "identify"],
    &["see", "view", "display", "show", "check", "look", "inspect"],
    &["exist", "present", "contain", "include", "there"],
    &["change", "update", "modify", "edit", "alter", "set", "configure"],
    &["fix", "solve", "resolve", "repair"],
    &["get", "obtain", "retrieve", "fetch", "find", "return", "select"],
    &["calculate", "compute", "work", "determine", "find"],
    &["convert", "turn", "transform", "cast", "change"],
    &["make", "create", "build", "set", "cook", "prepare", "brew"],
    &["short", "brief", "quick", "concise"],
    &["main", "core", "key", "primary", "principal", "central"],
    &["idea", "suggestion", "tip", "advice", "recommendation"],
    &["important", "significant", "matter", "significance", "importance"],
    &["visit", "travel", "go", "trip", "fly", "flight"],
    &["colleague", "coworker"],
    &["picture", "photo", "image"],
    &["movie", "film"],
    &["price", "cost"],
    &["stop", "prevent", "avoid", "keep"],
    &["remove", "delete", "dedupe", "eliminate"],
    &["keep", "preserve", "maintain", "retain"],
    &["tall", "high"],
    &["safe", "safely"],
    &["headphone", "headset", "earphone"],
    &["mistake", "error"],
    &["run", "execute"],
    &["copy", "clone", "duplicate"],
    &["ask", "request"],
    &["instead", "rather"],
];

/// Which [`SYNONYMS`] sets a word (or its uninflected form) belongs to, one bit per set.
fn synonym_mask(w: &str) -> u64 {
    static INDEX: std::sync::OnceLock<std::collections::HashMap<&'static str, u64>> = std::sync::OnceLock::new();
    let index = INDEX.get_or_init(|| {
        let mut map = std::collections::HashMap::new();
        for (i, set) in SYNONYMS.iter().enumerate() {
            for w in *set {
                *map.entry(*w).or_insert(0) |= 1u64 << i;
            }
        }
        map
    });
    let mut mask = index.get(w).copied().unwrap_or(0) | index.get(plural_stem(w).as_str()).copied().unwrap_or(0);
    for suffix in ["ing", "ed", "d", "s", "es", "er"] {
        if let Some(stem) = w.strip_suffix(suffix).filter(|s| s.len() >= 3) {
            mask |= index.get(stem).copied().unwrap_or(0);
            mask |= index.get(format!("{stem}e").as_str()).copied().unwrap_or(0);
        }
    }
    mask
}

fn equivalent(x: &Content, y: &Content) -> bool {
    x.key == y.key
        || x.alias.as_ref() == Some(&y.key)
        || y.alias.as_ref() == Some(&x.key)
        || x.synonyms & y.synonyms != 0
        || x.poles.iter().any(|p| y.poles.contains(p))
        || related(&x.low, &y.low)
        || x.key.as_bytes().first() == y.key.as_bytes().first()
            && (abbreviates(&x.key, std::slice::from_ref(&y.key)) || abbreviates(&y.key, std::slice::from_ref(&x.key)))
}

/// A prompt that is the other with one content word or phrase swapped for an unrelated one
/// ("pros" / "cons", "adult" / "newborn", "home" / "enterprise") asks something else. Only
/// applied when most of the content is shared; rewordings differ in too many places to tell.
fn substitution(a: &PromptFeatures, b: &PromptFeatures) -> Option<Disagreement> {
    let (ca, cb) = (&a.content, &b.content);
    if ca.is_empty() || cb.is_empty() || ca.len() > MAX_ALIGN || cb.len() > MAX_ALIGN {
        return None;
    }
    let (n, m) = (ca.len(), cb.len());
    // LCS table, suffix form: lcs[i][j] for ca[i..], cb[j..].
    let mut lcs = vec![0u16; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if ca[i].key == cb[j].key {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let shared = usize::from(lcs[at(0, 0)]);
    let (mut i, mut j) = (0, 0);
    let mut hunks: Vec<(Vec<&Content>, Vec<&Content>)> = Vec::new();
    let mut cur: (Vec<&Content>, Vec<&Content>) = (Vec::new(), Vec::new());
    while i < n || j < m {
        if i < n && j < m && ca[i].key == cb[j].key {
            if !cur.0.is_empty() || !cur.1.is_empty() {
                hunks.push(std::mem::take(&mut cur));
            }
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[at(i, j + 1)] >= lcs[at(i + 1, j)]) {
            cur.1.push(&cb[j]);
            j += 1;
        } else {
            cur.0.push(&ca[i]);
            i += 1;
        }
    }
    if !cur.0.is_empty() || !cur.1.is_empty() {
        hunks.push(cur);
    }
    // A word that moved, or has a variant among the other prompt's unaligned words, is not a
    // substitution.
    let all_del: Vec<&Content> = hunks.iter().flat_map(|h| h.0.iter().copied()).filter(|c| !c.guarded).collect();
    let all_ins: Vec<&Content> = hunks.iter().flat_map(|h| h.1.iter().copied()).filter(|c| !c.guarded).collect();
    let mut unresolved = 0;
    let mut capitalised = false;
    for (del, ins) in &hunks {
        let mut left: Vec<&Content> =
            del.iter().copied().filter(|x| !x.guarded && !all_ins.iter().any(|y| equivalent(x, y))).collect();
        let mut right: Vec<&Content> =
            ins.iter().copied().filter(|y| !y.guarded && !all_del.iter().any(|x| equivalent(x, y))).collect();
        drop_abbreviations(&mut left, &mut right);
        drop_abbreviations(&mut right, &mut left);
        if left.is_empty() || right.is_empty() {
            continue;
        }
        unresolved += 1;
        capitalised |= left.iter().chain(&right).any(|c| c.cap);
    }
    let longest = n.max(m);
    // Two fifths of the longer prompt's content words shared: enough
    // common ground that what differs is a swap, not a rewording.
    let open = shared >= 1 && shared * 5 >= longest * 2;
    if unresolved == 0 || !open {
        return None;
    }
    Some(if capitalised { Disagreement::Entities } else { Disagreement::Wording })
}

/// Removes a word of `short` that abbreviates consecutive words of `long` ("lcm" / "least
/// common multiple"), with those words.
fn drop_abbreviations(short: &mut Vec<&Content>, long: &mut Vec<&Content>) {
    let mut i = 0;
    while i < short.len() {
        let hit = (2..=4.min(long.len())).find_map(|n| {
            (0..=long.len() - n)
                .find(|&s| {
                    let window: Vec<String> = long[s..s + n].iter().map(|c| c.key.clone()).collect();
                    abbreviates(&short[i].key, &window)
                })
                .map(|s| (s, n))
        });
        match hit {
            Some((s, n)) => {
                short.remove(i);
                long.drain(s..s + n);
            }
            None => i += 1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Word helpers

/// Whether `short` abbreviates `words` in order, each word giving it a non-empty prefix
/// ("regex" / "regular expression", "lcm" / "least common multiple", "int" / "integer").
fn abbreviates(short: &str, words: &[String]) -> bool {
    fn go(s: &[char], words: &[Vec<char>]) -> bool {
        match words.split_first() {
            None => s.is_empty(),
            Some((w, rest)) => (1..=w.len().min(s.len())).any(|k| s[..k] == w[..k] && go(&s[k..], rest)),
        }
    }
    let s: Vec<char> = short.chars().collect();
    let w: Vec<Vec<char>> = words.iter().map(|w| w.chars().collect()).collect();
    let total: usize = w.iter().map(Vec::len).sum();
    if s.len() < 2 || s.len() >= total || w.is_empty() || w.len() > 4 {
        return false;
    }
    if w.len() == 1 && s.len() < 3 {
        return false;
    }
    go(&s, &w)
}

/// Inflections and typos of one word: a shared stem with known suffixes ("differ" /
/// "difference", "bake" / "baked"), or one edit apart for longer words ("revrse", "Exel").
fn related(x: &str, y: &str) -> bool {
    if x == y {
        return true;
    }
    // Accents are folded before this, so non-ASCII words are other scripts: equality only.
    let (a, b) = (x.as_bytes(), y.as_bytes());
    if a.len() < 3 || b.len() < 3 || !x.is_ascii() || !y.is_ascii() || a.iter().chain(b).any(u8::is_ascii_digit) {
        return false;
    }
    let p = a.iter().zip(b).take_while(|(c, d)| c == d).count();
    const SUFFIXES: &[&str] = &[
        "", "s", "es", "ed", "d", "ing", "er", "ers", "or", "ors", "ion", "ions", "ation", "ations", "ence", "ent",
        "ance", "ant", "ly", "ment", "ments", "al", "e", "y", "ies", "ied", "ity", "ive", "able", "ize", "ise", "ized",
        "ised", "ization", "isation", "ness", "ful",
    ];
    let (ra, rb) = (&x[p..], &y[p..]);
    if p >= 4 && SUFFIXES.contains(&ra) && SUFFIXES.contains(&rb) {
        return true;
    }
    // A silent "e" dropped before a suffix: "make" / "making", "use" / "usage".
    let vowel_suffix = |r: &str| r.starts_with(['a', 'e', 'i', 'o', 'u']) && SUFFIXES.contains(&r);
    if p >= 3 && (ra == "e" && vowel_suffix(rb) || rb == "e" && vowel_suffix(ra)) {
        return true;
    }
    a.len().min(b.len()) >= 4 && a[0] == b[0] && edit_distance_at_most_one(a, b)
}

fn edit_distance_at_most_one(a: &[u8], b: &[u8]) -> bool {
    let (s, l) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if l.len() - s.len() > 1 {
        return false;
    }
    let p = s.iter().zip(l).take_while(|(x, y)| x == y).count();
    if s.len() == l.len() {
        s[p + 1..] == l[p + 1..] || p + 1 < s.len() && s[p] == l[p + 1] && s[p + 1] == l[p] && s[p + 2..] == l[p + 2..]
    } else {
        s[p..] == l[p + 1..]
    }
}

/// Singular of a plural, crudely: enough for two prompts to agree on "lists" / "list".
fn plural_stem(w: &str) -> String {
    let n = w.chars().count();
    if n <= 3 || !w.is_ascii() {
        return w.to_string();
    }
    if let Some(s) = w.strip_suffix("ies") {
        return format!("{s}y");
    }
    for suf in ["sses", "ches", "shes", "xes", "zes"] {
        if w.ends_with(suf) {
            return w[..w.len() - 2].to_string();
        }
    }
    if w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        return w[..w.len() - 1].to_string();
    }
    w.to_string()
}

/// Lowercase alphanumeric runs, for comparing quoted text regardless of punctuation.
fn words_of(s: &str) -> Vec<String> {
    fold(s.to_lowercase()).split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Folds the common Latin accents, so "résumé" and "resume" are one word.
fn fold(s: String) -> String {
    if s.is_ascii() {
        return s;
    }
    s.chars()
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ñ' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ý' | 'ÿ' => 'y',
            '’' => '\'',
            _ => c,
        })
        .collect()
}

/// Each needle occurs in `hay` as a whole token run (not inside a longer word or path).
fn contained_all(needles: &[String], hay: &str) -> bool {
    needles.iter().all(|n| contains_bounded(hay, n))
}

fn contains_bounded(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let inner = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = hay[from..].find(needle) {
        let start = from + pos;
        let end = start + needle.len();
        let before_ok = !needle.starts_with(inner) || !hay[..start].chars().next_back().is_some_and(inner);
        let after = &hay[end..];
        // Sentence punctuation may follow; a longer word, path or domain may not.
        let rest = after.trim_start_matches(['.', ',', ';', ':', '!', '?', ')', ']', '\'', '"', '`', '’', '”']);
        let after_ok = if needle.ends_with(inner) {
            !after.starts_with(inner)
                && (after.len() == rest.len() && !after.starts_with(['/', '-', '.', '@'])
                    || rest.is_empty()
                    || rest.starts_with(char::is_whitespace))
        } else {
            true
        };
        if before_ok && after_ok {
            return true;
        }
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
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
