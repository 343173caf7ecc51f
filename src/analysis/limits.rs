//! Stage: resource limits. Every size a file or a flag can make large is
//! checked here against a documented limit (`docs/limits.md`) before anything
//! is allocated: expression nesting (`nesting`, run before the parser),
//! units per variable, elements per tensor and lattice sizes
//! (`check_program`, run after the checker), and the chains, sweeps and
//! memory of a run (`check_sample`, `check_train`). Pure: the caller passes
//! in what it knows of the machine (`available_bytes`).

use crate::analysis::graph::units;
use crate::analysis::program::{ConstValue, Domain, Model, Objective, Program, Train, Variable};
use crate::front::span::Span;
use crate::ir::{Lowered, Op};

/// Deepest expression nesting: open brackets plus the operators of the
/// chains they hold (see `nesting`). Deeper input is refused (E0501) so no
/// stage's recursion can exhaust the stack.
pub const MAX_NESTING: usize = 256;
/// Most units in one variable (a categorical unit counts once).
pub const MAX_UNITS: u128 = 1 << 20;
/// Most elements in one parameter or constant tensor (512 MiB of f32).
pub const MAX_ELEMENTS: u128 = 1 << 27;
/// Most values a batch of chains, a training batch or a replay buffer holds:
/// rows × the values of one row (4 GiB of f32).
pub const MAX_BATCH_VALUES: u128 = 1 << 30;
/// Most sweeps of one `sample` run (burn-in included), and most epochs of training.
pub const MAX_SWEEPS: u128 = 1_000_000_000;
/// Most epochs of one training run.
pub const MAX_EPOCHS: u128 = 1_000_000;
/// Most axes of a variable's, parameter's or constant's per-example shape
/// (a categorical's category axis included); the batch adds one more.
pub const MAX_RANK: usize = 6;
/// Replicas of a parallel-tempering ladder: each is a full set of the chains.
pub const MAX_REPLICAS: usize = 64;
/// Most residual blocks per stage of a `convnet`: each block is two
/// convolutions, so deeper stages grow the net past what the step compiles
/// in reasonable time.
pub const MAX_CONV_BLOCKS: usize = 16;

/// A size past its limit. `span` is where the file asks for it; `flag` the
/// command-line option when a flag does.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitError {
    /// A variable with more units than `MAX_UNITS`.
    Units { var: String, span: Span, units: u128 },
    /// A parameter or constant with more elements than `MAX_ELEMENTS`.
    Elements { what: &'static str, name: String, span: Span, elements: u128 },
    /// A lattice or graph constant whose dense adjacency matrix is too large.
    Lattice { name: String, span: Span, units: u128, elements: u128 },
    /// Rows × values of a batch, chain set or replay buffer past `MAX_BATCH_VALUES`.
    Batch { what: &'static str, flag: Option<&'static str>, span: Option<Span>, rows: u128, values: u128 },
    /// A count flag past its limit (sweeps, epochs).
    Count { flag: &'static str, value: u128, limit: u128, unit: &'static str },
    /// The run's estimated memory exceeds what the machine has available.
    Memory { what: &'static str, needed: u128, available: u64 },
}

/// The number of joint states of some discrete variables, kept as a base-2
/// logarithm so it never overflows; exact when it fits in a `u128`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct States {
    /// log₂ of the number of joint states.
    pub log2: f64,
    /// The number itself, when it fits in a `u128`.
    pub exact: Option<u128>,
}

impl std::fmt::Display for States {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.exact {
            Some(n) if n < 1 << 40 => write!(f, "{n}"),
            _ if self.log2.fract() == 0.0 => write!(f, "2^{}", self.log2),
            _ => write!(f, "about 2^{:.1}", self.log2),
        }
    }
}

/// Joint states of the named discrete variables (continuous ones are skipped).
pub fn joint_states(model: &Model, vars: &[String]) -> States {
    let mut log2 = 0.0;
    let mut exact = Some(1u128);
    for v in vars.iter().filter_map(|n| model.variable(n)) {
        let per_unit: u128 = match v.domain {
            Domain::Binary | Domain::Spin => 2,
            Domain::Categorical { categories } => categories as u128,
            Domain::Real { .. } => continue,
        };
        let n = units(v) as u128;
        log2 += n as f64 * (per_unit as f64).log2();
        exact = exact
            .and_then(|e| u32::try_from(n).ok().and_then(|n| per_unit.checked_pow(n)).and_then(|p| e.checked_mul(p)));
    }
    States { log2, exact }
}

