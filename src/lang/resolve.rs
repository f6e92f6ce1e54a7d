//! Resolve: AST + what the store holds → a checked [`Plan`].
//!
//! Every name is looked up here (columns, parameters, group tables, group and
//! member codes, functions, formats), every expression gets a type, and every
//! rule of the measures is checked (a measure that needs a period needs a
//! calendar key in `by`; a share's `within` must be a grouping column; ...), so
//! that a plan that resolves runs. Each error points at the offending span and,
//! where it can, suggests the right spelling.

use super::ast::*;
use super::diag::{Diag, Span};
use super::plan::*;
use crate::period::{Frequency, Period};
use crate::store::manifest::AGGREGATE_DIMENSIONS;
use crate::store::{GroupsManifest, Manifest};
use crate::suggest::closest;
use std::collections::BTreeMap;

/// What resolution needs to know about the store.
pub struct Catalog<'a> {
    pub manifest: &'a Manifest,
    pub groups: &'a GroupsManifest,
    /// Distinct codes of a column of the dataset (reporter, partner, ...),
    /// asked for only when a query compares that column with a literal.
    pub codes: &'a dyn Fn(&str) -> Result<Vec<String>, String>,
}

/// A sum over periods (`ytd`, `rolling`) of unit values is no unit value:
/// refused, with the ratio of sums to write instead.
fn refuse_sum_of_ratios(x: &RExpr, span: Span, n: &str) -> Result<(), Diag> {
    if x.any(&mut |e| matches!(e, RExpr::Measure(m) if matches!(**m, Measure::UnitValue))) {
        let what =
            if n == "rolling" { "rolling(value, N) / rolling(quantity, N)" } else { "ytd(value) / ytd(quantity)" };
        return Err(Diag::new(span, format!("{n}() would add up unit values, which is no unit value"))
            .hint(format!("the {} unit value is {what}", if n == "rolling" { "rolling" } else { "year-to-date" })));
    }
    Ok(())
}

/// How deep measures may nest inside measures.
pub const MAX_MEASURE_NESTING: usize = 4;

/// The longest window or step back a measure may take, in periods.
pub const MAX_PERIODS_BACK: usize = 1200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Num,
    Str,
    Bool,
    Date,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Num => "a number",
            Ty::Str => "text",
            Ty::Bool => "true/false",
            Ty::Date => "a period",
        }
    }
}

/// Columns of a dataset row, with their types.
const ROW_COLUMNS: [(&str, Ty); 13] = [
    ("period", Ty::Date),
    ("reporter", Ty::Str),
    ("partner", Ty::Str),
    ("flow", Ty::Str),
    ("product", Ty::Str),
    ("region", Ty::Str),
    ("value", Ty::Num),
    ("quantity", Ty::Num),
    ("quantity_unit", Ty::Str),
    ("aggregate", Ty::Bool),
    ("year", Ty::Num),
    ("quarter", Ty::Num),
    ("month", Ty::Num),
];

/// Columns whose values are codes, checked when compared with a literal.
const CODE_COLUMNS: [&str; 5] = ["reporter", "partner", "flow", "product", "region"];

const MEASURES: [&str; 18] = [
    "yoy",
    "change",
    "pop_change",
    "pop_pp",
    "pop",
    "mom",
    "qoq",
    "share",
    "pp",
    "contribution",
    "ytd",
    "ytd_yoy",
    "rolling",
    "rolling_mean",
    "rank",
    "high",
    "record",
    "first_release",
];
const OTHER_FUNCTIONS: [&str; 11] =
    ["streak", "unit_value", "chapter", "heading", "section", "name", "if", "year", "quarter", "month", "convert"];

/// The plan of `query` against `catalog`, with `overrides` (from `--param k=v`)
/// replacing the query's parameter defaults.
pub fn resolve(query: &Query, catalog: &Catalog<'_>, overrides: &[(String, String)]) -> Result<Plan, Diag> {
    let mut r = Resolver::new(catalog);
    r.params(query, overrides)?;
    let manifest = catalog.manifest;
    let mut plan = Plan::new(manifest.dataset.clone(), manifest.frequency);
    plan.hs_sections = catalog.groups.tables.iter().find(|t| t.name == "hs_sections").map(|t| t.path.clone());
    plan.measures = manifest.measures.iter().map(|m| m.name.clone()).collect();
    plan.currency = manifest.currency.clone();
    plan.quantity_unit = manifest.quantity_unit.clone();
    plan.measure_units = manifest.measures.iter().map(|m| (m.name.clone(), m.unit.clone())).collect();
    let mut seen = Seen::default();
    for (index, stage) in query.stages.iter().enumerate() {
        let agg_follows = query.stages[index + 1..].iter().any(|s| matches!(s, Stage::Agg(_)));
        r.stage(&mut plan, stage, agg_follows, &mut seen)?;
    }
    if !seen.from {
        return Err(Diag::new(Span::default(), "the query has no `from DATASET` stage"));
    }
    plan.rates = r.rates.clone();
    plan.reads_first_release = r.first_release;
    plan.names = r.names.clone();
    plan.names.sort();
    plan.names.dedup();
    if !seen.mentions_aggregate && !r.tests_aggregate {
        plan.mixed = r.mixed_dimensions(Span::default())?;
    }
    Ok(plan)
}

/// What the stages resolved so far hold that a later check reads.
#[derive(Default)]
struct Seen {
    /// A `from` stage.
    from: bool,
    /// A row filter that names the `aggregate` column.
    mentions_aggregate: bool,
}

impl<'a> Resolver<'a> {
    /// A resolver of queries against `catalog`, with the row columns in scope.
    fn new(catalog: &'a Catalog<'a>) -> Resolver<'a> {
        Resolver {
            catalog,
            params: BTreeMap::new(),
            scope: ROW_COLUMNS
                .iter()
                .map(|(n, t)| (n.to_string(), *t))
                .chain(catalog.manifest.measures.iter().map(|m| (m.name.clone(), Ty::Num)))
                .collect(),
            aggregated: false,
            time: None,
            ytd: false,
            keys: Vec::new(),
            group_aliases: Vec::new(),
            sum_of: BTreeMap::new(),
            alias_tables: BTreeMap::new(),
            row_scope: BTreeMap::new(),
            rates: None,
            mixed: None,
            tests_aggregate: false,
            uses_unit_value: false,
            first_release: false,
            measure_depth: 0,
            top_dim: None,
            names: Vec::new(),
        }
    }

    /// One stage into `plan`; `agg_follows`: an aggregate stage comes later.
    fn stage(&mut self, plan: &mut Plan, stage: &Stage, agg_follows: bool, seen: &mut Seen) -> Result<(), Diag> {
        let manifest = self.catalog.manifest;
        match stage {
            Stage::FromFile { span, .. } if seen.from => {
                return Err(Diag::new(*span, "a second `from`: a query reads one dataset"));
            }
            Stage::From { name, .. } if seen.from => {
                return Err(Diag::new(name.span, "a second `from`: a query reads one dataset")
                    .hint("compare datasets with two queries, or one batch job"));
            }
            Stage::FromFile { .. } => seen.from = true,
            Stage::From { name, .. } => {
                if name.name != manifest.dataset {
                    return Err(Diag::new(name.span, format!("internal: query is for dataset `{}`", name.name)));
                }
                seen.from = true;
            }
            Stage::Where(e) => {
                let (x, ty) = self.expr(e)?;
                expect_ty(ty, Ty::Bool, e.span, "a condition")?;
                if std::mem::take(&mut self.uses_unit_value) {
                    self.need_unit_value(plan);
                }
                if self.aggregated {
                    plan.post_filters.push(x);
                } else {
                    seen.mentions_aggregate |= x.mentions("aggregate");
                    plan.row_filters.push(x);
                }
            }
            Stage::Derive(items) => {
                for (name, e) in items {
                    let (x, ty) = self.expr(e)?;
                    self.define(name, ty)?;
                    if std::mem::take(&mut self.uses_unit_value) {
                        self.need_unit_value(plan);
                    }
                    if self.aggregated {
                        plan.post_derives.push((name.name.clone(), x))
                    } else {
                        plan.derives.push((name.name.clone(), x))
                    }
                }
            }
            Stage::Group { dim, table, alias, as_of, span } => {
                if self.aggregated {
                    return Err(Diag::new(*span, "`group` maps rows, so it must come before `by`"));
                }
                plan.groups.push(self.group(dim, table, alias, as_of.as_ref())?);
            }
            Stage::By(keys) => {
                if self.aggregated {
                    return Err(Diag::new(keys[0].span, "a second `by`: group once, with all keys in one `by`"));
                }
                self.by(keys, manifest.frequency)?;
                plan.time = self.time;
                plan.ytd = self.ytd;
                plan.keys = self.keys.clone();
                if !agg_follows {
                    // A `by` with no aggregate sums value.
                    plan.aggs.push(self.agg(&default_sum())?);
                }
            }
            Stage::Agg(items) => {
                if !self.aggregated {
                    self.start_aggregation(Vec::new());
                }
                for item in items {
                    plan.aggs.push(self.agg(item)?);
                }
            }
            Stage::Top { n, dim, by, span } => self.top_stage(plan, *n, dim, by, *span)?,
            Stage::Show(items) => self.show_stage(plan, items)?,
            Stage::Sort(keys) => {
                for (k, desc) in keys {
                    self.ty_of(&k.name, k.span)?;
                    plan.sort.push((k.name.clone(), *desc));
                }
            }
            Stage::Chart { kind, title, span } => chart_stage(plan, kind.as_ref(), title, *span)?,
            Stage::Limit(n, span) => {
                if plan.limit.is_some() {
                    return Err(Diag::new(*span, "a second `limit`: keep one"));
                }
                plan.limit = Some(*n);
            }
        }
        Ok(())
    }
}

