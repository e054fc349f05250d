//! The moderation scanner: finds the byte ranges of abusive words in a body.
//!
//! The body is cut into whitespace-separated chunks and those into tokens (letters, digits,
//! marks and leet symbols). A token is folded (fold.rs) and matched as a whole word against
//! the list (lexicon.rs), so "Scunthorpe", "cocktail" and "shiitake" are words of their own,
//! never hosts of a rude substring; tokens without letters (prices, phone and order numbers)
//! are never read at all. Letters typed one at a time ("f u c k"), a word typed in two
//! pieces ("ass hole") and short phrases ("kill yourself") are matched over consecutive
//! tokens. Every step is bounded per character (a trie walk is at most the longest listed
//! word deep), so a scan is linear in the body.

use super::fold::{self, Letters, Reading, Run};
use super::lexicon::{Kind, Lexicon};
use std::ops::Range;
use unicode_normalization::char::is_combining_mark;

/// What a whitespace-separated chunk is, which decides how its tokens are read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Chunk {
    Text,
    /// `@name`: a user name, so a word in it that can be a name or an ordinary word
    /// (`@dick_tracy`) is one.
    Mention,
    /// A URL or an e-mail address: only listed words written out plainly count; no
    /// leetspeak (ids such as `3sh1tXz` are random), no spelled-out letters, names are names.
    Address,
}

fn chunk_kind(s: &str) -> Chunk {
    let www = s.get(..4).is_some_and(|h| h.eq_ignore_ascii_case("www."));
    if s.contains("://") || www {
        Chunk::Address
    } else if s.starts_with('@') {
        Chunk::Mention
    } else if s
        .find('@')
        .is_some_and(|i| s.get(i..).is_some_and(|d| d.contains('.')))
    {
        Chunk::Address
    } else {
        Chunk::Text
    }
}

fn is_token_char(c: char, chunk: Chunk) -> bool {
    c.is_alphanumeric()
        || is_combining_mark(c)
        || fold::is_ignorable(c)
        || (chunk != Chunk::Address && fold::is_leet_symbol(c))
}

/// Characters trimmed from a token's ends: punctuation there, not letters ("shit!!").
fn is_edge(c: char) -> bool {
    matches!(c, '\'' | '’' | '!' | '|' | '*' | '@')
}

/// Longest key kept for phrases and pointers; longer tokens are neither.
const MAX_KEY: usize = 24;

pub(super) struct Scanner<'l> {
    lex: &'l Lexicon,
    /// Byte ranges whose characters become `*`.
    masks: Vec<Range<usize>>,
    /// The current token's characters. Like every buffer here, reused from token to token.
    chars: Vec<char>,
    /// The current token's runs in its first reading; `alt` for other readings.
    runs: Vec<Run>,
    alt: Vec<Run>,
    /// Single-character tokens in a row, which may spell a word out.
    spelled: Vec<(Range<usize>, char)>,
    /// The current token's key, and the two previous tokens' keys and spans (newest last).
    key: String,
    recent: [(String, Range<usize>); 2],
    /// The previous token's span and runs when it may join the current one into a word.
    piece: Option<(Range<usize>, Reading)>,
    piece_runs: Vec<Run>,
    joined: Vec<Run>,
}

impl<'l> Scanner<'l> {
    pub(super) fn new(lex: &'l Lexicon) -> Self {
        Self {
            lex,
            masks: Vec::new(),
            chars: Vec::new(),
            runs: Vec::new(),
            alt: Vec::new(),
            spelled: Vec::new(),
            key: String::new(),
            recent: Default::default(),
            piece: None,
            piece_runs: Vec::new(),
            joined: Vec::new(),
        }
    }

    /// The byte ranges to mask in `text`; empty when it is clean.
    pub(super) fn scan(mut self, text: &str) -> Vec<Range<usize>> {
        let mut at = 0;
        while let Some(rest) = text.get(at..) {
            let start = at + (rest.len() - rest.trim_start().len());
            let Some(chunk) = text.get(start..) else {
                break;
            };
            let end = chunk
                .find(char::is_whitespace)
                .map_or(text.len(), |e| start + e);
            if start >= end {
                break;
            }
            self.chunk(text, start..end);
            at = end;
        }
        self.flush_spelled();
        self.masks.retain(|m| !m.is_empty());
        self.masks
    }

