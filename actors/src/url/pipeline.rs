//! The inspection of one URL: the URL's own signals, then DNS, RDAP and the redirect walk
//! at once, TLS of the host once its address is known, parking from all of them, each
//! network answer kept in the signal cache for its kind's TTL. The same URL with the same
//! cache gives the same signals.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use dashmap::DashMap;

use super::{
    brands::{BrandList, BrandMatch},
    dns::{Dns, DnsFindings, DnsSettings},
    normalize::{normalize, NormalizedUrl},
    parked::{ParkedEvidence, Parking},
    rdap::{self, Bootstrap, RdapError, RdapFindings},
    redirects::{self, RedirectFindings, RedirectSettings},
    signals::{network_signals, Fired, NetworkFindings},
    static_findings,
    tls::{Tls, TlsError, TlsFindings, TlsSettings},
};
use crate::routing::netguard::NetGuard;

/// How long each kind of answer is reused.
#[derive(Debug, Clone)]
pub struct CacheTtls {
    pub dns: Duration,
    pub tls: Duration,
    pub rdap: Duration,
    pub page: Duration,
}

impl Default for CacheTtls {
    fn default() -> Self {
        Self {
            dns: Duration::from_secs(300),
            tls: Duration::from_secs(3600),
            rdap: Duration::from_secs(24 * 3600),
            page: Duration::from_secs(600),
        }
    }
}

/// Everything the pipeline is configured with.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub dns: DnsSettings,
    pub tls: TlsSettings,
    pub redirects: RedirectSettings,
    pub rdap_timeout: Duration,
    pub ttls: CacheTtls,
    /// Entries per kind the cache holds at most.
    pub cache_capacity: usize,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            dns: DnsSettings::default(),
            tls: TlsSettings::default(),
            redirects: RedirectSettings::default(),
            rdap_timeout: Duration::from_secs(5),
            ttls: CacheTtls::default(),
            cache_capacity: 10_000,
        }
    }
}

/// One kind's cached answers.
struct Shelf<T> {
    entries: DashMap<String, (Instant, T)>,
    ttl: Duration,
    capacity: usize,
}

impl<T: Clone> Shelf<T> {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Self { entries: DashMap::new(), ttl, capacity }
    }

    /// A fresh entry and its age.
    fn get(&self, key: &str) -> Option<(T, Duration)> {
        let entry = self.entries.get(key)?;
        let age = entry.0.elapsed();
        (age < self.ttl).then(|| (entry.1.clone(), age))
    }

    fn put(&self, key: String, value: T) {
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        }
        // Still full of fresh entries: the oldest tenth goes, so one tenant's flood cannot
        // keep every later answer out of the cache.
        if self.entries.len() >= self.capacity {
            let mut ages: Vec<Instant> = self.entries.iter().map(|e| e.value().0).collect();
            let cut = (self.capacity / 10).max(1).min(ages.len().saturating_sub(1));
            if !ages.is_empty() {
                ages.select_nth_unstable(cut);
                let oldest_kept = ages[cut];
                self.entries.retain(|_, (at, _)| *at >= oldest_kept);
            }
        }
        self.entries.insert(key, (Instant::now(), value));
    }
}

/// The signal cache.
struct SignalCache {
    dns: Shelf<DnsFindings>,
    tls: Shelf<Result<TlsFindings, TlsError>>,
    rdap: Shelf<Result<RdapFindings, RdapError>>,
    /// The walk without the page's body (only its parking verdict is kept).
    page: Shelf<(RedirectFindings, Option<ParkedEvidence>)>,
}

/// Whether an inspection was answered from the cache, as the spec's `cache` block says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUse {
    /// Every network answer came from the cache.
    pub hit: bool,
    /// The oldest cached answer used.
    pub age_ms: Option<u64>,
}

/// What one inspection found.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub url: NormalizedUrl,
    pub fired: Vec<Fired>,
    pub brand_match: Option<BrandMatch>,
    pub network: NetworkFindings,
    pub cache: CacheUse,
}

/// Runs inspections (`engine.url()` will own one).
#[derive(Clone)]
pub struct Inspector(Arc<Parts>);

struct Parts {
    brands: BrandList,
    parking: Parking,
    dns: Dns,
    tls: Tls,
    bootstrap: Bootstrap,
    rdap_client: reqwest::Client,
    settings: PipelineSettings,
    cache: SignalCache,
}

/// Counts cache use across the stages of one inspection.
#[derive(Default)]
struct Tally {
    fresh: usize,
    cached: usize,
    oldest: Option<Duration>,
}

impl Tally {
    fn cached(&mut self, age: Duration) {
        self.cached += 1;
        self.oldest = Some(self.oldest.map_or(age, |o| o.max(age)));
    }
}

/// The cached answer for `key`, or `ask`'s (kept when `keep` says it is worth keeping: a
/// transient failure is not, or one slow registry would hide a young domain for a day).
async fn through<T: Clone>(
    shelf: &Shelf<T>,
    key: String,
    tally: &std::sync::Mutex<Tally>,
    ask: impl std::future::Future<Output = T>,
    keep: fn(&T) -> bool,
) -> T {
    if let Some((value, age)) = shelf.get(&key) {
        tally.lock().unwrap_or_else(|p| p.into_inner()).cached(age);
        return value;
    }
    let value = ask.await;
    tally.lock().unwrap_or_else(|p| p.into_inner()).fresh += 1;
    if keep(&value) {
        shelf.put(key, value.clone());
    }
    value
}

