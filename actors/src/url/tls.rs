//! TLS of a URL's host: the certificate it presents, verified by rustls's WebPKI verifier
//! against the Mozilla roots of `webpki-roots` (or the roots the operator configures, which
//! is how tests use their own CA).
//!
//! The handshake keeps whatever chain the server sends (it never fails on the certificate),
//! so a bad certificate is a finding with its reason (expired, not yet valid, name
//! mismatch, self-signed, untrusted), not a failed connection. Only the network failing
//! (no connection, no handshake in time) is [`TlsError`].

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// Which roots a certificate must chain to.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Empty: the Mozilla roots shipped in `webpki-roots`.
    pub roots: Vec<CertificateDer<'static>>,
    /// How long the connection and handshake may take together.
    pub timeout: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self { roots: Vec::new(), timeout: Duration::from_secs(5) }
    }
}

/// The certificates in PEM text (an operator's `url.tls_roots_file`).
pub fn roots_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let roots =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    if roots.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(roots)
}

/// Why a certificate is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsProblem {
    Expired,
    NotYetValid,
    NameMismatch,
    SelfSigned,
    Untrusted,
    Other(String),
}

impl TlsProblem {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::NameMismatch => "name_mismatch",
            Self::SelfSigned => "self_signed",
            Self::Untrusted => "untrusted",
            Self::Other(reason) => reason,
        }
    }
}

/// What [`Tls::inspect`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFindings {
    pub valid: bool,
    pub problem: Option<TlsProblem>,
    /// Whole days until the leaf certificate's `notAfter` (negative once expired).
    pub days_to_expiry: Option<i64>,
    pub issuer: Option<String>,
}

/// The network failed before a certificate was seen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsError {
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    #[error("connecting: {0}")]
    Connect(String),
    #[error("the TLS handshake failed before a certificate: {0}")]
    Handshake(String),
    #[error("{0:?} is not a name a certificate can be for")]
    Name(String),
}

/// The leaf and intermediates the server sent.
type Chain = (CertificateDer<'static>, Vec<CertificateDer<'static>>);

/// A verifier that accepts any chain and keeps it, so it can be judged after the
/// handshake. Handshake signatures are still checked: the peer holds the leaf's key.
#[derive(Debug)]
struct KeepChain {
    provider: Arc<CryptoProvider>,
    chain: Mutex<Option<Chain>>,
}

impl ServerCertVerifier for KeepChain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = (end_entity.clone().into_owned(), intermediates.iter().map(|c| c.clone().into_owned()).collect());
        *self.chain.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Inspects certificates.
#[derive(Clone)]
pub struct Tls {
    provider: Arc<CryptoProvider>,
    verifier: Arc<WebPkiServerVerifier>,
    timeout: Duration,
}

/// The leaf's validity end and issuer, and whether it names itself as its issuer.
fn read_leaf(der: &CertificateDer<'_>) -> Option<(i64, String, bool)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let issuer = cert.issuer().to_string();
    let self_issued = cert.issuer().as_raw() == cert.subject().as_raw();
    Some((cert.validity().not_after.timestamp(), issuer, self_issued))
}

fn problem_of(error: &rustls::Error, self_issued: bool) -> TlsProblem {
    match error {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => TlsProblem::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => TlsProblem::NotYetValid,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsProblem::NameMismatch
            }
            CertificateError::UnknownIssuer if self_issued => TlsProblem::SelfSigned,
            CertificateError::UnknownIssuer => TlsProblem::Untrusted,
            other => TlsProblem::Other(format!("{other:?}").to_lowercase()),
        },
        other => TlsProblem::Other(other.to_string()),
    }
}

impl Tls {
    pub fn new(settings: &TlsSettings) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        if settings.roots.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            for root in &settings.roots {
                roots.add(root.clone()).map_err(|e| format!("a configured TLS root: {e}"))?;
            }
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("building the certificate verifier: {e}"))?;
        Ok(Self { provider, verifier, timeout: settings.timeout })
    }

    /// Connects to `addr` (an address the caller has already checked), shakes hands for
    /// `host` and judges the certificate it was shown.
    pub async fn inspect(&self, addr: SocketAddr, host: &str) -> Result<TlsFindings, TlsError> {
        // An IPv6 literal's brackets belong to the URL, not to the name.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::Name(host.to_owned()))?;
        let keep = Arc::new(KeepChain { provider: self.provider.clone(), chain: Mutex::new(None) });
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Handshake(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(keep.clone())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| TlsError::Connect(e.to_string()))?;
            connector.connect(name.clone(), tcp).await.map_err(|e| TlsError::Handshake(e.to_string()))
        };
        let shaken = tokio::time::timeout(self.timeout, handshake).await;
        let chain = keep.chain.lock().unwrap_or_else(|p| p.into_inner()).take();
        // A handshake that failed after the certificate still leaves the chain to judge.
        let Some((leaf, intermediates)) = chain else {
            return Err(match shaken {
                Err(_) => TlsError::Timeout(self.timeout),
                Ok(Err(error)) => error,
                Ok(Ok(_)) => TlsError::Handshake("the server sent no certificate".into()),
            });
        };
        let (not_after, issuer, self_issued) = match read_leaf(&leaf) {
            Some((not_after, issuer, self_issued)) => (Some(not_after), Some(issuer), self_issued),
            None => (None, None, false),
        };
        let now = UnixTime::now();
        let verdict = self.verifier.verify_server_cert(&leaf, &intermediates, &name, &[], now);
        let problem = verdict.err().map(|e| problem_of(&e, self_issued));
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        Ok(TlsFindings {
            valid: problem.is_none(),
            problem,
            days_to_expiry: not_after.map(|end| (end - now_secs).div_euclid(86_400)),
            issuer,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
