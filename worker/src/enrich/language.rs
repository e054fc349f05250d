//! Language stage: ISO 639-3 code from whatlang, or null unless the detection is reliable.

use super::{Draft, Stage};

pub struct Language;

impl Stage for Language {
    fn name(&self) -> &'static str {
        "language"
    }

    fn apply(&self, draft: &mut Draft<'_>) {
        // Links, mentions and hashtags are not prose; they only confuse the detector.
        let prose: String = draft
            .original
            .split_whitespace()
            .filter(|w| !(w.starts_with('@') || w.starts_with('#') || w.contains("://")))
            .collect::<Vec<_>>()
            .join(" ");
        draft.enriched.lang = whatlang::detect(&prose)
            .filter(whatlang::Info::is_reliable)
            .map(|info| info.lang().code().to_owned());
    }
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
