//! The syntax tree of an `.ebm` file, exactly as written (names unresolved,
//! shapes unchecked). Every node carries its span. `File::outline` prints the
//! tree without spans: snapshots use it, and `fmt` uses it to prove that
//! formatting never changes meaning.

use crate::front::span::Span;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// A parsed `.ebm` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct File {
    /// Model and train blocks, in source order.
    pub items: Vec<Item>,
    /// Comments are not part of the tree; the formatter re-attaches them by position.
    pub comments: Vec<Comment>,
}

/// A `//` comment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    /// The comment's text from `//` to the end of its line, trailing whitespace trimmed.
    pub text: String,
    /// Where the comment is.
    pub span: Span,
}

/// A top-level block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    /// A `model NAME { ... }` block.
    Model(ModelBlock),
    /// A `train NAME { ... }` block.
    Train(TrainBlock),
}

impl Item {
    /// The block's span.
    pub fn span(&self) -> Span {
        match self {
            Item::Model(m) => m.span,
            Item::Train(t) => t.span,
        }
    }
}

/// A name as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ident {
    /// The name's text.
    pub name: String,
    /// Where it is written.
    pub span: Span,
}

/// A `model` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBlock {
    /// The model's name.
    pub name: Ident,
    /// Its statements, in source order.
    pub stmts: Vec<ModelStmt>,
    /// The whole block.
    pub span: Span,
}

/// A statement in a `model` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelStmt {
    /// `visible NAME : TYPE;` or `hidden NAME : TYPE;`
    Var(VarDecl),
    /// `param NAME : TYPE (= INIT)?;`
    Param(ParamDecl),
    /// `const NAME (: TYPE)? = EXPR;`
    Const(ConstDecl),
    /// `net NAME = KIND(LAYERS, OPTIONS);`
    Net(NetDecl),
    /// `energy NAME = EXPR;`
    Energy(EnergyDecl),
    /// `sample { VAR: KERNEL; ... }`
    Sample(SampleBlock),
}

impl ModelStmt {
    /// The statement's span.
    pub fn span(&self) -> Span {
        match self {
            ModelStmt::Var(d) => d.span,
            ModelStmt::Param(d) => d.span,
            ModelStmt::Const(d) => d.span,
            ModelStmt::Net(d) => d.span,
            ModelStmt::Energy(d) => d.span,
            ModelStmt::Sample(d) => d.span,
        }
    }
}

/// Whether a variable is observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Fed by data.
    Visible,
    /// Latent; sampled or summed out.
    Hidden,
}

impl Role {
    /// The keyword declaring this role.
    pub fn keyword(self) -> &'static str {
        match self {
            Role::Visible => "visible",
            Role::Hidden => "hidden",
        }
    }
}

/// A variable declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VarDecl {
    /// `visible` or `hidden`.
    pub role: Role,
    /// The variable's name.
    pub name: Ident,
    /// Its type.
    pub ty: TypeExpr,
    /// The whole declaration.
    pub span: Span,
}

/// A parameter declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamDecl {
    /// The parameter's name.
    pub name: Ident,
    /// Its type.
    pub ty: TypeExpr,
    /// The initialiser after `=`; `None`: zeros.
    pub init: Option<Expr>,
    /// The whole declaration.
    pub span: Span,
}

/// A constant declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConstDecl {
    /// The constant's name.
    pub name: Ident,
    /// Its type, when written.
    pub ty: Option<TypeExpr>,
    /// Its value.
    pub value: Expr,
    /// The whole declaration.
    pub span: Span,
}

/// A net declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetDecl {
    /// The net's name.
    pub name: Ident,
    /// `linear` or `mlp`, checked later.
    pub kind: Ident,
    /// Widths from input to output, as written between `->`.
    pub layers: Vec<Dim>,
    /// Named options after the layers.
    pub options: Vec<Arg>,
    /// The whole declaration.
    pub span: Span,
}

/// An energy declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyDecl {
    /// The term's name.
    pub name: Ident,
    /// Its expression.
    pub expr: Expr,
    /// The whole declaration.
    pub span: Span,
}

/// A `sample` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleBlock {
    /// Its entries, in source order.
    pub overrides: Vec<SamplerOverride>,
    /// The whole block.
    pub span: Span,
}

/// A `sample` block entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerOverride {
    /// The variable sampled; `None` for a whole-model entry (`tempering(...)`, `anneal(...)`).
    pub var: Option<Ident>,
    /// The kernel call, unchecked.
    pub kernel: Expr,
    /// The whole entry.
    pub span: Span,
}

