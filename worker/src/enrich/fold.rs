//! Character folding for moderation: what each character of a token may stand for.
//!
//! A token is read either the Latin way (lowercase a-z: accents, compatibility forms such
//! as fullwidth or math letters, look-alike Cyrillic/Greek/Armenian letters and, when
//! allowed, leetspeak all fold to a-z) or the native way (lowercase, nothing else), so a
//! Russian word is matched as Russian and "fuсk" with a Cyrillic с as English.

use unicode_normalization::char::{decompose_canonical, decompose_compatible, is_combining_mark};

/// One position of a normalized token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Unit {
    /// Exactly this character.
    Char(char),
    /// Any of a set of Latin letters, bit 0 = `a`: leetspeak is ambiguous (`1` is `i` or `l`).
    Latin(u32),
}

impl Unit {
    pub(super) fn accepts(self, c: char) -> bool {
        match self {
            Unit::Char(u) => u == c,
            Unit::Latin(set) => c.is_ascii_lowercase() && set & bit(c) != 0,
        }
    }

    /// The characters this unit stands for.
    pub(super) fn chars(self) -> impl Iterator<Item = char> {
        let (one, mut set) = match self {
            Unit::Char(c) => (Some(c), 0u32),
            Unit::Latin(set) => (None, set),
        };
        let latin = std::iter::from_fn(move || {
            let i = u8::try_from(set.trailing_zeros())
                .ok()
                .filter(|&i| i < 26)?;
            set &= set - 1;
            Some(char::from(b'a' + i))
        });
        one.into_iter().chain(latin)
    }

    /// The reading a person would pick first, for comparing short words (`you`, `kill`).
    pub(super) fn primary(self) -> char {
        match self {
            Unit::Char(c) => c,
            Unit::Latin(set) => char::from(b'a' + set.trailing_zeros().min(25) as u8),
        }
    }
}

/// A unit repeated `n` times in a row ("fuuuck" is f, u×3, c, k); `src` is the index of the
/// character (or spaced-out token) it starts at.
#[derive(Clone, Copy, Debug)]
pub(super) struct Run {
    pub unit: Unit,
    pub n: u16,
    pub src: u32,
}

/// How to read a token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Reading {
    Native,
    /// Latin; `digits` and `symbols` say whether leetspeak digits (`sh1t`) and symbols
    /// (`a$$`) stand for letters.
    Latin {
        digits: bool,
        symbols: bool,
    },
}

/// The letters of a token by kind, to choose its readings.
#[derive(Clone, Copy, Default, Debug)]
pub(super) struct Letters {
    /// Latin letters, accented or compatibility forms included.
    pub latin: usize,
    /// Cyrillic, Greek or Armenian letters that look like a Latin one.
    pub lookalike: usize,
    /// Any other letter (CJK, Devanagari, most Cyrillic...).
    pub other: usize,
}

impl Letters {
    pub(super) fn of(chars: impl Iterator<Item = char>) -> Self {
        let mut l = Letters::default();
        for c in chars {
            if c.is_ascii_alphabetic() {
                l.latin += 1;
            } else if c.is_ascii() {
                continue;
            } else if lookalike(c).is_some() {
                l.lookalike += 1;
            } else if latin_base(c).is_some() {
                l.latin += 1;
            } else if c.is_alphabetic() {
                l.other += 1;
            }
        }
        l
    }

    pub(super) fn any(self) -> bool {
        self.latin + self.lookalike + self.other > 0
    }
}

/// Characters that hide inside words without showing: zero-width spaces and joiners, soft
/// hyphens, and apostrophes (`fuckin'`, `you're`).
pub(super) fn is_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\'' | '’'
    )
}

/// Symbols that stand for letters in leetspeak.
pub(super) fn is_leet_symbol(c: char) -> bool {
    matches!(c, '@' | '$' | '!' | '|' | '€' | '*')
}