/// Deepest nesting of `source`, found without parsing so that the parser
/// never recurses past the limit: every open bracket counts one level, and
/// so does every operator since the last `,` `;` `:` `=` inside it (a chain
/// `a + b + c` nests like `(a + b) + c`). An upper bound on the depth of
/// every expression tree the file can produce. `Err` holds the character
/// where the limit was passed.
pub fn nesting(source: &str) -> Result<usize, Span> {
    let bytes = source.as_bytes();
    // Operators counted at each open bracket level; level 0 is the top.
    let mut chains: Vec<usize> = vec![0];
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let mut level_up = false;
        match b {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                chains.push(0);
                level_up = true;
            }
            b')' | b']' | b'}' if chains.len() > 1 => depth -= 1 + chains.pop().unwrap_or(0),
            b',' | b';' | b':' | b'=' => {
                // Cannot fire: `chains` starts with level 0 and pops only above it.
                let last = chains.last_mut().expect("level 0 is never popped");
                depth -= *last;
                *last = 0;
            }
            b'+' | b'-' | b'*' | b'/' | b'@' | b'^' => {
                // Cannot fire: `chains` starts with level 0 and pops only above it.
                *chains.last_mut().expect("level 0 is never popped") += 1;
                level_up = true;
            }
            b'.' if bytes.get(i + 1) == Some(&b'T') => {
                // Cannot fire: `chains` starts with level 0 and pops only above it.
                *chains.last_mut().expect("level 0 is never popped") += 1;
                level_up = true;
            }
            _ => {}
        }
        if level_up {
            depth += 1;
            deepest = deepest.max(depth);
            if depth > MAX_NESTING {
                let end = source[i..].chars().next().map_or(i, |c| i + c.len_utf8());
                return Err(Span::new(i, end));
            }
        }
        i += 1;
    }
    Ok(deepest)
}

fn elements(shape: &[usize]) -> u128 {
    shape.iter().fold(1u128, |acc, &d| acc.saturating_mul(d as u128))
}

/// Values one row of `vars` holds (a one-hot unit counts its categories).
fn values(vars: &[&Variable]) -> u128 {
    vars.iter().fold(0u128, |acc, v| acc.saturating_add(elements(&v.shape)))
}

/// The sizes a checked program declares: units per variable, elements per
/// parameter and constant, lattice sizes, and its train blocks' batch,
/// chains and buffer. Run before the factor graph or IR is built.
pub fn check_program(program: &Program) -> Vec<LimitError> {
    let mut out = Vec::new();
    for model in program.models.values() {
        for v in &model.variables {
            let n = match v.domain {
                Domain::Categorical { .. } => elements(&v.shape[..v.shape.len() - 1]),
                _ => elements(&v.shape),
            };
            if n > MAX_UNITS {
                out.push(LimitError::Units { var: v.name.clone(), span: v.span, units: n });
            }
        }
        for p in &model.params {
            let n = elements(&p.shape);
            if n > MAX_ELEMENTS {
                out.push(LimitError::Elements { what: "parameter", name: p.name.clone(), span: p.span, elements: n });
            }
        }
        for n in &model.nets {
            // A convolution's weights are `out × in × kernel × kernel`; a
            // convnet's last layer is its linear head.
            let taps = n.conv.map_or(1, |c| (c.kernel as u128).saturating_mul(c.kernel as u128));
            let convs = n.layers.len() - 2;
            let layer = |(i, w): (usize, &[usize])| elements(w).saturating_mul(if i < convs { taps } else { 1 });
            if let Some(n_elements) = n.layers.windows(2).enumerate().map(layer).find(|e| *e > MAX_ELEMENTS) {
                out.push(LimitError::Elements {
                    what: "net layer of",
                    name: n.name.clone(),
                    span: n.span,
                    elements: n_elements,
                });
            }
        }
        for c in &model.consts {
            let n = elements(&c.shape);
            match &c.value {
                ConstValue::Graph(g) => {
                    let units = (g.rows as u128).saturating_mul(g.cols as u128);
                    if n > MAX_ELEMENTS || units > MAX_UNITS {
                        out.push(LimitError::Lattice {
                            name: c.name.clone(),
                            span: c.span,
                            units,
                            elements: units.saturating_mul(units),
                        });
                    }
                }
                ConstValue::Fill(_) if n > MAX_ELEMENTS => {
                    out.push(LimitError::Elements { what: "constant", name: c.name.clone(), span: c.span, elements: n })
                }
                ConstValue::Fill(_) => {}
            }
        }
        if let Some(t) = program.trains.get(&model.name).filter(|_| out.is_empty()) {
            out.extend(check_train_block(model, t));
        }
    }
    out
}