fn always<T>(_: &T) -> bool {
    true
}

fn lasting_rdap(answer: &Result<RdapFindings, RdapError>) -> bool {
    !matches!(answer, Err(RdapError::Timeout | RdapError::Network(_) | RdapError::Status(_)))
}

impl Inspector {
    pub fn new(
        settings: PipelineSettings,
        brands: BrandList,
        parking: Parking,
        bootstrap: Bootstrap,
    ) -> Result<Self, String> {
        let capacity = settings.cache_capacity.max(1);
        let ttls = &settings.ttls;
        let cache = SignalCache {
            dns: Shelf::new(ttls.dns, capacity),
            tls: Shelf::new(ttls.tls, capacity),
            rdap: Shelf::new(ttls.rdap, capacity),
            page: Shelf::new(ttls.page, capacity),
        };
        Ok(Self(Arc::new(Parts {
            dns: Dns::new(&settings.dns)?,
            tls: Tls::new(&settings.tls)?,
            rdap_client: crate::routing::client::builder()
                .timeout(settings.rdap_timeout.max(Duration::from_millis(100)))
                .build()
                .map_err(|e| format!("building the RDAP client: {e}"))?,
            brands,
            parking,
            bootstrap,
            settings,
            cache,
        })))
    }

    /// The resolver URL intelligence uses (also the lookup of its outbound guards).
    pub fn dns(&self) -> &Dns {
        &self.0.dns
    }

    /// Inspects `url` with `guard` (the caller's account's); `guard_id` tells the cache which
    /// guard shook hands, since another guard may be refused where this one was not; pages
    /// are cached under `page_scope` (the account, whose guard walked them).
    pub async fn inspect(&self, url: NormalizedUrl, guard: &NetGuard, guard_id: &str, page_scope: &str) -> Inspection {
        let parts = &self.0;
        let statics = static_findings(&url, &parts.brands);
        let tally = std::sync::Mutex::new(Tally::default());
        let registrable = url.registrable.clone();
        let dns = async {
            match url.ip {
                Some(_) => None,
                None => {
                    let (host, domain) = (url.host.clone(), registrable.clone().unwrap_or_else(|| url.host.clone()));
                    let key = format!("{host}|{domain}");
                    Some(through(&parts.cache.dns, key, &tally, parts.dns.inspect(&host, &domain), always).await)
                }
            }
        };
        let rdap = async {
            let domain = registrable.clone()?;
            let ask = rdap::lookup(&parts.rdap_client, &parts.bootstrap, &domain, parts.settings.rdap_timeout);
            Some(through(&parts.cache.rdap, domain.clone(), &tally, ask, lasting_rdap).await)
        };
        let page = async {
            let key = format!("{page_scope}|{}", url.url);
            let walk = async {
                let mut walk = redirects::follow(guard, &url.url, &parts.settings.redirects).await;
                let parked = parts.parking.judge(&[], &[], walk.body.take().as_deref());
                (walk, parked)
            };
            Some(through(&parts.cache.page, key, &tally, walk, always).await)
        };
        let (dns, rdap, page) = tokio::join!(dns, rdap, page);
        let tls = match (url.url.scheme(), &dns) {
            ("https", _) => {
                let port = url.url.port_or_known_default().unwrap_or(443);
                // The first address this guard lets us reach, as the walk's resolver picks.
                let candidates: Vec<std::net::SocketAddr> = match (url.ip, &dns) {
                    (Some(ip), _) => vec![std::net::SocketAddr::new(ip, port)],
                    (None, Some(found)) => {
                        found.addresses.iter().map(|ip| std::net::SocketAddr::new(*ip, port)).collect()
                    }
                    (None, None) => Vec::new(),
                };
                let allowed = candidates.iter().copied().find(|a| guard.policy.check(*a).is_ok());
                match allowed.or(candidates.first().copied()) {
                    Some(addr) => {
                        // Another guard may be refused where this one was not.
                        let key = format!("{guard_id}|{}:{port}", url.host);
                        let ask = async {
                            match guard.policy.check(addr) {
                                Ok(()) => parts.tls.inspect(addr, &url.host).await,
                                Err(refused) => Err(TlsError::Connect(format!("refused: {refused}"))),
                            }
                        };
                        Some(through(&parts.cache.tls, key, &tally, ask, always).await)
                    }
                    None => None,
                }
            }
            _ => None,
        };
        let (page, page_parked) = page.map_or((None, None), |(walk, parked)| (Some(walk), parked));
        let final_domain = page
            .as_ref()
            .and_then(|walk| walk.final_url.as_deref())
            .and_then(|final_url| normalize(final_url).ok())
            .map(|final_url| final_url.domain().to_owned())
            .filter(|domain| domain != url.domain());
        let parked = {
            let (ns, mx) = dns.as_ref().map_or((&[][..], &[][..]), |d| (&d.ns_hosts[..], &d.mx_hosts[..]));
            parts.parking.judge(ns, mx, None).or(page_parked)
        };
        let network = NetworkFindings { dns, redirects: page, final_domain, tls, rdap, parked };
        let now = crate::clock::now_ms() / 1000;
        let mut fired = statics.fired;
        fired.extend(network_signals(&network, now));
        let tally = tally.into_inner().unwrap_or_else(|p| p.into_inner());
        let cache = CacheUse {
            hit: tally.fresh == 0 && tally.cached > 0,
            age_ms: tally.oldest.map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        };
        Inspection { url, fired, brand_match: statics.brand_match, network, cache }
    }
}

#[cfg(test)]
mod tests;
