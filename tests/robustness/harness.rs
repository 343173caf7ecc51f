//! The robustness contract and the input generators, shared by
//! `tests/robustness.rs` (bounded, in `cargo test`) and
//! `examples/fuzz_campaign.rs` (long campaigns).
//!
//! The contract every run of `ebmc` must keep, whatever its input:
//! - it ends by itself within the wall-time bound and under the memory bound;
//! - it exits 0, 1 or 2 (never a panic's 101, never an abort or a signal);
//! - stderr holds no panic, stack overflow or backtrace hint;
//! - a non-zero exit prints a line that starts with `error`;
//! - where its output is figures (`eval`, `energy`, `sample`), an exit 0
//!   prints no NaN, infinity or JSON `null`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bounds one run must stay within.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub wall: Duration,
    /// Address space (RLIMIT_AS), so a runaway allocation fails inside the bound.
    pub memory_bytes: u64,
    /// Largest file the run may write (RLIMIT_FSIZE, with SIGXFSZ ignored so a
    /// write past it fails as on a full disk), if any.
    pub file_bytes: Option<u64>,
}

pub const LIMITS: Limits = Limits { wall: Duration::from_secs(20), memory_bytes: 4 << 30, file_bytes: None };

/// What one run of the binary did.
#[derive(Debug, Clone)]
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
}

/// Kinds of contract breach, in the order the summary table lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Panic,
    Abort,
    OverMemory,
    Signal,
    Timeout,
    /// An exit code other than 0, 1 or 2.
    ExitCode,
    /// A non-zero exit with no line starting with `error`.
    NoMessage,
    /// NaN, infinity or `null` printed as a result with exit 0.
    NonFinite,
    /// A result that disagrees with what the input says (rows dropped, a run
    /// directory left half-written, a lock not taken, a seed forgotten).
    Wrong,
}

impl Class {
    pub const ALL: [Class; 9] = [
        Class::Panic,
        Class::Abort,
        Class::OverMemory,
        Class::Signal,
        Class::Timeout,
        Class::ExitCode,
        Class::NoMessage,
        Class::NonFinite,
        Class::Wrong,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Panic => "panic",
            Class::Abort => "abort",
            Class::OverMemory => "over-memory",
            Class::Signal => "signal",
            Class::Timeout => "timeout",
            Class::ExitCode => "exit-code",
            Class::NoMessage => "no-message",
            Class::NonFinite => "non-finite",
            Class::Wrong => "wrong",
        }
    }
}

#[cfg(target_os = "linux")]
mod rlimit {
    #[repr(C)]
    pub struct RLimit {
        pub cur: u64,
        pub max: u64,
    }
    pub const RLIMIT_FSIZE: i32 = 1;
    pub const RLIMIT_CORE: i32 = 4;
    pub const RLIMIT_AS: i32 = 9;
    pub const SIGXFSZ: i32 = 25;
    pub const SIG_IGN: usize = 1;
    unsafe extern "C" {
        // std links the C library already; these are its setrlimit(2) and signal(2).
        pub fn setrlimit(resource: i32, limit: *const RLimit) -> i32;
        pub fn signal(signum: i32, handler: usize) -> usize;
    }
}

