//! Fuzz and limits suite: every run of the `ebmc` binary on hostile input
//! keeps the contract in `robustness/harness.rs` (exit 0, 1 or 2 with an
//! `error` line, within a time and memory bound, no NaN as a result), and
//! run directories are never left half-written. Each test collects all its
//! breaches, with the input that caused each, before it fails. Inputs that
//! broke the contract are kept under `target/tmp/robustness-failures/`.

// Shared with examples/fuzz_campaign.rs, which uses the parts this file does not.
#[allow(dead_code)]
#[path = "robustness/harness.rs"]
mod harness;

use harness::{Class, LIMITS, RBM, ROWS, Rng, Run, breach, rows_csv};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Mutants per zoo file: 16 files x 24 mutants x 5 or 6 commands keeps this
/// test near 20 s on two busy cores once no input hangs.
const MUTANTS_PER_FILE: u64 = 24;
/// Base seed of the mutated inputs; file `i` of the sorted zoo uses `SEED + i`.
const SEED: u64 = 10;
/// Bounds for the 400-epoch trainings of the lock and kill tests: 400
/// checkpoints, each synced to disk, may take longer than one ordinary run.
const SLOW: harness::Limits = harness::Limits { wall: std::time::Duration::from_secs(90), ..LIMITS };
/// Runs at once inside one test (the test harness runs tests side by side too).
const WORKERS: usize = 2;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ebmc"))
}

/// A scratch folder under target/tmp, removed when the test passes.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("robustness-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Every breach one test found, each with the input that caused it.
struct Findings {
    test: &'static str,
    found: Mutex<Vec<String>>,
}

impl Findings {
    fn new(test: &'static str) -> Findings {
        Findings { test, found: Mutex::new(Vec::new()) }
    }

    /// Records `run`'s breach of the contract, if any; keeps the input file for reproduction.
    fn check(
        &self,
        input: &str,
        keep: Option<(&str, &[u8])>,
        run: &Run,
        figures: bool,
        files: &[PathBuf],
    ) -> Option<Class> {
        let (class, detail) = breach(run, figures, files)?;
        self.add(class, input, keep, run, &detail);
        Some(class)
    }

    fn add(&self, class: Class, input: &str, keep: Option<(&str, &[u8])>, run: &Run, detail: &str) {
        let kept = keep.map(|(name, bytes)| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("robustness-failures").join(self.test);
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            let text = String::from_utf8_lossy(bytes);
            let shown: String = text.chars().take(1500).collect();
            let more = if text.chars().count() > 1500 { "\n    ..." } else { "" };
            format!("\n  kept as {}\n  text:\n    {}{more}", p.display(), shown.replace('\n', "\n    "))
        });
        let args = run.args.join(" ");
        let args: String = args.chars().take(300).collect();
        self.found.lock().unwrap().push(format!(
            "[{}] ebmc {args}\n  input: {input}\n  {detail}{}",
            class.name(),
            kept.unwrap_or_default()
        ));
    }

    fn wrong(&self, input: &str, run: &Run, detail: &str) {
        self.add(Class::Wrong, input, None, run, detail);
    }

    fn assert_none(self) {
        let found = self.found.into_inner().unwrap();
        assert!(found.is_empty(), "{} breach(es) of the contract:\n\n{}", found.len(), found.join("\n\n"));
    }
}

fn ebmc(args: &[String], cwd: &Path) -> Run {
    harness::run(&bin(), args, cwd, &LIMITS)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A number no other call in this process gets (for output file names).
fn next_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Runs `job` on every item, `WORKERS` at a time.
fn each<T: Sync>(items: &[T], job: impl Fn(&T) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    job(item);
                }
            });
        }
    });
}

#[test]
fn mutated_zoo_files_keep_the_contract() {
    let zoo = harness::zoo();
    let donors: Vec<String> = zoo.iter().map(|(_, s)| s.clone()).collect();
    let dir = Scratch::new("mutants");
    let mut inputs = Vec::new();
    for (i, (name, text)) in zoo.iter().enumerate() {
        for j in 0..MUTANTS_PER_FILE {
            let mut rng = Rng::for_input(SEED + i as u64, j);
            let (bytes, how) = harness::mutate(&mut rng, text, &donors);
            let file = format!("{}-{j}.ebm", name.trim_end_matches(".ebm").replace('/', "-"));
            inputs.push((
                file,
                bytes,
                format!("{name} mutated by seed {} input {j}: {}", SEED + i as u64, how.join("; ")),
            ));
        }
    }
    let findings = Findings::new("mutants");
    each(&inputs, |(file, bytes, how)| {
        let path = dir.write(file, bytes);
        let samples = dir.path(&format!("{file}.csv"));
        let sample = ["sample", "--chains", "2", "--steps", "2", "--out", &p(&samples)];
        let mut checks = false;
        let mut before = Vec::new();
        let mut formatted = None;
        // fmt last: it rewrites the file.
        for command in [&["check"][..], &["plan"], &["graph"], &["graph", "--format", "dot"], &sample, &["fmt"]] {
            // A model that checks is sampled too: the run-time half of the front end's promises.
            if command[0] == "sample" && !checks {
                continue;
            }
            let mut a = args(command);
            a.insert(1, p(&path));
            let run = ebmc(&a, &dir.0);
            checks |= command[0] == "check" && run.code == Some(0);
            if command[0] == "fmt" && run.code == Some(0) {
                formatted = Some(run.clone());
            }
            if matches!(command, ["plan"] | ["graph"]) {
                before.push(run.stdout.clone());
            }
            if findings
                .check(how, Some((file, bytes)), &run, command[0] == "sample", std::slice::from_ref(&samples))
                .is_none()
                && command[0] == "plan"
                && checks
                && run.code == Some(1)
            {
                // A user runs `check` in CI: what `plan` refuses, `check` must report.
                findings.add(
                    Class::Wrong,
                    how,
                    Some((file, bytes)),
                    &run,
                    "`check` exits 0 on this file but `plan` refuses it with exit 1",
                );
            }
        }
        let Some(fmt_run) = formatted.filter(|_| checks) else { return };
        // fmt keeps the meaning (same plan, same graph) and is idempotent.
        let text = std::fs::read(&path).unwrap_or_default();
        let mut after = Vec::new();
        for command in ["check", "plan", "graph", "fmt"] {
            let run = ebmc(&args(&[command, &p(&path)]), &dir.0);
            if findings.check(how, Some((file, bytes)), &run, false, &[]).is_some() {
                return;
            }
            let shown = String::from_utf8_lossy(&text);
            match command {
                "check" if run.code != Some(0) => findings.add(
                    Class::Wrong,
                    how,
                    Some((file, bytes)),
                    &run,
                    &format!("the file checks, but not once formatted:\n{shown}"),
                ),
                "plan" | "graph" => after.push(run.stdout),
                "fmt" if std::fs::read(&path).unwrap_or_default() != text => findings.add(
                    Class::Wrong,
                    how,
                    Some((file, bytes)),
                    &run,
                    "fmt is not idempotent: a second fmt changed the formatted file",
                ),
                _ => {}
            }
        }
        if before != after {
            findings.add(
                Class::Wrong,
                how,
                Some((file, bytes)),
                &fmt_run,
                &format!("formatting changed the plan or graph; formatted text:\n{}", String::from_utf8_lossy(&text)),
            );
        }
    });
    findings.assert_none();
}