    fn chunk(&mut self, text: &str, span: Range<usize>) {
        let s = text.get(span.clone()).unwrap_or_default();
        let kind = chunk_kind(s);
        let mut token_start = None;
        for (i, c) in s.char_indices() {
            match (token_start, is_token_char(c, kind)) {
                (None, true) => token_start = Some(i),
                (Some(t), false) => {
                    self.token(text, span.start + t..span.start + i, kind);
                    token_start = None;
                }
                _ => {}
            }
        }
        if let Some(t) = token_start {
            self.token(text, span.start + t..span.end, kind);
        }
    }

    fn token(&mut self, text: &str, raw: Range<usize>, chunk: Chunk) {
        let s = text.get(raw.clone()).unwrap_or_default();
        let head = s.trim_start_matches(is_edge);
        let core = head.trim_end_matches(is_edge);
        if core.is_empty() {
            if s.contains('*') {
                // A masked letter ("f * * *") still stands between its neighbours.
                self.flush_spelled();
                self.piece = None;
                self.key.clear();
                self.remember(text, raw);
            }
            return;
        }
        // "@sshole": an @ before a word may be its a.
        let lead = s.get(..s.len() - head.len()).unwrap_or_default();
        let at_sign = lead.ends_with('@') && chunk != Chunk::Address;
        // "k***": what is left of a word masked before (or masked by its writer). It must not
        // spell, join or aim anything, so censored text reads as clean.
        let remnant = head.get(core.len()..).unwrap_or_default().contains('*');
        let start = raw.start + (s.len() - head.len());
        let span = start..start + core.len();
        let text_like = chunk != Chunk::Address;
        let (letters, reading) = self.fold_token(core, text_like && !remnant);
        match self.chars.as_slice() {
            &[c] if text_like && !remnant => {
                self.spell(text, span.clone(), c);
                // One CJK or Hangul character can be a word by itself (肏).
                if letters.other > 0 {
                    self.word(text, span.clone(), chunk, letters, at_sign);
                }
            }
            _ => {
                self.flush_spelled();
                if letters.any() {
                    self.word(text, span.clone(), chunk, letters, at_sign);
                }
            }
        }
        self.join(
            text,
            span.clone(),
            reading,
            text_like && !remnant && letters.any(),
        );
        self.remember(text, span);
    }

    /// Loads `core` into `self.chars`, its first reading into `self.runs` (one folding
    /// serves the word, joining and the key) and, when `keyed`, its key into `self.key`.
    fn fold_token(&mut self, core: &str, keyed: bool) -> (Letters, Reading) {
        // Trailing digits number things (rand1, shithead69); they are not leetspeak.
        let numbered = core.trim_end_matches(|c: char| c.is_ascii_digit());
        self.chars.clear();
        self.chars
            .extend(if numbered.is_empty() { core } else { numbered }.chars());
        let letters = Letters::of(self.chars.iter().copied());
        let reading = readings(letters, keyed).next().unwrap_or(Reading::Native);
        fold::runs(self.chars.iter().copied(), reading, &mut self.runs);
        self.key.clear();
        if keyed && self.chars.len() <= MAX_KEY {
            for r in &self.runs {
                self.key
                    .extend(std::iter::repeat_n(r.unit.primary(), r.n.into()));
            }
        }
        (letters, reading)
    }

    /// Matches the previous token and this one as one word ("ass hole", "bull-shit",
    /// "f uck"), then keeps this one for the next. One of the two must be a listed word or
    /// a lone letter: "dogs hit" and "who re" are two words.
    fn join(&mut self, text: &str, span: Range<usize>, reading: Reading, joinable: bool) {
        if !joinable {
            self.piece = None;
            return;
        }
        if let Some((prev, prev_reading)) = self.piece.take() {
            let gap = text.get(prev.end..span.start).unwrap_or_default();
            let same_script = (prev_reading == Reading::Native) == (reading == Reading::Native);
            if same_script && is_joining_gap(gap) {
                self.joined.clear();
                self.joined.extend_from_slice(&self.piece_runs);
                for run in &self.runs {
                    match self.joined.last_mut() {
                        Some(last) if last.unit == run.unit => {
                            last.n = last.n.saturating_add(run.n)
                        }
                        _ => self.joined.push(*run),
                    }
                }
                let piece =
                    |runs: &[Run], lex: &Lexicon| lex.whole(runs).is_some() || is_lone_letter(runs);
                if self.lex.whole(&self.joined) == Some(Kind::Plain)
                    && (piece(&self.piece_runs, self.lex) || piece(&self.runs, self.lex))
                {
                    self.mask_word(text, prev);
                    self.mask_word(text, span.clone());
                }
            }
        }
        std::mem::swap(&mut self.piece_runs, &mut self.runs);
        self.piece = Some((span, reading));
    }

