//! A URL as a browser would go to it: scheme and host lowercased, the host in its ASCII
//! (punycode) form, default ports dropped, dot segments resolved, the fragment removed; its
//! registrable domain from the public suffix list; and the tricks that make a URL read as
//! something it is not (userinfo before the host, an IP literal, an internationalised
//! host) noted.

use std::net::IpAddr;

use url::{Host, Url};

/// The longest URL we take.
pub const MAX_URL_CHARS: usize = 4096;

/// A parsed, normalised URL.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedUrl {
    /// What we go to: the serialisation without the fragment.
    pub url: Url,
    /// The host in ASCII (punycode for an internationalised name), without a trailing dot.
    pub host: String,
    /// The host as a person reads it (Unicode).
    pub unicode_host: String,
    /// The host when it is an IP address written as one (including the forms a browser
    /// reads as one: `0x7f.1`, `2130706433`).
    pub ip: Option<IpAddr>,
    /// The registrable domain (`example.co.uk` for `www.example.co.uk`); `None` for an IP
    /// or a bare public suffix.
    pub registrable: Option<String>,
    /// The public suffix (`co.uk`).
    pub suffix: Option<String>,
    /// The text before `@` in the authority, when there is any (`paypal.com` in
    /// `https://paypal.com@evil.example/`).
    pub userinfo: Option<String>,
    /// A port that is not the scheme's default.
    pub port: Option<u16>,
    /// The input had no scheme and `https://` was assumed.
    pub scheme_assumed: bool,
}

impl NormalizedUrl {
    /// The registrable domain without its public suffix (`paypa1-login` for
    /// `paypa1-login.example`), in Unicode.
    pub fn registrable_label(&self) -> Option<String> {
        let (registrable, suffix) = (self.registrable.as_deref()?, self.suffix.as_deref()?);
        let label = registrable.strip_suffix(suffix)?.strip_suffix('.')?;
        Some(to_unicode(label))
    }

    /// The labels left of the registrable domain, in Unicode (`["login", "secure"]` for
    /// `login.secure.example.com`).
    pub fn subdomain_labels(&self) -> Vec<String> {
        let Some(registrable) = self.registrable.as_deref() else { return Vec::new() };
        let rest = self.host.strip_suffix(registrable).and_then(|r| r.strip_suffix('.')).unwrap_or("");
        rest.split('.').filter(|l| !l.is_empty()).map(to_unicode).collect()
    }

    /// Whether the host is internationalised (any label in punycode).
    pub fn is_idn(&self) -> bool {
        self.host.split('.').any(|label| label.starts_with("xn--"))
    }

    /// The domain the spec's `domain` field names: the registrable domain, else the host.
    pub fn domain(&self) -> &str {
        self.registrable.as_deref().unwrap_or(&self.host)
    }
}

/// Why a URL could not be taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UrlInputError {
    #[error("url is empty")]
    Empty,
    #[error("url is longer than {MAX_URL_CHARS} characters")]
    TooLong,
    #[error("url contains control characters")]
    ControlCharacters,
    #[error("url is not a valid URL: {0}")]
    Invalid(String),
    #[error("url must be http or https, not {0}")]
    Scheme(String),
    #[error("url has no host")]
    NoHost,
}

fn to_unicode(ascii: &str) -> String {
    let (unicode, result) = idna::domain_to_unicode(ascii);
    if result.is_ok() {
        unicode
    } else {
        ascii.to_owned()
    }
}

/// Parses and normalises `input` (a URL, or a bare host to which `https://` is added).
/// Whether `input` starts with a scheme, as an address bar reads it: `https:` and `http:`
/// whatever follows (a browser reads `https:\\\\evil.example` and `https:/evil.example` as
/// evil.example), any scheme followed by `//`, and a dotless word before a colon that is
/// not followed by a port (`javascript:`, `mailto:`; `localhost:8080` is a host and port).
fn has_scheme(input: &str) -> bool {
    let Some((scheme, rest)) = input.split_once(':') else { return false };
    let is_scheme = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !is_scheme {
        return false;
    }
    let port_follows = {
        let digits = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    scheme.eq_ignore_ascii_case("http")
        || scheme.eq_ignore_ascii_case("https")
        || rest.starts_with("//")
        || (!scheme.contains('.') && !port_follows)
}

pub fn normalize(input: &str) -> Result<NormalizedUrl, UrlInputError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(UrlInputError::Empty);
    }
    if input.chars().count() > MAX_URL_CHARS {
        return Err(UrlInputError::TooLong);
    }
    if input.chars().any(char::is_control) {
        return Err(UrlInputError::ControlCharacters);
    }
    let has_scheme = has_scheme(input);
    let (text, scheme_assumed) =
        if has_scheme { (input.to_owned(), false) } else { (format!("https://{input}"), true) };
    let mut url = Url::parse(&text).map_err(|e| UrlInputError::Invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlInputError::Scheme(url.scheme().to_owned()));
    }
    url.set_fragment(None);
    let ip = match url.host() {
        Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(Host::Domain(_)) => None,
        None => return Err(UrlInputError::NoHost),
    };
    let mut host = url.host_str().ok_or(UrlInputError::NoHost)?.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Err(UrlInputError::NoHost);
    }
    // What DNS can carry: longer names never resolve, and only cost us matching time.
    if ip.is_none() && (host.len() > 253 || host.split('.').any(|label| label.len() > 63)) {
        return Err(UrlInputError::Invalid("the host is longer than DNS allows (253 bytes, 63 per label)".into()));
    }
    if ip.is_none() && url.host_str() != Some(host.as_str()) {
        url.set_host(Some(&host)).map_err(|e| UrlInputError::Invalid(e.to_string()))?;
        host = url.host_str().unwrap_or_default().to_owned();
    }
    let (registrable, suffix) = match ip {
        Some(_) => (None, None),
        None => (psl::domain_str(&host).map(str::to_owned), psl::suffix_str(&host).map(str::to_owned)),
    };
    // Decoded: `%70aypal.com@evil.example` reads as paypal.com to a person.
    let decoded = |part: &str| percent_encoding::percent_decode_str(part).decode_utf8_lossy().into_owned();
    let userinfo = match (url.username(), url.password()) {
        ("", None) => None,
        (user, None) => Some(decoded(user)),
        (user, Some(password)) => Some(format!("{}:{}", decoded(user), decoded(password))),
    };
    Ok(NormalizedUrl {
        unicode_host: if ip.is_some() { host.clone() } else { to_unicode(&host) },
        host,
        ip,
        registrable,
        suffix,
        userinfo,
        port: url.port(),
        scheme_assumed,
        url,
    })
}

