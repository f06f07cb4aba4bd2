//! Recovery words: the 32-byte Ed25519 seed of a DID's recovery key written
//! as 32 words of the PGP word list, as the browser sign-in page shows it
//! (node/src/oidc/page/signin.html, "RECOVERY WORDS"; the lists are
//! `PGP_EVEN` and `PGP_ODD` in signin.js, and tests/recovery_words.rs fails
//! if these tables ever differ from them).
//!
//! Word `i` (from 0) encodes byte `i` of the seed: the even (two-syllable)
//! list for even `i`, the odd (three-syllable) list for odd `i` (P. Juola
//! and P. Zimmermann, "Whole-word phonetic distances and the PGP word list",
//! 1995; lower-cased). The lists are disjoint, so a dropped or swapped word
//! puts a word at a position of the wrong parity, and the decoder says so
//! instead of silently giving another key. The seed is an RFC 8032 §5.1.5
//! private key; `didmesh wallet init --recovery-words` uses it exactly like
//! `--seed-hex`.

use std::io::{BufRead, Read};
use zeroize::Zeroizing;

/// Number of words of a recovery phrase: one per seed byte.
pub const SEED_WORDS: usize = 32;

/// Longest input `read_words` accepts; 32 words take well under 1 KiB even
/// numbered, so more is a wrong file, not a phrase.
pub const MAX_INPUT_BYTES: usize = 16 * 1024;

/// The even list (two syllables): the word of byte `b` at an even position
/// (0, 2, 4, …) is `PGP_EVEN[b]`.
#[rustfmt::skip]
pub const PGP_EVEN: [&str; 256] = [
    // 0x00
    "aardvark", "absurd", "accrue", "acme", "adrift", "adult", "afflict", "ahead",
    "aimless", "algol", "allow", "alone", "ammo", "ancient", "apple", "artist",
    // 0x10
    "assume", "athens", "atlas", "aztec", "baboon", "backfield", "backward", "banjo",
    "beaming", "bedlamp", "beehive", "beeswax", "befriend", "belfast", "berserk", "billiard",
    // 0x20
    "bison", "blackjack", "blockade", "blowtorch", "bluebird", "bombast", "bookshelf", "brackish",
    "breadline", "breakup", "brickyard", "briefcase", "burbank", "button", "buzzard", "cement",
    // 0x30
    "chairlift", "chatter", "checkup", "chisel", "choking", "chopper", "christmas", "clamshell",
    "classic", "classroom", "cleanup", "clockwork", "cobra", "commence", "concert", "cowbell",
    // 0x40
    "crackdown", "cranky", "crowfoot", "crucial", "crumpled", "crusade", "cubic", "dashboard",
    "deadbolt", "deckhand", "dogsled", "dragnet", "drainage", "dreadful", "drifter", "dropper",
    // 0x50
    "drumbeat", "drunken", "dupont", "dwelling", "eating", "edict", "egghead", "eightball",
    "endorse", "endow", "enlist", "erase", "escape", "exceed", "eyeglass", "eyetooth",
    // 0x60
    "facial", "fallout", "flagpole", "flatfoot", "flytrap", "fracture", "framework", "freedom",
    "frighten", "gazelle", "geiger", "glitter", "glucose", "goggles", "goldfish", "gremlin",
    // 0x70
    "guidance", "hamlet", "highchair", "hockey", "indoors", "indulge", "inverse", "involve",
    "island", "jawbone", "keyboard", "kickoff", "kiwi", "klaxon", "locale", "lockup",
    // 0x80
    "merit", "minnow", "miser", "mohawk", "mural", "music", "necklace", "neptune",
    "newborn", "nightbird", "oakland", "obtuse", "offload", "optic", "orca", "payday",
    // 0x90
    "peachy", "pheasant", "physique", "playhouse", "pluto", "preclude", "prefer", "preshrunk",
    "printer", "prowler", "pupil", "puppy", "python", "quadrant", "quiver", "quota",
    // 0xa0
    "ragtime", "ratchet", "rebirth", "reform", "regain", "reindeer", "rematch", "repay",
    "retouch", "revenge", "reward", "rhythm", "ribcage", "ringbolt", "robust", "rocker",
    // 0xb0
    "ruffled", "sailboat", "sawdust", "scallion", "scenic", "scorecard", "scotland", "seabird",
    "select", "sentence", "shadow", "shamrock", "showgirl", "skullcap", "skydive", "slingshot",
    // 0xc0
    "slowdown", "snapline", "snapshot", "snowcap", "snowslide", "solo", "southward", "soybean",
    "spaniel", "spearhead", "spellbind", "spheroid", "spigot", "spindle", "spyglass", "stagehand",
    // 0xd0
    "stagnate", "stairway", "standard", "stapler", "steamship", "sterling", "stockman", "stopwatch",
    "stormy", "sugar", "surmount", "suspense", "sweatband", "swelter", "tactics", "talon",
    // 0xe0
    "tapeworm", "tempest", "tiger", "tissue", "tonic", "topmost", "tracker", "transit",
    "trauma", "treadmill", "trojan", "trouble", "tumor", "tunnel", "tycoon", "uncut",
    // 0xf0
    "unearth", "unwind", "uproot", "upset", "upshot", "vapor", "village", "virus",
    "vulcan", "waffle", "wallet", "watchword", "wayside", "willow", "woodlark", "zulu",
];

