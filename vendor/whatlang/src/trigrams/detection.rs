use hashbrown::HashMap;

use super::utils::{TrigramsWithPositions, get_trigrams_with_positions};
use super::{ARABIC_LANGS, CYRILLIC_LANGS, DEVANAGARI_LANGS, HEBREW_LANGS, LATIN_LANGS};
#[cfg(any(test, feature = "dev"))]
use super::LangProfile;
use super::LangProfileList;
use super::{MAX_TOTAL_DISTANCE, MAX_TRIGRAM_DISTANCE, Trigram};
use crate::Lang;
use crate::core::{FilterList, Info, InternalQuery, Text, calculate_confidence};
use crate::scripts::grouping::MultiLangScript;

#[derive(Debug)]
pub struct RawOutcome {
    pub trigrams_count: usize,
    #[allow(dead_code)]
    pub raw_distances: Vec<(Lang, u32)>,
    pub scores: Vec<(Lang, f64)>,
}

#[inline]
pub fn detect(iquery: &InternalQuery) -> Option<Info> {
    let raw_outcome = raw_detect(iquery);
    let RawOutcome {
        trigrams_count,
        scores,
        ..
    } = raw_outcome;

    let mut raw_scores_iter = scores.into_iter();

    let opt_lang_score1 = raw_scores_iter.next();
    let opt_lang_score2 = raw_scores_iter.next();

    // TODO: Logic is duplicated in alphabets. Consider refactoring
    opt_lang_score1.map(|(lang1, score1)| {
        let script = iquery.multi_lang_script.to_script();
        let confidence = if let Some((_, score2)) = opt_lang_score2 {
            calculate_confidence(score1, score2, trigrams_count)
        } else {
            1.0
        };
        Info::new(script, lang1, confidence)
    })
}

#[inline]
pub fn raw_detect(iquery: &InternalQuery) -> RawOutcome {
    let lang_profile_list = script_to_lang_profile_list(iquery.multi_lang_script);
    calculate_scores_in_profiles(&iquery.text, iquery.filter_list, lang_profile_list)
}

fn script_to_lang_profile_list(script: MultiLangScript) -> LangProfileList {
    use MultiLangScript as MLS;
    match script {
        MLS::Latin => LATIN_LANGS,
        MLS::Cyrillic => CYRILLIC_LANGS,
        MLS::Arabic => ARABIC_LANGS,
        MLS::Devanagari => DEVANAGARI_LANGS,
        MLS::Hebrew => HEBREW_LANGS,
    }
}

#[inline]
fn calculate_scores_in_profiles(
    text: &Text,
    filter_list: &FilterList,
    lang_profile_list: LangProfileList,
) -> RawOutcome {
    let TrigramsWithPositions {
        trigram_positions, ..
    } = get_trigrams_with_positions(&text.lowercase());
    let distances = index_of(lang_profile_list).distances(&trigram_positions);
    scores_from_distances(
        lang_profile_list
            .iter()
            .zip(distances)
            .filter(|((lang, _), _)| filter_list.is_allowed(*lang))
            .map(|((lang, _), dist)| (*lang, dist))
            .collect(),
        trigram_positions.len(),
    )
}

/// Sorts the languages by distance and turns distances into scores.
fn scores_from_distances(
    mut lang_distances: Vec<(Lang, u32)>,
    unique_trigrams_count: usize,
) -> RawOutcome {
    // Sort languages by distance
    lang_distances.sort_unstable_by_key(|(_, dist)| *dist);

    let max_dist = unique_trigrams_count as u32 * MAX_TRIGRAM_DISTANCE;

    let raw_scores = lang_distances
        .iter()
        .map(|&(lang, distance)| (lang, distance_to_raw_score(distance, max_dist)))
        .collect();

    RawOutcome {
        trigrams_count: unique_trigrams_count,
        scores: raw_scores,
        raw_distances: lang_distances,
    }
}

