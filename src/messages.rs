//! Every diagnostic's code, wording, labels and hint, in one place. Stages
//! report plain data (`ParseError`, `CheckError`, ...); this module turns each
//! into a `Diagnostic`. `docs/diagnostics.md` lists the codes.

use crate::analysis::check::{CheckError, DeclKind, LadderProblem};
use crate::analysis::plan::PlanError;
use crate::analysis::program::{NetKind, elements, shape_str};
use crate::analysis::schema::OptType;
use crate::front::ast::BinOp;
use crate::front::diagnostic::Diagnostic;
use crate::front::parse::{ParseError, Rule};

impl From<&ParseError> for Diagnostic {
    fn from(e: &ParseError) -> Self {
        match e {
            ParseError::Syntax { span, expected, found, after } => {
                let wanted = expected_tokens(expected);
                let found_text = match found {
                    Some(f) => format!("`{f}`"),
                    None => "the end of the file".to_string(),
                };
                let message = if wanted.is_empty() { format!("syntax error: unexpected {found_text}") } else { format!("syntax error: expected {}, found {found_text}", or_list(&wanted)) };
                let d = match (after, wanted.is_empty()) {
                    (_, true) => Diagnostic::error("E0001", message).primary(*span, "unexpected here"),
                    // A missing token reads best right after the line it belongs to.
                    (Some(prev), false) => Diagnostic::error("E0001", message).primary(*prev, format!("expected {} after this", or_list(&wanted))).secondary(*span, "found this"),
                    (None, false) => Diagnostic::error("E0001", message).primary(*span, format!("expected {} here", or_list(&wanted))),
                };
                match syntax_hint(expected, found.as_deref()) {
                    Some(h) => d.help(h),
                    None => d,
                }
            }
            ParseError::IntegerTooLarge { span } => Diagnostic::error("E0002", "this size does not fit in 64 bits").primary(*span, "too large"),
            ParseError::TooDeep { span, limit } => Diagnostic::error("E0501", format!("expression nested too deeply (limit {limit})"))
                .primary(*span, format!("nesting passes {limit} levels here"))
                .help("each bracket counts one level, and so does each operator of a chain (`a + b + c` nests like `(a + b) + c`); split a long sum into several `energy` declarations, which add up, or name parts with `const`"),
        }
    }
}

/// What a grammar rule looks like to a person. Tokens that begin an
/// expression collapse into "an expression".
fn expected_tokens(rules: &[Rule]) -> Vec<String> {
    let starts_expr = |r: &Rule| {
        matches!(r, Rule::expr | Rule::number | Rule::string | Rule::call | Rule::list | Rule::paren | Rule::neg)
    };
    let mut out: Vec<String> = Vec::new();
    if rules.iter().any(starts_expr) {
        out.push("an expression".to_string());
    }
    // Names, `(` and `[` also start expressions; say so once.
    let in_expr = !out.is_empty();
    for r in rules
        .iter()
        .filter(|r| !(starts_expr(r) || in_expr && matches!(r, Rule::ident | Rule::lparen | Rule::lbracket)))
    {
        let text = match r {
            Rule::EOI => "end of file",
            Rule::ident => "a name",
            Rule::integer | Rule::dim => "a size",
            Rule::kw_model => "`model`",
            Rule::kw_train => "`train`",
            Rule::role => {
                out.extend(["`visible`".to_string(), "`hidden`".to_string()]);
                continue;
            }
            Rule::kw_visible => "`visible`",
            Rule::kw_hidden => "`hidden`",
            Rule::kw_param | Rule::param_decl => "`param`",
            Rule::kw_const | Rule::const_decl => "`const`",
            Rule::kw_net | Rule::net_decl => "`net`",
            Rule::kw_energy | Rule::energy_decl => "`energy`",
            Rule::kw_sample | Rule::sample_block => "`sample`",
            Rule::kw_in | Rule::bounds => "`in`",
            Rule::type_expr
            | Rule::base_type
            | Rule::ty_binary
            | Rule::ty_spin
            | Rule::ty_real
            | Rule::ty_categorical
            | Rule::categorical => "a type",
            Rule::lbrace => "`{`",
            Rule::rbrace => "`}`",
            Rule::lparen => "`(`",
            Rule::rparen => "`)`",
            Rule::lbracket | Rule::dims => "`[`",
            Rule::rbracket => "`]`",
            Rule::semi => "`;`",
            Rule::colon | Rule::named_arg => "`:`",
            Rule::comma => "`,`",
            Rule::assign => "`=`",
            Rule::arrow | Rule::binding | Rule::layers => "`->`",
            Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::matmul | Rule::pow => "an operator",
            Rule::transpose => "`.T`",
            Rule::var_decl | Rule::model_block => "a declaration",
            Rule::train_block => "`train`",
            Rule::setting => "a setting",
            Rule::sampler_stmt => "a variable name or a whole-model entry (`tempering(...)`)",
            _ => continue,
        };
        if !out.iter().any(|o| o == text) {
            out.push(text.to_string());
        }
    }
    // Operators can follow almost anything; list them last so the likely fix reads first.
    if let Some(i) = out.iter().position(|o| o == "an operator") {
        let op = out.remove(i);
        out.push(op);
    }
    out
}

fn syntax_hint(expected: &[Rule], found: Option<&str>) -> Option<String> {
    if expected.contains(&Rule::semi) {
        return Some("every declaration and setting ends with `;`".into());
    }
    if expected.contains(&Rule::ident) && found.is_some_and(is_keyword) {
        return Some(format!("`{}` is a keyword and cannot be used as a name", found.unwrap_or_default()));
    }
    if expected.contains(&Rule::base_type) || expected.contains(&Rule::type_expr) {
        return Some("types are `binary[n]`, `spin[n]`, `categorical(K)`, `categorical(K)[n]`, `real`, `real[n]`, `real[m, n]` or `real[n] in [lo, hi]`".into());
    }
    if expected.contains(&Rule::kw_model) && expected.contains(&Rule::kw_train) {
        return Some("a file holds `model NAME { ... }` and `train NAME { ... }` blocks".into());
    }
    if expected.contains(&Rule::kw_energy) {
        return Some("a model holds `visible`, `hidden`, `param`, `const`, `net`, `energy` declarations and `sample { ... }` blocks".into());
    }
    None
}

fn is_keyword(word: &str) -> bool {
    ["model", "train", "visible", "hidden", "param", "const", "net", "energy", "sample", "in"].contains(&word)
}

fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A way to make two shapes broadcast, when one is plain: an axis of
/// length 1 left out (`[1, 4]` with `[3, 4]`), or a `reshape` between
/// shapes of the same size.
fn broadcast_fix(a: &[usize], b: &[usize]) -> Option<String> {
    for (one, other) in [(a, b), (b, a)] {
        let squeezed: Vec<usize> = one.iter().copied().skip_while(|d| *d == 1).collect();
        if !squeezed.is_empty() && squeezed.len() < one.len() && other.ends_with(&squeezed) {
            return Some(format!(
                "an axis of length 1 is not stretched: leave it out of the {} operand, as in `reshape(x, {})`",
                shape_str(one),
                shape_str(&squeezed)
            ));
        }
    }
    let long = if a.len() >= b.len() { a } else { b };
    (long.len() > 1 && elements(a) == elements(b)).then(|| {
        format!(
            "both hold {} elements: `reshape` one to the other's shape, e.g. `reshape(x, {})`",
            elements(a),
            shape_str(long)
        )
    })
}

/// How a built-in function is called, for hints.
fn usage(name: &str) -> String {
    match name {
        "reshape" => "`reshape(x, [a, b, ...])`".to_string(),
        "sum" | "mean" => format!("`{name}(x)`, or `{name}(x, axis: k)` along one axis"),
        _ => format!("`{name}(x)`"),
    }
}

