//! Every way a rules file can be wrong gives `file:line:column: message`
//! pointing at the offending token, with what was expected.

use cohort_core::rules::RuleSet;

/// A valid header and one good segment, so each case adds one mistake.
fn with_segments(segments: &str) -> String {
    format!("version: 1\nsegments:\n  - name: buyer\n    when: orders.lifetime > 0\n{segments}")
}

fn err(text: &str) -> String {
    match RuleSet::from_yaml("rules.yaml", text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => {
            assert_eq!(e.to_string(), format!("rules.yaml:{}:{}: {}", e.line(), e.column(), e.message()));
            e.to_string()
        }
    }
}

#[test]
fn unknown_field() {
    let e = err(&with_segments("  - name: x\n    when: order.30d > 2\n"));
    assert!(
        e.starts_with(
            "rules.yaml:6:11: unknown field `order.30d` (did you mean `orders.30d`?); expected one of orders.7d, \
             orders.30d, orders.90d, orders.365d, orders.lifetime, spend.7d,"
        ),
        "{e}"
    );
    assert!(e.ends_with("consent.email, consent.sms, consent.push, consent.web"), "{e}");
}

#[test]
fn unknown_field_deep_in_an_expression() {
    let e = err(&with_segments("  - name: x\n    when: cart.items > 0 && (consent.email || profile.shoe_size > 40)\n"));
    assert!(e.starts_with("rules.yaml:6:47: unknown field `profile.shoe_size`; expected one of "), "{e}");
}

#[test]
fn wrong_type_number_in_and() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: cart.items && true\n")),
        "rules.yaml:6:11: `&&` needs a bool (a condition), but `cart.items` is a number"
    );
}

#[test]
fn wrong_type_number_compared_with_string() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: spend.30d > \"x\"\n")),
        "rules.yaml:6:23: expected a number to compare with `spend.30d`, found a string `\"x\"`"
    );
}

#[test]
fn wrong_type_duration_compared_with_number() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: since(last_purchase) >= 90\n")),
        "rules.yaml:6:35: expected a duration to compare with `since(last_purchase)`, found a number `90` \
         (write a unit, e.g. 90d)"
    );
}

#[test]
fn condition_that_is_not_a_bool() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: spend.30d\n")),
        "rules.yaml:6:11: a condition must be a bool (true or false), but `spend.30d` is a number"
    );
}

#[test]
fn ordering_strings() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: profile.country < \"DE\"\n")),
        "rules.yaml:6:27: `<` needs numbers, durations or instants; `profile.country` is a string; use == or !="
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: since(last_seen) > 12x\n")),
        "rules.yaml:6:30: bad duration `12x`; expected a whole number followed by a unit: ms, s, m, h, d or w \
         (e.g. 30m, 90d)"
    );
}

#[test]
fn bad_duration_in_yaml_setting() {
    assert_eq!(
        err("version: 1\nsettings:\n  affinity_half_life: 30 days\n"),
        "rules.yaml:3:23: bad duration `30 days` for `affinity_half_life`; expected a whole number above 0 \
         followed by a unit: ms, s, m, h, d or w (e.g. 30m, 90d)"
    );
}

#[test]
fn unknown_function() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: afinity(\"keto\") > 0.5\n")),
        "rules.yaml:6:11: unknown function `afinity` (did you mean `affinity`?); expected one of since, affinity, \
         in_segment, birthday_within, birthday_this_month, offers_sent"
    );
}

#[test]
fn wrong_argument_count() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: since(last_seen, first_seen) > 1h\n")),
        "rules.yaml:6:11: `since` takes 1 argument (since(instant) -> duration), found 2"
    );
}

#[test]
fn since_of_a_number() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: since(cart.items) > 1h\n")),
        "rules.yaml:6:17: `since` needs an instant such as last_purchase or cart.last_added, but `cart.items` is \
         a number"
    );
}

#[test]
fn unknown_segment_reference() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: in_segment(\"buyers\")\n")),
        "rules.yaml:6:22: unknown segment `buyers` (did you mean `buyer`?); expected one of buyer, x"
    );
}

#[test]
fn duplicate_segment_name() {
    assert_eq!(
        err(&with_segments("  - name: buyer\n    when: orders.lifetime > 1\n")),
        "rules.yaml:5:11: duplicate segment name `buyer` (first defined at line 3)"
    );
}

