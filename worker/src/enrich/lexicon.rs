//! The moderation word list (words.txt), compiled once into tries, and how tokens match it.
//!
//! Matching walks a trie with a token's runs of units, so its cost is bounded by the
//! longest listed word, whatever the token: linear in the body overall.

use super::fold::{self, Letters, Reading, Run};
use std::sync::LazyLock;

const LIST: &str = include_str!("words.txt");

static LEXICON: LazyLock<Lexicon> = LazyLock::new(|| Lexicon::parse(LIST).0);

/// How a whole-word entry decides (see the sections of words.txt).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Plain,
    Cased,
    /// Aimed by the pointers of this group (0: the [pointers] section).
    Aimed(u8),
}

const PLAIN: u8 = 1;
const CASED: u8 = 2;
const AIMED: u8 = 4;
const PREFIX: u8 = 8;
const STEM: u8 = 16;
const WHOLE: u8 = PLAIN | CASED | AIMED;

#[derive(Default)]
struct Node {
    edges: Vec<(char, u32)>,
    end: u8,
    /// The pointer group of an aimed word ending here.
    aim: u8,
}

struct Trie {
    nodes: Vec<Node>,
}

impl Trie {
    fn new() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }

    fn insert(&mut self, word: &[char], flag: u8, aim: u8) {
        let mut at = 0;
        for &c in word {
            at = match self.child(at, c) {
                Some(next) => next,
                None => {
                    let next = self.nodes.len();
                    self.nodes.push(Node::default());
                    if let Some(node) = self.nodes.get_mut(at) {
                        node.edges
                            .push((c, u32::try_from(next).unwrap_or(u32::MAX)));
                    }
                    next
                }
            };
        }
        if let Some(node) = self.nodes.get_mut(at) {
            node.end |= flag;
            node.aim = node.aim.max(aim);
        }
    }

    fn child(&self, at: usize, c: char) -> Option<usize> {
        let edges = &self.nodes.get(at)?.edges;
        match edges.binary_search_by_key(&c, |e| e.0) {
            Ok(i) => edges.get(i).map(|e| e.1 as usize),
            // Still being built: edges are sorted once the list is complete.
            Err(_) => edges.iter().find(|e| e.0 == c).map(|e| e.1 as usize),
        }
    }

    /// Sorts every node's edges, so a step is a binary search, not a scan of the root's
    /// hundred first letters.
    fn seal(&mut self) {
        for node in &mut self.nodes {
            node.edges.sort_unstable_by_key(|e| e.0);
        }
    }

    fn end(&self, at: usize) -> u8 {
        self.nodes.get(at).map_or(0, |n| n.end)
    }

    /// Follows every way `runs[i..]` spells a path down from node `at`, calling
    /// `hit(node, runs used)` at each node reached; stops as soon as `hit` returns true.
    /// Each level consumes at least one edge, so the depth is at most the longest word.
    /// `lenient` lets any doubled letter stand for one (for stems: "fuckk").
    fn walk(
        &self,
        at: usize,
        runs: &[Run],
        i: usize,
        lenient: bool,
        hit: &mut dyn FnMut(usize, usize) -> bool,
    ) -> bool {
        let (Some(run), Some(node)) = (runs.get(i), self.nodes.get(at)) else {
            return false;
        };
        // Few edges: try each. Many (near the root): look the unit's letters up.
        let few = node.edges.len() <= 8;
        let scanned = node
            .edges
            .iter()
            .filter(|_| few)
            .filter(|e| run.unit.accepts(e.0));
        let scanned = scanned.map(|&(c, child)| (c, Some(child as usize)));
        let looked_up = run
            .unit
            .chars()
            .filter(|_| !few)
            .map(|c| (c, self.child(at, c)));
        for (c, child) in scanned.chain(looked_up) {
            let Some(child) = child else {
                continue;
            };
            // n equal units spell n copies of c, or fewer when stretched for effect: a
            // vowel ("fuuck") or three or more ("fuckkk"). So "niger" is not "nigger", and
            // Twatt (Orkney) is not "twat".
            let stretched = lenient || run.n >= 3 || matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y');
            let mut next = child;
            for k in 1..=run.n {
                let spelled = k == run.n || stretched;
                if spelled && (hit(next, i + 1) || self.walk(next, runs, i + 1, lenient, hit)) {
                    return true;
                }
                match self.child(next, c) {
                    Some(n) if k < run.n => next = n,
                    _ => break,
                }
            }
        }
        false
    }
}

