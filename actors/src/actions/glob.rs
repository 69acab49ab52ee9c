//! Glob patterns of action policies: `*` matches any run of characters (also none), `?`
//! exactly one; everything else matches itself. Linear in practice: the classic two-pointer
//! match that backtracks only to the last `*`.

pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_p, star_t)) = star {
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_as_documented() {
        let cases = [
            ("*", "", true),
            ("*", "stripe.charge", true),
            ("stripe.*", "stripe.charge", true),
            ("stripe.*", "stripe.", true),
            ("stripe.*", "paypal.charge", false),
            ("*.delete", "github.repo.delete", true),
            ("*.delete", "github.repo.deleted", false),
            ("gmail.send", "gmail.send", true),
            ("gmail.send", "gmail.sendx", false),
            ("g?ail.*", "gmail.send", true),
            ("g?ail.*", "gail.send", false),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "xxaxxcxxbxx", false),
            ("naïve*", "naïve café", true),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(matches(pattern, text), expected, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn many_stars_do_not_blow_up() {
        let pattern = "*a".repeat(100);
        let text = "a".repeat(99);
        assert!(!matches(&pattern, &text));
    }
}
