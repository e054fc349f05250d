//! Mentions (`@user`) and hashtags (`#tag`) stage.
//!
//! A mention is `@` followed by a valid user name, at the start of the text or after a
//! character that cannot be part of a word (so `a@b.c` is not one); trailing `.`, `:`
//! and `-` are punctuation, not part of the name. Text inside links is skipped, so
//! `https://x.org/#top` yields no hashtag.

use super::{Draft, Stage};
use linkify::{LinkFinder, LinkKind};
use shared::ids::is_valid_name;

pub struct MentionsAndHashtags;

/// Most mentions or hashtags kept per message, so a crafted body cannot produce a huge list.
const MAX_ITEMS: usize = 50;

impl Stage for MentionsAndHashtags {
    fn name(&self) -> &'static str {
        "mentions"
    }

    fn apply(&self, draft: &mut Draft<'_>) {
        let text = draft.body.as_str();
        let mut finder = LinkFinder::new();
        finder.kinds(&[LinkKind::Url]);
        // Links come in order and do not overlap, so one cursor walks them alongside the text.
        let mut links = finder.links(text).map(|l| l.start()..l.end()).peekable();
        let mut prev: Option<char> = None;
        for (i, c) in text.char_indices() {
            let boundary =
                prev.is_none_or(|p| !(p.is_alphanumeric() || p == '_' || p == '@' || p == '#'));
            prev = Some(c);
            if !boundary || (c != '@' && c != '#') {
                continue;
            }
            while links.next_if(|l| l.end <= i).is_some() {}
            if links.peek().is_some_and(|l| l.start <= i) {
                continue;
            }
            let rest = &text[i + 1..];
            let found = if c == '@' {
                mention(rest)
            } else {
                hashtag(rest)
            };
            let Some(word) = found else { continue };
            let list = if c == '@' {
                &mut draft.enriched.mentions
            } else {
                &mut draft.enriched.hashtags
            };
            if list.len() < MAX_ITEMS && !list.iter().any(|w| w == word) {
                list.push(word.to_owned());
            }
        }
    }
}

fn mention(rest: &str) -> Option<&str> {
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
        .unwrap_or(rest.len());
    let name = rest[..end].trim_end_matches(['.', ':', '-']);
    is_valid_name(name).then_some(name)
}

fn hashtag(rest: &str) -> Option<&str> {
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let tag = &rest[..end];
    // `#1` is a number, not a topic.
    (tag.chars().count() <= 64 && tag.chars().any(|c| !c.is_ascii_digit())).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (Vec<String>, Vec<String>) {
        let mut d = Draft {
            original: text,
            body: text.into(),
            enriched: Default::default(),
        };
        MentionsAndHashtags.apply(&mut d);
        (d.enriched.mentions, d.enriched.hashtags)
    }

    #[test]
    fn finds_mentions_and_tags() {
        let (m, h) = run("@alice, ping @bob. #rust #Rust_2024 #rust and #1 mail a@b.com");
        assert_eq!(m, ["alice", "bob"]);
        assert_eq!(h, ["rust", "Rust_2024"]);
    }

    #[test]
    fn skips_every_link_of_many() {
        let (m, h) =
            run("https://a.org/#x @a https://b.org/@y #b https://c.org/#z https://d.org/@w @c");
        assert_eq!(m, ["a", "c"]);
        assert_eq!(h, ["b"]);
    }

    #[test]
    fn skips_links_and_unicode_tags_work() {
        let (m, h) = run("https://x.org/#top https://x.org/@me #café");
        assert!(m.is_empty());
        assert_eq!(h, ["café"]);
    }
}