/// courier's change: the profiles of a script, inverted. Upstream looks each of a
/// language's 300 profile trigrams up in the text's trigrams, for every language of the
/// script (about 10,000 lookups per text, however short the text); this looks each of
/// the text's trigrams up once and visits the languages that have it. The distances are
/// the same integers (`calculate_distance` below is upstream's, kept as the test oracle).
struct ProfileIndex {
    /// For each trigram, the (language index, rank) of every profile it is in.
    entries: HashMap<Trigram, Vec<(u16, u16)>>,
    /// Each language's profile length, in list order.
    lengths: Vec<u32>,
}

impl ProfileIndex {
    fn build(list: LangProfileList) -> Self {
        let mut entries: HashMap<Trigram, Vec<(u16, u16)>> = HashMap::new();
        for (li, (_, profile)) in list.iter().enumerate() {
            for (rank, &trigram) in profile.iter().enumerate() {
                entries
                    .entry(trigram)
                    .or_default()
                    .push((li as u16, rank as u16));
            }
        }
        let lengths = list.iter().map(|(_, p)| p.len() as u32).collect();
        Self { entries, lengths }
    }

    /// `calculate_distance` for every language of the list, in list order.
    fn distances(&self, text_trigrams: &HashMap<Trigram, u32>) -> Vec<u32> {
        let mut found = vec![(0u32, 0u32); self.lengths.len()];
        for (trigram, &n) in text_trigrams {
            for &(li, rank) in self.entries.get(trigram).into_iter().flatten() {
                let f = &mut found[usize::from(li)];
                f.0 += (n as i32 - i32::from(rank)).unsigned_abs();
                f.1 += 1;
            }
        }
        let count = text_trigrams.len() as u32;
        self.lengths
            .iter()
            .zip(found)
            .map(|(&len, (near, present))| {
                let mut total_dist = near + (len - present) * MAX_TRIGRAM_DISTANCE;
                if MAX_TRIGRAM_DISTANCE > count {
                    let delta = MAX_TRIGRAM_DISTANCE - count;
                    total_dist -= delta * MAX_TRIGRAM_DISTANCE;
                }
                total_dist.clamp(0, MAX_TOTAL_DISTANCE)
            })
            .collect()
    }
}

/// The index of a script's profile list, built on first use.
fn index_of(list: LangProfileList) -> &'static ProfileIndex {
    use std::sync::OnceLock;
    static INDEXES: [OnceLock<ProfileIndex>; 5] = [const { OnceLock::new() }; 5];
    let lists = [
        LATIN_LANGS,
        CYRILLIC_LANGS,
        ARABIC_LANGS,
        DEVANAGARI_LANGS,
        HEBREW_LANGS,
    ];
    let slot = lists
        .iter()
        .position(|l| std::ptr::eq(*l, list))
        .expect("a script's profile list");
    INDEXES[slot].get_or_init(|| ProfileIndex::build(list))
}

/// Upstream's scoring, one language at a time: the oracle the index is tested against.
#[cfg(any(test, feature = "dev"))]
pub fn raw_detect_by_profile(iquery: &InternalQuery) -> RawOutcome {
    let list = script_to_lang_profile_list(iquery.multi_lang_script);
    let TrigramsWithPositions {
        trigram_positions, ..
    } = get_trigrams_with_positions(&iquery.text.lowercase());
    let mut lang_distances: Vec<(Lang, u32)> = vec![];
    for &(lang, lang_trigrams) in list {
        if !iquery.filter_list.is_allowed(lang) {
            continue;
        }
        let dist = calculate_distance(lang_trigrams, &trigram_positions);
        lang_distances.push(((lang), dist));
    }
    scores_from_distances(lang_distances, trigram_positions.len())
}