/// The odd list (three syllables): the word of byte `b` at an odd position
/// (1, 3, 5, …) is `PGP_ODD[b]`.
#[rustfmt::skip]
pub const PGP_ODD: [&str; 256] = [
    // 0x00
    "adroitness", "adviser", "aftermath", "aggregate", "alkali", "almighty", "amulet", "amusement",
    "antenna", "applicant", "apollo", "armistice", "article", "asteroid", "atlantic", "atmosphere",
    // 0x10
    "autopsy", "babylon", "backwater", "barbecue", "belowground", "bifocals", "bodyguard", "bookseller",
    "borderline", "bottomless", "bradbury", "bravado", "brazilian", "breakaway", "burlington", "businessman",
    // 0x20
    "butterfat", "camelot", "candidate", "cannonball", "capricorn", "caravan", "caretaker", "celebrate",
    "cellulose", "certify", "chambermaid", "cherokee", "chicago", "clergyman", "coherence", "combustion",
    // 0x30
    "commando", "company", "component", "concurrent", "confidence", "conformist", "congregate", "consensus",
    "consulting", "corporate", "corrosion", "councilman", "crossover", "crucifix", "cumbersome", "customer",
    // 0x40
    "dakota", "decadence", "december", "decimal", "designing", "detector", "detergent", "determine",
    "dictator", "dinosaur", "direction", "disable", "disbelief", "disruptive", "distortion", "document",
    // 0x50
    "embezzle", "enchanting", "enrollment", "enterprise", "equation", "equipment", "escapade", "eskimo",
    "everyday", "examine", "existence", "exodus", "fascinate", "filament", "finicky", "forever",
    // 0x60
    "fortitude", "frequency", "gadgetry", "galveston", "getaway", "glossary", "gossamer", "graduate",
    "gravity", "guitarist", "hamburger", "hamilton", "handiwork", "hazardous", "headwaters", "hemisphere",
    // 0x70
    "hesitate", "hideaway", "holiness", "hurricane", "hydraulic", "impartial", "impetus", "inception",
    "indigo", "inertia", "infancy", "inferno", "informant", "insincere", "insurgent", "integrate",
    // 0x80
    "intention", "inventive", "istanbul", "jamaica", "jupiter", "leprosy", "letterhead", "liberty",
    "maritime", "matchmaker", "maverick", "medusa", "megaton", "microscope", "microwave", "midsummer",
    // 0x90
    "millionaire", "miracle", "misnomer", "molasses", "molecule", "montana", "monument", "mosquito",
    "narrative", "nebula", "newsletter", "norwegian", "october", "ohio", "onlooker", "opulent",
    // 0xa0
    "orlando", "outfielder", "pacific", "pandemic", "pandora", "paperweight", "paragon", "paragraph",
    "paramount", "passenger", "pedigree", "pegasus", "penetrate", "perceptive", "performance", "pharmacy",
    // 0xb0
    "phonetic", "photograph", "pioneer", "pocketful", "politeness", "positive", "potato", "processor",
    "provincial", "proximate", "puberty", "publisher", "pyramid", "quantity", "racketeer", "rebellion",
    // 0xc0
    "recipe", "recover", "repellent", "replica", "reproduce", "resistor", "responsive", "retraction",
    "retrieval", "retrospect", "revenue", "revival", "revolver", "sandalwood", "sardonic", "saturday",
    // 0xd0
    "savagery", "scavenger", "sensation", "sociable", "souvenir", "specialist", "speculate", "stethoscope",
    "stupendous", "supportive", "surrender", "suspicious", "sympathy", "tambourine", "telephone", "therapist",
    // 0xe0
    "tobacco", "tolerance", "tomorrow", "torpedo", "tradition", "travesty", "trombonist", "truncated",
    "typewriter", "ultimate", "undaunted", "underfoot", "unicorn", "unify", "universe", "unravel",
    // 0xf0
    "upcoming", "vacancy", "vagabond", "vertigo", "virginia", "visitor", "vocalist", "voyager",
    "warranty", "waterloo", "whimsical", "wichita", "wilmington", "wyoming", "yesteryear", "yucatan",
];