fn code_list(items: &[&str]) -> String {
    items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

/// The closest candidate, when it is close enough to be a typo.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        // Optimal string alignment counts a swap of neighbours as one edit, so `rmb` is one edit from `rbm`.
        .map(|c| (strsim::osa_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

fn decl_noun(k: DeclKind) -> &'static str {
    match k {
        DeclKind::Variable => "a variable",
        DeclKind::Param => "a parameter",
        DeclKind::Const => "a constant",
        DeclKind::Net => "a net",
        DeclKind::Energy => "an energy term",
    }
}

fn decl_word(k: DeclKind) -> &'static str {
    match k {
        DeclKind::Variable => "variable",
        DeclKind::Param => "parameter",
        DeclKind::Const => "constant",
        DeclKind::Net => "net",
        DeclKind::Energy => "energy term",
    }
}

fn opt_type(t: OptType) -> String {
    match t {
        OptType::Real => "a number".into(),
        OptType::Positive => "a number > 0".into(),
        OptType::NonNegative => "a number >= 0".into(),
        OptType::Unit => "a number in [0, 1)".into(),
        OptType::OpenUnit => "a number strictly between 0 and 1".into(),
        OptType::Whole { min } => format!("a whole number >= {min}"),
        OptType::Flag => "`true` or `false`".into(),
        OptType::Str => "a string in double quotes".into(),
        OptType::Paths => "a string in double quotes or a list of them (`[\"a.bin\", \"b.bin\"]`)".into(),
        OptType::Numbers => "a list of numbers (`[1, 1.5, 2.5]`)".into(),
        OptType::Choice(c) => format!("one of {}", code_list(c)),
        OptType::NetName => "the name of a net the model declares".into(),
        OptType::VarName => "the name of a variable the model declares".into(),
    }
}

impl From<&CheckError> for Diagnostic {
    fn from(e: &CheckError) -> Self {
        use CheckError::*;
        match e {
            Undefined { what, name, span, candidates } => {
                let d = Diagnostic::error("E0100", format!("cannot find {what} `{name}`")).primary(*span, "not declared");
                match did_you_mean(name, candidates.iter().map(String::as_str)) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None if !candidates.is_empty() && candidates.len() <= 8 => {
                        d.help(format!("declared here: {}", code_list(&candidates.iter().map(String::as_str).collect::<Vec<_>>())))
                    }
                    None => d,
                }
            }
            Duplicate { what, name, span, first } => Diagnostic::error("E0101", format!("duplicate {what} `{name}`"))
                .primary(*span, "declared again here")
                .secondary(*first, "first declared here")
                .help(match *what {
                    "declaration of" => "rename one of them; names must be unique within a model",
                    "model" => "rename one of them; model names must be unique within a file",
                    _ => "keep only one of them",
                }),
            UnknownFunction { name, span, candidates } => {
                let d = Diagnostic::error("E0102", format!("unknown function `{name}`")).primary(*span, "no built-in function or net has this name");
                match did_you_mean(name, candidates.iter().map(String::as_str)) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(format!("built-in functions: {}", code_list(&candidates.iter().map(String::as_str).collect::<Vec<_>>()))),
                }
            }
            NotAFunction { name, span, is } => Diagnostic::error("E0103", format!("`{name}` is {}, not a function", decl_noun(*is)))
                .primary(*span, "cannot be called")
                .help("only built-in functions and nets can be called; use `*` or `@` to combine values"),
            NotAValue { name, span, is } => {
                let d = Diagnostic::error("E0103", format!("`{name}` is {}, not a value", decl_noun(*is))).primary(*span, "cannot be used here");
                match is {
                    DeclKind::Net => d.help(format!("apply the net to an input, e.g. `{name}(x)`")),
                    DeclKind::Energy => d.help("energy terms are summed automatically; refer to the expression's parts instead"),
                    _ => d.help("sampler overrides name a `visible` or `hidden` variable"),
                }
            }
            Arity { name, span, expected, found } => Diagnostic::error("E0104", format!("`{name}` takes {expected} argument{}, but {found} were given", if *expected == 1 { "" } else { "s" }))
                .primary(*span, format!("{found} argument{}", if *found == 1 { "" } else { "s" }))
                .help(format!("call it as {}", usage(name))),
            FunctionOptions { name, option, span } => match name.as_str() {
                "sum" | "mean" => {
                    let d = Diagnostic::error("E0105", format!("`{name}` has no option `{option}`")).primary(*span, "unknown option");
                    match did_you_mean(option, ["axis"]) {
                        Some(s) => d.help(format!("did you mean `{s}`? Call it as {}", usage(name))),
                        None => d.help(format!("`{name}` takes one option, `axis`: call it as {}", usage(name))),
                    }
                }
                _ => Diagnostic::error("E0105", format!("`{name}` takes no named options")).primary(*span, "unexpected option").help(format!("call it as {}", usage(name))),
            },
            UnknownCallee { family, name, span } => {
                let names = family.names();
                let d = Diagnostic::error("E0102", format!("unknown {} `{name}`", family.noun())).primary(*span, format!("not a known {}", family.noun()));
                match did_you_mean(name, names.iter().copied()) {
                    Some(s) => d.help(format!("did you mean `{s}`? Known: {}", code_list(&names))),
                    None => d.help(format!("known: {}", code_list(&names))),
                }
            }
            NotACall { family, span } => {
                let names = family.names();
                Diagnostic::error("E0108", format!("expected a {}", family.noun()))
                    .primary(*span, format!("this is not a {}", family.noun()))
                    .help(format!("write one of {} with its options in parentheses, e.g. `{}(...)`", code_list(&names), names[0]))
            }
            UnknownOption { family, callee, name, span } => {
                // Cannot fire: this wording is only asked for a callee the lookup found.
                let sig = family.lookup(callee).expect("callee was found");
                let names: Vec<&str> = sig.options.iter().map(|o| o.name).collect();
                let d = Diagnostic::error("E0105", format!("`{callee}` has no option `{name}`")).primary(*span, "unknown option");
                match (did_you_mean(name, names.iter().copied()), names.is_empty()) {
                    (_, true) => d.help(format!("`{callee}` takes no options")),
                    (Some(s), _) => d.help(format!("did you mean `{s}`? Options of `{callee}`: {}", code_list(&names))),
                    (None, _) => d.help(format!("options of `{callee}`: {}", code_list(&names))),
                }
            }
            DuplicateOption { name, span, first } => Diagnostic::error("E0106", format!("option `{name}` is given twice"))
                .primary(*span, "given again here")
                .secondary(*first, "first given here")
                .help("keep one of them"),
            MissingOption { callee, option, span } => Diagnostic::error("E0106", format!("`{callee}` needs the option `{option}`"))
                .primary(*span, format!("`{option}` is missing"))
                .help(format!("add `{option}: ...` inside the parentheses")),
            TooManyArgs { callee, span, max } => Diagnostic::error("E0104", format!("`{callee}` takes at most {max} arguments"))
                .primary(*span, "one argument too many")
                .help("remove it, or name the options you mean (`name: value`)"),
            BadOptionValue { callee, option, span, expected } => Diagnostic::error("E0107", format!("bad value for `{option}` of `{callee}`"))
                .primary(*span, format!("expected {}", opt_type(*expected)))
                .help(format!("`{option}` must be {}", opt_type(*expected))),
            NotAllowedInEnergy { what, span } => Diagnostic::error("E0108", format!("{what} cannot appear in an energy"))
                .primary(*span, "not allowed here")
                .help("energies are built from numbers, declared names, built-in functions and nets"),
            NotANumber { span } => Diagnostic::error("E0108", "expected a number").primary(*span, "not a number literal").help("write a literal such as `0`, `-1.5` or `1e-3`"),
            NonFinite { span } => Diagnostic::error("E0109", "number is too large").primary(*span, "this is infinite in 64-bit floating point"),
            ElementwiseMismatch { op, lhs, rhs } => Diagnostic::error("E0200", format!("shapes do not match for `{}`", op.symbol()))
                .primary(lhs.0, format!("this is {}", shape_str(&lhs.1)))
                .secondary(rhs.0, format!("this is {}", shape_str(&rhs.1)))
                .help(match (broadcast_fix(&lhs.1, &rhs.1), op) {
                    (Some(fix), _) => format!("elementwise operators need equal shapes, or one shape ending the other; {fix}"),
                    (None, BinOp::Mul) => "elementwise operators need equal shapes, or one shape ending the other; for a product that sums over an axis use `@`".to_string(),
                    (None, _) => "elementwise operators need equal shapes, or one shape ending the other (a scalar fits everything)".to_string(),
                }),
            MatMulMismatch { lhs, rhs } => Diagnostic::error("E0201", "inner dimensions of `@` do not match")
                .primary(lhs.0, format!("this is {}", shape_str(&lhs.1)))
                .secondary(rhs.0, format!("this is {}", shape_str(&rhs.1)))
                .help(format!(
                    "the last dimension on the left ({}) must equal the first on the right ({}); a transpose `.T` may be missing",
                    lhs.1.last().copied().unwrap_or(0),
                    rhs.1.first().copied().unwrap_or(0)
                )),
            MatMulScalar { operand } => Diagnostic::error("E0203", "`@` needs vectors or matrices on both sides")
                .primary(*operand, "this is a scalar")
                .help("to scale by a scalar, use `*`"),
            MatMulRank { operand, shape } => Diagnostic::error("E0203", "`@` needs vectors or matrices on both sides")
                .primary(*operand, format!("this is {}, with {} axes", shape_str(shape), shape.len()))
                .help("make it a matrix first (`reshape(x, [a, b])` or `flatten(x)`), or contract one axis with `sum(x * y, axis: k)`"),
            TransposeRank { span, shape } => Diagnostic::error("E0203", "only matrices can be transposed")
                .primary(*span, format!("this is {}", shape_str(shape)))
                .help("`@` already treats a vector as a row or a column as needed; remove `.T`"),
            NonScalarExponent { span, shape } => Diagnostic::error("E0203", "the exponent of `^` must be a scalar")
                .primary(*span, format!("this is {}", shape_str(shape)))
                .help("use `exp(log(x) * y)` for elementwise powers"),
            NetInput { net, span, expected, found, decl } => {
                let d = Diagnostic::error("E0204", format!("net `{net}` expects an input of width {expected}"))
                    .primary(*span, format!("this is {}", shape_str(found)))
                    .secondary(*decl, "net declared here");
                if found.len() > 1 && elements(found) == *expected {
                    d.help(format!("`flatten(...)` makes it a vector of length {expected}"))
                } else {
                    d.help(format!("pass a vector of length {expected}, or change the net's first width"))
                }
            }
            ConvInput { net, var, span, channels, found, decl } => Diagnostic::error("E0204", format!("convnet `{net}` expects an image of {channels} channel{}", if *channels == 1 { "" } else { "s" }))
                .primary(*span, format!("this is {}, not [{channels}, H, W]", shape_str(found)))
                .secondary(*decl, "net declared here")
                .help({
                    let it = var.as_ref().map_or("it".to_string(), |v| format!("`{v}`"));
                    match found.as_slice() {
                        [h, w] => format!("declare {it} as `real[{channels}, {h}, {w}]`: a convnet takes [channels, height, width]"),
                        [c, h, w] => format!("the convnet's first width is its input's channels: write `convnet({c} -> ...)`, or give it a [{channels}, {h}, {w}] image"),
                        _ => format!("declare {it} as `real[{channels}, H, W]`: a convnet takes [channels, height, width]"),
                    }
                }),
            ConvTooSmall { net, span, found, stages, stride, decl } => Diagnostic::error("E0204", format!("the image is too small for convnet `{net}`"))
                .primary(*span, format!("this is {}", shape_str(found)))
                .secondary(*decl, "net declared here")
                .help(format!("its {stages} pooling stage(s) each divide the sides by {stride}, down to nothing; use fewer stages, a smaller `stride`, or `pool: false`")),
            NonScalarEnergy { name, span, shape } => Diagnostic::error("E0202", format!("energy `{name}` is not a scalar"))
                .primary(*span, format!("this is {}", shape_str(shape)))
                .help("an energy term must be one number per example: wrap it in `sum(...)`, or use `@` to contract it"),
            NoEnergy { model, span } => Diagnostic::error("E0207", format!("model `{model}` has no energy terms"))
                .primary(*span, "no `energy` declaration in this model")
                .help("add at least one `energy NAME = ...;`"),
            BoundsOnDiscrete { span } => Diagnostic::error("E0205", "only real variables can be bounded").primary(*span, "bounds on a discrete type").help("remove `in [..]`, or make the variable `real`"),
            EmptyBounds { span, low, high } => Diagnostic::error("E0205", format!("empty range: {low} is not below {high}"))
                .primary(*span, "lower bound must be below upper bound")
                .help("swap the bounds"),
            TooFewCategories { span } => Diagnostic::error("E0205", "a categorical variable needs at least 2 categories").primary(*span, "fewer than 2 categories").help("use `binary` for a single on/off unit"),
            ZeroDim { span } => Diagnostic::error("E0205", "a dimension cannot be 0").primary(*span, "zero-sized").help("sizes start at 1"),
            TooManyDims { span, max } => Diagnostic::error("E0205", format!("at most {max} dimension(s) here")).primary(*span, "too many dimensions").help("merge neighbouring axes into one whose size is their product, e.g. `real[2, 3, 4]` as `real[6, 4]`"),
            ParamNotReal { span } => Diagnostic::error("E0205", "parameters and typed constants are unbounded reals")
                .primary(*span, "expected `real` or `real[...]`")
                .help("discrete and bounded types are for `visible` and `hidden` variables"),
            BadDim { name, span } => Diagnostic::error("E0206", format!("`{name}` is not a size"))
                .primary(*span, "not a positive whole-number constant")
                .help(format!("declare it as `const {name} = 64;` (an untyped whole number)")),
            ConstShape { span, declared, built } => Diagnostic::error("E0206", "the constant's type does not match its value")
                .primary(*span, format!("declared {}, but the value is {}", shape_str(declared), shape_str(built)))
                .help("remove the type; graph constants take their shape from the builder"),
            NetLayers { span, kind: NetKind::Conv, found } => Diagnostic::error("E0206", format!("a convnet has at least 3 widths, found {found}"))
                .primary(*span, "wrong number of widths")
                .help("write `convnet(channels -> stage channels ... -> out)`, e.g. `convnet(1 -> 32 -> 64 -> 1)`: the input's channels, one width per stage, then the output"),
            NetLayers { span, found, .. } => Diagnostic::error("E0206", format!("a linear net has exactly 2 widths, found {found}"))
                .primary(*span, "wrong number of widths")
                .help("write `linear(in -> out)`; use `mlp(in -> hidden -> out)` for hidden layers"),
            ConvKernel { span, kernel } => Diagnostic::error("E0208", format!("a convnet's kernel must be odd, found {kernel}"))
                .primary(*span, "even kernel")
                .help(format!("use {} or {}: an odd kernel has a centre, so padding by kernel / 2 keeps the image's size", kernel - 1, kernel + 1)),
            ConvBlocks { span, blocks, max } => Diagnostic::error("E0208", format!("at most {max} residual blocks per convnet stage, found {blocks}"))
                .primary(*span, "too many blocks")
                .help("add stages (widths) instead: each stage downsamples, so deeper nets stay cheap"),
            ReshapeSize { span, from, to } => Diagnostic::error("E0209", format!("cannot reshape {} into {}", shape_str(&from.1), shape_str(to)))
                .primary(*span, format!("{} elements", elements(to)))
                .secondary(from.0, format!("this is {}, {} elements", shape_str(&from.1), elements(&from.1)))
                .help("`reshape` keeps every element: the sizes of the new shape must multiply to the same count"),
            BadAxis { func, span, axis, arg } => Diagnostic::error("E0209", format!("`{func}` along axis {axis} of a value with {} axes", arg.1.len()))
                .primary(*span, "no such axis")
                .secondary(arg.0, format!("this is {}", shape_str(&arg.1)))
                .help(match arg.1.len() {
                    0 => "a scalar has no axes: remove `axis`".to_string(),
                    n => format!("axes count from 0: use an axis below {n}, or `{func}(x)` for every element"),
                }),
            NotAShape { span } => Diagnostic::error("E0108", "expected a shape")
                .primary(*span, "not a list of sizes")
                .help("write the new shape as a list of whole numbers or size constants, e.g. `[4, 16]`"),
            UnknownSetting { name, span } => {
                let keys = crate::analysis::schema::TRAIN_KEYS;
                let d = Diagnostic::error("E0301", format!("unknown train setting `{name}`")).primary(*span, "not a train setting");
                match did_you_mean(name, keys.iter().copied()) {
                    Some(s) => d.help(format!("did you mean `{s}`? Settings: {}", code_list(keys))),
                    None => d.help(format!("settings: {}", code_list(keys))),
                }
            }
            HostRows { key, span } => Diagnostic::error("E0301", format!("`{key}` is not a setting of a fit on rows in memory"))
                .primary(*span, "the fit trains on the rows it is given")
                .help(format!("remove `{key}`; pass the rows (and test rows, to score them) to the fit itself")),
            HostInit { span } => Diagnostic::error("E0301", "`init` is not a setting of a fit in memory")
                .primary(*span, "the fit starts from the parameters it is given")
                .help("remove `init`; load the checkpoint with `Model::load` and pass it to the fit as its start"),
            FreezeAll { model, span } => Diagnostic::error("E0304", format!("`freeze` holds every parameter of `{model}`, so nothing would train"))
                .primary(*span, "every parameter named here or in a net named here")
                .help("leave at least one parameter or net out of `freeze`; to use the parameters as they are, run `sample` or `eval` with `--params`"),
            MissingSetting { key, span } => Diagnostic::error("E0302", format!("train block has no `{key}`"))
                .primary(*span, format!("`{key}` is required"))
                .help(match *key {
                    "data" => "add e.g. `data = csv(\"train.csv\") -> v;`",
                    _ => "add e.g. `objective = pcd(k: 1);`",
                }),
            MissingBinding { span } => Diagnostic::error("E0303", "data is not bound to variables")
                .primary(*span, "which variables do these columns feed?")
                .help("add `-> v` (or `-> (x, y)`) after the source"),
            UnexpectedBinding { key, span } => Diagnostic::error("E0303", format!("`{key}` takes no `->` binding"))
                .primary(*span, "unexpected binding")
                .help("only `data`, `test` and `outliers` bind columns to variables"),
            BindNonVisible { name, span } => Diagnostic::error("E0303", format!("`{name}` is not a visible variable"))
                .primary(*span, "cannot bind data to this")
                .help("data feeds `visible` variables; hidden ones are inferred"),
            UnboundVisible { name, span, decl } => Diagnostic::error("E0303", format!("visible variable `{name}` gets no data"))
                .primary(*span, format!("`{name}` is missing from this binding"))
                .secondary(*decl, "declared visible here")
                .help(format!("bind it (`-> (..., {name})`) or declare it `hidden`")),
            BadSettingValue { key, span, expected } => Diagnostic::error("E0107", format!("bad value for `{key}`")).primary(*span, format!("expected {expected}")),
            SamplerPlace { name, span, whole_model: true } => Diagnostic::error("E0110", format!("`{name}` applies to the whole model, not to one variable"))
                .primary(*span, "written for one variable")
                .help(format!("write it on its own line of the sample block, with no variable: `{name}(...);`")),
            SamplerPlace { name, span, whole_model: false } => Diagnostic::error("E0110", format!("`{name}` needs the variable it samples"))
                .primary(*span, "no variable named")
                .help(format!("write `x: {name}(...);` for the variable `x`; only `tempering` and `anneal` stand alone")),
            TemperingRange { span, t_max } => Diagnostic::error("E0107", format!("the hottest temperature must be above 1, found {t_max}"))
                .primary(*span, "the ladder runs from T = 1 up to this")
                .help("`tempering(replicas: 8, t_max: 10)` spaces 8 temperatures geometrically from 1 to 10"),
            TooManyReplicas { span, replicas, max } => Diagnostic::error("E0107", format!("at most {max} tempering replicas, found {replicas}"))
                .primary(*span, "each replica is a full set of the chains")
                .help("a geometric ladder of 8 to 16 temperatures usually suffices; raise `t_max` rather than the count"),
            TemperatureList { span, problem } => {
                let (title, label) = match problem {
                    LadderProblem::TooFew => ("a tempering ladder needs at least two temperatures".to_string(), "one temperature has no replica to swap with".to_string()),
                    LadderProblem::FirstNotOne(t) => (format!("the first tempering temperature must be 1, found {t}"), "only the replica at T = 1 samples the model itself".to_string()),
                    LadderProblem::NotIncreasing { index, previous, value } => (
                        format!("tempering temperatures must increase strictly: temperature {} is {value}, after {previous}", index + 1),
                        "not above the temperature before it".to_string(),
                    ),
                };
                Diagnostic::error("E0107", title).primary(*span, label).help("write the ladder from 1 up, e.g. `tempering(temperatures: [1, 1.5, 2.5, 4])`")
            }
            TemperingForms { span, other, other_span } => Diagnostic::error("E0107", format!("`temperatures` and `{other}` both give the tempering ladder"))
                .primary(*span, "the ladder by hand")
                .secondary(*other_span, format!("`{other}` spaces one geometrically"))
                .help("give either `temperatures: [...]` or `replicas` and `t_max`, not both"),
            Unused { is, name, span } => Diagnostic::warning("W0001", format!("{} `{name}` is never used", decl_word(*is)))
                .primary(*span, "declared here")
                .help("use it in an energy term, or remove it"),
        }
    }
}

