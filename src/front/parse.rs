//! Stage 1: source text → AST (`source_to_ast`). A pest grammar
//! (`grammar/ebm.pest`) recognises the text; this module builds the tree and
//! gives expressions their precedence with pest's Pratt parser.

use crate::front::ast::*;
use crate::front::span::Span;
use pest::Parser;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use std::sync::OnceLock;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/ebm.pest"]
struct EbmParser;

/// Why a file could not be parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// The grammar stopped at `span`; `expected` lists what could have come next.
    /// `after` is the token before the gap when the error sits on a later line
    /// (a missing `;` is reported after the line it belongs to).
    Syntax { span: Span, expected: Vec<Rule>, found: Option<String>, after: Option<Span> },
    /// An integer literal (a dimension) that does not fit in 64 bits.
    IntegerTooLarge { span: Span },
    /// Brackets and operator chains nested deeper than `limit` (see
    /// `limits::nesting`); found before the grammar runs.
    TooDeep { span: Span, limit: usize },
}

/// Parses an `.ebm` file into its syntax tree, comments collected beside it.
pub fn source_to_ast(source: &str) -> Result<File, ParseError> {
    // The grammar and every later stage recurse on nesting; bound it first.
    crate::analysis::limits::nesting(source)
        .map_err(|span| ParseError::TooDeep { span, limit: crate::analysis::limits::MAX_NESTING })?;
    let mut pairs = EbmParser::parse(Rule::file, source).map_err(|e| syntax_error(source, e))?;
    let file = child(&mut pairs, "the file rule always produces a pair");
    let mut items = Vec::new();
    for pair in file.into_inner() {
        match pair.as_rule() {
            Rule::model_block => items.push(Item::Model(model_block(pair)?)),
            Rule::train_block => items.push(Item::Train(train_block(pair)?)),
            _ => {}
        }
    }
    Ok(File { items, comments: comments(source) })
}

fn syntax_error(source: &str, e: pest::error::Error<Rule>) -> ParseError {
    let pos = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let mut expected = match e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => positives,
        pest::error::ErrorVariant::CustomError { .. } => vec![],
    };
    expected.sort_by_key(|r| *r as usize);
    expected.dedup();
    let found = found_token(&source[pos..]);
    let len = found.as_ref().map_or(0, |f| f.len());
    let end = end_of_code_before(source, pos);
    let after = (end > 0 && source[end..pos].contains('\n')).then(|| {
        let last = source[..end].chars().next_back().map_or(1, char::len_utf8);
        Span::new(end - last, end)
    });
    ParseError::Syntax { span: Span::new(pos, pos + len), expected, found, after }
}

/// The end of the last character before `pos` that is neither whitespace nor comment.
fn end_of_code_before(source: &str, pos: usize) -> usize {
    let comments = comments(&source[..pos]);
    let mut end = pos;
    loop {
        end = source[..end].trim_end().len();
        match comments.iter().find(|c| c.span.start < end && end <= c.span.end) {
            Some(c) => end = c.span.start,
            None => return end,
        }
    }
}

/// The token that starts `rest`, for "found ..." in syntax errors.
fn found_token(rest: &str) -> Option<String> {
    let c = rest.chars().next()?;
    let word_char = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    if word_char(c) {
        Some(rest.chars().take_while(|&c| word_char(c)).collect())
    } else if rest.starts_with("->") {
        Some("->".into())
    } else {
        Some(c.to_string())
    }
}

/// `//` comments with their spans, skipping string literals.
fn comments(source: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let end = source[i..].find('\n').map_or(source.len(), |n| i + n);
                out.push(Comment { text: source[i..end].trim_end().to_string(), span: Span::new(i, end) });
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

/// Punctuation and keywords are in the tree only so errors can name them.
fn is_token(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::lbrace
            | Rule::rbrace
            | Rule::lparen
            | Rule::rparen
            | Rule::lbracket
            | Rule::rbracket
            | Rule::semi
            | Rule::colon
            | Rule::comma
            | Rule::assign
            | Rule::arrow
            | Rule::kw_model
            | Rule::kw_train
            | Rule::kw_param
            | Rule::kw_const
            | Rule::kw_net
            | Rule::kw_energy
            | Rule::kw_sample
            | Rule::kw_in
    )
}

/// The next child of a pair, which the grammar guarantees.
fn child<'a>(children: &mut impl Iterator<Item = Pair<'a, Rule>>, what: &str) -> Pair<'a, Rule> {
    // Cannot fire: pest only produces a pair whose children match its rule in
    // `grammar/ebm.pest`, and every caller asks for a child that rule requires.
    children.next().unwrap_or_else(|| panic!("the grammar guarantees the {what}"))
}

fn inner(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| !is_token(p.as_rule()))
}