/// A train block's batch, persistent chains and replay buffer, each rows ×
/// the values of the model's variables.
fn check_train_block(model: &Model, t: &Train) -> Vec<LimitError> {
    let all: Vec<&Variable> = model.variables.iter().collect();
    let row = values(&all);
    let mut out = Vec::new();
    let mut rows = vec![("batch", t.batch as u128, t.span)];
    if let Some(p) = t.options.objective.persistent() {
        rows.push(("persistent chains", p.chains as u128, t.objective.span));
        rows.push(("replay buffer", p.buffer as u128, t.objective.span));
    }
    for (what, n, span) in rows {
        if n.saturating_mul(row) > MAX_BATCH_VALUES {
            out.push(LimitError::Batch { what, flag: None, span: Some(span), rows: n, values: row });
        }
    }
    out
}

/// What a `sample` run asks for.
#[derive(Debug, Clone, Copy)]
pub struct SampleRun {
    /// Chains sampled in parallel.
    pub chains: usize,
    /// Sweeps run before any state is kept.
    pub burn_in: usize,
    /// Sweeps run after burn-in.
    pub steps: usize,
    /// Keep the states every this many sweeps after burn-in; `None`: only the last.
    pub every: Option<usize>,
}

/// Bytes of f32 working memory one example of the lowered energy needs: every
/// node that varies per example (depends on a variable) holds a value.
fn per_example_bytes(lowered: &Lowered) -> u128 {
    // Nets expanded into their layers: each hidden layer is a value per example too.
    let mut ir = lowered.ir.clone();
    let total = ir.inline_nets(lowered.total);
    let ir = &ir;
    let cone: std::collections::BTreeSet<crate::ir::Id> = ir.cone(total).into_iter().collect();
    let mut varies = vec![false; ir.nodes.len()];
    let mut bytes = 0u128;
    for (i, node) in ir.nodes.iter().enumerate() {
        varies[i] = matches!(node.op, Op::Var(_)) || ir.children(crate::ir::Id(i)).iter().any(|c| varies[c.0]);
        if varies[i] && cone.contains(&crate::ir::Id(i)) {
            bytes = bytes.saturating_add(elements(&node.shape).saturating_mul(4));
        }
    }
    bytes
}

/// How many of the energy's per-example values a training step holds at
/// once, by objective: forward and backward for first-order losses; the
/// data gradient and its reverse for DSM, CNCE and JEM-style losses; the
/// Hessian-vector products too for SM and SSM.
fn step_values(objective: &Objective) -> u128 {
    match objective {
        Objective::Cd { .. } | Objective::Pcd(_) | Objective::Pl | Objective::Nce { .. } | Objective::Jem(_) => 3,
        Objective::Classify(_) => 3,
        Objective::Dsm { .. } | Objective::Cnce { .. } => 6,
        // Forward and backward through the encoder and the energy, once per latent draw of each row.
        Objective::Elbo { samples, .. } => 3u128.saturating_mul(*samples as u128),
        Objective::Sm | Objective::Ssm { .. } | Objective::Lsd { .. } => 10,
    }
}

fn param_bytes(model: &Model, lowered: &Lowered) -> u128 {
    let params = lowered.params.iter().fold(0u128, |acc, p| acc.saturating_add(elements(&p.shape)));
    let consts = model.consts.iter().fold(0u128, |acc, c| acc.saturating_add(elements(&c.shape)));
    params.saturating_add(consts).saturating_mul(4)
}

fn check_memory(what: &'static str, needed: u128, available: Option<u64>) -> Option<LimitError> {
    available.filter(|a| needed > u128::from(*a)).map(|available| LimitError::Memory { what, needed, available })
}

