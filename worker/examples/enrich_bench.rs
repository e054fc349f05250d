//! Enrichment cost per stage: CPU µs per message for corpus lines and adversarial 4 KiB bodies.
//!
//! `cargo run --release -p courier-worker --example enrich_bench [-- --iters N --only a,b]`
//! prints a Markdown table: median, 99th percentile and max of the thread's CPU time over
//! the iterations, in µs, after one untimed round.

use std::time::Duration;
use worker::enrich::{Draft, Language, Links, MentionsAndHashtags, Moderation, Pipeline, Stage};

/// The largest body the gateway accepts (`shared::message::MAX_BODY_BYTES`).
const MAX_BODY: usize = 4096;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters = flag(&args, "--iters").map_or(200, |v| v.parse().unwrap_or(200));
    let only = flag(&args, "--only");
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(Moderation),
        Box::new(Links::new()),
        Box::new(MentionsAndHashtags),
        Box::new(Language),
    ];
    let t = cpu_now();
    let pipeline = Pipeline::standard();
    println!(
        "Pipeline::standard() (compiles the word list): {} µs\n",
        us(cpu_now() - t)
    );

    println!("| body | bytes | moderation | links | mentions | language | pipeline |");
    println!("|---|---|---|---|---|---|---|");
    for (name, bodies) in kinds() {
        if only.is_some_and(|o| !o.split(',').any(|k| k == name)) {
            continue;
        }
        let bytes = bodies.iter().map(String::len).max().unwrap_or(0);
        let mut row = format!("| {name} | {bytes} |");
        for stage in &stages {
            let s = measure(iters, &bodies, |b| {
                let mut d = Draft {
                    original: b,
                    body: b.to_owned(),
                    enriched: Default::default(),
                };
                let t = cpu_now();
                stage.apply(&mut d);
                let e = cpu_now() - t;
                std::hint::black_box(&d);
                e
            });
            row += &format!(" {s} |");
        }
        let s = measure(iters, &bodies, |b| {
            let t = cpu_now();
            std::hint::black_box(pipeline.run(b));
            cpu_now() - t
        });
        row += &format!(" {s} |");
        println!("{row}");
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(String::as_str)
}

/// `f` over `iters` rounds of every body, as "median / p99 / max" µs. A first, untimed
/// round warms caches and the allocator up.
fn measure(iters: usize, bodies: &[String], mut f: impl FnMut(&str) -> Duration) -> String {
    for b in bodies {
        f(b);
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(iters * bodies.len());
    for _ in 0..iters {
        for b in bodies {
            samples.push(f(b));
        }
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
        samples.get(i).copied().unwrap_or_default()
    };
    format!("{} / {} / {}", us(at(0.5)), us(at(0.99)), us(at(1.0)))
}

fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 100.0 {
        format!("{us:.0}")
    } else {
        format!("{us:.1}")
    }
}

/// This thread's CPU time: unlike wall time, not inflated when the machine is busy.
fn cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn corpus(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !(l.trim().is_empty() || *l == "#" || l.starts_with("# ")))
        .map(str::to_owned)
        .collect()
}

/// `unit` repeated up to `MAX_BODY` bytes, cut at a char boundary.
fn fill(unit: &str) -> String {
    let mut s = String::with_capacity(MAX_BODY);
    'outer: loop {
        for c in unit.chars() {
            if s.len() + c.len_utf8() > MAX_BODY {
                break 'outer;
            }
            s.push(c);
        }
    }
    s
}

/// Control-free random text from many scripts, from a fixed seed.
fn random_unicode() -> String {
    let ranges = [
        (0x20, 0x7e),
        (0xa0, 0x24f),
        (0x370, 0x3ff),
        (0x400, 0x4ff),
        (0x590, 0x5ff),
        (0x600, 0x6ff),
        (0x900, 0x97f),
        (0x3040, 0x30ff),
        (0x4e00, 0x9fff),
        (0xac00, 0xd7a3),
        (0x1d400, 0x1d7ff),
        (0x1f300, 0x1faff),
        (0xff00, 0xffef),
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut s = String::with_capacity(MAX_BODY);
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (lo, hi) = ranges[(x % ranges.len() as u64) as usize];
        let Some(c) = char::from_u32(lo + ((x >> 8) % (hi - lo + 1) as u64) as u32) else {
            continue;
        };
        if c.is_control() {
            continue;
        }
        if s.len() + c.len_utf8() > MAX_BODY {
            return s;
        }
        s.push(c);
    }
}

fn kinds() -> Vec<(&'static str, Vec<String>)> {
    // Messages of 100 bytes that start with a 16-digit number.
    let sixteen: Vec<String> = [
        "4111111111111111 is the card I used for order 199215, can you check the refund",
        "1234567890123456 is my card number, the order 199215 was charged twice yesterday",
        "8675309213371337 is the tracking id from the courier, still not delivered",
        "5318008531800853 lol my calculator says hi, the total is 5318008",
    ]
    .iter()
    .map(|s| format!("{s:<100}"))
    .collect();
    vec![
        (
            "corpus: clean lines",
            corpus(include_str!("../corpus/clean.txt")),
        ),
        (
            "corpus: abusive lines",
            corpus(include_str!("../corpus/abusive.txt")),
        ),
        ("16 digits + text (100 B)", sixteen),
        ("4000 digits", vec!["0123456789".repeat(400)]),
        ("digits", vec![fill("5318008")]),
        ("one repeated char", vec![fill("a")]),
        ("emoji", vec![fill("😀👨‍👩‍👧‍👦🇺🇸❤️")]),
        (
            "mixed scripts",
            vec![fill("hello Привет 你好 مرحبا नमस्ते こんにちは γειά 안녕 ")],
        ),
        (
            "long URL",
            vec![format!(
                "https://example.com/{}",
                fill("a/b-c_d.e").get(..4000).unwrap_or_default()
            )],
        ),
        ("many @ and #", vec![fill("@alice #rust ")]),
        ("@ and # only", vec![fill("@#")]),
        ("many links", vec![fill("https://a.io/x ")]),
        ("colons and slashes", vec![fill("a:/")]),
        ("schemes without spaces", vec![fill("http://")]),
        ("dots and www", vec![fill("www.a.b.")]),
        ("spaced letters", vec![fill("a b c d e f g ")]),
        ("spaced abuse", vec![fill("f u c k ")]),
        ("profanity", vec![fill("fuck shit ")]),
        ("leet and digits", vec![fill("sh1t 5h1t f4ck a55 ")]),
        ("random unicode", vec![random_unicode()]),
        ("look-alike Cyrillic words", vec![fill("сор рос хер ")]),
        ("near-miss stems (one token)", vec![fill("cocksucfuc")]),
        ("near-miss @words", vec![fill("@sshol ")]),
        ("near-miss f*u*c*x", vec![fill("f*u*c*x ")]),
        ("near-miss spelled", vec![fill("f u c ")]),
        ("near-miss phrases", vec![fill("kill your hope you ")]),
    ]
}
