//! The shipped bootstrap, and lookups against a loopback fake registry.

use std::time::Duration;

use super::{lookup, Bootstrap, RdapError};
use crate::test_support::fake_http;

#[test]
fn the_shipped_bootstrap_names_the_registries() {
    let bootstrap = Bootstrap::shipped();
    assert!(bootstrap.len() > 1000, "{} TLDs", bootstrap.len());
    assert_eq!(bootstrap.publication.as_deref(), Some("2026-07-23T02:00:03Z"));
    assert_eq!(bootstrap.server_for("example.com"), Some("https://rdap.verisign.com/com/v1/"));
    assert_eq!(bootstrap.server_for("www.Example.ORG."), Some("https://rdap.publicinterestregistry.org/rdap/"));
    assert_eq!(bootstrap.server_for("shop.co.uk"), Some("https://rdap.nominet.uk/uk/"));
    assert_eq!(bootstrap.server_for("paypa1-login.example"), None);
    assert!(Bootstrap::parse("{\"services\": 5}").is_err());
}

/// A registry that knows `young.test` (registered 10 days ago) and `old.test`, answers
/// 404 for others, garbage for `bad.test`, and nothing in time for `slow.test`.
async fn fake_registry() -> String {
    let addr = fake_http::serve(|path: String| async move {
        let now = time::OffsetDateTime::now_utc();
        let date =
            |days: i64| (now + time::Duration::days(days)).format(&time::format_description::well_known::Rfc3339).unwrap();
        let rdap = |body: &str| fake_http::response("200 OK", "application/rdap+json", body);
        match path.as_str() {
            "/rdap/domain/young.test" => rdap(&format!(
                r#"{{"objectClassName":"domain","ldhName":"YOUNG.TEST","status":["active"],"events":[{{"eventAction":"registration","eventDate":"{}"}},{{"eventAction":"expiration","eventDate":"{}"}}]}}"#,
                date(-10),
                date(355)
            )),
            "/rdap/domain/old.test" => rdap(
                r#"{"objectClassName":"domain","events":[{"eventAction":"registration","eventDate":"1995-08-14T04:00:00Z"}]}"#,
            ),
            "/rdap/domain/bad.test" => rdap("<html>nope</html>"),
            "/rdap/domain/slow.test" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                rdap("{}")
            }
            _ => fake_http::response("404 Not Found", "application/rdap+json", "{}"),
        }
    })
    .await;
    format!("http://{addr}/rdap/")
}

#[tokio::test]
async fn registration_and_expiry_are_read_and_failures_named() {
    let mut bootstrap = Bootstrap::default();
    bootstrap.set("test", &fake_registry().await);
    let client = crate::routing::client::client();
    let timeout = Duration::from_millis(500);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let young = lookup(&client, &bootstrap, "young.test", timeout).await.unwrap();
    // The registry's clock and ours differ by the request's time: a day boundary may fall between.
    assert!(young.age_days(now).is_some_and(|d| (9..=10).contains(&d)), "{young:?}");
    assert!(young.expires_in_days(now).is_some_and(|d| (354..=355).contains(&d)), "{young:?}");
    assert_eq!(young.status, ["active"]);
    let old = lookup(&client, &bootstrap, "old.test", timeout).await.unwrap();
    assert!(old.age_days(now).is_some_and(|d| d > 11_000) && old.expires_at.is_none(), "{old:?}");
    assert_eq!(lookup(&client, &bootstrap, "gone.test", timeout).await, Err(RdapError::NotFound("gone.test".into())));
    assert!(matches!(lookup(&client, &bootstrap, "bad.test", timeout).await, Err(RdapError::Malformed(_))));
    assert_eq!(lookup(&client, &bootstrap, "slow.test", timeout).await, Err(RdapError::Timeout));
    assert_eq!(lookup(&client, &bootstrap, "x.nowhere", timeout).await, Err(RdapError::NoServer("x.nowhere".into())));
}