    /// Matches the current token (`self.chars`, folded in `self.runs`) and masks it when
    /// abusive.
    fn word(
        &mut self,
        text: &str,
        span: Range<usize>,
        chunk: Chunk,
        letters: Letters,
        at_sign: bool,
    ) {
        let text_like = chunk != Chunk::Address;
        let word = text.get(span.clone()).unwrap_or_default();
        let abusive = match self.find(letters, text_like, at_sign) {
            None => false,
            Some(Kind::Plain) => true,
            Some(Kind::Cased) => chunk == Chunk::Text && !is_capitalized(word),
            Some(Kind::Aimed(group)) => {
                let aimed = self
                    .recent
                    .iter()
                    .any(|(k, _)| self.lex.is_pointer(group, k));
                chunk == Chunk::Text && aimed && !is_capitalized(word)
            }
        };
        if abusive {
            self.mask_word(text, span);
        }
    }

    /// What the current token is in the list, trying each of its readings.
    fn find(&mut self, letters: Letters, text_like: bool, at_sign: bool) -> Option<Kind> {
        // The first reading is in `self.runs` already.
        let mut found = self.lex.token(&self.runs);
        for (i, reading) in readings(letters, text_like).enumerate() {
            if found.is_some() {
                return found;
            }
            if i > 0 {
                fold::runs(self.chars.iter().copied(), reading, &mut self.alt);
                found = self.lex.token(&self.alt);
            }
            if found.is_none() && at_sign && reading != Reading::Native {
                let with_at = std::iter::once('@').chain(self.chars.iter().copied());
                fold::runs(with_at, reading, &mut self.alt);
                found = self.lex.token(&self.alt);
            }
        }
        if found.is_none() && text_like && is_interleaved(&self.chars) {
            // "f*u*c*k", "f!u!c!k": the letters without the symbol between them.
            let reading = Reading::Latin {
                digits: true,
                symbols: false,
            };
            let letters_only = self.chars.iter().step_by(2).copied();
            fold::runs(letters_only, reading, &mut self.alt);
            found = self.lex.token(&self.alt);
        }
        found
    }

    /// Records the current token for phrases and pointers, masking a phrase it completes.
    fn remember(&mut self, text: &str, span: Range<usize>) {
        let n = self
            .lex
            .phrase([&self.recent[0].0, &self.recent[1].0, &self.key]);
        if n > 0 {
            self.mask_word(text, span.clone());
            for i in self.recent.len().saturating_sub(n - 1)..self.recent.len() {
                let earlier = self.recent[i].1.clone();
                self.mask_word(text, earlier);
            }
        }
        self.recent.swap(0, 1);
        std::mem::swap(&mut self.recent[1].0, &mut self.key);
        self.recent[1].1 = span;
    }

    fn spell(&mut self, text: &str, span: Range<usize>, c: char) {
        let joined = self.spelled.last().is_some_and(|(last, _)| {
            is_spelling_gap(text.get(last.end..span.start).unwrap_or_default())
        });
        if !joined {
            self.flush_spelled();
        }
        self.spelled.push((span, c));
    }

