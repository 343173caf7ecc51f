//! A long fuzz campaign against the release `ebmc` binary, with the mutators
//! and the contract of `tests/robustness.rs`:
//!
//!     cargo build --release
//!     cargo run --release --example fuzz_campaign -- --count 100000 --seed 1 [--jobs 2]
//!
//! Input `i` of seed `s` is always the same input. Most are mutated zoo
//! files (through check, plan, graph, fmt, and sample when they check);
//! some are the generated deep and huge inputs, mutated; some are mutated
//! data files and checkpoints for a tiny RBM (through energy, train, eval,
//! sample). Every input that breaks the contract is written, with its
//! command and what broke, under `--failures` (default
//! `target/fuzz-failures/seed-S`); `--only I` reruns input `I` alone.

// Shared with tests/robustness.rs, which uses the parts this program does not.
#[allow(dead_code)]
#[path = "../tests/robustness/harness.rs"]
mod harness;

use harness::{Class, Limits, Rng, Run, breach};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Options {
    count: u64,
    seed: u64,
    jobs: usize,
    bin: PathBuf,
    failures: PathBuf,
    limits: Limits,
    /// Failing inputs kept per signature (every failure is counted).
    keep: usize,
    only: Option<u64>,
}

const USAGE: &str = "usage: fuzz_campaign [--count N] [--seed S] [--jobs J] [--bin PATH] [--failures DIR] [--timeout SECS] [--memory-gib G] [--keep K] [--only INDEX]";

fn options() -> Result<Options, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut o = Options {
        count: 10_000,
        seed: 1,
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        bin: root.join("target/release/ebmc"),
        failures: PathBuf::new(),
        limits: harness::LIMITS,
        keep: 20,
        only: None,
    };
    let mut failures = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: `{v}` is not a whole number\n{USAGE}"));
        match flag.as_str() {
            "--count" => o.count = number(value()?)?,
            "--seed" => o.seed = number(value()?)?,
            "--jobs" => o.jobs = number(value()?)?.max(1) as usize,
            "--bin" => o.bin = PathBuf::from(value()?),
            "--failures" => failures = Some(PathBuf::from(value()?)),
            "--timeout" => o.limits.wall = Duration::from_secs(number(value()?)?.max(1)),
            "--memory-gib" => o.limits.memory_bytes = number(value()?)?.max(1) << 30,
            "--keep" => o.keep = number(value()?)? as usize,
            "--only" => o.only = Some(number(value()?)?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    o.failures = failures.unwrap_or_else(|| root.join(format!("target/fuzz-failures/seed-{}", o.seed)));
    if !o.bin.is_file() {
        return Err(format!("no ebmc binary at {}; run `cargo build --release` or give --bin PATH", o.bin.display()));
    }
    Ok(o)
}

/// What the inputs are made from, loaded once.
struct Material {
    zoo: Vec<(String, String)>,
    donors: Vec<String>,
    generated: Vec<harness::Generated>,
    rows: String,
    params: Vec<u8>,
}

/// One run of one input and what came of it.
struct Outcome {
    index: u64,
    /// The input's file name in the failures folder, and its bytes.
    file: String,
    bytes: Vec<u8>,
    how: String,
    run: Run,
    breach: Option<(Class, String)>,
}

/// A worker's folder, with the tiny RBM, its rows and parameters.
fn workspace(dir: &Path, m: &Material) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("r.ebm"), harness::RBM)?;
    std::fs::write(dir.join("rows.csv"), &m.rows)?;
    std::fs::write(dir.join("r.safetensors"), &m.params)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The runs of one input, in order.
struct Runs<'a> {
    o: &'a Options,
    dir: &'a Path,
    index: u64,
    outcomes: Vec<Outcome>,
}

