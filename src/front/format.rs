//! AST → canonical source text (`ast_to_source`), for `ebmc fmt`. Comments are
//! re-attached by position: own-line comments before the statement that
//! follows them, end-of-line comments after the statement they follow. Single
//! blank lines between statements are kept; runs of them shrink to one.

use crate::front::ast::*;

const INDENT: &str = "    ";

/// Formats `file` (parsed from `source`) in the canonical style, its comments kept in place.
pub fn ast_to_source(file: &File, source: &str) -> String {
    let mut p =
        Printer { src: source, comments: &file.comments, next: 0, out: String::new(), last_end: 0, gap_allowed: false };
    for (i, item) in file.items.iter().enumerate() {
        if i > 0 {
            p.out.push('\n');
            p.gap_allowed = false;
        }
        p.leading(item.span().start, 0);
        match item {
            Item::Model(m) => p.model(m),
            Item::Train(t) => p.train(t),
        }
    }
    p.leading(source.len(), 0);
    while p.out.ends_with("\n\n") {
        p.out.pop();
    }
    if !p.out.is_empty() && !p.out.ends_with('\n') {
        p.out.push('\n');
    }
    p.out
}

struct Printer<'a> {
    src: &'a str,
    comments: &'a [Comment],
    next: usize,
    out: String,
    /// End of the last thing printed, in the source.
    last_end: usize,
    /// Whether a blank line from the source may be reproduced before the next line.
    gap_allowed: bool,
}

impl Printer<'_> {
    fn indent(&mut self, depth: usize) {
        for _ in 0..depth {
            self.out.push_str(INDENT);
        }
    }

    fn blank_line_if_gap(&mut self, start: usize) {
        let between = &self.src[self.last_end.min(start)..start];
        if self.gap_allowed && between.matches('\n').count() >= 2 {
            self.out.push('\n');
            self.gap_allowed = false;
        }
    }

    /// Own-line comments that come before `upto`.
    fn leading(&mut self, upto: usize, depth: usize) {
        while let Some(c) = self.comments.get(self.next).filter(|c| c.span.start < upto) {
            self.blank_line_if_gap(c.span.start);
            self.indent(depth);
            self.out.push_str(&c.text);
            self.out.push('\n');
            self.last_end = c.span.end;
            self.gap_allowed = true;
            self.next += 1;
        }
        self.blank_line_if_gap(upto);
    }

    /// Starts a line for a node at `start`, after the comments before it.
    fn line(&mut self, start: usize, depth: usize) {
        self.leading(start, depth);
        self.indent(depth);
    }

    /// Ends the line of a node ending at `end`, with its end-of-line comment
    /// if one starts before `limit` (the next node).
    fn end_line(&mut self, end: usize, limit: usize) {
        self.last_end = end;
        if let Some(c) = self.comments.get(self.next)
            && c.span.start >= end
            && c.span.start < limit
            && !self.src[end..c.span.start].contains('\n')
        {
            self.out.push(' ');
            self.out.push_str(&c.text);
            self.last_end = c.span.end;
            self.next += 1;
        }
        self.out.push('\n');
        self.gap_allowed = true;
    }

    fn open_block(&mut self, header: String, start: usize, depth: usize, brace_end: usize, first_child: usize) {
        self.line(start, depth);
        self.out.push_str(&header);
        self.out.push_str(" {");
        self.end_line(brace_end.max(start), first_child);
        self.gap_allowed = false;
    }

    fn close_block(&mut self, end: usize, depth: usize) {
        // Comments before the closing brace stay inside the block.
        self.gap_allowed = self.gap_allowed && self.out.ends_with(";\n");
        self.leading(end.saturating_sub(1), depth + 1);
        self.indent(depth);
        self.out.push('}');
        self.end_line(end, usize::MAX);
    }

    /// End of the `{` that opens the block starting at `start`.
    fn brace_end(&self, start: usize) -> usize {
        self.src[start..].find('{').map_or(start, |i| start + i + 1)
    }

    fn model(&mut self, m: &ModelBlock) {
        let brace = self.brace_end(m.span.start);
        let first = m.stmts.first().map_or(m.span.end, |s| s.span().start);
        self.open_block(format!("model {}", m.name.name), m.span.start, 0, brace, first);
        for s in &m.stmts {
            let start = s.span().start;
            match s {
                ModelStmt::Sample(b) => {
                    let brace = self.brace_end(b.span.start);
                    let first = b.overrides.first().map_or(b.span.end, |o| o.span.start);
                    self.open_block("sample".to_string(), start, 1, brace, first);
                    for o in &b.overrides {
                        self.line(o.span.start, 2);
                        let var = o.var.as_ref().map(|v| format!("{}: ", v.name)).unwrap_or_default();
                        self.out.push_str(&format!("{var}{};", expr(&o.kernel)));
                        self.end_line(o.span.end, usize::MAX);
                    }
                    self.close_block(b.span.end, 1);
                }
                _ => {
                    self.line(start, 1);
                    let text = stmt(s);
                    self.out.push_str(&text);
                    self.end_line(s.span().end, usize::MAX);
                }
            }
        }
        self.close_block(m.span.end, 0);
    }

    fn train(&mut self, t: &TrainBlock) {
        let brace = self.brace_end(t.span.start);
        let first = t.settings.first().map_or(t.span.end, |s| s.span.start);
        self.open_block(format!("train {}", t.model.name), t.span.start, 0, brace, first);
        for s in &t.settings {
            self.line(s.span.start, 1);
            let binding = match s.binding.as_slice() {
                [] => String::new(),
                [one] => format!(" -> {}", one.name),
                many => format!(" -> ({})", many.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")),
            };
            self.out.push_str(&format!("{} = {}{};", s.key.name, expr(&s.value), binding));
            self.end_line(s.span.end, usize::MAX);
        }
        self.close_block(t.span.end, 0);
    }
}

