//! Every subcommand's `--message-format json` and exit codes: valid JSON on
//! success and on each kind of error (compile, data, runtime, arguments),
//! in the human format the same exit codes, and the global flags.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ebmc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebmc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("ebmc runs")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ebmc-cli-json-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Each non-empty line of `bytes` parsed as a JSON object.
fn json_lines(bytes: &[u8], out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", text(out)));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .collect()
}

/// A run with `--message-format json` that succeeds: stdout is JSON lines
/// whose last is the `kind` result; stderr holds JSON only.
fn json_success(args: &[&str], kind: &str) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["--message-format", "json"]);
    let out = ebmc(&all);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    json_lines(&out.stderr, &out);
    let lines = json_lines(&out.stdout, &out);
    assert_eq!(lines.last().map(|l| l["kind"].clone()), Some(kind.into()), "{args:?}: {}", text(&out));
    lines
}

/// A run with `--message-format json` that fails with `exit`: stderr is
/// JSON lines, one an error with `code`; stdout holds at most JSON.
fn json_error(args: &[&str], exit: i32, code: &str) -> Value {
    let mut all = args.to_vec();
    all.extend(["--message-format", "json"]);
    let out = ebmc(&all);
    assert_eq!(out.status.code(), Some(exit), "{args:?}: {}", text(&out));
    json_lines(&out.stdout, &out);
    let errors: Vec<Value> =
        json_lines(&out.stderr, &out).into_iter().filter(|l| l["severity"] == "error" && l["code"] == code).collect();
    assert!(!errors.is_empty(), "{args:?}: no error {code}: {}", text(&out));
    let e = errors[0].clone();
    assert_eq!(e["kind"], "diagnostic");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    e
}

