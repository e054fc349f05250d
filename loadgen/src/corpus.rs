//! The chat corpus (loadgen/corpus.txt): templates filled with seeded values, then picked
//! or joined into bodies whose lengths follow a chat-like mix.

use crate::rng::Rng;

const TEXT: &str = include_str!("../corpus.txt");

/// Filled variants of every template: numbers, times and links differ between them.
const VARIANTS: usize = 3;

/// Body lengths in bytes as (cumulative share in ‰, shortest, longest): most chat
/// messages are short, a few run long. CJK text is 3 bytes a character, so its share of
/// the short buckets is in fewer characters.
const LENGTHS: [(usize, usize, usize); 5] = [
    (300, 5, 24),
    (700, 25, 80),
    (880, 81, 160),
    (970, 161, 280),
    (1000, 281, 400),
];

const USERS: &[&str] = &[
    "alice", "bob", "marta", "jürgen", "yuki", "omar", "priya", "joão", "sofia", "dmitri",
    "li.wei", "fatima", "lucas", "ana_m", "kenji", "chloé", "mateo", "aisha", "noah", "olga",
];

const URLS: &[&str] = &[
    "https://example.org/x",
    "https://youtu.be/aqz-KE-bpKQ?t=42",
    "https://github.com/tokio-rs/axum/issues/2734#issuecomment-2112233445",
    "https://en.wikipedia.org/wiki/Nagle%27s_algorithm",
    "https://ja.wikipedia.org/wiki/%E6%9D%B1%E4%BA%AC%E9%83%BD",
    "https://meet.example.com/abc-defg-hij?authuser=0&hs=179",
    "http://localhost:8080/api/rooms/lobby/messages?limit=50&before=1200",
    "https://www.openstreetmap.org/?mlat=52.5163&mlon=13.3777#map=17/52.5163/13.3777",
    "https://translate.example.com/?sl=auto&tl=en&text=%E4%BD%A0%E5%A5%BD%E4%B8%96%E7%95%8C&op=translate",
    "https://shop.example.com/products/wireless-headphones-noise-cancelling?variant=40112233445566&utm_source=newsletter&utm_medium=email&utm_campaign=black_friday_2026&utm_content=hero_button",
    "https://www.example.de/dp/B0C1234567/ref=sr_1_3?keywords=usb+c+kabel&qid=1732631234&sr=8-3",
    "https://calendar.example.com/event?eid=NmQ0Zjg3YjItOTk1Yy00ZGFhLWI4ZTEtM2E1ZGE2&ctz=Europe%2FBerlin",
];

/// Phone numbers in fictional ranges; `#` becomes a random digit.
const PHONES: &[&str] = &[
    "+1 415 555 01##",
    "+1 (212) 555-01##",
    "+49 30 901820##",
    "+44 20 7946 0###",
    "+33 1 99 00 ## ##",
    "+81 3-5555-01##",
    "+55 11 5555-01##",
    "+91 98765 4####",
    "+7 495 555-01-##",
];

/// One unescaped line of the corpus file and its block (language or theme).
struct Template {
    block: usize,
    text: String,
}

/// Filled lines, per block sorted by length, and every line as (length, block, index).
struct Lines {
    blocks: Vec<Vec<String>>,
    all: Vec<(usize, usize, usize)>,
}

/// `count` bodies drawn with `seed`: the same arguments give the same bodies.
pub fn bodies(seed: u64, count: usize) -> Vec<String> {
    let mut rng = Rng::new(seed, u64::MAX);
    let lines = fill_all(&templates(), &mut rng);
    (0..count)
        .map(|_| {
            let target = target_len(&mut rng);
            compose(&lines, target, &mut rng)
        })
        .collect()
}

fn templates() -> Vec<Template> {
    let mut block = 0;
    let mut out: Vec<Template> = Vec::new();
    for line in TEXT.lines() {
        if line.trim().is_empty() {
            if out.last().is_some_and(|t| t.block == block) {
                block += 1;
            }
        } else if !line.starts_with("//") {
            out.push(Template {
                block,
                text: unescape(line),
            });
        }
    }
    out
}

/// `\n`, `\t`, `\r` and `\\`; any other backslash is kept as written.
fn unescape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => out.extend(['\\', other]),
            None => out.push('\\'),
        }
    }
    out
}

fn fill_all(templates: &[Template], rng: &mut Rng) -> Lines {
    let mut blocks: Vec<Vec<String>> = Vec::new();
    for t in templates {
        if blocks.len() <= t.block {
            blocks.resize_with(t.block + 1, Vec::new);
        }
        for _ in 0..VARIANTS {
            blocks[t.block].push(fill(&t.text, rng));
        }
    }
    let mut all = Vec::new();
    for (b, lines) in blocks.iter_mut().enumerate() {
        lines.sort_by_key(String::len);
        all.extend(lines.iter().enumerate().map(|(i, l)| (l.len(), b, i)));
    }
    all.sort_unstable();
    Lines { blocks, all }
}