/// The compiled list.
pub(super) struct Lexicon {
    /// [whole], [cased], [aimed] and [prefix] entries.
    words: Trie,
    stems: Trie,
    phrases: Vec<Vec<String>>,
    /// Pointer groups: [pointers], then each `words <- pointers` line of [aimed].
    pointers: Vec<Vec<String>>,
}

impl Lexicon {
    pub(super) fn get() -> &'static Lexicon {
        &LEXICON
    }

    /// What the whole token spelled by `runs` is, if listed: a stem inside it makes it
    /// plain abuse, otherwise see [`Self::whole`].
    pub(super) fn token(&self, runs: &[Run]) -> Option<Kind> {
        match self.whole(runs) {
            Some(Kind::Plain) => Some(Kind::Plain),
            _ if self.stem(runs).is_some() => Some(Kind::Plain),
            kind => kind,
        }
    }

    /// What the token spelled by `runs` is as a listed word: plain abuse when it starts
    /// with a prefix, otherwise the strongest kind among the words it spells exactly.
    pub(super) fn whole(&self, runs: &[Run]) -> Option<Kind> {
        let mut found = 0;
        let mut aim = 0;
        self.words.walk(0, runs, 0, false, &mut |node, used| {
            let end = self.words.end(node);
            if end & PREFIX != 0 {
                found |= PLAIN;
            } else if used == runs.len() {
                found |= end & WHOLE;
                aim = self.words.nodes.get(node).map_or(0, |n| n.aim);
            }
            found & PLAIN != 0
        });
        if found & PLAIN != 0 {
            Some(Kind::Plain)
        } else if found & CASED != 0 {
            Some(Kind::Cased)
        } else if found & AIMED != 0 {
            Some(Kind::Aimed(aim))
        } else {
            None
        }
    }

    /// The runs (start, end) of the first stem inside `runs`.
    pub(super) fn stem(&self, runs: &[Run]) -> Option<(usize, usize)> {
        for start in 0..runs.len() {
            let rest = runs.get(start..).unwrap_or_default();
            let mut end = None;
            self.stems.walk(0, rest, 0, true, &mut |node, used| {
                let hit = self.stems.end(node) & STEM != 0;
                if hit {
                    end = Some(start + used);
                }
                hit
            });
            if let Some(end) = end {
                return Some((start, end));
            }
        }
        None
    }

    /// For letters typed one by one ("f u c k"): the runs (start, end) of a listed word
    /// that spans them give or take two letters at either end ("u c u n t"), or of a stem.
    /// Spelling a word out is deliberate, so a name-like word counts; an aimed one ("a s s")
    /// does not, as its pointer could not be told from the letters.
    pub(super) fn spelled(&self, runs: &[Run]) -> Option<(usize, usize)> {
        for start in 0..runs.len().min(3) {
            for end in (start + 1..=runs.len()).rev().take(3) {
                let part = runs.get(start..end).unwrap_or_default();
                let hit = self.words.walk(0, part, 0, false, &mut |node, used| {
                    let e = self.words.end(node);
                    e & PREFIX != 0 || (used == part.len() && e & (PLAIN | CASED) != 0)
                });
                if hit {
                    return Some((start, end));
                }
            }
        }
        self.stem(runs)
    }

    /// How many of the last words (`keys`, oldest first) form a listed phrase; 0 if none.
    pub(super) fn phrase(&self, keys: [&str; 3]) -> usize {
        self.phrases
            .iter()
            .filter(|p| {
                let tail = keys
                    .get(keys.len().saturating_sub(p.len())..)
                    .unwrap_or_default();
                // Last words first: they differ for almost every token.
                tail.len() == p.len() && tail.iter().rev().zip(p.iter().rev()).all(|(k, w)| k == w)
            })
            .map(Vec::len)
            .max()
            .unwrap_or(0)
    }

    pub(super) fn is_pointer(&self, group: u8, key: &str) -> bool {
        let group = self.pointers.get(usize::from(group));
        !key.is_empty() && group.is_some_and(|g| g.iter().any(|p| p == key))
    }

    /// Compiles the list; also returns the lines it could not use.
    fn parse(text: &str) -> (Self, Vec<String>) {
        let mut lex = Self {
            words: Trie::new(),
            stems: Trie::new(),
            phrases: Vec::new(),
            pointers: vec![Vec::new()],
        };
        let mut bad = Vec::new();
        let mut section = "";
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                Some(name) => section = name,
                None => lex.add(section, line, &mut bad),
            }
        }
        lex.words.seal();
        lex.stems.seal();
        (lex, bad)
    }

    /// Adds one line of `section`, or puts what it cannot use in `bad`.
    fn add(&mut self, section: &str, line: &str, bad: &mut Vec<String>) {
        let flag = match section {
            "whole" => PLAIN,
            "cased" => CASED,
            "aimed" => AIMED,
            "prefix" => PREFIX,
            "stem" => STEM,
            "phrases" => {
                self.phrases
                    .push(line.split_whitespace().map(key).collect());
                return;
            }
            "pointers" => {
                if let Some(general) = self.pointers.first_mut() {
                    general.extend(line.split_whitespace().map(key));
                }
                return;
            }
            _ => {
                bad.push(line.to_owned());
                return;
            }
        };
        let (line, aim) = match line.split_once("<-") {
            Some((words, pointers)) if flag == AIMED => {
                self.pointers
                    .push(pointers.split_whitespace().map(key).collect());
                (words, u8::try_from(self.pointers.len() - 1).unwrap_or(0))
            }
            _ => (line, 0),
        };
        let trie = if flag == STEM {
            &mut self.stems
        } else {
            &mut self.words
        };
        for word in line.split_whitespace().flat_map(expand) {
            let spelled: Vec<char> = key(&word).chars().collect();
            // One Latin letter would mask half of every text; one ideograph is a word.
            if spelled.is_empty() || (spelled.len() == 1 && spelled[0].is_ascii()) {
                bad.push(word);
            } else {
                trie.insert(&spelled, flag, aim);
            }
        }
    }
}

