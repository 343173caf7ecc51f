//! The syntax tree of an `.ebm` file, exactly as written (names unresolved,
//! shapes unchecked). Every node carries its span. `File::outline` prints the
//! tree without spans: snapshots use it, and `fmt` uses it to prove that
//! formatting never changes meaning.

use crate::front::span::Span;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct File {
    pub items: Vec<Item>,
    /// Comments are not part of the tree; the formatter re-attaches them by position.
    pub comments: Vec<Comment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    Model(ModelBlock),
    Train(TrainBlock),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Model(m) => m.span,
            Item::Train(t) => t.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBlock {
    pub name: Ident,
    pub stmts: Vec<ModelStmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelStmt {
    Var(VarDecl),
    Param(ParamDecl),
    Const(ConstDecl),
    Net(NetDecl),
    Energy(EnergyDecl),
    Sample(SampleBlock),
}

impl ModelStmt {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Visible,
    Hidden,
}

impl Role {
    pub fn keyword(self) -> &'static str {
        match self {
            Role::Visible => "visible",
            Role::Hidden => "hidden",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VarDecl {
    pub role: Role,
    pub name: Ident,
    pub ty: TypeExpr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamDecl {
    pub name: Ident,
    pub ty: TypeExpr,
    pub init: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConstDecl {
    pub name: Ident,
    pub ty: Option<TypeExpr>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetDecl {
    pub name: Ident,
    /// `linear` or `mlp`, checked later.
    pub kind: Ident,
    pub layers: Vec<Dim>,
    pub options: Vec<Arg>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyDecl {
    pub name: Ident,
    pub expr: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleBlock {
    pub overrides: Vec<SamplerOverride>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerOverride {
    pub var: Ident,
    pub kernel: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeExpr {
    pub base: BaseType,
    pub dims: Vec<Dim>,
    pub bounds: Option<Box<(Expr, Expr)>>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BaseType {
    Binary,
    Spin,
    Categorical(Dim),
    Real,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Dim {
    Lit(u64, Span),
    Name(Ident),
}

impl Dim {
    pub fn span(&self) -> Span {
        match self {
            Dim::Lit(_, s) => *s,
            Dim::Name(i) => i.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainBlock {
    pub model: Ident,
    pub settings: Vec<Setting>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub key: Ident,
    pub value: Expr,
    /// Variables after `->`, in column order.
    pub binding: Vec<Ident>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExprKind {
    /// The literal text is kept so that `fmt` prints numbers as written.
    Number {
        value: f64,
        text: String,
    },
    Str(String),
    Name(String),
    List(Vec<Expr>),
    Call {
        func: Ident,
        args: Vec<Arg>,
    },
    Neg(Box<Expr>),
    Transpose(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    MatMul,
    Pow,
}

impl BinOp {
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

    pub fn right_assoc(self) -> bool {
        self == BinOp::Pow
    }
}

pub const NEG_PRECEDENCE: u8 = 3;
pub const POSTFIX_PRECEDENCE: u8 = 5;
pub const ATOM_PRECEDENCE: u8 = 6;

impl Expr {
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
            let o: Vec<String> =
                b.overrides.iter().map(|o| format!("({} {})", o.var.name, o.kernel.outline())).collect();
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
