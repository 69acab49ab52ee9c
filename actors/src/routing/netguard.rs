//! The guard on outbound calls to addresses a tenant chose (self-hosted endpoints today; URL
//! intelligence and webhooks later). A tenant must not be able to make this server talk to
//! its own machine, the private network around it or the cloud's metadata service, so:
//!
//! - [`classify`] names every address range that is not the public internet, IPv4 and IPv6,
//!   looking through the forms that carry an IPv4 address inside an IPv6 one;
//! - [`NetPolicy`] says what one account may reach: the operator's account and tenants the
//!   operator allows may reach private ranges, allow-listed CIDRs are open to everyone, the
//!   server's own listen address is closed to everyone;
//! - [`GuardedResolver`] applies the policy to the addresses a name resolves to, at connect
//!   time, so a name that resolved publicly when it was registered and privately later (DNS
//!   rebinding) is still refused. Hosts written as IP literals never reach a resolver, so
//!   [`NetGuard::check_literal`] is called on every URL before it is sent.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use dashmap::DashMap;
use futures_util::future::BoxFuture;
use ipnet::IpNet;

/// A range that is not the public internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Unspecified,
    Loopback,
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (Alibaba's metadata service lives here too).
    Cgnat,
    LinkLocal,
    /// A cloud provider's instance metadata service: credentials live there.
    Metadata,
    Multicast,
    Broadcast,
    Documentation,
    Reserved,
}

impl Range {
    /// Never opened by `allow_private_networks`, only by `allowed_cidrs`: cloud metadata and
    /// credential services, which live at these addresses.
    pub fn is_metadata_grade(self) -> bool {
        matches!(self, Range::Metadata | Range::LinkLocal)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Unspecified => "an unspecified (this host) address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private-network address",
            Self::Cgnat => "a carrier-grade NAT (shared) address",
            Self::LinkLocal => "a link-local address",
            Self::Metadata => "a cloud metadata address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Documentation => "a documentation address",
            Self::Reserved => "a reserved address",
        }
    }
}

/// The IPv4 address an IPv6 address stands for, when it carries one: mapped (`::ffff:a.b.c.d`
/// and SIIT's `::ffff:0:a.b.c.d`), the deprecated compatible form (`::a.b.c.d`), NAT64
/// (`64:ff9b::/96`), 6to4 (`2002::/16`) and Teredo (`2001::/32`, the client inverted). Each
/// of these reaches the IPv4 address through some translator, so it is judged as that address.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] => Some(last),
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, ..] => Some(last),
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(last),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        [0x2001, 0, ..] => Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15])),
        _ => None,
    }
}

