//! Moderation stage: masks abusive words from the list in words.txt and sets `flagged`.
//!
//! Finding the words is scan.rs's job; this stage turns what it found into `*`s. Only the
//! offending words' characters change (each into one `*`, the first kept): the censored
//! body has the original's characters everywhere else, and a clean body is left as is.

use super::lexicon::Lexicon;
use super::scan::Scanner;
use super::{Draft, Stage};
use std::ops::Range;

pub struct Moderation;

impl Stage for Moderation {
    fn name(&self) -> &'static str {
        "moderation"
    }

    fn apply(&self, draft: &mut Draft<'_>) {
        let masks = Scanner::new(Lexicon::get()).scan(&draft.body);
        if !masks.is_empty() {
            draft.body = censor(&draft.body, masks);
            draft.enriched.flagged = true;
        }
        // Unflagged text is kept byte for byte.
    }
}

/// `text` with every character inside `masks` replaced by `*`: the same number of
/// characters, every other byte unchanged.
fn censor(text: &str, mut masks: Vec<Range<usize>>) -> String {
    masks.sort_unstable_by_key(|m| m.start);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for m in masks {
        let start = m.start.max(at);
        if start >= m.end {
            continue;
        }
        out.push_str(text.get(at..start).unwrap_or_default());
        out.extend(
            text.get(start..m.end)
                .unwrap_or_default()
                .chars()
                .map(|_| '*'),
        );
        at = m.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (String, bool) {
        let mut d = Draft {
            original: text,
            body: text.into(),
            enriched: Default::default(),
        };
        Moderation.apply(&mut d);
        (d.body, d.enriched.flagged)
    }

    fn censored(text: &str) -> String {
        let (body, flagged) = run(text);
        assert!(flagged, "{text:?} not flagged");
        assert_eq!(body.chars().count(), text.chars().count(), "{body:?}");
        assert_eq!(
            run(&body),
            (body.clone(), false),
            "censored {text:?} still abusive"
        );
        body
    }

    #[test]
    fn censors_and_flags_abuse_even_when_evasive() {
        let (body, flagged) = run("what the f u c k");
        assert!(flagged);
        assert!(!body.contains("f u c k"), "{body}");
    }

    #[test]
    fn leaves_clean_text_alone() {
        assert_eq!(
            run("Crème brûlée, s'il vous plaît"),
            ("Crème brûlée, s'il vous plaît".into(), false)
        );
    }

    #[test]
    fn never_touches_numbers_names_or_rude_substrings() {
        for text in [
            "my order number is 199215",
            "call me at 679609",
            "the total is 5318008",
            "after restart 218 requests were queued",
            "4111111111111111 is the test card",
            "Scunthorpe, assassin, classic, cockpit, Dickens, therapist, document",
            "cucumber, Hancock, shiitake, Sussex, Penistone, grape, snigger, Yamashita",
            "Dick Van Dyke and Randi met in Troia",
            "prick the potatoes, the cock crowed, the hoe is in the shed",
            "https://example.com/3sh1tXz and dick.jones@example.com and @dick_tracy",
            "thank you @dick_tracy, you @prick_lover and you @puta_madre",
            "употреблять, оскорблять, застрахуй, барсука",
            "git checkout 5h1t4b3",
        ] {
            assert_eq!(run(text), (text.to_owned(), false), "{text}");
        }
    }

    #[test]
    fn masks_only_the_word_and_keeps_its_first_letter() {
        assert_eq!(
            censored("you are a fucking idiot"),
            "you are a f****** idiot"
        );
        assert_eq!(censored("what the f u c k!"), "what the f * * *!");
        assert_eq!(censored("f u c k_f u c k"), "f * * *_f * * *");
        assert_eq!(censored("f.u.c.k this"), "f.*.*.* this");
        assert_eq!(censored("kill yourself"), "k*** y*******");
        assert_eq!(censored("@shithead hi"), "@s******* hi");
        assert_eq!(censored("ѕһit"), "ѕ***");
        assert_eq!(censored("you prick"), "you p****");
        assert_eq!(censored("don't be a dick, Dick"), "don't be a d***, Dick");
        assert_eq!(censored("Fick dich"), "F*** d***");
        assert_eq!(censored("傻逼"), "傻*");
        assert_eq!(censored("肏"), "*");
    }

    #[test]
    fn catches_common_evasions() {
        for text in [
            "sh1t",
            "f4ck",
            "$h!t",
            "a$$hole",
            "@sshole",
            "fuuuuuck",
            "shiiiit",
            "FuCkInG",
            "fück",
            "ｆｕｃｋ",
            "𝐟𝐮𝐜𝐤",
            "ⓕⓤⓒⓚ",
            "fuсk",
            "fսck",
            "fu\u{200b}ck",
            "f*ck",
            "motherfucker",
            "bullshit",
            "dumbass",
            "s h 1 t",
            "n1gger",
            "сука",
            "u c u n t",
            "f*u*c*k",
            "f!u!c!k",
            "f^u^c^k",
            "ass hole",
            "f uck",
            "bull-shit",
            "dickweed",
            "dumbshit",
            "fuckk",
        ] {
            censored(text);
        }
    }
}
