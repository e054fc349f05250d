//! Language stage: ISO 639-3 code from whatlang, or null unless the detection is reliable.

use super::{Draft, Stage};

pub struct Language;

/// How much prose the detector reads: a few sentences tell the language as well as a
/// whole body does, and the detector's cost grows with its input.
const SAMPLE_BYTES: usize = 400;

impl Stage for Language {
    fn name(&self) -> &'static str {
        "language"
    }

    fn apply(&self, draft: &mut Draft<'_>) {
        let prose = sample(draft.original);
        draft.enriched.lang = whatlang::detect(&prose)
            .filter(whatlang::Info::is_reliable)
            .map(|info| info.lang().code().to_owned());
    }
}

/// Builds the detector's per-script profile indexes (vendor/whatlang), which it otherwise
/// builds on the first text of each script.
pub(super) fn warm_up() {
    for text in [
        "hello world",
        "привет мир",
        "مرحبا بالعالم",
        "नमस्ते दुनिया",
        "שלום עולם",
    ] {
        whatlang::detect(text);
    }
}

/// The first [`SAMPLE_BYTES`] of the body's prose, cut at a character boundary. Links,
/// mentions and hashtags are not prose; they only confuse the detector.
fn sample(body: &str) -> String {
    let mut prose = String::with_capacity(SAMPLE_BYTES + 4);
    let words = body
        .split_whitespace()
        .filter(|w| !(w.starts_with('@') || w.starts_with('#') || w.contains("://")));
    for word in words {
        if !prose.is_empty() {
            prose.push(' ');
        }
        for c in word.chars() {
            if prose.len() + c.len_utf8() > SAMPLE_BYTES {
                return prose;
            }
            prose.push(c);
        }
    }
    prose
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Option<String> {
        let mut d = Draft {
            original: text,
            body: text.into(),
            enriched: Default::default(),
        };
        Language.apply(&mut d);
        d.enriched.lang
    }

    #[test]
    fn samples_prose_at_a_char_boundary() {
        let body = format!("@bob https://x.org {}", "é".repeat(300));
        let s = sample(&body);
        assert_eq!(s, "é".repeat(SAMPLE_BYTES / 2));
        assert_eq!(sample("hi @a #b there"), "hi there");
        assert_eq!(
            run(
                &"Der schnelle braune Fuchs springt über den faulen Hund und läuft weiter. "
                    .repeat(60)
            )
            .as_deref(),
            Some("deu")
        );
    }

    #[test]
    fn detects_reliable_languages_only() {
        assert_eq!(run("I think we should meet tomorrow morning to discuss the new project plan with the whole team").as_deref(), Some("eng"));
        assert_eq!(
            run("Der schnelle braune Fuchs springt über den faulen Hund und läuft weiter")
                .as_deref(),
            Some("deu")
        );
        assert_eq!(run("ok"), None);
        assert_eq!(
            run("The quick brown fox jumps over the lazy dog"),
            None,
            "unsure is null"
        );
    }
}