impl From<&PlanError> for Diagnostic {
    fn from(e: &PlanError) -> Self {
        use PlanError::*;
        match e {
            NoFiniteZ { var, span, degree } => Diagnostic::error("E0401", format!("the density has no finite normaliser in `{var}`"))
                .primary(*span, format!("the energy is {} in `{var}`, so exp(-E) does not integrate", degree.word()))
                .help(format!("add a confining term such as `energy prior = 0.5 * sum(square({var}));`, or bound it: `real[..] in [lo, hi]`")),
            LeadingTermFalls { var, span, term } => Diagnostic::error("E0401", format!("the density has no finite normaliser in `{var}`"))
                .primary(*span, format!("the energy's leading term in `{var}`, `{term}`, falls without bound, so exp(-E) does not integrate"))
                .help(format!("the leading term must rise in every direction: a positive even power such as `0.5 * sum(square({var}))`; or bound it: `real[..] in [lo, hi]`")),
            BoundedEnergy { var, span, term } => Diagnostic::error("E0401", format!("the density has no finite normaliser in `{var}`"))
                .primary(*span, format!("every term that varies with `{var}` is bounded (such as `{term}`), so exp(-E) stays above a positive floor over an infinite domain"))
                .help(format!("add a confining term such as `energy prior = 0.5 * sum(square({var}));`, or bound it: `real[..] in [lo, hi]`")),
            NotProvablyNormalisable { var, span, why } => {
                let d = Diagnostic::warning("W0401", format!("cannot prove that exp(-E) integrates over `{var}`"));
                match why {
                    crate::analysis::plan::Unproved::NoConfiningTerm { term } => d
                        .primary(*span, format!("no term is a positive even power of `{var}`, and `{term}` is not known to rise in every direction"))
                        .help(format!("training usually keeps such energies in check; a term like `energy prior = 0.01 * sum(square({var}));` makes it certain")),
                    crate::analysis::plan::Unproved::Outgrown { term, confining } => d
                        .primary(*span, format!("`{term}` may fall as fast as `{confining}` rises"))
                        .help(format!("a confining term of higher order than the others, such as `0.01 * sum({var}^4)`, or bounds `real[..] in [lo, hi]` make it certain")),
                }
            }
            NeedsContinuous { objective, span, var, var_span, type_text } => Diagnostic::error("E0402", format!("`{objective}` needs continuous visible variables, but `{var}` is {type_text}"))
                .primary(*span, "this objective differentiates the energy in the data")
                .secondary(*var_span, "discrete variable declared here")
                .help("for discrete data use `cd`, `pcd` or `pl`"),
            NeedsFreeEnergy { objective, span, var, var_span, why } => Diagnostic::error("E0403", format!("`{objective}` needs the free energy, but `{var}` cannot be summed out"))
                .primary(*span, "this objective works on the energy of the visible variables alone")
                .secondary(*var_span, format!("cannot be summed out: {why}"))
                .help("use `cd` or `pcd`, which sample latent variables instead"),
            JemNeedsLabel { span } => Diagnostic::error("E0402", "`jem` needs a categorical label")
                .primary(*span, "no visible `categorical` variable in this model")
                .help("declare the label, e.g. `visible y : categorical(10);`, and couple it to the logits: `energy e = -(f(x) @ y);`"),
            JemNeedsContinuous { span } => Diagnostic::error("E0402", "`jem` needs a continuous input besides the label")
                .primary(*span, "no visible `real` variable in this model")
                .help("JEM samples the input with Langevin dynamics; declare it `real`"),
            ClassifyNeedsLabel { span, why } => Diagnostic::error("E0402", "`classify` needs a categorical label and a real input")
                .primary(*span, why.as_str())
                .help("declare the label and an input, e.g. `visible x : real[2]; visible y : categorical(3);`, and make the logits linear in the label: `energy e = -(f(x) @ y);`"),
            OutliersNeedClassify { span, objective } => Diagnostic::error("E0402", format!("`outliers` are read only by `classify`, not by `{objective}`"))
                .primary(*span, "no objective reads these rows")
                .help("remove `outliers`, or train with `objective = classify(...)` to push their energies above `m_out`"),
            MarginsNeedOutliers { span, option } => Diagnostic::error("E0402", format!("`classify`'s `{option}` needs `outliers` to apply to"))
                .primary(*span, "the energy-bounded term compares data energies with outlier energies")
                .help("name the outlier rows in the train block, e.g. `outliers = uniform(n: 2000) -> x;`, or drop `m_in`, `m_out` and `weight` for cross-entropy alone"),
            PlNeedsFullyVisible { span, var, var_span, why } => Diagnostic::error("E0402", format!("pseudo-likelihood needs a fully visible discrete model, but {why}"))
                .primary(*span, "`pl` conditions each visible unit on all the others")
                .secondary(*var_span, format!("`{var}` declared here"))
                .help("use `cd` or `pcd` for models with hidden or continuous variables"),
            ImprovedCdNeedsLangevin { span, var, var_span, why } => Diagnostic::error("E0402", format!("improved CD (`kl`, `entropy`) needs every variable visible, continuous and sampled by plain Langevin, but {why}"))
                .primary(*span, "these terms differentiate the last Langevin step of the samples")
                .secondary(*var_span, format!("`{var}` declared here"))
                .help("set `kl` and `entropy` to 0 (plain PCD), or sum the variable out or make it a real visible one"),
            Reparam { var, latent, span, why } => {
                use crate::analysis::plan::ReparamWhy::*;
                let (label, help) = match why {
                    VarDomain => (format!("`{var}` must be an unbounded real: `mean + scale ⊙ ε` covers every value"), format!("declare `{var}` as `real[..]` without bounds, or sample it by `langevin`")),
                    LatentDomain => (format!("the latent `{latent}` must be an unbounded real, which Langevin moves freely"), format!("declare `{latent}` as `real[..]` without bounds")),
                    SelfLatent => (format!("`{var}` is reparameterised through a latent other than itself"), format!("name the decoder's latent: `{var}: reparam(z);`")),
                    NoCoupling => (format!("no energy term depends on both `{var}` and `{latent}`"), format!("the decoder's term, e.g. `energy recon = 0.5 * sum(square({var} - dec({latent}))) / sigma^2;`, must use both")),
                    NotGaussian { terms } => (format!("{} not quadratic in `{var}` with a positive diagonal precision", match terms.as_slice() { [t] => format!("the term `{t}` coupling them is"), _ => format!("the terms coupling them ({}) are", names(terms)) }), format!("write the decoder as a Gaussian in `{var}`: `0.5 * sum(square({var} - dec({latent})) * precision)` with a positive precision")),
                    PrecisionVaries { precision, on } => (format!("the precision of `{var}` given `{latent}`, `{precision}`, depends on `{on}`"), "the reparameterised sampler needs a precision free of every variable (a number or parameters, e.g. `exp(log_prec)`)".to_string()),
                };
                Diagnostic::error("E0407", format!("cannot sample `{var}` as `mean({latent}) + scale ⊙ ε`: {label}"))
                    .primary(*span, "`reparam` needs a Gaussian decoder of constant precision")
                    .help(help)
            }
            GibbsOnContinuous { var, span } => Diagnostic::error("E0404", format!("cannot Gibbs-sample the continuous variable `{var}`"))
                .primary(*span, "no exact conditional to sample from")
                .help(format!("use `{var}: langevin(step: 0.01);` or `mala`")),
            LangevinOnDiscrete { var, span, kernel } => Diagnostic::error("E0404", format!("`{kernel}` needs a continuous variable, but `{var}` is discrete"))
                .primary(*span, if kernel == "hmc" { "Hamiltonian Monte Carlo follows the gradient of a continuous energy" } else { "Langevin dynamics follows the gradient of a continuous energy" })
                .help(format!("use `{var}: gibbs;`, or remove the override to let the planner choose")),
            CriticShape { span, critic, critic_span, expected, found } => Diagnostic::error("E0405", format!("`lsd`'s critic `{critic}` does not fit the data"))
                .primary(*span, format!("the critic must be {expected}"))
                .secondary(*critic_span, format!("`{critic}` is {found}"))
                .help("declare the critic as a map from the data to its own space, e.g. `net critic = mlp(2 -> 64 -> 64 -> 2, act: swish);` for `real[2]`"),
            ElboVariables { span, why, var_span } => {
                let d = Diagnostic::error("E0402", format!("`elbo` needs one visible variable and one unbounded real latent, but {why}"))
                    .primary(*span, "the encoder's Gaussian posterior is over one real latent, given one visible input");
                let d = match var_span {
                    Some(s) => d.secondary(*s, "declared here"),
                    None => d,
                };
                d.help("declare the latent as `hidden z : real[8];` and let the energy be -log p(x, z), e.g. `energy prior = 0.5 * sum(square(z));` plus a decoder term")
            }
            EncoderShape { span, encoder, encoder_span, expected, found } => Diagnostic::error("E0406", format!("`elbo`'s encoder `{encoder}` does not fit the model"))
                .primary(*span, format!("the encoder must be {expected}"))
                .secondary(*encoder_span, format!("`{encoder}` is {found}"))
                .help("its outputs are the posterior mean, then the log standard deviation, each the latent's size: e.g. `net q = mlp(64 -> 128 -> 16, act: swish);` for `x : real[64]` and `z : real[8]`"),
            ScoreMatchingDimension { span, dims } => Diagnostic::warning("W0402", format!("exact score matching over {dims} dimensions costs {dims} second derivatives per example"))
                .primary(*span, "slow for this many dimensions")
                .help("`ssm(projections: 1)` or `dsm(sigma: 0.1)` estimate the same objective at the cost of one"),
            ScoreMatchingBounded { objective, span, var, var_span, bounds: (lo, hi) } => Diagnostic::warning("W0403", format!("`{objective}` is biased on the bounded variable `{var}`"))
                .primary(*span, "this objective integrates by parts, assuming the density vanishes at the edges of its domain")
                .secondary(*var_span, format!("bounded to [{lo}, {hi}] here; the boundary terms are ignored"))
                .help("train with `pcd`, whose Langevin chains respect the bounds, or remove the bounds if the data never reaches them"),
        }
    }
}

