//! The whole inspection against a loopback site named by the fake DNS server: signals from
//! the URL, DNS, the redirect walk and parking; the second look answered from the cache
//! with the same signals.

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use super::{Inspector, PipelineSettings};
use crate::{
    routing::netguard::{NetGuard, NetPolicy},
    test_support::{
        fake_dns::{FakeDns, FakeName},
        fake_http,
    },
    url::{
        brands::BrandList, dns::DnsSettings, normalize::normalize, parked::Parking, rdap::Bootstrap,
        redirects::RedirectSettings,
    },
};

async fn fake_site() -> u16 {
    let addr = fake_http::serve(|path: String| async move {
        match path.strip_prefix("/go?to=") {
            Some(to) => fake_http::redirect(to),
            None if path == "/forsale" => {
                fake_http::response("200 OK", "text/html", "<h1>This domain is for sale!</h1>")
            }
            None => fake_http::response("200 OK", "text/html", "<h1>Shop</h1>"),
        }
    })
    .await;
    addr.port()
}

/// An inspector with the shipped lists, and a tenant's guard that may reach loopback only.
fn loopback_inspector(settings: PipelineSettings) -> (Inspector, NetGuard) {
    let inspector =
        Inspector::new(settings, BrandList::load(None).unwrap(), Parking::load(None).unwrap(), Bootstrap::default())
            .unwrap();
    let policy = NetPolicy { allow_private: false, allowed: vec!["127.0.0.1/32".parse().unwrap()], own: Vec::new() };
    let guard = NetGuard::new(policy, Arc::new(inspector.dns().clone()));
    (inspector, guard)
}