/// The list a word at `position` (from 0) comes from, and its name.
pub fn list_for(position: usize) -> (&'static [&'static str; 256], &'static str) {
    if position % 2 == 0 {
        (&PGP_EVEN, "even")
    } else {
        (&PGP_ODD, "odd")
    }
}

/// The words of `bytes`, as the sign-in page's `seedToWords` writes them.
pub fn encode(bytes: &[u8]) -> Vec<&'static str> {
    bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| list_for(i).0[usize::from(b)])
        .collect()
}

/// Why a recovery phrase was refused. Positions count from 1, as the page
/// numbers its list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    #[error("no recovery words given (expected {SEED_WORDS})")]
    Empty,
    #[error("expected {SEED_WORDS} recovery words, got {got}: a word is missing or repeated, or the phrase is not complete")]
    Count { got: usize },
    /// A word of the other list: almost always a dropped, doubled or
    /// swapped word (the lists are disjoint).
    #[error("word {position} '{word}' is from the {found} list, but word {position} must be from the {expected} list — words may be swapped or missing{}", count_note(*.got))]
    WrongList {
        position: usize,
        word: String,
        found: &'static str,
        expected: &'static str,
        got: usize,
    },
    /// In neither list: a typo, or not a recovery phrase at all.
    #[error("word {position} '{word}' is not a recovery word{}{}", suggestion_note(.suggestion), count_note(*.got))]
    Unknown {
        position: usize,
        word: String,
        suggestion: Option<Suggestion>,
        got: usize,
    },
}

/// The nearest word to a mistyped one (at most [`MAX_SUGGESTION_EDITS`]
/// edits away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    pub word: &'static str,
    /// The list it is from, when that is not the list the position needs.
    pub other_list: Option<&'static str>,
}

/// A typo farther than this from every word gets no suggestion: past two
/// edits the nearest word of 256 is a guess, not a correction.
pub const MAX_SUGGESTION_EDITS: usize = 2;

fn suggestion_note(s: &Option<Suggestion>) -> String {
    match s {
        None => String::new(),
        Some(Suggestion {
            word,
            other_list: None,
        }) => format!(" (did you mean '{word}'?)"),
        Some(Suggestion {
            word,
            other_list: Some(list),
        }) => {
            format!(" (closest: '{word}', from the {list} list — words may be swapped or missing)")
        }
    }
}

fn count_note(got: usize) -> String {
    if got == SEED_WORDS {
        String::new()
    } else {
        format!("; {got} words given, {SEED_WORDS} expected")
    }
}

/// The words of `text`: split on whitespace (and commas or semicolons),
/// with list numbers such as `1.`, `2)` or `3` dropped, since a copy of
/// the page's numbered list may carry them. No PGP word contains a digit.
pub fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|t| {
            let number = t.trim_end_matches(['.', ')']);
            !number.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Decodes a recovery phrase into the 32-byte seed, case-insensitively.
/// The first bad word is reported (later ones are often only shifted by
/// it); the count is checked once every word is known.
pub fn decode_seed(text: &str) -> Result<Zeroizing<[u8; SEED_WORDS]>, WordsError> {
    let got = tokens(text).count();
    if got == 0 {
        return Err(WordsError::Empty);
    }
    let mut seed = Zeroizing::new([0u8; SEED_WORDS]);
    for (i, token) in tokens(text).enumerate() {
        let word = Zeroizing::new(token.to_lowercase());
        let (list, expected) = list_for(i);
        let (other, found) = list_for(i + 1);
        if let Some(b) = index_of(list, &word) {
            if let Some(out) = seed.get_mut(i) {
                *out = b;
            }
            continue;
        }
        let shown = shown(token);
        if index_of(other, &word).is_some() {
            return Err(WordsError::WrongList {
                position: i + 1,
                word: shown,
                found,
                expected,
                got,
            });
        }
        return Err(WordsError::Unknown {
            position: i + 1,
            word: shown,
            suggestion: suggest(&word, list, other, found),
            got,
        });
    }
    if got != SEED_WORDS {
        return Err(WordsError::Count { got });
    }
    Ok(seed)
}

/// Reads a recovery phrase from `input` (stdin for `--recovery-words -`).
/// `interactive` (a terminal) stops at the 32nd word or an empty line, so
/// the user need not type Ctrl-D; otherwise it reads to the end. At most
/// [`MAX_INPUT_BYTES`]; the buffer is zeroized when dropped and allocated
/// once, so no copy of the words is left behind by a reallocation.
pub fn read_words(
    mut input: impl BufRead,
    interactive: bool,
) -> Result<Zeroizing<String>, std::io::Error> {
    let too_long = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {MAX_INPUT_BYTES} bytes: not a recovery phrase"),
        )
    };
    let mut text = Zeroizing::new(String::with_capacity(MAX_INPUT_BYTES + 1));
    loop {
        let before = text.len();
        let mut limited = Read::take(&mut input, (MAX_INPUT_BYTES + 1 - before) as u64);
        let n = limited.read_line(&mut text)?;
        if text.len() > MAX_INPUT_BYTES {
            return Err(too_long());
        }
        if n == 0 {
            break;
        }
        if interactive {
            let blank = text[before..].trim().is_empty();
            if blank || tokens(&text).count() >= SEED_WORDS {
                break;
            }
        }
    }
    Ok(text)
}