fn stmt(s: &ModelStmt) -> String {
    match s {
        ModelStmt::Var(d) => format!("{} {} : {};", d.role.keyword(), d.name.name, type_expr(&d.ty)),
        ModelStmt::Param(d) => match &d.init {
            Some(init) => format!("param {} : {} = {};", d.name.name, type_expr(&d.ty), expr(init)),
            None => format!("param {} : {};", d.name.name, type_expr(&d.ty)),
        },
        ModelStmt::Const(d) => match &d.ty {
            Some(ty) => format!("const {} : {} = {};", d.name.name, type_expr(ty), expr(&d.value)),
            None => format!("const {} = {};", d.name.name, expr(&d.value)),
        },
        ModelStmt::Net(d) => {
            let layers: Vec<String> = d.layers.iter().map(dim).collect();
            let mut parts = vec![layers.join(" -> ")];
            parts.extend(d.options.iter().map(arg));
            format!("net {} = {}({});", d.name.name, d.kind.name, parts.join(", "))
        }
        ModelStmt::Energy(d) => format!("energy {} = {};", d.name.name, expr(&d.expr)),
        // Cannot fire: sample blocks are split off and printed before the statements.
        ModelStmt::Sample(_) => unreachable!("sample blocks are printed as blocks"),
    }
}

fn dim(d: &Dim) -> String {
    match d {
        Dim::Lit(n, _) => n.to_string(),
        Dim::Name(i) => i.name.clone(),
    }
}

fn type_expr(t: &TypeExpr) -> String {
    let mut s = match &t.base {
        BaseType::Binary => "binary".to_string(),
        BaseType::Spin => "spin".to_string(),
        BaseType::Real => "real".to_string(),
        BaseType::Categorical(k) => format!("categorical({})", dim(k)),
    };
    if !t.dims.is_empty() {
        s.push_str(&format!("[{}]", t.dims.iter().map(dim).collect::<Vec<_>>().join(", ")));
    }
    if let Some(b) = &t.bounds {
        s.push_str(&format!(" in [{}, {}]", expr(&b.0), expr(&b.1)));
    }
    s
}

fn arg(a: &Arg) -> String {
    match &a.name {
        Some(n) => format!("{}: {}", n.name, expr(&a.value)),
        None => expr(&a.value),
    }
}

/// Prints an expression with the fewest parentheses that keep its tree.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number { text, .. } => text.clone(),
        ExprKind::Str(s) => format!("\"{s}\""),
        ExprKind::Name(n) => n.clone(),
        ExprKind::List(items) => format!("[{}]", items.iter().map(expr).collect::<Vec<_>>().join(", ")),
        ExprKind::Call { func, args } => {
            format!("{}({})", func.name, args.iter().map(arg).collect::<Vec<_>>().join(", "))
        }
        ExprKind::Neg(inner) => format!("-{}", wrap(inner, inner.precedence() < NEG_PRECEDENCE)),
        ExprKind::Transpose(inner) => format!("{}.T", wrap(inner, inner.precedence() < ATOM_PRECEDENCE)),
        ExprKind::Binary { op, lhs, rhs } => {
            let p = op.precedence();
            let left_parens = lhs.precedence() < p || (lhs.precedence() == p && op.right_assoc());
            // A negation as the base of `^` needs parentheses: `-x^2` is `-(x^2)`.
            let left_parens = left_parens || (*op == BinOp::Pow && matches!(lhs.kind, ExprKind::Neg(_)));
            let right_parens = rhs.precedence() < p || (rhs.precedence() == p && !op.right_assoc());
            let sep = if *op == BinOp::Pow { "" } else { " " };
            format!("{}{sep}{}{sep}{}", wrap(lhs, left_parens), op.symbol(), wrap(rhs, right_parens))
        }
    }
}

fn wrap(e: &Expr, parens: bool) -> String {
    if parens { format!("({})", expr(e)) } else { expr(e) }
}
