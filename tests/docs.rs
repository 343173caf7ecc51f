//! The documentation and the editor grammar against the implementation:
//! every ```ebm example in docs/ checks as it claims (and is formatted), the EBNF in
//! docs/language.md is grammar/ebm.pest rule for rule, and the TextMate
//! grammar's word lists cover the language's keywords, types and built-ins.
//! Everything is read from the sources at test time, so a change to the
//! grammar or the built-in tables that the docs miss fails here.

use ebmc::analysis::program::Func;
use ebmc::analysis::schema::Family;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A fenced code block: its info string, first line of content (1-based) and text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some(Block { info: info.trim().to_string(), line: i + 2, text: String::new() });
                }
            }
            Some(mut b) => {
                if trimmed.starts_with("```") {
                    blocks.push(b);
                } else {
                    b.text.push_str(line);
                    b.text.push('\n');
                    open = Some(b);
                }
            }
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    blocks
}

fn doc_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_ebm_example_in_the_docs_checks_as_marked() {
    let mut checked = BTreeMap::new();
    let mut failures = Vec::new();
    for path in doc_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for b in fenced_blocks(&read(&path)) {
            let expect_error = match b.info.as_str() {
                "ebm" => false,
                "ebm,error" => true,
                other if other.starts_with("ebm") => {
                    failures.push(format!("{name}:{}: unknown info string `{other}` (use ebm or ebm,error)", b.line));
                    continue;
                }
                _ => continue,
            };
            *checked.entry(name.clone()).or_insert(0) += 1;
            match (ebmc::check_source(&b.text), expect_error) {
                (Ok(_), false) => {
                    // Examples are what `ebmc fmt` would print, so readers copy the house style.
                    if !ebmc::format_source(&b.text).is_ok_and(|f| f == b.text) {
                        failures.push(format!("{name}:{}: not in the canonical layout of `ebmc fmt`", b.line));
                    }
                }
                (Err(_), true) => {}
                (Ok(_), true) => failures.push(format!("{name}:{}: marked ebm,error but checks clean", b.line)),
                (Err(diags), false) => {
                    let codes: Vec<String> = diags.iter().map(|d| format!("{d:?}")).collect();
                    failures.push(format!("{name}:{}: does not check:\n{}", b.line, codes.join("\n")));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The reference and the tutorial are written around such examples.
    for doc in ["language.md", "tutorial.md"] {
        assert!(checked.get(doc).copied().unwrap_or(0) >= 2, "{doc} has fewer than 2 ebm examples: {checked:?}");
    }
}

/// One rule of a grammar: its body with comments removed.
fn rule_body_tokens(body: &str) -> (Vec<String>, BTreeSet<String>) {
    // Quoted literals (in order) and the names outside quotes.
    let mut literals = Vec::new();
    let mut names = BTreeSet::new();
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            let mut lit = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    lit.push(chars[i]);
                    i += 1;
                }
                lit.push(chars[i]);
                i += 1;
            }
            literals.push(lit);
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            names.insert(chars[start..i].iter().collect());
        } else {
            i += 1;
        }
    }
    (literals, names)
}

/// `name -> body` of every rule of grammar/ebm.pest.
fn pest_rules() -> BTreeMap<String, String> {
    let mut rules = BTreeMap::new();
    for line in read(&root().join("grammar/ebm.pest")).lines() {
        let line = line.trim();
        if line.starts_with("//") || line.is_empty() {
            continue;
        }
        let (name, rest) = line.split_once('=').unwrap_or_else(|| panic!("a pest rule on one line: {line}"));
        let rest = rest.trim_start().trim_start_matches(['_', '@', '$', '!']);
        let body = rest.strip_prefix('{').and_then(|r| r.rfind('}').map(|end| &r[..end]));
        let body = body.unwrap_or_else(|| panic!("a pest rule `name = {{ ... }}`: {line}"));
        rules.insert(name.trim().to_string(), body.to_string());
    }
    assert!(rules.len() > 50, "grammar/ebm.pest parsed into only {} rules", rules.len());
    rules
}