/// Keeps at most `cap` bytes of a stream, reading it to the end so the child never blocks.
fn drain(mut r: impl Read + Send + 'static, cap: usize) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = cap.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

/// Runs `bin args` in `cwd` under `limits`, killing it at the wall-time bound.
pub fn run(bin: &Path, args: &[String], cwd: &Path, limits: &Limits) -> Run {
    let mut cmd = Command::new(bin);
    // Two sampler threads per run: bounded CPU and address space when many runs share a machine.
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .env("RAYON_NUM_THREADS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let (memory, file) = (limits.memory_bytes, limits.file_bytes);
        // SAFETY: setrlimit and signal are async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                let core = rlimit::RLimit { cur: 0, max: 0 };
                let space = rlimit::RLimit { cur: memory, max: memory };
                if rlimit::setrlimit(rlimit::RLIMIT_CORE, &core) != 0
                    || rlimit::setrlimit(rlimit::RLIMIT_AS, &space) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(bytes) = file {
                    let size = rlimit::RLimit { cur: bytes, max: bytes };
                    // An ignored disposition survives exec: the write fails with EFBIG instead of killing.
                    if rlimit::signal(rlimit::SIGXFSZ, rlimit::SIG_IGN) == usize::MAX
                        || rlimit::setrlimit(rlimit::RLIMIT_FSIZE, &size) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let out = drain(child.stdout.take().expect("piped"), 4 << 20);
    let err = drain(child.stderr.take().expect("piped"), 1 << 20);
    let mut timed_out = false;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().expect("child can be waited for") {
            break status;
        }
        if started.elapsed() > limits.wall {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("killed child can be waited for");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    #[cfg(unix)]
    let signal = std::os::unix::process::ExitStatusExt::signal(&status);
    #[cfg(not(unix))]
    let signal = None;
    Run {
        args: args.to_vec(),
        code: status.code(),
        signal,
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        seconds,
    }
}

/// Words that mean a figure is not a number.
fn non_finite_word(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .find(|w| {
            matches!(w.trim_start_matches('-').to_ascii_lowercase().as_str(), "nan" | "inf" | "infinity" | "null")
        })
        .map(str::to_string)
}

/// The first breach of the contract in `run`, if any. `figures`: the command
/// prints results (eval, energy, sample) that must be finite on exit 0;
/// `files` are outputs it wrote, held to the same rule.
pub fn breach(run: &Run, figures: bool, files: &[PathBuf]) -> Option<(Class, String)> {
    let tail = |s: &str| {
        let s = s.trim_end();
        let start = s.char_indices().rev().nth(600).map_or(0, |(i, _)| i);
        s[start..].to_string()
    };
    if run.timed_out {
        return Some((Class::Timeout, format!("killed after {:.1}s", run.seconds)));
    }
    let allocation_failed = run.stderr.contains("memory allocation of") || run.stderr.contains("out of memory");
    if let Some(sig) = run.signal {
        return Some(match sig {
            6 if allocation_failed => (Class::OverMemory, tail(&run.stderr)),
            6 => (Class::Abort, tail(&run.stderr)),
            9 => (Class::OverMemory, "killed by SIGKILL (the kernel's out-of-memory killer?)".into()),
            s => (Class::Signal, format!("signal {s}: {}", tail(&run.stderr))),
        });
    }
    let code = run.code.unwrap_or(-1);
    if code == 101 || run.stderr.contains("panicked at") || run.stderr.contains("RUST_BACKTRACE") {
        return Some((Class::Panic, tail(&run.stderr)));
    }
    if run.stderr.contains("stack overflow") || code == 134 {
        return Some((Class::Abort, tail(&run.stderr)));
    }
    if !(0..=2).contains(&code) {
        return Some((Class::ExitCode, format!("exit {code}: {}", tail(&run.stderr))));
    }
    if code != 0 && !run.stderr.lines().any(|l| l.trim_start().starts_with("error")) {
        return Some((Class::NoMessage, format!("exit {code} with stderr: {}", tail(&run.stderr))));
    }
    if code == 0 && figures {
        if let Some(w) = non_finite_word(&run.stdout) {
            return Some((Class::NonFinite, format!("`{w}` in stdout: {}", tail(&run.stdout))));
        }
        for f in files {
            let text = std::fs::read(f).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            if let Some(w) = non_finite_word(&text) {
                return Some((Class::NonFinite, format!("`{w}` in {}", f.display())));
            }
            if f.extension().is_some_and(|e| e == "npy")
                && npy_f64_values(&std::fs::read(f).unwrap_or_default()).iter().any(|x| !x.is_finite())
            {
                return Some((Class::NonFinite, format!("a non-finite value in {}", f.display())));
            }
        }
    }
    None
}

/// The values of an NPY file ebmc wrote (`<f4` or `<f8`), for the finiteness check.
fn npy_f64_values(bytes: &[u8]) -> Vec<f64> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Vec::new();
    }
    let (len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
    };
    let Some(header) = bytes.get(start..start + len).map(String::from_utf8_lossy) else { return Vec::new() };
    let data = &bytes[(start + len).min(bytes.len())..];
    if header.contains("<f8") {
        data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
    } else if header.contains("<f4") {
        data.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
    } else {
        Vec::new()
    }
}

/// SplitMix64: a seeded generator whose sequence never changes between
/// versions of any crate, so a failing input's seed reproduces it forever.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for input `index` of a campaign with `seed`.
    pub fn for_input(seed: u64, index: u64) -> Self {
        let mut r = Rng(seed ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03));
        r.next();
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers at the edges: zero, negative, past f32 and u64, not a number.
pub const EDGE_NUMBERS: [&str; 22] = [
    "0",
    "-1",
    "1e39",
    "-1e39",
    "18446744073709551615",
    "18446744073709551616",
    "4294967296",
    "2147483648",
    "100000000",
    "1e308",
    "1e-320",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "0.0",
    "-0",
    "999999999999999999999999999",
    "0x10",
    "1_000",
    "65",
    "1e5",
];

/// Names a rename may use: keywords, types, built-ins and the zoo's usual names.
const NAMES: [&str; 36] = [
    "model",
    "visible",
    "hidden",
    "param",
    "energy",
    "const",
    "net",
    "train",
    "sample",
    "binary",
    "spin",
    "real",
    "categorical",
    "sum",
    "mean",
    "square",
    "sigmoid",
    "grid",
    "zeros",
    "ones",
    "normal",
    "mlp",
    "cd",
    "pcd",
    "adam",
    "sgd",
    "digits",
    "csv",
    "v",
    "h",
    "W",
    "x",
    "y",
    "b",
    "c",
    "in",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ident,
    Number,
    Str,
    Comment,
    Space,
    Punct,
}

/// Splits source text into tokens roughly as the grammar does.
fn tokens(s: &str) -> Vec<(Kind, String)> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let kind = if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            Kind::Ident
        } else if c.is_ascii_digit() {
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            Kind::Number
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' && chars[i] != '\n' {
                i += 1;
            }
            i = (i + 1).min(chars.len());
            Kind::Str
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            Kind::Comment
        } else if c.is_whitespace() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            Kind::Space
        } else {
            i += 1;
            Kind::Punct
        };
        out.push((kind, chars[start..i].iter().collect()));
    }
    out
}