/// A count for people: digits up to a trillion, then powers of ten.
fn count(n: u128) -> String {
    if n == u128::MAX {
        "more than 3.4e38".to_string()
    } else if n < 1_000_000_000_000 {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{:.1e}", n as f64)
    }
}

fn bytes(n: u128) -> String {
    let gib = n as f64 / f64::from(1u32 << 30);
    if gib >= 0.1 { format!("{gib:.1} GiB") } else { format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)) }
}

impl From<&crate::analysis::limits::LimitError> for Diagnostic {
    fn from(e: &crate::analysis::limits::LimitError) -> Self {
        use crate::analysis::limits::{LimitError::*, *};
        match e {
            Units { var, span, units } => Diagnostic::error("E0502", format!("variable `{var}` has {} units (limit {})", count(*units), count(MAX_UNITS)))
                .primary(*span, "too many units")
                .help("every unit is held per chain and per example; use a smaller variable"),
            Elements { what, name, span, elements } => Diagnostic::error("E0503", format!("{what} `{name}` has {} elements (limit {})", count(*elements), count(MAX_ELEMENTS)))
                .primary(*span, "too large to allocate")
                .help("shrink its dimensions; a tensor at the limit already takes 512 MiB"),
            Lattice { name, span, units, elements } => Diagnostic::error("E0504", format!("graph constant `{name}` has {} units; its adjacency matrix would hold {} elements (limit {})", count(*units), count(*elements), count(MAX_ELEMENTS)))
                .primary(*span, "lattice too large")
                .help("graph constants are dense matrices over their units; use a lattice of at most 11,585 units (e.g. `grid(100, 100)`)"),
            Batch { what, span, rows, values, .. } => {
                let d = Diagnostic::error("E0505", format!("{what}: {} rows of {} values each make {} values (limit {})", count(*rows), count(*values), count(rows.saturating_mul(*values)), count(MAX_BATCH_VALUES)));
                let d = match span {
                    Some(s) => d.primary(*s, "too large to allocate"),
                    None => d,
                };
                d.help(format!("at most {} rows of this model fit", count(MAX_BATCH_VALUES / (*values).max(1))))
            }
            Count { flag, value, limit, unit } => Diagnostic::error("E0506", format!("{flag}: {} {unit} in all (limit {})", count(*value), count(*limit))).help(format!("use at most {} {unit}", count(*limit))),
            Memory { what, needed, available } => Diagnostic::error("E0507", format!("{what} needs about {} of memory, but {} is available", bytes(*needed), bytes(u128::from(*available))))
                .help("use fewer chains, a smaller batch or fewer kept samples (--every)"),
        }
    }
}

