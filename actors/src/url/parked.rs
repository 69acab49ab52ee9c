//! Parked domains: held for sale or for ad revenue rather than used. Told by the name
//! servers or mail exchangers of parking services, or by the phrases their landing pages
//! show on the final page. The lists ship with the binary (`actors/data/url/parking.json`)
//! and an operator's file adds to them.

use serde::Deserialize;

pub const SHIPPED_PARKING: &str = include_str!("../../data/url/parking.json");

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Parking {
    #[serde(default)]
    nameservers: Vec<String>,
    #[serde(default)]
    mail_exchangers: Vec<String>,
    #[serde(default)]
    page_markers: Vec<String>,
}

/// Why a domain reads as parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvidence {
    /// `nameserver`, `mail_exchanger` or `page`.
    pub by: &'static str,
    pub matched: String,
}

/// Whether `host` is `service` or under it.
fn served_by(host: &str, service: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == service || host.ends_with(&format!(".{service}"))
}

impl Parking {
    /// The shipped lists, with `extra` JSON (same shape) added.
    pub fn load(extra: Option<&str>) -> Result<Self, String> {
        let mut parking: Parking =
            serde_json::from_str(SHIPPED_PARKING).map_err(|e| format!("the shipped parking list: {e}"))?;
        if let Some(extra) = extra {
            let more: Parking = serde_json::from_str(extra).map_err(|e| format!("the parking list file: {e}"))?;
            parking.nameservers.extend(more.nameservers);
            parking.mail_exchangers.extend(more.mail_exchangers);
            parking.page_markers.extend(more.page_markers);
        }
        for list in [&mut parking.nameservers, &mut parking.mail_exchangers, &mut parking.page_markers] {
            for item in list.iter_mut() {
                *item = item.trim().trim_end_matches('.').to_lowercase();
            }
            list.retain(|item| !item.is_empty());
        }
        Ok(parking)
    }

    /// The first sign of parking among the domain's name servers, mail exchangers and the
    /// final page's body.
    pub fn judge(&self, ns_hosts: &[String], mx_hosts: &[String], body: Option<&str>) -> Option<ParkedEvidence> {
        let by_host = |hosts: &[String], services: &[String], by: &'static str| {
            hosts.iter().find_map(|host| {
                services.iter().any(|s| served_by(host, s)).then(|| ParkedEvidence { by, matched: host.clone() })
            })
        };
        by_host(ns_hosts, &self.nameservers, "nameserver")
            .or_else(|| by_host(mx_hosts, &self.mail_exchangers, "mail_exchanger"))
            .or_else(|| {
                let page = body?.to_lowercase();
                let page: String = page.split_whitespace().collect::<Vec<_>>().join(" ");
                self.page_markers
                    .iter()
                    .find(|marker| page.contains(marker.as_str()))
                    .map(|marker| ParkedEvidence { by: "page", matched: marker.clone() })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::{ParkedEvidence, Parking};

    #[test]
    fn parking_is_told_by_name_servers_mail_and_page() {
        let parking = Parking::load(None).unwrap();
        let hosts = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let by = |e: Option<ParkedEvidence>| e.map(|e| e.by);
        assert_eq!(by(parking.judge(&hosts(&["NS1.SedoParking.com."]), &[], None)), Some("nameserver"));
        assert_eq!(by(parking.judge(&[], &hosts(&["mx.bodis.com."]), None)), Some("mail_exchanger"));
        let page = "<html><h1>This   domain\n is FOR SALE</h1></html>";
        assert_eq!(by(parking.judge(&hosts(&["ns1.example.net."]), &[], Some(page))), Some("page"));
        // Look-alike names are not the services.
        assert_eq!(by(parking.judge(&hosts(&["ns1.notsedoparking.com."]), &[], Some("<h1>Welcome</h1>"))), None);
        assert_eq!(by(parking.judge(&hosts(&["ns1.cloudflare.com."]), &hosts(&["mx.google.com."]), None)), None);
        let extended = Parking::load(Some(r#"{"nameservers": ["parkme.example."]}"#)).unwrap();
        assert_eq!(by(extended.judge(&hosts(&["a.parkme.example."]), &[], None)), Some("nameserver"));
        assert!(Parking::load(Some("[")).is_err());
    }
}
