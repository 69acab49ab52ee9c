//! The network stages' findings as signals: one deterministic mapping, so the same findings
//! (fresh or from the signal cache) always give the same signals.
//!
//! A stage that could not run from here (no DNS answer, no connection, no registry) raises
//! its `_unavailable` signal, which weighs nothing by default: a brand's own domain checked
//! from a machine without a network is not blocked for it.

use serde_json::{json, Value};

use super::{
    dns::{DnsFindings, DnsStatus},
    parked::ParkedEvidence,
    rdap::{RdapError, RdapFindings},
    redirects::{RedirectFindings, Stopped},
    tls::{TlsError, TlsFindings},
};

/// A fired signal: id, value, detail.
pub type Fired = (&'static str, Value, String);

/// Days under which a domain counts as young, a certificate or registration as ending.
pub const YOUNG_DOMAIN_DAYS: i64 = 30;
pub const TLS_EXPIRING_DAYS: i64 = 14;
pub const DOMAIN_EXPIRING_DAYS: i64 = 30;

/// Everything the network stages found for one URL; `None` for a stage that did not run
/// (an IP literal has no DNS or RDAP; plain http has no TLS).
#[derive(Debug, Clone, Default)]
pub struct NetworkFindings {
    pub dns: Option<DnsFindings>,
    pub redirects: Option<RedirectFindings>,
    /// The registrable domain of the final page, when it differs from the URL's.
    pub final_domain: Option<String>,
    pub tls: Option<Result<TlsFindings, TlsError>>,
    pub rdap: Option<Result<RdapFindings, RdapError>>,
    pub parked: Option<ParkedEvidence>,
}

pub fn network_signals(found: &NetworkFindings, now_secs: i64) -> Vec<Fired> {
    let mut fired: Vec<Fired> = Vec::new();
    if let Some(dns) = &found.dns {
        match dns.status {
            DnsStatus::Resolved => {}
            DnsStatus::NxDomain => fired.push(("dns_nxdomain", json!(true), dns.detail.clone())),
            DnsStatus::ServFail => fired.push(("dns_servfail", json!(true), dns.detail.clone())),
            DnsStatus::NoAddress => fired.push(("dns_no_address", json!(true), dns.detail.clone())),
            DnsStatus::Unavailable => fired.push(("dns_unavailable", json!(true), dns.detail.clone())),
        }
        if dns.status == DnsStatus::Resolved && dns.mx_records == Some(0) {
            fired.push(("no_mx", json!(0), "the domain has no MX record".into()));
        }
    }
    if let Some(walk) = &found.redirects {
        let hops = walk.redirect_hops();
        match &walk.stopped {
            Some(Stopped::Refused(why)) => fired.push(("redirect_refused", json!(hops), why.clone())),
            Some(Stopped::TooManyHops) => fired.push(("redirect_loop", json!(hops), format!("{hops} redirects"))),
            Some(Stopped::BadLocation(to)) => {
                fired.push(("bad_redirect_location", json!(to), format!("redirects to {to:?}")))
            }
            Some(Stopped::Timeout) => fired.push(("fetch_unavailable", json!("timeout"), "no answer in time".into())),
            Some(Stopped::Network(why)) => fired.push(("fetch_unavailable", json!("network"), why.clone())),
            None => {}
        }
        if hops >= 3 && !matches!(walk.stopped, Some(Stopped::TooManyHops)) {
            fired.push(("many_redirects", json!(hops), format!("{hops} redirects")));
        }
        if let Some(status) = walk.final_status.filter(|s| *s >= 400) {
            fired.push(("http_error_status", json!(status), format!("the final page answers {status}")));
        }
    }
    if let Some(domain) = &found.final_domain {
        fired.push(("cross_domain_redirect", json!(domain), format!("ends on {domain}")));
    }
    match &found.tls {
        Some(Ok(tls)) => {
            if let Some(problem) = &tls.problem {
                fired.push((
                    "tls_invalid",
                    json!(problem.as_str()),
                    format!("the certificate is {}", problem.as_str()),
                ));
            } else if let Some(days) = tls.days_to_expiry.filter(|d| *d < TLS_EXPIRING_DAYS) {
                fired.push(("tls_expiring_soon", json!(days), format!("the certificate expires in {days} days")));
            }
        }
        Some(Err(error)) => fired.push(("tls_unavailable", json!(true), error.to_string())),
        None => {}
    }
    // A registry that did not answer says nothing: no signal.
    if let Some(Ok(rdap)) = &found.rdap {
        if let Some(age) = rdap.age_days(now_secs).filter(|d| *d < YOUNG_DOMAIN_DAYS) {
            fired.push(("young_domain", json!(age), format!("registered {age} days ago")));
        }
        if let Some(left) = rdap.expires_in_days(now_secs).filter(|d| *d < DOMAIN_EXPIRING_DAYS) {
            fired.push(("domain_expiring", json!(left), format!("the registration ends in {left} days")));
        }
    }
    if let Some(parked) = &found.parked {
        fired.push(("parked_domain", json!(parked.by), format!("{}: {}", parked.by, parked.matched)));
    }
    fired
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{network_signals, NetworkFindings};
    use crate::url::{
        dns::{DnsFindings, DnsStatus},
        parked::ParkedEvidence,
        rdap::RdapFindings,
        redirects::{Hop, RedirectFindings, Stopped},
        score::{builtin_profiles, SIGNALS},
        tls::{TlsError, TlsFindings, TlsProblem},
        weigh,
    };

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn dns(status: DnsStatus, mx: Option<usize>) -> DnsFindings {
        DnsFindings {
            status,
            addresses: Vec::new(),
            mx_records: mx,
            ns_records: mx,
            mx_hosts: Vec::new(),
            ns_hosts: Vec::new(),
            detail: String::new(),
        }
    }

    fn walk(hops: usize, stopped: Option<Stopped>, final_status: Option<u16>) -> RedirectFindings {
        RedirectFindings {
            hops: (0..hops).map(|i| Hop { url: format!("https://x.test/{i}"), status: 302 }).collect(),
            final_url: final_status.map(|_| "https://x.test/end".into()),
            final_status,
            body: None,
            stopped,
        }
    }

    fn ids(found: &NetworkFindings) -> Vec<&'static str> {
        network_signals(found, NOW).into_iter().map(|(id, _, _)| id).collect()
    }

    #[test]
    fn findings_map_to_signals() {
        let rdap = |registered_days_ago: i64, expires_in: i64| {
            Some(Ok(RdapFindings {
                registered_at: Some(NOW - registered_days_ago * DAY),
                expires_at: Some(NOW + expires_in * DAY),
                status: Vec::new(),
            }))
        };
        let tls = |problem: Option<TlsProblem>, days: i64| {
            Some(Ok(TlsFindings { valid: problem.is_none(), problem, days_to_expiry: Some(days), issuer: None }))
        };
        let cases: Vec<(&str, NetworkFindings, Vec<&str>)> = vec![
            (
                "a healthy site",
                NetworkFindings {
                    dns: Some(dns(DnsStatus::Resolved, Some(1))),
                    redirects: Some(walk(2, None, Some(200))),
                    tls: tls(None, 80),
                    rdap: rdap(4000, 200),
                    ..Default::default()
                },
                vec![],
            ),
            (
                "nxdomain",
                NetworkFindings { dns: Some(dns(DnsStatus::NxDomain, Some(0))), ..Default::default() },
                vec!["dns_nxdomain"],
            ),
            (
                "no mail",
                NetworkFindings { dns: Some(dns(DnsStatus::Resolved, Some(0))), ..Default::default() },
                vec!["no_mx"],
            ),
            (
                "no network",
                NetworkFindings { dns: Some(dns(DnsStatus::Unavailable, None)), ..Default::default() },
                vec!["dns_unavailable"],
            ),
            (
                "into a private address",
                NetworkFindings {
                    redirects: Some(walk(1, Some(Stopped::Refused("10.0.0.1".into())), None)),
                    ..Default::default()
                },
                vec!["redirect_refused"],
            ),
            (
                "a loop",
                NetworkFindings { redirects: Some(walk(11, Some(Stopped::TooManyHops), None)), ..Default::default() },
                vec!["redirect_loop"],
            ),
            (
                "a long chain to a 404 elsewhere",
                NetworkFindings {
                    redirects: Some(walk(5, None, Some(404))),
                    final_domain: Some("elsewhere.test".into()),
                    ..Default::default()
                },
                vec!["many_redirects", "http_error_status", "cross_domain_redirect"],
            ),
            (
                "expired certificate",
                NetworkFindings { tls: tls(Some(TlsProblem::Expired), -3), ..Default::default() },
                vec!["tls_invalid"],
            ),
            (
                "expiring certificate",
                NetworkFindings { tls: tls(None, 5), ..Default::default() },
                vec!["tls_expiring_soon"],
            ),
            (
                "no handshake",
                NetworkFindings {
                    tls: Some(Err(TlsError::Timeout(std::time::Duration::from_secs(1)))),
                    ..Default::default()
                },
                vec!["tls_unavailable"],
            ),
            (
                "young and ending",
                NetworkFindings { rdap: rdap(3, 10), ..Default::default() },
                vec!["young_domain", "domain_expiring"],
            ),
            (
                "parked",
                NetworkFindings {
                    parked: Some(ParkedEvidence { by: "nameserver", matched: "ns1.sedoparking.com".into() }),
                    ..Default::default()
                },
                vec!["parked_domain"],
            ),
        ];
        for (case, found, expected) in cases {
            assert_eq!(ids(&found), expected, "{case}");
        }
    }

    #[test]
    fn every_signal_is_known_and_an_outside_failure_alone_never_blocks() {
        let profiles = builtin_profiles();
        let unavailable = NetworkFindings {
            dns: Some(dns(DnsStatus::Unavailable, None)),
            redirects: Some(walk(0, Some(Stopped::Network("no route".into())), None)),
            tls: Some(Err(TlsError::Connect("no route".into()))),
            rdap: Some(Err(crate::url::rdap::RdapError::Timeout)),
            ..Default::default()
        };
        let fired = network_signals(&unavailable, NOW);
        for (id, _, _) in &fired {
            assert!(SIGNALS.iter().any(|(known, _, _)| known == id), "{id} is not in SIGNALS");
        }
        for profile in &profiles {
            let (_, score, decision) = weigh(&fired, profile, &BTreeMap::new());
            assert_eq!((score, decision), (0.0, "allow"), "{}", profile.name);
        }
    }
}
