//! Redirect chains against a loopback HTTP server whose names come from the fake DNS
//! server: followed hop by hop, stopped at a private, loopback-by-name or metadata
//! address, at a loop, a bad location, a slow hop; the final body capped.

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use url::Url;

use super::{follow, RedirectSettings, Stopped};
use crate::{
    routing::netguard::{NetGuard, NetPolicy},
    test_support::{
        fake_dns::{FakeDns, FakeName},
        fake_http,
    },
    url::dns::{Dns, DnsSettings},
};

/// Answers by path: `/go?to=URL` redirects there, `/slow` never answers in time, `/big`
/// sends 1 MB, anything else is a small page.
async fn fake_site() -> u16 {
    let addr = fake_http::serve(|path: String| async move {
        if let Some(to) = path.strip_prefix("/go?to=") {
            fake_http::redirect(to)
        } else if path == "/slow" {
            tokio::time::sleep(Duration::from_secs(3)).await;
            fake_http::response("200 OK", "text/plain", "")
        } else if path == "/big" {
            fake_http::response("200 OK", "text/plain", &"x".repeat(1 << 20))
        } else {
            fake_http::response("200 OK", "text/html", &format!("page {path}"))
        }
    })
    .await;
    addr.port()
}

#[tokio::test]
async fn chains_are_followed_through_the_guard_and_stopped_where_they_must() {
    let dns_server = FakeDns::start().await;
    for name in ["a.test", "b.test"] {
        dns_server.set(name, FakeName::a(Ipv4Addr::LOCALHOST));
    }
    dns_server.set("inner.test", FakeName::a(Ipv4Addr::new(10, 1, 2, 3)));
    let dns = Dns::new(&DnsSettings { servers: vec![dns_server.addr], timeout: Duration::from_secs(2) }).unwrap();
    // The test site lives on loopback, which the operator opens here; nothing else private.
    let policy = NetPolicy { allow_private: false, allowed: vec!["127.0.0.1/32".parse().unwrap()], own: Vec::new() };
    let guard = NetGuard::new(policy, Arc::new(dns));
    let port = fake_site().await;
    let site = |host: &str, path: &str| format!("http://{host}:{port}{path}");
    let settings = RedirectSettings { max_hops: 4, hop_timeout: Duration::from_millis(500), max_body_bytes: 1000 };

    let start = site("a.test", &format!("/go?to={}", site("a.test", &format!("/go?to={}", site("b.test", "/end")))));
    let found = follow(&guard, &Url::parse(&start).unwrap(), &settings).await;
    assert_eq!(found.stopped, None, "{found:?}");
    assert_eq!(found.redirect_hops(), 2);
    assert_eq!(found.final_url.as_deref(), Some(site("b.test", "/end").as_str()));
    assert_eq!((found.final_status, found.body.as_deref()), (Some(200), Some("page /end")));

    let refused = [
        "http://10.0.0.1/admin".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://inner.test:{port}/"),
        format!("http://[::1]:{port}/"),
    ];
    for target in refused {
        let found = follow(&guard, &Url::parse(&site("a.test", &format!("/go?to={target}"))).unwrap(), &settings).await;
        assert!(matches!(found.stopped, Some(Stopped::Refused(_))), "{target}: {found:?}");
        assert_eq!((found.redirect_hops(), found.final_url.as_deref()), (1, None), "{target}");
    }

    let looping = site("a.test", "/go?to=/go?to=/go?to=/go?to=/go?to=/go?to=/end");
    let found = follow(&guard, &Url::parse(&looping).unwrap(), &settings).await;
    assert_eq!(found.stopped, Some(Stopped::TooManyHops), "{found:?}");

    let found = follow(&guard, &Url::parse(&site("a.test", "/go?to=javascript:alert(1)")).unwrap(), &settings).await;
    assert!(matches!(found.stopped, Some(Stopped::BadLocation(_))), "{found:?}");

    let found = follow(&guard, &Url::parse(&site("a.test", "/slow")).unwrap(), &settings).await;
    assert_eq!(found.stopped, Some(Stopped::Timeout), "{found:?}");

    let found = follow(&guard, &Url::parse(&site("b.test", "/big")).unwrap(), &settings).await;
    assert_eq!(found.body.map(|b| b.len()), Some(1000));

    let found = follow(&guard, &Url::parse("http://nowhere.test/").unwrap(), &settings).await;
    assert!(matches!(found.stopped, Some(Stopped::Network(_))), "NXDOMAIN: {found:?}");
}
