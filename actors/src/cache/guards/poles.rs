//! Antonym and alternative groups: words whose swap changes the question (larger/smaller,
//! first/last, pros/cons, JSON/YAML, beginners/experts).

use super::*;

/// A group of mutually exclusive alternatives; two prompts naming different members of the
/// same group ask different questions.
pub(super) struct Group {
    kind: Disagreement,
    /// Naming a member at all matters (a format asked for), not only naming a different one.
    one_sided: bool,
}

pub(super) const FORMAT: u8 = 24;
pub(super) const TABLE: u8 = 6;

pub(super) const GROUPS: &[Group] = &[
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
pub(super) const POLES: &[(&str, u8, u8)] = &[
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

pub(super) type PoleIndex = std::collections::HashMap<&'static str, Vec<(Vec<&'static str>, u8, u8)>>;

/// [`POLES`] by the first word of each phrase, built once.
pub(super) fn pole_index() -> &'static PoleIndex {
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
pub(super) fn pole_at(words: &[&str], stems: &[String], i: usize) -> (Vec<(u8, u8)>, usize) {
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
pub(super) fn content_and_poles(toks: &[Tok]) -> (Vec<Content>, Vec<(u8, u8)>) {
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

pub(super) fn is_date_word(w: &str) -> bool {
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

pub(super) fn poles_differ(a: &[(u8, u8)], b: &[(u8, u8)]) -> Option<Disagreement> {
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
