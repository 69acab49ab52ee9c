//! Question words, direction and order ("list to tuple" vs "tuple to list"), and the word
//! swap rule: one content word replaced by another that is not a known variant of it.

use super::*;

pub(super) fn question_words(toks: &[Tok]) -> Vec<&'static str> {
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
pub(super) fn directed_pairs(toks: &[Tok]) -> Vec<(String, String)> {
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

pub(super) fn is_marker_word(w: &str) -> bool {
    matches!(w, "to" | "into" | "onto" | "towards" | "than" | "from" | "when" | "if" | "while" | "and" | "or")
}

pub(super) fn reversed(a: &PromptFeatures, b: &PromptFeatures) -> bool {
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
pub(super) fn swapped(a: &[String], b: &[String]) -> bool {
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
pub(super) fn is_ignorable(w: &str) -> bool {
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
pub(super) const SYNONYMS: &[&[&str]] = &[
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
pub(super) fn synonym_mask(w: &str) -> u64 {
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

pub(super) fn equivalent(x: &Content, y: &Content) -> bool {
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
pub(super) fn substitution(a: &PromptFeatures, b: &PromptFeatures) -> Option<Disagreement> {
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
pub(super) fn drop_abbreviations(short: &mut Vec<&Content>, long: &mut Vec<&Content>) {
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
