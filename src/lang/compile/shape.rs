//! What a compiled query's result carries besides its columns, and the rules both
//! backends (polars here, SQL in `sql/`) read off the plan the same way: warning
//! columns and their kinds, partial periods, the measures a `top` folds.

use super::*;

/// What a result frame carries besides its visible columns: the warning
/// columns and the columns that label a row in a warning. The polars and SQL
/// backends both describe their results this way.
#[derive(Debug, Clone, Default)]
pub struct ResultShape {
    pub warnings: Vec<WarningColumn>,
    /// The column that names each row's period, for warnings.
    pub time_label: Option<String>,
    /// The key columns that name a row's series, for warnings.
    pub key_labels: Vec<String>,
    /// Warnings known before the query ran (see [`Plan::warnings`]).
    pub known_warnings: Vec<String>,
    /// Notes known before the query ran (see [`Plan::notes`]).
    pub known_notes: Vec<String>,
    /// The key columns that are group aliases (`bloc`): a group missing
    /// from some periods is named.
    pub group_keys: Vec<String>,
    /// Aggregate rows the query left out, per dimension (see [`Plan::left_out`]).
    pub left_out: Vec<(String, Vec<String>)>,
    /// Aggregate rows the query's filters select beside their members (see
    /// [`Plan::summed_together`]).
    pub summed_together: Vec<(String, Vec<String>)>,
}

impl ResultShape {
    /// The shape of `plan`'s result, with its warning columns `warnings`
    /// (the same for the polars and the SQL backends).
    pub fn of(plan: &Plan, warnings: Vec<WarningColumn>) -> ResultShape {
        ResultShape {
            warnings,
            time_label: plan.time.map(|t| t.column().to_string()),
            key_labels: plan.keys.clone(),
            known_warnings: plan.warnings.clone(),
            known_notes: plan.notes.clone(),
            group_keys: plan.groups.iter().map(|g| g.alias.clone()).filter(|a| plan.keys.contains(a)).collect(),
            left_out: plan.left_out.clone(),
            summed_together: plan.summed_together.clone(),
        }
    }
}

/// A boolean (or count) column that flags rows to warn about.
#[derive(Debug, Clone)]
pub struct WarningColumn {
    pub column: String,
    pub kind: WarningKind,
}

#[derive(Debug, Clone)]
pub enum WarningKind {
    /// The comparison period of a measure is missing.
    MissingBase { measure: String, offset: String },
    /// The comparison period is stored, but the query's calendar filter
    /// (`filter`) leaves it out.
    BaseFiltered { measure: String, offset: String, filter: String },
    /// A roll-up period holds fewer sub-periods than a full one (a note).
    Partial { expected: u32, unit: &'static str },
    /// A measure compares two roll-up periods that hold different numbers
    /// of the dataset's periods (a partial year against a full one).
    Unequal { measure: String, offset: String, unit: &'static str },
    /// Year-to-date that skips a missing month.
    YtdGap { measure: String },
    /// "others" of a `top`, whose non-additive measures are null.
    Others { measures: String },
    /// The named total row of a share (`share(value, region = "CN")`) has no
    /// row in the period.
    NoTotalRow { measure: String, row: String },
}

/// The currencies convert() targets, other than the dataset's own, sorted.
pub(crate) fn convert_targets(plan: &Plan, source: &str) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    for x in plan.derives.iter().map(|(_, x)| x).chain(&plan.row_filters) {
        x.any(&mut |e| {
            if let RExpr::Convert(_, t) = e {
                targets.push(t.clone());
            }
            false
        });
    }
    targets.retain(|t| t != source);
    targets.sort();
    targets.dedup();
    targets
}

/// The warning on roll-up periods that hold fewer of the dataset's periods
/// than a full one (12 months in a year; in a year to date, the months through
/// `ytd_through`), read from `column` (the count of stored periods).
pub(crate) fn partial_warning(plan: &Plan, t: TimeKey, column: String) -> WarningColumn {
    let expected = match plan.ytd_through {
        Some(m) => m / plan.frequency.months(),
        None => t.months() / plan.frequency.months(),
    };
    WarningColumn { column, kind: WarningKind::Partial { expected, unit: sub_periods(plan) } }
}

/// What the dataset's periods are called in warnings: months, quarters, years.
pub(crate) fn sub_periods(plan: &Plan) -> &'static str {
    match plan.frequency {
        Frequency::Month => "months",
        Frequency::Quarter => "quarters",
        Frequency::Year => "years",
    }
}