fn index_of(list: &[&str; 256], word: &str) -> Option<u8> {
    list.iter()
        .position(|w| *w == word)
        .and_then(|i| u8::try_from(i).ok())
}

/// A user's word as an error shows it: control characters escaped, long
/// input cut (it goes to a terminal).
fn shown(token: &str) -> String {
    let cut: String = token.chars().take(24).collect();
    let mut s: String = cut.escape_debug().collect();
    if token.chars().count() > 24 {
        s.push('…');
    }
    s
}

/// The closest word within [`MAX_SUGGESTION_EDITS`]: from the position's
/// own list if one is that close, else from the other list (named).
fn suggest(
    word: &str,
    list: &'static [&'static str; 256],
    other: &'static [&'static str; 256],
    other_name: &'static str,
) -> Option<Suggestion> {
    let nearest = |l: &'static [&'static str; 256]| {
        l.iter()
            .map(|w| (edit_distance(word, w), *w))
            .filter(|(d, _)| *d <= MAX_SUGGESTION_EDITS)
            .min_by_key(|(d, _)| *d)
    };
    match (nearest(list), nearest(other)) {
        (Some((d, w)), Some((od, _))) if d <= od => Some(Suggestion {
            word: w,
            other_list: None,
        }),
        (Some((_, w)), None) => Some(Suggestion {
            word: w,
            other_list: None,
        }),
        (_, Some((_, w))) => Some(Suggestion {
            word: w,
            other_list: Some(other_name),
        }),
        (None, None) => None,
    }
}

/// Levenshtein distance over chars (words are ≤ 11 letters: cheap).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the PGP word list's Wikipedia article (a PGP key
    /// fingerprint), checked independently of signin.js.
    #[test]
    fn published_example() {
        let bytes = [
            0xe5, 0x82, 0x94, 0xf2, 0xe9, 0xa2, 0x27, 0x48, 0x6e, 0x8b, 0x06, 0x1b, 0x31, 0xcc,
            0x52, 0x8f, 0xd7, 0xfa, 0x3f, 0x19,
        ];
        assert_eq!(
            encode(&bytes).join(" "),
            "topmost istanbul pluto vagabond treadmill pacific brackish dictator goldfish medusa \
             afflict bravado chatter revolver dupont midsummer stopwatch whimsical cowbell bottomless"
        );
    }

    #[test]
    fn lists_are_disjoint_and_distinct() {
        let mut all: Vec<&str> = PGP_EVEN.iter().chain(PGP_ODD.iter()).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 512);
        assert!(all
            .iter()
            .all(|w| w.bytes().all(|b| b.is_ascii_lowercase())));
    }

    #[test]
    fn every_byte_round_trips_at_both_parities() {
        let seed: [u8; 32] = std::array::from_fn(|i| (i * 8 + 3) as u8);
        assert_eq!(*decode_seed(&encode(&seed).join(" ")).unwrap(), seed);
        for b in 0..=255u8 {
            let words = encode(&[b, b]).join(" ");
            let mut text = words.clone();
            for _ in 0..15 {
                text = format!("{text} {words}");
            }
            assert_eq!(*decode_seed(&text).unwrap(), [b; 32]);
        }
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("aardvark", "aardvark"), 0);
        assert_eq!(edit_distance("ardvark", "aardvark"), 1);
        assert_eq!(edit_distance("aardvrak", "aardvark"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn tokens_tolerate_numbering_and_separators() {
        let t: Vec<&str> = tokens(" 1. aardvark\n2) Adroitness,\t3 absurd;; . ").collect();
        assert_eq!(t, ["aardvark", "Adroitness", "absurd"]);
    }

    #[test]
    fn interactive_reading_stops_at_32_words_or_a_blank_line() {
        let words = encode(&[7u8; 32]).join(" ");
        let input = format!("{words}\nnot read\n");
        let text = read_words(input.as_bytes(), true).unwrap();
        assert_eq!(text.trim(), words);
        let text = read_words("aardvark\n\nadroitness\n".as_bytes(), true).unwrap();
        assert_eq!(text.trim(), "aardvark");
        let text = read_words("aardvark\n\nadroitness\n".as_bytes(), false).unwrap();
        assert_eq!(tokens(&text).count(), 2);
        let big = "a ".repeat(MAX_INPUT_BYTES);
        assert!(read_words(big.as_bytes(), false).is_err());
    }
}
