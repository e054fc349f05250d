//! Links stage: URLs with a scheme, found with linkify.

use super::{Draft, Stage};
use linkify::{LinkFinder, LinkKind};

pub struct Links {
    finder: LinkFinder,
}

/// Most links kept per message, so a crafted body cannot produce a huge list.
const MAX_LINKS: usize = 50;

impl Links {
    pub fn new() -> Self {
        let mut finder = LinkFinder::new();
        finder.kinds(&[LinkKind::Url]).url_must_have_scheme(true);
        Self { finder }
    }
}

impl Default for Links {
    fn default() -> Self {
        Self::new()
    }
}

impl Stage for Links {
    fn name(&self) -> &'static str {
        "links"
    }

    fn apply(&self, draft: &mut Draft<'_>) {
        let links = &mut draft.enriched.links;
        for link in self.finder.links(&draft.body) {
            if links.len() >= MAX_LINKS {
                break;
            }
            let url = link.as_str();
            // Only web links: a `javascript:` or `data:` URL is not something to linkify.
            let web = ["http://", "https://"].iter().any(|s| {
                url.get(..s.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(s))
            });
            if web && !links.iter().any(|l| l == url) {
                links.push(url.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_web_links_once() {
        let text = "see https://example.org and http://example.com/c?d=1, again https://example.org; javascript:alert(1) www.x.com";
        let mut d = Draft {
            original: text,
            body: text.into(),
            enriched: Default::default(),
        };
        Links::new().apply(&mut d);
        assert_eq!(
            d.enriched.links,
            ["https://example.org", "http://example.com/c?d=1"]
        );
    }

    #[test]
    fn keeps_at_most_fifty_and_any_scheme_case() {
        let text: String = (0..80).map(|i| format!("HTTPS://x.org/{i} ")).collect();
        let mut d = Draft {
            original: &text,
            body: text.clone(),
            enriched: Default::default(),
        };
        Links::new().apply(&mut d);
        assert_eq!(d.enriched.links.len(), MAX_LINKS);
        assert_eq!(d.enriched.links[0], "HTTPS://x.org/0");
    }
}