/// `top` sums the rest into "others", so every aggregate must be a sum or a count.
pub(crate) fn check_top_aggregates(plan: &Plan) -> Result<()> {
    for a in &plan.aggs {
        if !matches!(a.func, AggFunc::Sum | AggFunc::Count) {
            return Err(Error::usage(format!(
                "`top` sums the rest into \"others\", which {}({}) cannot be; use sum or count",
                a.func.name(),
                a.arg.as_deref().unwrap_or("")
            )));
        }
    }
    Ok(())
}

/// A comparison measure as the query wrote it, for warnings: `yoy(value)`,
/// `change(total, 4)`, `pop(value)`.
pub(crate) fn m_text(m: &Measure, arg: &RExpr) -> String {
    match m {
        Measure::Versus { back: Back::Years(n), .. } if *n > 1 => format!("{}({}, {n})", m.name(), display_arg(arg)),
        _ => format!("{}({})", m.name(), display_arg(arg)),
    }
}

/// The hidden measure columns of a `top` query: those whose "others" value
/// is the sum of its members' (`summed`), and those left null for "others"
/// (`dropped`, with the measures as the query wrote them).
#[derive(Default)]
pub(crate) struct FoldedMeasures {
    pub(crate) summed: Vec<String>,
    /// Warning columns of the dropped measures: false for "others".
    pub(crate) silenced: Vec<String>,
    pub(crate) dropped: Vec<String>,
    pub(crate) dropped_names: Vec<String>,
}

/// What `top` computes before it folds (on both backends): the measures'
/// hidden columns, and what is left of each shown column, derived column
/// and filter.
pub(crate) struct TopHidden {
    pub(crate) folded: FoldedMeasures,
    pub(crate) post_derives: Vec<(String, RExpr)>,
    pub(crate) outputs: Vec<(String, RExpr)>,
    pub(crate) filters: Vec<RExpr>,
}

impl FoldedMeasures {
    /// Records measure `m` (written `x`), computed into column `name` with
    /// the warning columns `warnings`.
    pub(crate) fn add(
        &mut self,
        m: &Measure,
        name: &str,
        x: &RExpr,
        warnings: impl Iterator<Item = String>,
        dim: &str,
    ) {
        // A share within the folded dimension is each member's own (1): not additive.
        let additive = match m {
            Measure::Share(_, within, _) | Measure::Contribution(_, within, _) => !within.iter().any(|w| w == dim),
            _ => false,
        };
        if additive {
            self.summed.push(name.to_string());
            return;
        }
        // Its warnings do not apply to "others", where it is null.
        self.silenced.extend(warnings);
        self.dropped.push(name.to_string());
        let text = x.to_string();
        if !self.dropped_names.contains(&text) {
            self.dropped_names.push(text);
        }
    }
}

/// Filter `x` without its `and` terms that read column `dim` (None when
/// nothing is left): the filters of a total row (`share(value, region =
/// "CN")`) are the query's but those that pick the members of `dim` shown.
pub(crate) fn without_terms_on(x: &RExpr, dim: &str) -> Option<RExpr> {
    let mut terms = Vec::new();
    split_and(x, &mut terms);
    terms
        .into_iter()
        .filter(|t| !t.mentions(dim))
        .cloned()
        .reduce(|a, b| RExpr::Bin(BinOp::And, Box::new(a), Box::new(b)))
}