/// For limits a flag passes (no span): `error[CODE]: message` and the help.
impl std::fmt::Display for crate::analysis::limits::LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = Diagnostic::from(self);
        let flag = match self {
            crate::analysis::limits::LimitError::Batch { flag: Some(flag), .. } => format!(" ({flag})"),
            _ => String::new(),
        };
        write!(f, "[{}] {}{flag}", d.code, d.message)?;
        match &d.help {
            Some(h) => write!(f, "\n  help: {h}"),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for crate::runtime::data::DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::runtime::data::DataError::*;
        match self {
            Read { source, reason } => write!(f, "cannot read data `{source}`: {reason}"),
            Empty { source } => write!(f, "{source}: no data rows\n  help: the file is empty (or holds only a header)"),
            ColumnCount { source, row, found, expected } => write!(
                f,
                "{source}:{row}: {found} columns, expected {expected}\n  help: the bound variables take {expected} columns (one per unit, one per categorical unit); name columns in a header (`v0`, `v1`, ...) to bind by name"
            ),
            NotANumber { source, row, column, text } => write!(f, "{source}:{row}:{column}: `{text}` is not a number"),
            NotFinite { source, row, column } => write!(
                f,
                "{source}:{row}:{column}: NaN or infinity\n  help: remove or impute missing values before training"
            ),
            OutOfRange { source, row, column, value } => write!(
                f,
                "{source}:{row}:{column}: {value:e} is past the range of 32-bit floats (about ±3.4e38), which ebmc computes in\n  help: rescale the column (or use `scale:` on the data source)"
            ),
            MixedHeader { source, row, column, text } => write!(
                f,
                "{source}:{row}:{column}: `{text}` is not a number, but other cells of this first row are\n  help: a header row names every column and a data row is all numbers; fix the cell, or say `header: true` on the csv source"
            ),
            OutOfDomain { source, row, column, value, var, domain } => {
                write!(f, "{source}:{row}:{column}: {value} is not a value of `{var}`, which takes {domain}")
            }
            Format { source, reason } => write!(f, "{source}: {reason}"),
            Split { reason } => write!(f, "bad test split: {reason}"),
            AlreadyBinary { source, threshold } => write!(
                f,
                "{source}: every value is 0 or 1 already, and `binarize: {threshold}` would turn each 1 into 0\n  help: a `--data` file is read with the train block's `scale` and `binarize`; read a file of 0/1 values (such as the samples `ebmc sample` writes) as it is with `--data-as-is`"
            ),
            NoSource { model } => write!(
                f,
                "the train settings of `{model}` name no data source: they were bound for rows a host passes in memory"
            ),
            Shape { source, found, labels: false, declared } => write!(
                f,
                "{source} holds {}; `{}` is declared {}\n  help: rows feed a variable of their shape, with axes of size 1 added or dropped (rows of [28, 28] feed `real[28, 28]` or `real[1, 28, 28]`), or a one-axis variable of as many units (`real[784]`); a file of flat rows feeds any shape of as many units",
                rows_of(found, "rows"),
                declared.var,
                declared_type(&declared.domain, &declared.shape)
            ),
            Shape { source, found, labels: true, declared } => write!(
                f,
                "{source} holds {}; `{}` is declared {}\n  help: a label feeds one unit: bind it to a variable such as `categorical(10)` (the label is its category)",
                rows_of(found, "labels"),
                declared.var,
                declared_type(&declared.domain, &declared.shape)
            ),
            RowCounts { images, rows, labels, label_rows } => write!(
                f,
                "{labels} holds {label_rows} labels but {images} holds {rows} images\n  help: the labels file gives one label per image, in the same order; pair the images with their own labels file (MNIST's `train-images-idx3-ubyte` with `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` with `t10k-labels-idx1-ubyte`)"
            ),
            RecordSize { source, bytes } => write!(
                f,
                "{source}: {bytes} bytes is not a whole number of CIFAR-10 records (3073 bytes each: a label byte, then 3072 pixel bytes)\n  help: `cifar10` reads the binary version of CIFAR-10 (`data_batch_1.bin` ... `test_batch.bin`, 30730000 bytes each), not the Python or MATLAB version"
            ),
            ImageBinding { source, labels: Some(labels), bound } => write!(
                f,
                "{source}: `labels: \"{labels}\"` gives a label per image, but `-> {}` binds {}\n  help: bind `-> (x, y)`, the images to `x` and the labels to `y`, or leave out `labels:` to bind the images alone",
                binding_text(bound),
                variables(bound.len())
            ),
            ImageBinding { source, labels: None, bound } => write!(
                f,
                "{source} gives images and their labels, but `-> {}` binds {}\n  help: bind `-> x` for the images alone or `-> (x, y)` for images and labels",
                binding_text(bound),
                variables(bound.len())
            ),
            NoLabels { source, found, bound } => write!(
                f,
                "{source} holds {}, which feed one variable, but `-> {}` binds {}\n  help: give the labels as a second file of the same format, `labels: \"FILE\"`, to bind `-> (x, y)`",
                rows_of(found, "rows"),
                binding_text(bound),
                variables(bound.len())
            ),
        }
    }
}

/// "rows of shape [28, 28]", or "one label per row" for rows of single numbers.
fn rows_of(shape: &[usize], noun: &str) -> String {
    match (shape.is_empty(), noun) {
        (true, "labels") => "one label per row".to_string(),
        (true, _) => "one number per row".to_string(),
        (false, _) => format!("{noun} of shape {}", shape_str(shape)),
    }
}

/// "1 variable", "3 variables".
fn variables(n: usize) -> String {
    if n == 1 { "1 variable".to_string() } else { format!("{n} variables") }
}

/// A binding as written after `->`: `x` or `(x, y)`.
fn binding_text(bound: &[String]) -> String {
    match bound {
        [one] => one.clone(),
        _ => format!("({})", bound.join(", ")),
    }
}

/// A variable's type as declared: `real[1, 28, 28] in [0, 1]`, `categorical(10)`.
fn declared_type(domain: &crate::analysis::program::Domain, shape: &[usize]) -> String {
    use crate::analysis::program::Domain;
    let dims = |d: &[usize]| if d.is_empty() { String::new() } else { shape_str(d) };
    match domain {
        Domain::Binary => format!("binary{}", dims(shape)),
        Domain::Spin => format!("spin{}", dims(shape)),
        Domain::Categorical { categories } => {
            format!("categorical({categories}){}", dims(&shape[..shape.len().saturating_sub(1)]))
        }
        Domain::Real { bounds: None } => format!("real{}", dims(shape)),
        Domain::Real { bounds: Some((lo, hi)) } => format!("real{} in [{lo}, {hi}]", dims(shape)),
    }
}

impl std::fmt::Display for crate::backend::TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            crate::backend::TrainError::NonFinite { what, step } => {
                write!(f, "training diverged at step {step}: {what} is not finite")
            }
            crate::backend::TrainError::Setup(reason) => write!(f, "{reason}"),
        }
    }
}