/// A list word (or a short token) as matching reads it: Latin words folded to a-z,
/// other scripts lowercased.
pub(super) fn key(word: &str) -> String {
    let letters = Letters::of(word.chars());
    let reading = if letters.latin > 0 {
        Reading::Latin {
            digits: false,
            symbols: false,
        }
    } else {
        Reading::Native
    };
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        fold::fold(c, reading, &mut |u| out.push(u.primary()));
    }
    out
}

/// `word{a,b,}` → word+a, word+b, word; several groups multiply (`{x,y}{1,2}`).
fn expand(entry: &str) -> Vec<String> {
    let open = entry.find('{');
    let close = open.and_then(|o| entry.get(o..)?.find('}').map(|c| o + c));
    let (Some(open), Some(close)) = (open, close) else {
        return vec![entry.to_owned()];
    };
    let (Some(head), Some(alts), Some(tail)) = (
        entry.get(..open),
        entry.get(open + 1..close),
        entry.get(close + 1..),
    ) else {
        return vec![entry.to_owned()];
    };
    let tails = expand(tail);
    alts.split(',')
        .flat_map(|alt| tails.iter().map(move |t| format!("{head}{alt}{t}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_compiles_without_leftovers() {
        let (lex, bad) = Lexicon::parse(LIST);
        assert!(bad.is_empty(), "{bad:?}");
        assert!(lex.words.nodes.len() > 1000 && lex.stems.nodes.len() > 10);
        assert!(lex.phrases.iter().all(|p| (2..=3).contains(&p.len())));
        assert!(lex.is_pointer(0, "you") && !lex.is_pointer(0, ""));
        assert!(lex.pointers.len() > 1 && lex.pointers.iter().all(|g| !g.is_empty()));
    }

    #[test]
    fn expands_braces() {
        assert_eq!(expand("shit{,s,ty}"), ["shit", "shits", "shitty"]);
        assert_eq!(expand("kys"), ["kys"]);
        assert_eq!(expand("{a,b}{c,}"), ["ac", "a", "bc", "b"]);
        assert_eq!(key("Scheiße"), "scheisse");
        assert_eq!(key("сука"), "сука");
    }
}