#[test]
fn deep_and_huge_inputs_keep_the_contract() {
    let dir = Scratch::new("generated");
    let cases = harness::generated();
    let findings = Findings::new("generated");
    let jobs: Vec<(usize, Vec<&str>)> = cases
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            let mut commands = vec![(i, vec!["check"]), (i, vec!["plan"]), (i, vec!["graph"]), (i, vec!["fmt"])];
            if c.sample {
                commands.push((i, vec!["sample", "--chains", "2", "--steps", "1"]));
            }
            commands
        })
        .collect();
    each(&jobs, |(i, command)| {
        let case = &cases[*i];
        // Each job its own copy: fmt rewrites its file.
        let file = format!("case{i}-{}.ebm", command[0]);
        let path = dir.write(&file, &case.source);
        let mut a = args(command);
        a.insert(1, p(&path));
        let csv = dir.path(&format!("case{i}.csv"));
        if command[0] == "sample" {
            a.extend(["--out".to_string(), p(&csv)]);
        }
        let run = ebmc(&a, &dir.0);
        findings.check(
            &case.name,
            Some((&format!("case{i}.ebm"), case.source.as_bytes())),
            &run,
            command[0] == "sample",
            &[csv],
        );
    });
    findings.assert_none();
}

/// A three-layer DBM on the same rows.
const DBM: &str = "model d {
    visible v : binary[6];
    hidden h1 : binary[4];
    hidden h2 : binary[3];
    param W1 : real[6, 4] = normal(0, 0.1);
    param W2 : real[4, 3] = normal(0, 0.1);
    param b : real[6] = zeros;
    energy e = -(v @ W1 @ h1) - (h1 @ W2 @ h2) - b @ v;
}

train d {
    data = csv(\"rows.csv\") -> v;
    objective = pcd(k: 1, chains: 8);
    optimizer = sgd(lr: 0.05);
    batch = 4;
    epochs = 1;
}
";

/// A Gaussian-Bernoulli RBM on real rows (`reals.csv`).
const GRBM: &str = "model g {
    visible v : real[4];
    hidden h : binary[3];
    param W : real[4, 3] = normal(0, 0.1);
    param b : real[4] = zeros;
    energy quadratic = 0.5 * sum(square(v - b));
    energy coupling = -(v @ W @ h);
}

train g {
    data = csv(\"reals.csv\") -> v;
    objective = cd(k: 1);
    optimizer = sgd(lr: 0.01);
    batch = 4;
    epochs = 1;
}
";

/// A 2-D Gaussian, so `eval` integrates on a grid.
const GAUSS: &str = "model q {
    visible x : real[2];
    param m : real[2] = zeros;
    energy e = 0.5 * sum(square(x - m));
}

