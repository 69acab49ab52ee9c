//! The HTTP client settings every upstream call shares (providers, self-hosted endpoints
//! through their guard, payments).

/// The client settings every upstream call shares: rustls with the ring crypto provider
/// (installed once per process), pooled connections, platform root certificates, and no
/// redirects: a redirect would send our request (and its credentials) to an address nobody
/// checked, so a 3xx is answered to the adapter as the failure it is.
pub fn builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().pool_max_idle_per_host(64).tcp_nodelay(true).redirect(reqwest::redirect::Policy::none())
}

/// The HTTP client for upstream calls to addresses the operator configured.
pub fn client() -> reqwest::Client {
    builder().build().expect("the HTTP client builds once a crypto provider is installed")
}
