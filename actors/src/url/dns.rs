//! DNS of a URL's host and domain: A/AAAA of the host, MX and NS of the registrable
//! domain, through hickory-resolver. The servers are configuration (the system's by
//! default), so tests point them at a local fake.
//!
//! What the domain's own DNS says (it does not exist, its servers fail, it has no address)
//! is a finding. A lookup that failed for reasons outside the domain (no answer in time, no
//! network) is [`DnsStatus::Unavailable`]: a finding about this machine, never by itself
//! evidence against the domain.

use std::{net::IpAddr, net::SocketAddr, time::Duration};

use hickory_resolver::{
    config::{NameServerConfig, ResolverConfig, ResolverOpts},
    lookup::Lookup,
    net::{runtime::TokioRuntimeProvider, DnsError, NetError},
    proto::{op::ResponseCode, rr::RData},
    TokioResolver,
};

/// Where and how long to ask.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Name servers to ask; empty: the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// How long one query may take.
    pub timeout: Duration,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self { servers: Vec::new(), timeout: Duration::from_secs(3) }
    }
}

/// What the lookups of the host found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsStatus {
    /// The host has addresses.
    Resolved,
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// SERVFAIL: the domain's servers could not answer.
    ServFail,
    /// The name exists but has no A or AAAA record.
    NoAddress,
    /// No answer for reasons outside the domain (timeout, no network, refused).
    Unavailable,
}

/// The findings of [`Dns::inspect`].
#[derive(Debug, Clone, PartialEq)]
pub struct DnsFindings {
    pub status: DnsStatus,
    pub addresses: Vec<IpAddr>,
    /// MX records of the registrable domain; `None` when the lookup was unavailable.
    pub mx_records: Option<usize>,
    pub ns_records: Option<usize>,
    pub mx_hosts: Vec<String>,
    pub ns_hosts: Vec<String>,
    /// Why the status is what it is, for people.
    pub detail: String,
}

/// A resolver for URL intelligence.
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
}

/// How a failed lookup reads.
fn classify(error: &NetError) -> DnsStatus {
    match error {
        e if e.is_nx_domain() => DnsStatus::NxDomain,
        NetError::Dns(DnsError::NoRecordsFound(_)) => DnsStatus::NoAddress,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => DnsStatus::ServFail,
        _ => DnsStatus::Unavailable,
    }
}

impl Dns {
    pub fn new(settings: &DnsSettings) -> Result<Self, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if settings.servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| format!("reading the system's DNS configuration: {e}"))?
        } else {
            let servers = settings
                .servers
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    for connection in &mut server.connections {
                        connection.port = addr.port();
                    }
                    server
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = settings.timeout;
        options.attempts = 1;
        // Names are asked as written: no search domains of this machine.
        options.ndots = 0;
        // Our signal cache keeps answers; the resolver's own would outlive its TTLs there.
        options.cache_size = 0;
        let resolver = builder.build().map_err(|e| format!("building the DNS resolver: {e}"))?;
        Ok(Self { resolver })
    }

    /// Looks up the host's addresses and the registrable domain's MX and NS records.
    pub async fn inspect(&self, host: &str, registrable: &str) -> DnsFindings {
        let fqdn = |name: &str| format!("{}.", name.trim_end_matches('.'));
        let (ips, mx, ns) = tokio::join!(
            self.resolver.lookup_ip(fqdn(host)),
            self.resolver.mx_lookup(fqdn(registrable)),
            self.resolver.ns_lookup(fqdn(registrable)),
        );
        let (status, addresses, detail) = match ips {
            Ok(found) => {
                let addresses: Vec<IpAddr> = found.iter().collect();
                let status = if addresses.is_empty() { DnsStatus::NoAddress } else { DnsStatus::Resolved };
                (status, addresses, format!("{host} has {} address(es)", found.iter().count()))
            }
            Err(error) => (classify(&error), Vec::new(), format!("{host}: {error}")),
        };
        let count = |result: Result<Vec<String>, NetError>| match result {
            Ok(hosts) => (Some(hosts.len()), hosts),
            Err(error) => match classify(&error) {
                DnsStatus::Unavailable | DnsStatus::ServFail => (None, Vec::new()),
                _ => (Some(0), Vec::new()),
            },
        };
        let hosts = |lookup: Lookup| -> Vec<String> {
            lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::MX(mx) => Some(mx.exchange.to_ascii()),
                    RData::NS(ns) => Some(ns.0.to_ascii()),
                    _ => None,
                })
                .collect()
        };
        let (mx_records, mx_hosts) = count(mx.map(hosts));
        let (ns_records, ns_hosts) = count(ns.map(hosts));
        DnsFindings { status, addresses, mx_records, ns_records, mx_hosts, ns_hosts, detail }
    }
}

/// The outbound guard resolves through the same servers, so a redirect's hop is judged by
/// the addresses URL intelligence saw.
impl crate::routing::netguard::Lookup for Dns {
    fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let (resolver, name) = (self.resolver.clone(), format!("{}.", host.trim_end_matches('.')));
        Box::pin(async move {
            let found = resolver.lookup_ip(name).await.map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(found.iter().map(|ip| SocketAddr::new(ip, port)).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, time::Duration};

    use super::{Dns, DnsSettings, DnsStatus};
    use crate::test_support::fake_dns::{FakeDns, FakeName};

    #[tokio::test]
    async fn what_the_domain_says_and_what_the_network_did_are_told_apart() {
        let fake = FakeDns::start().await;
        fake.set(
            "shop.test",
            FakeName::Records {
                a: vec![Ipv4Addr::new(192, 0, 2, 10)],
                aaaa: Vec::new(),
                mx: vec!["mail.shop.test".into()],
                ns: vec!["ns1.shop.test".into(), "ns2.shop.test".into()],
            },
        );
        fake.set("www.shop.test", FakeName::a(Ipv4Addr::new(192, 0, 2, 11)));
        fake.set(
            "mailonly.test",
            FakeName::Records { a: Vec::new(), aaaa: Vec::new(), mx: vec!["mx.mailonly.test".into()], ns: Vec::new() },
        );
        fake.set("broken.test", FakeName::ServFail);
        fake.set("slow.test", FakeName::Silent);
        let settings = DnsSettings { servers: vec![fake.addr], timeout: Duration::from_millis(300) };
        let dns = Dns::new(&settings).unwrap();

        let found = dns.inspect("www.shop.test", "shop.test").await;
        assert_eq!(found.status, DnsStatus::Resolved, "{found:?}");
        assert_eq!(found.addresses, [std::net::IpAddr::from([192, 0, 2, 11])]);
        assert_eq!((found.mx_records, found.ns_records), (Some(1), Some(2)));
        assert_eq!(found.mx_hosts, ["mail.shop.test."]);

        let cases = [
            ("gone.test", DnsStatus::NxDomain, Some(0)),
            ("mailonly.test", DnsStatus::NoAddress, Some(1)),
            ("broken.test", DnsStatus::ServFail, None),
            ("slow.test", DnsStatus::Unavailable, None),
        ];
        for (name, status, mx) in cases {
            let found = dns.inspect(name, name).await;
            assert_eq!((found.status, found.mx_records), (status, mx), "{name}: {found:?}");
        }

        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let nowhere = Dns::new(&DnsSettings { servers: vec![closed], timeout: Duration::from_millis(300) }).unwrap();
        let found = nowhere.inspect("shop.test", "shop.test").await;
        assert_eq!((found.status, found.mx_records), (DnsStatus::Unavailable, None), "{found:?}");
    }
}
