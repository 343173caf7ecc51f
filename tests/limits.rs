//! Resource limits and deep nesting: inputs at each limit work through every
//! stage on a small stack; inputs past it get a coded error, never a crash.

use ebmc::analysis::limits::{self, MAX_NESTING};

/// Runs `f` on a thread with a 2 MiB stack (the default for spawned
/// threads), so a stage that recursed per level would overflow here first.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(2 << 20).spawn(f).unwrap().join().expect("no stack overflow or panic")
}

fn nested_calls(n: usize, f: &str, var: &str) -> String {
    (0..n).fold(var.to_string(), |e, _| format!("{f}({e})"))
}

/// Every stage a file goes through: check, plan, IR with derivatives, printing, fmt.
fn all_stages(source: String) -> Result<(), Vec<ebmc::front::diagnostic::Diagnostic>> {
    on_small_stack(move || {
        ebmc::format_source(&source).map_err(|d| vec![d])?;
        let compiled = ebmc::compile(&source)?;
        let (plans, _) = ebmc::plan(&compiled.program)?;
        for p in &plans {
            let _ = p.to_text();
        }
        for model in compiled.program.models.values() {
            let _ = ebmc::analysis::graph::program_to_graph(model).to_text(&Default::default());
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

fn ebmc(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ebmc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("ebmc runs")
}

fn write_model(name: &str, source: &str) -> String {
    let dir = std::env::temp_dir().join(format!("ebmc-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, source).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn declared_sizes_past_their_limits_exit_1_with_a_code_and_a_span() {
    let cases = [
        ("units.ebm", "model m { visible v : binary[100000000]; energy e = sum(v); }", "E0502"),
        (
            "grid.ebm",
            "model m { visible s : spin[100]; const J = grid(100000, 100000); energy e = -(s @ s) + sum(J); }",
            "E0504",
        ),
        (
            "overflow.ebm",
            "model m { visible s : spin[4]; const J = grid(4294967296, 4294967296); energy e = -(s @ s) + sum(J); }",
            "E0504",
        ),
        (
            "param.ebm",
            "model m { visible v : binary[4]; param W : real[100000, 100000]; energy e = sum(v) + sum(W); }",
            "E0503",
        ),
        (
            "net.ebm",
            "model m { visible x : real[2]; net f = mlp(2 -> 1000000000 -> 1); energy e = f(x) + sum(square(x)); }",
            "E0503",
        ),
        (
            "wide.ebm",
            "model m { visible v : binary[18446744073709551615, 18446744073709551615]; energy e = sum(v); }",
            "E0502",
        ),
    ];
    for (name, source, code) in cases {
        let path = write_model(name, source);
        for command in ["check", "plan", "graph", "sample"] {
            let out = ebmc(&[command, &path]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name} {command}: {err}");
            assert!(err.contains(&format!("error[{code}]")) && err.contains("(limit "), "{name} {command}: {err}");
            assert!(err.contains(&format!("{name}:1:")), "{name} {command}: no location: {err}");
        }
    }
}

#[test]
fn run_flags_past_their_limits_exit_2_before_sampling() {
    let cases: [(&[&str], &str); 6] = [
        (&["--chains", "1000000000"], "E0505"),
        (&["--chains", "18446744073709551615"], "--chains"),
        (&["--steps", "18446744073709551615"], "--steps"),
        (&["--burn-in", "999999999", "--steps", "999999999"], "E0506"),
        (&["--every", "0"], "--every"),
        (&["--chains", "0"], "--chains"),
    ];
    for (flags, expect) in cases {
        let mut args = vec!["sample", "models/rbm.ebm"];
        args.extend(flags);
        let started = std::time::Instant::now();
        let out = ebmc(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(expect) && (err.contains("limit") || err.contains("at least")), "{flags:?}: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("sweeps"), "{flags:?} sampled");
        assert!(started.elapsed().as_secs() < 20, "{flags:?} ran");
    }
    let out = ebmc(&["train", "models/rbm.ebm", "--epochs", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ebmc(&["train", "models/rbm.ebm", "--epochs", "18446744073709551615"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limit"));
}

#[test]
fn a_run_is_checked_against_the_memory_available() {
    let c = ebmc::compile(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/rbm.ebm")).unwrap())
        .unwrap();
    let model = &c.program.models["rbm"];
    let lowered = ebmc::ir::program_to_ir(model);
    let run = limits::SampleRun { chains: 1000, burn_in: 0, steps: 100, every: Some(1) };
    let needed = limits::check_sample(model, &lowered, &run, None).unwrap();
    // 100 kept states of 1000 chains of the visible units, at least.
    let visible: usize = model
        .variables
        .iter()
        .filter(|v| v.role == ebmc::front::ast::Role::Visible)
        .map(|v| v.shape.iter().product::<usize>())
        .sum();
    assert!(needed >= (100 * 1000 * visible * 4) as u128, "{needed}");
    assert!(limits::check_sample(model, &lowered, &run, Some(needed as u64)).is_ok());
    let errors = limits::check_sample(model, &lowered, &run, Some(needed as u64 / 2)).unwrap_err();
    let d = ebmc::front::diagnostic::Diagnostic::from(&errors[0]);
    assert_eq!(d.code, "E0507");
    assert!(errors[0].to_string().contains("is available"), "{}", errors[0]);
    let train = &c.program.trains["rbm"];
    let needed = limits::check_train(model, &lowered, train, 1000, 1, None).unwrap();
    assert_eq!(
        ebmc::front::diagnostic::Diagnostic::from(
            &limits::check_train(model, &lowered, train, 1000, 1, Some(1)).unwrap_err()[0]
        )
        .code,
        "E0507"
    );
    assert!(needed > 0);
    assert_eq!(limits::available_from_meminfo("MemTotal: 100 kB\nMemAvailable:    2048 kB\n"), Some(2 << 20));
    assert_eq!(limits::available_from_meminfo("MemTotal: 100 kB\n"), None);
    assert_eq!(
        limits::address_space_cap(
            "Max stack size            8388608              unlimited            bytes\nMax address space         4294967296           unlimited            bytes\n"
        ),
        Some(4 << 30)
    );
    assert_eq!(
        limits::address_space_cap("Max address space         unlimited            unlimited            bytes\n"),
        None
    );
}

#[test]
fn state_counts_never_overflow() {
    let c = ebmc::compile("model m { visible v : binary[784]; hidden h : binary[500]; visible y : categorical(3)[2]; param W : real[784, 500]; energy e = -(v @ W @ h) + sum(y); }").unwrap();
    let m = &c.program.models["m"];
    let states = limits::joint_states(m, &["v".to_string()]);
    assert_eq!(states.to_string(), "2^784");
    assert_eq!(states.exact, None);
    assert_eq!(limits::joint_states(m, &["y".to_string()]).exact, Some(9));
    assert_eq!(limits::joint_states(m, &["v".to_string(), "h".to_string()]).to_string(), "2^1284");
}

#[test]
fn check_reports_the_planners_errors() {
    let out = ebmc(&["check", "tests/errors/plan_no_finite_z.ebm", "tests/errors/plan_negative_leading_term.ebm"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("error[E0401]").count(), 2, "{err}");
    let out = ebmc(&["check", "--message-format", "json", "tests/errors/plan_sm_bounded_warning.ebm"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"W0403\""));
}

#[test]
fn fmt_and_graph_refuse_deep_input_cleanly() {
    let deep = write_model(
        "deep.ebm",
        &format!("model m {{ visible x : real[2]; energy e = {}; }}", vec!["sum(square(x))"; 9000].join(" + ")),
    );
    for command in [&["fmt", "--check"][..], &["fmt"], &["graph"], &["plan"], &["check"]] {
        let mut args = command.to_vec();
        args.push(&deep);
        let out = ebmc(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {err}");
        assert!(err.contains("error[E0501]: expression nested too deeply (limit 256)"), "{command:?}: {err}");
    }
}

#[test]
fn many_energy_declarations_add_up_without_a_deep_stack() {
    // Each declaration resets the nesting count; their sum is one long chain
    // inside the IR, which every stage walks without recursion.
    let terms: String = (0..5000)
        .map(|i| format!("    energy e{i} = {}.5 * sum(square(x)) - sum(v) + sum(sigmoid(v));\n", i % 3))
        .collect();
    let source = format!("model m {{\n    visible x : real[2];\n    visible v : binary[3];\n{terms}}}\n");
    let started = std::time::Instant::now();
    all_stages(source).unwrap();
    assert!(started.elapsed().as_secs() < 60);
}

/// A net's hidden layers are values per example too: a training step of a
/// wide MLP under score matching needs their batch, forward and backward,
/// and the Hessian-vector products on top.
#[test]
fn training_memory_counts_a_nets_hidden_layers() {
    let src = "model g { visible x : real[2]; net f = mlp(2 -> 4096 -> 4096 -> 1, act: swish); energy e = f(x); }
               train g { data = toy(\"8gaussians\", n: 1000) -> x; objective = ssm(projections: 1); batch = 1024; }";
    let c = ebmc::compile(src).expect("compiles");
    let model = &c.program.models["g"];
    let lowered = ebmc::ir::program_to_ir(model);
    let needed = limits::check_train(model, &lowered, &c.program.trains["g"], 1000, 1, None).unwrap();
    // Two hidden layers of 4096 floats for each of 1024 rows, held ten times over.
    assert!(needed >= 10 * 2 * 4096 * 1024 * 4, "{needed}");
}
