//! URL intelligence: a deterministic inspection of a link before an agent visits it or a
//! customer's domain is onboarded.
//!
//! The stages, each tested on its own against local fakes:
//! - [`normalize`]: the URL as a browser reads it, its registrable domain (public suffix
//!   list), userinfo and IP-literal tricks;
//! - [`brands`]: brand impersonation over the shipped brand list;
//! - [`dns`]: A/AAAA, MX and NS through hickory-resolver (also the outbound guard's lookup);
//! - [`redirects`]: hops followed through the outbound guard;
//! - [`tls`]: the certificate judged by rustls's WebPKI verifier;
//! - [`rdap`]: registration and expiry from the registry named by IANA's bootstrap;
//! - [`parked`]: parking services' name servers, mail exchangers and page phrases;
//! - [`signals`]: the network stages' findings as signals, one deterministic mapping;
//! - [`score`]: profiles, weights, thresholds, the score and the decision.
//!
//! [`pipeline`]'s `Inspector` runs them all for one URL, with the signal cache.
//! [`service`]'s `UrlIntel` (`engine.url()`) analyses and charges, keeps the history and
//! stats, and the profiles; [`batch`] runs batches as `urlbatch:{uuid}` actors and delivers
//! their [`webhook`]s.

pub mod batch;
pub mod brands;
pub mod dns;
pub mod normalize;
pub mod parked;
pub mod pipeline;
pub mod rdap;
pub mod redirects;
pub mod score;
pub mod service;
pub mod signals;
pub mod tls;
pub mod webhook;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use unicode_security::MixedScript;

use self::{
    brands::{BrandList, BrandMatch},
    normalize::NormalizedUrl,
    score::Profile,
};

/// A signal as the spec shows it: its id, its weight under the profile, its value and a
/// line for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub id: &'static str,
    pub weight: f64,
    pub value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the URL alone says.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticFindings {
    /// (id, value, detail) of every signal that fired.
    pub fired: Vec<(&'static str, Value, String)>,
    pub brand_match: Option<BrandMatch>,
    pub official_brand: Option<String>,
}

/// The signals read from the URL itself, without the network.
pub fn static_findings(url: &NormalizedUrl, brands: &BrandList) -> StaticFindings {
    let mut fired: Vec<(&'static str, Value, String)> = Vec::new();
    if let Some(userinfo) = &url.userinfo {
        fired.push((
            "userinfo_in_url",
            json!(true),
            format!("{userinfo:?} before the @ is not the host; the browser goes to {}", url.host),
        ));
    }
    if let Some(ip) = url.ip {
        fired.push(("ip_literal_host", json!(ip.to_string()), "the host is an IP address, not a name".into()));
    }
    if url.is_idn() {
        fired.push((
            "idn_host",
            json!(url.unicode_host),
            format!("reads as {} (ASCII {})", url.unicode_host, url.host),
        ));
        if let Some(label) = url.unicode_host.split('.').find(|label| !label.is_single_script()) {
            fired.push(("mixed_script_host", json!(label), format!("{label:?} mixes writing systems")));
        }
    }
    if let Some(port) = url.port {
        fired.push(("non_standard_port", json!(port), format!("port {port}")));
    }
    if url.url.scheme() == "http" {
        fired.push(("insecure_scheme", json!("http"), "plain http: the page can be changed on the way".into()));
    }
    if url.ip.is_none() && url.registrable.is_none() {
        fired.push(("no_registrable_domain", json!(url.host), "the host is a public suffix itself".into()));
    }
    let official_brand = if url.ip.is_none() { brands.official(url).map(|b| b.name.clone()) } else { None };
    if let Some(brand) = &official_brand {
        fired.push(("official_brand_domain", json!(brand), format!("{} is {brand}'s own", url.domain())));
    }
    let brand_match = brands.find(url);
    if let Some(found) = &brand_match {
        let id = if found.name_only { "brand_name_in_domain" } else { "brand_impersonation" };
        fired.push((
            id,
            json!(found.brand),
            format!("{} ({}: {:?} reads as {:?})", found.brand, found.technique, found.matched, found.token),
        ));
    }
    let cues = brand_match.as_ref().map(|m| m.cues.clone()).unwrap_or_else(|| {
        let text = format!("{} {}", url.unicode_host, url.url.path()).to_lowercase();
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| brands::CUE_WORDS.contains(w))
            .map(str::to_owned)
            .collect()
    });
    if !cues.is_empty() && official_brand.is_none() {
        fired.push((
            "credential_keywords",
            json!(cues.join(",")),
            format!("asks for credentials: {}", cues.join(", ")),
        ));
    }
    StaticFindings { fired, brand_match, official_brand }
}

/// Weighs fired signals under a profile: the signals as the spec shows them, the score
/// and the decision.
pub fn weigh(
    fired: &[(&'static str, Value, String)],
    profile: &Profile,
    overrides: &BTreeMap<String, f64>,
) -> (Vec<Signal>, f64, &'static str) {
    let signals: Vec<Signal> = fired
        .iter()
        .map(|(id, value, detail)| Signal {
            id,
            weight: score::weight(id, profile, overrides),
            value: value.clone(),
            detail: Some(detail.clone()),
        })
        .collect();
    let total = score::score(signals.iter().map(|s| s.weight));
    (signals, total, score::decide(total, &profile.thresholds))
}

#[cfg(test)]
mod tests;