impl std::fmt::Display for crate::tensor::ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::tensor::ShapeError::*;
        match self {
            MissingVariable { var } => {
                write!(f, "no values for the variable `{var}`; give it as `[rows, ...shape]` beside the others")
            }
            VariableShape { var, found, expected } => write!(
                f,
                "the rows of `{var}` have shape {found:?}, the model needs {expected:?} (rows first, then the variable's shape)"
            ),
            RowCounts { var, rows, other, other_rows } => {
                write!(f, "`{var}` has {rows} rows but `{other}` has {other_rows}; give every variable the same rows")
            }
            NoRows => write!(f, "no rows to evaluate"),
            Inconsistent { name, shape, len } => write!(f, "`{name}` claims shape {shape:?} but holds {len} values"),
            MissingParameter { name } => {
                write!(f, "no value for the parameter `{name}`; are these parameters from another model?")
            }
            ParameterShape { name, found, expected } => {
                write!(
                    f,
                    "parameter `{name}` has shape {found:?}, the model declares {expected:?}; these parameters were trained for a different model (or an older version of it)"
                )
            }
            UnknownParameter { name, known } => write!(
                f,
                "`{name}` is not a parameter of this model (it has {}); these parameters come from a different model",
                known.join(", ")
            ),
            NonFinite { what, shape, index, value } => {
                let mut at = Vec::new();
                let mut rest = *index;
                for d in shape.iter().rev() {
                    at.push(rest % d.max(&1));
                    rest /= d.max(&1);
                }
                at.reverse();
                write!(f, "{what} is {value} at index {at:?}; every value must be finite")
            }
        }
    }
}

/// The façade's errors (`ebmc::api::Error`), E0601–E0609; a compile error
/// keeps its own diagnostics (`Error::diagnostics`), and this gives its first.
impl From<&crate::api::Error> for Diagnostic {
    fn from(e: &crate::api::Error) -> Self {
        use crate::api::Error::*;
        use crate::tensor::ShapeError;
        match e {
            Compile { diagnostics, .. } => diagnostics
                .iter()
                .find(|d| d.is_error())
                .or(diagnostics.first())
                .cloned()
                .unwrap_or_else(|| Diagnostic::error("E0600", "the source does not compile")),
            Model { wanted: Some(name), models } => Diagnostic::error("E0601", format!("the source has no model `{name}`"))
                .help(format!("its models are {}", names(models))),
            Model { wanted: None, models } if models.is_empty() => Diagnostic::error("E0601", "the source declares no model")
                .help("declare one: `model NAME { visible v : binary[4]; ... }`"),
            Model { wanted: None, models } => Diagnostic::error("E0601", format!("the source declares {} models: {}", models.len(), names(models)))
                .help("choose one by name with `Model::from_source_named` or `Model::from_file_named`"),
            Rows(ShapeError::NoRows) => Diagnostic::error("E0602", "the rows are empty").help("give at least one row, as `[rows, ...shape]` per variable"),
            Rows(e) => Diagnostic::error("E0602", format!("the rows do not fit the model: {e}")),
            UnknownVariable { name, known } => Diagnostic::error("E0602", format!("the rows give `{name}`, which is not a variable of the model"))
                .help(format!("its variables are {}", names(known))),
            Part(e) => with_help_lines("E0602", &e.to_string()),
            Domain { var, row, index, value, domain } => Diagnostic::error("E0602", format!("row {row} of `{var}` holds {value} at index {index}, but `{var}` takes {domain}")),
            Params(e) => Diagnostic::error("E0603", format!("the parameters do not fit the model: {e}"))
                .help("start from `Model::init_params`, or load a checkpoint of this model with `Model::load`"),
            Data(e) => Diagnostic::error("E0604", format!("the training data cannot be loaded: {e}")),
            NoTraining { model } => Diagnostic::error("E0605", format!("nothing says how to fit `{model}`: the source has no train block for it"))
                .help("give train settings with `FitOptions::settings`, e.g. `objective = cd(k: 1); optimizer = adam(lr: 0.01);`"),
            Option { option, value, expected } => Diagnostic::error("E0605", format!("`{option}` is {value}, but it must be {expected}")),
            Limit(e) => Diagnostic::from(e),
            Train(e) => Diagnostic::error("E0606", format!("training failed: {e}"))
                .help("lower the learning rate, or clip gradients with `regularize = clip_grad(1.0);`"),
            Backend(reason) => Diagnostic::error("E0607", format!("the model cannot run: {reason}")),
            Unavailable { what, reason } => Diagnostic::error("E0608", format!("cannot compute {what}: {reason}")),
            NoLogZ { exact, grid, ais } => {
                let other = match (grid, ais) {
                    (Some(why), _) => format!("; no grid integral: {why}"),
                    (None, Some(why)) => format!("; no AIS estimate: {why}"),
                    (None, None) => String::new(),
                };
                Diagnostic::error("E0608", format!("cannot compute the log-likelihood: no exact log Z: {exact}{other}"))
            }
            NotFinite { what, value } => Diagnostic::error("E0608", format!("{what} came out as {value}"))
                .help("the parameters make the energies overflow; check them, or lower the learning rate that produced them"),
            // The checkpoint reader's reasons name the file already; the operating system's do not.
            Io { path, reason } if reason.contains(&path.display().to_string()) => Diagnostic::error("E0609", reason.clone()),
            Io { path, reason } => Diagnostic::error("E0609", format!("`{}`: {reason}", path.display())),
        }
    }
}

fn names(list: &[String]) -> String {
    list.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// As `ebmc check` renders: `error[CODE]: message`, the source excerpt of
/// a compile error, and the help (no colour).
impl std::fmt::Display for crate::api::Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            crate::api::Error::Compile { file, source, diagnostics } => {
                write!(f, "{}", crate::front::diagnostic::render_plain(file, source, diagnostics).trim_end())
            }
            other => {
                let d = Diagnostic::from(other);
                write!(f, "error[{}]: {}", d.code, d.message)?;
                match &d.help {
                    Some(h) => write!(f, "\n  = help: {h}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for crate::api::Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use crate::api::Error::*;
        match self {
            Rows(e) | Params(e) => Some(e),
            Data(e) => Some(e),
            Train(e) => Some(e),
            Limit(e) => Some(e),
            _ => None,
        }
    }
}

impl std::fmt::Display for crate::runtime::train::RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            crate::runtime::train::RunError::Io(reason) => write!(f, "{reason}"),
            crate::runtime::train::RunError::Init(e) => write!(f, "{e}"),
            crate::runtime::train::RunError::Train { error, epoch, .. } => write!(f, "epoch {epoch}: {error}"),
        }
    }
}

impl std::fmt::Display for crate::runtime::train::InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::runtime::train::InitError::*;
        match self {
            Read(reason) => write!(f, "`init`: {reason}"),
            Params { file, error } => write!(f, "`init`: `{}` does not fit the model: {error}", file.display()),
            Disjoint { file, model, held } => write!(
                f,
                "`init`: `{}` holds none of the parameters of `{model}` (it holds {}); is it a checkpoint of the model whose parameters this one shares?",
                file.display(),
                names(held)
            ),
        }
    }
}

impl std::error::Error for crate::runtime::train::InitError {}

impl std::error::Error for crate::runtime::train::RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            crate::runtime::train::RunError::Train { error, .. } => Some(error),
            crate::runtime::train::RunError::Init(e) => Some(e),
            crate::runtime::train::RunError::Io(_) => None,
        }
    }
}

impl std::error::Error for crate::runtime::data::DataError {}
impl std::error::Error for crate::backend::TrainError {}
impl std::error::Error for crate::tensor::ShapeError {}
impl std::error::Error for crate::analysis::limits::LimitError {}

/// The stage errors carry spans; rendered alone they read `[CODE] message`
/// (render their `Diagnostic` against the source for the excerpt).
macro_rules! display_as_diagnostic {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let d = Diagnostic::from(self);
                write!(f, "[{}] {}", d.code, d.message)
            }
        }
        impl std::error::Error for $t {}
    )*};
}
display_as_diagnostic!(ParseError, CheckError, PlanError);

