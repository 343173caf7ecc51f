//! Timing helpers and baselines shared by the benchmarks; each bench uses some of them.
#![allow(dead_code)]

use dfdx::prelude::*;
use std::time::Instant;

/// Median seconds of `f` over `reps` runs after one warm-up.
pub fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

/// Median seconds of one raw dfdx forward pass of an MLP 2 -> 128 -> 128 -> 1
/// (swish) on 256 points: the baseline for steps on that energy.
pub fn mlp_forward(dev: &Cpu) -> f64 {
    let x: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(256, 2));
    let w0: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(2, 128));
    let w1: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(128, 128));
    let w2: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(128, 1));
    median(50, || {
        let a = x.clone().matmul(w0.clone());
        let a = a.clone() * a.sigmoid();
        let b = a.matmul(w1.clone());
        let b = b.clone() * b.sigmoid();
        std::hint::black_box(b.matmul(w2.clone()));
    })
}

/// Median seconds of one `m×k×n` product by the `gemm` crate (what ebmc's
/// compiled steps call) over `reps` runs, with either operand stored
/// transposed: `(k, m)` or `(n, k)`, row-major.
pub fn gemm_product(
    (m, k, n): (usize, usize, usize),
    (lhs_t, rhs_t): (bool, bool),
    parallelism: gemm::Parallelism,
    reps: usize,
) -> f64 {
    let lhs: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let rhs: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut out = vec![0.0f32; m * n];
    let s = |x: usize| x as isize;
    let (lhs_cs, lhs_rs) = if lhs_t { (s(m), 1) } else { (1, s(k)) };
    let (rhs_cs, rhs_rs) = if rhs_t { (s(k), 1) } else { (1, s(n)) };
    median(reps, || {
        // SAFETY: every operand holds its extents under the strides given, and none overlaps another.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                s(n),
                false,
                lhs.as_ptr(),
                lhs_cs,
                lhs_rs,
                rhs.as_ptr(),
                rhs_cs,
                rhs_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        std::hint::black_box(&out);
    })
}

/// A CPU trainer for model `name` of `src` (its train block's options), from
/// parameters drawn with seed 1.
pub fn trainer(src: &str, name: &str) -> ebmc::backend::Trainer {
    let compiled = ebmc::compile(src).expect("bench model compiles");
    let (plans, _) = ebmc::plan(&compiled.program).expect("plans");
    let (model, train) = (&compiled.program.models[name], &compiled.program.trains[name]);
    let plan = plans.iter().find(|p| p.model == name).expect("the model's plan");
    let params = ebmc::tensor::initialise(&ebmc::ir::program_to_ir(model).params, 1);
    ebmc::backend::Trainer::new(model, plan, train, &params, &Default::default(), 1, Default::default())
        .expect("trainer")
}

/// Median seconds of `f` after two warm-up calls, over `seconds` of calls
/// (at least `min_reps`, at most `cap`), and the count.
pub fn timed(seconds: f64, (min_reps, cap): (usize, usize), mut f: impl FnMut()) -> (f64, usize) {
    f();
    f();
    let mut t = Vec::new();
    let mut spent = 0.0;
    while t.len() < min_reps || (spent < seconds && t.len() < cap) {
        let s = Instant::now();
        f();
        t.push(s.elapsed().as_secs_f64());
        spent += t[t.len() - 1];
    }
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t.len())
}