impl Runs<'_> {
    /// Runs `ebmc args` on the input and returns its exit code and stdout.
    fn go(
        &mut self,
        file: &str,
        bytes: &[u8],
        how: &str,
        args: Vec<String>,
        figures: bool,
        files: &[PathBuf],
    ) -> (Option<i32>, String) {
        for f in files {
            let _ = std::fs::remove_file(f);
        }
        let run = harness::run(&self.o.bin, &args, self.dir, &self.o.limits);
        let breach = breach(&run, figures, files);
        let result = (run.code, run.stdout.clone());
        self.outcomes.push(Outcome {
            index: self.index,
            file: file.to_string(),
            bytes: bytes.to_vec(),
            how: how.to_string(),
            run,
            breach,
        });
        result
    }

    /// Marks the last run as wrong, unless it already broke the contract.
    fn wrong(&mut self, detail: String) {
        if let Some(last) = self.outcomes.last_mut().filter(|l| l.breach.is_none()) {
            last.breach = Some((Class::Wrong, detail));
        }
    }
}

/// Builds input `index` and runs it through its commands in `dir`.
fn fuzz_one(o: &Options, m: &Material, dir: &Path, index: u64) -> Vec<Outcome> {
    let mut rng = Rng::for_input(o.seed, index);
    let mut r = Runs { o, dir, index, outcomes: Vec::new() };
    let samples = dir.join("samples.csv");
    match rng.below(100) {
        kind @ 0..=89 => {
            // A mutated model file: a zoo file, or (one in nine) a generated deep or huge one.
            let (name, text) = if kind < 80 {
                let (n, t) = rng.pick(&m.zoo);
                (n.clone(), t.clone())
            } else {
                let g = rng.pick(&m.generated);
                (format!("generated: {}", g.name), g.source.clone())
            };
            let (bytes, how) = harness::mutate(&mut rng, &text, &m.donors);
            let how = format!("{name} mutated: {}", how.join("; "));
            let path = dir.join("input.ebm");
            std::fs::write(&path, &bytes).expect("worker folder is writable");
            let file = format!("{index}.ebm");
            let on = |command: &str| vec![command.to_string(), s(&path)];
            let checks = r.go(&file, &bytes, &how, on("check"), false, &[]).0 == Some(0);
            let plan = r.go(&file, &bytes, &how, on("plan"), false, &[]);
            if checks && plan.0 == Some(1) {
                r.wrong("`check` exits 0 on this file but `plan` refuses it with exit 1".into());
            }
            let graph = r.go(&file, &bytes, &how, on("graph"), false, &[]).1;
            if checks {
                let a = ["sample", &s(&path), "--chains", "2", "--steps", "2", "--out", &s(&samples)]
                    .map(String::from)
                    .to_vec();
                r.go(&file, &bytes, &how, a, true, std::slice::from_ref(&samples));
            }
            // Last: fmt rewrites the file; it must keep the meaning and be idempotent.
            if r.go(&file, &bytes, &how, on("fmt"), false, &[]).0 == Some(0) && checks {
                let formatted = std::fs::read(&path).unwrap_or_default();
                if r.go(&file, &bytes, &how, on("check"), false, &[]).0 != Some(0) {
                    r.wrong(format!(
                        "the file checks, but not once formatted:\n{}",
                        String::from_utf8_lossy(&formatted)
                    ));
                }
                let replanned = r.go(&file, &bytes, &how, on("plan"), false, &[]).1;
                let regraphed = r.go(&file, &bytes, &how, on("graph"), false, &[]).1;
                if (replanned, regraphed) != (plan.1, graph) {
                    r.wrong(format!(
                        "formatting changed the plan or graph; formatted text:\n{}",
                        String::from_utf8_lossy(&formatted)
                    ));
                }
                r.go(&file, &bytes, &how, on("fmt"), false, &[]);
                if std::fs::read(&path).unwrap_or_default() != formatted {
                    r.wrong("fmt is not idempotent: a second fmt changed the formatted file".into());
                }
            }
        }
        90..=94 => {
            let (bytes, how) = harness::mutate(&mut rng, &m.rows, std::slice::from_ref(&m.rows));
            let how = format!("rows.csv of the tiny RBM mutated: {}", how.join("; "));
            let data = dir.join("input.csv");
            std::fs::write(&data, &bytes).expect("worker folder is writable");
            let (model, params, out) = (dir.join("r.ebm"), dir.join("r.safetensors"), dir.join("run"));
            let file = format!("{index}.csv");
            r.go(
                &file,
                &bytes,
                &how,
                ["energy", &s(&model), "--params", &s(&params), "--data", &s(&data)].map(String::from).to_vec(),
                true,
                &[],
            );
            r.go(
                &file,
                &bytes,
                &how,
                ["eval", &s(&model), "--params", &s(&params), "--data", &s(&data), "--json"].map(String::from).to_vec(),
                true,
                &[],
            );
            let _ = std::fs::remove_dir_all(&out);
            r.go(
                &file,
                &bytes,
                &how,
                ["train", &s(&model), "--data", &s(&data), "--epochs", "1", "--out", &s(&out)]
                    .map(String::from)
                    .to_vec(),
                false,
                &[],
            );
            let left = harness::half_written(&out);
            if !left.is_empty() {
                r.wrong(format!("train left {} half-written: {left:?}", out.display()));
            }
        }
        _ => {
            let (bytes, how) = harness::mutate_bytes(&mut rng, &m.params);
            let how = format!("parameters of the tiny RBM mutated: {}", how.join("; "));
            let params = dir.join("input.safetensors");
            std::fs::write(&params, &bytes).expect("worker folder is writable");
            let (model, rows) = (dir.join("r.ebm"), dir.join("rows.csv"));
            let file = format!("{index}.safetensors");
            r.go(
                &file,
                &bytes,
                &how,
                ["eval", &s(&model), "--params", &s(&params), "--json"].map(String::from).to_vec(),
                true,
                &[],
            );
            r.go(
                &file,
                &bytes,
                &how,
                ["energy", &s(&model), "--params", &s(&params), "--data", &s(&rows)].map(String::from).to_vec(),
                true,
                &[],
            );
            let a =
                ["sample", &s(&model), "--params", &s(&params), "--chains", "2", "--steps", "2", "--out", &s(&samples)]
                    .map(String::from)
                    .to_vec();
            r.go(&file, &bytes, &how, a, true, std::slice::from_ref(&samples));
        }
    }
    r.outcomes
}

