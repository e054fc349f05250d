//! The chat page at `/` and its browser client, compiled into the binary.
//!
//! Four files from `gateway/static/`, each served with its content type, `no-cache` (so a
//! new build is picked up at once, revalidated by `ETag`), and a Content-Security-Policy
//! that allows only the gateway's own scripts and styles (no inline script at all) and
//! WebSocket connections.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;

/// What the page may load and where it may connect.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// One static file.
pub struct Asset {
    pub body: &'static str,
    pub content_type: &'static str,
    /// Any origin may load it (`Access-Control-Allow-Origin: *`): the client library, so
    /// other sites can `import` it as a module.
    pub shared: bool,
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(body: &'static str, content_type: &'static str, shared: bool) -> Self {
        Self {
            body,
            content_type,
            shared,
            etag: OnceLock::new(),
        }
    }

    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            // FNV-1a over the content: changes with every edit, stable across restarts.
            let hash = self.body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            HeaderValue::from_str(&format!("\"{hash:016x}\"")).expect("hex is a valid header")
        })
    }

    /// The file, or 304 when the browser's copy (`If-None-Match`) is current.
    pub fn respond(&self, request: &HeaderMap) -> Response {
        let etag = self.etag();
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag);
        let headers = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, etag.clone()),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ];
        let mut response = if fresh {
            (StatusCode::NOT_MODIFIED, headers).into_response()
        } else {
            (headers, self.body).into_response()
        };
        if self.shared {
            response.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        response
    }
}

pub static INDEX_HTML: Asset = Asset::new(include_str!("../static/index.html"), HTML, false);
pub static CLIENT_JS: Asset = Asset::new(include_str!("../static/client.js"), JS, true);
pub static APP_JS: Asset = Asset::new(include_str!("../static/app.js"), JS, false);
pub static STYLE_CSS: Asset = Asset::new(include_str!("../static/style.css"), CSS, false);

/// `GET /`: the chat page.
pub async fn index(headers: HeaderMap) -> Response {
    INDEX_HTML.respond(&headers)
}

/// `GET /client.js`: the client library, an ES module (docs/client.md).
pub async fn client_js(headers: HeaderMap) -> Response {
    CLIENT_JS.respond(&headers)
}

/// `GET /app.js`: the page's code.
pub async fn app_js(headers: HeaderMap) -> Response {
    APP_JS.respond(&headers)
}

/// `GET /style.css`: the page's styles.
pub async fn style_css(headers: HeaderMap) -> Response {
    STYLE_CSS.respond(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &Response, name: header::HeaderName) -> &str {
        r.headers().get(name).unwrap().to_str().unwrap()
    }

    #[tokio::test]
    async fn serves_each_file_with_its_type_and_headers() {
        for (resp, ty) in [
            (index(HeaderMap::new()).await, HTML),
            (client_js(HeaderMap::new()).await, JS),
            (app_js(HeaderMap::new()).await, JS),
            (style_css(HeaderMap::new()).await, CSS),
        ] {
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(header(&resp, header::CONTENT_TYPE), ty);
            assert_eq!(header(&resp, header::CACHE_CONTROL), "no-cache");
            assert_eq!(
                header(&resp, header::CONTENT_SECURITY_POLICY),
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(header(&resp, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        }
        let lib = client_js(HeaderMap::new()).await;
        assert_eq!(header(&lib, header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        let page = index(HeaderMap::new()).await;
        assert!(
            page.headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_current_copy_gets_304() {
        let first = app_js(HeaderMap::new()).await;
        let etag = first.headers().get(header::ETAG).unwrap().clone();
        let mut req = HeaderMap::new();
        req.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(app_js(req).await.status(), StatusCode::NOT_MODIFIED);
        let mut stale = HeaderMap::new();
        stale.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"0\""));
        assert_eq!(app_js(stale).await.status(), StatusCode::OK);
    }

    #[test]
    fn the_policy_allows_no_inline_code() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self';"));
        assert!(CONTENT_SECURITY_POLICY.contains("connect-src 'self' ws: wss:"));
        // Every script of the page is a file; no inline handlers or styles either.
        let html = INDEX_HTML.body;
        for tag in html.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src="), "inline script: <script{open}>");
        }
        for tag in html.split('<').skip(1) {
            let inside = &tag[..tag.find('>').unwrap_or(tag.len())];
            for attr in inside.split_whitespace().skip(1) {
                assert!(!attr.starts_with("on"), "inline handler in <{inside}>");
            }
        }
        assert!(!html.contains("style="));
        assert!(!html.contains("<style"));
    }

    #[test]
    fn user_text_never_goes_through_html_parsing() {
        for asset in [&CLIENT_JS, &APP_JS] {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "createContextualFragment",
                "eval(",
                "new Function",
            ] {
                assert!(!asset.body.contains(sink), "{sink} in a served script");
            }
        }
    }
}