train q {
    data = csv(\"points.csv\") -> x;
    objective = sm;
    optimizer = sgd(lr: 0.01);
    batch = 4;
    epochs = 1;
}
";

/// The tiny models, their data and good parameters, in one folder.
fn tiny_models(dir: &Scratch) {
    dir.write("r.ebm", RBM);
    dir.write("d.ebm", DBM);
    dir.write("g.ebm", GRBM);
    dir.write("q.ebm", GAUSS);
    dir.write("rows.csv", rows_csv(&ROWS));
    dir.write(
        "reals.csv",
        "0.5,-1.0,0.25,2.0\n1.5,0.0,-0.5,1.0\n-0.5,0.5,1.0,0.0\n0.0,1.0,-1.5,0.5\n1.0,1.0,0.0,-1.0\n",
    );
    dir.write("points.csv", "0.5,-1.0\n1.5,0.0\n-0.5,0.5\n0.0,1.0\n1.0,1.0\n");
    dir.write("r.safetensors", harness::rbm_params());
    dir.write(
        "d.safetensors",
        harness::safetensors(
            &[("W1", vec![6, 4], vec![0.05; 24]), ("W2", vec![4, 3], vec![-0.05; 12]), ("b", vec![6], vec![0.0; 6])],
            "F32",
        ),
    );
    dir.write(
        "g.safetensors",
        harness::safetensors(&[("W", vec![4, 3], vec![0.1; 12]), ("b", vec![4], vec![0.0; 4])], "F32"),
    );
    dir.write("q.safetensors", harness::safetensors(&[("m", vec![2], vec![0.5, -0.5])], "F32"));
}

#[test]
fn flags_at_their_limits_keep_the_contract() {
    let dir = Scratch::new("flags");
    tiny_models(&dir);
    let (r, q) = (p(&dir.path("r.ebm")), p(&dir.path("q.ebm")));
    let params = p(&dir.path("r.safetensors"));
    let qparams = p(&dir.path("q.safetensors"));
    // A placeholder each run replaces with its own output file.
    let csv = p(&dir.path("out.csv"));
    let sample = |extra: &[&str]| {
        let mut a = args(&["sample", &r, "--params", &params, "--out", &csv]);
        a.extend(args(extra));
        a
    };
    let eval = |file: &str, params: &str, extra: &[&str]| {
        let mut a = args(&["eval", file, "--params", params]);
        a.extend(args(extra));
        a
    };
    // (arguments, whether they must be refused): values no run can honour
    // are errors, not a silent default or a figure with no meaning.
    let cases: Vec<(Vec<String>, bool)> = vec![
        (sample(&["--chains", "1000000000", "--steps", "1"]), false),
        (sample(&["--chains", "18446744073709551615", "--steps", "1"]), false),
        (sample(&["--chains", "2", "--steps", "18446744073709551615", "--burn-in", "1"]), true),
        (sample(&["--chains", "2", "--steps", "1", "--burn-in", "18446744073709551615"]), true),
        (sample(&["--chains", "2", "--steps", "4", "--every", "18446744073709551615"]), false),
        // A bad output must be refused before the (long) sampling, not after it.
        (args(&["sample", &r, "--chains", "2", "--steps", "100000000", "--out", &p(&dir.path("x.txt"))]), true),
        (
            args(&["sample", &r, "--chains", "2", "--steps", "100000000", "--out", &p(&dir.path("no/such/dir/x.csv"))]),
            true,
        ),
        (
            args(&[
                "sample",
                &r,
                "--chains",
                "4",
                "--steps",
                "100000000",
                "--png",
                &p(&dir.path("no/such/dir/x.png")),
                "--image",
                "2x3",
            ]),
            true,
        ),
        (
            args(&[
                "sample",
                &r,
                "--chains",
                "4",
                "--steps",
                "1",
                "--png",
                &p(&dir.path("x.png")),
                "--image",
                "100000x100000",
            ]),
            true,
        ),
        (eval(&r, &params, &["--ais", "--runs", "0"]), true),
        (eval(&r, &params, &["--ais", "--temperatures", "0"]), true),
        (eval(&r, &params, &["--ais", "--temperatures", "1"]), false),
        (eval(&r, &params, &["--ais", "--runs", "1000000000"]), false),
        (eval(&r, &params, &["--ais", "--temperatures", "18446744073709551615"]), false),
        (eval(&r, &params, &["--pl-units", "0"]), true),
        (eval(&r, &params, &["--pl-units", "1000000"]), false),
        (eval(&q, &qparams, &["--grid", "0"]), true),
        (eval(&q, &qparams, &["--grid", "1"]), false),
        (eval(&q, &qparams, &["--grid", "100000000"]), false),
        (eval(&q, &qparams, &["--grid-low", "5", "--grid-high", "-5"]), true),
        (eval(&q, &qparams, &["--grid-low", "NaN"]), true),
        (eval(&q, &qparams, &["--grid-low", "-1e39", "--grid-high", "1e39"]), false),
    ];
    let findings = Findings::new("flags");
    each(&cases, |(a, must_refuse)| {
        let out = dir.path(&format!("out-{}.csv", next_id()));
        let a: Vec<String> = a.iter().map(|x| if *x == csv { p(&out) } else { x.clone() }).collect();
        let run = ebmc(&a, &dir.0);
        let what = "the tiny models (RBM 6x3, 2-D Gaussian) with these flags";
        if findings.check(what, None, &run, true, &[out]).is_none() && *must_refuse && run.code == Some(0) {
            findings.wrong(what, &run, &format!("accepted with exit 0: {}", run.stdout.trim()));
        }
    });
    findings.assert_none();
}

/// A bad data file and what it holds wrong.
struct BadData {
    name: &'static str,
    bytes: Vec<u8>,
    /// The model it is for (`r` binary[6] rows, `g` real[4] rows).
    model: &'static str,
    /// Rows a correct reading has, where the file is readable; `energy` must
    /// print that many, or refuse the file.
    rows: Option<usize>,
}

fn bad_data() -> Vec<BadData> {
    let good = rows_csv(&ROWS);
    let f4 = |values: &[f32]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let c_order: Vec<f32> = ROWS.iter().flatten().map(|&x| f32::from(x)).collect();
    let fortran: Vec<f32> = (0..6).flat_map(|c| ROWS.iter().map(move |r| f32::from(r[c]))).collect();
    let with_row = |i: usize, row: &str| {
        let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
        lines[i] = row.to_string();
        lines.join("\n") + "\n"
    };
    let d = |name, bytes: Vec<u8>, model, rows| BadData { name, bytes, model, rows };
    let idx = |dims: &[u32], data: &[u8]| {
        let mut out = vec![0, 0, 0x08, dims.len() as u8];
        out.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
        out.extend_from_slice(data);
        out
    };
    vec![
        d("ten-bytes-v1.npy", b"\x93NUMPY\x01\x00\xff\xff".to_vec(), "r", None),
        d("ten-bytes-v2.npy", b"\x93NUMPY\x02\x00\x00\x00".to_vec(), "r", None),
        d(
            "truncated.npy",
            harness::npy("{'descr': '<f4', 'fortran_order': False, 'shape': (8, 6), }", &f4(&c_order)[..20]),
            "r",
            None,
        ),
        d(
            "header-cut.npy",
            harness::npy("{'descr': '<f4', 'fortran_order': False, 'shape': (8, 6), }", &[])[..30].to_vec(),
            "r",
            None,
        ),
        d(
            "fortran.npy",
            harness::npy("{'descr': '<f4', 'fortran_order':True, 'shape': (8, 6), }", &f4(&fortran)),
            "r",
            Some(8),
        ),
        d(
            "fortran-spaced.npy",
            harness::npy("{'descr':'<f4','fortran_order' : True,'shape':(8,6)}", &f4(&fortran)),
            "r",
            Some(8),
        ),
        d(
            "shape-overflow.npy",
            harness::npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 2), }",
                &f4(&c_order),
            ),
            "r",
            None,
        ),
        d(
            "shape-huge.npy",
            harness::npy("{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 6), }", &f4(&c_order)),
            "r",
            None,
        ),
        d(
            "big-endian.npy",
            harness::npy("{'descr': '>f4', 'fortran_order': False, 'shape': (8, 6), }", &f4(&c_order)),
            "r",
            None,
        ),
        d(
            "nan.npy",
            harness::npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }",
                &f4(&[0.5, f32::NAN, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
            ),
            "g",
            None,
        ),
        d("bom.csv", format!("\u{feff}{good}").into_bytes(), "r", Some(8)),
        d("typo-first-row.csv", with_row(0, "1,0,l,0,1,0").into_bytes(), "r", Some(8)),
        d("letter-o-first-row.csv", with_row(0, "1,O,1,0,1,0").into_bytes(), "r", Some(8)),
        d("typo-later-row.csv", with_row(4, "1,0,1,0,1,x").into_bytes(), "r", None),
        d("1e39.csv", b"0.5,-1.0,0.25,2.0\n1.5,1e39,-0.5,1.0\n-0.5,0.5,1.0,0.0\n".to_vec(), "g", None),
        d("-1e39.csv", b"0.5,-1.0,0.25,2.0\n1.5,0.0,-0.5,1.0\n-0.5,0.5,1.0,-1e39\n".to_vec(), "g", None),
        d("nan.csv", b"0.5,-1.0,0.25,2.0\n1.5,NaN,-0.5,1.0\n".to_vec(), "g", None),
        d("inf.csv", b"0.5,-1.0,0.25,2.0\n1.5,inf,-0.5,1.0\n".to_vec(), "g", None),
        d("huge-integer.csv", with_row(2, "18446744073709551616,0,1,0,1,0").into_bytes(), "r", None),
        d("two-for-binary.csv", with_row(3, "2,0,1,0,1,0").into_bytes(), "r", None),
        d("five-columns.csv", b"1,0,1,0,1\n0,1,0,1,0\n".to_vec(), "r", None),
        d("seven-columns.csv", b"1,0,1,0,1,0,1\n0,1,0,1,0,1,0\n".to_vec(), "r", None),
        d("ragged.csv", with_row(2, "1,0,1,0,1").into_bytes(), "r", None),
        d("empty.csv", Vec::new(), "r", None),
        d("header-only.csv", b"v0,v1,v2,v3,v4,v5\n".to_vec(), "r", None),
        d("bom-only.csv", "\u{feff}".as_bytes().to_vec(), "r", None),
        d("not-utf8.csv", b"1,0,1,\xff,1,0\n".to_vec(), "r", None),
        d("crlf.csv", good.replace('\n', "\r\n").into_bytes(), "r", Some(8)),
        // Image files: rows of [2, 3] are the 6 units of `r`; rows of [2, 2] fit nothing.
        d("rows-2x3.idx", idx(&[8, 2, 3], &ROWS.concat()), "r", Some(8)),
        d("rows-2x2.idx", idx(&[12, 2, 2], &ROWS.concat()), "r", None),
        d("cifar-record.bin", [vec![3u8], vec![1; 3072]].concat(), "r", None),
        d("cifar-torn.bin", [vec![3u8], vec![1; 3072], vec![0; 5]].concat(), "r", None),
        d("cifar-empty.bin", Vec::new(), "g", None),
        d("no-final-newline.csv", good.trim_end().as_bytes().to_vec(), "r", Some(8)),
    ]
}