/// The terms of `x` joined by `and`, in order (each filter alone is
/// evaluated on the values of one column).
pub(super) fn split_and<'a>(x: &'a RExpr, out: &mut Vec<&'a RExpr>) {
    match x {
        RExpr::Bin(BinOp::And, a, b) => {
            split_and(a, out);
            split_and(b, out);
        }
        _ => out.push(x),
    }
}

/// An aggregate of the plan as the pushdown computes it, if it can.
/// Whether a sum of `a` is null when no row of the group has a value (a
/// further measure, or a column derived from one: September's year to date
/// is not reported, not zero). Value and quantity keep their sum of none as 0.
pub(crate) fn sums_to_null(a: &Agg) -> bool {
    a.func == AggFunc::Sum
        && !a.name.starts_with("__uv_")
        && a.arg.as_deref().is_some_and(|c| c != "value" && c != "quantity")
}

pub(crate) fn fx_column(target: &str) -> String {
    format!("__fx_{target}")
}

pub(super) fn display_arg(x: &RExpr) -> String {
    x.to_string()
}

/// What a row filter says about the calendar: the filter itself when it
/// reads only the calendar; for `a and b`, the bounds of both sides (`region
/// = "X" and period <= 2024-06` is bounded by `period <= 2024-06`); for `a or
/// b`, either side's bound, when both have one; None when it does not bound
/// the calendar. The periods it passes include every period the filter can
/// pass, whatever the rows' other columns hold.
pub(crate) fn calendar_bound(x: &RExpr) -> Option<RExpr> {
    if calendar_only(x) {
        return Some(x.clone());
    }
    match x {
        RExpr::Bin(BinOp::And, a, b) => match (calendar_bound(a), calendar_bound(b)) {
            (Some(a), Some(b)) => Some(RExpr::Bin(BinOp::And, Box::new(a), Box::new(b))),
            (Some(one), None) | (None, Some(one)) => Some(one),
            (None, None) => None,
        },
        RExpr::Bin(BinOp::Or, a, b) => {
            Some(RExpr::Bin(BinOp::Or, Box::new(calendar_bound(a)?), Box::new(calendar_bound(b)?)))
        }
        _ => None,
    }
}

/// Whether an expression reads nothing but the calendar (period, year, quarter, month).
pub(crate) fn calendar_only(x: &RExpr) -> bool {
    !x.any(&mut |e| match e {
        RExpr::Col(c) => !["period", "year", "quarter", "month"].contains(&c.as_str()),
        RExpr::Code(..) | RExpr::Measure(_) => true,
        _ => false,
    })
}

pub(super) fn uses_code(x: &RExpr, f: CodeFn) -> bool {
    x.any(&mut |e| matches!(e, RExpr::Code(g, _) if *g == f))
}

/// The column a names join adds for `dim`.
pub(crate) fn name_column(dim: &str) -> String {
    format!("__name_{dim}")
}

/// The dimensions whose names (`name(DIM)`) `exprs` read, once each.
pub(crate) fn name_dims(exprs: &[&RExpr]) -> Vec<String> {
    let mut dims = Vec::new();
    for x in exprs {
        x.any(&mut |e| {
            if let RExpr::Code(CodeFn::Name, a) = e
                && let RExpr::Col(d) = a.as_ref()
                && !dims.contains(d)
            {
                dims.push(d.clone());
            }
            false
        });
    }
    dims
}

/// The expressions evaluated on aggregated rows: post-derives, outputs, post-filters.
pub(crate) fn post_exprs(plan: &Plan) -> Vec<&RExpr> {
    plan.post_derives
        .iter()
        .map(|(_, x)| x)
        .chain(plan.outputs.iter().map(|o| &o.expr))
        .chain(plan.post_filters.iter())
        .collect()
}

pub(crate) fn uses_section(plan: &Plan) -> bool {
    plan.derives.iter().any(|(_, x)| uses_code(x, CodeFn::Section))
        || plan.row_filters.iter().any(|x| uses_code(x, CodeFn::Section))
}