fn solid(toks: &[(Kind, String)]) -> Vec<usize> {
    toks.iter().enumerate().filter(|(_, (k, _))| !matches!(k, Kind::Space | Kind::Comment)).map(|(i, _)| i).collect()
}

fn join(toks: &[(Kind, String)]) -> String {
    toks.iter().map(|(_, t)| t.as_str()).collect()
}

/// One mutation of `input`; `donors` are other files to borrow tokens and
/// lines from. Returns the new bytes and what was done.
fn mutate_once(rng: &mut Rng, input: &[u8], donors: &[String]) -> (Vec<u8>, String) {
    let text = String::from_utf8_lossy(input).into_owned();
    let mut toks = tokens(&text);
    let idx = solid(&toks);
    let donor = rng.pick(donors);
    let donor_toks = tokens(donor);
    let donor_idx = solid(&donor_toks);
    match rng.below(11) {
        0 if !input.is_empty() => {
            let mut bytes = input.to_vec();
            let at = rng.below(bytes.len());
            const INTERESTING: &[u8] = b"{}()[];:,@=-+*/>\"\n.e9_\x00\xff";
            let b = if rng.below(4) == 0 { rng.next() as u8 } else { *rng.pick(INTERESTING) };
            bytes[at] = b;
            (bytes, format!("byte {at} set to 0x{b:02x}"))
        }
        1 if !idx.is_empty() => {
            let at = *rng.pick(&idx);
            let gone = toks.remove(at).1;
            (join(&toks).into_bytes(), format!("token {at} `{gone}` deleted"))
        }
        2 if !idx.is_empty() => {
            let at = *rng.pick(&idx);
            let copies = *rng.pick(&[1usize, 2, 50]);
            let t = toks[at].clone();
            for _ in 0..copies {
                toks.insert(at, t.clone());
            }
            (join(&toks).into_bytes(), format!("token {at} `{}` repeated {copies} more time(s)", t.1))
        }
        3 if idx.len() > 1 => {
            let (a, b) = (*rng.pick(&idx), *rng.pick(&idx));
            toks.swap(a, b);
            (join(&toks).into_bytes(), format!("tokens {a} and {b} swapped"))
        }
        4 if !idx.is_empty() && !donor_idx.is_empty() => {
            let at = *rng.pick(&idx);
            let t = donor_toks[*rng.pick(&donor_idx)].clone();
            let old = std::mem::replace(&mut toks[at], t.clone()).1;
            (join(&toks).into_bytes(), format!("token {at} `{old}` replaced by `{}` from another file", t.1))
        }
        5 => {
            let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
            let donor_lines: Vec<&str> = donor.split_inclusive('\n').collect();
            let line = *rng.pick(&donor_lines);
            let at = rng.below(lines.len() + 1);
            lines.insert(at, line);
            (
                lines.concat().into_bytes(),
                format!("line `{}` from another file inserted at line {}", line.trim_end(), at + 1),
            )
        }
        6 => {
            let numbers: Vec<usize> =
                toks.iter().enumerate().filter(|(_, (k, _))| *k == Kind::Number).map(|(i, _)| i).collect();
            let edge = rng.pick(&EDGE_NUMBERS).to_string();
            match numbers.is_empty() {
                true => (format!("{text}\n{edge}").into_bytes(), format!("`{edge}` appended")),
                false => {
                    let at = *rng.pick(&numbers);
                    let old = std::mem::replace(&mut toks[at].1, edge.clone());
                    (join(&toks).into_bytes(), format!("number {old} (token {at}) replaced by {edge}"))
                }
            }
        }
        7 => {
            let idents: Vec<usize> =
                toks.iter().enumerate().filter(|(_, (k, _))| *k == Kind::Ident).map(|(i, _)| i).collect();
            if idents.is_empty() {
                return (input.to_vec(), "unchanged (no identifier)".into());
            }
            let at = *rng.pick(&idents);
            let old = toks[at].1.clone();
            let new = match rng.below(3) {
                0 => rng.pick(&NAMES).to_string(),
                1 => toks[*rng.pick(&idents)].1.clone(),
                _ => format!("{old}_{}", rng.below(10)),
            };
            if rng.below(2) == 0 {
                for t in toks.iter_mut().filter(|t| t.0 == Kind::Ident && t.1 == old) {
                    t.1 = new.clone();
                }
                (join(&toks).into_bytes(), format!("every `{old}` renamed to `{new}`"))
            } else {
                toks[at].1 = new.clone();
                (join(&toks).into_bytes(), format!("`{old}` (token {at}) renamed to `{new}`"))
            }
        }
        8 if !input.is_empty() => {
            let at = rng.below(input.len());
            (input[..at].to_vec(), format!("truncated to {at} bytes"))
        }
        9 => {
            let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
            if lines.is_empty() {
                return (input.to_vec(), "unchanged (no line)".into());
            }
            let at = rng.below(lines.len());
            if rng.below(2) == 0 {
                let gone = lines.remove(at);
                (lines.concat().into_bytes(), format!("line {} `{}` deleted", at + 1, gone.trim_end()))
            } else {
                let l = lines[at];
                lines.insert(at, l);
                (lines.concat().into_bytes(), format!("line {} `{}` duplicated", at + 1, l.trim_end()))
            }
        }
        _ if !idx.is_empty() => {
            // Wrap a token in deep parentheses or calls.
            let at = *rng.pick(&idx);
            let depth = *rng.pick(&[3usize, 200, 5000]);
            let (open, close) = if rng.below(2) == 0 { ("(", ")") } else { ("abs(", ")") };
            toks[at].1 = format!("{}{}{}", open.repeat(depth), toks[at].1, close.repeat(depth));
            (join(&toks).into_bytes(), format!("token {at} wrapped in {depth} x `{open}`"))
        }
        _ => (input.to_vec(), "unchanged".into()),
    }
}