/// A measure as an expression.
fn measure_expr(m: Measure) -> RExpr {
    RExpr::Measure(Box::new(m))
}

/// `chart [line|bar] [title "..."]`, once.
fn chart_stage(plan: &mut Plan, kind: Option<&Ident>, title: &Option<String>, span: Span) -> Result<(), Diag> {
    if plan.chart.is_some() {
        return Err(Diag::new(span, "a second `chart`: keep one"));
    }
    let kind = match kind.map(|k| (k, k.name.as_str())) {
        None => None,
        Some((_, "line")) => Some(super::plan::ChartKind::Line),
        Some((_, "bar")) => Some(super::plan::ChartKind::Bar),
        Some((k, other)) => {
            return Err(Diag::new(k.span, format!("unknown chart `{other}`")).hint("charts are `line` or `bar`"));
        }
    };
    plan.chart = Some(super::plan::ChartOptions { kind, title: title.clone() });
    Ok(())
}

/// Decides which aggregate rows `plan` leaves out, given `combos`: the
/// distinct combinations of the codes of `plan.mixed`'s dimensions (in that
/// order) among the stored rows that pass the query's filters.
///
/// Dimension by dimension (partner, product, region): when the rows that
/// remain hold both aggregate and member codes of it, and no filter names its
/// codes, its aggregate rows are left out (a filter for each, the first of
/// `row_filters`, and a note); when a filter names its codes, the rows are
/// kept as selected, and a note says when aggregates and members are then
/// summed together. A dimension whose remaining rows are all aggregates (the
/// world row alone) or all members leaves nothing out.
pub fn leave_out_aggregates(plan: &mut Plan, combos: &[Vec<Option<String>>]) {
    let mut rows: Vec<&Vec<Option<String>>> = combos.iter().collect();
    let mixed = plan.mixed.clone();
    for (i, (dim, codes)) in mixed.iter().enumerate() {
        let is_aggregate = |row: &Vec<Option<String>>| row[i].as_ref().is_some_and(|c| codes.contains(c));
        let is_member = |row: &Vec<Option<String>>| row[i].as_ref().is_some_and(|c| !codes.contains(c));
        let mut present: Vec<String> = rows.iter().filter(|r| is_aggregate(r)).filter_map(|r| r[i].clone()).collect();
        present.sort();
        present.dedup();
        let members = rows.iter().any(|r| is_member(r));
        if plan.row_filters.iter().any(|x| selects_codes_of(x, dim, false)) {
            // Selected as written. Aggregates beside members, or two
            // aggregates (ASEAN within TOTAL), add up to more than a total
            // when summed over the dimension, or when a share divides by
            // their sum.
            if (members && !present.is_empty() || present.len() > 1)
                && (!plan.keys.contains(dim) || uses_base_total(plan))
            {
                plan.summed_together.push((dim.clone(), present));
            }
            continue;
        }
        if present.is_empty() || !members {
            continue;
        }
        rows.retain(|r| !is_aggregate(r));
        plan.row_filters.insert(plan.left_out.len(), leave_out(dim, &present));
        plan.left_out.push((dim.clone(), present));
    }
}

/// Whether a measure of `plan` divides by the total of the base rows (share, contribution).
fn uses_base_total(plan: &Plan) -> bool {
    let exprs = plan.outputs.iter().map(|o| &o.expr).chain(plan.post_derives.iter().map(|(_, x)| x));
    exprs.chain(plan.post_filters.iter()).any(|x| {
        x.any(&mut |e| {
            matches!(e, RExpr::Measure(m) if matches!(m.as_ref(), Measure::Share(..) | Measure::Contribution(..)))
        })
    })
}

/// The filter that leaves out rows whose `dim` is one of `codes` (a row with
/// no region is kept).
fn leave_out(dim: &str, codes: &[String]) -> RExpr {
    RExpr::Not(Box::new(RExpr::IsCode(dim.to_string(), codes.to_vec())))
}

/// Whether `x` selects rows by naming codes of `dim` (`partner = "WLD"`,
/// `partner in ("ASEAN", "EU")`), outside any `not`.
fn selects_codes_of(x: &RExpr, dim: &str, negated: bool) -> bool {
    let is_dim = |e: &RExpr| matches!(e, RExpr::Col(c) if c == dim);
    let is_text = |e: &RExpr| matches!(e, RExpr::Str(_));
    match x {
        RExpr::Not(a) => selects_codes_of(a, dim, !negated),
        RExpr::Bin(BinOp::Eq, a, b) => !negated && (is_dim(a) && is_text(b) || is_text(a) && is_dim(b)),
        RExpr::In(a, list) => !negated && is_dim(a) && list.iter().all(is_text),
        RExpr::Bin(BinOp::And | BinOp::Or, a, b) => {
            selects_codes_of(a, dim, negated) || selects_codes_of(b, dim, negated)
        }
        _ => false,
    }
}

fn default_sum() -> AggItem {
    AggItem {
        name: None,
        func: Ident { name: "sum".into(), span: Span::default() },
        arg: Some(Ident { name: "value".into(), span: Span::default() }),
        span: Span::default(),
    }
}

fn literal_from_text(text: &str) -> RExpr {
    if let Ok(n) = text.parse::<f64>() {
        return RExpr::Num(n);
    }
    if let Ok(p) = Period::parse(text) {
        return RExpr::Date(p.days());
    }
    RExpr::Str(text.to_string())
}

/// The name a `show` item gets when none is written: `value`, `value_yoy`, `value_share_pp`.
fn default_name(x: &RExpr) -> Option<String> {
    match x {
        RExpr::Col(c) => Some(c.clone()),
        RExpr::Measure(m) => {
            let inner = match m.as_ref() {
                Measure::Yoy(a)
                | Measure::Pop(a)
                | Measure::Pp(a)
                | Measure::Ytd(a)
                | Measure::Record(a)
                | Measure::FirstRelease(a) => default_name(a),
                Measure::Share(a, ..) | Measure::Contribution(a, ..) | Measure::Rank(a, _) => default_name(a),
                Measure::Rolling(a, n, _) | Measure::High(a, n) => default_name(a).map(|s| format!("{s}_{n}")),
                Measure::Versus { x: a, back: Back::Years(n), .. } if *n > 1 => {
                    default_name(a).map(|s| format!("{s}_{n}"))
                }
                Measure::Versus { x: a, .. } => default_name(a),
                Measure::Streak(_) => return Some("streak".into()),
                Measure::UnitValue => return Some("unit_value".into()),
            }?;
            // rolling and high put their window after the measure: value_rolling_12
            Some(match m.as_ref() {
                Measure::Rolling(a, n, _) | Measure::High(a, n) => format!("{}_{}_{n}", default_name(a)?, m.name()),
                Measure::Versus { x: a, back: Back::Years(n), .. } if *n > 1 => {
                    format!("{}_{}_{n}", default_name(a)?, m.name())
                }
                _ => format!("{inner}_{}", m.name()),
            })
        }
        _ => None,
    }
}