#[test]
fn bad_data_files_keep_the_contract() {
    let dir = Scratch::new("data");
    tiny_models(&dir);
    let findings = Findings::new("data");
    let cases = bad_data();
    each(&cases, |case| {
        let file = dir.write(case.name, &case.bytes);
        let (model, params) =
            (p(&dir.path(&format!("{}.ebm", case.model))), p(&dir.path(&format!("{}.safetensors", case.model))));
        let out = dir.path(&format!("run-{}", case.name));
        let what = format!("data file {} ({} bytes) for the tiny model `{}`", case.name, case.bytes.len(), case.model);
        let keep = Some((case.name, &case.bytes[..]));
        let runs = [
            (args(&["train", &model, "--data", &p(&file), "--epochs", "1", "--out", &p(&out)]), false),
            (args(&["eval", &model, "--params", &params, "--data", &p(&file)]), true),
            (args(&["energy", &model, "--params", &params, "--data", &p(&file)]), true),
        ];
        let mut train_run = None;
        for (a, figures) in runs {
            let run = ebmc(&a, &dir.0);
            if a[0] == "train" {
                train_run = Some(run.clone());
            }
            if findings.check(&what, keep, &run, figures, &[]).is_some() {
                continue;
            }
            // A data error names the file it is in.
            if run.code == Some(1) && !run.stderr.contains(case.name) {
                findings.wrong(&what, &run, &format!("the error does not name the data file: {}", run.stderr.trim()));
            }
            if a[0] == "energy" && run.code == Some(0) {
                let printed = run.stdout.lines().skip(1).count();
                if let Some(expected) = case.rows.filter(|&n| n != printed) {
                    findings.wrong(&what, &run, &format!("{printed} energies printed for a file of {expected} rows (a row was taken for a header, or the file misread)"));
                }
            }
        }
        let left = harness::half_written(&out);
        if let Some(run) = train_run.filter(|_| !left.is_empty()) {
            findings.wrong(&what, &run, &format!("train left {} half-written: {left:?}", out.display()));
        }
    });
    // Fortran order: when the file is accepted, it must read as the same rows as the C-order file.
    let (model, params) = (p(&dir.path("r.ebm")), p(&dir.path("r.safetensors")));
    let reference = ebmc(&args(&["energy", &model, "--params", &params, "--data", &p(&dir.path("rows.csv"))]), &dir.0);
    assert_eq!(reference.code, Some(0), "energy on good rows: {}", reference.stderr);
    for name in ["fortran.npy", "fortran-spaced.npy"] {
        let run = ebmc(&args(&["energy", &model, "--params", &params, "--data", &p(&dir.path(name))]), &dir.0);
        if run.code == Some(0) && run.stdout != reference.stdout {
            findings.wrong(
                &format!("{name}: the rows of rows.csv stored column-major"),
                &run,
                &format!("read as other rows than rows.csv:\n{}\nagainst\n{}", run.stdout, reference.stdout),
            );
        }
    }
    findings.assert_none();
}

