//! Tokenising a prompt: code spans, quoted text, words, contractions, links; and the small
//! word helpers the other guards share.

use super::*;

pub(super) enum Segment {
    Text(String),
    Code,
}

/// Splits out backtick spans (inline and fenced): their content is code, compared verbatim,
/// and must not be read as words, quotes or negations.
pub(super) fn split_code(text: &str) -> (Vec<Segment>, Vec<String>) {
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
pub(super) fn quoted_spans(segments: &[Segment]) -> Vec<String> {
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

pub(super) fn tokenize(segments: &[Segment]) -> Vec<Tok> {
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

pub(super) fn push(toks: &mut Vec<Tok>, raw: &str, kind: Kind, glued: bool) {
    let low = fold(raw.to_lowercase());
    let cap = raw.chars().any(char::is_uppercase);
    toks.push(Tok { raw: raw.to_string(), low, kind, cap, sentence_start: false, glued });
}

/// One whitespace-separated chunk: a link or code-looking token whole, otherwise words,
/// numbers and punctuation.
pub(super) fn chunk_tokens(chunk: &str, toks: &mut Vec<Tok>) {
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

pub(super) fn word_tokens(core: &str, toks: &mut Vec<Tok>) {
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

pub(super) fn is_symbol_unit(c: char) -> bool {
    matches!(c, '$' | '€' | '£' | '¥' | '%' | '°' | '₹')
}

/// Expands contractions so "doesn't" negates like "does not" and "what's" reads "what is";
/// a possessive "'s" is dropped so "Kant's" is the entity "Kant".
pub(super) fn contraction(w: &str, toks: &mut Vec<Tok>, glued: bool) {
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

pub(super) fn is_link(s: &str) -> bool {
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
pub(super) fn is_code_like(s: &str) -> bool {
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
// Word helpers

/// Whether `short` abbreviates `words` in order, each word giving it a non-empty prefix
/// ("regex" / "regular expression", "lcm" / "least common multiple", "int" / "integer").
pub(super) fn abbreviates(short: &str, words: &[String]) -> bool {
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
pub(super) fn related(x: &str, y: &str) -> bool {
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

pub(super) fn edit_distance_at_most_one(a: &[u8], b: &[u8]) -> bool {
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
pub(super) fn plural_stem(w: &str) -> String {
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
pub(super) fn words_of(s: &str) -> Vec<String> {
    fold(s.to_lowercase()).split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

pub(super) fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Folds the common Latin accents, so "résumé" and "resume" are one word.
pub(super) fn fold(s: String) -> String {
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
pub(super) fn contained_all(needles: &[String], hay: &str) -> bool {
    needles.iter().all(|n| contains_bounded(hay, n))
}

pub(super) fn contains_bounded(hay: &str, needle: &str) -> bool {
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

pub(super) fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