/// Little-endian bytes of `values`, as the anchor scripts read them.
pub fn f32_bytes<'a>(values: impl IntoIterator<Item = &'a f32>) -> Vec<u8> {
    values.into_iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A Python anchor script, running: it answers each request line with one
/// line, and opens with a line `PREFIX NOTE` (its threading).
pub struct Anchor {
    child: std::process::Child,
    answers: std::io::BufReader<std::process::ChildStdout>,
    /// What the script calls itself in errors ("the PyTorch script").
    what: &'static str,
    /// The opening line after its prefix.
    pub note: String,
}

impl Anchor {
    /// Starts `python3 benches/SCRIPT ARGS...` once `import MODULE` works, or says why not.
    pub fn start(module: &str, script: &str, args: &[String], what: &'static str) -> Result<Anchor, String> {
        let check = std::process::Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        if !check.status.success() {
            let why = String::from_utf8_lossy(&check.stderr);
            return Err(format!("`python3 -c \"import {module}\"` fails: {}", why.trim().lines().last().unwrap_or("")));
        }
        let script = format!("{}/benches/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = std::process::Command::new("python3")
            .arg(&script)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut anchor = Anchor { child, answers: std::io::BufReader::new(stdout), what, note: String::new() };
        let line = anchor.line()?;
        anchor.note =
            line.split_once(' ').map(|(_, n)| n.to_string()).ok_or_else(|| format!("{script} said {line:?}"))?;
        Ok(anchor)
    }

    fn line(&mut self) -> Result<String, String> {
        use std::io::BufRead;
        let mut line = String::new();
        match self.answers.read_line(&mut line) {
            Ok(n) if n > 0 => Ok(line.trim().to_string()),
            _ => {
                let _ = self.child.kill();
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                Err(format!("{} stopped: {}", self.what, err.trim().lines().last().unwrap_or("")))
            }
        }
    }

    /// Sends `request` and returns the answer's fields after its prefix word.
    pub fn ask(&mut self, request: &str) -> Result<Vec<String>, String> {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "{request}").and_then(|_| stdin.flush()).map_err(|e| e.to_string())?;
        Ok(self.line()?.split_whitespace().skip(1).map(str::to_string).collect())
    }

    /// `ask`, with the answer's last three fields read as milliseconds per
    /// step, steps timed and a check value: seconds, steps and the value.
    pub fn timing(&mut self, request: &str) -> Result<(f64, usize, f64), String> {
        let fields = self.ask(request)?;
        let parsed = match fields.len().checked_sub(3).map(|at| &fields[at..]) {
            Some([ms, reps, check]) => {
                (|| Some((ms.parse::<f64>().ok()? / 1e3, reps.parse().ok()?, check.parse().ok()?)))()
            }
            _ => None,
        };
        parsed.ok_or_else(|| format!("{} said {:?}", self.what, fields.join(" ")))
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        // Closing its input ends the script.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Median seconds of one `m×k×n` product by ebmc's host product
/// (`ebmc::backend::gemm`, what compiled steps call) over `reps` runs,
/// operands laid out as in `gemm_product`.
pub fn host_product(
    (m, k, n): (usize, usize, usize),
    (lhs_t, rhs_t): (bool, bool),
    threaded: bool,
    reps: usize,
) -> f64 {
    let lhs: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let rhs: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut out = vec![0.0f32; m * n];
    let a = if lhs_t { (1, m) } else { (k, 1) };
    let b = if rhs_t { (1, k) } else { (n, 1) };
    median(reps, || {
        ebmc::backend::gemm((&mut out, (n, 1)), (&lhs, a), (&rhs, b), (m, k, n), (false, 1.0), threaded);
        std::hint::black_box(&out);
    })
}

/// The CPU's model name, from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The load averages over 1, 5 and 15 minutes, from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A product's `(m, k, n)` and whether each operand is stored transposed.
pub type ProductShape = ((usize, usize, usize), (bool, bool));

/// numpy's seconds for one run of each product, in order: `benches/numpy_gemm.py`
/// (OpenBLAS on all cores) shelled out to `python3`; an error in words when
/// python3 or numpy is missing.
pub fn numpy_products(products: &[ProductShape]) -> Result<Vec<f64>, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/numpy_gemm.py");
    let specs: Vec<String> = products
        .iter()
        .map(|((m, k, n), (lt, rt))| format!("{m},{k},{n},{},{}", u8::from(*lt), u8::from(*rt)))
        .collect();
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(&specs)
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let times: Vec<f64> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|t| t.parse().ok()).collect();
    if times.len() == products.len() {
        Ok(times)
    } else {
        Err(format!("{script} printed no times: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Prints what a figure needs beside it: the CPU, the load when the bench
/// starts and rayon's threads.
pub fn print_machine() {
    println!("CPU: {} ({} logical CPUs)", cpu_model(), std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("load average at start (1, 5, 15 min): {}", load_average());
    println!("ebmc: {} rayon threads", rayon::current_num_threads());
}