/// The address itself, or the IPv4 address an IPv6 one carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Which non-public range `ip` is in; `None` for the public internet.
pub fn classify(ip: IpAddr) -> Option<Range> {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Range> {
    Some(match ip.octets() {
        [0, ..] => Range::Unspecified,
        [127, ..] => Range::Loopback,
        [10, ..] | [192, 168, ..] => Range::Private,
        [172, b, ..] if (16..=31).contains(&b) => Range::Private,
        // Alibaba's metadata service sits inside CGNAT space.
        [100, 100, 100, 200] => Range::Metadata,
        [100, b, ..] if (64..=127).contains(&b) => Range::Cgnat,
        // AWS, GCP and Azure's instance metadata, AWS ECS task credentials, EKS pod identity.
        [169, 254, 169, 254] | [169, 254, 170, 2] | [169, 254, 170, 23] => Range::Metadata,
        // The rest of link-local is metadata-grade too (`NetPolicy::allows` never opens it
        // for `allow_private_networks`): clouds keep adding services there.
        [169, 254, ..] => Range::LinkLocal,
        // Azure's wire server: a public address that answers only inside Azure.
        [168, 63, 129, 16] => Range::Metadata,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => Range::Documentation,
        // Oracle's metadata service, inside the IETF protocol assignments.
        [192, 0, 0, 192] => Range::Metadata,
        // The rest of the IETF protocol assignments, benchmarking, the retired 6to4 relay
        // anycast.
        [192, 0, 0, _] | [198, 18 | 19, ..] | [192, 88, 99, _] => Range::Reserved,
        [255, 255, 255, 255] => Range::Broadcast,
        [224..=239, ..] => Range::Multicast,
        [240..=255, ..] => Range::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Range> {
    let s = ip.segments();
    Some(match s {
        _ if ip.is_unspecified() => Range::Unspecified,
        _ if ip.is_loopback() => Range::Loopback,
        [a, ..] if a & 0xff00 == 0xff00 => Range::Multicast,
        [a, ..] if a & 0xffc0 == 0xfe80 => Range::LinkLocal,
        // Site-local, deprecated but still routed on some networks.
        [a, ..] if a & 0xffc0 == 0xfec0 => Range::Private,
        // Clouds' IPv6 metadata services, inside the unique-local range: AWS (and its
        // pod identity), GCP, Oracle, Scaleway.
        [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254 | 0x23]
        | [0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254]
        | [0xfd00, 0xc1, 0, 0, 0, 0, 0xa9fe, 0xa9fe]
        | [0xfd00, 0x42, 0, 0, 0, 0, 0, 0x42] => Range::Metadata,
        [a, ..] if a & 0xfe00 == 0xfc00 => Range::Private,
        [0x2001, 0xdb8, ..] => Range::Documentation,
        [0x3fff, b, ..] if b < 0x1000 => Range::Documentation,
        // Discard-only, and NAT64's local-use prefix (translates to any IPv4 address).
        [0x100, 0, 0, 0, ..] | [0x64, 0xff9b, 1, ..] => Range::Reserved,
        _ => return None,
    })
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Range(Range),
    /// The server's own listen address: a tenant's endpoint pointing at the gateway would
    /// call the gateway with the gateway's trust.
    OwnAddress,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{addr} is {}", match .why { Refusal::Range(r) => r.describe(), Refusal::OwnAddress => "this gateway's own address" })]
pub struct Refused {
    pub addr: IpAddr,
    pub why: Refusal,
}

/// What one account's outbound calls may reach.
#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    /// May reach every non-public range but metadata services and the server itself.
    pub allow_private: bool,
    /// Open whatever the range; metadata addresses only through this list.
    pub allowed: Vec<IpNet>,
    /// Where this server listens: refused whatever the rest says.
    pub own: Vec<SocketAddr>,
}

impl NetPolicy {
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refused> {
        let ip = canonical(addr.ip());
        if self.is_own(ip, addr.port()) {
            return Err(Refused { addr: ip, why: Refusal::OwnAddress });
        }
        let Some(range) = classify(ip) else { return Ok(()) };
        let listed = self.allowed.iter().any(|net| net.contains(&ip) || net.contains(&addr.ip()));
        if listed || (self.allow_private && !range.is_metadata_grade()) {
            return Ok(());
        }
        Err(Refused { addr: ip, why: Refusal::Range(range) })
    }

    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        self.own.iter().any(|own| {
            let own_ip = canonical(own.ip());
            own.port() == port
                && (own_ip == ip
                    // Connecting to 0.0.0.0 or :: reaches this host's listeners.
                    || ip.is_unspecified()
                    || (own_ip.is_unspecified() && is_this_host(ip)))
        })
    }
}

/// Whether `ip` is one of this host's own addresses: the kernel lets a socket bind only to
/// those (loopback ranges included), which needs no list of interfaces.
fn is_this_host(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Parses `endpoints.allowed_cidrs`: CIDRs, or single addresses meaning just that address.
pub fn parse_cidrs(items: &[String]) -> Result<Vec<IpNet>, String> {
    items
        .iter()
        .map(|item| {
            let item = item.trim();
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{item:?} is not a CIDR (like 10.1.0.0/16) or an IP address"))
        })
        .collect()
}

/// Name resolution, replaceable so tests can play a rebinding DNS server.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;
}

/// The system resolver, through tokio.
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
    }
}

/// Ports whose clients a guard keeps (80 and 443 always are).
const MAX_CACHED_CLIENTS: usize = 64;

/// A policy with the resolver it judges: one per kind of account (operator, tenant).
#[derive(Clone)]
pub struct NetGuard {
    pub policy: Arc<NetPolicy>,
    lookup: Arc<dyn Lookup>,
    /// One client per destination port: the resolver must know the port to recognise the
    /// server's own address, and reqwest gives a resolver only the host.
    clients: Arc<DashMap<u16, reqwest::Client>>,
}

impl std::fmt::Debug for NetGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetGuard").field("policy", &self.policy).finish_non_exhaustive()
    }
}

