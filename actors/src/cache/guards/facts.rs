//! The facts two prompts must share: numbers, units and currencies, dates, negation, names.

use super::*;

pub(super) fn cardinal(w: &str) -> Option<u64> {
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

pub(super) fn scale(w: &str) -> Option<u64> {
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
pub(super) fn number_word(t: &Tok, prev: Option<&Tok>) -> Option<String> {
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

pub(super) fn roman_value(s: &str) -> Option<u32> {
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
pub(super) fn canonical_number(s: &str) -> String {
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

pub(super) fn numbers(toks: &[Tok]) -> Vec<String> {
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
pub(super) fn unit(w: &str) -> Option<(&'static str, bool)> {
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

pub(super) fn canonical_currency(s: &str) -> &'static str {
    match s {
        "cad" => "cad",
        "aud" => "aud",
        "chf" => "chf",
        "mxn" => "mxn",
        "brl" => "brl",
        _ => "cny",
    }
}

pub(super) fn units(toks: &[Tok]) -> (Vec<&'static str>, Vec<&'static str>) {
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

pub(super) fn units_differ(a: &PromptFeatures, b: &PromptFeatures) -> bool {
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

pub(super) fn month(t: &Tok, next: Option<&Tok>, prev: Option<&Tok>) -> Option<&'static str> {
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

pub(super) fn dates(toks: &[Tok]) -> Vec<String> {
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

pub(super) fn negations(toks: &[Tok]) -> u32 {
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

pub(super) fn entities(toks: &[Tok]) -> Vec<Vec<String>> {
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

pub(super) fn camel_parts(raw: &str) -> Vec<String> {
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
pub(super) fn entities_contained(a: &PromptFeatures, b: &PromptFeatures) -> bool {
    a.entities.iter().all(|names| names.iter().any(|e| contains_entity(b, e)))
}

pub(super) fn contains_entity(b: &PromptFeatures, e: &String) -> bool {
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
pub(super) fn same_pole_word(e: &str, words: &[String]) -> bool {
    let poles = |w: &str| {
        pole_index()
            .get(w)
            .map(|list| list.iter().filter(|x| x.0.len() == 1).map(|x| (x.1, x.2)).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let pe = poles(e);
    !pe.is_empty() && words.iter().any(|w| poles(w).iter().any(|p| pe.contains(p)))
}

pub(super) fn is_acronym_of(e: &str, words: &[String]) -> bool {
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
