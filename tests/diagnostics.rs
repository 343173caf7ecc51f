//! Every broken file under `tests/errors/` is compiled and its rendered
//! diagnostics snapshotted. Each must fail with at least one coded error
//! (or, for `*warning*` files, produce a warning), and JSON output must agree.

use std::fs;

#[test]
fn broken_files_render_diagnostics() {
    insta::glob!("errors", "*.ebm", |path| {
        let source = fs::read_to_string(path).unwrap();
        let file_name = format!("tests/errors/{}", path.file_name().unwrap().to_string_lossy());
        // Through check and then plan: the first stage that objects is snapshotted.
        let diagnostics = match ebmc::compile(&source) {
            Ok(c) => match ebmc::plan(&c.program) {
                Ok((_, plan_warnings)) => {
                    assert!(file_name.contains("warning"), "{file_name} compiled and planned cleanly but should not");
                    let all: Vec<_> = c.warnings.into_iter().chain(plan_warnings).collect();
                    assert!(!all.is_empty(), "{file_name} should warn");
                    all
                }
                Err(d) => d,
            },
            Err(d) => d,
        };
        assert!(!diagnostics.is_empty());
        for d in &diagnostics {
            assert!(d.code.len() == 5 && (d.code.starts_with('E') || d.code.starts_with('W')), "bad code {}", d.code);
            assert!(d.labels.iter().any(|l| l.primary), "{file_name}: {} has no primary label", d.code);
            for l in &d.labels {
                assert!(l.span.start <= l.span.end && l.span.end <= source.len());
            }
        }
        let json = ebmc::front::diagnostic::render_json(&file_name, &source, &diagnostics);
        assert_eq!(json.lines().count(), diagnostics.len());
        for line in json.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["line"].as_u64().unwrap() >= 1);
        }
        insta::assert_snapshot!(ebmc::front::diagnostic::render_plain(&file_name, &source, &diagnostics));
    });
}

#[test]
fn many_errors_are_reported_in_one_run() {
    let source = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/errors/many_errors.ebm")).unwrap();
    let diagnostics = ebmc::compile(&source).unwrap_err();
    let codes: Vec<&str> = diagnostics.iter().map(|d| d.code).collect();
    assert!(codes.iter().filter(|c| c.starts_with('E')).count() >= 4, "{codes:?}");
    // Unused-name warnings are held back while a model has errors: a failed
    // expression leaves the names in it unmarked.
    assert!(!codes.contains(&"W0001"), "{codes:?}");
}

#[test]
fn did_you_mean_suggests_close_names_only() {
    use ebmc::messages::did_you_mean;
    assert_eq!(did_you_mean("Wt", ["W", "b", "c"]), Some("W"));
    assert_eq!(did_you_mean("sigmod", ["sigmoid", "softplus"]), Some("sigmoid"));
    assert_eq!(did_you_mean("momentun", ["lr", "momentum"]), Some("momentum"));
    assert_eq!(did_you_mean("zzz", ["alpha", "beta"]), None);
}
