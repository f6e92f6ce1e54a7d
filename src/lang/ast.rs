//! The syntax tree of a query, as written (names unresolved), with spans.

use super::diag::Span;

#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub params: Vec<Param>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub value: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `from DATASET` or `from DATASET@VERSION` (a kept version).
    From { name: Ident, version: Option<(u64, Span)> },
    /// `from "FILE" [mapping "M.toml"]`: a CSV, Parquet or workbook file (or
    /// a `*` pattern of them), read without a store.
    FromFile { path: String, mapping: Option<String>, span: Span },
    /// `where COND`: filters rows before `by`, result rows after it.
    Where(Expr),
    /// `derive NAME = EXPR, ...`
    Derive(Vec<(Ident, Expr)>),
    /// `group DIM by TABLE as ALIAS [as of PERIOD]`
    Group { dim: Ident, table: Ident, alias: Ident, as_of: Option<Expr>, span: Span },
    /// `by KEY, ...`
    By(Vec<Ident>),
    /// `sum value, quantity` or `agg NAME = FUNC(COL), ...`
    Agg(Vec<AggItem>),
    /// `top N DIM by COL`: the N largest members per period, the rest as `others`.
    Top { n: usize, dim: Ident, by: Ident, span: Span },
    /// `show [NAME =] EXPR [as FORMAT], ...`
    Show(Vec<ShowItem>),
    /// `sort COL [desc|asc], ...`
    Sort(Vec<(Ident, bool)>),
    /// `limit N`
    Limit(usize, Span),
    /// `chart [line|bar] [title "..."]`: how `run --chart PATH` draws the result.
    Chart { kind: Option<Ident>, title: Option<String>, span: Span },
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggItem {
    pub name: Option<Ident>,
    pub func: Ident,
    pub arg: Option<Ident>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShowItem {
    pub name: Option<Ident>,
    pub expr: Expr,
    pub format: Option<Ident>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Eq => "=",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "and",
            BinOp::Or => "or",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Number(f64),
    Str(String),
    Period(String),
    Param(String),
    Col(String),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `f(args [within a, b])`
    Call {
        name: Ident,
        args: Vec<Expr>,
        within: Vec<Ident>,
    },
    In(Box<Expr>, Vec<Expr>),
    Range(Box<Expr>, Box<Expr>, Box<Expr>),
}