/// Replaces each `{{name}}`; an unknown name stays as written.
fn fill(template: &str, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after
            .find("}}")
            .and_then(|end| Some((end, value(&after[..end], rng)?)))
        {
            Some((end, v)) => {
                out.push_str(&v);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn value(name: &str, rng: &mut Rng) -> Option<String> {
    let cents = |rng: &mut Rng| [99, 49, 0, 95, 50, rng.range(0, 99)][rng.below(6)];
    Some(match name {
        "user" => USERS[rng.below(USERS.len())].to_string(),
        "n" => rng.range(1, 99).to_string(),
        "usd" => format!("{}.{:02}", rng.range(1, 499), cents(rng)),
        "eur" => format!("{},{:02}", rng.range(1, 99), cents(rng)),
        "time" => {
            let minute = [0, 15, 30, 45, rng.range(0, 59)][rng.below(5)];
            format!("{:02}:{minute:02}", rng.range(7, 22))
        }
        "date" => format!("2026-{:02}-{:02}", rng.range(1, 12), rng.range(1, 28)),
        "dmy" => format!("{:02}.{:02}.2026", rng.range(1, 28), rng.range(1, 12)),
        "phone" => PHONES[rng.below(PHONES.len())]
            .chars()
            .map(|c| match c {
                '#' => char::from(b'0' + rng.below(10) as u8),
                c => c,
            })
            .collect(),
        "order" => rng.range(100_000, 9_999_999).to_string(),
        "url" => URLS[rng.below(URLS.len())].to_string(),
        _ => return None,
    })
}

/// A body length drawn from [`LENGTHS`].
fn target_len(rng: &mut Rng) -> usize {
    let p = rng.below(1000);
    let (_, lo, hi) = LENGTHS
        .iter()
        .copied()
        .find(|&(upto, _, _)| p < upto)
        .unwrap_or(LENGTHS[LENGTHS.len() - 1]);
    rng.range(lo, hi)
}

/// One line of about `target` bytes (never more, unless no line is that short), or for a
/// target longer than any line, long lines of one block joined up to about it.
fn compose(lines: &Lines, target: usize, rng: &mut Rng) -> String {
    let first = near(&lines.all, |l| l.0, target, rng).unwrap_or(0);
    let (_, b, i) = lines.all[first];
    let block = &lines.blocks[b];
    let mut body = block[i].clone();
    while body.len() < target * 3 / 4 {
        let room = target - body.len() - 1;
        // A few tries for a line not already in the body: a repeat reads like a bug.
        let Some(next) = (0..4)
            .filter_map(|_| near(block, String::len, room, rng))
            .find(|&k| !body.contains(block[k].as_str()))
        else {
            break;
        };
        body.push(if rng.below(4) == 0 { '\n' } else { ' ' });
        body.push_str(&block[next]);
    }
    body
}

/// A random index into `sorted` (ascending by `len`) of an item between 2/3 of `max` and
/// `max` long or, when there is none, of one of the longest eighth of those shorter;
/// `None` when all are longer.
fn near<T>(sorted: &[T], len: impl Fn(&T) -> usize, max: usize, rng: &mut Rng) -> Option<usize> {
    let fits = sorted.partition_point(|x| len(x) <= max);
    let close = sorted.partition_point(|x| len(x) < max * 2 / 3);
    match fits {
        0 => None,
        _ if close < fits => Some(close + rng.below(fits - close)),
        _ => Some(fits - 1 - rng.below(fits.div_ceil(8))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: usize = 5;
    const MAX: usize = 400;

    #[test]
    fn every_template_fills_to_a_valid_line() {
        let mut rng = Rng::new(0, 0);
        let templates = templates();
        assert!(templates.len() >= 250, "{} templates", templates.len());
        for t in &templates {
            for _ in 0..20 {
                let line = fill(&t.text, &mut rng);
                assert!(!line.contains("{{"), "unknown placeholder in {line:?}");
                assert!(
                    (MIN..=MAX).contains(&line.len()),
                    "{} bytes: {line:?}",
                    line.len()
                );
                assert!(
                    line.chars()
                        .all(|c| !c.is_control() || "\t\n\r".contains(c)),
                    "control character in {line:?}"
                );
            }
        }
    }

    #[test]
    fn bodies_follow_the_length_mix_and_repeat_with_the_seed() {
        for seed in 0..4 {
            let b = bodies(seed, 4096);
            assert_eq!(b, bodies(seed, 4096));
            assert!(b.iter().all(|s| (MIN..=MAX).contains(&s.len())));
            let share = |f: &dyn Fn(usize) -> bool| {
                b.iter().filter(|s| f(s.len())).count() as f64 / b.len() as f64
            };
            let mean = b.iter().map(String::len).sum::<usize>() as f64 / b.len() as f64;
            assert!((0.55..0.8).contains(&share(&|n| n <= 80)), "seed {seed}");
            assert!(share(&|n| n > 280) > 0.01, "seed {seed}");
            assert!((50.0..120.0).contains(&mean), "seed {seed}: mean {mean}");
        }
        assert_ne!(bodies(1, 64), bodies(2, 64));
    }

    #[test]
    fn unescapes_the_corpus_notation() {
        assert_eq!(unescape(r"a\nb\tc\\d\re\q"), "a\nb\tc\\d\re\\q");
        let mut rng = Rng::new(0, 0);
        assert_eq!(fill("x {{nope}} {{n", &mut rng), "x {{nope}} {{n");
    }
}