#[test]
fn data_sources_of_the_wrong_size_keep_the_contract() {
    let dir = Scratch::new("sources");
    let findings = Findings::new("sources");
    let model = |width: usize, data: &str| {
        format!(
            "model m {{\n    visible v : binary[{width}];\n    param b : real[{width}] = zeros;\n    energy e = -(b @ v);\n}}\n\ntrain m {{\n    data = {data} -> v;\n    objective = pl;\n    optimizer = sgd(lr: 0.1);\n    batch = 10;\n    epochs = 1;\n}}\n"
        )
    };
    let cases = vec![
        // The digits are 64 pixels: any other width is a misreading.
        ("digits() bound to binary[65]", model(65, "digits(binarize: 8)"), true),
        ("digits() bound to binary[32]", model(32, "digits(binarize: 8)"), true),
        ("digits() bound to binary[63]", model(63, "digits(binarize: 8)"), true),
        ("bars_and_stripes(size: 70)", model(4900, "bars_and_stripes(size: 70)"), false),
        ("bars_and_stripes(size: 64)", model(4096, "bars_and_stripes(size: 64)"), false),
        ("bars_and_stripes(size: 0)", model(1, "bars_and_stripes(size: 0)"), false),
        ("bars_and_stripes(size: -1)", model(1, "bars_and_stripes(size: -1)"), false),
        ("bars_and_stripes(size: 100000)", model(16, "bars_and_stripes(size: 100000)"), false),
    ];
    each(&cases, |(what, source, must_fail)| {
        let name = format!("{}.ebm", what.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        let file = dir.write(&name, source);
        let out = dir.path(&format!("run-{name}"));
        let run = ebmc(&args(&["train", &p(&file), "--epochs", "1", "--out", &p(&out)]), &dir.0);
        if findings.check(what, Some((&name, source.as_bytes())), &run, false, &[]).is_none()
            && *must_fail
            && run.code == Some(0)
        {
            findings.wrong(what, &run, "trained with exit 0 on rows of another width");
        }
    });
    findings.assert_none();
}

#[test]
fn bad_checkpoints_keep_the_contract() {
    let dir = Scratch::new("checkpoints");
    tiny_models(&dir);
    let good = std::fs::read(dir.path("r.safetensors")).unwrap();
    let st = |t: &[(&str, Vec<usize>, Vec<f32>)]| harness::safetensors(t, "F32");
    let (b, c) = (("b", vec![6], vec![0.1f32; 6]), ("c", vec![3], vec![-0.1f32; 3]));
    let w = |v: f32| ("W", vec![6, 3], vec![v; 18]);
    let mut nan_w = vec![0.1f32; 18];
    nan_w[7] = f32::NAN;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("wider.safetensors", st(&[("W", vec![6, 4], vec![0.1; 24]), b.clone(), ("c", vec![4], vec![0.0; 4])])),
        ("transposed.safetensors", st(&[("W", vec![3, 6], vec![0.1; 18]), b.clone(), c.clone()])),
        ("flat.safetensors", st(&[("W", vec![18], vec![0.1; 18]), b.clone(), c.clone()])),
        ("scalar-bias.safetensors", st(&[w(0.1), ("b", vec![], vec![0.1]), c.clone()])),
        ("missing-c.safetensors", st(&[w(0.1), b.clone()])),
        ("other-names.safetensors", st(&[("W1", vec![6, 4], vec![0.1; 24])])),
        ("empty-set.safetensors", st(&[])),
        ("nan-w.safetensors", st(&[("W", vec![6, 3], nan_w), b.clone(), c.clone()])),
        ("inf-b.safetensors", st(&[w(0.1), ("b", vec![6], vec![f32::INFINITY; 6]), c.clone()])),
        ("max-w.safetensors", st(&[w(f32::MAX), b.clone(), c.clone()])),
        ("1e38-w.safetensors", st(&[w(1e38), b.clone(), c.clone()])),
        ("f64.safetensors", harness::safetensors(&[w(0.1), b.clone(), c.clone()], "F64")),
        ("truncated.safetensors", good[..good.len() / 2].to_vec()),
        ("header-only.safetensors", good[..16].to_vec()),
        ("zero-bytes.safetensors", Vec::new()),
        ("huge-header.safetensors", [u64::MAX.to_le_bytes().to_vec(), good[8..].to_vec()].concat()),
        ("not-safetensors.safetensors", b"model r { }".to_vec()),
    ];
    // The DBM's own parameters: eval and energy must sum out both hidden layers or refuse.
    cases.push(("dbm-good.safetensors", std::fs::read(dir.path("d.safetensors")).unwrap()));
    // Checkpoint folders: a `latest` naming nothing, and one with no params.
    std::fs::create_dir_all(dir.path("ckpt-dangling")).unwrap();
    dir.write("ckpt-dangling/latest", "epoch-7");
    std::fs::create_dir_all(dir.path("ckpt-empty/epoch-1")).unwrap();
    dir.write("ckpt-empty/latest", "epoch-1");
    let findings = Findings::new("checkpoints");
    let mut jobs: Vec<(String, String, Option<Vec<u8>>)> = cases
        .into_iter()
        .map(|(name, bytes)| {
            dir.write(name, &bytes);
            (name.to_string(), p(&dir.path(name)), Some(bytes))
        })
        .collect();
    jobs.extend(["ckpt-dangling", "ckpt-empty", "no-such-checkpoint"].map(|n| (n.to_string(), p(&dir.path(n)), None)));
    jobs.push(("r.safetensors (good)".into(), p(&dir.path("r.safetensors")), None));
    each(&jobs, |(name, params, bytes)| {
        let model = p(&dir.path(if name.starts_with("dbm") { "d.ebm" } else { "r.ebm" }));
        let rows = p(&dir.path("rows.csv"));
        let csv = dir.path(&format!("samples-{name}.csv"));
        let what =
            format!("checkpoint {name} for the tiny {}", if name.starts_with("dbm") { "DBM" } else { "RBM 6x3" });
        let keep = bytes.as_ref().map(|b| (name.as_str(), &b[..]));
        let non_finite = name.starts_with("nan") || name.starts_with("inf");
        for (a, files) in [
            (args(&["eval", &model, "--params", params]), vec![]),
            (args(&["eval", &model, "--params", params, "--json"]), vec![]),
            (args(&["eval", &model, "--params", params, "--ais", "--runs", "4", "--temperatures", "100"]), vec![]),
            (args(&["energy", &model, "--params", params, "--data", &rows]), vec![]),
            (
                args(&["sample", &model, "--params", params, "--chains", "3", "--steps", "2", "--out", &p(&csv)]),
                vec![csv.clone()],
            ),
        ] {
            let run = ebmc(&a, &dir.0);
            if findings.check(&what, keep, &run, true, &files).is_some() {
                continue;
            }
            if non_finite && run.code == Some(0) {
                findings.wrong(
                    &what,
                    &run,
                    "a checkpoint holding NaN or infinity was used with exit 0 (it must be refused, naming the tensor)",
                );
            }
            // The header line alone: every figure was NaN and left out without a word.
            if a[0] == "eval" && run.code == Some(0) && run.stdout.trim().lines().count() < 2 {
                findings.wrong(&what, &run, &format!("eval printed no figure: {}", run.stdout.trim()));
            }
            if name.ends_with("(good)") && run.code != Some(0) {
                findings.wrong(&what, &run, &format!("good parameters refused: {}", run.stderr.trim()));
            }
        }
    });
    findings.assert_none();
}