/// A type: base, optional dimensions, optional bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeExpr {
    /// The value set.
    pub base: BaseType,
    /// Dimensions in brackets; empty for a scalar.
    pub dims: Vec<Dim>,
    /// `in [LOW, HIGH]` bounds, when written.
    pub bounds: Option<Box<(Expr, Expr)>>,
    /// The whole type.
    pub span: Span,
}

/// The base of a type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BaseType {
    /// `binary`.
    Binary,
    /// `spin`.
    Spin,
    /// `categorical(K)`.
    Categorical(Dim),
    /// `real`.
    Real,
}

/// A dimension: a literal or a constant's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Dim {
    /// A whole-number literal and its span.
    Lit(u64, Span),
    /// A name, resolved by the checker.
    Name(Ident),
}

impl Dim {
    /// The dimension's span.
    pub fn span(&self) -> Span {
        match self {
            Dim::Lit(_, s) => *s,
            Dim::Name(i) => i.span,
        }
    }
}

/// A `train` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainBlock {
    /// The model trained.
    pub model: Ident,
    /// Its `KEY = VALUE;` settings, in source order.
    pub settings: Vec<Setting>,
    /// The whole block.
    pub span: Span,
}

/// A `KEY = VALUE (-> BINDING)?;` setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// The setting's key.
    pub key: Ident,
    /// Its value.
    pub value: Expr,
    /// Variables after `->`, in column order.
    pub binding: Vec<Ident>,
    /// The whole setting.
    pub span: Span,
}

/// An expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is written.
    pub span: Span,
}

/// An expression's node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExprKind {
    /// The literal text is kept so that `fmt` prints numbers as written.
    Number {
        /// The number's value.
        value: f64,
        /// The number as written.
        text: String,
    },
    /// A string literal, unquoted.
    Str(String),
    /// A bare name.
    Name(String),
    /// A bracketed list.
    List(Vec<Expr>),
    /// A call `f(args)`.
    Call {
        /// The function called.
        func: Ident,
        /// Positional and named arguments, in order.
        args: Vec<Arg>,
    },
    /// Unary minus.
    Neg(Box<Expr>),
    /// Postfix transpose.
    Transpose(Box<Expr>),
    /// A binary operation.
    Binary {
        /// The operator.
        op: BinOp,
        /// The left operand.
        lhs: Box<Expr>,
        /// The right operand.
        rhs: Box<Expr>,
    },
}