/// A refused URL: the address, and the host it was written as when that was a name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{refused}", match .host { Some(h) => format!("{h} resolves to {}: ", refused.addr), None => String::new() })]
pub struct UrlRefused {
    pub host: Option<String>,
    pub refused: Refused,
}

impl UrlRefused {
    /// The answer to a registration: what the URL reaches, why that is closed, and what
    /// would open it.
    pub fn explain(&self) -> String {
        let ip = self.refused.addr;
        let reaches = match &self.host {
            Some(host) => format!("url resolves to {ip} ({host})"),
            None => format!("url points at {ip}"),
        };
        match self.refused.why {
            Refusal::OwnAddress => format!("{reaches}, this gateway's own address"),
            Refusal::Range(range) if range.is_metadata_grade() => format!(
                "{reaches}, {}; it is reachable only when the operator lists it in endpoints.allowed_cidrs",
                range.describe()
            ),
            Refusal::Range(range) => format!(
                "{reaches}, {}; tenants may not reach private networks unless the operator allows them \
                 (endpoints.allow_private_networks or endpoints.allowed_cidrs)",
                range.describe()
            ),
        }
    }
}

/// The guards for self-hosted endpoints: the operator's account reaches private networks,
/// tenants only as the operator allows.
#[derive(Clone, Debug)]
pub struct EndpointGuards {
    pub operator: NetGuard,
    pub tenant: NetGuard,
}

/// What the operator allows tenants, and where this server listens.
#[derive(Debug, Clone, Default)]
pub struct NetSettings {
    pub allow_private_networks: bool,
    pub allowed_cidrs: Vec<IpNet>,
    pub listen: Vec<SocketAddr>,
}

impl EndpointGuards {
    pub fn new(settings: &NetSettings, lookup: Arc<dyn Lookup>) -> Self {
        let tenant = NetPolicy {
            allow_private: settings.allow_private_networks,
            allowed: settings.allowed_cidrs.clone(),
            own: settings.listen.clone(),
        };
        let operator = NetPolicy { allow_private: true, ..tenant.clone() };
        Self { operator: NetGuard::new(operator, lookup.clone()), tenant: NetGuard::new(tenant, lookup) }
    }

    pub fn for_account(&self, is_operator: bool) -> &NetGuard {
        if is_operator {
            &self.operator
        } else {
            &self.tenant
        }
    }
}

impl NetGuard {
    pub fn new(policy: NetPolicy, lookup: Arc<dyn Lookup>) -> Self {
        Self { policy: Arc::new(policy), lookup, clients: Arc::default() }
    }

    /// The client for URLs on `port`, with this guard as its resolver.
    pub fn client(&self, port: u16) -> reqwest::Client {
        if let Some(client) = self.clients.get(&port) {
            return client.clone();
        }
        let resolver = GuardedResolver { guard: self.clone(), port };
        let client = crate::routing::client::builder()
            // A proxy would resolve and connect for us, out of the resolver's sight.
            .no_proxy()
            .dns_resolver(resolver)
            .build()
            .expect("the HTTP client builds once a crypto provider is installed");
        // Tenants choose ports (links, webhooks): past a few, clients are not kept, so the
        // table (each client with its pool) cannot grow without bound.
        if self.clients.len() >= MAX_CACHED_CLIENTS && !matches!(port, 80 | 443) {
            return client;
        }
        self.clients.entry(port).or_insert(client).clone()
    }