fn ids(fired: &[(&'static str, serde_json::Value, String)]) -> Vec<&'static str> {
    let mut ids: Vec<&'static str> = fired.iter().map(|(id, _, _)| *id).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn an_inspection_gathers_every_stage_and_the_cache_answers_the_next() {
    let dns = FakeDns::start().await;
    dns.set(
        "shop.test",
        FakeName::Records {
            a: vec![Ipv4Addr::LOCALHOST],
            aaaa: Vec::new(),
            mx: vec!["mail.shop.test".into()],
            ns: vec!["ns1.shop.test".into()],
        },
    );
    dns.set(
        "parked.test",
        FakeName::Records {
            a: vec![Ipv4Addr::LOCALHOST],
            aaaa: Vec::new(),
            mx: Vec::new(),
            ns: vec!["ns1.sedoparking.com".into()],
        },
    );
    let settings = PipelineSettings {
        dns: DnsSettings { servers: vec![dns.addr], timeout: Duration::from_millis(500) },
        redirects: RedirectSettings { max_hops: 5, hop_timeout: Duration::from_millis(500), max_body_bytes: 4096 },
        rdap_timeout: Duration::from_millis(500),
        cache_capacity: 100,
        ..PipelineSettings::default()
    };
    let (inspector, guard) = loopback_inspector(settings);
    let port = fake_site().await;
    let look = |url: String| {
        let (inspector, guard) = (inspector.clone(), guard.clone());
        async move { inspector.inspect(normalize(&url).unwrap(), &guard, "tenant", "acct").await }
    };

    let first = look(format!("http://shop.test:{port}/")).await;
    assert_eq!(ids(&first.fired), ["insecure_scheme", "non_standard_port"], "{:?}", first.fired);
    assert!(!first.cache.hit);
    let again = look(format!("http://shop.test:{port}/")).await;
    assert_eq!(again.fired, first.fired, "the same answer from the cache");
    assert!(again.cache.hit && again.cache.age_ms.is_some(), "{:?}", again.cache);

    let parked = look(format!("http://parked.test:{port}/forsale")).await;
    assert!(ids(&parked.fired).contains(&"parked_domain"), "{:?}", parked.fired);
    assert!(ids(&parked.fired).contains(&"no_mx"), "{:?}", parked.fired);

    let gone = look("https://gone.test/".into()).await;
    assert_eq!(ids(&gone.fired), ["dns_nxdomain", "fetch_unavailable"], "{:?}", gone.fired);

    let inward = look(format!("http://shop.test:{port}/go?to=http://10.0.0.1/")).await;
    assert!(ids(&inward.fired).contains(&"redirect_refused"), "{:?}", inward.fired);

    let phish = look(format!("http://paypa1-login.test:{port}/security-check")).await;
    assert_eq!(phish.brand_match.map(|m| m.brand), Some("PayPal".to_owned()));
}

/// A cache full of fresh answers makes room by dropping its oldest tenth.
#[test]
fn a_full_shelf_drops_its_oldest_entries_for_new_ones() {
    let shelf = super::Shelf::new(Duration::from_secs(3600), 10);
    for i in 0..10 {
        shelf.put(format!("k{i}"), i);
        std::thread::sleep(Duration::from_millis(2));
    }
    shelf.put("new".into(), 99);
    assert_eq!(shelf.get("new").map(|(v, _)| v), Some(99));
    assert!(shelf.get("k0").is_none(), "the oldest went");
    assert!(shelf.get("k9").is_some(), "the newest stayed");
    assert!(shelf.entries.len() <= 10);
}

/// An https URL: the certificate the site presents is judged against the configured roots
/// at the address DNS gave, valid or not, with its days to expiry.
#[tokio::test]
async fn an_https_url_has_its_certificate_judged() {
    use crate::url::tls::{tests as certs, TlsSettings};
    let root = certs::ca("Pipeline Test Root");
    let (good_cert, good_key) = certs::leaf("secure.test", -1, 30, Some(&root));
    let (good, _good_task) = certs::serve(good_cert, good_key).await;
    let (old_cert, old_key) = certs::leaf("old.test", -60, -2, Some(&root));
    let (old, _old_task) = certs::serve(old_cert, old_key).await;
    let dns = FakeDns::start().await;
    dns.set("secure.test", FakeName::a(Ipv4Addr::LOCALHOST));
    dns.set("old.test", FakeName::a(Ipv4Addr::LOCALHOST));
    let settings = PipelineSettings {
        dns: DnsSettings { servers: vec![dns.addr], timeout: Duration::from_millis(500) },
        tls: TlsSettings { roots: vec![root.der().clone()], timeout: Duration::from_secs(2) },
        redirects: RedirectSettings { max_hops: 2, hop_timeout: Duration::from_millis(500), max_body_bytes: 1024 },
        rdap_timeout: Duration::from_millis(200),
        ..PipelineSettings::default()
    };
    let (inspector, guard) = loopback_inspector(settings);

    let url = normalize(&format!("https://secure.test:{}/", good.port())).unwrap();
    let found = inspector.inspect(url, &guard, "tenant", "acct").await;
    let tls = found.network.tls.clone().expect("https has a TLS stage").expect("a handshake");
    assert!(tls.valid, "{tls:?}");
    assert!((29..=30).contains(&tls.days_to_expiry.unwrap()), "{tls:?}");
    assert!(!ids(&found.fired).contains(&"tls_invalid"), "{:?}", found.fired);

    let url = normalize(&format!("https://old.test:{}/", old.port())).unwrap();
    let found = inspector.inspect(url, &guard, "tenant", "acct").await;
    let tls = found.network.tls.clone().unwrap().unwrap();
    assert!(!tls.valid && tls.days_to_expiry.unwrap() < 0, "{tls:?}");
    assert!(ids(&found.fired).contains(&"tls_invalid"), "{:?}", found.fired);

    // A tenant's guard that may not reach loopback does not shake hands there.
    let closed = NetGuard::new(NetPolicy::default(), Arc::new(inspector.dns().clone()));
    let url = normalize(&format!("https://secure.test:{}/", good.port())).unwrap();
    let found = inspector.inspect(url, &closed, "closed", "other").await;
    assert!(matches!(found.network.tls, Some(Err(_))), "{:?}", found.network.tls);
}