/// One to three stacked mutations of `input`.
pub fn mutate(rng: &mut Rng, input: &str, donors: &[String]) -> (Vec<u8>, Vec<String>) {
    let mut bytes = input.as_bytes().to_vec();
    let mut how = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let (b, what) = mutate_once(rng, &bytes, donors);
        bytes = b;
        how.push(what);
    }
    (bytes, how)
}

/// The zoo: every `models/**/*.ebm`, sorted, as (path relative to the crate, text).
pub fn zoo() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("models/ is readable").flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "ebm") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("models"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(root).expect("under the crate").display().to_string(),
                std::fs::read_to_string(&p).expect("zoo file is text"),
            )
        })
        .collect()
}

/// A generated input: a name that says what it is, and its text.
pub struct Generated {
    pub name: String,
    pub source: String,
    /// Also worth sampling (a huge shape only shows when tensors are made).
    pub sample: bool,
}

/// Deep nesting and huge sizes, each past what a person writes by far.
pub fn generated() -> Vec<Generated> {
    let real2 = |energy: String| format!("model m {{\n    visible v : real[2];\n    energy e = {energy};\n}}\n");
    let g = |name: &str, source: String, sample: bool| Generated { name: name.into(), source, sample };
    let n = 10_000;
    vec![
        g("10,000 nested parentheses", real2(format!("0.5 * sum(square({}v{}))", "(".repeat(n), ")".repeat(n))), false),
        g("10,000 nested calls", real2(format!("0.5 * sum(square({}v{}))", "abs(".repeat(n), ")".repeat(n))), false),
        g("10,000 nested sums of a scalar", real2(format!("{}0.5 * sum(square(v)){}", "sum(".repeat(n), ")".repeat(n))), false),
        g("9,000-term sum", real2(vec!["0.5 * sum(square(v))"; 9000].join(" + ")), false),
        // 9,000 terms overflow the release build's stack; the test build's frames need more.
        g("100,000-term sum", real2(vec!["0.5 * sum(square(v))"; 100_000].join(" + ")), false),
        g("9,000-term product", real2(format!("0.5 * sum(square(v)) {}", " * 1".repeat(9000))), false),
        g("10,000 unary minuses", real2(format!("{}0.5 * sum(square(v))", "- ".repeat(n))), false),
        g("1,500 nested calls", real2(format!("0.5 * sum(square({}v{}))", "abs(".repeat(1500), ")".repeat(1500))), true),
        g("10,000 nested parentheses in a size", format!("model m {{\n    visible v : real[{}2{}];\n    energy e = 0.5 * sum(square(v));\n}}\n", "(".repeat(n), ")".repeat(n)), false),
        g("10,000 nested blocks", format!("{}model m {{ visible v : real[2]; energy e = 0.5 * sum(square(v)); }}{}", "{".repeat(n), "}".repeat(n)), false),
        g("20,000 energy terms", format!("model m {{\n    visible v : real[2];\n{}}}\n", (0..20_000).map(|i| format!("    energy e{i} = 0.5 * sum(square(v));\n")).collect::<String>()), false),
        g("a 1,000,000-character name", real2(format!("0.5 * sum(square(v)) + 0 * {}", "a".repeat(1_000_000))), false),
        g("a 1,000,000-digit number", real2(format!("0.{} * sum(square(v))", "5".repeat(1_000_000))), false),
        g("binary[100000000]", "model m {\n    visible v : binary[100000000];\n    param b : real[100000000] = zeros;\n    energy e = -(b @ v);\n}\n".into(), true),
        g("grid(100000, 100000)", "model m {\n    const A = grid(100000, 100000);\n    visible s : spin[10000000000];\n    param J : real = 0.1;\n    energy e = -J * (s @ A @ s);\n}\n".into(), true),
        g("grid(100000, 100000) on a small variable", "model m {\n    const A = grid(100000, 100000);\n    visible s : spin[4];\n    energy e = -(s @ A @ s);\n}\n".into(), true),
        g("real[100000, 100000] parameter", "model m {\n    visible v : binary[100000];\n    hidden h : binary[100000];\n    param W : real[100000, 100000] = normal(0, 0.01);\n    energy e = -(v @ W @ h);\n}\n".into(), true),
        g("binary[18446744073709551615]", "model m {\n    visible v : binary[18446744073709551615];\n    energy e = -sum(v);\n}\n".into(), true),
        g("shape whose product overflows", "model m {\n    visible v : binary[4294967296, 4294967296, 16];\n    energy e = -sum(v);\n}\n".into(), true),
        g("categorical(1000000000)", "model m {\n    visible y : categorical(1000000000);\n    param b : real[1000000000] = zeros;\n    energy e = -(b @ y);\n}\n".into(), true),
        g("an MLP of 100000000 units", "model m {\n    visible x : real[2];\n    net f = mlp(2 -> 100000000 -> 1, act: swish);\n    energy e = f(x) + 0.5 * sum(square(x));\n}\n".into(), true),
        g("no model at all", "// a file with nothing but a comment\n".into(), true),
        g("const of 10^10 elements", "model m {\n    const J : real[100000, 100000] = ones;\n    visible s : spin[100000];\n    energy e = -(s @ J @ s);\n}\n".into(), true),
    ]
}

