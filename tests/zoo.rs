//! Every model in `models/` goes through every stage: parse (AST outline
//! snapshot), check (no errors, no warnings), factor graph and plan
//! (snapshots, deterministic), and fmt (idempotent, meaning-preserving,
//! comment-preserving, and the zoo is already formatted).

use std::fs;

#[test]
fn zoo_models_through_every_stage() {
    insta::glob!("../models", "**/*.ebm", |path| {
        let source = fs::read_to_string(path).unwrap();
        let name = path.display().to_string();

        let ast = ebmc::front::parse::source_to_ast(&source).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        insta::assert_snapshot!("ast", ast.outline());

        let compiled = ebmc::compile(&source)
            .unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain(&name, &source, &d)));
        assert!(
            compiled.warnings.is_empty(),
            "{}",
            ebmc::front::diagnostic::render_plain(&name, &source, &compiled.warnings)
        );

        let (plans, _warnings) = ebmc::plan(&compiled.program)
            .unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain(&name, &source, &d)));
        let mut graph_text = String::new();
        let mut plan_text = String::new();
        for (model, plan) in compiled.program.models.values().zip(&plans) {
            let graph = ebmc::analysis::graph::program_to_graph(model);
            graph_text.push_str(&graph.to_text(&plan.colour_classes()));
            plan_text.push_str(&plan.to_text());
        }
        insta::assert_snapshot!("graph", graph_text);
        let mut ir_text = String::new();
        for model in compiled.program.models.values() {
            let lowered = ebmc::ir::program_to_ir(model);
            let mut roots = lowered.energies.clone();
            roots.push(("total".into(), lowered.total));
            ir_text.push_str(&format!("model {}\n{}", model.name, lowered.ir.listing(&roots)));
        }
        insta::assert_snapshot!("ir", ir_text);
        insta::assert_snapshot!("plan", plan_text);
        // Planning twice gives byte-identical JSON.
        let again = ebmc::plan(&compiled.program).unwrap().0;
        assert_eq!(serde_json::to_string(&plans).unwrap(), serde_json::to_string(&again).unwrap());

        let formatted = ebmc::format_source(&source).unwrap();
        assert_eq!(formatted, source, "{name} is not in canonical format");
        let reparsed = ebmc::front::parse::source_to_ast(&formatted).unwrap();
        assert_eq!(reparsed.outline(), ast.outline(), "fmt changed the meaning of {name}");
        let texts = |f: &ebmc::front::ast::File| f.comments.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
        assert_eq!(texts(&reparsed), texts(&ast), "fmt lost or reordered comments in {name}");
    });
}

/// A deliberately messy file: fmt must produce the canonical layout, keep
/// every comment in order, keep the tree, and be idempotent.
#[test]
fn fmt_canonicalises_messy_layout() {
    let messy = "// header\n\n\n model   m{visible v:binary[4] ;   // units\n\n\n\n  param b:real[4]=zeros;\n// before energy\nenergy e=-((b@v))+ -(2^-1)*sum((v)) ; sample{v:gibbs;}\n// end of model\n}\ntrain m{data=bars_and_stripes( size : 2 )->(v);objective=cd(k:1);}\n// trailing\n";
    let once = ebmc::format_source(messy).unwrap();
    insta::assert_snapshot!(once);
    let twice = ebmc::format_source(&once).unwrap();
    assert_eq!(once, twice);
    let before = ebmc::front::parse::source_to_ast(messy).unwrap();
    let after = ebmc::front::parse::source_to_ast(&once).unwrap();
    assert_eq!(before.outline(), after.outline());
    assert_eq!(before.comments.len(), after.comments.len());
}

/// Parenthesisation follows precedence and associativity exactly.
#[test]
fn precedence_and_associativity() {
    let cases = [
        ("a - b - c", "(- (- a b) c)"),
        ("a - (b - c)", "(- a (- b c))"),
        ("a ^ b ^ c", "(^ a (^ b c))"),
        ("-x ^ 2", "(neg (^ x 2))"),
        ("(-x) ^ 2", "(^ (neg x) 2)"),
        ("a + b * c", "(+ a (* b c))"),
        ("v @ W @ h", "(@ (@ v W) h)"),
        ("-v @ W", "(@ (neg v) W)"),
        ("a * b / c", "(/ (* a b) c)"),
        ("W.T @ v", "(@ (T W) v)"),
        ("2 ^ -1", "(^ 2 (neg 1))"),
        ("f(x, k: 2)", "(call f x k: 2)"),
    ];
    for (text, outline) in cases {
        let source = format!("model m {{ energy e = {text}; }}");
        let ast = ebmc::front::parse::source_to_ast(&source).unwrap();
        let ebmc::front::ast::Item::Model(m) = &ast.items[0] else { panic!() };
        let ebmc::front::ast::ModelStmt::Energy(e) = &m.stmts[0] else { panic!() };
        assert_eq!(e.expr.outline(), outline, "{text}");
        // Printing and re-parsing keeps the tree.
        let printed = ebmc::front::format::expr(&e.expr);
        let again = ebmc::front::parse::source_to_ast(&format!("model m {{ energy e = {printed}; }}")).unwrap();
        assert_eq!(again.outline(), ast.outline(), "{text} printed as {printed}");
    }
}
