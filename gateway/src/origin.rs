//! Which web pages may open `/ws` (`ALLOWED_ORIGINS`).
//!
//! Browsers send `Origin` with every WebSocket upgrade and, unlike `fetch`, let any page
//! connect anywhere: without this check, any site a user visits could open connections
//! from the user's browser and network position. Clients that are not browsers send no
//! `Origin` and are always let through; the check is about pages, not about identity.

use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};

/// The origins a browser may connect from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origins {
    /// The request's own origin: `Origin`'s host and port are the `Host` header's.
    Same,
    /// `*`: any page.
    Any,
    /// These origins only, normalized (`scheme://host[:port]`, lower case, default port dropped).
    List(Vec<String>),
}

impl Origins {
    /// Parses `ALLOWED_ORIGINS`; unset or blank is [`Origins::Same`].
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(Self::Same);
        };
        let mut list = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                return Ok(Self::Any);
            }
            let origin = normalize(entry).ok_or_else(|| {
                format!("ALLOWED_ORIGINS: {entry:?} is not an origin like https://chat.example.com")
            })?;
            list.push(origin);
        }
        Ok(Self::List(list))
    }

    /// Whether an upgrade with these headers may go ahead.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(ORIGIN) else {
            return true;
        };
        if *self == Self::Any {
            return true;
        }
        let Some(origin) = origin.to_str().ok().and_then(normalize) else {
            return false; // "null", or not an origin at all
        };
        match self {
            Self::Any => true,
            Self::List(list) => list.contains(&origin),
            Self::Same => {
                let host = headers.get(HOST).and_then(|h| h.to_str().ok());
                host.is_some_and(|h| same_authority(&origin, h))
            }
        }
    }
}

/// `scheme://host[:port]` in lower case without the scheme's default port, or `None`
/// when `s` is not such an origin (a path, user info, `null`, another scheme).
fn normalize(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = s.split_once("://")?;
    if !matches!(scheme, "http" | "https")
        || authority.is_empty()
        || authority.contains(['/', '@', '?', '#', ' '])
    {
        return None;
    }
    Some(format!(
        "{scheme}://{}",
        strip_default_port(scheme, authority)
    ))
}

fn strip_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = if scheme == "https" { ":443" } else { ":80" };
    authority.strip_suffix(default).unwrap_or(authority)
}

/// Whether a normalized origin names the same host and port as a `Host` header.
fn same_authority(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let host = host.trim().to_ascii_lowercase();
    strip_default_port(scheme, &host) == authority
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn same_origin_by_default() {
        let o = Origins::parse(None).unwrap();
        assert!(o.allows(&headers(None, "chat.example.com")));
        assert!(o.allows(&headers(
            Some("https://chat.example.com"),
            "chat.example.com"
        )));
        assert!(o.allows(&headers(
            Some("https://Chat.Example.com"),
            "chat.example.com:443"
        )));
        assert!(o.allows(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")));
        assert!(!o.allows(&headers(Some("http://127.0.0.1:8081"), "127.0.0.1:8080")));
        assert!(!o.allows(&headers(Some("https://evil.example"), "chat.example.com")));
        assert!(!o.allows(&headers(Some("null"), "chat.example.com")));
    }

    #[test]
    fn listed_origins_or_any() {
        let o = Origins::parse(Some(" https://chat.example.com/ , http://localhost:8080")).unwrap();
        assert!(o.allows(&headers(Some("https://chat.example.com"), "gw:8080")));
        assert!(o.allows(&headers(Some("https://chat.example.com:443"), "gw:8080")));
        assert!(o.allows(&headers(Some("http://localhost:8080"), "gw:8080")));
        assert!(!o.allows(&headers(
            Some("http://chat.example.com"),
            "chat.example.com"
        )));
        assert_eq!(
            Origins::parse(Some("https://a.example, *")).unwrap(),
            Origins::Any
        );
        assert!(Origins::parse(Some("chat.example.com")).is_err());
        assert!(Origins::parse(Some("https://chat.example.com/app")).is_err());
        assert_eq!(Origins::parse(Some("  ")).unwrap(), Origins::Same);
    }
}
