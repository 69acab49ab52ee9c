//! Glob patterns of action policies: `*` matches any run of characters (also none), `?`
//! exactly one; everything else matches itself. A pattern is classified once, when a
//! policy set is indexed, so the common shapes (a literal, a literal then `*`) compare
//! without walking characters.

/// A compiled pattern.
#[derive(Debug, Clone)]
pub enum Glob {
    /// No wildcard: equal strings only.
    Exact(String),
    /// A literal then only `*`s (`stripe.*`): a prefix test.
    Prefix(String),
    /// Only `*`s: everything.
    Any,
    /// Anything else, as characters for the two-pointer match.
    General { chars: Vec<char>, literal_prefix: String, literal_suffix: String },
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        let wildcard = |c: char| c == '*' || c == '?';
        match pattern.find(wildcard) {
            None => Glob::Exact(pattern.to_owned()),
            Some(0) if pattern.chars().all(|c| c == '*') => Glob::Any,
            Some(at) if pattern[at..].chars().all(|c| c == '*') => Glob::Prefix(pattern[..at].to_owned()),
            Some(at) => {
                let suffix_at = pattern.rfind(wildcard).map_or(0, |last| last + 1);
                Glob::General {
                    chars: pattern.chars().collect(),
                    literal_prefix: pattern[..at].to_owned(),
                    literal_suffix: pattern[suffix_at..].to_owned(),
                }
            }
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        self.matches_counting(text, &std::cell::Cell::new(0))
    }

    /// [`Glob::matches`], adding the characters a general match compared to `steps`: a
    /// check's caller bounds the work tenant-written patterns and values can ask for.
    pub fn matches_counting(&self, text: &str, steps: &std::cell::Cell<u64>) -> bool {
        match self {
            Glob::Exact(literal) => literal == text,
            Glob::Prefix(prefix) => text.starts_with(prefix.as_str()),
            Glob::Any => true,
            Glob::General { chars, literal_prefix, .. } => {
                text.starts_with(literal_prefix.as_str()) && matches_chars(chars, text, steps)
            }
        }
    }

    /// The text every match ends with (empty when the pattern ends with a wildcard).
    pub fn literal_suffix(&self) -> &str {
        match self {
            Glob::Exact(literal) => literal,
            Glob::Prefix(_) | Glob::Any => "",
            Glob::General { literal_suffix, .. } => literal_suffix,
        }
    }

    /// The text every match starts with (empty when the pattern starts with a wildcard).
    pub fn literal_prefix(&self) -> &str {
        match self {
            Glob::Exact(literal) => literal,
            Glob::Prefix(prefix) => prefix,
            Glob::Any => "",
            Glob::General { literal_prefix, .. } => literal_prefix,
        }
    }
}

/// Whether `pattern` matches `text` (compiles it each time; tests and one-offs).
pub fn matches(pattern: &str, text: &str) -> bool {
    Glob::new(pattern).matches(text)
}

/// The classic two-pointer match that backtracks only to the last `*`: linear in practice,
/// text × pattern at worst (`*aaab` against `aaaa…`), which `steps` counts.
/// `ti` is a byte offset into `text`, always on a character boundary.
fn matches_chars(pattern: &[char], text: &str, steps: &std::cell::Cell<u64>) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    let mut compared = 0u64;
    let counted = |compared: u64| steps.set(steps.get().saturating_add(compared));
    while let Some(c) = text[ti..].chars().next() {
        compared += 1;
        // A `*` is a wildcard even when the text has a `*` there too.
        if pi < pattern.len() && pattern[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < pattern.len() && (pattern[pi] == '?' || pattern[pi] == c) {
            pi += 1;
            ti += c.len_utf8();
        } else if let Some((star_p, star_t)) = star {
            let skipped = text[star_t..].chars().next().map_or(1, char::len_utf8);
            pi = star_p + 1;
            ti = star_t + skipped;
            star = Some((star_p, ti));
        } else {
            counted(compared);
            return false;
        }
    }
    counted(compared);
    pattern[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::{matches, Glob};

    #[test]
    fn globs_match_as_documented() {
        let cases = [
            ("*", "", true),
            ("*", "stripe.charge", true),
            ("**", "x", true),
            ("stripe.*", "stripe.charge", true),
            ("stripe.*", "stripe.", true),
            ("stripe.*", "paypal.charge", false),
            ("stripe.**", "stripe.x", true),
            ("*.delete", "github.repo.delete", true),
            ("*.delete", "github.repo.deleted", false),
            ("gmail.send", "gmail.send", true),
            ("gmail.send", "gmail.sendx", false),
            ("g?ail.*", "gmail.send", true),
            ("g?ail.*", "gail.send", false),
            ("g*l.s?nd", "gmail.send", true),
            ("g*l.s?nd", "gmail.sendx", false),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "xxaxxcxxbxx", false),
            ("naïve*", "naïve café", true),
            ("caf?", "café", true),
            ("*é", "café", true),
            ("?", "é", true),
            ("??", "é", false),
            ("", "", true),
            ("", "x", false),
            ("*.delete", "*x.delete", true),
            ("*b", "*xb", true),
            ("a*b", "a*xb", true),
            ("a*?", "a**", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(matches(pattern, text), expected, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn patterns_are_classified_by_shape() {
        assert!(matches!(Glob::new("gmail.send"), Glob::Exact(_)));
        assert!(matches!(Glob::new("stripe.*"), Glob::Prefix(ref p) if p == "stripe."));
        assert!(matches!(Glob::new("***"), Glob::Any));
        assert_eq!(Glob::new("svc?.op*").literal_prefix(), "svc");
        assert_eq!(Glob::new("*.delete").literal_prefix(), "");
        assert_eq!(Glob::new("*.delete").literal_suffix(), ".delete");
        assert_eq!(Glob::new("a*b?c").literal_suffix(), "c");
        assert_eq!(Glob::new("a*").literal_suffix(), "");
    }

    #[test]
    fn many_stars_do_not_blow_up() {
        let pattern = "*a".repeat(100);
        let text = "a".repeat(99);
        assert!(!matches(&pattern, &text));
    }
}
