//! Resource limits and deep nesting: inputs at each limit work through every
//! stage on a small stack; inputs past it get a coded error, never a crash.

use ebmc::limits::{self, MAX_NESTING};

/// Runs `f` on a thread with a 2 MiB stack (the default for spawned
/// threads), so a stage that recursed per level would overflow here first.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(2 << 20).spawn(f).unwrap().join().expect("no stack overflow or panic")
}

fn nested_calls(n: usize, f: &str, var: &str) -> String {
    (0..n).fold(var.to_string(), |e, _| format!("{f}({e})"))
}

/// Every stage a file goes through: check, plan, IR with derivatives, printing, fmt.
fn all_stages(source: String) -> Result<(), Vec<ebmc::diagnostic::Diagnostic>> {
    on_small_stack(move || {
        ebmc::format_source(&source).map_err(|d| vec![d])?;
        let compiled = ebmc::compile(&source)?;
        let (plans, _) = ebmc::plan(&compiled.program)?;
        for p in &plans {
            let _ = p.to_text();
        }
        for model in compiled.program.models.values() {
            let _ = ebmc::graph::program_to_graph(model).to_text(&Default::default());
            let mut lowered = ebmc::ir::program_to_ir(model);
            for v in &model.variables {
                if let Some(g) = lowered.ir.grad(lowered.total, &v.name) {
                    let _ = lowered.ir.show(g);
                }
            }
            let _ = lowered.ir.show(lowered.total);
        }
        Ok(())
    })
}

fn deep_inputs(n: usize) -> Vec<(&'static str, String)> {
    let head = "model m {\n    visible x : real[2];\n    visible v : binary[3];\n    hidden h : binary[3];\n    param W : real[3, 3];\n    energy prior = 0.5 * sum(square(x));\n    energy rbm = -(v @ W @ h);\n";
    let wrap = |body: String| format!("{head}    energy deep = {body};\n}}\n");
    vec![
        ("parentheses", wrap(format!("sum({}x{})", "(".repeat(n - 1), ")".repeat(n - 1)))),
        ("tanh calls on a real", wrap(format!("sum({})", nested_calls(n - 1, "tanh", "x")))),
        ("sigmoid calls on a binary", wrap(format!("sum({})", nested_calls(n - 1, "sigmoid", "v")))),
        ("square calls on a binary", wrap(format!("sum({})", nested_calls(n - 1, "square", "v")))),
        ("flat sum", wrap(vec!["sum(x)"; n].join(" + "))),
        ("products in a sum", wrap(vec!["2 * sum(v)"; n / 2].join(" - "))),
        ("unary minus", wrap(format!("{}sum(x)", "-".repeat(n)))),
        ("powers", wrap(format!("sum(x{})", "^1".repeat(n)))),
        ("matrix products", wrap(format!("sum({}v)", "W @ ".repeat(n)))),
    ]
}

#[test]
fn nesting_at_the_limit_works_in_every_stage() {
    for (what, source) in deep_inputs(MAX_NESTING - 2) {
        let depth = limits::nesting(&source).unwrap_or_else(|_| panic!("{what}: refused at the limit"));
        assert!(depth <= MAX_NESTING, "{what}: {depth}");
        if let Err(d) = all_stages(source) {
            panic!("{what}: {:?}", d.iter().map(|d| &d.message).collect::<Vec<_>>());
        }
    }
}

#[test]
fn nesting_past_the_limit_is_a_coded_error_with_a_span() {
    for n in [MAX_NESTING + 1, 10_000] {
        for (what, source) in deep_inputs(n + 2) {
            let errors = all_stages(source.clone()).expect_err(what);
            assert_eq!(errors.len(), 1, "{what}");
            let d = &errors[0];
            assert_eq!(d.code, "E0501", "{what}: {}", d.message);
            assert!(d.message.contains(&format!("nested too deeply (limit {MAX_NESTING})")), "{what}: {}", d.message);
            let span = d.labels[0].span;
            assert!(span.start < span.end && span.end <= source.len(), "{what}");
        }
    }
}

#[test]
fn deep_input_at_the_limit_checks_and_plans_quickly() {
    // The planner's cost once grew as n^3 with nesting (printing each level's
    // conditional copied the whole text below it).
    for (what, source) in deep_inputs(MAX_NESTING - 2) {
        let started = std::time::Instant::now();
        let compiled = ebmc::compile(&source).unwrap();
        ebmc::plan(&compiled.program).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        // Debug builds are ~20x slower than release; release takes milliseconds.
        assert!(seconds < 10.0, "{what}: {seconds:.2}s");
    }
}
