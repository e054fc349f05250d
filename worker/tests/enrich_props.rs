//! Adversarial bodies (up to the 4 KiB limit) through each enrichment stage and the whole
//! pipeline: nothing panics, moderation keeps text byte for byte unless it flags it, and
//! what the stages report comes from the body.

use proptest::prelude::*;
use worker::enrich::{Draft, Language, Links, MentionsAndHashtags, Moderation, Pipeline, Stage};

/// The gateway's limit (`shared::message::MAX_BODY_BYTES`).
const MAX_BODY: usize = 4096;
/// The stages' own caps on their lists.
const MAX_ITEMS: usize = 50;

/// Words and marks that stress tokenizing, folding, matching and link finding.
const WORDS: &[&str] = &[
    "fuck",
    "f u c k",
    "sh1t",
    "a$$hole",
    "@sshole",
    "fuuuuck",
    "ｆｕｃｋ",
    "fuсk",
    "ѕһit",
    "kill yourself",
    "you prick",
    "Dick",
    "dick",
    "сука",
    "傻逼",
    "肏",
    "f*u*c*k",
    "ass hole",
    "Scunthorpe",
    "shiitake",
    "Yamashita",
    "cocktail",
    "snigger",
    "застрахуй",
    "puta",
    "5318008",
    "+1 (555) 014-3368",
    "€12.50",
    "14:30",
    "#rust",
    "@bob",
    "a@b.c",
    "x.y.z",
    "https://example.com/a?b=c#d",
    "http://a.io/@x#y",
    "www.x.org",
    "javascript:alert(1)",
    "👨‍👩‍👧‍👦",
    "🇺🇸",
    "❤️",
    "\u{200b}",
    "\u{301}",
    "’",
    "'",
    "*",
    "**",
    "$",
    "!",
    "|",
    "@",
    "#",
    "_",
    "-",
    ".",
    ":",
    "/",
    " ",
    "  ",
    "\n",
    "\t",
];

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        2 => "[0-9]{1,40}",
        2 => "[a-zA-Z]{1,12}",
        1 => "([a-z] ){1,20}",
        1 => "[@#][a-zA-Z0-9_.:-]{0,70}",
        1 => "https?://[a-z0-9.-]{1,20}/[a-zA-Z0-9/#@?=&._-]{0,60}",
        2 => any::<char>().prop_map(|c| String::from(if c.is_control() { ' ' } else { c })),
        1 => "\\PC{1,30}",
        1 => ("[a-z!@$*|0-9]{1,3}", 1..400usize).prop_map(|(s, n)| s.repeat(n)),
        // Listed words, pointers and lone letters side by side: phrases, joins, spelling.
        2 => "((you|u|my|be|a|de|the|fuck|shit|ass|hole|dick|bull|kill|yourself|hope|die|puta|f|u|c|k|s|h|i|t|n)[ .*_-]{0,2}){1,12}",
    ]
}

fn body() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..300).prop_map(|pieces| {
        let mut body = String::new();
        for c in pieces.concat().chars() {
            if body.len() + c.len_utf8() > MAX_BODY {
                break;
            }
            body.push(c);
        }
        body
    })
}

fn apply(stage: &dyn Stage, text: &str) -> Draft<'static> {
    let text: &'static str = Box::leak(text.to_owned().into_boxed_str());
    let mut d = Draft {
        original: text,
        body: text.to_owned(),
        enriched: Default::default(),
    };
    stage.apply(&mut d);
    d
}

/// A censored body: the input with some characters replaced by `*`, nothing else.
fn is_masking_of(body: &str, input: &str) -> bool {
    body.chars().count() == input.chars().count()
        && body
            .chars()
            .zip(input.chars())
            .all(|(b, i)| b == i || b == '*')
}

fn check_moderation(input: &str, body: &str, flagged: bool) -> Result<(), TestCaseError> {
    if flagged {
        prop_assert_ne!(body, input, "flagged but not censored");
        prop_assert!(is_masking_of(body, input), "{input:?} -> {body:?}");
        let again = apply(&Moderation, body);
        prop_assert!(
            !again.enriched.flagged,
            "censored text is still abusive: {body:?}"
        );
        prop_assert_eq!(again.body.as_str(), body);
    } else {
        prop_assert_eq!(body, input);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn moderation_masks_only_what_it_flags(input in body()) {
        let d = apply(&Moderation, &input);
        check_moderation(&input, &d.body, d.enriched.flagged)?;
    }

    #[test]
    fn lists_come_from_the_body_and_stay_bounded(input in body()) {
        let links = apply(&Links::new(), &input).enriched.links;
        prop_assert!(links.len() <= MAX_ITEMS);
        prop_assert!(links.iter().all(|l| input.contains(l.as_str())));
        let e = apply(&MentionsAndHashtags, &input).enriched;
        prop_assert!(e.mentions.len() <= MAX_ITEMS && e.hashtags.len() <= MAX_ITEMS);
        for m in &e.mentions {
            prop_assert!(input.contains(&format!("@{m}")), "{m:?}");
        }
        for h in &e.hashtags {
            prop_assert!(input.contains(&format!("#{h}")), "{h:?}");
        }
        let lang = apply(&Language, &input).enriched.lang;
        prop_assert!(lang.is_none_or(|l| l.len() == 3 && l.chars().all(|c| c.is_ascii_lowercase())));
    }

    #[test]
    fn pipeline_keeps_its_promises(input in body()) {
        let (body, e) = Pipeline::standard().run(&input);
        check_moderation(&input, &body, e.flagged)?;
        prop_assert!(e.links.len() <= MAX_ITEMS);
        prop_assert!(e.mentions.len() <= MAX_ITEMS && e.hashtags.len() <= MAX_ITEMS);
        for item in e.links.iter().chain(&e.mentions).chain(&e.hashtags) {
            prop_assert!(body.contains(item.as_str()), "{item:?} not in {body:?}");
        }
    }
}
