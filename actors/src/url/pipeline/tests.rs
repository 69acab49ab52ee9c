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
    let inspector =
        Inspector::new(settings, BrandList::load(None).unwrap(), Parking::load(None).unwrap(), Bootstrap::default())
            .unwrap();
    let policy = NetPolicy { allow_private: false, allowed: vec!["127.0.0.1/32".parse().unwrap()], own: Vec::new() };
    let guard = NetGuard::new(policy, Arc::new(inspector.dns().clone()));
    let port = fake_site().await;
    let look = |url: String| {
        let (inspector, guard) = (inspector.clone(), guard.clone());
        async move { inspector.inspect(normalize(&url).unwrap(), &guard, "tenant").await }
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
