//! Brand impersonation: does a URL pretend to be a brand it is not served by?
//!
//! The brand list ships with the binary (`actors/data/url/brands.json`: name, official
//! domains, tokens) and an operator's file may extend it. A URL on one of a brand's own
//! domains never matches that brand. Otherwise its host and path are compared with every
//! brand's tokens, in this order, and the first technique that matches is reported:
//!
//! 1. `userinfo`: a brand's domain or token before an `@` (`https://paypal.com@evil.example`);
//! 2. the registrable label itself, once confusable characters (UTS #39 skeletons:
//!    `pаypal` with a Cyrillic `а`) and leet digits (`paypa1`, `g00gle`) are undone: a
//!    `homoglyph`, a `leet` swap, or the brand's name on a domain it does not own
//!    (`lookalike_domain`);
//! 3. `typosquat`: the label a small edit distance from a token (one edit up to 8
//!    characters, two beyond; never for short or common words);
//! 4. `combosquat`: a token as one hyphenated part of the label, or glued to a cue word
//!    (`paypal-login`, `secureamazon`);
//! 5. `subdomain`: a token or official domain among the labels left of the registrable
//!    domain (`paypal.com.account-verify.example`);
//! 6. `path`: an official domain in the path, or a token there with a cue word.
//!
//! Tokens that are ordinary words or very short (`apple`, `chase`, `ups`) count only when
//! a cue word (login, verify, wallet, ...) is in the URL, or when the match needed a
//! homoglyph or leet swap.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::normalize::NormalizedUrl;

/// The shipped brand list.
pub const SHIPPED_BRANDS: &str = include_str!("../../data/url/brands.json");

/// Words phishing URLs use to ask for credentials or money.
pub const CUE_WORDS: [&str; 55] = [
    "login",
    "logon",
    "signin",
    "sign",
    "verify",
    "verification",
    "validate",
    "validation",
    "secure",
    "security",
    "check",
    "account",
    "accounts",
    "update",
    "billing",
    "invoice",
    "wallet",
    "password",
    "passwd",
    "confirm",
    "unlock",
    "suspended",
    "suspend",
    "support",
    "auth",
    "authenticate",
    "recover",
    "recovery",
    "reset",
    "refund",
    "payment",
    "bonus",
    "gift",
    "prize",
    "reward",
    "claim",
    "airdrop",
    "kyc",
    "checkpoint",
    "alert",
    "helpdesk",
    "webscr",
    "2fa",
    "otp",
    "parcel",
    "delivery",
    "redelivery",
    "tracking",
    "track",
    "package",
    "shipment",
    "customs",
    "seed",
    "phrase",
    "restore",
];

/// One brand of the list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Brand {
    pub name: String,
    /// The registrable domains the brand owns.
    pub domains: Vec<String>,
    /// Lowercase ASCII strings that name the brand inside other domains.
    pub tokens: Vec<String>,
    /// Tokens that are ordinary words or short: they need a cue word (or a homoglyph or
    /// leet swap) to count.
    #[serde(default)]
    pub weak_tokens: Vec<String>,
}

/// What [`BrandList::find`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrandMatch {
    pub brand: String,
    pub official_domains: Vec<String>,
    /// `userinfo`, `homoglyph`, `leet`, `lookalike_domain`, `typosquat`, `combosquat`,
    /// `subdomain` or `path`.
    pub technique: &'static str,
    /// The part of the URL that matched.
    pub matched: String,
    /// The brand token it matched.
    pub token: String,
    /// Edits between the matched text and the token (after undoing swaps).
    pub distance: usize,
    /// Cue words found in the URL.
    pub cues: Vec<String>,
    /// The brand's name, exactly, in a domain it does not list, with nothing else pointing
    /// to a lure (no swap, no cue): often the brand's own unlisted domain (`google.com.br`,
    /// `paypal-community.com`), so it asks for a review rather than blocking.
    pub name_only: bool,
}

