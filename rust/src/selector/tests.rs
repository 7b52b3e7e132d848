//! Grammar, semantics, errors, limits and canonical rendering of selectors.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::parser::parse_unbounded;
use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sel(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

fn matches(text: &str, pairs: &[(&str, &str)]) -> bool {
    sel(text).matches(&labels(pairs))
}

fn error(text: &str) -> ParseError {
    match Selector::parse(text) {
        Ok(s) => panic!("{text:?} should not parse, got {s}"),
        Err(e) => e,
    }
}

fn s(value: &str) -> String {
    value.to_owned()
}

// ---- grammar and semantics ----

#[test]
fn all_global_and_empty_match_everything() {
    for text in [
        "all()",
        "global()",
        "",
        "   ",
        "\t\n",
        "all( )",
        " all ( ) ",
        "(all())",
    ] {
        let selector = sel(text);
        assert!(selector.is_all(), "{text:?}");
        assert!(selector.matches(&labels(&[])));
        assert!(selector.matches(&labels(&[("a", "b")])));
    }
    assert_eq!(sel("").expr(), &Expr::All);
    assert_eq!(sel("global()").expr(), &Expr::Global);
    assert!(!sel("all() && a == 'b'").is_all());
}

#[test]
fn equality_does_not_match_an_absent_label() {
    assert!(matches("a == 'x'", &[("a", "x")]));
    assert!(!matches("a == 'x'", &[("a", "y")]));
    assert!(!matches("a == 'x'", &[]));
    assert!(!matches("a == ''", &[]));
    assert!(matches("a == ''", &[("a", "")]));
}

#[test]
fn inequality_matches_an_absent_label() {
    assert!(matches("a != 'x'", &[]));
    assert!(matches("a != 'x'", &[("a", "y")]));
    assert!(!matches("a != 'x'", &[("a", "x")]));
}

#[test]
fn in_and_not_in() {
    assert!(matches("a in {'x', 'y'}", &[("a", "y")]));
    assert!(!matches("a in {'x', 'y'}", &[("a", "z")]));
    assert!(!matches("a in {'x', 'y'}", &[]));
    assert!(!matches("a in {}", &[("a", "x")]));
    assert!(matches("a not in {'x', 'y'}", &[("a", "z")]));
    assert!(!matches("a not in {'x', 'y'}", &[("a", "x")]));
    assert!(matches("a not in {'x', 'y'}", &[]));
    assert!(matches("a not in {}", &[]));
    assert!(matches("a not in {}", &[("a", "x")]));
    // A long set takes the binary-search path.
    let long = format!(
        "a in {{{}}}",
        (0..20)
            .map(|i| format!("'v{i}'"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(matches(&long, &[("a", "v13")]));
    assert!(!matches(&long, &[("a", "v20")]));
}

#[test]
fn has_and_not_has() {
    assert!(matches("has(a)", &[("a", "")]));
    assert!(!matches("has(a)", &[("b", "")]));
    assert!(matches("!has(a)", &[("b", "")]));
    assert!(!matches("!has(a)", &[("a", "x")]));
    assert!(matches("has( a )", &[("a", "")]));
}

#[test]
fn string_operators_do_not_match_an_absent_label() {
    assert!(matches("a contains 'ell'", &[("a", "hello")]));
    assert!(!matches("a contains 'xyz'", &[("a", "hello")]));
    assert!(!matches("a contains ''", &[]));
    assert!(matches("a contains ''", &[("a", "")]));
    assert!(matches("a starts with 'he'", &[("a", "hello")]));
    assert!(!matches("a starts with 'lo'", &[("a", "hello")]));
    assert!(!matches("a starts with ''", &[]));
    assert!(matches("a ends with 'lo'", &[("a", "hello")]));
    assert!(!matches("a ends with 'he'", &[("a", "hello")]));
    assert!(!matches("a ends with ''", &[]));
    assert!(matches("a starts   with 'h'", &[("a", "hello")]));
}

#[test]
fn not_binds_tighter_than_and_which_binds_tighter_than_or() {
    // a || b && c is a || (b && c)
    assert_eq!(
        sel("has(a) || has(b) && has(c)"),
        sel("has(a) || (has(b) && has(c))")
    );
    assert!(matches("has(a) || has(b) && has(c)", &[("a", "")]));
    assert!(!matches("(has(a) || has(b)) && has(c)", &[("a", "")]));
    // !a && b is (!a) && b
    assert_eq!(
        sel("!has(a) && has(b)").expr(),
        &Expr::and(vec![Expr::negate(Expr::Has(s("a"))), Expr::Has(s("b"))])
    );
    assert!(matches("!has(a) && has(b)", &[("b", "")]));
    assert!(!matches("!(has(a) && has(b))", &[("a", ""), ("b", "")]));
    assert!(matches("!(has(a) && has(b))", &[("b", "")]));
    // ! applies to a whole comparison.
    assert_eq!(
        sel("!a == 'x'").expr(),
        &Expr::negate(Expr::Eq(s("a"), s("x")))
    );
    assert!(matches("!!has(a)", &[("a", "")]));
}

#[test]
fn and_and_or_are_flattened() {
    let flat = Expr::And(vec![
        Expr::Has(s("a")),
        Expr::Has(s("b")),
        Expr::Has(s("c")),
    ]);
    assert_eq!(sel("has(a) && has(b) && has(c)").expr(), &flat);
    assert_eq!(sel("has(a) && (has(b) && has(c))").expr(), &flat);
    assert_eq!(sel("(has(a) && has(b)) && has(c)").expr(), &flat);
    let or = Expr::Or(vec![
        Expr::Has(s("a")),
        Expr::Has(s("b")),
        Expr::Has(s("c")),
    ]);
    assert_eq!(sel("has(a) || (has(b) || has(c))").expr(), &or);
}

#[test]
fn single_and_double_quotes_without_escapes() {
    assert_eq!(sel("a == 'x'"), sel("a == \"x\""));
    assert!(matches("a == 'say \"hi\"'", &[("a", "say \"hi\"")]));
    assert!(matches("a == \"it's\"", &[("a", "it's")]));
    assert!(matches("a == 'back\\slash'", &[("a", "back\\slash")]));
    assert!(matches("a == 'x && y || (z)'", &[("a", "x && y || (z)")]));
    assert!(matches("a == 'ünï cödé'", &[("a", "ünï cödé")]));
    assert!(matches("a in {\"x\", 'y'}", &[("a", "y")]));
}

#[test]
fn whitespace_is_optional_between_tokens() {
    let expected = sel("a == 'x' && b in {'y', 'z'} || !has(c)");
    for text in [
        "a=='x'&&b in{'y','z'}||!has(c)",
        "  a  ==  'x'  &&  b  in  {  'y'  ,  'z'  }  ||  !  has  (  c  )  ",
        "a\t==\n'x'&&b in {'y','z'}||!has(c)",
    ] {
        assert_eq!(sel(text), expected, "{text:?}");
    }
    assert!(matches("a contains'x'", &[("a", "x")]));
    assert!(matches("a not in{}", &[]));
    assert!(matches("a starts with'x'", &[("a", "x")]));
}

#[test]
fn label_keys_may_contain_slash_dot_dash_underscore() {
    assert!(matches(
        "projectcalico.org/namespace == 'ns'",
        &[("projectcalico.org/namespace", "ns")]
    ));
    assert!(matches("has(a-b_c.d/e)", &[("a-b_c.d/e", "")]));
    assert!(matches("has(_)", &[("_", "")]));
    assert!(matches("has(/)", &[("/", "")]));
    assert!(matches("9x == 'y'", &[("9x", "y")]));
    assert!(matches(
        "projectcalico.org/network-interface == 'eth0'",
        &[("projectcalico.org/network-interface", "eth0")]
    ));
}

#[test]
fn keywords_are_ordinary_keys_where_a_key_is_expected() {
    assert!(matches("in == 'x'", &[("in", "x")]));
    assert!(matches("has == 'x'", &[("has", "x")]));
    assert!(matches("all in {'x'}", &[("all", "x")]));
    assert!(matches("not not in {'x'}", &[]));
    assert!(matches("has(has)", &[("has", "")]));
    assert!(matches("contains contains 'x'", &[("contains", "x")]));
}

#[test]
fn one_word_operators_are_calicos_spellings_of_the_two_word_ones() {
    // Calico's tokenizer takes `startswith`, `endswith` and `notin` as the same operators.
    assert!(matches("a startswith 'he'", &[("a", "hello")]));
    assert!(!matches("a startswith 'lo'", &[("a", "hello")]));
    assert!(matches("a endswith 'lo'", &[("a", "hello")]));
    assert!(!matches("a endswith 'he'", &[("a", "hello")]));
    assert!(matches("a notin {'x'}", &[("a", "y")]));
    assert!(!matches("a notin {'x'}", &[("a", "x")]));
    assert!(matches("a notin {'x'}", &[]));
    assert!(matches("a startswith'he'", &[("a", "hello")]));
    assert!(matches("a notin{}", &[]));
    for (one, two) in [
        ("a startswith 'x'", "a starts with 'x'"),
        ("a endswith 'x'", "a ends with 'x'"),
        ("a notin {'y', 'x'}", "a not in {'x', 'y'}"),
    ] {
        assert_eq!(sel(one).expr(), sel(two).expr(), "{one:?}");
        assert_eq!(sel(one).canonical(), sel(two).canonical(), "{one:?}");
    }
    // Keys where a key is expected, as the two-word keywords are.
    assert!(matches("startswith == 'x'", &[("startswith", "x")]));
    assert!(matches("notin notin {'x'}", &[]));
}

#[test]
fn one_word_operators_need_a_word_boundary_and_their_exact_spelling() {
    for text in [
        "a startswithx 'x'",
        "a startswith-x 'x'",
        "a StartsWith 'x'",
        "a starts_with 'x'",
        "a notinx {}",
        "a NOTIN {}",
        "a endswith {'x'}",
        "a notin 'x'",
    ] {
        assert!(Selector::parse(text).is_err(), "{text:?} should not parse");
    }
}

#[test]
fn key_length_limit() {
    let key = "k".repeat(MAX_KEY_LENGTH);
    assert!(matches(&format!("has({key})"), &[(&key, "")]));
    let long = "k".repeat(MAX_KEY_LENGTH + 1);
    let e = error(&format!("a == 'b' || {long} == 'x'"));
    assert_eq!(e.position, 12);
    assert_eq!(
        e.message,
        "label key at position 12 is 513 characters long; the limit is 512"
    );
}

#[test]
fn in_sets_are_sorted_and_deduplicated() {
    assert_eq!(
        sel("a in {'b', 'a', 'b'}").expr(),
        &Expr::In(s("a"), vec![s("a"), s("b")])
    );
    assert_eq!(sel("a in {'b', 'a', 'b'}"), sel("a in {'a','b'}"));
}

// ---- errors ----

#[test]
fn errors_carry_a_message_and_character_position() {
    let cases: &[(&str, &str, usize)] = &[
        (
            "a == 'b' && == 'c'",
            "expected a label key at position 12",
            12,
        ),
        ("a == 'b' && ", "expected a label key at position 12", 12),
        (
            "a == 'b' c",
            "unexpected input after the end of the selector at position 9",
            9,
        ),
        (
            "a == 'b')",
            "unexpected input after the end of the selector at position 8",
            8,
        ),
        ("a == 'b", "unterminated string starting at position 5", 5),
        (
            "a in {'x', \"y}",
            "unterminated string starting at position 11",
            11,
        ),
        (
            "a",
            "expected an operator (==, !=, in, not in, contains, starts with, ends with) at position 1",
            1,
        ),
        (
            "a b 'c'",
            "expected an operator (==, !=, in, not in, contains, starts with, ends with) at position 2",
            2,
        ),
        ("a ==", "expected a quoted string at position 4", 4),
        ("a == b", "expected a quoted string at position 5", 5),
        ("a = 'b'", "expected '==' at position 2", 2),
        ("has(a) & has(b)", "expected '&&' at position 7", 7),
        ("has(a) | has(b)", "expected '||' at position 7", 7),
        ("a @ 'b'", "unexpected character '@' at position 2", 2),
        ("(has(a)", "expected ')' at position 7", 7),
        ("has()", "expected a label key at position 4", 4),
        ("has(a", "expected ')' at position 5", 5),
        ("all(", "expected ')' at position 4", 4),
        ("global(x)", "expected ')' at position 7", 7),
        ("a in 'x'", "expected '{' at position 5", 5),
        ("a in {'x' 'y'}", "expected ',' or '}' at position 10", 10),
        ("a in {'x',}", "expected a quoted string at position 10", 10),
        ("a not 'x'", "expected 'in' after 'not' at position 6", 6),
        (
            "a starts 'x'",
            "expected 'with' after 'starts' at position 9",
            9,
        ),
        (
            "a ends on 'x'",
            "expected 'with' after 'ends' at position 7",
            7,
        ),
        ("!", "expected a label key at position 1", 1),
        ("()", "expected a label key at position 1", 1),
        ("a != ", "expected a quoted string at position 5", 5),
        (
            "foo(x)",
            "expected an operator (==, !=, in, not in, contains, starts with, ends with) at position 3",
            3,
        ),
    ];
    for &(text, message, position) in cases {
        let e = error(text);
        assert_eq!(
            (e.message.as_str(), e.position),
            (message, position),
            "{text:?}"
        );
        assert_eq!(e.to_string(), message);
    }
}

#[test]
fn positions_count_characters_not_bytes() {
    // "é" is two bytes but one character.
    let e = error("a == 'é' b");
    assert_eq!(e.position, 9);
    assert_eq!(
        e.message,
        "unexpected input after the end of the selector at position 9"
    );
}

#[test]
fn errors_are_reported_in_reading_order() {
    // The later unterminated string is never reached.
    assert_eq!(error("a == 'b' c 'oops").position, 9);
}

// ---- limits ----

fn assert_quick(started: Instant) {
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn length_limit_is_checked_before_parsing() {
    let at_limit = format!("a == '{}'", "x".repeat(MAX_LENGTH - 7));
    assert_eq!(at_limit.len(), MAX_LENGTH);
    assert!(Selector::parse(&at_limit).is_ok());
    let e = error(&format!("a == '{}'", "x".repeat(MAX_LENGTH - 6)));
    assert_eq!(e.message, "selector is 4097 bytes long; the limit is 4096");
    assert_eq!(e.position, MAX_LENGTH);

    let started = Instant::now();
    let e = error(&"x".repeat(1 << 20));
    assert_eq!(
        e.message,
        "selector is 1048576 bytes long; the limit is 4096"
    );
    assert_quick(started);
}

#[test]
fn length_limit_counts_bytes_and_reports_a_character_position() {
    // 2,100 two-byte characters: 4,200 bytes; 2,048 of them fit.
    let e = error(&"é".repeat(2100));
    assert_eq!(e.message, "selector is 4200 bytes long; the limit is 4096");
    assert_eq!(e.position, 2048);
}

#[test]
fn depth_limit_counts_parentheses_and_negations() {
    let ok = format!("{}has(a){}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(Selector::parse(&ok).is_ok());
    let too_deep = format!(
        "{}has(a){}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    let e = error(&too_deep);
    assert_eq!(
        e.message,
        "selector nests deeper than 64 levels at position 64"
    );
    assert_eq!(e.position, 64);

    assert!(matches(
        &format!("{}has(a)", "!".repeat(MAX_DEPTH)),
        &[("a", "")]
    ));
    let e = error(&format!("{}has(a)", "!".repeat(MAX_DEPTH + 1)));
    assert_eq!(
        e.message,
        "selector nests deeper than 64 levels at position 64"
    );

    // Mixed: 32 "!(" pairs are 64 levels; one more "!" is too many.
    let mixed = format!("{}has(a){}", "!(".repeat(32), ")".repeat(32));
    assert!(Selector::parse(&mixed).is_ok());
    let e = error(&format!("!{mixed}"));
    assert_eq!(e.position, 64);

    // Siblings do not add up: depth is nesting, not a count.
    let wide = (0..200)
        .map(|_| "(!has(a))")
        .collect::<Vec<_>>()
        .join(" || ");
    assert!(Selector::parse(&wide).is_ok());
}

#[test]
fn huge_nesting_is_rejected_quickly_without_overflowing_the_stack() {
    for text in [
        "(".repeat(100_000),
        "!".repeat(100_000),
        "!(".repeat(50_000),
    ] {
        let started = Instant::now();
        // Through the public entry point the length limit catches it first...
        assert!(error(&text).message.starts_with("selector is "));
        // ...and the depth limit alone also stops it, before recursing any deeper.
        let e = parse_unbounded(&text).expect_err("too deep");
        assert_eq!(
            e.message,
            "selector nests deeper than 64 levels at position 64"
        );
        assert_quick(started);
    }
}

// ---- canonical rendering ----

#[test]
fn canonical_rendering() {
    let cases = [
        ("", "all()"),
        ("  global( ) ", "global()"),
        ("has( a )", "has(a)"),
        ("a=='x'", "a == \"x\""),
        ("a!='x'", "a != \"x\""),
        ("a in {'y','x','y'}", "a in {\"x\", \"y\"}"),
        ("a not in {}", "a not in {}"),
        ("a contains 'x'", "a contains \"x\""),
        ("a starts   with 'x'", "a starts with \"x\""),
        ("a startswith 'x'", "a starts with \"x\""),
        ("a endswith 'x'", "a ends with \"x\""),
        ("a notin {'x'}", "a not in {\"x\"}"),
        ("a ends with 'x'", "a ends with \"x\""),
        ("a == 'say \"hi\"'", "a == 'say \"hi\"'"),
        ("((has(a)))", "has(a)"),
        (
            "has(a) && (has(b) || has(c))",
            "has(a) && (has(b) || has(c))",
        ),
        ("(has(a) && has(b)) || has(c)", "has(a) && has(b) || has(c)"),
        ("!(has(a) || has(b))", "!(has(a) || has(b))"),
        ("!(!has(a))", "!!has(a)"),
        ("!(a == 'x')", "!a == \"x\""),
        ("has(a) && (has(b) && has(c))", "has(a) && has(b) && has(c)"),
    ];
    for (text, canonical) in cases {
        let selector = sel(text);
        assert_eq!(selector.canonical(), canonical, "{text:?}");
        assert_eq!(
            sel(canonical).expr(),
            selector.expr(),
            "{canonical:?} re-parses"
        );
    }
}

#[test]
fn equal_trees_render_identically() {
    assert_eq!(
        sel("a == 'x' && b in {'2','1'}").canonical(),
        sel("(a==\"x\")&&(b in {\"1\",\"2\",'1'})").canonical()
    );
}

#[test]
fn rendering_never_nests_deeper_than_the_source() {
    let deep = format!("{}has(a){}", "(!".repeat(32), ")".repeat(32));
    let selector = sel(&deep);
    assert_eq!(sel(selector.canonical()), selector);
}

/// Label keys and values from small alphabets, so that generated selectors do match.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(s("a")),
        Just(s("b")),
        Just(s("app.kubernetes.io/name")),
        Just(s("x-y_z")),
        Just(s("in"))
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof!["[abc]{0,3}", "[ab ']{0,3}", "[ab\"]{0,3}", Just(s("ü&&|")),]
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(Expr::All),
        Just(Expr::Global),
        key().prop_map(Expr::Has),
        (key(), value()).prop_map(|(k, v)| Expr::Eq(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::Ne(k, v)),
        (key(), prop::collection::vec(value(), 0..4)).prop_map(|(k, vs)| Expr::in_set(k, vs)),
        (key(), prop::collection::vec(value(), 0..4)).prop_map(|(k, vs)| Expr::not_in_set(k, vs)),
        (key(), value()).prop_map(|(k, v)| Expr::Contains(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::StartsWith(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::EndsWith(k, v)),
    ]
}

/// Normalised trees, built through the constructors the parser uses.
fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(Expr::negate),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::and),
            prop::collection::vec(inner, 2..4).prop_map(Expr::or),
        ]
    })
}

fn label_set() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(key(), value(), 0..4)
}

proptest! {
    #[test]
    fn rendering_parses_back_to_the_same_tree(expr in expr()) {
        let rendered = expr.to_string();
        let parsed = parse(&rendered).map_err(|e| TestCaseError::fail(format!("{rendered:?}: {e}")))?;
        prop_assert_eq!(&parsed, &expr, "{}", rendered);
        prop_assert_eq!(parsed.to_string(), rendered);
    }

    #[test]
    fn rendering_preserves_meaning(expr in expr(), labels in label_set()) {
        let parsed = parse(&expr.to_string()).expect("renders to a valid selector");
        prop_assert_eq!(parsed.matches(&labels), expr.matches(&labels));
    }

    #[test]
    fn any_text_never_panics(text in "\\PC{0,200}") {
        // Any printable text at all, not only the grammar's alphabet: refused or parsed, never a panic.
        if let Ok(selector) = Selector::parse(&text) {
            prop_assert_eq!(Selector::parse(selector.canonical()).ok(), Some(selector));
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[a-c()!&|=' {},.in ]{0,40}") {
        if let Ok(selector) = Selector::parse(&text) {
            let reparsed = Selector::parse(selector.canonical());
            prop_assert_eq!(reparsed.ok(), Some(selector));
        }
    }
}

// ---- requirements: what every match must have ----

fn requirement(text: &str) -> Option<Vec<Term>> {
    sel(text).requirement()
}

fn label(key: &str, value: &str) -> Term {
    Term::Label(s(key), s(value))
}

#[test]
fn requirement_of_leaves() {
    assert_eq!(requirement("app == 'web'"), Some(vec![label("app", "web")]));
    assert_eq!(
        requirement("app in {'b', 'a'}"),
        Some(vec![label("app", "a"), label("app", "b")])
    );
    for text in [
        "has(app)",
        "app contains 'w'",
        "app starts with 'w'",
        "app ends with 'w'",
    ] {
        assert_eq!(requirement(text), Some(vec![Term::Key(s("app"))]), "{text}");
    }
    // `k in {}` matches nothing, so it requires one of nothing.
    assert_eq!(requirement("app in {}"), Some(vec![]));
    for text in [
        "",
        "all()",
        "global()",
        "app != 'web'",
        "app not in {'web'}",
        "!has(app)",
        "!(app == 'web')",
    ] {
        assert_eq!(requirement(text), None, "{text:?}");
    }
}

#[test]
fn requirement_of_and_takes_the_more_selective_side() {
    assert_eq!(
        requirement("has(tier) && app == 'web'"),
        Some(vec![label("app", "web")])
    );
    assert_eq!(
        requirement("app in {'a', 'b', 'c'} && env == 'prod'"),
        Some(vec![label("env", "prod")])
    );
    assert_eq!(
        requirement("tier != 'x' && has(app)"),
        Some(vec![Term::Key(s("app"))])
    );
    assert_eq!(requirement("tier != 'x' && !has(app)"), None);
}

#[test]
fn requirement_by_weighs_and_operands_by_the_given_cost() {
    // `env` is on half the endpoints, each `app` on a tenth.
    let cost = |term: &Term| match term {
        Term::Label(key, _) if key == "env" => 50,
        Term::Label(..) => 10,
        Term::Key(_) => 100,
    };
    let text = "app in {'a', 'b'} && env == 'prod'";
    assert_eq!(
        sel(text).requirement_by(&cost),
        Some(vec![label("app", "a"), label("app", "b")])
    );
    assert_eq!(requirement(text), Some(vec![label("env", "prod")]));
    // Ties go to the statically more selective side, then to the first.
    assert_eq!(
        sel("has(x) && y == '1'").requirement_by(&|_| 0),
        Some(vec![label("y", "1")])
    );
    assert_eq!(
        sel("x == '1' && y == '1'").requirement_by(&|_| 0),
        Some(vec![label("x", "1")])
    );
}

#[test]
fn requirement_of_or_is_the_union_only_when_every_side_has_one() {
    assert_eq!(
        requirement("app == 'web' || has(db) || app == 'web'"),
        Some(vec![label("app", "web"), Term::Key(s("db"))])
    );
    assert_eq!(requirement("app == 'web' || tier != 'x'"), None);
    assert_eq!(
        requirement("(a == '1' && b != '2') || c in {'3'}"),
        Some(vec![label("a", "1"), label("c", "3")])
    );
}

#[test]
fn keys_are_every_key_read_sorted_once() {
    assert_eq!(
        sel("!(b == '1' || has(a)) && c not in {'x'} && b starts with 'y'").keys(),
        ["a", "b", "c"]
    );
    assert!(sel("all()").keys().is_empty());
}

proptest! {
    // Random labels rarely satisfy a random `==`, so look at many cases.
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn every_match_satisfies_a_term_of_the_requirement(expr in expr(), labels in label_set()) {
        if let Some(terms) = expr.requirement() && expr.matches(&labels) {
            let satisfied = terms.iter().any(|term| match term {
                Term::Label(k, v) => labels.get(k) == Some(v),
                Term::Key(k) => labels.contains_key(k),
            });
            prop_assert!(satisfied, "{} matches {:?} but none of {:?}", expr, labels, terms);
        }
    }
}

proptest! {
    #[test]
    fn only_the_keys_read_decide_a_match(expr in expr(), labels in label_set(), other in label_set()) {
        // Overwrite every key the expression does not read: the match must not change.
        let keys = expr.keys();
        let mut mixed: BTreeMap<String, String> =
            other.into_iter().filter(|(k, _)| !keys.contains(&k.as_str())).collect();
        mixed.extend(labels.iter().filter(|(k, _)| keys.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())));
        prop_assert_eq!(expr.matches(&mixed), expr.matches(&labels));
    }
}