/// The same failure in the human format: the exit code, and `error[CODE]` on stderr.
fn human_error(args: &[&str], exit: i32, code: &str) {
    let out = ebmc(args);
    assert_eq!(out.status.code(), Some(exit), "{args:?}: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("error[{code}]")), "{args:?}: {}", text(&out));
}

fn both(args: &[&str], exit: i32, code: &str) -> Value {
    human_error(args, exit, code);
    json_error(args, exit, code)
}

#[test]
fn check_fmt_graph_and_plan_speak_json() {
    let lines = json_success(&["check", "models/bars.ebm", "models/grbm.ebm"], "check");
    assert_eq!(lines.last().unwrap()["files"], 2);
    // check's diagnostics are its result: on stdout.
    let out = ebmc(&["check", "tests/errors/matmul_mismatch.ebm", "--message-format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out.stdout, &out);
    assert_eq!(lines[0]["code"], "E0201");
    assert_eq!((lines[0]["line"].as_u64(), lines[0]["column"].as_u64()), (Some(5), Some(25)));
    assert_eq!(lines.last().unwrap()["errors"], 1);
    human_error(&["check", "no/such.ebm"], 2, "E0901");
    json_error(&["check", "no/such.ebm"], 2, "E0901");

    let lines = json_success(&["fmt", "--check", "models/bars.ebm"], "fmt");
    assert_eq!(lines[0]["files"][0]["status"], "formatted");
    let e = json_error(&["fmt", "--check", "tests/errors/syntax_missing_semicolon.ebm"], 1, "E0001");
    assert!(e["line"].as_u64().is_some() && e["file"].as_str().unwrap().ends_with(".ebm"), "{e}");

    let lines = json_success(&["graph", "models/bars.ebm"], "graph");
    let g = &lines[0]["graphs"][0];
    assert_eq!(g["model"], "bars");
    assert_eq!(g["variables"].as_array().unwrap().len(), 2);
    assert!(g["interactions"].as_array().unwrap().iter().any(|i| i["a"] == "v" && i["b"] == "h"), "{g}");
    both(&["graph", "models/bars.ebm", "--model", "nosuch"], 1, "E0903");

    let lines = json_success(&["plan", "models/bars.ebm"], "plan");
    // Blocks count from 1, as the text does ("block 1 of 2").
    let mut blocks: Vec<u64> = lines[0]["plans"][0]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kernel"]["BlockGibbs"]["block"].as_u64().unwrap())
        .collect();
    blocks.sort();
    assert_eq!(blocks, [1, 2]);
    let text = String::from_utf8_lossy(&ebmc(&["plan", "models/bars.ebm"]).stdout).into_owned();
    assert!(text.contains("block 1 of 2") && text.contains("block 2 of 2"), "{text}");
    // A planner error is a compile diagnostic on stderr, with its location.
    let e = both(&["plan", "tests/errors/plan_no_finite_z.ebm"], 1, "E0401");
    assert!(e["line"].as_u64().is_some(), "{e}");
}

#[test]
fn sample_train_eval_and_energy_speak_json() {
    let dir = tmp("run");
    let d = |name: &str| dir.join(name).to_str().unwrap().to_string();

    let lines =
        json_success(&["sample", "models/bars.ebm", "--chains", "3", "--steps", "2", "--out", &d("s.csv")], "sample");
    assert_eq!(lines[0]["samples"]["rows"], 3);
    assert_eq!(lines[0]["chains"], 3);
    both(&["sample", "models/bars.ebm", "--steps", "1", "--out", &d("s.txt")], 2, "E0902");
    // Flags clap refuses are errors in the asked format too.
    both(&["sample", "models/bars.ebm", "--chains", "0"], 2, "E0902");
    let diverging = dir.join("d.ebm");
    std::fs::write(
        &diverging,
        "model d { visible x : real[2]; energy e = 0.5 * sum(square(x)); sample { x: langevin(step: 5); } }",
    )
    .unwrap();
    let e = both(&["sample", diverging.to_str().unwrap(), "--steps", "200", "--chains", "2"], 1, "E0906");
    assert!(e["help"].as_str().unwrap().contains("Langevin step"), "{e}");

    let run = d("run");
    let lines = json_success(&["train", "models/bars.ebm", "--epochs", "2", "--out", &run], "train");
    let epochs: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "epoch").collect();
    assert_eq!(epochs.len(), 2, "one JSON line per epoch");
    assert_eq!(epochs[1]["epoch"], 2);
    let done = lines.last().unwrap();
    assert!(Path::new(done["files"]["checkpoint"].as_str().unwrap()).is_dir(), "{done}");
    assert!(done["files"]["samples"].as_str().unwrap().ends_with("samples.png"), "{done}");
    assert_eq!(done["last"]["epoch"], 2);
    // Data errors carry the file, row and column.
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, format!("{}\n{}\n", ["1"; 16].join(","), ["1"; 15].join(",") + ",x")).unwrap();
    let e = both(
        &["train", "models/bars.ebm", "--epochs", "1", "--out", &d("bad-run"), "--data", bad.to_str().unwrap()],
        1,
        "E0904",
    );
    assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(2), Some(16)), "{e}");
    assert!(e["file"].as_str().unwrap().ends_with("bad.csv"), "{e}");
    both(&["train", "models/bars.ebm", "--out", &d("r2"), "--data", &d("missing.csv")], 2, "E0901");
    let untrained = dir.join("u.ebm");
    std::fs::write(&untrained, "model u { visible v : binary[2]; param b : real[2]; energy e = -(b @ v); }").unwrap();
    both(&["train", untrained.to_str().unwrap()], 1, "E0903");

    let lines = json_success(&["eval", "models/bars.ebm", "--params", &run], "eval");
    assert!(lines[0]["exact_log_z"].as_f64().is_some() && lines[0]["log_likelihood"].as_f64().unwrap() < 0.0);
    both(&["eval", "models/bars.ebm", "--params", &d("nothing-here")], 2, "E0905");
    both(&["eval", "models/bars.ebm", "--params", &run, "--runs", "0", "--ais"], 2, "E0902");

    let rows = dir.join("rows.csv");
    std::fs::write(&rows, format!("{}\n{}\n", ["1"; 16].join(","), ["0"; 16].join(","))).unwrap();
    let lines =
        json_success(&["energy", "models/bars.ebm", "--params", &run, "--data", rows.to_str().unwrap()], "energy");
    assert_eq!(lines[0]["energy"].as_array().unwrap().len(), 2);
    let narrow = dir.join("narrow.csv");
    std::fs::write(&narrow, "1,0,1\n").unwrap();
    let e = both(&["energy", "models/bars.ebm", "--params", &run, "--data", narrow.to_str().unwrap()], 1, "E0904");
    assert_eq!(e["line"], 1, "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn version_shows_the_crate_version_and_help_has_examples() {
    let out = ebmc(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with(&format!("ebmc {}", env!("CARGO_PKG_VERSION"))), "{v}");
    for sub in ["check", "fmt", "graph", "plan", "sample", "train", "eval", "energy"] {
        let out = ebmc(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--message-format") && help.contains("--color"), "{sub}: {help}");
        assert!(help.contains(&format!("Example:\n  ebmc {sub} ")), "{sub}: {help}");
    }
}

#[test]
fn color_is_chosen_by_the_flag() {
    let args = ["check", "tests/errors/matmul_mismatch.ebm"];
    let coloured = |extra: &[&str]| {
        let mut a = args.to_vec();
        a.extend(extra);
        String::from_utf8_lossy(&ebmc(&a).stderr).contains("\x1b[")
    };
    assert!(coloured(&["--color", "always"]));
    assert!(!coloured(&["--color", "never"]));
    assert!(!coloured(&[]), "auto: no colour when stderr is not a terminal");
}

#[test]
fn eval_on_a_continuous_model_without_log_z_gives_one_note() {
    let dir = tmp("cont");
    let rows: String = (0..40)
        .map(|i| format!("{},{},{}\n", (i % 7) as f32 * 0.3 - 1.0, (i % 5) as f32 * 0.2, (i % 3) as f32 - 1.0))
        .collect();
    std::fs::write(dir.join("q.csv"), rows).unwrap();
    let model = dir.join("q.ebm");
    std::fs::write(
        &model,
        "model q { visible x : real[3]; param m : real[3] = zeros; energy e = 0.25 * sum(square(square(x - m))); }
         train q { data = csv(path: \"q.csv\") -> x; objective = sm; optimizer = sgd(lr: 0.01); batch = 20; epochs = 1; }",
    )
    .unwrap();
    let (m, run) = (model.to_str().unwrap(), dir.join("run"));
    assert!(ebmc(&["train", m, "--out", run.to_str().unwrap()]).status.success());
    let out = ebmc(&["eval", m, "--params", run.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert_eq!(t.matches("note:").count(), 1, "{t}");
    assert!(t.contains("no log-likelihood") && t.contains("`x` has 3"), "{t}");
    assert!(!t.contains("pseudo-likelihood") && !t.contains("reconstruction") && !t.contains("AIS"), "{t}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_closed_stdout_ends_quietly_and_a_full_one_is_an_error() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebmc"))
        .args(["plan", "models/dbm.ebm"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", text(&out));
    if Path::new("/dev/full").exists() {
        let out = Command::new(env!("CARGO_BIN_EXE_ebmc"))
            .args(["plan", "models/dbm.ebm"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "a cut-off result is not a success: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("error[E0901]"), "{}", text(&out));
    }
}

#[test]
fn sample_reports_rhat_and_bulk_ess_and_warns_when_the_chains_have_not_mixed() {
    let dir = tmp("mixing");
    let run = dir.join("rbm");
    let run = run.to_str().unwrap();
    json_success(&["train", "models/rbm.ebm", "--epochs", "1", "--out", run], "train");
    // 4 chains of 20 draws: bulk ESS is at most 80·log10(80) < 400, so this run cannot pass.
    let short =
        &json_success(&["sample", "models/rbm.ebm", "--params", run, "--chains", "4", "--steps", "20"], "sample")[0];
    let m = &short["mixing"];
    assert_eq!((m["chains"].as_u64(), m["draws"].as_u64(), m["every"].as_u64()), (Some(4), Some(20), Some(1)), "{m}");
    assert_eq!(m["mixed"], false);
    // Both variables have more than 8 units: their means alone.
    let stats = m["statistics"].as_array().unwrap();
    let names: Vec<(&str, &Value)> = stats.iter().map(|s| (s["variable"].as_str().unwrap(), &s["unit"])).collect();
    assert_eq!(names, [("h", &Value::Null), ("v", &Value::Null)]);
    for s in stats {
        assert!(
            s["rhat"].as_f64().is_some_and(|r| r > 0.5) && s["ess_bulk"].as_f64().is_some_and(|e| e < 400.0),
            "{s}"
        );
    }
    assert!(short["warnings"][0].as_str().unwrap().contains("may not have mixed"), "{short}");
    // A long run keeps at most 1000 draws per chain and the first 64 chains.
    let long =
        &json_success(&["sample", "models/rbm.ebm", "--params", run, "--chains", "70", "--steps", "2500"], "sample")[0];
    let m = &long["mixing"];
    assert_eq!((m["chains"].as_u64(), m["draws"].as_u64(), m["every"].as_u64()), (Some(64), Some(833), Some(3)), "{m}");
    // People get the table and the warning on stderr.
    let out = ebmc(&["sample", "models/rbm.ebm", "--params", run, "--chains", "4", "--steps", "20"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rank-normalised split R̂ and bulk ESS") && stdout.contains("mean"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: the chains may not have mixed"));
}

/// `sample` runs a model trained by short-run chains (`igebm_digits`:
/// `reinit: 0.99`, `k: 40`) for its objective's `k` unless `--steps` says
/// otherwise, and any other model 1000 sweeps.
#[test]
fn sample_defaults_to_the_objectives_k_for_short_run_training() {
    let sweeps = |args: &[&str]| json_success(args, "sample")[0]["sweeps"].as_u64();
    assert_eq!(sweeps(&["sample", "models/igebm_digits.ebm", "--chains", "2"]), Some(40));
    assert_eq!(sweeps(&["sample", "models/igebm_digits.ebm", "--chains", "2", "--steps", "3"]), Some(3));
    assert_eq!(sweeps(&["sample", "models/bars.ebm", "--chains", "2"]), Some(1000));
}