fn ident(pair: Pair<'_, Rule>) -> Ident {
    debug_assert_eq!(pair.as_rule(), Rule::ident);
    Ident { name: pair.as_str().to_string(), span: pair.as_span().into() }
}

fn model_block(pair: Pair<'_, Rule>) -> Result<ModelBlock, ParseError> {
    let span = pair.as_span().into();
    let mut it = inner(pair);
    let name = ident(child(&mut it, "model name"));
    let mut stmts = Vec::new();
    for p in it {
        stmts.push(match p.as_rule() {
            Rule::var_decl => ModelStmt::Var(var_decl(p)?),
            Rule::param_decl => ModelStmt::Param(param_decl(p)?),
            Rule::const_decl => ModelStmt::Const(const_decl(p)?),
            Rule::net_decl => ModelStmt::Net(net_decl(p)?),
            Rule::energy_decl => {
                let span = p.as_span().into();
                let mut it = inner(p);
                let name = ident(child(&mut it, "energy name"));
                ModelStmt::Energy(EnergyDecl { name, expr: expr(child(&mut it, "energy expr"))?, span })
            }
            Rule::sample_block => ModelStmt::Sample(sample_block(p)?),
            // Cannot fire: the grammar allows only the rules matched above here.
            r => unreachable!("model statement rule {r:?}"),
        });
    }
    Ok(ModelBlock { name, stmts, span })
}

fn var_decl(pair: Pair<'_, Rule>) -> Result<VarDecl, ParseError> {
    let span = pair.as_span().into();
    let mut it = inner(pair);
    let role = match it.next().and_then(|r| r.into_inner().next()).map(|r| r.as_rule()) {
        Some(Rule::kw_visible) => Role::Visible,
        _ => Role::Hidden,
    };
    let name = ident(child(&mut it, "variable name"));
    let ty = type_expr(child(&mut it, "variable type"))?;
    Ok(VarDecl { role, name, ty, span })
}

fn param_decl(pair: Pair<'_, Rule>) -> Result<ParamDecl, ParseError> {
    let span = pair.as_span().into();
    let mut it = inner(pair);
    let name = ident(child(&mut it, "param name"));
    let ty = type_expr(child(&mut it, "param type"))?;
    let init = it.next().map(expr).transpose()?;
    Ok(ParamDecl { name, ty, init, span })
}

fn const_decl(pair: Pair<'_, Rule>) -> Result<ConstDecl, ParseError> {
    let span = pair.as_span().into();
    let mut it = inner(pair);
    let name = ident(child(&mut it, "const name"));
    let mut ty = None;
    let mut value = None;
    for p in it {
        match p.as_rule() {
            Rule::type_expr => ty = Some(type_expr(p)?),
            _ => value = Some(expr(p)?),
        }
    }
    // Cannot fire: the grammar's const declaration always ends in a value.
    Ok(ConstDecl { name, ty, value: value.expect("const value"), span })
}

fn net_decl(pair: Pair<'_, Rule>) -> Result<NetDecl, ParseError> {
    let span = pair.as_span().into();
    let mut it = inner(pair);
    let name = ident(child(&mut it, "net name"));
    let kind = ident(child(&mut it, "net kind"));
    let layers =
        inner(child(&mut it, "net layers")).filter(|p| p.as_rule() == Rule::dim).map(dim).collect::<Result<_, _>>()?;
    let options = it.map(named_arg).collect::<Result<_, _>>()?;
    Ok(NetDecl { name, kind, layers, options, span })
}

fn sample_block(pair: Pair<'_, Rule>) -> Result<SampleBlock, ParseError> {
    let span = pair.as_span().into();
    let mut overrides = Vec::new();
    for p in inner(pair) {
        let span = p.as_span().into();
        let mut it = inner(p).peekable();
        let var = it.next_if(|c| c.as_rule() == Rule::ident).map(ident);
        overrides.push(SamplerOverride { var, kernel: expr(child(&mut it, "override kernel"))?, span });
    }
    Ok(SampleBlock { overrides, span })
}

fn type_expr(pair: Pair<'_, Rule>) -> Result<TypeExpr, ParseError> {
    let span = pair.as_span().into();
    let mut base = BaseType::Real;
    let mut dims = Vec::new();
    let mut bounds = None;
    for p in inner(pair) {
        match p.as_rule() {
            Rule::base_type => {
                let b = child(&mut p.into_inner(), "base type");
                base = match b.as_rule() {
                    Rule::ty_binary => BaseType::Binary,
                    Rule::ty_spin => BaseType::Spin,
                    Rule::ty_real => BaseType::Real,
                    // Cannot fire: the grammar's categorical type always holds its count as a `dim`.
                    _ => BaseType::Categorical(dim(inner(b).find(|p| p.as_rule() == Rule::dim).expect("categories"))?),
                };
            }
            Rule::dims => dims = inner(p).map(dim).collect::<Result<_, _>>()?,
            Rule::bounds => {
                let mut it = inner(p);
                let lo = expr(child(&mut it, "lower bound"))?;
                let hi = expr(child(&mut it, "upper bound"))?;
                bounds = Some(Box::new((lo, hi)));
            }
            // Cannot fire: the grammar allows only the rules matched above here.
            r => unreachable!("type rule {r:?}"),
        }
    }
    Ok(TypeExpr { base, dims, bounds, span })
}