/// Groups failures that are one bug: the panic's location, or the kind of abort.
fn signature(class: Class, detail: &str, command: &str) -> String {
    let place = detail
        .split("panicked at ")
        .nth(1)
        .map(|rest| rest.split(['\n', ' ']).next().unwrap_or("").trim_end_matches(':').to_string())
        .or_else(|| detail.contains("stack overflow").then(|| "stack overflow".to_string()))
        .or_else(|| detail.contains("memory allocation of").then(|| "failed allocation".to_string()))
        .unwrap_or_default();
    format!("{} {command} {place}", class.name()).trim_end().to_string()
}

#[derive(Default)]
struct Tally {
    inputs: u64,
    runs: u64,
    exits: BTreeMap<i32, u64>,
    classes: BTreeMap<Class, u64>,
    signatures: BTreeMap<String, (u64, u64)>,
    failing_inputs: u64,
    seconds: f64,
}

impl Tally {
    fn add(&mut self, o: &Options, outcomes: &[Outcome]) {
        self.inputs += 1;
        let mut failed = false;
        for out in outcomes {
            self.runs += 1;
            self.seconds += out.run.seconds;
            if let Some(code) = out.run.code.filter(|c| (0..=2).contains(c)) {
                *self.exits.entry(code).or_default() += 1;
            }
            let Some((class, detail)) = &out.breach else { continue };
            failed = true;
            *self.classes.entry(*class).or_default() += 1;
            let sig = signature(*class, detail, &out.run.args[0]);
            let seen = self.signatures.entry(sig.clone()).or_insert((0, out.index));
            seen.0 += 1;
            if seen.0 as usize <= o.keep {
                keep(o, out, class, detail, &sig);
            }
        }
        self.failing_inputs += u64::from(failed);
    }

    fn line(&self, elapsed: f64) -> String {
        let failures: u64 = self.classes.values().sum();
        format!(
            "{} inputs, {} runs in {elapsed:.0}s ({:.1} inputs/s); exit 0/1/2: {}/{}/{}; {failures} failing runs in {} inputs",
            self.inputs,
            self.runs,
            self.inputs as f64 / elapsed.max(1e-9),
            self.exits.get(&0).unwrap_or(&0),
            self.exits.get(&1).unwrap_or(&0),
            self.exits.get(&2).unwrap_or(&0),
            self.failing_inputs
        )
    }
}