/// The brand list, ready for matching.
#[derive(Debug, Clone)]
pub struct BrandList {
    brands: Vec<Brand>,
}

/// A string and the forms a reader may take it for: its UTS #39 skeleton, and the leet
/// readings of its digits (`1` as `l` and as `i`), each with how it was reached (`exact`,
/// `leet` for an ASCII swap, `homoglyph` for a non-ASCII one).
fn readings(text: &str) -> Vec<(String, &'static str)> {
    let lower = text.to_lowercase();
    let swap = if lower.is_ascii() { "leet" } else { "homoglyph" };
    let skeleton = |s: &str| unicode_security::skeleton(s).collect::<String>().to_lowercase();
    let leet = |one: char| -> String {
        lower
            .chars()
            .map(|c| match c {
                '0' => 'o',
                '1' | '!' | '|' => one,
                '3' => 'e',
                '4' | '@' => 'a',
                '5' | '$' => 's',
                '7' => 't',
                '8' => 'b',
                '9' => 'g',
                other => other,
            })
            .collect()
    };
    let mut out = vec![(lower.clone(), "exact")];
    for candidate in [skeleton(&lower), leet('l'), leet('i'), skeleton(&leet('i'))] {
        if out.iter().all(|(seen, _)| *seen != candidate) {
            out.push((candidate, swap));
        }
    }
    out
}

/// Letters a reader takes for one another at a glance.
const LOOKALIKE_LETTERS: [(char, char); 6] = [('i', 'l'), ('m', 'n'), ('u', 'v'), ('c', 'e'), ('o', 'a'), ('g', 'q')];

/// A misspelling people miss: two neighbouring letters swapped (`discrod`), one letter
/// for a look-alike (`amazom`, `anthroplc`), or one letter doubled (`yahooo`).
fn slip_of_the_eye(text: &str, token: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (text.chars().collect(), token.chars().collect());
    if b.len() < 4 {
        return false;
    }
    if a.len() == b.len() {
        let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        return match differ[..] {
            [i] => LOOKALIKE_LETTERS.iter().any(|&(x, y)| (a[i], b[i]) == (x, y) || (a[i], b[i]) == (y, x)),
            [i, j] => j == i + 1 && a[i] == b[j] && a[j] == b[i],
            _ => false,
        };
    }
    a.len() == b.len() + 1 && (1..a.len()).any(|i| a[i] == a[i - 1] && a[..i].iter().chain(&a[i + 1..]).eq(b.iter()))
}

/// The skeleton a token is compared with (so `rn` in a URL meets `m` in a token).
fn token_skeleton(token: &str) -> String {
    unicode_security::skeleton(token).collect::<String>().to_lowercase()
}