/// A Gaussian MRF whose precision `I + P` is learned, by PCD with a step
/// large enough to leave it indefinite after the first update.
const MRF_LEARNED: &str = "model mrf {
    visible x : real[4];
    param m : real[4] = zeros;
    param P : real[4, 4] = normal(0, 0.01);
    energy e = 0.5 * sum(x * x) + 0.5 * ((x - m) @ P @ (x - m));
}
train mrf { data = csv(\"mrf.csv\") -> x; objective = pcd(k: 1, chains: 16); optimizer = sgd(lr: 1000); batch = 16; epochs = 2; }
";

/// The RBM with a train block that diverges (a huge learning rate) or is otherwise set to fail.
fn rbm_with(optimizer: &str) -> String {
    RBM.replace("optimizer = sgd(lr: 0.1);", optimizer)
}

#[test]
fn failed_or_empty_training_leaves_no_half_written_run_directory() {
    let dir = Scratch::new("atomic");
    tiny_models(&dir);
    dir.write("diverges.ebm", rbm_with("optimizer = sgd(lr: 1e30);"));
    dir.write("diverges-adam.ebm", rbm_with("optimizer = adam(lr: 1e30);"));
    dir.write("bad.csv", "1,0,1\n");
    dir.write("a-file", "not a folder");
    // A learned precision that one large step leaves indefinite: the next sweep cannot factor it.
    dir.write("mrf.ebm", MRF_LEARNED);
    dir.write(
        "mrf.csv",
        (0..64).map(|i| format!("{},{},{},{}\n", i % 3, -(i % 5), i % 2, i % 7 - 3)).collect::<String>(),
    );
    let r = p(&dir.path("r.ebm"));
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("a learning rate of 1e30 (sgd)", args(&["train", &p(&dir.path("diverges.ebm")), "--epochs", "3"])),
        ("a learning rate of 1e30 (adam)", args(&["train", &p(&dir.path("diverges-adam.ebm")), "--epochs", "3"])),
        ("a learned precision left indefinite by a step", args(&["train", &p(&dir.path("mrf.ebm"))])),
        ("rows of the wrong width", args(&["train", &r, "--data", &p(&dir.path("bad.csv"))])),
        ("--epochs 0", args(&["train", &r, "--epochs", "0"])),
        ("a data file that does not exist", args(&["train", &r, "--data", &p(&dir.path("missing.csv"))])),
    ];
    let findings = Findings::new("atomic");
    each(&cases, |(what, a)| {
        let out = dir.path(&format!("run-{}", what.replace(|c: char| !c.is_ascii_alphanumeric(), "_")));
        let mut a = a.clone();
        a.extend(["--out".into(), p(&out)]);
        let run = ebmc(&a, &dir.0);
        if findings.check(what, None, &run, false, &[]).is_some() {
            return;
        }
        if what.contains("precision")
            && !(run.code == Some(1) && run.stderr.contains("E0906") && run.stderr.contains("the precision of `x`"))
        {
            findings.wrong(what, &run, "expected exit 1 with E0906 naming the precision of `x`");
        }
        let mut left = harness::half_written(&out);
        // A run that wrote no checkpoint leaves no metrics or curve either.
        if !out.join("latest").exists() {
            left.extend(
                ["metrics.jsonl", "curve.png", "samples.png"]
                    .into_iter()
                    .filter(|f| out.join(f).exists())
                    .map(|f| format!("{f} without a checkpoint")),
            );
        }
        if !left.is_empty() {
            findings.wrong(what, &run, &format!("exit {:?}; left in {}: {left:?}", run.code, out.display()));
        }
    });
    // An --out that is a file is refused with exit 2.
    let run = ebmc(&args(&["train", &r, "--epochs", "1", "--out", &p(&dir.path("a-file"))]), &dir.0);
    if findings.check("--out naming a file", None, &run, false, &[]).is_none() && run.code != Some(2) {
        findings.wrong("--out naming a file", &run, &format!("exit {:?}, expected 2", run.code));
    }
    findings.assert_none();
}

#[test]
fn two_trainings_into_one_directory_do_not_interleave() {
    let dir = Scratch::new("lock");
    tiny_models(&dir);
    // Long enough (a few seconds) that the second run starts while the first is writing.
    dir.write("slow.ebm", RBM.replace("epochs = 2;", "epochs = 400;").replace("batch = 4;", "batch = 1;"));
    let slow = p(&dir.path("slow.ebm"));
    let out = p(&dir.path("shared-run"));
    let a = args(&["train", &slow, "--out", &out]);
    let long = |a: &[String]| harness::run(&bin(), a, &dir.0, &SLOW);
    let started = std::time::Instant::now();
    let (first, second, second_start) = std::thread::scope(|s| {
        let first = s.spawn(|| long(&a));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let second_start = started.elapsed().as_secs_f64();
        let second = ebmc(&a, &dir.0);
        (first.join().unwrap(), second, second_start)
    });
    let findings = Findings::new("lock");
    findings.check("the first of two runs into one --out", None, &first, false, &[]);
    findings.check("the second of two runs into one --out", None, &second, false, &[]);
    let overlapped = second_start < first.seconds;
    let what = "two runs of one training into one --out, the second started 0.3 s after the first";
    if first.code != Some(0) {
        findings.wrong(
            what,
            &first,
            &format!("the first run, which had the directory to itself, failed: {}", first.stderr.trim()),
        );
    }
    // Epochs the second run finished (its per-epoch lines): with a lock it finishes none.
    let epochs = second.stderr.lines().filter(|l| l.trim_start().starts_with("epoch") && l.contains("loss")).count();
    if overlapped && second.code == Some(0) {
        findings.wrong(what, &second, "the second run exited 0: nothing stopped it from writing into the directory the first was writing (no lock)");
    } else if overlapped && epochs > 0 {
        findings.wrong(
            what,
            &second,
            &format!(
                "the second run wrote {epochs} epoch(s) into the first's directory before it stopped (no lock): {}",
                second.stderr.lines().last().unwrap_or("")
            ),
        );
    }
    // What the first run leaves is what it leaves alone, byte for byte.
    let solo = p(&dir.path("solo-run"));
    let alone = long(&args(&["train", &slow, "--out", &solo]));
    let params = |d: &str| std::fs::read(Path::new(d).join("epoch-400/params.safetensors")).unwrap_or_default();
    if alone.code == Some(0) && params(&out) != params(&solo) {
        findings.wrong(
            what,
            &second,
            "the shared directory's last checkpoint differs from the same run made alone (the runs interleaved)",
        );
    }
    let left = harness::half_written(Path::new(&out));
    if !left.is_empty() {
        findings.wrong("two runs into one --out at once", &second, &format!("left half-written: {left:?}"));
    }
    findings.assert_none();
}

#[test]
fn training_is_deterministic_and_resume_keeps_the_seed() {
    let dir = Scratch::new("determinism");
    tiny_models(&dir);
    let r = p(&dir.path("r.ebm"));
    let findings = Findings::new("determinism");
    let params_of = |run: &str| std::fs::read(dir.path(run).join("epoch-4/params.safetensors")).unwrap_or_default();
    let train = |extra: &[&str]| {
        let mut a = args(&["train", &r]);
        a.extend(args(extra));
        let run = ebmc(&a, &dir.0);
        findings.check("the tiny RBM", None, &run, false, &[]);
        if run.code != Some(0) {
            findings.wrong("the tiny RBM", &run, &format!("training failed: {}", run.stderr.trim()));
        }
        run
    };
    train(&["--seed", "5", "--epochs", "4", "--out", &p(&dir.path("a"))]);
    train(&["--seed", "5", "--epochs", "4", "--out", &p(&dir.path("b"))]);
    let run = train(&["--seed", "5", "--epochs", "2", "--out", &p(&dir.path("c"))]);
    let resumed = train(&["--resume", &p(&dir.path("c")), "--epochs", "4"]);
    if params_of("a").is_empty() || params_of("a") != params_of("b") {
        findings.wrong("two runs with --seed 5", &run, "the same seed gave different parameters");
    }
    if params_of("c") != params_of("a") {
        findings.wrong(
            "--seed 5 for 2 epochs, then --resume to 4",
            &resumed,
            "resumed parameters differ from an uninterrupted run with the same --seed",
        );
    }
    findings.assert_none();
}

#[test]
fn check_reports_what_plan_and_sampling_would_refuse() {
    let dir = Scratch::new("check-plan");
    dir.write("rows.csv", "0,1,0,1\n1,0,1,0\n");
    let findings = Findings::new("check-plan");
    let train = |objective: &str| {
        format!(
            "\ntrain m {{\n    data = csv(\"rows.csv\") -> v;\n    objective = {objective};\n    optimizer = sgd(lr: 0.1);\n    batch = 2;\n    epochs = 1;\n}}\n"
        )
    };
    // (what, source, what `check` must print: an error, or a warning)
    let cases = [
        (
            "an energy linear in an unbounded real (E0401)",
            "model m {\n    visible x : real[2];\n    energy e = sum(x);\n}\n".to_string(),
            "error",
        ),
        (
            "a negative quadratic energy on an unbounded real",
            "model m {\n    visible x : real[2];\n    energy e = -0.5 * sum(square(x));\n}\n".to_string(),
            "error",
        ),
        (
            "a negative quartic energy on an unbounded real",
            "model m {\n    visible x : real[2];\n    energy e = 0.5 * sum(square(x)) - sum(square(square(x)));\n}\n"
                .to_string(),
            "error",
        ),
        (
            "score matching on binary data (E0402)",
            format!(
                "model m {{\n    visible v : binary[4];\n    param b : real[4] = zeros;\n    energy e = -(b @ v);\n}}\n{}",
                train("sm")
            ),
            "error",
        ),
        (
            // A quartic term: a quadratic energy's conditional is Gaussian, which `gibbs` may sample exactly.
            "Gibbs on a real variable (E0404)",
            "model m {\n    visible x : real[2];\n    energy e = 0.5 * sum(square(x)) + 0.1 * sum(x ^ 4);\n    sample { x: gibbs; }\n}\n"
                .to_string(),
            "error",
        ),
        (
            "score matching on a bounded real",
            format!(
                "model m {{\n    visible v : real[4] in [0, 1];\n    param b : real[4] = zeros;\n    energy e = 0.5 * sum(square(v - b));\n}}\n{}",
                train("sm")
            ),
            "warning",
        ),
    ];
    for (i, (what, source, expected)) in cases.iter().enumerate() {
        let file = dir.write(&format!("case{i}.ebm"), source);
        let run = ebmc(&args(&["check", &p(&file)]), &dir.0);
        if findings.check(what, Some((&format!("check-plan-{i}.ebm"), source.as_bytes())), &run, false, &[]).is_some() {
            continue;
        }
        let said = run.stderr.lines().any(|l| l.starts_with(expected));
        let exit_right = if *expected == "error" { run.code == Some(1) } else { run.code == Some(0) };
        if !said || !exit_right {
            findings.add(
                Class::Wrong,
                what,
                Some((&format!("check-plan-{i}.ebm"), source.as_bytes())),
                &run,
                &format!(
                    "`check` should print {} {expected} (exit {}); it exited {:?} with: {}",
                    if *expected == "error" { "an" } else { "a" },
                    u8::from(*expected == "error"),
                    run.code,
                    run.stderr.trim()
                ),
            );
        }
    }
    findings.assert_none();
}

#[test]
fn bounded_reals_stay_in_their_box_when_sampled() {
    let dir = Scratch::new("box");
    let findings = Findings::new("box");
    // Energies that push hard against the walls: the samples must stay inside.
    let cases = [
        (
            "a linear pull past both walls",
            "model m {\n    visible x : real[3] in [0, 1];\n    param w : real[3] = ones;\n    energy e = 20 * sum(x) - 40 * (w @ x);\n}\n",
        ),
        (
            "a quadratic centred outside the box",
            "model m {\n    visible x : real[3] in [0, 1];\n    energy e = 5 * sum(square(x + 3));\n}\n",
        ),
        // A gradient step of 10 box widths: one reflection cannot bring it back.
        (
            "a steep pull below the lower wall",
            "model m {\n    visible x : real[3] in [0, 1];\n    energy e = 1000 * sum(x);\n}\n",
        ),
        (
            "a steep push above the upper wall",
            "model m {\n    visible x : real[3] in [0, 1];\n    energy e = -1000 * sum(x);\n}\n",
        ),
    ];
    for (i, (what, source)) in cases.iter().enumerate() {
        let file = dir.write(&format!("box{i}.ebm"), source);
        let out = dir.path(&format!("box{i}.csv"));
        let run = ebmc(
            &args(&["sample", &p(&file), "--chains", "200", "--steps", "50", "--seed", "3", "--out", &p(&out)]),
            &dir.0,
        );
        if findings
            .check(what, Some((&format!("box{i}.ebm"), source.as_bytes())), &run, true, std::slice::from_ref(&out))
            .is_some()
            || run.code != Some(0)
        {
            if run.code != Some(0) {
                findings.wrong(what, &run, &format!("sampling failed: {}", run.stderr.trim()));
            }
            continue;
        }
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let values: Vec<f64> = text
            .lines()
            .skip(1)
            .flat_map(|l| l.split(',').map(|c| c.trim().parse::<f64>().unwrap_or(f64::NAN)).collect::<Vec<_>>())
            .collect();
        let outside = values.iter().filter(|v| !(0.0..=1.0).contains(*v)).count();
        if values.is_empty() || outside > 0 {
            let worst =
                values.iter().cloned().fold(0.0f64, |w, v| if (v - 0.5).abs() > (w - 0.5).abs() { v } else { w });
            findings.wrong(
                what,
                &run,
                &format!("{outside} of {} sampled values lie outside [0, 1] (furthest: {worst})", values.len()),
            );
        }
    }
    findings.assert_none();
}

/// Every file under `dir` whose name shows an unfinished write.
fn temp_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") || name.contains("partial") {
            found.push(p(&e.path()));
        }
        if e.path().is_dir() {
            found.extend(temp_files(&e.path()));
        }
    }
    found
}

