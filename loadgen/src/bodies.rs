//! Message bodies of `loadgen run`, built and JSON-escaped once before the run, so that a
//! send costs picking an index, not formatting or escaping text.

use crate::cli::BodyMode;
use crate::corpus;
use crate::rng::Rng;

/// Distinct corpus bodies; every connection draws from the same pool.
const POOL: usize = 4096;

pub struct Body {
    /// The body as a JSON string literal, quotes included.
    pub json: Box<str>,
    /// Bytes of the body's UTF-8 text (what the server counts), not of `json`.
    pub bytes: usize,
}

impl Body {
    fn new(text: &str) -> Self {
        Body {
            json: serde_json::Value::from(text).to_string().into(),
            bytes: text.len(),
        }
    }
}

pub struct Bodies {
    pool: Vec<Body>,
}

impl Bodies {
    pub fn new(mode: BodyMode, fixed_bytes: usize, seed: u64) -> Self {
        let pool = match mode {
            BodyMode::Fixed => vec![Body::new(&fixed(fixed_bytes))],
            BodyMode::Corpus => corpus::bodies(seed, POOL)
                .iter()
                .map(|b| Body::new(b))
                .collect(),
        };
        Bodies { pool }
    }

    /// The next body of the connection that owns `rng`.
    pub fn pick(&self, rng: &mut Rng) -> &Body {
        &self.pool[rng.below(self.pool.len())]
    }
}

/// A message body of `n` bytes that exercises every enrichment stage (`--bodies fixed`).
fn fixed(n: usize) -> String {
    let mut b = String::from("hello @bench see https://example.org/x #load ");
    while b.len() < n {
        b.push_str("the quick brown fox jumps over the lazy dog ");
    }
    b.truncate(n.max(1));
    b.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_string_literals_of_their_text() {
        let corpus = corpus::bodies(7, 512);
        let bodies = Bodies::new(BodyMode::Corpus, 0, 7);
        for (text, body) in corpus.iter().zip(&bodies.pool) {
            assert_eq!(
                serde_json::from_str::<String>(&body.json).ok().as_ref(),
                Some(text)
            );
            assert_eq!(body.bytes, text.len());
        }
        let quoted = Body::new("say \"hi\"\\\n\t\r");
        assert_eq!(&*quoted.json, r#""say \"hi\"\\\n\t\r""#);
    }

    #[test]
    fn fixed_mode_is_one_body_of_the_given_size() {
        let bodies = Bodies::new(BodyMode::Fixed, 64, 1);
        let mut rng = Rng::new(1, 0);
        let body = bodies.pick(&mut rng);
        assert_eq!(bodies.pool.len(), 1);
        assert!(body.bytes <= 64 && body.bytes > 60, "{}", body.bytes);
        assert!(body.json.starts_with("\"hello @bench"));
    }
}