/// The command line's errors (`ebmc::runtime::command`), E0901–E0907, and
/// the limit codes (E05xx) a flag passes. Several help lines join with `\n`.
impl From<&crate::runtime::command::CommandError> for Diagnostic {
    fn from(e: &crate::runtime::command::CommandError) -> Self {
        use crate::runtime::command::CommandError::*;
        match e {
            Read { path, reason } => Diagnostic::error("E0901", format!("cannot read `{}`: {reason}", path.display())),
            Write { path, reason } => Diagnostic::error("E0901", format!("cannot write `{}`: {reason}", path.display())),
            WriteDirectory { path } => Diagnostic::error("E0901", format!("cannot write `{}`: it is a directory", path.display())),
            Stdout { reason } => Diagnostic::error("E0901", format!("cannot write the result to stdout: {reason}")),
            Io(reason) => with_help_lines("E0901", reason),
            Arguments { message } => Diagnostic::error("E0902", message.clone()).help("run `ebmc --help` for the flags"),
            OutputFormat { path, formats } => {
                let names: Vec<String> = formats.iter().map(|f| format!(".{f}")).collect();
                Diagnostic::error("E0902", format!("cannot tell the format of `{}`: use a {} file name", path.display(), names.join(" or ")))
            }
            NoPicture => Diagnostic::error("E0902", "no visible variable is image-shaped (`[H, W]`, `[1, H, W]`, `[3, H, W]` or a square number of units), nor is the model's density over one 2-D real variable; give an image's size with --image HxW"),
            Flag(reason) => with_help_lines("E0902", reason),
            NoSuchModel { name, known } => Diagnostic::error("E0903", format!("no model `{name}` in this file; models: {}", known.join(", "))),
            NoModel { command } => Diagnostic::error("E0903", format!("this file declares no model for `ebmc {command}`; write one as `model NAME {{ ... }}`")),
            SeveralModels { command, models } => Diagnostic::error("E0903", format!("this file has several models ({}); pick one with `ebmc {command} --model NAME`", models.join(", "))),
            NoTrainBlock { model } => Diagnostic::error("E0903", format!("model `{model}` has no `train {model} {{ ... }}` block; add one to say what data and objective to use")),
            NoDataBinding { model } => Diagnostic::error("E0903", format!("model `{model}` has no train block, so ebmc does not know how its data is bound; add `train {model} {{ data = ... -> ...; objective = ...; }}`")),
            Data(e @ crate::runtime::data::DataError::Read { .. }) => with_help_lines("E0901", &e.to_string()),
            Data(e) => with_help_lines("E0904", &e.to_string()),
            Params(reason) => with_help_lines("E0905", reason),
            SamplingDiverged(d) => Diagnostic::error("E0906", format!("sampling diverged: `{}` of chain {} is {} after {} sweeps, so no samples are written", d.var, d.chain + 1, d.value, d.sweeps))
                .help(format!("lower the Langevin step (`sample {{ {}: langevin(step: ...); }}`), add `clip`, or check that the energy grows in every direction", d.var)),
            TrainingDiverged { error, epoch, last_good } => {
                let non_finite = matches!(error, crate::backend::TrainError::NonFinite { .. });
                let message = match error {
                    crate::backend::TrainError::NonFinite { what, step } => format!("training diverged at epoch {epoch}, step {step}: {what} is not finite (NaN or infinite)"),
                    other => format!("{other} (epoch {epoch})"),
                };
                let mut help = match last_good {
                    Some(dir) => format!("the last good checkpoint is kept: {}", dir.display()),
                    None => "no checkpoint was written before this".to_string(),
                };
                if non_finite {
                    help += "\nlower the learning rate, add `regularize = clip_grad(norm: 10);`, or check the data's scale";
                }
                Diagnostic::error("E0906", message).help(help)
            }
            Result(reason) => with_help_lines("E0907", reason),
            NonFiniteEnergy { row, value } => Diagnostic::error("E0907", format!("the energy of row {row} is {value}, not a finite number; the parameters are likely not finite or too large")),
            Limits(errors) => {
                // The first carries the code; the rest are listed as help, each with its own.
                let worded: Vec<(Diagnostic, String)> = errors.iter().map(|e| (Diagnostic::from(e), limit_flag(e))).collect();
                let Some(((first, flag), rest)) = worded.split_first() else {
                    return Diagnostic::error("E0902", "a limit was passed");
                };
                let help: Vec<String> = first.help.iter().cloned().chain(rest.iter().map(|(d, flag)| format!("also [{}] {}{flag}", d.code, d.message))).collect();
                let d = Diagnostic::error(first.code, format!("{}{flag}", first.message));
                if help.is_empty() { d } else { d.help(help.join("\n")) }
            }
        }
    }
}

/// ` (--chains)` after a batch limit a flag passed; nothing for the others.
fn limit_flag(e: &crate::analysis::limits::LimitError) -> String {
    match e {
        crate::analysis::limits::LimitError::Batch { flag: Some(flag), .. } => format!(" ({flag})"),
        _ => String::new(),
    }
}

/// A reason worded elsewhere in this table, whose `\n  help: ...` lines become the help.
fn with_help_lines(code: &'static str, text: &str) -> Diagnostic {
    let mut parts = text.split("\n  help: ");
    let d = Diagnostic::error(code, parts.next().unwrap_or_default());
    let help: Vec<&str> = parts.collect();
    if help.is_empty() { d } else { d.help(help.join("\n")) }
}

/// As `ebmc` prints it without `--message-format json`: `error[CODE]: message`, then each help line.
impl std::fmt::Display for crate::runtime::command::CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = Diagnostic::from(self);
        write!(f, "error[{}]: {}", d.code, d.message)?;
        for h in d.help.iter().flat_map(|h| h.lines()) {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for crate::runtime::command::CommandError {}

impl std::fmt::Display for crate::runtime::command::CommandNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::runtime::command::CommandNote::*;
        match self {
            DefaultParams { seed } => {
                write!(f, "note: no --params given; using the model's initialisers (seed {seed})")
            }
            Unformatted { path } => write!(f, "{} is not formatted; run `ebmc fmt {}`", path.display(), path.display()),
            ImageRange { path, var, lo, hi } => write!(
                f,
                "note: `{var}` is an unbounded real; {} shades its sampled range {lo:.3} to {hi:.3} from black to white (bounds, `in [lo, hi]`, fix the scale)",
                path.display()
            ),
            Init(r) => {
                write!(f, "init: {} parameter(s) from `{}`: {}", r.loaded.len(), r.file.display(), names(&r.loaded))?;
                if !r.initialised.is_empty() {
                    write!(f, "\ninit: {} from their initialisers: {}", r.initialised.len(), names(&r.initialised))?;
                }
                if !r.ignored.is_empty() {
                    write!(
                        f,
                        "\nnote: the model declares no parameter for the checkpoint's {}; ignored",
                        names(&r.ignored)
                    )?;
                }
                Ok(())
            }
            Frozen { frozen, trained } => {
                write!(f, "frozen: {}\ntrained: {}", names(frozen), names(trained))
            }
        }
    }
}

/// The reason clap prints after `invalid value '...' for '--flag'`.
impl std::fmt::Display for crate::runtime::command::FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::runtime::command::FlagError::*;
        match self {
            NotACount { text, unit } => write!(f, "`{text}` is not a whole number of {unit}"),
            BelowMin { min } => write!(f, "must be at least {min}"),
            PastLimit { value, unit, max } => {
                write!(f, "{value} {unit} is past the limit of {max} (see docs/limits.md)")
            }
            TooWide { value } => write!(f, "{value} does not fit in this machine's word"),
            ImageShape { part: None } => write!(f, "expected HxW, e.g. 28x28"),
            ImageShape { part: Some(part) } => write!(f, "`{part}` is not a size; expected HxW, e.g. 28x28"),
        }
    }
}

impl std::error::Error for crate::runtime::command::FlagError {}

impl std::fmt::Display for crate::runtime::given::PartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::runtime::given::PartError::*;
        const FORM: &str = "a part is a variable (`v`) or a range or index per unit axis (`v[0..32]`, `x[0, 0..4]`), counted from 0, half-open";
        match self {
            NoFile { text } => write!(
                f,
                "`{text}` is not PART=FILE\n  help: write `--given 'v[0..32]=rows.csv'`: the part of a variable to hold, and a CSV or NPY file of its rows"
            ),
            Syntax { text, reason } => {
                write!(f, "`{text}` is not a part of a variable: expected {reason}\n  help: {FORM}")
            }
            UnknownVariable { text, var, known } => {
                write!(f, "`{text}`: `{var}` is not a variable of the model; its variables are {}", names(known))?;
                if let Some(near) = did_you_mean(var, known.iter().map(String::as_str)) {
                    write!(f, "\n  help: did you mean `{near}`?")?;
                }
                Ok(())
            }
            Axes { text, declared, given, axes: 0 } => write!(
                f,
                "`{text}` gives {given} index(es), but `{declared}` has no axis to index\n  help: hold it whole: write its name alone"
            ),
            Axes { text, declared, given, axes } => write!(
                f,
                "`{text}` gives {given} indices, but `{declared}` has {axes} unit axis(es) (a categorical's categories are not one)\n  help: {FORM}"
            ),
            OutOfRange { text, axis, range, size } => write!(
                f,
                "`{text}`: {}..{} on axis {axis} is {} an axis of {size} units\n  help: ranges are half-open and counted from 0: `0..{size}` is the whole axis",
                range.start,
                range.end,
                if range.start >= range.end { "empty on" } else { "past the end of" }
            ),
            Values { text, given, per_row } => {
                write!(f, "{given} values for `{text}`, which is not a whole number of rows of {per_row} values")
            }
        }
    }
}

impl std::error::Error for crate::runtime::given::PartError {}

/// `ebmc eval`'s lines for the figures of `runtime::compare`: energies,
/// out-of-distribution detection by the energy score, and the MMD test.
pub fn comparison_lines(r: &crate::runtime::report::EvalReport) -> Vec<String> {
    use crate::runtime::report::MMD_ROWS;
    let stats = |s: &crate::runtime::report::EnergyStats| format!("{:.4} ± {:.4} over {} rows", s.mean, s.sd, s.rows);
    let mut out = Vec::new();
    if let Some(s) = &r.energy_test {
        out.push(format!("  energy of the evaluated rows   {}", stats(s)));
    }
    if let (Some(s), Some(m)) = (&r.energy_samples, &r.model_samples) {
        out.push(format!(
            "  energy of model samples        {} ({} chains x {} sweeps of the model's sampler)",
            stats(s),
            m.chains,
            m.sweeps
        ));
    }
    if let (Some(s), Some(d)) = (&r.energy_noise, &r.ood_noise) {
        out.push(format!("  energy of noise rows           {} ({})", stats(s), d.against));
    }
    if let (Some(s), Some(d)) = (&r.energy_ood, &r.ood_file) {
        out.push(format!("  energy of the --ood rows       {} (`{}`)", stats(s), d.against));
    }
    let detections: Vec<(&str, &crate::runtime::report::Detection)> =
        [("noise rows", &r.ood_noise), ("the --ood rows", &r.ood_file)]
            .into_iter()
            .filter_map(|(w, d)| Some((w, d.as_ref()?)))
            .collect();
    if !detections.is_empty() {
        out.push(
            "  OOD detection by energy (lower energy = in-distribution; AUPR with the evaluated rows as positives):"
                .to_string(),
        );
    }
    let detection_line = |what: &str, d: &crate::runtime::report::Detection| {
        format!("    vs {what:<27} AUROC {:.4}, AUPR {:.4}, FPR at 95% TPR {:.4}", d.auroc, d.aupr, d.fpr_at_95_tpr)
    };
    for (what, d) in detections {
        out.push(detection_line(what, d));
    }
    let baselines: Vec<(&str, &crate::runtime::report::Detection)> =
        [("noise rows", &r.ood_noise_confidence), ("the --ood rows", &r.ood_file_confidence)]
            .into_iter()
            .filter_map(|(w, d)| Some((w, d.as_ref()?)))
            .collect();
    if !baselines.is_empty() {
        out.push(
            "  OOD detection by softmax confidence max_y p(y | x), the baseline (higher = in-distribution):"
                .to_string(),
        );
    }
    for (what, d) in baselines {
        out.push(detection_line(what, d));
    }
    if let Some(m) = &r.mmd {
        out.push(format!(
            "  MMD² model samples vs rows     {:.6}, permutation p-value {:.4} ({} permutations; Gaussian kernel, median-distance bandwidth {:.4}; {} samples and {} rows, at most {MMD_ROWS} of each)",
            m.test.mmd2, m.test.p_value, m.test.permutations, m.test.bandwidth, m.sample_rows, m.test_rows
        ));
    }
    if let Some(m) = &r.mmd_independent {
        out.push(format!(
            "  MMD² independent fit vs rows   {:.6} (the baseline: as many rows, each unit drawn alone from its column's mean and sd, clipped to the box; same kernel)",
            m.mmd2
        ));
    }
    out
}