    /// Matches the letters typed one by one so far, and starts over.
    fn flush_spelled(&mut self) {
        let spelled = std::mem::take(&mut self.spelled);
        let letters = Letters::of(spelled.iter().map(|s| s.1));
        if spelled.len() >= 3 && letters.latin + letters.lookalike + letters.other >= 2 {
            for reading in readings(letters, true) {
                fold::runs(spelled.iter().map(|s| s.1), reading, &mut self.alt);
                // Every word in the run: "f u c k _ f u c k" is two.
                let mut at = 0;
                while let Some((start, end)) = self.alt.get(at..).and_then(|r| self.lex.spelled(r))
                {
                    let first = self.alt.get(at + start).map_or(0, |r| r.src as usize);
                    let last = self
                        .alt
                        .get(at + end)
                        .map_or(spelled.len(), |r| r.src as usize);
                    // The first letter stays, like the first letter of a masked word.
                    let letters = spelled.get(first + 1..last).unwrap_or_default();
                    self.masks.extend(letters.iter().map(|(s, _)| s.clone()));
                    at += end.max(1);
                }
                if at > 0 {
                    break;
                }
            }
        }
        self.spelled = spelled;
        self.spelled.clear();
    }

    /// Masks `span` but its first character, unless that character is abusive by itself
    /// (肏 in 肏http).
    fn mask_word(&mut self, text: &str, span: Range<usize>) {
        let kept = first_kept(text, span.clone());
        let first = text.get(span.start..kept.start).unwrap_or_default();
        let mut alone = false;
        for reading in readings(Letters::of(first.chars()), false) {
            fold::runs(first.chars(), reading, &mut self.alt);
            alone |= self.lex.token(&self.alt).is_some();
        }
        self.masks.push(if alone { span } else { kept });
    }
}

/// The ways to read a token: Latin when it has Latin letters; native when it has none;
/// both when all its letters are look-alikes ("сор" is Russian, "ѕһіт" is not).
fn readings(letters: Letters, text_like: bool) -> impl Iterator<Item = Reading> {
    let latin = letters.latin + letters.lookalike;
    let reading = Reading::Latin {
        digits: text_like && latin >= 2,
        symbols: text_like && latin >= 1,
    };
    let both = if letters.latin > 0 {
        [Some(reading), None]
    } else if letters.lookalike > 0 && letters.other == 0 {
        [Some(Reading::Native), Some(reading)]
    } else {
        [Some(Reading::Native), None]
    };
    both.into_iter().flatten()
}

/// Whether the text between two single letters still reads as one spelled-out word:
/// up to three spaces, dots, dashes, underscores, asterisks, carets or tildes
/// ("f u c k", "f.u.c.k", "f^u^c^k").
fn is_spelling_gap(gap: &str) -> bool {
    let mut n = 0;
    for c in gap.chars() {
        n += 1;
        if n > 3 || !(c.is_whitespace() || matches!(c, '.' | '-' | '_' | '*' | '^' | '~')) {
            return false;
        }
    }
    true
}

/// Whether two tokens may be pieces of one word: one space or dash. Not `_` or `.`, which
/// join the parts of identifiers and host names (`NLM_F_ACK`, `f.uk`).
fn is_joining_gap(gap: &str) -> bool {
    matches!(gap, " " | "-")
}

/// A single letter that is not a word of its own (a, I, o, u are).
fn is_lone_letter(runs: &[Run]) -> bool {
    matches!(runs, [r] if r.n == 1 && !"aiou".chars().any(|c| r.unit.accepts(c)))
}

/// Letters with the same symbol between each two: "f*u*c*k".
fn is_interleaved(chars: &[char]) -> bool {
    let Some(&sep) = chars.get(1) else {
        return false;
    };
    chars.len() >= 5
        && chars.len() % 2 == 1
        && !sep.is_alphanumeric()
        && chars.iter().enumerate().all(|(i, &c)| {
            if i % 2 == 1 {
                c == sep
            } else {
                c.is_alphanumeric()
            }
        })
}

/// "Dick", "Randi": a name, not the word.
fn is_capitalized(word: &str) -> bool {
    let mut letters = word.chars().filter(|c| c.is_alphabetic());
    letters.next().is_some_and(char::is_uppercase) && !letters.any(char::is_uppercase)
}

/// `span` without its first character, which stays readable ("f***"), unless that is all
/// there is: flagged text is always masked.
fn first_kept(text: &str, span: Range<usize>) -> Range<usize> {
    let mut chars = text.get(span.clone()).unwrap_or_default().chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(_)) => span.start + first.len_utf8()..span.end,
        _ => span,
    }
}