fn expect_ty(got: Ty, want: Ty, span: Span, what: &str) -> Result<(), Diag> {
    if got == want {
        Ok(())
    } else {
        Err(Diag::new(span, format!("{what} must be {}, but this is {}", want.name(), got.name())))
    }
}

struct Resolver<'a> {
    catalog: &'a Catalog<'a>,
    params: BTreeMap<String, RExpr>,
    scope: BTreeMap<String, Ty>,
    aggregated: bool,
    time: Option<TimeKey>,
    /// `by ytd`: a year roll-up of the months up to the last one the query covers.
    ytd: bool,
    keys: Vec<String>,
    group_aliases: Vec<String>,
    /// Aggregate column -> the row column it sums (for contribution()).
    sum_of: BTreeMap<String, String>,
    /// Group column (alias) -> its group table.
    alias_tables: BTreeMap<String, String>,
    /// The row columns (with derived ones) once rows are aggregated: what aggregates may read.
    row_scope: BTreeMap<String, Ty>,
    /// Set by convert(): the rates table and the dataset's currency.
    rates: Option<(String, String)>,
    /// The dimensions that hold both aggregate and member codes, with their
    /// aggregate codes (read from the store once, when first needed).
    mixed: Option<Vec<(String, Vec<String>)>>,
    /// Whether the query reads the `aggregate` column (then it decides alone
    /// which aggregate rows it keeps).
    tests_aggregate: bool,
    /// Whether unit_value() appears, alone or inside a measure: it needs the
    /// sums of value and quantity.
    uses_unit_value: bool,
    /// Whether first_release() appears.
    first_release: bool,
    /// Measures open around the expression being resolved.
    measure_depth: usize,
    /// The dimension of a `top` stage, whose folded rows are named "others".
    top_dim: Option<String>,
    /// The names tables name() reads: (dimension, file relative to `_groups/`).
    names: Vec<(String, String)>,
}