/// `name -> body` of every rule in the ```ebnf blocks of docs/language.md.
fn ebnf_rules() -> BTreeMap<String, String> {
    let mut rules = BTreeMap::new();
    for b in fenced_blocks(&read(&root().join("docs/language.md"))).into_iter().filter(|b| b.info == "ebnf") {
        for line in b.text.lines() {
            let mut line = line.to_string();
            while let (Some(s), Some(e)) = (line.find("(*"), line.find("*)")) {
                line.replace_range(s..e + 2, "");
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (name, body) = line.split_once("::=").unwrap_or_else(|| panic!("an EBNF line `name ::= ...`: {line}"));
            let previous = rules.insert(name.trim().to_string(), body.to_string());
            assert!(previous.is_none(), "EBNF rule `{}` is defined twice", name.trim());
        }
    }
    rules
}

#[test]
fn the_ebnf_in_language_md_is_the_pest_grammar_rule_for_rule() {
    let pest = pest_rules();
    let ebnf = ebnf_rules();
    let pest_names: BTreeSet<&String> = pest.keys().collect();
    let ebnf_names: BTreeSet<&String> = ebnf.keys().collect();
    let missing: Vec<&&String> = pest_names.difference(&ebnf_names).collect();
    let extra: Vec<&&String> = ebnf_names.difference(&pest_names).collect();
    assert!(missing.is_empty(), "pest rules missing from the EBNF in docs/language.md: {missing:?}");
    assert!(extra.is_empty(), "EBNF rules in docs/language.md that grammar/ebm.pest does not have: {extra:?}");
    // Same literals in the same order, and the same rules referred to.
    for (name, body) in &pest {
        let (pest_literals, pest_refs) = rule_body_tokens(body);
        let (ebnf_literals, ebnf_refs) = rule_body_tokens(&ebnf[name]);
        assert_eq!(
            ebnf_literals, pest_literals,
            "rule `{name}`: literals differ between the EBNF and the pest grammar"
        );
        assert_eq!(
            ebnf_refs, pest_refs,
            "rule `{name}`: referenced rules differ between the EBNF and the pest grammar"
        );
    }
}

/// The string literals of the pest rules whose names satisfy `pick`.
fn pest_words(pick: impl Fn(&str) -> bool) -> BTreeSet<String> {
    pest_rules().iter().filter(|(n, _)| pick(n)).flat_map(|(_, body)| rule_body_tokens(body).0).collect()
}

fn grammar() -> serde_json::Value {
    let text = read(&root().join("editors/ebm.tmLanguage.json"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("editors/ebm.tmLanguage.json is not JSON: {e}"))
}

/// The words of every `\b(?:a|b|c)\b` pattern of the repository entry `key`.
fn grammar_words(g: &serde_json::Value, key: &str) -> BTreeSet<String> {
    let patterns = g["repository"][key]["patterns"]
        .as_array()
        .unwrap_or_else(|| panic!("the grammar has no repository entry `{key}` with patterns"));
    let mut words = BTreeSet::new();
    for p in patterns {
        let m = p["match"].as_str().unwrap_or_else(|| panic!("`{key}` pattern without a match: {p}"));
        let list = m
            .strip_prefix(r"\b(?:")
            .and_then(|r| r.strip_suffix(r")\b"))
            .unwrap_or_else(|| panic!(r"`{key}` pattern is not of the form \b(?:a|b)\b: {m}"));
        for w in list.split('|') {
            assert!(
                w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !w.is_empty(),
                "`{key}` pattern has a non-word alternative `{w}`"
            );
            words.insert(w.to_string());
        }
        assert!(p["name"].as_str().is_some_and(|n| n.ends_with(".ebm")), "`{key}` pattern without an .ebm scope");
    }
    words
}

fn assert_same(what: &str, grammar: &BTreeSet<String>, language: &BTreeSet<String>) {
    let missing: Vec<&String> = language.difference(grammar).collect();
    let stale: Vec<&String> = grammar.difference(language).collect();
    assert!(missing.is_empty(), "the TextMate grammar's {what} lack {missing:?}");
    assert!(stale.is_empty(), "the TextMate grammar's {what} list words the language does not have: {stale:?}");
}

#[test]
fn the_textmate_grammar_is_json_and_its_includes_resolve() {
    let g = grammar();
    assert_eq!(g["scopeName"], "source.ebm");
    fn includes(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(s)) = m.get("include") {
                    out.push(s.clone());
                }
                m.values().for_each(|v| includes(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| includes(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    includes(&g, &mut found);
    assert!(found.len() >= 5, "the grammar includes only {found:?}");
    for inc in found {
        let key = inc.strip_prefix('#').unwrap_or_else(|| panic!("include `{inc}` is not a repository reference"));
        assert!(g["repository"].get(key).is_some(), "include `{inc}` names no repository entry");
    }
    // The VS Code extension points at this grammar, under the same scope.
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&root().join("editors/vscode/package.json"))).expect("package.json is JSON");
    let contributed = &manifest["contributes"]["grammars"][0];
    assert_eq!(contributed["scopeName"], "source.ebm");
    let path = root().join("editors/vscode").join(contributed["path"].as_str().expect("a grammar path"));
    let same = read(&path) == read(&root().join("editors/ebm.tmLanguage.json"));
    assert!(same, "the VS Code extension's grammar {} is not editors/ebm.tmLanguage.json", path.display());
    let config = manifest["contributes"]["languages"][0]["configuration"].as_str().expect("a configuration");
    let config: serde_json::Value =
        serde_json::from_str(&read(&root().join("editors/vscode").join(config))).expect("configuration is JSON");
    assert_eq!(config["comments"]["lineComment"], "//");
}

#[test]
fn the_textmate_grammar_knows_every_keyword_and_type_of_the_pest_grammar() {
    let g = grammar();
    let keywords = pest_words(|n| n == "keyword" || n.starts_with("kw_"));
    let types = pest_words(|n| n.starts_with("ty_"));
    assert!(keywords.len() >= 10 && types.len() >= 4, "keywords {keywords:?}, types {types:?}");
    assert_same("keywords", &grammar_words(&g, "keywords"), &keywords);
    assert_same("types", &grammar_words(&g, "types"), &types);
}

/// Every family of built-in calls; the match fails to compile when a family is added.
fn families() -> Vec<Family> {
    let all = [
        Family::Objective,
        Family::Optimizer,
        Family::Schedule,
        Family::Regularizer,
        Family::DataSource,
        Family::TestSplit,
        Family::Initializer,
        Family::ConstBuilder,
        Family::Net,
        Family::Sampler,
    ];
    for f in all {
        match f {
            Family::Objective
            | Family::Optimizer
            | Family::Schedule
            | Family::Regularizer
            | Family::DataSource
            | Family::TestSplit
            | Family::Initializer
            | Family::ConstBuilder
            | Family::Net
            | Family::Sampler => {}
        }
    }
    all.to_vec()
}

#[test]
fn the_textmate_grammar_knows_every_builtin_the_checker_knows() {
    let g = grammar();
    let mut builtins: BTreeSet<String> = Func::ALL.iter().map(|f| f.name().to_string()).collect();
    for family in families() {
        builtins.extend(family.names().into_iter().map(str::to_string));
    }
    assert!(builtins.len() > 40, "only {} built-ins found", builtins.len());
    assert_same("built-ins", &grammar_words(&g, "builtins"), &builtins);
}

#[test]
fn language_md_documents_every_builtin_function_and_call() {
    let text = read(&root().join("docs/language.md"));
    let mut missing: Vec<String> = Func::ALL
        .iter()
        .map(|f| f.name())
        .filter(|n| !text.contains(&format!("| `{n}` |")))
        .map(String::from)
        .collect();
    for family in families() {
        for sig in family.signatures() {
            if !text.contains(&format!("`{}`", sig.name)) && !text.contains(&format!("`{}(", sig.name)) {
                missing.push(format!("{} `{}`", family.noun(), sig.name));
            }
            for opt in sig.options {
                if !text.contains(&format!("`{}", opt.name)) && !text.contains(&format!(" {}:", opt.name)) {
                    missing.push(format!("option `{}` of `{}`", opt.name, sig.name));
                }
            }
        }
    }
    assert!(missing.is_empty(), "docs/language.md does not mention {missing:?}");
}