/// Appends the units `c` reads as.
pub(super) fn fold(c: char, reading: Reading, out: &mut impl FnMut(Unit)) {
    if is_ignorable(c) {
        return;
    }
    let Reading::Latin { digits, symbols } = reading else {
        // ё is written е in most Russian text; й keeps its mark (хуй is not хуи), and so do
        // Devanagari vowel signs.
        let l = lower(c);
        out(Unit::Char(if l == 'ё' { 'е' } else { l }));
        return;
    };
    if c.is_ascii_alphabetic() {
        out(Unit::Latin(bit(c.to_ascii_lowercase())));
    } else if let Some(set) = leet(c).filter(|_| if c.is_ascii_digit() { digits } else { symbols })
    {
        out(Unit::Latin(set));
    } else if c.is_ascii() {
        out(Unit::Char(c));
    } else if is_combining_mark(c) {
        // Accents and strike-through marks do not change the letter underneath.
    } else if let Some(l) = lookalike(c) {
        out(Unit::Latin(bit(l)));
    } else if let Some(s) = latin_base(c) {
        for b in s.bytes() {
            out(Unit::Latin(bit(char::from(b))));
        }
    } else {
        out(Unit::Char(lower(c)));
    }
}

fn bit(c: char) -> u32 {
    1 << ((c as u32).wrapping_sub('a' as u32) & 31)
}

fn set(letters: &str) -> u32 {
    letters.chars().fold(0, |s, c| s | bit(c))
}

fn lower(c: char) -> char {
    if c.is_ascii() {
        c.to_ascii_lowercase()
    } else if has_case(c) {
        c.to_lowercase().next().unwrap_or(c)
    } else {
        c
    }
}

/// Blocks with upper- and lowercase letters. Most text outside them (CJK, Arabic,
/// Devanagari, emoji) has no case, and skipping the case tables for it is cheaper.
fn has_case(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x58f | 0x10a0..=0x10ff | 0x13a0..=0x13ff | 0x1c80..=0x1cbf | 0x1d00..=0x1fff
        | 0x2100..=0x24ff | 0x2c00..=0x2d2f | 0xa640..=0xa7ff | 0xab70..=0xabbf
        | 0xff21..=0xff5a | 0x10400..=0x1e9ff)
}

/// Leetspeak: the letters a digit or symbol stands for inside a word.
fn leet(c: char) -> Option<u32> {
    Some(match c {
        '0' => set("o"),
        '1' | '|' => set("il"),
        '3' | '€' => set("e"),
        '@' => set("a"),
        // f4ck: a 4 stands in for a vowel that is not always an a.
        '4' => set("au"),
        '5' | '$' => set("s"),
        '7' => set("t"),
        '8' => set("b"),
        '9' => set("g"),
        '!' => set("i"),
        // Self-censored vowels: f*ck, sh*t.
        '*' => set("aeiou"),
        _ => return None,
    })
}

/// The a-z spelling of a Latin letter outside ASCII (é, ß, ｆ, 𝐟, ⓕ, ꜰ), if it has one.
fn latin_base(c: char) -> Option<&'static str> {
    let latin_block = matches!(c as u32,
        0xc0..=0x2af | 0x1d00..=0x1dbf | 0x1e00..=0x1eff | 0x2c60..=0x2c7f | 0xa720..=0xa7ff
        | 0xab30..=0xab6f);
    if !latin_block && !is_compatibility_block(c) {
        return None;
    }
    if let Some(s) = latin_special(lower(c)) {
        return Some(s);
    }
    let mut base = None;
    let mut other = false;
    let mut take = |d: char| {
        if d.is_ascii_alphabetic() && base.is_none() {
            base = Some(d.to_ascii_lowercase());
        } else if !is_combining_mark(d) {
            other = true;
        }
    };
    if is_compatibility_block(c) {
        decompose_compatible(c, &mut take);
    } else {
        decompose_canonical(c, &mut take);
    }
    base.filter(|_| !other).map(ascii_str)
}

/// Blocks of styled Latin letters that only compatibility decomposition maps to a-z.
fn is_compatibility_block(c: char) -> bool {
    matches!(c as u32,
        0x17f | 0x1d2c..=0x1d6a | 0x2070..=0x209f | 0x2100..=0x214f | 0x2460..=0x24ff
        | 0xfb00..=0xfb06 | 0xff00..=0xffef | 0x1d400..=0x1d7ff | 0x1f130..=0x1f189)
}

fn ascii_str(c: char) -> &'static str {
    const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz";
    let i = (c as usize).wrapping_sub('a' as usize).min(25);
    ALPHABET.get(i..=i).unwrap_or("a")
}