#[cfg(any(test, feature = "dev"))]
#[inline]
fn calculate_distance(lang_trigrams: LangProfile, text_trigrams: &HashMap<Trigram, u32>) -> u32 {
    let mut total_dist = 0u32;

    for (i, &trigram) in lang_trigrams.iter().enumerate() {
        let dist = match text_trigrams.get(&trigram) {
            Some(&n) => (n as i32 - i as i32).unsigned_abs(),
            None => MAX_TRIGRAM_DISTANCE,
        };
        total_dist += dist;
    }

    let count = text_trigrams.len() as u32;

    if MAX_TRIGRAM_DISTANCE > count {
        let delta = MAX_TRIGRAM_DISTANCE - count;
        total_dist -= delta * MAX_TRIGRAM_DISTANCE;
    }

    total_dist.clamp(0, MAX_TOTAL_DISTANCE)
}

#[inline]
fn distance_to_raw_score(distance: u32, max_distance: u32) -> f64 {
    let similarity = max_distance - distance;
    similarity as f64 / max_distance as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// courier's change: the inverted index gives upstream's distances for every text.
    #[test]
    fn the_index_gives_the_distances_of_the_profile_walk() {
        let samples = [
            "Die Ordnung muss für immer in diesem Codebase bleiben",
            "I think we should meet tomorrow morning to discuss the plan",
            "Привет, как дела? Встретимся завтра в 10:30 у метро",
            "مرحبا، كيف حالك؟ سنلتقي غدا",
            "नमस्ते, आप कैसे हैं? कल मिलते हैं",
            "שלום, מה שלומך? נתראה מחר",
            "ok", "", "a", "4111111111111111 is the card", "https://example.org/a/b?c=d",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ];
        let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyzäöüßéèçñ ąęłńśźż абвгдеёжзийклмнопрстуфхцчшщыэюя ابتثجحخدذرزسشصضطظعغفقكلمنهوي अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह אבגדהוזחטיכלמנסעפצקרשת 0123456789.,!?"
            .chars()
            .collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut texts: Vec<String> = samples.iter().map(|s| s.to_string()).collect();
        for _ in 0..400 {
            let len = next(500);
            texts.push((0..len).map(|_| alphabet[next(alphabet.len())]).collect());
        }
        let scripts = [
            MultiLangScript::Latin,
            MultiLangScript::Cyrillic,
            MultiLangScript::Arabic,
            MultiLangScript::Devanagari,
            MultiLangScript::Hebrew,
        ];
        let filters = [
            FilterList::default(),
            FilterList::deny(vec![Lang::Eng, Lang::Rus, Lang::Ara]),
        ];
        for text in &texts {
            for script in scripts {
                for filter_list in &filters {
                    let iq = InternalQuery {
                        text: Text::new(text),
                        filter_list,
                        multi_lang_script: script,
                    };
                    let fast = raw_detect(&iq);
                    let slow = raw_detect_by_profile(&iq);
                    assert_eq!(fast.trigrams_count, slow.trigrams_count, "{text:?}");
                    assert_eq!(fast.raw_distances, slow.raw_distances, "{text:?} {script:?}");
                    // Bit for bit (an empty text scores NaN on both sides).
                    let bits = |o: &RawOutcome| -> Vec<(Lang, u64)> {
                        o.scores.iter().map(|(l, s)| (*l, s.to_bits())).collect()
                    };
                    assert_eq!(bits(&fast), bits(&slow), "{text:?} {script:?}");
                }
            }
        }
    }

    #[test]
    fn test_when_german_is_given() {
        let text = "Die Ordnung muss für immer in diesem Codebase bleiben";
        let iq = InternalQuery {
            text: Text::new(text),
            filter_list: &FilterList::default(),
            multi_lang_script: MultiLangScript::Latin,
        };
        let raw_outcome = raw_detect(&iq);

        assert_eq!(raw_outcome.trigrams_count, 50);

        let &(first_lang, first_score) = raw_outcome.scores.first().unwrap();
        let &(_last_lang, last_score) = raw_outcome.scores.last().unwrap();

        assert_eq!(first_lang, Lang::Deu);

        assert!(first_score >= 0.0);
        assert!(first_score <= 1.0);

        assert!(last_score >= 0.0);
        assert!(last_score <= 1.0);
    }
}