#[cfg(test)]
mod tests {
    use super::{normalize, UrlInputError};

    #[test]
    fn urls_are_normalised_as_a_browser_reads_them() {
        let cases = [
            ("HTTPS://WWW.PayPal.COM:443/a/../signin#top", "https://www.paypal.com/signin", "paypal.com"),
            ("http://example.com:80/./x/./y", "http://example.com/x/y", "example.com"),
            ("example.co.uk/path", "https://example.co.uk/path", "example.co.uk"),
            ("https://www.example.co.uk.", "https://www.example.co.uk/", "example.co.uk"),
            (
                "https://paypa1-login.example/security-check",
                "https://paypa1-login.example/security-check",
                "paypa1-login.example",
            ),
            ("https://pаypal.com/", "https://xn--pypal-4ve.com/", "xn--pypal-4ve.com"),
            ("https://alice.github.io/x", "https://alice.github.io/x", "alice.github.io"),
            ("http://0x7f.1/", "http://127.0.0.1/", "127.0.0.1"),
        ];
        for (input, normalized, domain) in cases {
            let n = normalize(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((n.url.as_str(), n.domain()), (normalized, domain), "{input}");
        }
    }

    #[test]
    fn tricks_are_noted() {
        let n = normalize("https://paypal.com@evil.example/login").unwrap();
        assert_eq!((n.userinfo.as_deref(), n.host.as_str()), (Some("paypal.com"), "evil.example"));
        let n = normalize("https://www.paypal.com:443@evil.example/").unwrap();
        assert_eq!(n.userinfo.as_deref(), Some("www.paypal.com:443"));
        let n = normalize("http://2130706433/").unwrap();
        assert_eq!(n.ip.map(|ip| ip.to_string()).as_deref(), Some("127.0.0.1"));
        let n = normalize("https://[::1]:8443/").unwrap();
        assert!(n.ip.is_some() && n.port == Some(8443) && n.registrable.is_none());
        let n = normalize("https://pаypal.com/").unwrap();
        assert!(n.is_idn());
        assert_eq!(n.unicode_host, "pаypal.com");
        assert_eq!(n.registrable_label().as_deref(), Some("pаypal"));
        let n = normalize("https://login.secure.example.co.uk/").unwrap();
        assert_eq!(n.subdomain_labels(), ["login", "secure"]);
        let n = normalize("https://%70aypal.com@evil.example/").unwrap();
        assert_eq!((n.userinfo.as_deref(), n.host.as_str()), (Some("paypal.com"), "evil.example"));
    }

    /// Slashes as a browser reads them (WHATWG): a backslash or a single slash after a
    /// special scheme still starts the host.
    #[test]
    fn odd_slashes_name_the_host_a_browser_would_visit() {
        for input in
            ["https:\\\\evil.example/x", "https:/evil.example/x", "https:evil.example/x", "HTTPS://evil.example\\x"]
        {
            let n = normalize(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(n.host, "evil.example", "{input}");
            assert!(!n.scheme_assumed, "{input}");
        }
        for (input, host) in [("localhost:8080/x", "localhost"), ("example.com:8443", "example.com")] {
            let n = normalize(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((n.host.as_str(), n.scheme_assumed), (host, true), "{input}");
        }
        for input in ["javascript:alert(1)", "mailto:a@example.com", "data:text/html,hi"] {
            assert!(matches!(normalize(input), Err(UrlInputError::Scheme(_))), "{input}");
        }
    }

    #[test]
    fn bad_input_is_refused_with_its_reason() {
        assert_eq!(normalize("  "), Err(UrlInputError::Empty));
        assert_eq!(normalize("ftp://example.com/"), Err(UrlInputError::Scheme("ftp".into())));
        assert_eq!(normalize("javascript://alert(1)"), Err(UrlInputError::Scheme("javascript".into())));
        assert_eq!(normalize("https://exa\nmple.com"), Err(UrlInputError::ControlCharacters));
        assert!(matches!(normalize("https://exa mple.com"), Err(UrlInputError::Invalid(_))));
        assert!(matches!(normalize("https://"), Err(UrlInputError::Invalid(_) | UrlInputError::NoHost)));
        assert_eq!(normalize(&format!("https://e.com/{}", "a".repeat(5000))), Err(UrlInputError::TooLong));
        assert!(matches!(normalize(&format!("https://{}.com/", "a".repeat(64))), Err(UrlInputError::Invalid(_))));
        let long_host = vec!["a-a"; 70].join(".");
        assert!(matches!(normalize(&format!("https://{long_host}.com/")), Err(UrlInputError::Invalid(_))));
    }
}