/// Checks a `sample` run before anything is allocated: the chains' values,
/// the number of sweeps, and the estimated memory (chains, the energy's
/// per-chain working values, the kept states) against `available_bytes`.
/// `Ok` holds the estimate in bytes.
pub fn check_sample(
    model: &Model,
    lowered: &Lowered,
    run: &SampleRun,
    available_bytes: Option<u64>,
) -> Result<u128, Vec<LimitError>> {
    let mut out = Vec::new();
    let all: Vec<&Variable> = model.variables.iter().collect();
    let row = values(&all);
    // Parallel tempering runs one set of the chains per replica.
    let replicas = match &model.temperature {
        Some(crate::analysis::program::Temperature::Ladder { temperatures }) => temperatures.len() as u128,
        _ => 1,
    };
    let chains = run.chains as u128 * replicas;
    if chains.saturating_mul(row) > MAX_BATCH_VALUES {
        out.push(LimitError::Batch { what: "chains", flag: Some("--chains"), span: None, rows: chains, values: row });
    }
    let sweeps = (run.burn_in as u128) + (run.steps as u128);
    if sweeps > MAX_SWEEPS {
        out.push(LimitError::Count { flag: "--burn-in and --steps", value: sweeps, limit: MAX_SWEEPS, unit: "sweeps" });
    }
    if !out.is_empty() {
        return Err(out);
    }
    let visible: Vec<&Variable> =
        model.variables.iter().filter(|v| v.role == crate::front::ast::Role::Visible).collect();
    let kept = run.every.map_or(1, |e| (run.steps / e.max(1)).max(1)) as u128;
    // A kept state is held as f32 and again as an f64 output row.
    let needed = param_bytes(model, lowered)
        .saturating_add(chains.saturating_mul(per_example_bytes(lowered)))
        .saturating_add(kept.saturating_mul(chains / replicas).saturating_mul(values(&visible)).saturating_mul(12));
    match check_memory("sampling", needed, available_bytes) {
        Some(e) => Err(vec![e]),
        None => Ok(needed),
    }
}

/// Checks a training run before anything is allocated: epochs, and the
/// estimated memory (parameters with gradients and optimiser moments, the
/// `rows` of data, a batch's values forward and backward, persistent chains
/// and replay buffer) against `available_bytes`. `Ok` holds the estimate.
pub fn check_train(
    model: &Model,
    lowered: &Lowered,
    train: &Train,
    rows: usize,
    epochs: usize,
    available_bytes: Option<u64>,
) -> Result<u128, Vec<LimitError>> {
    if epochs as u128 > MAX_EPOCHS {
        return Err(vec![LimitError::Count {
            flag: "--epochs",
            value: epochs as u128,
            limit: MAX_EPOCHS,
            unit: "epochs",
        }]);
    }
    let all: Vec<&Variable> = model.variables.iter().collect();
    let row = values(&all).saturating_mul(4);
    let persistent = train.options.objective.persistent();
    let chains = persistent.map_or(0, |p| p.chains) as u128;
    let buffer = persistent.map_or(0, |p| p.buffer) as u128;
    let batch = train.batch as u128;
    let needed = param_bytes(model, lowered)
        .saturating_mul(4)
        .saturating_add((rows as u128).saturating_mul(row))
        .saturating_add(
            batch
                .max(chains)
                .saturating_mul(per_example_bytes(lowered))
                .saturating_mul(step_values(&train.options.objective)),
        )
        .saturating_add(chains.saturating_add(buffer).saturating_mul(row));
    match check_memory("training", needed, available_bytes) {
        Some(e) => Err(vec![e]),
        None => Ok(needed),
    }
}

/// Memory a run can use on this machine: Linux's MemAvailable, capped by
/// the process's address-space limit, when either is known (reads `/proc`).
pub fn available_memory() -> Option<u64> {
    let free = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| available_from_meminfo(&t));
    let cap = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| address_space_cap(&t));
    match (free, cap) {
        (Some(f), Some(c)) => Some(f.min(c)),
        (f, c) => f.or(c),
    }
}

/// Bytes of memory available, from the text of Linux's `/proc/meminfo`
/// (`MemAvailable`); `None` when it does not say.
pub fn available_from_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The soft cap on the address space, in bytes, from the text of Linux's
/// `/proc/self/limits`; `None` when it is unlimited or not given. A run
/// under such a cap (`ulimit -v`) fails its allocations long before the
/// machine's memory runs out, so the cap bounds what is available too.
pub fn address_space_cap(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