/// A call argument: positional or `name: value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arg {
    /// The name, for a named argument.
    pub name: Option<Ident>,
    /// The value.
    pub value: Expr,
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BinOp {
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`, elementwise.
    Mul,
    /// `/`, elementwise.
    Div,
    /// `@`, matrix product.
    MatMul,
    /// `^`, power.
    Pow,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::MatMul => "@",
            BinOp::Pow => "^",
        }
    }

    /// Binding strength; unary minus sits between `*` and `^` (`-x^2` is `-(x^2)`).
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div | BinOp::MatMul => 2,
            BinOp::Pow => 4,
        }
    }

    /// True for `^`, which groups right to left.
    pub fn right_assoc(self) -> bool {
        self == BinOp::Pow
    }
}

/// Binding strength of unary minus.
pub const NEG_PRECEDENCE: u8 = 3;
/// Binding strength of postfix transpose.
pub const POSTFIX_PRECEDENCE: u8 = 5;
/// Binding strength of atoms: literals, names, calls, lists.
pub const ATOM_PRECEDENCE: u8 = 6;

impl Expr {
    /// Binding strength of the expression's outermost operator.
    pub fn precedence(&self) -> u8 {
        match &self.kind {
            ExprKind::Binary { op, .. } => op.precedence(),
            ExprKind::Neg(_) => NEG_PRECEDENCE,
            ExprKind::Transpose(_) => POSTFIX_PRECEDENCE,
            _ => ATOM_PRECEDENCE,
        }
    }

    /// The name, when the expression is a bare name.
    pub fn as_name(&self) -> Option<&str> {
        match &self.kind {
            ExprKind::Name(n) => Some(n),
            _ => None,
        }
    }
}

// ---- outline: the tree without spans ------------------------------------

impl File {
    /// The tree without spans, one statement or setting per line.
    pub fn outline(&self) -> String {
        let mut out = String::new();
        for item in &self.items {
            match item {
                Item::Model(m) => {
                    let _ = writeln!(out, "(model {}", m.name.name);
                    for s in &m.stmts {
                        let _ = writeln!(out, "  {}", stmt_outline(s));
                    }
                    out.push_str(")\n");
                }
                Item::Train(t) => {
                    let _ = writeln!(out, "(train {}", t.model.name);
                    for s in &t.settings {
                        let bind: Vec<&str> = s.binding.iter().map(|b| b.name.as_str()).collect();
                        let bind = if bind.is_empty() { String::new() } else { format!(" -> ({})", bind.join(" ")) };
                        let _ = writeln!(out, "  ({} {}{})", s.key.name, s.value.outline(), bind);
                    }
                    out.push_str(")\n");
                }
            }
        }
        out
    }
}

fn stmt_outline(s: &ModelStmt) -> String {
    match s {
        ModelStmt::Var(d) => format!("({} {} {})", d.role.keyword(), d.name.name, d.ty.outline()),
        ModelStmt::Param(d) => format!(
            "(param {} {}{})",
            d.name.name,
            d.ty.outline(),
            d.init.as_ref().map(|e| format!(" {}", e.outline())).unwrap_or_default()
        ),
        ModelStmt::Const(d) => format!(
            "(const {}{} {})",
            d.name.name,
            d.ty.as_ref().map(|t| format!(" {}", t.outline())).unwrap_or_default(),
            d.value.outline()
        ),
        ModelStmt::Net(d) => {
            let layers: Vec<String> = d.layers.iter().map(Dim::outline).collect();
            let opts: Vec<String> = d.options.iter().map(Arg::outline).collect();
            format!("(net {} {} ({}){})", d.name.name, d.kind.name, layers.join(" -> "), prefixed(&opts))
        }
        ModelStmt::Energy(d) => format!("(energy {} {})", d.name.name, d.expr.outline()),
        ModelStmt::Sample(b) => {
            let o: Vec<String> = b
                .overrides
                .iter()
                .map(|o| match &o.var {
                    Some(v) => format!("({} {})", v.name, o.kernel.outline()),
                    None => format!("(model {})", o.kernel.outline()),
                })
                .collect();
            format!("(sample{})", prefixed(&o))
        }
    }
}

fn prefixed(parts: &[String]) -> String {
    parts.iter().map(|p| format!(" {p}")).collect()
}

impl Dim {
    fn outline(&self) -> String {
        match self {
            Dim::Lit(n, _) => n.to_string(),
            Dim::Name(i) => i.name.clone(),
        }
    }
}

impl TypeExpr {
    fn outline(&self) -> String {
        let base = match &self.base {
            BaseType::Binary => "binary".to_string(),
            BaseType::Spin => "spin".to_string(),
            BaseType::Real => "real".to_string(),
            BaseType::Categorical(k) => format!("categorical({})", k.outline()),
        };
        let dims: Vec<String> = self.dims.iter().map(Dim::outline).collect();
        let dims = if dims.is_empty() { String::new() } else { format!("[{}]", dims.join(", ")) };
        let bounds = match &self.bounds {
            Some(b) => format!(" in [{} {}]", b.0.outline(), b.1.outline()),
            None => String::new(),
        };
        format!("{base}{dims}{bounds}")
    }
}

impl Arg {
    fn outline(&self) -> String {
        match &self.name {
            Some(n) => format!("{}: {}", n.name, self.value.outline()),
            None => self.value.outline(),
        }
    }
}

impl Expr {
    /// The expression without spans, as an s-expression.
    pub fn outline(&self) -> String {
        match &self.kind {
            ExprKind::Number { text, .. } => text.clone(),
            ExprKind::Str(s) => format!("{s:?}"),
            ExprKind::Name(n) => n.clone(),
            ExprKind::List(items) => {
                let i: Vec<String> = items.iter().map(Expr::outline).collect();
                format!("[{}]", i.join(" "))
            }
            ExprKind::Call { func, args } => {
                let a: Vec<String> = args.iter().map(Arg::outline).collect();
                format!("(call {}{})", func.name, prefixed(&a))
            }
            ExprKind::Neg(e) => format!("(neg {})", e.outline()),
            ExprKind::Transpose(e) => format!("(T {})", e.outline()),
            ExprKind::Binary { op, lhs, rhs } => format!("({} {} {})", op.symbol(), lhs.outline(), rhs.outline()),
        }
    }
}