    /// Checks a URL whose host is an IP literal (those never reach the resolver).
    pub fn check_literal(&self, url: &reqwest::Url) -> Result<(), UrlRefused> {
        let port = url.port_or_known_default().unwrap_or(80);
        let Some(ip) = literal_host(url) else { return Ok(()) };
        self.policy.check(SocketAddr::new(ip, port)).map_err(|refused| UrlRefused { host: None, refused })
    }

    /// Resolves `url`'s host now and checks every address it has, for an answer at
    /// registration that says why. Connecting checks again: this answer may be stale.
    /// A name that does not resolve is not refused: the endpoint is then unreachable.
    pub async fn check_url(&self, url: &reqwest::Url) -> Result<(), UrlRefused> {
        self.check_literal(url)?;
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { return Ok(()) };
        if literal_host(url).is_some() {
            return Ok(());
        }
        for addr in self.lookup.lookup(host, port).await.unwrap_or_default() {
            self.policy.check(addr).map_err(|refused| UrlRefused { host: Some(host.to_owned()), refused })?;
        }
        Ok(())
    }
}

/// The host of `url` when it is an IP address (the URL parser has normalised forms like
/// `0x7f.1` already).
fn literal_host(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Resolves with the guard's [`Lookup`] and keeps only the addresses its policy allows.
pub struct GuardedResolver {
    guard: NetGuard,
    port: u16,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let port = self.port;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = guard.lookup.lookup(&host, port).await?;
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|addr| match guard.policy.check(*addr) {
                    Ok(()) => true,
                    Err(r) => {
                        refused.get_or_insert(r);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(refused)) => Err(Box::new(UrlRefused { host: Some(host), refused }) as _),
                (true, None) => Err(format!("{host} has no address").into()),
                (false, _) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// The guard's refusal behind a failed request, if that is why it failed.
pub fn refusal(error: &reqwest::Error) -> Option<&UrlRefused> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<UrlRefused>() {
            return Some(refused);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_non_public_range_is_named_and_public_addresses_pass() {
        let cases: &[(&str, Option<Range>)] = &[
            ("0.0.0.0", Some(Range::Unspecified)),
            ("0.1.2.3", Some(Range::Unspecified)),
            ("127.0.0.1", Some(Range::Loopback)),
            ("127.255.0.9", Some(Range::Loopback)),
            ("10.0.0.1", Some(Range::Private)),
            ("10.255.255.255", Some(Range::Private)),
            ("172.16.0.1", Some(Range::Private)),
            ("172.31.255.254", Some(Range::Private)),
            ("172.32.0.1", None),
            ("172.15.255.255", None),
            ("192.168.1.1", Some(Range::Private)),
            ("100.64.0.1", Some(Range::Cgnat)),
            ("100.127.255.255", Some(Range::Cgnat)),
            ("100.100.100.200", Some(Range::Metadata)),
            ("100.100.100.201", Some(Range::Cgnat)),
            ("169.254.170.2", Some(Range::Metadata)),
            ("192.0.0.192", Some(Range::Metadata)),
            ("fd00:ec2::23", Some(Range::Metadata)),
            ("100.128.0.1", None),
            ("169.254.169.254", Some(Range::Metadata)),
            ("169.254.1.1", Some(Range::LinkLocal)),
            ("168.63.129.16", Some(Range::Metadata)),
            ("192.0.2.5", Some(Range::Documentation)),
            ("198.51.100.5", Some(Range::Documentation)),
            ("203.0.113.5", Some(Range::Documentation)),
            ("198.18.0.1", Some(Range::Reserved)),
            ("224.0.0.1", Some(Range::Multicast)),
            ("239.255.255.250", Some(Range::Multicast)),
            ("240.0.0.1", Some(Range::Reserved)),
            ("255.255.255.255", Some(Range::Broadcast)),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("::", Some(Range::Unspecified)),
            ("::1", Some(Range::Loopback)),
            ("fe80::1", Some(Range::LinkLocal)),
            ("febf::1", Some(Range::LinkLocal)),
            ("fec0::1", Some(Range::Private)),
            ("fc00::1", Some(Range::Private)),
            ("fd12:3456::1", Some(Range::Private)),
            ("fd00:ec2::254", Some(Range::Metadata)),
            ("fd20:ce::254", Some(Range::Metadata)),
            ("fd00:c1::a9fe:a9fe", Some(Range::Metadata)),
            ("fd00:42::42", Some(Range::Metadata)),
            ("fd20:ce::255", Some(Range::Private)),
            ("ff02::1", Some(Range::Multicast)),
            ("2001:db8::1", Some(Range::Documentation)),
            ("3fff::1", Some(Range::Documentation)),
            ("100::1", Some(Range::Reserved)),
            ("64:ff9b:1::1", Some(Range::Reserved)),
            ("2606:4700:4700::1111", None),
            // IPv4 carried in IPv6: judged as the IPv4 address.
            ("::ffff:127.0.0.1", Some(Range::Loopback)),
            ("::ffff:169.254.169.254", Some(Range::Metadata)),
            ("::ffff:10.1.2.3", Some(Range::Private)),
            ("::ffff:0:192.168.0.1", Some(Range::Private)),
            ("::127.0.0.1", Some(Range::Loopback)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::7f00:1", Some(Range::Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(Range::Metadata)),
            ("64:ff9b::808:808", None),
            ("2002:7f00:1::1", Some(Range::Loopback)),
            ("2002:c0a8:101::1", Some(Range::Private)),
            ("2002:808:808::1", None),
            // Teredo: the client's address inverted in the last 32 bits (127.0.0.1 here).
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some(Range::Loopback)),
        ];
        for (addr, want) in cases {
            assert_eq!(classify(ip(addr)), *want, "{addr}");
        }
    }

    #[test]
    fn the_policy_opens_private_ranges_and_cidrs_but_never_metadata_or_itself() {
        let at = |s: &str, port| SocketAddr::new(ip(s), port);
        let tenant = NetPolicy { own: vec![at("127.0.0.1", 8080)], ..NetPolicy::default() };
        let err = tenant.check(at("127.0.0.1", 11434)).unwrap_err();
        assert_eq!(err.why, Refusal::Range(Range::Loopback));
        assert_eq!(err.to_string(), "127.0.0.1 is a loopback address");
        assert_eq!(
            tenant.check(at("::ffff:10.0.0.1", 80)).unwrap_err().to_string(),
            "10.0.0.1 is a private-network address"
        );
        assert!(tenant.check(at("8.8.8.8", 443)).is_ok());

        let operator = NetPolicy { allow_private: true, ..tenant.clone() };
        assert!(operator.check(at("127.0.0.1", 11434)).is_ok());
        assert!(operator.check(at("10.0.0.1", 80)).is_ok());
        assert_eq!(operator.check(at("127.0.0.1", 8080)).unwrap_err().why, Refusal::OwnAddress);
        assert_eq!(operator.check(at("0.0.0.0", 8080)).unwrap_err().why, Refusal::OwnAddress);
        assert_eq!(operator.check(at("::ffff:127.0.0.1", 8080)).unwrap_err().why, Refusal::OwnAddress);
        assert_eq!(operator.check(at("169.254.169.254", 80)).unwrap_err().why, Refusal::Range(Range::Metadata));

        let listed = NetPolicy {
            allowed: parse_cidrs(&["10.1.0.0/16".into(), "169.254.169.254".into()]).unwrap(),
            ..tenant.clone()
        };
        assert!(listed.check(at("10.1.2.3", 80)).is_ok());
        assert!(listed.check(at("169.254.169.254", 80)).is_ok());
        assert!(listed.check(at("10.2.0.1", 80)).is_err());
        assert!(parse_cidrs(&["10.0.0.0/33".into()]).unwrap_err().contains("10.0.0.0/33"));

        // Listening on every address: any of this host's addresses with that port is us.
        let wildcard = NetPolicy { allow_private: true, own: vec![at("0.0.0.0", 9000)], ..NetPolicy::default() };
        assert_eq!(wildcard.check(at("127.0.0.1", 9000)).unwrap_err().why, Refusal::OwnAddress);
        assert_eq!(wildcard.check(at("127.0.0.7", 9000)).unwrap_err().why, Refusal::OwnAddress);
        assert!(wildcard.check(at("127.0.0.1", 9001)).is_ok());
        assert!(wildcard.check(at("10.255.255.1", 9000)).is_ok(), "not an address of this host");
        let v6 = NetPolicy { allow_private: true, own: vec![at("::", 9000)], ..NetPolicy::default() };
        assert_eq!(v6.check(at("127.0.0.1", 9000)).unwrap_err().why, Refusal::OwnAddress);
        assert_eq!(v6.check(at("::1", 9000)).unwrap_err().why, Refusal::OwnAddress);
    }

    /// Answers each lookup with the next of `answers` (the last one repeats), counting them.
    struct Rebinding {
        answers: Vec<IpAddr>,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl Lookup for Rebinding {
        fn lookup(&self, _host: &str, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
            let n = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let ip = self.answers[n.min(self.answers.len() - 1)];
            Box::pin(async move { Ok(vec![SocketAddr::new(ip, port)]) })
        }
    }

    #[tokio::test]
    async fn a_name_that_rebinds_to_a_private_address_is_refused_when_connecting() {
        // A loopback server the rebinding name will point at; it must never see a connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = accepted.clone();
        tokio::spawn(async move {
            if listener.accept().await.is_ok() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let lookup =
            Arc::new(Rebinding { answers: vec![ip("93.184.215.14"), ip("127.0.0.1")], asked: Default::default() });
        let guard = NetGuard::new(NetPolicy::default(), lookup.clone());
        let url = reqwest::Url::parse(&format!("http://rebind.example:{port}/v1/models")).unwrap();
        assert!(guard.check_url(&url).await.is_ok(), "the first answer is public");

        let error = guard.client(port).get(url).send().await.unwrap_err();
        let refused = crate::routing::providers::http::refusal(&error).expect("refused by the guard");
        assert_eq!(refused.to_string(), "rebind.example resolves to 127.0.0.1: 127.0.0.1 is a loopback address");
        assert_eq!(lookup.asked.load(std::sync::atomic::Ordering::SeqCst), 2, "resolved again to connect");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!accepted.load(std::sync::atomic::Ordering::SeqCst), "nothing connected to the private address");
    }

    #[tokio::test]
    async fn literal_hosts_are_checked_before_sending() {
        let guard = NetGuard::new(NetPolicy::default(), Arc::new(SystemLookup));
        for url in ["http://127.0.0.1:9/", "http://[::ffff:127.0.0.1]/", "http://0x7f.1/", "http://[fe80::1]/"] {
            let url = reqwest::Url::parse(url).unwrap();
            assert!(guard.check_literal(&url).is_err(), "{url}");
        }
        assert!(guard.check_literal(&reqwest::Url::parse("http://8.8.8.8/").unwrap()).is_ok());
        assert!(guard.check_literal(&reqwest::Url::parse("http://example.com/").unwrap()).is_ok());
    }

    #[test]
    fn allowing_private_networks_never_opens_metadata_or_link_local() {
        let open = NetPolicy { allow_private: true, ..NetPolicy::default() };
        for addr in ["169.254.169.254", "169.254.170.2", "169.254.1.1", "100.100.100.200", "192.0.0.192", "fe80::1"] {
            assert!(open.check(SocketAddr::new(ip(addr), 80)).is_err(), "{addr} must stay closed");
        }
        assert!(open.check(SocketAddr::new(ip("10.0.0.1"), 80)).is_ok());
    }
}
