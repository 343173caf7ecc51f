//! The parser and checker never panic: on arbitrary text, and on zoo files
//! with random edits (the inputs a person mid-typing produces).

use proptest::prelude::*;
use std::fs;

fn zoo() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ebm"))
        .collect();
    files.sort();
    files.into_iter().map(|p| fs::read_to_string(p).unwrap()).collect()
}

fn compile_and_render(source: &str) {
    if let Err(d) = ebmc::compile(source) {
        let _ = ebmc::front::diagnostic::render_plain("input.ebm", source, &d);
        let _ = ebmc::front::diagnostic::render_json("input.ebm", source, &d);
    }
    if let Ok(formatted) = ebmc::format_source(source) {
        // Whatever parses must format to something that parses to the same tree.
        let a = ebmc::front::parse::source_to_ast(source).unwrap().outline();
        let b = ebmc::front::parse::source_to_ast(&formatted).expect("formatted output parses").outline();
        assert_eq!(a, b);
    }
}

const TOKENS: &[&str] = &[
    "model",
    "train",
    "visible",
    "hidden",
    "param",
    "const",
    "net",
    "energy",
    "sample",
    "in",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ";",
    ":",
    ",",
    "=",
    "->",
    "@",
    "^",
    "-",
    "+",
    "*",
    "/",
    ".T",
    "binary",
    "real",
    "spin",
    "categorical",
    "v",
    "W",
    "reshape",
    "flatten",
    "sum",
    "axis",
    "convnet",
    "kernel",
    "0",
    "1.5",
    "1e99999",
    "99999999999999999999999",
    "\"s\"",
    "//c\n",
    "\n",
    "é",
    "",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        compile_and_render(&s);
    }

    #[test]
    fn token_soup_never_panics(tokens in proptest::collection::vec(proptest::sample::select(TOKENS), 0..60)) {
        compile_and_render(&tokens.join(" "));
    }

    #[test]
    fn mutated_zoo_files_never_panic(
        file in 0usize..64,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, proptest::sample::select(TOKENS)), 1..6),
    ) {
        let files = zoo();
        let mut text = files[file % files.len()].clone();
        for (at, kind, token) in edits {
            let mut pos = at.index(text.len() + 1);
            while !text.is_char_boundary(pos) { pos -= 1; }
            match kind {
                0 => text.insert_str(pos, token),
                1 => {
                    let mut end = (pos + 1 + token.len()).min(text.len());
                    while !text.is_char_boundary(end) { end -= 1; }
                    text.replace_range(pos..end.max(pos), "");
                }
                _ => text.truncate(pos),
            }
        }
        compile_and_render(&text);
    }
}
