//! The rules file: YAML structure, the condition language, checks and
//! compilation (`RuleSet::from_yaml`).
//!
//! Input: the file's text (inputs that are not UTF-8 are skipped: the
//! worker reads the file as a `String`). Checks:
//! - loading never panics;
//! - an error names the file and a 1-based line and column inside the
//!   text, and has a message;
//! - a file that loads loads again to the same version string, and its
//!   compiled rules evaluate without panicking on an empty and a busy
//!   customer at several instants, `evaluate_segments` and
//!   `evaluate_with_next_flip` agree, and the next flip is after `now`.
#![no_main]

use cohort_core::rules::{RuleSet, SegmentSet, MAX_SEGMENTS};
use cohort_core::state::StateSettings;
use cohort_core::time::Timestamp;
use cohort_core::view::CustomerView;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let rules = match RuleSet::from_yaml("fuzz.yaml", text) {
        Err(e) => {
            assert_eq!(e.file(), "fuzz.yaml");
            assert!(!e.message().is_empty(), "{e:?}");
            // Lines as YAML counts them: `\n`, `\r\n` and a lone `\r` end one.
            let lines = 1 + text.replace("\r\n", "\n").chars().filter(|c| matches!(c, '\n' | '\r')).count();
            assert!(e.line() >= 1 && e.line() <= lines, "line out of the text: {e:?}");
            assert!(e.column() >= 1, "{e:?}");
            assert!(e.to_string().starts_with(&format!("fuzz.yaml:{}:{}: ", e.line(), e.column())), "{e}");
            return;
        }
        Ok(rules) => rules,
    };
    let again = RuleSet::from_yaml("other.yaml", text).expect("the same text loads again");
    assert_eq!(rules.version(), again.version());
    assert!(rules.segments().len() <= MAX_SEGMENTS);

    let settings = StateSettings {
        session_gap: rules.settings().session_gap,
        affinity_half_life: rules.settings().affinity_half_life,
        ..StateSettings::default()
    };
    for state in cohort_fuzz::rules_states() {
        for now in [1_700_000_000_000, 1_700_000_000_000 + 95 * 86_400_000, 0, 4_102_444_800_000] {
            let now = Timestamp(now);
            let view = CustomerView::at(state, &settings, now);
            let mut segments = SegmentSet::new();
            rules.evaluate_segments(&view, now, &mut segments);
            let mut with_next = SegmentSet::new();
            let next = rules.evaluate_with_next_flip(&view, now, &mut with_next);
            assert_eq!(segments, with_next, "evaluate_segments and evaluate_with_next_flip disagree");
            if let Some(t) = next {
                assert!(t > now, "next flip {t:?} is not after now {now:?}");
            }
            for i in 0..rules.offers().len() {
                rules.offer_eligible(i, &view, &segments, now);
            }
        }
    }
});