impl Resolver<'_> {
    fn define(&mut self, name: &Ident, ty: Ty) -> Result<(), Diag> {
        if self.scope.contains_key(&name.name) {
            return Err(
                Diag::new(name.span, format!("`{}` is already a column", name.name)).hint("choose another name")
            );
        }
        self.scope.insert(name.name.clone(), ty);
        Ok(())
    }

    fn ty_of(&self, name: &str, span: Span) -> Result<Ty, Diag> {
        if let Some(t) = self.scope.get(name) {
            return Ok(*t);
        }
        let mut d = Diag::new(span, format!("unknown column `{name}`"));
        if let Some(s) = closest(name, self.scope.keys().map(String::as_str)) {
            d = d.hint(format!("did you mean `{s}`?"));
        } else {
            let mut names: Vec<&str> = self.scope.keys().map(String::as_str).collect();
            names.sort();
            d = d.hint(format!("columns here: {}", names.join(", ")));
        }
        if !self.aggregated && ["year", "quarter", "month", "period"].contains(&name) {
            d = d.hint("calendar keys exist after `by`");
        }
        Err(d)
    }

    fn literal(&self, e: &Expr) -> Result<RExpr, Diag> {
        match &e.kind {
            ExprKind::Number(n) => Ok(RExpr::Num(*n)),
            ExprKind::Str(s) => Ok(RExpr::Str(s.clone())),
            ExprKind::Period(p) => period_literal(p, e.span).map(|p| RExpr::Date(p.days())),
            ExprKind::Neg(inner) => match self.literal(inner)? {
                RExpr::Num(n) => Ok(RExpr::Num(-n)),
                _ => Err(Diag::new(e.span, "only a number can be negative")),
            },
            _ => Err(Diag::new(e.span, "a parameter's default must be a number, a string or a period")),
        }
    }

    fn group(&mut self, dim: &Ident, table: &Ident, alias: &Ident, as_of: Option<&Expr>) -> Result<GroupMap, Diag> {
        if !["partner", "product", "region", "reporter"].contains(&dim.name.as_str()) {
            return Err(Diag::new(
                dim.span,
                format!("`group` maps partner, product, reporter or region, not `{}`", dim.name),
            ));
        }
        let tables = &self.catalog.groups.tables;
        let Some(t) = tables.iter().find(|t| t.name == table.name) else {
            let mut d = Diag::new(table.span, format!("unknown group table `{}`", table.name));
            if let Some(s) = closest(&table.name, tables.iter().map(|t| t.name.as_str())) {
                d = d.hint(format!("did you mean `{s}`?"));
            } else if tables.is_empty() {
                d = d.hint("the store has no group tables; add one with `tradeql groups add`");
            } else {
                d = d.hint(format!(
                    "group tables in the store: {}",
                    tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            return Err(d);
        };
        let fits = t.of == dim.name || (t.of == "partner" && dim.name == "reporter");
        if !fits {
            return Err(Diag::new(table.span, format!("`{}` groups {} codes, not {} codes", t.name, t.of, dim.name)));
        }
        let as_of = match as_of {
            None => None,
            Some(e) => match self.expr(e)? {
                (RExpr::Date(d), _) => Some(d),
                _ => return Err(Diag::new(e.span, "`as of` takes a period, such as 2024-12")),
            },
        };
        self.define(alias, Ty::Str)?;
        self.group_aliases.push(alias.name.clone());
        self.alias_tables.insert(alias.name.clone(), t.name.clone());
        Ok(GroupMap {
            dim: dim.name.clone(),
            table: t.name.clone(),
            path: t.path.clone(),
            alias: alias.name.clone(),
            as_of,
        })
    }

    fn by(&mut self, keys: &[Ident], data: Frequency) -> Result<(), Diag> {
        let mut dims = Vec::new();
        for k in keys {
            let time = match k.name.as_str() {
                "year" => Some(TimeKey::Year),
                "half" => Some(TimeKey::Half),
                "quarter" => Some(TimeKey::Quarter),
                "month" => Some(TimeKey::Month),
                "ytd" => {
                    if data == Frequency::Year {
                        return Err(Diag::new(k.span, "the dataset is yearly; year to date needs months or quarters"));
                    }
                    self.ytd = true;
                    Some(TimeKey::Year)
                }
                "period" => Some(match data {
                    Frequency::Month => TimeKey::Month,
                    Frequency::Quarter => TimeKey::Quarter,
                    Frequency::Year => TimeKey::Year,
                }),
                _ => None,
            };
            if let Some(t) = time {
                if self.time.is_some() {
                    return Err(Diag::new(
                        k.span,
                        "only one calendar key (year, half, quarter, month, period or ytd) per `by`",
                    ));
                }
                if t.months() < data.months() || t == TimeKey::Half && data == Frequency::Year {
                    return Err(Diag::new(
                        k.span,
                        format!("the dataset is {data}ly; it cannot be split by {}", k.name),
                    ));
                }
                self.time = Some(t);
                continue;
            }
            let ty = self.ty_of(&k.name, k.span)?;
            if ty == Ty::Num
                && !self.group_aliases.contains(&k.name)
                && ["value", "quantity"].contains(&k.name.as_str())
            {
                return Err(Diag::new(k.span, format!("`{}` is a measure to aggregate, not a key", k.name))
                    .hint(format!("write `sum {}` instead", k.name)));
            }
            dims.push((k.name.clone(), ty));
        }
        self.keys = dims.iter().map(|(n, _)| n.clone()).collect();
        self.start_aggregation(dims);
        Ok(())
    }

    fn start_aggregation(&mut self, dims: Vec<(String, Ty)>) {
        self.aggregated = true;
        self.row_scope = std::mem::replace(&mut self.scope, dims.into_iter().collect());
        if let Some(t) = self.time {
            let ty = match t {
                TimeKey::Year => Ty::Num,
                TimeKey::Quarter | TimeKey::Half => Ty::Str,
                TimeKey::Month => Ty::Date,
            };
            self.scope.insert(t.column().to_string(), ty);
        }
    }

    fn agg(&mut self, item: &AggItem) -> Result<Agg, Diag> {
        let func = AggFunc::parse(&item.func.name).ok_or_else(|| {
            let names = ["sum", "mean", "min", "max", "count", "count_distinct"];
            let mut d = Diag::new(item.func.span, format!("unknown aggregate `{}`", item.func.name));
            if let Some(s) = closest(&item.func.name, names) {
                d = d.hint(format!("did you mean `{s}`?"));
            } else {
                d = d.hint(format!("aggregates: {}", names.join(", ")));
            }
            d
        })?;
        let row_scope = &self.row_scope;
        let row_ty = |name: &Ident| -> Result<Ty, Diag> {
            row_scope.get(&name.name).copied().ok_or_else(|| {
                let mut d = Diag::new(name.span, format!("unknown column `{}`", name.name));
                if let Some(s) = closest(&name.name, row_scope.keys().map(String::as_str)) {
                    d = d.hint(format!("did you mean `{s}`?"));
                }
                d
            })
        };
        let arg = match (&item.arg, func) {
            (None, AggFunc::Count) => None,
            (None, _) => return Err(Diag::new(item.span, format!("`{}` needs a column", func.name()))),
            (Some(a), AggFunc::Count | AggFunc::CountDistinct) => {
                row_ty(a)?;
                Some(a.name.clone())
            }
            (Some(a), _) => {
                let ty = row_ty(a)?;
                if ty != Ty::Num {
                    return Err(Diag::new(
                        a.span,
                        format!("cannot {} `{}`: it is {}, not a number", func.name(), a.name, ty.name()),
                    )
                    .hint("count it with count_distinct(...) instead"));
                }
                Some(a.name.clone())
            }
        };
        let name = match (&item.name, &arg) {
            (Some(n), _) => n.clone(),
            (None, Some(a)) if func == AggFunc::Sum => Ident { name: a.clone(), span: item.span },
            (None, Some(a)) => Ident { name: format!("{}_{a}", func.name()), span: item.span },
            (None, None) => Ident { name: "count".into(), span: item.span },
        };
        self.define(&name, Ty::Num)?;
        if func == AggFunc::Sum {
            self.sum_of.insert(name.name.clone(), arg.clone().unwrap_or_default());
        }
        Ok(Agg { name: name.name, func, arg })
    }

    fn need_unit_value(&mut self, plan: &mut Plan) {
        for (name, arg) in [("__uv_value", "value"), ("__uv_quantity", "quantity")] {
            if !plan.aggs.iter().any(|a| a.name == name) {
                plan.aggs.push(Agg { name: name.into(), func: AggFunc::Sum, arg: Some(arg.into()) });
            }
        }
    }

    fn needs_time(&self, span: Span, what: &str) -> Result<TimeKey, Diag> {
        if !self.aggregated {
            return Err(Diag::new(
                span,
                format!("{what} compares aggregated periods; it needs `by` with a calendar key first"),
            ));
        }
        self.time.ok_or_else(|| {
            Diag::new(span, format!("{what} needs a period dimension, but `by` has no calendar key"))
                .hint("add year, quarter, month or period to `by`")
        })
    }

    fn within(&self, names: &[Ident]) -> Result<Vec<String>, Diag> {
        let mut out = Vec::new();
        for w in names {
            let is_time = self.time.is_some_and(|t| {
                t.column() == w.name || ["year", "quarter", "month", "period"].contains(&w.name.as_str())
            });
            if is_time {
                continue; // measures are always within the period
            }
            if !self.keys.contains(&w.name) {
                let mut d = Diag::new(w.span, format!("`within {}`: `{}` is not a grouping column", w.name, w.name));
                d = d.hint(match closest(&w.name, self.keys.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if self.keys.is_empty() => {
                        "`within` names columns of `by`; this `by` has only the calendar key".to_string()
                    }
                    None => format!("grouping columns: {}", self.keys.join(", ")),
                });
                return Err(d);
            }
            out.push(w.name.clone());
        }
        Ok(out)
    }

    fn num_arg(&mut self, args: &[Expr], i: usize, call: Span, what: &str) -> Result<RExpr, Diag> {
        let e = args.get(i).ok_or_else(|| Diag::new(call, format!("{what} needs a column argument")))?;
        let (x, ty) = self.expr(e)?;
        expect_ty(ty, Ty::Num, e.span, &format!("the argument of {what}"))?;
        Ok(x)
    }

    fn count_arg(&self, args: &[Expr], i: usize, call: Span, what: &str) -> Result<usize, Diag> {
        self.whole_arg(args, i, call, &format!("{what} needs a window length, a whole number such as 12"))
    }

    /// A whole number of at least 1 at argument `i`, or the error `message`;
    /// at most [`MAX_PERIODS_BACK`]: no series is longer.
    fn whole_arg(&self, args: &[Expr], i: usize, call: Span, message: &str) -> Result<usize, Diag> {
        match args.get(i).map(|e| &e.kind) {
            Some(ExprKind::Number(n)) if *n > MAX_PERIODS_BACK as f64 && n.fract() == 0.0 => Err(Diag::new(
                args[i].span,
                format!(
                    "{n} periods is longer than any series: at most {MAX_PERIODS_BACK} (a hundred years of months)"
                ),
            )),
            Some(ExprKind::Number(n)) if *n >= 1.0 && n.fract() == 0.0 => Ok(*n as usize),
            _ => Err(Diag::new(args.get(i).map_or(call, |e| e.span), message.to_string())),
        }
    }

    fn check_arity(&self, args: &[Expr], n: usize, call: Span, name: &str) -> Result<(), Diag> {
        if args.len() == n {
            Ok(())
        } else {
            Err(Diag::new(
                call,
                format!("{name}() takes {n} argument{}, not {}", if n == 1 { "" } else { "s" }, args.len()),
            ))
        }
    }

    /// The dimensions of the dataset that hold both aggregate codes (the
    /// world, a continent or bloc, TOTAL, a national row) and member codes,
    /// each with its aggregate codes present in the store. A dimension that
    /// holds only aggregate codes (product always TOTAL) is not among them:
    /// nothing in it is added twice.
    fn mixed_dimensions(&mut self, span: Span) -> Result<Vec<(String, Vec<String>)>, Diag> {
        if let Some(m) = &self.mixed {
            return Ok(m.clone());
        }
        let manifest = self.catalog.manifest;
        let mut out = Vec::new();
        for dim in AGGREGATE_DIMENSIONS {
            if !manifest.schema.iter().any(|c| c.name == dim) {
                continue;
            }
            let candidates = manifest.aggregate_candidates(dim, self.catalog.groups);
            if candidates.is_empty() {
                continue;
            }
            let present = (self.catalog.codes)(dim)
                .map_err(|e| Diag::new(span, format!("cannot read the codes of `{dim}`: {e}")))?;
            let mut aggregates: Vec<String> = present.iter().filter(|c| candidates.contains(c)).cloned().collect();
            if aggregates.is_empty() || aggregates.len() == present.len() {
                continue;
            }
            aggregates.sort();
            aggregates.dedup();
            out.push((dim.to_string(), aggregates));
        }
        self.mixed = Some(out.clone());
        Ok(out)
    }

    /// The row column `aggregate`: true for a row that is an aggregate of a
    /// dimension that also holds member rows.
    fn aggregate_flag(&mut self, span: Span) -> Result<RExpr, Diag> {
        let mixed = self.mixed_dimensions(span)?;
        self.tests_aggregate = true;
        Ok(mixed
            .iter()
            .map(|(dim, codes)| RExpr::IsCode(dim.clone(), codes.clone()))
            .reduce(|a, b| RExpr::Bin(BinOp::Or, Box::new(a), Box::new(b)))
            .unwrap_or(RExpr::Bool(false)))
    }

    /// The second argument of share() or contribution(), `DIM = "CODE"`: the
    /// aggregate row (a national or world row) it divides by.
    fn total_row(&mut self, args: &[Expr], within: &[String], what: &str) -> Result<Option<TotalRow>, Diag> {
        let Some(arg) = args.get(1) else { return Ok(None) };
        let bad = || {
            Diag::new(arg.span, format!("the second argument of {what}() names the row it divides by: DIM = \"CODE\""))
                .hint(format!("for example {what}(value, region = \"CN\") divides by the national row"))
        };
        let ExprKind::Binary(BinOp::Eq, a, b) = &arg.kind else { return Err(bad()) };
        let (ExprKind::Col(dim), ExprKind::Str(code)) = (&a.kind, &b.kind) else { return Err(bad()) };
        if !CODE_COLUMNS.contains(&dim.as_str()) {
            return Err(Diag::new(a.span, format!("{what}(): `{dim}` is not a code column"))
                .hint(format!("code columns: {}", CODE_COLUMNS.join(", "))));
        }
        if let Some(g) = within.iter().find(|w| self.group_aliases.contains(w)) {
            return Err(Diag::new(
                a.span,
                format!("{what}(): a total row and `within {g}` (a group column) do not combine"),
            )
            .hint("divide by the total row without `within`, or within a code column"));
        }
        if within.contains(dim) {
            return Err(Diag::new(
                a.span,
                format!("{what}(): within {dim} and {dim} = {code:?} contradict each other"),
            ));
        }
        let known = (self.catalog.codes)(dim)
            .map_err(|e| Diag::new(a.span, format!("cannot read the codes of `{dim}`: {e}")))?;
        if !known.iter().any(|k| k == code) {
            let mut d = Diag::new(b.span, self.unknown_code(dim, code));
            if let Some(s) = closest(code, known.iter().map(String::as_str)) {
                d = d.hint(format!("did you mean \"{s}\"?"));
            }
            return Err(d);
        }
        Ok(Some(TotalRow { dim: dim.clone(), code: code.clone() }))
    }

    /// The argument of share() or contribution(): a column made by `sum`, so
    /// that the measure can divide by the total of the base rows (each stored
    /// row once), never by a sum of the aggregated (possibly overlapping) rows.
    fn summed_column(&self, args: &[Expr], what: &str) -> Result<String, Diag> {
        let arg = &args[0];
        let ExprKind::Col(c) = &arg.kind else {
            return Err(Diag::new(arg.span, format!("{what}() takes a column made by `sum`, such as value"))
                .hint(format!("{what}() divides by the total of the stored rows; sum the column first")));
        };
        self.ty_of(c, arg.span)?;
        if !self.sum_of.contains_key(c) {
            return Err(Diag::new(arg.span, format!("{what}() needs a column made by `sum`; `{c}` is not one"))
                .hint(format!("{what}() divides by the total of the stored rows; sum the column first")));
        }
        Ok(c.clone())
    }

    /// A call; a measure inside measures at most [`MAX_MEASURE_NESTING`] deep
    /// (each level compares periods of the one inside: the plan grows with it).
    fn call(&mut self, name: &Ident, args: &[Expr], within: &[Ident], span: Span) -> Result<(RExpr, Ty), Diag> {
        let is_measure = MEASURES.contains(&name.name.as_str()) || name.name == "streak";
        if is_measure {
            if self.measure_depth >= MAX_MEASURE_NESTING {
                return Err(Diag::new(
                    name.span,
                    format!("measures nest at most {MAX_MEASURE_NESTING} deep (as in pp(share(ytd(value))))"),
                ));
            }
            self.measure_depth += 1;
        }
        let out = self.call_inner(name, args, within, span);
        if is_measure {
            self.measure_depth -= 1;
        }
        out
    }

    /// The query's parameters, each `--param` override replacing its
    /// default; an override of no parameter is an error.
    fn params(&mut self, query: &Query, overrides: &[(String, String)]) -> Result<(), Diag> {
        for p in &query.params {
            let value = match overrides.iter().find(|(k, _)| *k == p.name.name) {
                Some((_, v)) => literal_from_text(v),
                None => self.literal(&p.value)?,
            };
            self.params.insert(p.name.name.clone(), value);
        }
        for (k, _) in overrides {
            if !query.params.iter().any(|p| p.name.name == *k) {
                let names: Vec<&str> = query.params.iter().map(|p| p.name.name.as_str()).collect();
                let mut d = Diag::new(Span::default(), format!("--param {k}: this query has no parameter `{k}`"));
                d = match closest(k, names.iter().copied()) {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None if names.is_empty() => d.hint("this query declares no parameters"),
                    None => d.hint(format!("its parameters are: {}", names.join(", "))),
                };
                return Err(d);
            }
        }
        Ok(())
    }

    /// `top N DIM by COL`: after `by`, before `derive` and `show`; over a
    /// key that is not a group column; ranking by a sum or count.
    fn top_stage(&mut self, plan: &mut Plan, n: usize, dim: &Ident, by: &Ident, span: Span) -> Result<(), Diag> {
        if !self.aggregated || plan.time.is_none() && plan.keys.is_empty() {
            return Err(Diag::new(span, "`top` keeps the largest members of a grouping; it needs `by` first"));
        }
        if !self.keys.contains(&dim.name) {
            return Err(Diag::new(dim.span, format!("`top` needs `{}` among the `by` keys", dim.name)));
        }
        if plan.top.is_some() {
            return Err(Diag::new(span, "a second `top`: keep one"));
        }
        if !plan.outputs.is_empty() || !plan.post_derives.is_empty() {
            return Err(Diag::new(span, "`top` folds the aggregated rows, so it comes before `derive` and `show`"));
        }
        if self.group_aliases.contains(&dim.name) {
            return Err(Diag::new(
                dim.span,
                format!(
                    "`top` over `{}`, a group column: groups overlap, so \"others\" would count members twice",
                    dim.name
                ),
            )
            .hint("rank the groups instead: show rank(value), then `where rank(value) <= N`"));
        }
        if self.ty_of(&by.name, by.span)? != Ty::Num || !plan.aggs.iter().any(|a| a.name == by.name) {
            return Err(Diag::new(
                by.span,
                format!("`top` ranks by an aggregate (a `sum` or `agg` column); `{}` is not one", by.name),
            ));
        }
        if let Some(a) = plan.aggs.iter().find(|a| !matches!(a.func, AggFunc::Sum | AggFunc::Count)) {
            return Err(Diag::new(
                span,
                format!(
                    "`top` sums the rest into \"others\", which {}({}) cannot be",
                    a.func.name(),
                    a.arg.as_deref().unwrap_or("")
                ),
            )
            .hint("use sum or count"));
        }
        plan.top = Some((n, dim.name.clone(), by.name.clone()));
        self.top_dim = Some(dim.name.clone());
        Ok(())
    }

    /// `show`: each column named (or named after its expression), formatted
    /// only if it is a number, shown once.
    fn show_stage(&mut self, plan: &mut Plan, items: &[ShowItem]) -> Result<(), Diag> {
        for item in items {
            let (x, ty) = self.expr(&item.expr)?;
            let name = match &item.name {
                Some(n) => n.name.clone(),
                None => default_name(&x).ok_or_else(|| {
                    Diag::new(item.expr.span, "this column needs a name").hint("write `show name = ...`")
                })?,
            };
            let format = match &item.format {
                None => None,
                Some(f) => {
                    let fmt = Format::parse(&f.name).ok_or_else(|| {
                        let mut d = Diag::new(f.span, format!("unknown format `{}`", f.name));
                        if let Some(s) = closest(&f.name, Format::NAMES) {
                            d = d.hint(format!("did you mean `{s}`?"));
                        } else {
                            d = d.hint(format!("formats: {}", Format::NAMES.join(", ")));
                        }
                        d
                    })?;
                    if ty != Ty::Num {
                        return Err(Diag::new(
                            f.span,
                            format!("`as {}` formats numbers; this column is {}", f.name, ty.name()),
                        ));
                    }
                    Some(fmt)
                }
            };
            let ident = Ident { name: name.clone(), span: item.name.as_ref().map_or(item.expr.span, |n| n.span) };
            if !matches!(&x, RExpr::Col(c) if *c == name) {
                self.define(&ident, ty)?;
            }
            if std::mem::take(&mut self.uses_unit_value) {
                self.need_unit_value(plan);
            }
            if plan.outputs.iter().any(|o| o.name == name) {
                return Err(Diag::new(ident.span, format!("`{name}` is shown twice"))
                    .hint("show it once, or name the second one: `show ..., other_name = ...`"));
            }
            plan.outputs.push(Output { name, expr: x, format });
        }
        Ok(())
    }

    fn call_inner(&mut self, name: &Ident, args: &[Expr], within: &[Ident], span: Span) -> Result<(RExpr, Ty), Diag> {
        let n = name.name.as_str();
        if !within.is_empty() && !["share", "contribution", "rank"].contains(&n) {
            return Err(Diag::new(within[0].span, format!("{n}() takes no `within`")));
        }
        let measure = |r: &Self, what: &str| r.needs_time(span, what);
        Ok(match n {
            "name" => self.name_call(name, args, span)?,
            "chapter" | "heading" | "section" => self.code_call(name, args, span)?,
            "yoy" | "change" if args.len() == 2 || n == "change" => self.versus_call(name, args, span)?,
            "pop_change" | "pop_pp" => {
                self.check_arity(args, 1, span, n)?;
                measure(self, &format!("{n}()"))?;
                let x = self.num_arg(args, 0, span, &format!("{n}()"))?;
                let (how, name) =
                    if n == "pop_pp" { (Compare::Points, "pop_pp") } else { (Compare::Change, "pop_change") };
                (measure_expr(Measure::Versus { x, back: Back::Periods(1), how, name }), Ty::Num)
            }
            "yoy" | "pop" | "mom" | "qoq" | "pp" | "ytd" | "ytd_yoy" | "record" => {
                self.period_measure_call(name, args, span)?
            }
            "first_release" => {
                self.check_arity(args, 1, span, n)?;
                // Each period as first published: the periods are the calendar key's.
                self.needs_time(span, "first_release()")?;
                let x = self.num_arg(args, 0, span, "first_release()")?;
                self.first_release = true;
                (measure_expr(Measure::FirstRelease(x)), Ty::Num)
            }
            "share" | "rank" => self.share_or_rank_call(name, args, within, span)?,
            "contribution" => self.contribution_call(name, args, within, span)?,
            "rolling" | "rolling_mean" | "high" => {
                self.check_arity(args, 2, span, n)?;
                measure(self, &format!("{n}()"))?;
                let x = self.num_arg(args, 0, span, &format!("{n}()"))?;
                let k = self.count_arg(args, 1, span, &format!("{n}()"))?;
                if n == "rolling" {
                    refuse_sum_of_ratios(&x, args[0].span, n)?;
                }
                match n {
                    "high" => (measure_expr(Measure::High(x, k)), Ty::Bool),
                    _ => (measure_expr(Measure::Rolling(x, k, n == "rolling_mean")), Ty::Num),
                }
            }
            "streak" => {
                self.check_arity(args, 1, span, n)?;
                measure(self, "streak()")?;
                let (x, ty) = self.expr(&args[0])?;
                expect_ty(ty, Ty::Bool, args[0].span, "the condition of streak()")?;
                (measure_expr(Measure::Streak(x)), Ty::Num)
            }
            "unit_value" => {
                self.check_arity(args, 0, span, n)?;
                if !self.aggregated {
                    return Err(Diag::new(span, "unit_value() works on aggregated rows; it needs `by` first"));
                }
                self.uses_unit_value = true;
                (measure_expr(Measure::UnitValue), Ty::Num)
            }
            "year" | "quarter" | "month" => {
                self.check_arity(args, 1, span, n)?;
                let (x, ty) = self.expr(&args[0])?;
                expect_ty(ty, Ty::Date, args[0].span, &format!("the argument of {n}()"))?;
                let f = match n {
                    "year" => CalendarFn::Year,
                    "quarter" => CalendarFn::Quarter,
                    _ => CalendarFn::Month,
                };
                (RExpr::Calendar(f, Box::new(x)), Ty::Num)
            }
            "if" => self.if_call(name, args, span)?,
            "convert" => self.convert_call(name, args, span)?,
            _ => self.unknown_call(name)?,
        })
    }

    /// `name(DIM)`: the names table's name of a code.
    fn name_call(&mut self, name: &Ident, args: &[Expr], span: Span) -> Result<(RExpr, Ty), Diag> {
        let n = name.name.as_str();
        self.check_arity(args, 1, span, n)?;
        let (x, ty) = self.expr(&args[0])?;
        expect_ty(ty, Ty::Str, args[0].span, "the argument of name()")?;
        let RExpr::Col(dim) = &x else {
            return Err(Diag::new(args[0].span, "name() takes a code column: reporter, partner, product or region"));
        };
        if !["reporter", "partner", "product", "region"].contains(&dim.as_str()) {
            return Err(Diag::new(
                args[0].span,
                format!("name() takes a code column: reporter, partner, product or region, not `{dim}`"),
            ));
        }
        let Some(table) = self.catalog.groups.names_of(dim) else {
            return Err(Diag::new(span, format!("name({dim}) needs the store's names of {dim} codes")).hint(
                if dim == "product" {
                    "add them: tradeql names add data/hs_codes.csv --of product --code hscode --name description"
                } else {
                    "add them: tradeql names add data/country_codes.csv --of partner --code iso3 --name name_en"
                },
            ));
        };
        self.names.push((dim.clone(), table.path.clone()));
        Ok((RExpr::Code(CodeFn::Name, Box::new(x)), Ty::Str))
    }

    /// `chapter()`, `heading()`, `section()`: a product code cut to HS chapter or
    /// heading, or looked up in the `hs_sections` table.
    fn code_call(&mut self, name: &Ident, args: &[Expr], span: Span) -> Result<(RExpr, Ty), Diag> {
        let n = name.name.as_str();
        self.check_arity(args, 1, span, n)?;
        if self.aggregated {
            return Err(Diag::new(span, format!("{n}() works on rows; use it in `derive` before `by`")));
        }
        let (x, ty) = self.expr(&args[0])?;
        expect_ty(ty, Ty::Str, args[0].span, &format!("the argument of {n}()"))?;
        let f = match n {
            "chapter" => CodeFn::Chapter,
            "heading" => CodeFn::Heading,
            _ => {
                if x != RExpr::Col("product".into()) {
                    return Err(Diag::new(args[0].span, "section() looks up the `product` column"));
                }
                if !self.catalog.groups.tables.iter().any(|t| t.name == "hs_sections") {
                    return Err(Diag::new(
                        span,
                        "section() needs the group table `hs_sections` (HS chapters by section)",
                    )
                    .hint("add it: tradeql groups add hs_sections data/hs_section_groups.csv --of product"));
                }
                CodeFn::Section
            }
        };
        Ok((RExpr::Code(f, Box::new(x)), Ty::Str))
    }

    /// `yoy(x, n)` and `change(x [, n])`: against n years before.
    fn versus_call(&mut self, name: &Ident, args: &[Expr], span: Span) -> Result<(RExpr, Ty), Diag> {
        let n = name.name.as_str();
        let measure = |r: &Self, what: &str| r.needs_time(span, what);
        if args.is_empty() || args.len() > 2 {
            return Err(Diag::new(span, format!("{n}() takes a column and, optionally, a number of years")));
        }
        measure(self, &format!("{n}()"))?;
        let x = self.num_arg(args, 0, span, &format!("{n}()"))?;
        let years = if args.len() == 2 {
            self.whole_arg(args, 1, span, &format!("{n}() needs a number of years back, a whole number such as 4"))?
        } else {
            1
        };
        if years > 100 {
            return Err(Diag::new(args[1].span, format!("{n}(): at most 100 years back, not {years}")));
        }
        let how = if n == "yoy" { Compare::Growth } else { Compare::Change };
        let name = if n == "yoy" { "yoy" } else { "change" };
        Ok((measure_expr(Measure::Versus { x, back: Back::Years(years as u32), how, name }), Ty::Num))
    }

    /// The one-argument measures over the calendar: yoy, pop (mom, qoq), pp,
    /// ytd, ytd_yoy, record.
    fn period_measure_call(&mut self, name: &Ident, args: &[Expr], span: Span) -> Result<(RExpr, Ty), Diag> {
        let n = name.name.as_str();
        let measure = |r: &Self, what: &str| r.needs_time(span, what);
        self.check_arity(args, 1, span, n)?;
        let t = measure(self, &format!("{n}()"))?;
        if n == "mom" && t != TimeKey::Month || n == "qoq" && t != TimeKey::Quarter {
            return Err(Diag::new(
                span,
                format!(
                    "{n}() needs `by {}`; use pop() for the previous period of any roll-up",
                    if n == "mom" { "month" } else { "quarter" }
                ),
            ));
        }
        if (n == "ytd" || n == "ytd_yoy") && matches!(t, TimeKey::Year | TimeKey::Half) {
            return Err(Diag::new(span, format!("{n}() needs months or quarters in `by`, not years")));
        }
        let x = self.num_arg(args, 0, span, &format!("{n}()"))?;
        if n.starts_with("ytd") {
            refuse_sum_of_ratios(&x, args[0].span, n)?;
        }
        let out = match n {
            "yoy" => measure_expr(Measure::Yoy(x)),
            "pop" => measure_expr(Measure::Pop(x)),
            // Named as written, in warnings and default names.
            "mom" | "qoq" => measure_expr(Measure::Versus {
                x,
                back: Back::Periods(1),
                how: Compare::Growth,
                name: if n == "mom" { "mom" } else { "qoq" },
            }),
            "pp" => measure_expr(Measure::Pp(x)),
            "ytd" => measure_expr(Measure::Ytd(x)),
            "ytd_yoy" => measure_expr(Measure::Yoy(measure_expr(Measure::Ytd(x)))),
            _ => measure_expr(Measure::Record(x)),
        };
        Ok((out, if n == "record" { Ty::Bool } else { Ty::Num }))
    }

    /// `share(x [within D] [, D = "CODE"])` and `rank(x [within D])`.
    fn share_or_rank_call(
        &mut self,
        name: &Ident,
        args: &[Expr],
        within: &[Ident],
        span: Span,
    ) -> Result<(RExpr, Ty), Diag> {
        let n = name.name.as_str();
        if n == "share" && args.len() == 2 {
            // share(x, DIM = "CODE"): of an aggregate row.
        } else {
            self.check_arity(args, 1, span, n)?;
        }
        if !self.aggregated {
            return Err(Diag::new(span, format!("{n}() works on aggregated rows; it needs `by` first")));
        }
        if n == "share" {
            let c = self.summed_column(args, n)?;
            let w = self.within(within)?;
            let of = self.total_row(args, &w, n)?;
            return Ok((measure_expr(Measure::Share(RExpr::Col(c), w, of)), Ty::Num));
        }
        let x = self.num_arg(args, 0, span, &format!("{n}()"))?;
        let w = self.within(within)?;
        Ok((measure_expr(Measure::Rank(x, w)), Ty::Num))
    }

    /// `contribution(x [within D] [, D = "CODE"])`.
    fn contribution_call(
        &mut self,
        name: &Ident,
        args: &[Expr],
        within: &[Ident],
        span: Span,
    ) -> Result<(RExpr, Ty), Diag> {
        let n = name.name.as_str();
        let measure = |r: &Self, what: &str| r.needs_time(span, what);
        if args.len() != 2 {
            self.check_arity(args, 1, span, n)?;
        }
        measure(self, "contribution()")?;
        let c = self.summed_column(args, n)?;
        let w = self.within(within)?;
        for d in &w {
            if self.group_aliases.contains(d) {
                return Err(Diag::new(
                    within[0].span,
                    format!("contribution() within the group column `{d}` would sum overlapping groups"),
                ));
            }
        }
        let of = self.total_row(args, &w, n)?;
        Ok((measure_expr(Measure::Contribution(RExpr::Col(c), w, of)), Ty::Num))
    }

    /// `if(c, a, b)`: both branches of one type.
    fn if_call(&mut self, name: &Ident, args: &[Expr], span: Span) -> Result<(RExpr, Ty), Diag> {
        let n = name.name.as_str();
        self.check_arity(args, 3, span, n)?;
        let (c, tc) = self.expr(&args[0])?;
        expect_ty(tc, Ty::Bool, args[0].span, "the condition of if()")?;
        let (a, ta) = self.expr(&args[1])?;
        let (b, tb) = self.expr(&args[2])?;
        if ta != tb {
            return Err(Diag::new(
                args[1].span.to(args[2].span),
                format!("if() gives {} or {}; both branches must be alike", ta.name(), tb.name()),
            ));
        }
        Ok((RExpr::If(Box::new(c), Box::new(a), Box::new(b)), ta))
    }

    /// `convert(x, "CUR")`: row values at each row's monthly rate, through
    /// the store's rates table.
    fn convert_call(&mut self, name: &Ident, args: &[Expr], span: Span) -> Result<(RExpr, Ty), Diag> {
        let n = name.name.as_str();
        self.check_arity(args, 2, span, n)?;
        if self.aggregated {
            return Err(Diag::new(span, "convert() works on rows, each at its own period's rate")
                .hint("convert before `by`: derive value_usd = convert(value, \"USD\"), then sum value_usd"));
        }
        let x = self.num_arg(args, 0, span, "convert()")?;
        let ExprKind::Str(target) = &args[1].kind else {
            return Err(Diag::new(args[1].span, "convert() takes a currency code in quotes, such as \"USD\""));
        };
        let manifest = self.catalog.manifest;
        let Some(source) = manifest.currency.clone() else {
            return Err(Diag::new(span, format!("the dataset {} has no currency in its manifest", manifest.dataset))
                .hint("ingest it again with --currency (or currency = \"...\" in the mapping)"));
        };
        let Some(rates) = &self.catalog.groups.rates else {
            return Err(Diag::new(span, "convert() needs the store's exchange rates")
                .hint("add them: tradeql rates add RATES.csv (columns period,currency,per_usd)"));
        };
        for (code, at) in [(&source, span), (target, args[1].span)] {
            if code != "USD" && !rates.currencies.contains(code) {
                let mut d = Diag::new(at, format!("the rates table has no {code}"));
                d = match closest(code, rates.currencies.iter().map(String::as_str)) {
                    Some(s) => d.hint(format!("did you mean \"{s}\"?")),
                    None => {
                        let mut all: Vec<&str> = vec!["USD"];
                        all.extend(rates.currencies.iter().map(String::as_str).filter(|c| *c != "USD"));
                        d.hint(format!("it has: {}", all.join(", ")))
                    }
                };
                return Err(d);
            }
        }
        self.rates = Some((rates.path.clone(), source));
        Ok((RExpr::Convert(Box::new(x), target.clone()), Ty::Num))
    }

    /// A function tradeql does not have, with the closest one it has.
    fn unknown_call(&self, name: &Ident) -> Result<(RExpr, Ty), Diag> {
        let n = name.name.as_str();
        let all = MEASURES.iter().chain(OTHER_FUNCTIONS.iter()).copied();
        let mut d = Diag::new(name.span, format!("unknown function `{n}`"));
        d = match closest(n, all) {
            Some(s) => d.hint(format!("did you mean `{s}`?")),
            None => d.hint(format!("functions: {}, {}", MEASURES.join(", "), OTHER_FUNCTIONS.join(", "))),
        };
        Err(d)
    }

    fn expr(&mut self, e: &Expr) -> Result<(RExpr, Ty), Diag> {
        Ok(match &e.kind {
            ExprKind::Number(n) => (RExpr::Num(*n), Ty::Num),
            ExprKind::Str(s) => (RExpr::Str(s.clone()), Ty::Str),
            ExprKind::Period(p) => (RExpr::Date(period_literal(p, e.span)?.days()), Ty::Date),
            ExprKind::Param(p) => self.param(p, e)?,
            ExprKind::Col(c) => {
                if c == "true" || c == "false" {
                    return Ok((RExpr::Bool(c == "true"), Ty::Bool));
                }
                let ty = self.ty_of(c, e.span)?;
                if c == "aggregate" && !self.aggregated && !self.row_scope.contains_key(c) {
                    return Ok((self.aggregate_flag(e.span)?, Ty::Bool));
                }
                (RExpr::Col(c.clone()), ty)
            }
            ExprKind::Neg(inner) => {
                let (x, ty) = self.expr(inner)?;
                expect_ty(ty, Ty::Num, inner.span, "a negated value")?;
                (RExpr::Neg(Box::new(x)), Ty::Num)
            }
            ExprKind::Not(inner) => {
                let (x, ty) = self.expr(inner)?;
                expect_ty(ty, Ty::Bool, inner.span, "the operand of `not`")?;
                (RExpr::Not(Box::new(x)), Ty::Bool)
            }
            ExprKind::Binary(op, a, b) => self.binary(e, *op, a, b)?,
            ExprKind::In(x, list) => self.in_list(x, list)?,
            ExprKind::Range(x, lo, hi) => self.range(x, lo, hi)?,
            ExprKind::Call { name, args, within } => self.call(name, args, within, e.span)?,
        })
    }

    /// `$NAME`: the parameter's value (its default, or `--param`'s).
    fn param(&mut self, p: &str, e: &Expr) -> Result<(RExpr, Ty), Diag> {
        let v = self.params.get(p).cloned().ok_or_else(|| {
            let mut d = Diag::new(e.span, format!("unknown parameter `${p}`"));
            d = match closest(p, self.params.keys().map(String::as_str)) {
                Some(s) => d.hint(format!("did you mean `${s}`?")),
                None => d.hint(format!("declare it: param {p} = ...")),
            };
            d
        })?;
        let ty = match v {
            RExpr::Num(_) => Ty::Num,
            RExpr::Date(_) => Ty::Date,
            _ => Ty::Str,
        };
        Ok((v, ty))
    }

    /// `a OP b`: both sides of the operator's types; a comparison of a code
    /// with a literal checks the code exists; `period = 2024-Q4` on monthly
    /// data is every month of the quarter.
    fn binary(&mut self, e: &Expr, op: BinOp, a: &Expr, b: &Expr) -> Result<(RExpr, Ty), Diag> {
        let (xa, ta) = self.expr(a)?;
        let (xb, tb) = self.expr(b)?;
        Ok(match op {
            BinOp::And | BinOp::Or => {
                expect_ty(ta, Ty::Bool, a.span, &format!("the left side of `{}`", op.symbol()))?;
                expect_ty(tb, Ty::Bool, b.span, &format!("the right side of `{}`", op.symbol()))?;
                (RExpr::Bin(op, Box::new(xa), Box::new(xb)), Ty::Bool)
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
                expect_ty(ta, Ty::Num, a.span, &format!("the left side of `{}`", op.symbol()))?;
                expect_ty(tb, Ty::Num, b.span, &format!("the right side of `{}`", op.symbol()))?;
                (RExpr::Bin(op, Box::new(xa), Box::new(xb)), Ty::Num)
            }
            _ => {
                if ta != tb {
                    let mut d = Diag::new(e.span, format!("cannot compare {} with {}", ta.name(), tb.name()));
                    if let (Ty::Date, ExprKind::Str(text)) = (ta, &b.kind)
                        && Period::parse(text).is_ok()
                    {
                        d = d.hint(format!("write the period without quotes: {text}"));
                    }
                    return Err(d);
                }
                self.check_codes(a, &xa, std::slice::from_ref(b), std::slice::from_ref(&xb))?;
                // `period = 2024-Q4` on monthly data means every month of the quarter.
                if let (RExpr::Col(c), RExpr::Date(_), BinOp::Eq, ExprKind::Period(p)) = (&xa, &xb, &op, &b.kind)
                    && c == "period"
                {
                    let lit = period_literal(p, b.span)?;
                    return Ok((
                        RExpr::Between(
                            Box::new(xa),
                            Box::new(RExpr::Date(lit.days())),
                            Box::new(RExpr::Date(lit.next().days())),
                            true,
                        ),
                        Ty::Bool,
                    ));
                }
                (RExpr::Bin(op, Box::new(xa), Box::new(xb)), Ty::Bool)
            }
        })
    }

    /// `x in (a, b, ...)`: items of x's type, codes that exist.
    fn in_list(&mut self, x: &Expr, list: &[Expr]) -> Result<(RExpr, Ty), Diag> {
        let (xx, tx) = self.expr(x)?;
        let mut items = Vec::new();
        for item in list {
            let (xi, ti) = self.expr(item)?;
            if ti != tx {
                return Err(Diag::new(
                    item.span,
                    format!("this list holds {} but `{}` is {}", ti.name(), show_expr(x), tx.name()),
                ));
            }
            items.push(xi);
        }
        self.check_codes(x, &xx, list, &items)?;
        Ok((RExpr::In(Box::new(xx), items), Ty::Bool))
    }

    /// `x in lo .. hi`: a period range includes all of its last period.
    fn range(&mut self, x: &Expr, lo: &Expr, hi: &Expr) -> Result<(RExpr, Ty), Diag> {
        let (xx, tx) = self.expr(x)?;
        let (xl, tl) = self.expr(lo)?;
        let (xh, th) = self.expr(hi)?;
        if tl != tx || th != tx {
            return Err(Diag::new(
                lo.span.to(hi.span),
                format!("the range must hold {} like `{}`", tx.name(), show_expr(x)),
            ));
        }
        // A period range includes the whole last period: 2024-01 .. 2024-Q4 ends on 2024-12-31.
        Ok(if let (RExpr::Date(_), ExprKind::Period(p)) = (&xh, &hi.kind) {
            let end = period_literal(p, hi.span)?.next().days();
            (RExpr::Between(Box::new(xx), Box::new(xl), Box::new(RExpr::Date(end)), true), Ty::Bool)
        } else {
            (RExpr::Between(Box::new(xx), Box::new(xl), Box::new(xh), false), Ty::Bool)
        })
    }

    /// `partner = "USA "` or `bloc = "ASEN"`: the code must exist.
    fn check_codes(&self, col: &Expr, x: &RExpr, lits: &[Expr], values: &[RExpr]) -> Result<(), Diag> {
        let RExpr::Col(c) = x else { return Ok(()) };
        let known: Vec<String> = if let Some(table) = self.group_table_of(c) {
            table.groups.iter().map(|(g, _)| g.clone()).collect()
        } else if CODE_COLUMNS.contains(&c.as_str()) && !self.aggregated
            || self.keys.contains(c) && CODE_COLUMNS.contains(&c.as_str())
        {
            (self.catalog.codes)(c).map_err(|e| Diag::new(col.span, format!("cannot read the codes of `{c}`: {e}")))?
        } else {
            return Ok(());
        };
        for (lit, v) in lits.iter().zip(values) {
            let RExpr::Str(s) = v else { continue };
            if known.iter().any(|k| k == s) || self.top_dim.as_deref() == Some(c.as_str()) && s == "others" {
                continue;
            }
            let mut d = Diag::new(lit.span, self.unknown_code(c, s));
            if self.group_table_of(c).is_some() {
                d.message = format!("unknown group {s:?} in `{c}`");
            }
            let trimmed = s.trim();
            if trimmed != s && known.iter().any(|k| k == trimmed) {
                d = d.hint(format!("codes are compared exactly; did you mean {trimmed:?}?"));
            } else if let Some(sug) = closest(s, known.iter().map(String::as_str)) {
                d = d.hint(format!("did you mean {sug:?}?"));
            } else if known.len() <= 12 {
                d = d.hint(format!("codes: {}", known.join(", ")));
            }
            return Err(d);
        }
        Ok(())
    }

    /// The message for a literal `code` of column `dim` that no stored row has.
    fn unknown_code(&self, dim: &str, code: &str) -> String {
        format!(
            "unknown {dim} code {:?}: no row of {} has it",
            crate::error::shown(code),
            self.catalog.manifest.dataset
        )
    }

    fn group_table_of(&self, alias: &str) -> Option<&crate::store::GroupTable> {
        let table = self.alias_tables.get(alias)?;
        self.catalog.groups.tables.iter().find(|t| t.name == *table)
    }
}

fn show_expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Col(c) => c.clone(),
        _ => "the value".into(),
    }
}

fn period_literal(text: &str, span: Span) -> Result<Period, Diag> {
    Period::parse(text).map_err(|e| Diag::new(span, format!("bad period {text}: {}", e.0)))
}
