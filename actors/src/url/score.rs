//! Profiles, and the score and decision they give a URL's signals.
//!
//! Every signal that fires adds its weight, as the profile (or the request's `weights`)
//! sets it, to the score; the sum is kept within 0..=100. The profile's thresholds turn the
//! score into a decision: at least `block` blocks, at least `warn` warns, at least `review`
//! asks for a review, anything less is allowed. The same signals and weights always give
//! the same answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every signal the pipeline can raise, with the default profile's weight and what it
/// means.
pub const SIGNALS: [(&str, f64, &str); 29] = [
    ("brand_impersonation", 75.0, "the URL imitates a brand on a domain the brand does not own"),
    (
        "brand_name_in_domain",
        40.0,
        "a brand's exact name in a domain not on its list, with no lure: possibly the brand's own, to review",
    ),
    ("credential_keywords", 5.0, "words that ask for credentials or money (login, verify, wallet, ...)"),
    ("userinfo_in_url", 40.0, "text before an @ makes the URL read as another host"),
    ("ip_literal_host", 25.0, "the host is a bare IP address"),
    ("idn_host", 10.0, "the host is internationalised (punycode)"),
    ("mixed_script_host", 30.0, "a label of the host mixes scripts (Latin with Cyrillic, ...)"),
    ("non_standard_port", 5.0, "the URL names a port that is not its scheme's default"),
    ("insecure_scheme", 5.0, "plain http"),
    ("official_brand_domain", -30.0, "the host is one of a listed brand's own domains"),
    ("no_registrable_domain", 10.0, "the host is a bare public suffix or has no registrable domain"),
    ("dns_nxdomain", 60.0, "the domain does not exist (NXDOMAIN)"),
    ("dns_servfail", 15.0, "the domain's name servers fail (SERVFAIL)"),
    ("dns_no_address", 15.0, "the host has no A or AAAA record"),
    ("dns_unavailable", 0.0, "DNS could not be asked from here; says nothing about the domain"),
    ("no_mx", 3.0, "the domain receives no mail (no MX record)"),
    ("redirect_refused", 50.0, "a redirect leads to a private, loopback or metadata address"),
    ("redirect_loop", 15.0, "more redirects than the limit"),
    ("many_redirects", 10.0, "three or more redirects"),
    ("cross_domain_redirect", 5.0, "the final page is on another registrable domain"),
    ("bad_redirect_location", 20.0, "a redirect to something that is not an http(s) URL"),
    ("http_error_status", 5.0, "the final page answers 4xx or 5xx"),
    ("fetch_unavailable", 0.0, "the page could not be fetched from here; says nothing about the domain"),
    ("tls_invalid", 30.0, "the certificate is expired, not yet valid, for another name, self-signed or untrusted"),
    ("tls_expiring_soon", 5.0, "the certificate expires within 14 days"),
    ("tls_unavailable", 0.0, "no TLS handshake from here; says nothing about the certificate"),
    ("young_domain", 25.0, "the domain was registered less than 30 days ago"),
    ("domain_expiring", 5.0, "the domain's registration ends within 30 days"),
    ("parked_domain", 30.0, "the domain is parked (for sale or ads)"),
];

/// Thresholds of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub review: f64,
    pub warn: f64,
    pub block: f64,
}

/// A named set of weights and thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Signal id → weight; a signal not named here weighs what the default profile says.
    pub weights: BTreeMap<String, f64>,
    pub thresholds: Thresholds,
}

pub const DEFAULT_THRESHOLDS: Thresholds = Thresholds { review: 20.0, warn: 40.0, block: 70.0 };

/// The built-in profiles: `default`, and three tuned for a use.
pub fn builtin_profiles() -> Vec<Profile> {
    let with = |name: &str, description: &str, changes: &[(&str, f64)], thresholds: Thresholds| Profile {
        name: name.into(),
        description: description.into(),
        weights: changes.iter().map(|(id, w)| ((*id).to_owned(), *w)).collect(),
        thresholds,
    };
    vec![
        with("default", "Balanced weights for checking a link.", &[], DEFAULT_THRESHOLDS),
        with(
            "agent-browsing",
            "Before an agent visits a link: stricter on hosts that hide where they go.",
            &[("ip_literal_host", 40.0), ("userinfo_in_url", 60.0), ("non_standard_port", 15.0)],
            Thresholds { review: 15.0, warn: 35.0, block: 60.0 },
        ),
        with(
            "affiliate-review",
            "Reviewing affiliate and partner links: brand abuse weighs most.",
            &[("brand_impersonation", 85.0), ("credential_keywords", 10.0)],
            DEFAULT_THRESHOLDS,
        ),
        with(
            "lead-screening",
            "Screening inbound leads' domains: young, parked or mail-less domains weigh more.",
            &[("insecure_scheme", 10.0)],
            Thresholds { review: 25.0, warn: 45.0, block: 75.0 },
        ),
    ]
}