#[test]
fn cycle_of_in_segment_references() {
    let text = with_segments(
        "  - name: a\n    when: in_segment(\"b\") && cart.items > 0\n  - name: b\n    when: in_segment(\"a\")\n",
    );
    assert_eq!(err(&text), "rules.yaml:6:11: cycle of in_segment references: a -> b -> a");
}

#[test]
fn cycle_is_reported_at_the_reference_that_closes_it() {
    let text = with_segments(
        "  - name: a\n    when: in_segment(\"buyer\") && in_segment(\"b\")\n  - name: b\n    when: in_segment(\"a\")\n",
    );
    assert_eq!(err(&text), "rules.yaml:6:34: cycle of in_segment references: a -> b -> a");
}

#[test]
fn longer_cycle_and_self_reference() {
    let text = with_segments(
        "  - name: a\n    when: in_segment(\"b\")\n  - name: b\n    when: consent.sms || in_segment(\"c\")\n  \
         - name: c\n    when: in_segment(\"a\")\n",
    );
    assert_eq!(err(&text), "rules.yaml:6:11: cycle of in_segment references: a -> b -> c -> a");
    let text = with_segments("  - name: me\n    when: \"!in_segment(\\\"me\\\")\"\n");
    assert_eq!(err(&text), "rules.yaml:6:13: cycle of in_segment references: me -> me");
}

#[test]
fn reference_into_own_group() {
    let text = with_segments(
        "  - name: gold\n    group: tier\n    priority: 1\n    when: spend.365d > 1000\n  - name: silver\n    \
         group: tier\n    priority: 2\n    when: in_segment(\"gold\")\n",
    );
    assert_eq!(
        err(&text),
        "rules.yaml:12:11: `silver` refers to a segment of its own group `tier`; a group's membership depends on \
         all its members, so this is a cycle"
    );
}

#[test]
fn cycle_through_a_group() {
    // a reads gold's membership, which depends on silver, which reads a.
    let text = with_segments(
        "  - name: a\n    when: in_segment(\"gold\")\n  - name: gold\n    group: tier\n    priority: 1\n    \
         when: spend.365d > 1000\n  - name: silver\n    group: tier\n    priority: 2\n    when: in_segment(\"a\")\n",
    );
    assert_eq!(err(&text), "rules.yaml:6:11: cycle of in_segment references: a -> silver -> a (through group `tier`)");
}

#[test]
fn unknown_key_in_yaml() {
    assert_eq!(
        err(&with_segments("  - name: x\n    wen: cart.items > 0\n")),
        "rules.yaml:6:5: unknown key `wen` in a segment; expected one of name, description, group, priority, when"
    );
    assert_eq!(
        err("version: 1\nsegmnts: []\n"),
        "rules.yaml:2:1: unknown key `segmnts` in the rules file; expected one of version, settings, segments, offers"
    );
}

#[test]
fn missing_key() {
    assert_eq!(
        err(&with_segments("  - name: x\n    description: no condition\n")),
        "rules.yaml:5:5: segment `x` is missing the required key `when`"
    );
}

#[test]
fn wrong_version() {
    assert_eq!(err("version: 2\nsegments: []\n"), "rules.yaml:1:10: unsupported rules version `2`; expected 1");
    assert_eq!(err("segments: []\n"), "rules.yaml:1:1: the rules file is missing the required key `version`");
}

#[test]
fn syntax_errors() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: cart.items > 0 &&\n")),
        "rules.yaml:6:28: expected a value: a field, a function call, a number, a duration, a \"string\", true, \
         false or `(`, found the end of the expression"
    );
    assert_eq!(
        err(&with_segments("  - name: x\n    when: (cart.items > 0\n")),
        "rules.yaml:6:26: expected `)`, found the end of the expression"
    );
    assert_eq!(
        err(&with_segments("  - name: x\n    when: cart.items > 0 consent.email\n")),
        "rules.yaml:6:26: unexpected `consent.email`; expected `&&`, `||`, a comparison (`==`, `!=`, `<`, `<=`, \
         `>`, `>=`, `in`) or the end of the expression"
    );
}

