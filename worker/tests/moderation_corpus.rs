//! Moderation against the labelled corpus (worker/corpus/): no false positives on the clean
//! lines, and at least the recall the previous moderation (rustrict) had on the abusive ones.

use worker::enrich::{Draft, Moderation, Stage};

/// Share of worker/corpus/abusive.txt that rustrict 0.7.39 flagged (112 of its 134 lines),
/// measured before rustrict was replaced: `Censor::from_str(line)
/// .with_censor_threshold(Type::INAPPROPRIATE).censor_and_analyze()`, flagged when the
/// analysis `is(Type::INAPPROPRIATE)`. It also flagged 153 of the 423 clean lines then.
const RUSTRICT_RECALL: f64 = 112.0 / 134.0;

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !(l.trim().is_empty() || *l == "#" || l.starts_with("# ")))
}

fn moderate(text: &str) -> (String, bool) {
    let mut d = Draft {
        original: text,
        body: text.to_owned(),
        enriched: Default::default(),
    };
    Moderation.apply(&mut d);
    (d.body, d.enriched.flagged)
}

#[test]
fn clean_lines_are_never_flagged_nor_changed() {
    let clean: Vec<&str> = lines(include_str!("../corpus/clean.txt")).collect();
    assert!(clean.len() >= 300, "{} clean lines", clean.len());
    let wrong: Vec<(String, &str)> = clean
        .iter()
        .map(|l| (moderate(l).0, *l))
        .filter(|(body, line)| body != line)
        .collect();
    assert!(wrong.is_empty(), "false positives: {wrong:#?}");
    assert!(clean.iter().all(|l| !moderate(l).1));
}

#[test]
fn abusive_lines_are_caught_at_least_as_often_as_before() {
    let abusive: Vec<&str> = lines(include_str!("../corpus/abusive.txt")).collect();
    assert!(abusive.len() >= 100, "{} abusive lines", abusive.len());
    let mut missed = Vec::new();
    for line in &abusive {
        let (body, flagged) = moderate(line);
        if !flagged {
            missed.push(*line);
            continue;
        }
        assert_ne!(body, *line, "flagged but not censored");
        assert_eq!(
            body.chars().count(),
            line.chars().count(),
            "{line:?} -> {body:?}"
        );
        assert_eq!(
            moderate(&body),
            (body.clone(), false),
            "censored {line:?} is still abusive"
        );
    }
    let recall = 1.0 - missed.len() as f64 / abusive.len() as f64;
    assert!(
        recall >= RUSTRICT_RECALL,
        "recall {recall:.3} < {RUSTRICT_RECALL:.3}; missed: {missed:#?}"
    );
}