/// The weight a signal has under `profile`, after the request's `overrides`.
pub fn weight(id: &str, profile: &Profile, overrides: &BTreeMap<String, f64>) -> f64 {
    overrides
        .get(id)
        .or_else(|| profile.weights.get(id))
        .copied()
        .or_else(|| SIGNALS.iter().find(|(known, _, _)| *known == id).map(|(_, w, _)| *w))
        .unwrap_or(0.0)
}

/// The score (0..=100, one decimal) of signals with these weights.
pub fn score(weights: impl IntoIterator<Item = f64>) -> f64 {
    let sum: f64 = weights.into_iter().sum();
    (sum.clamp(0.0, 100.0) * 10.0).round() / 10.0
}

/// `allow`, `review`, `warn` or `block`.
pub fn decide(score: f64, thresholds: &Thresholds) -> &'static str {
    if score >= thresholds.block {
        "block"
    } else if score >= thresholds.warn {
        "warn"
    } else if score >= thresholds.review {
        "review"
    } else {
        "allow"
    }
}

/// Checks weights and thresholds a tenant sends: known signals, finite weights within
/// ±100, thresholds rising within 0..=100.
pub fn validate(weights: &BTreeMap<String, f64>, thresholds: Option<&Thresholds>) -> Result<(), String> {
    for (id, w) in weights {
        if !SIGNALS.iter().any(|(known, _, _)| known == id) {
            return Err(format!("weights.{id} is not a signal; see GET /v1/url/profiles for the list"));
        }
        if !w.is_finite() || w.abs() > 100.0 {
            return Err(format!("weights.{id} must be a number from -100 to 100"));
        }
    }
    if let Some(t) = thresholds {
        let ok = [t.review, t.warn, t.block].iter().all(|v| v.is_finite() && (0.0..=100.0).contains(v))
            && t.review <= t.warn
            && t.warn <= t.block;
        if !ok {
            return Err("thresholds must be numbers from 0 to 100 with review <= warn <= block".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{builtin_profiles, decide, score, validate, weight, Thresholds};

    #[test]
    fn scores_are_clamped_and_decided_by_thresholds() {
        let t = Thresholds { review: 20.0, warn: 40.0, block: 70.0 };
        assert_eq!(score([75.0, 5.0, 40.0]), 100.0);
        assert_eq!(score([-30.0]), 0.0);
        assert_eq!(score([10.04, 5.0]), 15.0);
        for (s, d) in [(0.0, "allow"), (19.9, "allow"), (20.0, "review"), (40.0, "warn"), (70.0, "block")] {
            assert_eq!(decide(s, &t), d, "{s}");
        }
    }

    #[test]
    fn request_weights_override_the_profile_which_overrides_the_defaults() {
        let profiles = builtin_profiles();
        let affiliate = profiles.iter().find(|p| p.name == "affiliate-review").unwrap();
        let none = BTreeMap::new();
        assert_eq!(weight("brand_impersonation", affiliate, &none), 85.0);
        assert_eq!(weight("ip_literal_host", affiliate, &none), 25.0);
        let mine = BTreeMap::from([("brand_impersonation".to_owned(), 10.0)]);
        assert_eq!(weight("brand_impersonation", affiliate, &mine), 10.0);
    }

    #[test]
    fn bad_weights_and_thresholds_are_refused() {
        assert!(validate(&BTreeMap::from([("nope".into(), 1.0)]), None).unwrap_err().contains("weights.nope"));
        assert!(validate(&BTreeMap::from([("idn_host".into(), f64::NAN)]), None).is_err());
        assert!(validate(&BTreeMap::new(), Some(&Thresholds { review: 50.0, warn: 40.0, block: 70.0 })).is_err());
        assert!(validate(&BTreeMap::from([("idn_host".into(), -20.0)]), None).is_ok());
    }
}