/// What the noise rows of `ebmc eval` are, per variable.
impl std::fmt::Display for crate::runtime::report::Noise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::runtime::report::NoiseKind;
        let kind = |k: &NoiseKind| match k {
            NoiseKind::Uniform { low, high } => format!("uniform noise in [{low}, {high}]"),
            NoiseKind::MatchedGaussian => {
                "Gaussian noise with the evaluated rows' column means and standard deviations".to_string()
            }
        };
        match self.0.as_slice() {
            [(_, k)] => write!(f, "{}", kind(k)),
            all => {
                let parts: Vec<String> = all.iter().map(|(v, k)| format!("`{v}`: {}", kind(k))).collect();
                write!(f, "{}", parts.join("; "))
            }
        }
    }
}

/// Why `ebmc eval` leaves a comparison figure out, or refuses its options.
impl std::fmt::Display for crate::runtime::report::ComparisonNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::runtime::report::ComparisonNote::*;
        match self {
            DiscreteVisible { var } => write!(
                f,
                "no noise-row, model-sample or MMD figures: they need every visible variable the energy reads to be real-valued, and `{var}` is discrete"
            ),
            NoEnergy(why) => write!(f, "no energy or out-of-distribution figures: {why}"),
            NoSampler(why) => write!(f, "no model-sample or MMD figures: the model's sampler cannot run: {why}"),
            Diverged(d) => write!(
                f,
                "no model-sample or MMD figures: sampling diverged (`{}` of chain {} is {} after {} sweeps); lower the Langevin step or use fewer `--sample-sweeps`",
                d.var,
                d.chain + 1,
                d.value,
                d.sweeps
            ),
            NoBandwidth => write!(
                f,
                "no MMD: the median distance between the pooled samples and rows is 0, so the kernel has no bandwidth"
            ),
            TooFewRows { rows } => {
                write!(f, "no MMD: the unbiased MMD needs at least 2 evaluated rows; there are {rows}")
            }
            TooFewChains { chains } => {
                write!(f, "`--sample-chains` must be at least 2 (the unbiased MMD needs two samples); got {chains}")
            }
        }
    }
}

/// A statistic of `runtime::diagnostics` for people: `mean` or the unit `[i]`.
fn statistic_label(unit: Option<usize>) -> String {
    unit.map_or_else(|| "mean".to_string(), |i| format!("[{i}]"))
}

/// `ebmc sample`'s table of chain diagnostics: a heading, then one line per
/// statistic (variable, statistic, R̂, bulk ESS); `-` for a figure too few
/// draws or chains leave undefined, `inf` for chains stuck apart.
pub fn mixing_lines(m: &crate::runtime::diagnostics::Mixing) -> Vec<String> {
    let mut out = vec![format!(
        "chain diagnostics over the first {} chains, {} draws each (every {} sweeps after burn-in): rank-normalised split R̂ and bulk ESS",
        m.chains, m.draws, m.every
    )];
    let width = m.statistics.iter().map(|s| s.variable.chars().count()).chain(std::iter::once(8)).max().unwrap_or(8);
    // "R̂" is two chars (a combining hat) in one column: one more of padding.
    out.push(format!("  {:<width$}  {:<9}  {:>9}  {:>9}", "variable", "statistic", "R̂", "bulk ESS"));
    for s in &m.statistics {
        let rhat = match s.rhat {
            Some(r) => format!("{r:.3}"),
            None if s.ess_bulk.is_some() && m.chains >= 2 => "inf".to_string(),
            None => "-".to_string(),
        };
        let ess = s.ess_bulk.map_or_else(|| "-".to_string(), |e| format!("{e:.0}"));
        let flag = if s.mixed { "" } else { "  *" };
        out.push(format!("  {:<width$}  {:<9}  {rhat:>8}  {ess:>9}{flag}", s.variable, statistic_label(s.unit)));
    }
    out
}

/// `ebmc sample`'s acceptance line: the Metropolis-adjusted kernels that ran (`MALA`, `HMC`) and their rate.
pub fn acceptance_line(kernels: &[&str], rate: f64, tempered: bool) -> String {
    let at = if tempered { " at T = 1" } else { "" };
    format!("{} acceptance rate{at}: {rate:.3}", kernels.join(" and "))
}

/// `ebmc sample`'s report of parallel tempering: the ladder, then each
/// adjacent pair's swap rate and each replica's acceptance rate.
pub fn tempering_lines(t: &crate::backend::Tempering) -> Vec<String> {
    let mut out = vec![format!(
        "parallel tempering over {} replicas (samples from T = 1): swap rate of each adjacent pair",
        t.temperatures.len()
    )];
    out.push(format!("  {:>9}  {:>9}  {:>9}  {:>10}", "T", "T next", "swap rate", "acceptance"));
    for (i, temperature) in t.temperatures.iter().enumerate() {
        let (next, swap) = match (t.temperatures.get(i + 1), t.swap_rates.get(i)) {
            (Some(n), Some(r)) => (format!("{n:.3}"), format!("{r:.3}")),
            _ => ("-".to_string(), "-".to_string()),
        };
        let acceptance = t.acceptance.get(i).copied().flatten().map_or_else(|| "-".to_string(), |a| format!("{a:.3}"));
        out.push(format!("  {temperature:>9.3}  {next:>9}  {swap:>9}  {acceptance:>10}"));
    }
    out
}

/// A warning when chains of a hot tempering replica diverged (they no longer mix with the rest).
pub fn tempering_diverged_warning(t: &crate::backend::Tempering) -> Option<String> {
    let bad: Vec<String> = t
        .temperatures
        .iter()
        .zip(&t.diverged)
        .filter(|(_, n)| **n > 0)
        .map(|(temperature, n)| format!("{n} at T = {temperature:.3}"))
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "chains of the tempering replicas diverged ({}): they stop taking part in swaps; lower the step, or start the chains nearer the modes",
            bad.join(", ")
        )
    })
}

/// The plan's line for short-run training chains (`Plan::short_run`).
pub fn short_run_note(sweeps: usize, reinit: f64) -> String {
    format!(
        "fresh samples: {sweeps} sweeps from noise by default (`sample --steps`, `eval --sample-sweeps`, samples.png), the objective's k, since training restarts {:.0}% of its chains from noise each update",
        100.0 * reinit
    )
}

/// A warning when an annealing ramp outlasts the burn-in: the first draws are not at β = 1.
pub fn anneal_burn_in_warning(ramp: usize, burn_in: usize) -> String {
    format!(
        "the annealing ramp takes {ramp} sweeps but --burn-in is {burn_in}: the first {} sweeps kept are not at β = 1; raise --burn-in to at least {ramp}",
        ramp - burn_in
    )
}

/// Why `ebmc sample`'s chains may not have mixed, when a statistic says so.
pub fn mixing_warning(m: &crate::runtime::diagnostics::Mixing) -> Option<String> {
    use crate::runtime::diagnostics::{ESS_MIN, RHAT_MAX};
    let bad: Vec<_> = m.statistics.iter().filter(|s| !s.mixed).collect();
    let worst = bad.iter().max_by(|a, b| {
        let r = |s: &&&crate::runtime::diagnostics::MixingRow| s.rhat.unwrap_or(f64::INFINITY);
        r(a).total_cmp(&r(b))
    })?;
    let rhat = worst.rhat.map_or_else(|| "inf".to_string(), |r| format!("{r:.3}"));
    let ess = worst.ess_bulk.map_or_else(|| "-".to_string(), |e| format!("{e:.0}"));
    Some(format!(
        "the chains may not have mixed: {} of {} statistics have R̂ > {RHAT_MAX} or bulk ESS < {ESS_MIN} (marked *; worst `{}` {}, R̂ {rhat}, bulk ESS {ess}); raise --steps (and --burn-in), or add chains",
        bad.len(),
        m.statistics.len(),
        worst.variable,
        statistic_label(worst.unit),
    ))
}

/// The error when a full-precision Gaussian variable's precision matrix
/// (the Hessian of the energy in it) has no Cholesky factor.
pub fn not_positive_definite(var: &str) -> String {
    format!(
        "the precision of `{var}` (the Hessian of the energy in it) is not positive definite at these parameters, so `exp(-E)` has no finite integral over `{var}` and its Gaussian conditional does not exist; make the quadratic form positive definite (e.g. `P = L @ transpose(L)` plus a positive diagonal) or sample `{var}` by Langevin"
    )
}