/// Latin letters without a decomposition to a-z: ligatures, stroked letters, small capitals.
fn latin_special(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'þ' => "th",
        'ø' | 'ᴏ' => "o",
        'ł' | 'ʟ' => "l",
        'đ' | 'ð' | 'ᴅ' => "d",
        'ı' | 'ɨ' | 'ɪ' => "i",
        'ħ' | 'ʜ' => "h",
        'ŧ' | 'ᴛ' => "t",
        'ƒ' | 'ꜰ' => "f",
        'ʂ' | 'ꜱ' => "s",
        'ɑ' | 'ᴀ' => "a",
        'ɡ' | 'ɢ' => "g",
        'ʙ' => "b",
        'ᴄ' => "c",
        'ᴇ' => "e",
        'ᴊ' => "j",
        'ᴋ' => "k",
        'ᴍ' => "m",
        'ɴ' => "n",
        'ᴘ' => "p",
        'ʀ' => "r",
        'ᴜ' => "u",
        'ᴠ' => "v",
        'ᴡ' => "w",
        'ʏ' => "y",
        'ᴢ' => "z",
        _ => return None,
    })
}

/// Letters of Greek, Cyrillic or Armenian that pass for a Latin one, as a-z.
fn lookalike(c: char) -> Option<char> {
    if !matches!(c as u32, 0x370..=0x58f) {
        return None;
    }
    Some(match lower(c) {
        'а' | 'α' => 'a',
        'в' | 'ь' | 'β' => 'b',
        'с' => 'c',
        'ԁ' => 'd',
        'е' | 'ё' | 'ε' => 'e',
        'ց' => 'g',
        'н' | 'һ' | 'հ' => 'h',
        'і' | 'ї' | 'ι' => 'i',
        'ј' => 'j',
        'к' | 'κ' => 'k',
        'ӏ' => 'l',
        'м' => 'm',
        'η' | 'ո' => 'n',
        'о' | 'ο' | 'օ' => 'o',
        'р' | 'ρ' | 'ք' => 'p',
        'ԛ' | 'զ' => 'q',
        'ѕ' => 's',
        'т' | 'τ' => 't',
        'υ' | 'ս' | 'μ' => 'u',
        'ν' => 'v',
        'ԝ' | 'ω' => 'w',
        'х' | 'χ' => 'x',
        'у' | 'ү' | 'γ' => 'y',
        _ => return None,
    })
}

/// Normalizes `chars` into runs of equal units. `src` of each run is the index in `chars`
/// of its first character.
pub(super) fn runs(chars: impl Iterator<Item = char>, reading: Reading, out: &mut Vec<Run>) {
    out.clear();
    for (i, c) in chars.enumerate() {
        let src = u32::try_from(i).unwrap_or(u32::MAX);
        fold(c, reading, &mut |unit| match out.last_mut() {
            Some(last) if last.unit == unit => last.n = last.n.saturating_add(1),
            _ => out.push(Run { unit, n: 1, src }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latin(s: &str) -> String {
        let mut v = Vec::new();
        let r = Reading::Latin {
            digits: true,
            symbols: true,
        };
        runs(s.chars(), r, &mut v);
        v.iter()
            .map(|r| r.unit.primary().to_string().repeat(r.n.into()))
            .collect()
    }

    #[test]
    fn folds_accents_styles_confusables_and_leet() {
        assert_eq!(latin("FüÇk"), "fuck");
        assert_eq!(latin("ｆ𝐮ⓒꜰ"), "fucf");
        assert_eq!(latin("ѕһit"), "shit");
        assert_eq!(latin("sh1t"), "shit");
        assert_eq!(latin("a$$"), "ass");
        assert_eq!(latin("Scheiße"), "scheisse");
        assert_eq!(latin("fu\u{200b}ck'"), "fuck");
        assert_eq!(latin("f\u{336}u\u{336}"), "fu");
    }

    #[test]
    fn counts_letters_by_kind() {
        let l = Letters::of("fuсk1你".chars());
        assert_eq!((l.latin, l.lookalike, l.other), (3, 1, 1));
        assert_eq!(Letters::of("ⓕ𝐮ｃꜰ".chars()).latin, 4);
        assert!(!Letters::of("1234 $".chars()).any());
    }
}