#[test]
fn a_full_disk_leaves_no_temporary_or_cut_files() {
    let dir = Scratch::new("full-disk");
    tiny_models(&dir);
    let r = p(&dir.path("r.ebm"));
    let findings = Findings::new("full-disk");
    // Each size lets a different write be the first that fails: the first
    // curve.png (6 KB), or the curve after epoch 1, 2 or 3 (17, 21, 23 KB),
    // each after a checkpoint; the samples (600 B) and the formatted file (70 B).
    for bytes in [0u64, 300, 6000, 17000, 21000] {
        let limits = harness::Limits { file_bytes: Some(bytes), ..LIMITS };
        let what = format!("files limited to {bytes} bytes (RLIMIT_FSIZE), as on a full disk");
        let out = dir.path(&format!("run-{bytes}"));
        let run = harness::run(&bin(), &args(&["train", &r, "--epochs", "3", "--out", &p(&out)]), &dir.0, &limits);
        if findings.check(&what, None, &run, false, &[]).is_none() {
            let mut left = harness::half_written(&out);
            // half_written looks one folder down; temp files deeper than that count too.
            left.extend(temp_files(&out).into_iter().filter(|f| {
                Path::new(f).parent() != Some(out.as_path())
                    && Path::new(f).parent().is_none_or(|d| d.parent() != Some(out.as_path()))
            }));
            if !left.is_empty() {
                findings.wrong(&what, &run, &format!("exit {:?}; left in {}: {left:?}", run.code, out.display()));
            }
        }
        let samples = dir.path(&format!("samples-{bytes}.csv"));
        let run = harness::run(
            &bin(),
            &args(&[
                "sample",
                &r,
                "--params",
                &p(&dir.path("r.safetensors")),
                "--chains",
                "50",
                "--steps",
                "2",
                "--out",
                &p(&samples),
            ]),
            &dir.0,
            &limits,
        );
        if findings.check(&what, None, &run, true, &[]).is_none() {
            let tmp: Vec<String> =
                temp_files(&dir.0).into_iter().filter(|f| f.contains(&format!("samples-{bytes}.csv"))).collect();
            let cut = run.code != Some(0) && samples.exists();
            if !tmp.is_empty() || cut {
                findings.wrong(
                    &what,
                    &run,
                    &format!(
                        "exit {:?}; left {tmp:?}{}",
                        run.code,
                        if cut { " and a samples file although sampling failed" } else { "" }
                    ),
                );
            }
        }
        let messy = "model m{visible v:binary[2];energy e=sum(v);}";
        let file = dir.write(&format!("messy-{bytes}.ebm"), messy);
        let run = harness::run(&bin(), &args(&["fmt", &p(&file)]), &dir.0, &limits);
        if findings.check(&what, None, &run, false, &[]).is_none() {
            let now = std::fs::read_to_string(&file).unwrap_or_default();
            let tmp: Vec<String> =
                temp_files(&dir.0).into_iter().filter(|f| f.contains(&format!("messy-{bytes}.ebm"))).collect();
            if !tmp.is_empty() || (run.code != Some(0) && now != messy) {
                findings.wrong(
                    &what,
                    &run,
                    &format!("fmt exit {:?}; left {tmp:?}; the file now reads {now:?}", run.code),
                );
            }
        }
    }
    findings.assert_none();
}

