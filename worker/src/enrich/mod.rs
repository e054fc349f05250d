//! Enrichment: a pipeline of small stages, each adding to a message's `enriched` fields.
//!
//! A new stage is one file implementing [`Stage`] plus one line in [`Pipeline::standard`].

mod fold;
mod language;
mod lexicon;
mod links;
mod mentions;
mod moderation;
mod scan;

pub use language::Language;
pub use links::Links;
pub use mentions::MentionsAndHashtags;
pub use moderation::Moderation;

use shared::Enriched;

/// A message on its way through the stages.
#[derive(Debug)]
pub struct Draft<'a> {
    /// What the sender wrote; never leaves the worker when moderation flags it.
    pub original: &'a str,
    /// What will be stored and delivered (censored by moderation when flagged).
    pub body: String,
    pub enriched: Enriched,
}

/// One enrichment step. Stages run in order and must not fail: a stage that cannot say
/// anything leaves its fields empty.
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;
    fn apply(&self, draft: &mut Draft<'_>);
}

/// The ordered stages a worker runs on every message.
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
}

impl Pipeline {
    /// Moderation first, so later stages only ever see the censored text.
    pub fn standard() -> Self {
        // Compiled here (about a millisecond each) rather than while the first message
        // waits: the word list, and the language detector's profile index per script.
        lexicon::Lexicon::get();
        language::warm_up();
        Self::new(vec![
            Box::new(Moderation),
            Box::new(Links::new()),
            Box::new(MentionsAndHashtags),
            Box::new(Language),
        ])
    }

    pub fn new(stages: Vec<Box<dyn Stage>>) -> Self {
        Self { stages }
    }

    /// Runs every stage; returns the body to store and what the stages found.
    pub fn run(&self, body: &str) -> (String, Enriched) {
        let mut draft = Draft {
            original: body,
            body: body.to_owned(),
            enriched: Enriched::default(),
        };
        for stage in &self.stages {
            stage.apply(&mut draft);
        }
        (draft.body, draft.enriched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_example_is_enriched() {
        let (body, e) = Pipeline::standard().run("hi @bob see https://example.org #rust");
        assert_eq!(body, "hi @bob see https://example.org #rust");
        assert_eq!(e.mentions, ["bob"]);
        assert_eq!(e.hashtags, ["rust"]);
        assert_eq!(e.links, ["https://example.org"]);
        assert!(!e.flagged);
    }

    #[test]
    fn abuse_is_censored_before_other_stages() {
        let (body, e) = Pipeline::standard().run("you are a fucking idiot @shithead");
        assert!(e.flagged);
        assert!(!body.contains("fuck"), "{body}");
        assert!(
            !e.mentions.iter().any(|m| m.contains("shit")),
            "{:?}",
            e.mentions
        );
    }
}