/// A minimal safetensors file (F32 unless `dtype` says otherwise) from named tensors.
pub fn safetensors(tensors: &[(&str, Vec<usize>, Vec<f32>)], dtype: &str) -> Vec<u8> {
    let mut header = BTreeMap::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        for v in values {
            match dtype {
                "F64" => data.extend_from_slice(&f64::from(*v).to_le_bytes()),
                _ => data.extend_from_slice(&v.to_le_bytes()),
            }
        }
        header.insert(
            name.to_string(),
            serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [start, data.len()] }),
        );
    }
    let mut text = serde_json::to_string(&header).expect("header serialises");
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    out
}

/// An NPY file with `header` (the dict text) and raw `data`.
pub fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut text = header.to_string();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(' ');
    }
    text.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A safetensors file whose header parses and whose data ends where the header says.
fn whole_safetensors(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    let Some(n) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize) else {
        return false;
    };
    let Some(header) =
        bytes.get(8..8usize.saturating_add(n)).and_then(|h| serde_json::from_slice::<serde_json::Value>(h).ok())
    else {
        return false;
    };
    let end =
        header.as_object().map_or(0, |o| o.values().filter_map(|t| t["data_offsets"][1].as_u64()).max().unwrap_or(0));
    bytes.len() == 8 + n + end as usize
}

