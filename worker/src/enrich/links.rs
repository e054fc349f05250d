//! Links stage: URLs with a scheme, found with linkify.

use super::{Draft, Stage};
use linkify::{LinkFinder, LinkKind};

pub struct Links {
    finder: LinkFinder,
}

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
        for link in self.finder.links(&draft.body) {
            let url = link.as_str();
            // Only web links: a `javascript:` or `data:` URL is not something to linkify.
            let lower = url.to_ascii_lowercase();
            if (lower.starts_with("http://") || lower.starts_with("https://"))
                && !draft.enriched.links.iter().any(|l| l == url)
            {
                draft.enriched.links.push(url.to_owned());
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
}
