//! Parser: tokens → [`Query`].
//!
//! A query is a list of stages, one per line; a line that does not start with a
//! stage keyword continues the stage above (so a long `show` can wrap). Within a
//! stage, a small recursive-descent expression parser. Every error has a span
//! and says what was expected.

use super::ast::*;
use super::diag::{Diag, Span};
use super::lexer::{Tok, Token};
use crate::suggest::closest;

/// Words that start a stage.
pub const STAGES: [&str; 13] =
    ["param", "from", "where", "derive", "group", "by", "sum", "agg", "top", "show", "sort", "limit", "chart"];

/// The query of `tokens`, or every stage's error: a stage that does not
/// parse is skipped and the next one parsed, so one run reports each line's
/// mistake (resolving needs a whole query, so it stops at its first).
pub fn parse(tokens: &[Token], text_len: usize) -> Result<Query, Vec<Diag>> {
    // Each stage: its tokens, and which of them began a line of the file.
    let mut lines: Vec<(Vec<Token>, Vec<usize>)> = Vec::new();
    let mut current: Vec<Token> = Vec::new();
    let mut starts: Vec<usize> = Vec::new();
    let mut at_line_start = true;
    for t in tokens {
        if t.tok == Tok::Newline {
            at_line_start = true;
            continue;
        }
        let starts_stage = matches!(&t.tok, Tok::Ident(w) if STAGES.contains(&w.as_str()));
        if at_line_start && starts_stage && !current.is_empty() {
            lines.push((std::mem::take(&mut current), std::mem::take(&mut starts)));
        }
        if at_line_start {
            starts.push(current.len());
        }
        at_line_start = false;
        current.push(t.clone());
    }
    if !current.is_empty() {
        lines.push((current, starts));
    }
    if let Some((extra, _)) = lines.get(MAX_STAGES) {
        return Err(vec![
            Diag::new(
                extra[0].span,
                format!(
                    "a query has at most {MAX_STAGES} stages (lines such as `where`); this one has {}",
                    lines.len()
                ),
            )
            .hint("join conditions on one code with `in (...)`: `where partner in (\"DEU\", \"FRA\")`"),
        ]);
    }
    let mut query = Query { params: Vec::new(), stages: Vec::new() };
    let mut errors = Vec::new();
    for (line, line_starts) in lines {
        let mut p = Parser { toks: &line, pos: 0, end: text_len, line_starts: &line_starts, depth: 0 };
        if let Err(d) = stage(&mut p, &mut query) {
            errors.push(d);
        }
    }
    if errors.is_empty() { Ok(query) } else { Err(errors) }
}