/// A PNG file that ends with its IEND chunk.
fn whole_png(path: &Path) -> bool {
    std::fs::read(path)
        .is_ok_and(|b| b.starts_with(b"\x89PNG") && b.len() >= 12 && &b[b.len() - 8..b.len() - 4] == b"IEND")
}

/// Files in a run directory that show a write or clean-up was cut short:
/// temp files, staging folders, checkpoint folders missing a file, files cut
/// short (safetensors, JSON, PNG), a `latest` that names no complete folder.
pub fn half_written(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if name.ends_with(".tmp") || name.contains("partial") {
            found.push(name.clone());
        }
        if name.ends_with(".png") && !whole_png(&p) {
            found.push(format!("{name} cut short"));
        }
        if name == "metrics.jsonl"
            && std::fs::read_to_string(&p)
                .map_or(true, |t| t.lines().any(|l| serde_json::from_str::<serde_json::Value>(l).is_err()))
        {
            found.push(format!("{name} with a line that is not JSON"));
        }
        if name.starts_with("epoch-") && p.is_dir() {
            for needed in ["params.safetensors", "state.safetensors", "meta.json"] {
                let f = p.join(needed);
                if !f.is_file() {
                    found.push(format!("{name}/ without {needed}"));
                } else if needed.ends_with(".safetensors") && !whole_safetensors(&f) {
                    found.push(format!("{name}/{needed} cut short"));
                } else if needed == "meta.json"
                    && std::fs::read_to_string(&f)
                        .map_or(true, |t| serde_json::from_str::<serde_json::Value>(&t).is_err())
                {
                    found.push(format!("{name}/{needed} is not JSON"));
                }
            }
            if let Ok(inner) = std::fs::read_dir(&p) {
                found.extend(
                    inner
                        .flatten()
                        .map(|i| i.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.ends_with(".tmp"))
                        .map(|n| format!("{name}/{n}")),
                );
            }
        }
    }
    if let Ok(latest) = std::fs::read_to_string(dir.join("latest"))
        && !dir.join(latest.trim()).join("params.safetensors").is_file()
    {
        found.push(format!("latest names `{}`, which is not a complete checkpoint", latest.trim()));
    }
    found
}

