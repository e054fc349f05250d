//! Moderation stage: censors abusive language (rustrict) and sets `flagged`.

use super::{Draft, Stage};
use rustrict::{Censor, Type};

pub struct Moderation;

impl Stage for Moderation {
    fn name(&self) -> &'static str {
        "moderation"
    }

    fn apply(&self, draft: &mut Draft<'_>) {
        let (censored, found) = Censor::from_str(draft.original)
            .with_censor_threshold(Type::INAPPROPRIATE)
            .censor_and_analyze();
        if found.is(Type::INAPPROPRIATE) {
            draft.body = censored;
            draft.enriched.flagged = true;
        }
        // Unflagged text is kept byte for byte: the censor also normalizes accents and
        // spacing, which would alter innocent messages.
    }
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
}