/// One stage (one line and its continuations) into `query`.
fn stage(p: &mut Parser<'_>, query: &mut Query) -> Result<(), Diag> {
    let head = p.ident("a stage (from, where, by, sum, show, ...)")?;
    match head.name.as_str() {
        "param" => {
            let name = p.ident("a parameter name")?;
            p.expect("=")?;
            let value = p.expr()?;
            query.params.push(Param { name, value });
        }
        "from" if matches!(p.peek(), Some(Tok::Str(_))) => {
            let (path, span) = p.text()?;
            let mapping = if p.eat_word("mapping") { Some(p.text()?.0) } else { None };
            query.stages.push(Stage::FromFile { path, mapping, span });
        }
        "from" => {
            let name = p.ident("a dataset name or a \"file\"")?;
            let version = if p.eat("@") { Some(p.version()?) } else { None };
            query.stages.push(Stage::From { name, version });
        }
        "where" => query.stages.push(Stage::Where(p.expr()?)),
        "derive" => {
            let mut items = Vec::new();
            loop {
                let name = p.ident("a column name")?;
                p.expect("=")?;
                items.push((name, p.expr()?));
                if !p.eat(",") {
                    break;
                }
            }
            query.stages.push(Stage::Derive(items));
        }
        "group" => {
            let dim = p.ident("the dimension to group (partner, product, region)")?;
            p.keyword("by")?;
            let table = p.ident("a group table name")?;
            p.keyword("as")?;
            let alias = p.ident("a name for the group column")?;
            let as_of = if p.eat_word("as") {
                p.keyword("of")?;
                Some(p.expr()?)
            } else {
                None
            };
            let span = head.span.to(p.last_span());
            query.stages.push(Stage::Group { dim, table, alias, as_of, span });
        }
        "by" => query.stages.push(Stage::By(p.list(|p| p.ident("a grouping column"))?)),
        "sum" => {
            let cols = p.list(|p| p.ident("a column to sum"))?;
            let items = cols
                .into_iter()
                .map(|c| AggItem {
                    name: None,
                    func: Ident { name: "sum".into(), span: head.span },
                    span: c.span,
                    arg: Some(c),
                })
                .collect();
            query.stages.push(Stage::Agg(items));
        }
        "agg" => {
            let items = p.list(|p| {
                let start = p.peek_span();
                let first = p.ident("an aggregate such as sum(value)")?;
                let (name, func) =
                    if p.eat("=") { (Some(first), p.ident("an aggregate function")?) } else { (None, first) };
                p.expect("(")?;
                let arg = if p.peek_is(")") { None } else { Some(p.ident("a column")?) };
                p.expect(")")?;
                Ok(AggItem { name, func, arg, span: start.to(p.last_span()) })
            })?;
            query.stages.push(Stage::Agg(items));
        }
        "top" => {
            let n = p.count("the number of members to keep")?;
            let dim = p.ident("the dimension (partner, product, ...)")?;
            p.keyword("by")?;
            let by = p.ident("the column to rank by")?;
            query.stages.push(Stage::Top { n, dim, by, span: head.span.to(p.last_span()) });
        }
        "show" => {
            let items = p.list(|p| {
                let name = if matches!(p.peek(), Some(Tok::Ident(_))) && p.peek_at(1) == Some(&Tok::Sym("=")) {
                    let n = p.ident("a name")?;
                    p.expect("=")?;
                    Some(n)
                } else {
                    None
                };
                let expr = p.expr()?;
                let format = if p.eat_word("as") { Some(p.ident("a format (pct, pp, million, ...)")?) } else { None };
                Ok(ShowItem { name, expr, format })
            })?;
            query.stages.push(Stage::Show(items));
        }
        "sort" => {
            let keys = p.list(|p| {
                let col = p.ident("a column to sort by")?;
                let desc = if p.eat_word("desc") {
                    true
                } else {
                    p.eat_word("asc");
                    false
                };
                Ok((col, desc))
            })?;
            query.stages.push(Stage::Sort(keys));
        }
        "chart" => {
            let kind = if matches!(p.peek(), Some(Tok::Ident(w)) if w != "title") {
                Some(p.ident("line or bar")?)
            } else {
                None
            };
            let title = if p.eat_word("title") {
                match p.next() {
                    Some(Token { tok: Tok::Str(t), .. }) => Some(t.clone()),
                    _ => {
                        p.pos -= 1;
                        return Err(p.unexpected("the title in quotes"));
                    }
                }
            } else {
                None
            };
            query.stages.push(Stage::Chart { kind, title, span: head.span.to(p.last_span()) });
        }
        "limit" => {
            let n = p.count("the number of rows")?;
            query.stages.push(Stage::Limit(n, head.span.to(p.last_span())));
        }
        other => {
            let mut d = Diag::new(head.span, format!("`{other}` does not start a stage"));
            if let Some(s) = closest(other, STAGES) {
                d = d.hint(format!("did you mean `{s}`?"));
            } else {
                d = d.hint(format!("a stage starts with one of: {}", STAGES.join(", ")));
            }
            return Err(d);
        }
    }
    p.finish()
}

struct Parser<'a> {
    toks: &'a [Token],
    pos: usize,
    end: usize,
    /// Positions of tokens that begin a line of the file.
    line_starts: &'a [usize],
    /// Parentheses, calls, signs and `not`s open around the current token.
    depth: usize,
}