/// The most edits a label may be from a token and still be a typosquat of it.
fn typo_budget(token: &str) -> usize {
    match token.chars().count() {
        0..=5 => 0,
        6..=8 => 1,
        _ => 2,
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

fn is_cue(word: &str) -> bool {
    CUE_WORDS.contains(&word)
}

/// Whether `text` is cue words run together (`securelogin`), or empty.
fn only_cues(text: &str) -> bool {
    text.is_empty() || CUE_WORDS.iter().any(|cue| text.strip_prefix(cue).is_some_and(only_cues))
}

/// A label made of a token glued to cue words (`secureamazon`, `paypalsecurelogin`).
fn glued_to_cue(label: &str, token: &str) -> bool {
    label.match_indices(token).any(|(at, _)| {
        let (before, after) = (&label[..at], &label[at + token.len()..]);
        !(before.is_empty() && after.is_empty()) && only_cues(before) && only_cues(after)
    })
}

/// Whether `needle` occurs in `haystack` with no letter or digit right before it.
fn occurs_at_boundary(haystack: &str, needle: &str) -> bool {
    haystack.match_indices(needle).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + needle.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

impl BrandList {
    /// The shipped list, extended (or overridden by name) by `extra` JSON when given.
    pub fn load(extra: Option<&str>) -> Result<Self, String> {
        let mut brands: Vec<Brand> =
            serde_json::from_str(SHIPPED_BRANDS).map_err(|e| format!("the shipped brand list: {e}"))?;
        if let Some(extra) = extra {
            let more: Vec<Brand> = serde_json::from_str(extra).map_err(|e| format!("the brand list file: {e}"))?;
            for brand in more {
                brands.retain(|b| b.name != brand.name);
                brands.push(brand);
            }
        }
        for brand in &mut brands {
            if brand.name.trim().is_empty()
                || brand.tokens.is_empty()
                || brand.tokens.iter().any(|t| t.trim().is_empty())
            {
                return Err(format!("brand {:?} needs a name and at least one token", brand.name));
            }
            for token in brand.tokens.iter_mut().chain(brand.weak_tokens.iter_mut()) {
                *token = token.to_lowercase();
            }
            for domain in &mut brand.domains {
                *domain = domain.trim_end_matches('.').to_lowercase();
            }
        }
        Ok(Self { brands })
    }

    pub fn len(&self) -> usize {
        self.brands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.brands.is_empty()
    }

    /// The brand whose own domain serves `url`: its registrable domain is one of the
    /// brand's. Only the registrable domain counts, so a tenant's site on a public suffix
    /// under a brand's domain (`x.s3.amazonaws.com`, `x.web.core.windows.net`) is not the
    /// brand's.
    pub fn official(&self, url: &NormalizedUrl) -> Option<&Brand> {
        let registrable = url.registrable.as_deref()?;
        self.brands.iter().find(|brand| brand.domains.iter().any(|domain| domain == registrable))
    }

    /// The brand `url` impersonates, if any (see the module's doc).
    pub fn find(&self, url: &NormalizedUrl) -> Option<BrandMatch> {
        if url.ip.is_none() && self.official(url).is_some() {
            return None;
        }
        let path = format!("{}{}", url.url.path(), url.url.query().map(|q| format!("?{q}")).unwrap_or_default());
        // Decoded, as the address bar shows it: `/%70aypal/login` is `/paypal/login`.
        let path = percent_encoding::percent_decode_str(&path).decode_utf8_lossy().into_owned();
        let mut cues: BTreeSet<String> = BTreeSet::new();
        for word in words(&url.unicode_host).into_iter().chain(words(&path)) {
            if is_cue(&word) {
                cues.insert(word);
            }
        }
        let cues: Vec<String> = cues.into_iter().collect();
        let found = |brand: &Brand, technique: &'static str, matched: &str, token: &str, distance: usize| BrandMatch {
            brand: brand.name.clone(),
            official_domains: brand.domains.clone(),
            technique,
            matched: matched.to_owned(),
            token: token.to_owned(),
            distance,
            cues: cues.clone(),
            name_only: false,
        };
        let has_cue = !cues.is_empty();
        let counts = |brand: &Brand, token: &str, swapped: bool| {
            swapped || has_cue || !brand.weak_tokens.iter().any(|w| w == token)
        };

        // 1. userinfo
        if let Some(userinfo) = url.userinfo.as_deref().map(str::to_lowercase) {
            for brand in &self.brands {
                let by_domain = brand.domains.iter().find(|d| occurs_at_boundary(&userinfo, d));
                let by_token = brand.tokens.iter().find(|t| words(&userinfo).iter().any(|w| w == *t));
                if let Some(hit) = by_domain.or(by_token) {
                    return Some(found(brand, "userinfo", &userinfo, hit, 0));
                }
            }
        }
        let label = url.registrable_label().unwrap_or_default();
        let joined: String = label.chars().filter(|c| *c != '-').collect();
        let label_readings = readings(&joined);
        let parts: Vec<&str> = label.split('-').filter(|p| !p.is_empty()).collect();

        // 2. and 3. the whole label
        for brand in &self.brands {
            for token in &brand.tokens {
                let skeleton = token_skeleton(token);
                for (reading, how) in &label_readings {
                    // `rnicrosoft` reads as `microsoft` only through the skeleton; `amazon`
                    // meets `amazon`'s skeleton too, but nothing was swapped.
                    let swapped = joined.to_lowercase() != *token;
                    let technique = match (swapped, *how) {
                        (false, _) => "lookalike_domain",
                        (true, "exact") => "homoglyph",
                        (true, how) => how,
                    };
                    if (*reading == *token || *reading == skeleton) && counts(brand, token, swapped) {
                        let mut hit = found(brand, technique, &label, token, 0);
                        hit.name_only = !swapped && !has_cue;
                        return Some(hit);
                    }
                }
            }
        }
        for brand in &self.brands {
            for token in &brand.tokens {
                let budget = if brand.weak_tokens.contains(token) { 0 } else { typo_budget(token) };
                for (reading, _) in &label_readings {
                    let distance = strsim::osa_distance(reading, token);
                    let slip = slip_of_the_eye(reading, token) && counts(brand, token, false);
                    if (1..=budget).contains(&distance) || slip {
                        return Some(found(brand, "typosquat", &label, token, distance));
                    }
                }
            }
        }

        // 4. combosquat: exact parts first (over every brand), then misspelt ones.
        if parts.len() > 1 {
            let others_have_cue = |skip: usize| parts.iter().enumerate().any(|(i, p)| i != skip && is_cue(p));
            for misspelt in [false, true] {
                for brand in &self.brands {
                    for token in &brand.tokens {
                        let skeleton = token_skeleton(token);
                        for (i, part) in parts.iter().enumerate() {
                            for (reading, _) in readings(part) {
                                // Misspelt parts count only as slips of the eye (not any one
                                // edit: `finance` is one from `binance`).
                                let distance = match misspelt {
                                    false if reading == *token || reading == skeleton => 0,
                                    true if slip_of_the_eye(&reading, token) => 1,
                                    _ => continue,
                                };
                                let swapped = part.to_lowercase() != *token;
                                if counts(brand, token, swapped) || others_have_cue(i) {
                                    let mut hit = found(brand, "combosquat", &label, token, distance);
                                    hit.name_only = !swapped && !has_cue;
                                    return Some(hit);
                                }
                            }
                        }
                    }
                }
            }
        } else {
            for brand in &self.brands {
                if let Some(token) = brand
                    .tokens
                    .iter()
                    .find(|token| label_readings.iter().any(|(reading, _)| glued_to_cue(reading, token)))
                {
                    return Some(found(brand, "combosquat", &label, token, 0));
                }
            }
        }

        // 5. subdomain: only the labels left of the registrable domain.
        let subdomains = url.subdomain_labels();
        let left = subdomains.join(".").to_lowercase();
        for brand in &self.brands {
            if let Some(domain) = brand.domains.iter().find(|d| occurs_at_boundary(&left, d)) {
                return Some(found(brand, "subdomain", &url.unicode_host, domain, 0));
            }
            for token in &brand.tokens {
                for sub in &subdomains {
                    let hit = sub.split('-').any(|part| {
                        readings(part).iter().any(|(reading, _)| {
                            (reading == token || *reading == token_skeleton(token))
                                && counts(brand, token, part.to_lowercase() != *token)
                        })
                    });
                    if hit {
                        return Some(found(brand, "subdomain", sub, token, 0));
                    }
                }
            }
        }

        // 6. path: a page that names a brand is not an impersonation unless it also asks
        // for credentials (a cue word).
        let path_lower = path.to_lowercase();
        let path_words = words(&path_lower);
        for brand in &self.brands {
            if !has_cue {
                break;
            }
            if let Some(domain) = brand.domains.iter().find(|d| occurs_at_boundary(&path_lower, d)) {
                return Some(found(brand, "path", &path, domain, 0));
            }
            {
                if let Some(token) = brand.tokens.iter().find(|t| path_words.iter().any(|w| w == *t)) {
                    return Some(found(brand, "path", &path, token, 0));
                }
            }
        }
        None
    }
}