#[test]
fn positions_inside_quoted_and_folded_conditions() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: '\"DE\" in profile.contry'\n")),
        "rules.yaml:6:20: unknown field `profile.contry` (did you mean `profile.country`?); expected one of \
         orders.7d, orders.30d, orders.90d, orders.365d, orders.lifetime, spend.7d, spend.30d, spend.90d, \
         spend.365d, spend.lifetime, page_views.7d, page_views.30d, page_views.90d, page_views.365d, \
         page_views.lifetime, product_views.7d, product_views.30d, product_views.90d, product_views.365d, \
         product_views.lifetime, sessions.7d, sessions.30d, sessions.90d, sessions.365d, sessions.lifetime, aov, \
         cart.items, cart.value, cart.last_added, last_purchase, first_purchase, first_seen, last_seen, \
         profile.age, profile.gender, profile.income_band, profile.education, profile.country, profile.region, \
         profile.city, profile.loyalty_tier, profile.interests, consent.email, consent.sms, consent.push, \
         consent.web"
    );
    assert_eq!(
        err(&with_segments("  - name: x\n    when: >-\n      cart.items > 0 &&\n      since(cart.last_added) >= 1y\n")),
        "rules.yaml:8:33: bad duration `1y`; expected a whole number followed by a unit: ms, s, m, h, d or w \
         (e.g. 30m, 90d)"
    );
}

#[test]
fn group_rules() {
    assert_eq!(
        err(&with_segments("  - name: x\n    group: tier\n    when: consent.sms\n")),
        "rules.yaml:5:5: segment `x` has a `group` but no `priority` (lowest number wins the group)"
    );
    assert_eq!(
        err(&with_segments("  - name: x\n    priority: 3\n    when: consent.sms\n")),
        "rules.yaml:6:15: `priority` only applies to a segment with a `group`"
    );
    assert_eq!(
        err(&with_segments(
            "  - name: x\n    group: g\n    priority: 1\n    when: consent.sms\n  - name: y\n    group: g\n    \
             priority: 1\n    when: consent.web\n"
        )),
        "rules.yaml:10:12: segments `x` and `y` in group `g` have the same priority 1; priorities in a group must \
         differ"
    );
}

#[test]
fn offer_errors() {
    let base = "version: 1\nsegments:\n  - name: lapsed\n    when: orders.lifetime > 0\noffers:\n  - id: w\n";
    assert_eq!(
        err(&format!("{base}    eligible: in_segment(\"lapsed\")\n    channels: [fax]\n")),
        "rules.yaml:8:16: unknown channel `fax`; expected one of email, sms, push, web"
    );
    assert_eq!(
        err(&format!("{base}    eligible: consent.email\n    channels: [email]\n    holdout: 1.5\n")),
        "rules.yaml:9:14: `holdout` is a share: expected 0 <= holdout < 1, found 1.5"
    );
    assert_eq!(
        err(&format!("{base}    eligible: consent.email\n    channels: [email]\n    cap: {{ max: 1, every: 30d }}\n")),
        "rules.yaml:9:20: unknown key `every` in `cap`; expected one of max, per"
    );
    assert_eq!(
        err(&format!("{base}    eligible: offers_sent(\"v\", 7d) < 1\n    channels: [email]\n")),
        "rules.yaml:7:27: unknown offer `v`; expected one of w"
    );
    assert_eq!(
        err(&format!("{base}    eligible: consent.email\n    channels: [email]\n    triggers: [cart_abandon]\n")),
        "rules.yaml:9:16: unknown trigger `cart_abandon`; expected one of segment_entered, \
         segment_entered:<segment>, cart_abandoned, purchase, session_start, rules_changed, rules_changed:<segment>"
    );
    assert_eq!(
        err(&format!("{base}    eligible: consent.email\n    channels: [email]\n  - id: w\n    eligible: true\n    channels: [sms]\n")),
        "rules.yaml:9:9: duplicate offer id `w`"
    );
}

#[test]
fn yaml_level_errors() {
    let e = err("version: 1\nsegments:\n  - name: x\n   when: [\n");
    assert!(e.starts_with("rules.yaml:"), "{e}");
    assert_eq!(
        err("version: 1\nversion: 1\n"),
        "rules.yaml:2:1: duplicate key `version` in the rules file (first at line 1)"
    );
    assert_eq!(err("- 1\n- 2\n"), "rules.yaml:1:1: expected the rules file (a mapping of keys), found a list");
    assert_eq!(err(""), "rules.yaml:1:1: the file is empty");
    assert_eq!(
        err("version: 1\nsegments:\n  - &s { name: x, when: true }\n"),
        "rules.yaml:3:8: YAML anchors (`&name`) and tags (`!tag`) are not supported in rules files"
    );
}