/// A 6x3 RBM trained on `rows.csv` (8 rows), small enough to enumerate.
pub const RBM: &str = "model r {
    visible v : binary[6];
    hidden h : binary[3];
    param W : real[6, 3] = normal(0, 0.1);
    param b : real[6] = zeros;
    param c : real[3] = zeros;
    energy e = -(v @ W @ h) - b @ v - c @ h;
}

train r {
    data = csv(\"rows.csv\") -> v;
    objective = cd(k: 1);
    optimizer = sgd(lr: 0.1);
    batch = 4;
    epochs = 2;
    seed = 3;
}
";

pub const ROWS: [[u8; 6]; 8] = [
    [1, 0, 1, 0, 1, 0],
    [0, 1, 0, 1, 0, 1],
    [1, 1, 0, 0, 1, 1],
    [0, 0, 1, 1, 0, 0],
    [1, 0, 0, 1, 1, 0],
    [0, 1, 1, 0, 0, 1],
    [1, 1, 1, 0, 0, 0],
    [0, 0, 0, 1, 1, 1],
];

pub fn rows_csv(rows: &[[u8; 6]]) -> String {
    rows.iter().map(|r| r.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",") + "\n").collect()
}

/// Parameters of `RBM` with every weight distinct, so a misread shows.
pub fn rbm_params() -> Vec<u8> {
    let w: Vec<f32> = (0..18).map(|i| (i as f32 - 9.0) / 20.0).collect();
    safetensors(&[("W", vec![6, 3], w), ("b", vec![6], vec![0.1; 6]), ("c", vec![3], vec![-0.1; 3])], "F32")
}

/// One to three byte-level mutations of a binary file (checkpoints, NPY):
/// a byte set to an edge value, a length field blown up, a cut, a run repeated.
pub fn mutate_bytes(rng: &mut Rng, input: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut bytes = input.to_vec();
    let mut how = Vec::new();
    for _ in 0..1 + rng.below(3) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(4) {
            0 => {
                let random = rng.next() as u8;
                let b = *rng.pick(&[0x00u8, 0x01, 0x7f, 0x80, 0xff, b'"', b'}', b',', b'9', random]);
                bytes[at] = b;
                how.push(format!("byte {at} set to 0x{b:02x}"));
            }
            1 => {
                let end = (at + 8).min(bytes.len());
                for b in &mut bytes[at..end] {
                    *b = 0xff;
                }
                how.push(format!("bytes {at}..{end} set to 0xff"));
            }
            2 => {
                bytes.truncate(at);
                how.push(format!("truncated to {at} bytes"));
            }
            _ => {
                let end = (at + 1 + rng.below(64)).min(bytes.len());
                let run = bytes[at..end].to_vec();
                bytes.splice(at..at, run);
                how.push(format!("bytes {at}..{end} repeated"));
            }
        }
    }
    (bytes, how)
}