/// Writes a failing input and how to reproduce it.
fn keep(o: &Options, out: &Outcome, class: &Class, detail: &str, sig: &str) {
    let dir = o.failures.join(class.name());
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let stem = format!("{}-{}", out.index, out.run.args[0]);
    let _ = std::fs::write(dir.join(&out.file), &out.bytes);
    let note = format!(
        "signature: {sig}\ninput: {} (seed {}, index {})\nmutation: {}\ncommand: ebmc {}\nexit: {:?}, signal {:?}, {:.2}s\nreproduce: cargo run --release --example fuzz_campaign -- --seed {} --only {}\n\n{detail}\n\n--- stderr ---\n{}\n",
        out.file,
        o.seed,
        out.index,
        out.how,
        out.run.args.join(" "),
        out.run.code,
        out.run.signal,
        out.run.seconds,
        o.seed,
        out.index,
        out.run.stderr
    );
    let _ = std::fs::write(dir.join(format!("{stem}.txt")), note);
}

fn main() -> std::process::ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let zoo = harness::zoo();
    let m = Material {
        donors: zoo.iter().map(|(_, t)| t.clone()).collect(),
        zoo,
        generated: harness::generated(),
        rows: harness::rows_csv(&harness::ROWS),
        params: harness::rbm_params(),
    };
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/fuzz-work/{}", std::process::id()));
    let (first, count) = match o.only {
        Some(i) => (i, 1),
        None => (0, o.count),
    };
    println!(
        "fuzz campaign: {count} inputs from seed {} (first {first}), {} jobs, binary {}, {:.0}s and {} GiB per run; failures to {}",
        o.seed,
        o.jobs,
        o.bin.display(),
        o.limits.wall.as_secs_f64(),
        o.limits.memory_bytes >> 30,
        o.failures.display()
    );
    let next = AtomicU64::new(first);
    let started = Instant::now();
    let (send, receive) = mpsc::channel::<Vec<Outcome>>();
    let mut tally = Tally::default();
    std::thread::scope(|scope| {
        for worker in 0..o.jobs.min(count.max(1) as usize) {
            let (send, next, m, o, dir) = (send.clone(), &next, &m, &o, work.join(format!("worker-{worker}")));
            scope.spawn(move || {
                workspace(&dir, m).expect("worker folder can be made");
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= first + count || send.send(fuzz_one(o, m, &dir, index)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(send);
        let mut shown = Instant::now();
        for outcomes in receive {
            if o.only.is_some() {
                for out in &outcomes {
                    println!(
                        "ebmc {}\n  exit {:?} signal {:?} in {:.2}s; {}",
                        out.run.args.join(" "),
                        out.run.code,
                        out.run.signal,
                        out.run.seconds,
                        out.breach
                            .as_ref()
                            .map_or("keeps the contract".to_string(), |(c, d)| format!("{}: {d}", c.name()))
                    );
                }
                println!("input: {}", outcomes.first().map_or("", |o| o.how.as_str()));
            }
            tally.add(&o, &outcomes);
            if shown.elapsed() > Duration::from_secs(10) {
                println!("{}", tally.line(started.elapsed().as_secs_f64()));
                shown = Instant::now();
            }
        }
    });
    let _ = std::fs::remove_dir_all(&work);
    let elapsed = started.elapsed().as_secs_f64();
    println!("{}", tally.line(elapsed));
    println!("\n| outcome | runs |\n|---|---:|");
    println!("| inputs | {} |", tally.inputs);
    println!("| runs | {} (mean {:.3}s each) |", tally.runs, tally.seconds / tally.runs.max(1) as f64);
    for code in 0..=2 {
        println!("| exit {code} | {} |", tally.exits.get(&code).unwrap_or(&0));
    }
    for class in Class::ALL {
        println!("| {} | {} |", class.name(), tally.classes.get(&class).unwrap_or(&0));
    }
    if !tally.signatures.is_empty() {
        println!("\n| failure signature | runs | first input |\n|---|---:|---:|");
        for (sig, (n, first)) in &tally.signatures {
            println!("| {sig} | {n} | {first} |");
        }
        println!("\nfailing inputs (up to {} per signature) are in {}", o.keep, o.failures.display());
    }
    if tally.classes.is_empty() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) }
}