fn dim(pair: Pair<'_, Rule>) -> Result<Dim, ParseError> {
    let p = child(&mut pair.into_inner(), "dim");
    let span: Span = p.as_span().into();
    match p.as_rule() {
        Rule::integer => {
            p.as_str().parse().map(|n| Dim::Lit(n, span)).map_err(|_| ParseError::IntegerTooLarge { span })
        }
        _ => Ok(Dim::Name(ident(p))),
    }
}

fn train_block(pair: Pair<'_, Rule>) -> Result<TrainBlock, ParseError> {
    let span = pair.as_span().into();
    let mut it = inner(pair);
    let model = ident(child(&mut it, "train model"));
    let mut settings = Vec::new();
    for p in it {
        let span = p.as_span().into();
        let mut it = inner(p);
        let key = ident(child(&mut it, "setting key"));
        let value = expr(child(&mut it, "setting value"))?;
        let binding = it.next().map(|b| inner(b).map(ident).collect()).unwrap_or_default();
        settings.push(Setting { key, value, binding, span });
    }
    Ok(TrainBlock { model, settings, span })
}

fn named_arg(pair: Pair<'_, Rule>) -> Result<Arg, ParseError> {
    let mut it = inner(pair);
    let name = ident(child(&mut it, "option name"));
    Ok(Arg { name: Some(name), value: expr(child(&mut it, "option value"))? })
}

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        // Lowest binding first; must agree with `BinOp::precedence`.
        PrattParser::new()
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left)
                | Op::infix(Rule::div, Assoc::Left)
                | Op::infix(Rule::matmul, Assoc::Left))
            .op(Op::prefix(Rule::neg))
            .op(Op::infix(Rule::pow, Assoc::Right))
            .op(Op::postfix(Rule::transpose))
    })
}

pub(crate) fn expr(pair: Pair<'_, Rule>) -> Result<Expr, ParseError> {
    debug_assert_eq!(pair.as_rule(), Rule::expr);
    pratt_expr(pair.into_inner())
}

fn pratt_expr(pairs: Pairs<'_, Rule>) -> Result<Expr, ParseError> {
    pratt()
        .map_primary(primary)
        .map_prefix(|op, rhs| {
            let rhs = rhs?;
            let span = Span::from(op.as_span()).to(rhs.span);
            Ok(Expr { kind: ExprKind::Neg(Box::new(rhs)), span })
        })
        .map_postfix(|lhs, op| {
            let lhs = lhs?;
            let span = lhs.span.to(op.as_span().into());
            Ok(Expr { kind: ExprKind::Transpose(Box::new(lhs)), span })
        })
        .map_infix(|lhs, op, rhs| {
            let (lhs, rhs) = (lhs?, rhs?);
            let op = match op.as_rule() {
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul => BinOp::Mul,
                Rule::div => BinOp::Div,
                Rule::matmul => BinOp::MatMul,
                Rule::pow => BinOp::Pow,
                // Cannot fire: the grammar allows only the rules matched above here.
                r => unreachable!("infix rule {r:?}"),
            };
            let span = lhs.span.to(rhs.span);
            Ok(Expr { kind: ExprKind::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }, span })
        })
        .parse(pairs)
}

fn primary(pair: Pair<'_, Rule>) -> Result<Expr, ParseError> {
    let span: Span = pair.as_span().into();
    let kind = match pair.as_rule() {
        Rule::number => {
            let text = pair.as_str().to_string();
            ExprKind::Number { value: text.parse().unwrap_or(f64::INFINITY), text }
        }
        Rule::string => {
            let s = pair.as_str();
            ExprKind::Str(s[1..s.len() - 1].to_string())
        }
        Rule::ident => ExprKind::Name(pair.as_str().to_string()),
        Rule::paren => return expr(child(&mut inner(pair), "parenthesised expr")),
        Rule::list => ExprKind::List(inner(pair).map(expr).collect::<Result<_, _>>()?),
        Rule::call => {
            let mut it = inner(pair);
            let func = ident(child(&mut it, "callee"));
            let args = it
                .map(|a| match a.as_rule() {
                    Rule::named_arg => named_arg(a),
                    _ => Ok(Arg { name: None, value: expr(a)? }),
                })
                .collect::<Result<_, _>>()?;
            ExprKind::Call { func, args }
        }
        // Cannot fire: the grammar allows only the rules matched above here.
        r => unreachable!("primary rule {r:?}"),
    };
    Ok(Expr { kind, span })
}