mod never_panics {
    use cohort_core::rules::RuleSet;
    use proptest::prelude::*;

    const PIECES: [&str; 24] = [
        "cart.items",
        "since(",
        "last_purchase",
        ")",
        "(",
        ">=",
        "==",
        "&&",
        "||",
        "!",
        "1h",
        "12x",
        "\"k\"",
        "affinity(",
        "in_segment(\"a\")",
        "in",
        "[",
        "]",
        ",",
        "0.5",
        "-",
        "profile.interests",
        "true",
        " ",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_is_an_error_or_a_ruleset(text in "\\PC{0,200}") {
            let _ = RuleSet::from_yaml("f.yaml", &text);
        }

        #[test]
        fn token_soup_conditions_never_panic(pieces in proptest::collection::vec(0..PIECES.len(), 0..16)) {
            let cond: String = pieces.iter().map(|&i| PIECES[i]).collect();
            let text = format!(
                "version: 1\nsegments:\n  - name: a\n    when: '{}'\n  - name: b\n    when: true\n",
                cond.replace('\'', "''")
            );
            if let Err(e) = RuleSet::from_yaml("f.yaml", &text) {
                prop_assert!(e.line() >= 1 && e.column() >= 1);
                prop_assert!(e.line() <= text.lines().count() + 1, "{e}");
            }
        }

        #[test]
        fn yaml_soup_never_panics(pieces in proptest::collection::vec(0..12usize, 0..30)) {
            const Y: [&str; 12] = ["version: 1\n", "segments:\n", "  - ", "name: x\n", "    when: true\n", "{", "}",
                "[", "]", "&a ", "*a\n", "---\n"];
            let text: String = pieces.iter().map(|&i| Y[i]).collect();
            let _ = RuleSet::from_yaml("f.yaml", &text);
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}true{}", "(".repeat(1_000), ")".repeat(1_000));
    let e = err(&with_segments(&format!("  - name: x\n    when: '{deep}'\n")));
    assert!(e.starts_with("rules.yaml:6:76: nested deeper than 64 levels"), "{e}");
    let nots = format!("{}true", "!".repeat(1_000));
    assert!(err(&with_segments(&format!("  - name: x\n    when: '{nots}'\n"))).contains("nested deeper than 64"));
    let e = err(&format!("version: 1\nsegments: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)));
    assert!(e.starts_with("rules.yaml:2:"), "{e}");
}

#[test]
fn yaml_pitfalls_in_conditions_get_a_hint() {
    assert_eq!(
        err(&with_segments("  - name: x\n    when: !in_segment(\"buyer\") && consent.sms\n")),
        "rules.yaml:6:11: while scanning a tag, did not find expected whitespace or line break; a condition that \
         starts with `!`, `\"`, `[`, `{`, `&`, `*` or `'` must be quoted as a whole, e.g. when: '!consent.sms'"
    );
    assert!(err(&with_segments("  - name: x\n    when: \"vegan\" in profile.interests\n"))
        .ends_with("must be quoted as a whole, e.g. when: '!consent.sms'"));
}

/// Found by `fuzz/fuzz_targets/rules_parse.rs`: a YAML error at the very end
/// of a file without a final newline, or at a NUL, was reported one line
/// below the file.
#[test]
fn yaml_error_at_the_end_of_the_file_points_into_the_file() {
    assert_eq!(err(std::str::from_utf8(b":\ne").unwrap()), "rules.yaml:2:2: simple key expected");
    let e = err("version: 1\nsegments: [a");
    assert!(e.starts_with("rules.yaml:2:13: "), "{e}");
    // A NUL, which the YAML scanner takes for the end of the input.
    let e = err(std::str::from_utf8(b"[\0").unwrap());
    assert!(e.starts_with("rules.yaml:1:2: "), "{e}");
    // A tag at the end: refused by the tree builder, at the parser's mark.
    let e = err(std::str::from_utf8(b"!").unwrap());
    assert!(e.starts_with("rules.yaml:1:2: YAML anchors"), "{e}");
    // A key with no value at the end of the file: the empty value's position.
    let e = err("version:");
    assert!(e.starts_with("rules.yaml:1:9: "), "{e}");
}