/// Parentheses, calls, signs and `not`s an expression may nest: deeper
/// input is refused with its position, never a stack overflow.
pub const MAX_NESTING: usize = 64;

/// The most stages (`from`, `where`, `by`, ... lines) a query may have.
pub const MAX_STAGES: usize = 256;

/// The most operands of one chain (`a + b + ...`, `a and b and ...`).
pub const MAX_DEPTH: usize = 256;

/// The deepest expression tree a query may hold (chains inside nested
/// parentheses); a sum of n terms is n deep.
pub const MAX_TREE_DEPTH: usize = 512;

/// The depth of an expression tree, counted without recursion.
fn tree_depth(e: &Expr) -> usize {
    let mut deepest = 0;
    let mut todo = vec![(e, 1usize)];
    while let Some((e, d)) = todo.pop() {
        deepest = deepest.max(d);
        match &e.kind {
            ExprKind::Neg(x) | ExprKind::Not(x) => todo.push((x, d + 1)),
            ExprKind::Binary(_, a, b) => todo.extend([(&**a, d + 1), (&**b, d + 1)]),
            ExprKind::Call { args, .. } => todo.extend(args.iter().map(|a| (a, d + 1))),
            ExprKind::In(x, items) => todo.extend(std::iter::once(&**x).chain(items).map(|a| (a, d + 1))),
            ExprKind::Range(a, b, c) => todo.extend([(&**a, d + 1), (&**b, d + 1), (&**c, d + 1)]),
            _ => {}
        }
    }
    deepest
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Param(s) => format!("`${s}`"),
        Tok::Number(n) => format!("the number {n}"),
        Tok::Str(s) => format!("the string {s:?}"),
        Tok::Period(p) => format!("the period {p}"),
        Tok::Sym(s) => format!("`{s}`"),
        Tok::Newline => "the end of the line".into(),
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k).map(|t| &t.tok)
    }

    fn peek_span(&self) -> Span {
        self.toks.get(self.pos).map_or(Span::new(self.end, self.end), |t| t.span)
    }

    fn last_span(&self) -> Span {
        self.toks[self.pos.saturating_sub(1).min(self.toks.len() - 1)].span
    }

    fn peek_is(&self, sym: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym)
    }

    fn unexpected(&self, wanted: &str) -> Diag {
        match self.toks.get(self.pos) {
            Some(t) => Diag::new(t.span, format!("expected {wanted}, found {}", describe(&t.tok))),
            None => {
                let at = self.toks.last().map_or(self.end, |t| t.span.end);
                Diag::new(Span::new(at, at), format!("expected {wanted} at the end of the line"))
            }
        }
    }

    fn next(&mut self) -> Option<&'a Token> {
        let t = self.toks.get(self.pos);
        self.pos += 1;
        t
    }

    fn ident(&mut self, wanted: &str) -> Result<Ident, Diag> {
        match self.toks.get(self.pos) {
            Some(Token { tok: Tok::Ident(name), span }) => {
                self.pos += 1;
                Ok(Ident { name: name.clone(), span: *span })
            }
            _ => Err(self.unexpected(wanted)),
        }
    }

    fn count(&mut self, wanted: &str) -> Result<usize, Diag> {
        match self.toks.get(self.pos) {
            Some(Token { tok: Tok::Number(n), .. }) if *n >= 1.0 && n.fract() == 0.0 && *n < 1e9 => {
                self.pos += 1;
                Ok(*n as usize)
            }
            _ => Err(self.unexpected(&format!("{wanted} (a whole number from 1)"))),
        }
    }

    /// A text literal and its span.
    fn text(&mut self) -> Result<(String, Span), Diag> {
        match self.toks.get(self.pos) {
            Some(Token { tok: Tok::Str(s), span }) => {
                self.pos += 1;
                Ok((s.clone(), *span))
            }
            _ => Err(self.unexpected("a file name in quotes")),
        }
    }

    /// A version after `@`: a whole number from 1, with its span.
    fn version(&mut self) -> Result<(u64, Span), Diag> {
        let n = self.count("a version of the dataset")?;
        Ok((n as u64, self.last_span()))
    }

    fn eat(&mut self, sym: &str) -> bool {
        if self.peek_is(sym) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(w)) if w == word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, sym: &str) -> Result<(), Diag> {
        if self.eat(sym) { Ok(()) } else { Err(self.unexpected(&format!("`{sym}`"))) }
    }

    fn keyword(&mut self, word: &str) -> Result<(), Diag> {
        if self.eat_word(word) { Ok(()) } else { Err(self.unexpected(&format!("`{word}`"))) }
    }

    fn finish(&self) -> Result<(), Diag> {
        match self.toks.get(self.pos) {
            None => Ok(()),
            Some(Token { tok: Tok::Ident(word), span }) if self.line_starts.contains(&self.pos) => {
                let d = Diag::new(*span, format!("`{word}` does not start a stage"));
                let instead = match word.as_str() {
                    "filter" | "having" => Some("where"),
                    "select" | "columns" => Some("show"),
                    "group_by" | "groupby" => Some("by"),
                    "order" | "order_by" => Some("sort"),
                    "take" | "head" => Some("limit"),
                    _ => closest(word, STAGES),
                };
                Err(match instead {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None => d.hint(format!("a stage starts with one of: {}", STAGES.join(", "))),
                })
            }
            Some(t) => Err(Diag::new(t.span, format!("unexpected {} after the end of the stage", describe(&t.tok)))
                .hint("separate items with `,`; each stage starts on its own line")),
        }
    }

    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T, Diag>) -> Result<Vec<T>, Diag> {
        let mut out = vec![item(self)?];
        while self.eat(",") {
            out.push(item(self)?);
        }
        Ok(out)
    }

    pub fn expr(&mut self) -> Result<Expr, Diag> {
        let e = self.or()?;
        if self.depth == 0 && tree_depth(&e) > MAX_TREE_DEPTH {
            return Err(Diag::new(
                e.span,
                format!("this expression is {} levels deep; at most {MAX_TREE_DEPTH}", tree_depth(&e)),
            )
            .hint("split it across several `show` columns and add those"));
        }
        Ok(e)
    }

    /// Runs `f` one nesting level deeper, refusing more than [`MAX_NESTING`].
    fn nested<T>(&mut self, at: Span, f: impl FnOnce(&mut Self) -> Result<T, Diag>) -> Result<T, Diag> {
        if self.depth >= MAX_NESTING {
            return Err(Diag::new(
                at,
                format!("the expression nests more than {MAX_NESTING} parentheses, calls, signs or `not`s"),
            ));
        }
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    /// Refuses a chain of more than [`MAX_DEPTH`] operands (`a + b + ...`).
    fn chain_limit(&self, terms: usize, at: Span) -> Result<(), Diag> {
        if terms > MAX_DEPTH {
            return Err(Diag::new(at, format!("more than {MAX_DEPTH} terms in one expression"))
                .hint("split it across several `show` columns and add those"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, Diag> {
        let mut left = self.and()?;
        let mut terms = 1;
        while self.eat_word("or") {
            terms += 1;
            self.chain_limit(terms, self.last_span())?;
            let right = self.and()?;
            left = bin(BinOp::Or, left, right);
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, Diag> {
        let mut left = self.not()?;
        let mut terms = 1;
        while self.eat_word("and") {
            terms += 1;
            self.chain_limit(terms, self.last_span())?;
            let right = self.not()?;
            left = bin(BinOp::And, left, right);
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, Diag> {
        let start = self.peek_span();
        if self.eat_word("not") {
            let inner = self.nested(start, |p| p.not())?;
            let span = start.to(inner.span);
            return Ok(Expr { kind: ExprKind::Not(Box::new(inner)), span });
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, Diag> {
        let left = self.additive()?;
        if self.eat_word("in") {
            if self.peek_is("(") {
                let open = self.peek_span();
                self.pos += 1;
                let items = self.list(|p| p.expr())?;
                self.expect(")")?;
                let span = left.span.to(self.last_span()).to(open);
                return Ok(Expr { kind: ExprKind::In(Box::new(left), items), span });
            }
            let lo = self.additive()?;
            self.expect("..")?;
            let hi = self.additive()?;
            let span = left.span.to(hi.span);
            return Ok(Expr { kind: ExprKind::Range(Box::new(left), Box::new(lo), Box::new(hi)), span });
        }
        let op = match self.peek() {
            Some(Tok::Sym("=")) => BinOp::Eq,
            Some(Tok::Sym("!=")) => BinOp::Ne,
            Some(Tok::Sym("<")) => BinOp::Lt,
            Some(Tok::Sym("<=")) => BinOp::Le,
            Some(Tok::Sym(">")) => BinOp::Gt,
            Some(Tok::Sym(">=")) => BinOp::Ge,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.additive()?;
        Ok(bin(op, left, right))
    }

    fn additive(&mut self) -> Result<Expr, Diag> {
        let mut left = self.multiplicative()?;
        let mut terms = 1;
        loop {
            let op = match self.peek() {
                Some(Tok::Sym("+")) => BinOp::Add,
                Some(Tok::Sym("-")) => BinOp::Sub,
                _ => return Ok(left),
            };
            self.pos += 1;
            terms += 1;
            self.chain_limit(terms, self.last_span())?;
            let right = self.multiplicative()?;
            left = bin(op, left, right);
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, Diag> {
        let mut left = self.unary()?;
        let mut terms = 1;
        loop {
            let op = match self.peek() {
                Some(Tok::Sym("*")) => BinOp::Mul,
                Some(Tok::Sym("/")) => BinOp::Div,
                _ => return Ok(left),
            };
            self.pos += 1;
            terms += 1;
            self.chain_limit(terms, self.last_span())?;
            let right = self.unary()?;
            left = bin(op, left, right);
        }
    }

    fn unary(&mut self) -> Result<Expr, Diag> {
        let start = self.peek_span();
        if self.eat("-") {
            let inner = self.nested(start, |p| p.unary())?;
            let span = start.to(inner.span);
            return Ok(Expr { kind: ExprKind::Neg(Box::new(inner)), span });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, Diag> {
        let Some(t) = self.next() else {
            self.pos -= 1;
            return Err(self.unexpected("a value, a column or a function call"));
        };
        let span = t.span;
        let kind = match &t.tok {
            Tok::Number(n) => ExprKind::Number(*n),
            Tok::Str(s) => ExprKind::Str(s.clone()),
            Tok::Period(p) => ExprKind::Period(p.clone()),
            Tok::Param(p) => ExprKind::Param(p.clone()),
            Tok::Sym("(") => {
                let inner = self.nested(span, |p| p.expr())?;
                self.expect(")")?;
                return Ok(Expr { kind: inner.kind, span: span.to(self.last_span()) });
            }
            Tok::Ident(name) if self.peek_is("(") => {
                self.pos += 1;
                let mut args = Vec::new();
                let mut within = Vec::new();
                if !self.peek_is(")") {
                    args = self.nested(span, |p| p.list(|p| p.expr()))?;
                    if self.eat_word("within") {
                        within = self.list(|p| p.ident("a grouping column"))?;
                    }
                }
                self.expect(")")?;
                let name = Ident { name: name.clone(), span };
                return Ok(Expr { kind: ExprKind::Call { name, args, within }, span: span.to(self.last_span()) });
            }
            Tok::Ident(name) => ExprKind::Col(name.clone()),
            _ => {
                self.pos -= 1;
                return Err(self.unexpected("a value, a column or a function call"));
            }
        };
        Ok(Expr { kind, span })
    }
}

fn bin(op: BinOp, left: Expr, right: Expr) -> Expr {
    let span = left.span.to(right.span);
    Expr { kind: ExprKind::Binary(op, Box::new(left), Box::new(right)), span }
}
