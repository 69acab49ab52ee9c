//! Local HTTPS servers with certificates made for each case: valid, expired, not yet valid,
//! for another name, self-signed and from an unknown CA; and a network that fails.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use super::{Tls, TlsError, TlsProblem, TlsSettings};

pub(crate) fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf for `name`, valid from `from_days` to `to_days` (relative to now), signed by
/// `issuer` or by itself.
pub(crate) fn leaf(
    name: &str,
    from_days: i64,
    to_days: i64,
    issuer: Option<&CertifiedIssuer<'static, KeyPair>>,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    let now = OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(to_days);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), key)
}

/// Serves TLS with `cert` on loopback until dropped.
pub(crate) async fn serve(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn certificates_are_judged_with_their_reason() {
    let root = ca("Tokaroo Test Root");
    let stranger = ca("Somebody Else's Root");
    let settings = TlsSettings { roots: vec![root.der().clone()], timeout: Duration::from_secs(5) };
    let tls = Tls::new(&settings).unwrap();
    let cases = [
        ("valid", leaf("shop.test", -1, 30, Some(&root)), None, Some(29..=30)),
        ("expired", leaf("shop.test", -60, -2, Some(&root)), Some(TlsProblem::Expired), Some(-3..=-2)),
        ("not yet valid", leaf("shop.test", 5, 60, Some(&root)), Some(TlsProblem::NotYetValid), Some(59..=60)),
        ("another name", leaf("other.test", -1, 30, Some(&root)), Some(TlsProblem::NameMismatch), Some(29..=30)),
        ("self-signed", leaf("shop.test", -1, 30, None), Some(TlsProblem::SelfSigned), Some(29..=30)),
        ("unknown CA", leaf("shop.test", -1, 30, Some(&stranger)), Some(TlsProblem::Untrusted), Some(29..=30)),
    ];
    for (case, (cert, key), problem, days) in cases {
        let (addr, server) = serve(cert, key).await;
        let found = tls.inspect(addr, "shop.test").await.unwrap_or_else(|e| panic!("{case}: {e}"));
        server.abort();
        assert_eq!((found.valid, found.problem.clone()), (problem.is_none(), problem), "{case}: {found:?}");
        let days = days.unwrap();
        assert!(found.days_to_expiry.is_some_and(|d| days.contains(&d)), "{case}: {found:?}");
    }
}

#[tokio::test]
async fn a_network_that_fails_is_an_error_not_a_finding() {
    let tls = Tls::new(&TlsSettings { roots: Vec::new(), timeout: Duration::from_millis(300) }).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    assert!(matches!(tls.inspect(closed, "shop.test").await, Err(TlsError::Connect(_))));
    // A server that accepts and never speaks.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = mute.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = mute.accept().await {
            open.push(tcp);
        }
    });
    assert!(matches!(tls.inspect(addr, "shop.test").await, Err(TlsError::Timeout(_))));
    assert!(matches!(tls.inspect(addr, "").await, Err(TlsError::Name(_))));
}