#[test]
fn a_killed_training_resumes_to_the_same_bytes() {
    let dir = Scratch::new("kill");
    tiny_models(&dir);
    // 400 epochs of one-row batches: a few seconds of checkpoints being written and cleaned up.
    dir.write("slow.ebm", RBM.replace("epochs = 2;", "epochs = 400;").replace("batch = 4;", "batch = 1;"));
    let slow = p(&dir.path("slow.ebm"));
    let findings = Findings::new("kill");
    let reference = dir.path("uninterrupted");
    let long = |a: &[String]| harness::run(&bin(), a, &dir.0, &SLOW);
    let run = long(&args(&["train", &slow, "--out", &p(&reference)]));
    findings.check("the uninterrupted run", None, &run, false, &[]);
    let last = |d: &Path| std::fs::read(d.join("epoch-400/params.safetensors")).unwrap_or_default();
    assert!(!last(&reference).is_empty(), "the uninterrupted run wrote no epoch-400: {}", run.stderr);
    for (k, delay_ms) in [150u64, 700, 1300, 1900].into_iter().enumerate() {
        let out = dir.path(&format!("killed-{k}"));
        let what = format!("a run killed (SIGKILL) after {delay_ms} ms, then resumed");
        let kill = harness::Limits { wall: std::time::Duration::from_millis(delay_ms), ..LIMITS };
        let killed = harness::run(&bin(), &args(&["train", &slow, "--out", &p(&out)]), &dir.0, &kill);
        // A kill may leave a staging folder or a temp file, never a checkpoint missing a file.
        let broken: Vec<String> = harness::half_written(&out)
            .into_iter()
            .filter(|f| !f.ends_with(".tmp") && !f.contains("partial"))
            .collect();
        if !broken.is_empty() {
            findings.wrong(&what, &killed, &format!("after the kill: {broken:?}"));
        }
        let resumed = if out.join("latest").exists() {
            long(&args(&["train", &slow, "--resume", &p(&out)]))
        } else {
            long(&args(&["train", &slow, "--out", &p(&out)]))
        };
        if findings.check(&what, None, &resumed, false, &[]).is_some() {
            continue;
        }
        let mut left = harness::half_written(&out);
        left.extend(temp_files(&out));
        if resumed.code != Some(0) || !left.is_empty() {
            findings.wrong(
                &what,
                &resumed,
                &format!(
                    "the resumed run exited {:?} and left {left:?}: {}",
                    resumed.code,
                    resumed.stderr.lines().last().unwrap_or("")
                ),
            );
        } else if last(&out) != last(&reference) {
            findings.wrong(
                &what,
                &resumed,
                "the resumed run's epoch-400 parameters differ from the uninterrupted run's",
            );
        }
    }
    findings.assert_none();
}
