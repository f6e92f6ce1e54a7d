//! The Plan: a query after name and type resolution, before polars.
//!
//! It says exactly what will be computed, in tradeql's words (keys, aggregates,
//! measures keyed by calendar), so it can be printed by `tradeql explain` and
//! tested without polars' own plan text.

use super::ast::BinOp;
use crate::period::Frequency;
use std::fmt;

/// Calendar roll-up of the grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeKey {
    Year,
    /// January-June and July-December (`2024-H1`).
    Half,
    Quarter,
    Month,
}

impl TimeKey {
    /// Months in one period of the roll-up.
    pub fn months(self) -> u32 {
        match self {
            TimeKey::Year => 12,
            TimeKey::Half => 6,
            TimeKey::Quarter => 3,
            TimeKey::Month => 1,
        }
    }

    /// Whether the roll-up is the data's own frequency (nothing to roll up).
    pub fn is(self, data: Frequency) -> bool {
        self.months() == data.months()
    }

    /// The output column that shows the period.
    pub fn column(self) -> &'static str {
        match self {
            TimeKey::Year => "year",
            TimeKey::Half => "half",
            TimeKey::Quarter => "quarter",
            TimeKey::Month => "period",
        }
    }
}

/// A typed, resolved expression. Parameters are already substituted.
#[derive(Debug, Clone, PartialEq)]
pub enum RExpr {
    Num(f64),
    Str(String),
    /// A date literal (days since 1970), the first day of a period.
    Date(i32),
    Bool(bool),
    Col(String),
    Neg(Box<RExpr>),
    Not(Box<RExpr>),
    Bin(BinOp, Box<RExpr>, Box<RExpr>),
    In(Box<RExpr>, Vec<RExpr>),
    /// Whether the code column is one of the codes; false (never null) for a
    /// null code. How the aggregate rows of a dimension are told apart.
    IsCode(String, Vec<String>),
    /// lo <= x < hi_exclusive (a range of periods includes the whole last period).
    Between(Box<RExpr>, Box<RExpr>, Box<RExpr>, bool),
    /// chapter(product), heading(product), section(product) (through hs_sections).
    Code(CodeFn, Box<RExpr>),
    /// year(period), quarter(period), month(period)
    Calendar(CalendarFn, Box<RExpr>),
    /// if(cond, then, else)
    If(Box<RExpr>, Box<RExpr>, Box<RExpr>),
    /// convert(x, "USD"): x at its row's period rate, from the dataset's currency.
    Convert(Box<RExpr>, String),
    Measure(Box<Measure>),
}

impl RExpr {
    /// Whether `pred` holds for this expression or any expression inside it,
    /// visited outside in (stops at the first hit). Measures are leaves: their
    /// arguments belong to the aggregated rows.
    pub fn any(&self, pred: &mut impl FnMut(&RExpr) -> bool) -> bool {
        if pred(self) {
            return true;
        }
        match self {
            RExpr::Neg(e) | RExpr::Not(e) | RExpr::Code(_, e) | RExpr::Calendar(_, e) | RExpr::Convert(e, _) => {
                e.any(pred)
            }
            RExpr::Bin(_, a, b) => a.any(pred) || b.any(pred),
            RExpr::In(e, list) => e.any(pred) || list.iter().any(|x| x.any(pred)),
            RExpr::Between(e, a, b, _) | RExpr::If(e, a, b) => e.any(pred) || a.any(pred) || b.any(pred),
            RExpr::IsCode(c, _) => pred(&RExpr::Col(c.clone())),
            RExpr::Num(_) | RExpr::Str(_) | RExpr::Date(_) | RExpr::Bool(_) | RExpr::Col(_) | RExpr::Measure(_) => {
                false
            }
        }
    }

    /// This expression with each outermost measure (but unit_value, a ratio
    /// of aggregates) replaced by what `f` makes of it, left to right.
    pub fn replace_measures<E>(&self, f: &mut impl FnMut(&RExpr, &Measure) -> Result<RExpr, E>) -> Result<RExpr, E> {
        let mut go = |e: &RExpr| e.replace_measures(f).map(Box::new);
        Ok(match self {
            RExpr::Measure(m) if !matches!(m.as_ref(), Measure::UnitValue) => return f(self, m),
            RExpr::Neg(a) => RExpr::Neg(go(a)?),
            RExpr::Not(a) => RExpr::Not(go(a)?),
            RExpr::Calendar(c, a) => RExpr::Calendar(*c, go(a)?),
            RExpr::Bin(op, l, r) => {
                let l = go(l)?;
                RExpr::Bin(*op, l, go(r)?)
            }
            RExpr::In(a, list) => {
                let a = go(a)?;
                RExpr::In(a, list.iter().map(|x| go(x).map(|b| *b)).collect::<Result<_, E>>()?)
            }
            RExpr::Between(a, lo, hi, excl) => {
                let (a, lo) = (go(a)?, go(lo)?);
                RExpr::Between(a, lo, go(hi)?, *excl)
            }
            RExpr::If(c, t, e) => {
                let (c, t) = (go(c)?, go(t)?);
                RExpr::If(c, t, go(e)?)
            }
            other => other.clone(),
        })
    }

    /// Whether the expression reads column `name`.
    pub fn mentions(&self, name: &str) -> bool {
        self.any(&mut |e| matches!(e, RExpr::Col(c) if c == name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarFn {
    Year,
    Quarter,
    Month,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeFn {
    Chapter,
    Heading,
    Section,
    /// The name of a code, from the store's names table of its dimension.
    Name,
}

/// How far back a comparison looks: whole years, or periods of the roll-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Back {
    Years(u32),
    Periods(u32),
}

impl Back {
    /// The offset in months, for a roll-up of `period_months` months.
    pub fn months(self, period_months: i32) -> i32 {
        match self {
            Back::Years(n) => 12 * n as i32,
            Back::Periods(n) => period_months * n as i32,
        }
    }

    /// "a year before", "4 years before", "before": how a warning names the
    /// period compared with ("the period a year before").
    pub fn text(self) -> String {
        match self {
            Back::Years(1) => "a year before".into(),
            Back::Years(n) => format!("{n} years before"),
            Back::Periods(1) => "before".into(),
            Back::Periods(n) => format!("{n} periods before"),
        }
    }
}

/// What a comparison with an earlier value computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// x / x before − 1
    Growth,
    /// x − x before
    Change,
    /// (x − x before) × 100, for a rate
    Points,
}

/// The aggregate row a share or contribution divides by: the stored rows
/// whose `dim` is `code` (a national row, the world row), read with the
/// query's filters except those on `dim` (which select the members shown).
#[derive(Debug, Clone, PartialEq)]
pub struct TotalRow {
    pub dim: String,
    pub code: String,
}

/// A trade measure (README, Measures), computed on the aggregated rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    /// A comparison with the value `back` earlier, keyed by calendar, named as
    /// the query wrote it: yoy(x, 4), change(x), pop_change(x), pop_pp(s).
    Versus {
        x: RExpr,
        back: Back,
        how: Compare,
        name: &'static str,
    },
    Yoy(RExpr),
    Pop(RExpr),
    /// x, within, and the row whose total it divides by (`share(value,
    /// region = "CN")`: the national row), instead of the base rows'.
    Share(RExpr, Vec<String>, Option<TotalRow>),
    Pp(RExpr),
    Contribution(RExpr, Vec<String>, Option<TotalRow>),
    Ytd(RExpr),
    Rolling(RExpr, usize, bool),
    Rank(RExpr, Vec<String>),
    High(RExpr, usize),
    Record(RExpr),
    Streak(RExpr),
    UnitValue,
    /// x as first published: computed the same way from each period's rows
    /// in the first kept version that held the period.
    FirstRelease(RExpr),
}

impl Measure {
    /// For a measure that compares a value with an earlier one: the value,
    /// how far back, and what it computes.
    pub fn comparison(&self) -> Option<(&RExpr, Back, Compare)> {
        Some(match self {
            Measure::Yoy(x) => (x, Back::Years(1), Compare::Growth),
            Measure::Pop(x) => (x, Back::Periods(1), Compare::Growth),
            Measure::Pp(x) => (x, Back::Years(1), Compare::Points),
            Measure::Versus { x, back, how, .. } => (x, *back, *how),
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Measure::Yoy(_) => "yoy",
            Measure::Pop(_) => "pop",
            Measure::Share(..) => "share",
            Measure::Pp(_) => "pp",
            Measure::Contribution(..) => "contribution",
            Measure::Ytd(_) => "ytd",
            Measure::Rolling(_, _, false) => "rolling",
            Measure::Rolling(_, _, true) => "rolling_mean",
            Measure::Rank(..) => "rank",
            Measure::High(..) => "high",
            Measure::Record(_) => "record",
            Measure::Streak(_) => "streak",
            Measure::UnitValue => "unit_value",
            Measure::FirstRelease(_) => "first_release",
            Measure::Versus { name, .. } => name,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    Sum,
    Mean,
    Min,
    Max,
    Count,
    CountDistinct,
}

impl AggFunc {
    pub fn parse(name: &str) -> Option<AggFunc> {
        Some(match name {
            "sum" => AggFunc::Sum,
            "mean" => AggFunc::Mean,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "count" => AggFunc::Count,
            "count_distinct" => AggFunc::CountDistinct,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Sum => "sum",
            AggFunc::Mean => "mean",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Count => "count",
            AggFunc::CountDistinct => "count_distinct",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    pub name: String,
    pub func: AggFunc,
    pub arg: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupMap {
    pub dim: String,
    pub table: String,
    /// File of the table, relative to the store root.
    pub path: String,
    pub alias: String,
    /// Membership as of this date (days), or as of each row's period.
    pub as_of: Option<i32>,
}

/// How a number is shown in a table (machine formats stay exact).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Pct,
    /// A percentage with two decimals (a share quoted as 15.94%).
    Pct2,
    /// Scientific notation with three significant digits (a relative difference).
    Sci,
    Pp,
    Scale(f64, &'static str),
    Int,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "pct" => Format::Pct,
            "pct2" => Format::Pct2,
            "sci" => Format::Sci,
            "pp" => Format::Pp,
            "thousand" => Format::Scale(1e3, "thousand"),
            "million" => Format::Scale(1e6, "million"),
            "billion" => Format::Scale(1e9, "billion"),
            "trillion" => Format::Scale(1e12, "trillion"),
            "int" => Format::Int,
            _ => return None,
        })
    }
    pub const NAMES: [&str; 9] = ["pct", "pct2", "sci", "pp", "thousand", "million", "billion", "trillion", "int"];
}

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub expr: RExpr,
    pub format: Option<Format>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub dataset: String,
    pub frequency: Frequency,
    /// Aggregate rows left out, per dimension (the dimension holds aggregate
    /// and member codes, and no filter names its codes): their filters are
    /// the first `row_filters`.
    pub left_out: Vec<(String, Vec<String>)>,
    /// The dataset's dimensions that hold aggregate and member codes, with
    /// their aggregate codes (empty when the query tests `aggregate` itself).
    pub mixed: Vec<(String, Vec<String>)>,
    /// Dimensions whose aggregate and member rows the query's filters both
    /// select, and which no `by` key keeps apart: sums add them together.
    pub summed_together: Vec<(String, Vec<String>)>,
    /// The query's calendar filters, and the roll-up periods (first days)
    /// the dataset holds that they leave out: a comparison with one of them
    /// says that the filter removed it (set when the query is loaded).
    pub cut: Option<(String, Vec<i32>)>,
    /// Warnings known before the query runs (a group table's member that
    /// is no code of the dataset, nor of ISO 3166).
    pub warnings: Vec<String>,
    /// Notes known before the query runs (the gaps among the periods it reads).
    pub notes: Vec<String>,
    pub row_filters: Vec<RExpr>,
    pub derives: Vec<(String, RExpr)>,
    pub groups: Vec<GroupMap>,
    /// `None`: no `by` stage; rows are listed, not aggregated.
    pub time: Option<TimeKey>,
    /// `by ytd`: years, each cut to the months up to the last one the query
    /// covers (`ytd_through`, set when the query is loaded against the store,
    /// which also adds the filter `month <= ytd_through`).
    pub ytd: bool,
    pub ytd_through: Option<u32>,
    /// Whether a measure reads `first_release()`.
    pub reads_first_release: bool,
    /// Where each period was first published: the kept version that first
    /// held it, with those periods (days). Set when the query is loaded.
    pub first_releases: Vec<(crate::store::Manifest, Vec<i32>)>,
    pub keys: Vec<String>,
    pub aggs: Vec<Agg>,
    pub top: Option<(usize, String, String)>,
    pub post_derives: Vec<(String, RExpr)>,
    pub outputs: Vec<Output>,
    pub post_filters: Vec<RExpr>,
    pub sort: Vec<(String, bool)>,
    pub limit: Option<usize>,
    /// Names of the group tables in the store, for `section()`.
    pub hs_sections: Option<String>,
    /// The rates table (relative to `_groups/`) and the dataset's currency, for convert().
    pub rates: Option<(String, String)>,
    /// The query's `chart` stage, if any.
    pub chart: Option<ChartOptions>,
    /// The dataset's further measures (stored after `aggregate`).
    pub measures: Vec<String>,
    /// For each dimension name() reads: its names table (relative to `_groups/`).
    pub names: Vec<(String, String)>,
    /// The dataset's currency and quantity unit, and its further measures'
    /// units, for the metadata of Parquet results.
    pub currency: Option<String>,
    pub quantity_unit: Option<String>,
    pub measure_units: Vec<(String, String)>,
}

impl Plan {
    /// A plan of `dataset` that does nothing yet: the resolver fills it.
    pub fn new(dataset: String, frequency: Frequency) -> Plan {
        Plan {
            dataset,
            frequency,
            left_out: Vec::new(),
            mixed: Vec::new(),
            summed_together: Vec::new(),
            cut: None,
            warnings: Vec::new(),
            notes: Vec::new(),
            row_filters: Vec::new(),
            derives: Vec::new(),
            groups: Vec::new(),
            time: None,
            ytd: false,
            ytd_through: None,
            reads_first_release: false,
            first_releases: Vec::new(),
            keys: Vec::new(),
            aggs: Vec::new(),
            top: None,
            post_derives: Vec::new(),
            outputs: Vec::new(),
            post_filters: Vec::new(),
            sort: Vec::new(),
            limit: None,
            hs_sections: None,
            rates: None,
            chart: None,
            measures: Vec::new(),
            names: Vec::new(),
            currency: None,
            quantity_unit: None,
            measure_units: Vec::new(),
        }
    }

    /// A plan that only says how to show the columns of a frame made
    /// elsewhere (`reconcile`): each named column with its format.
    pub fn for_display(formats: &[(&str, Option<Format>)]) -> Plan {
        let mut plan = Plan::new(String::new(), Frequency::Month);
        plan.outputs = formats
            .iter()
            .map(|(name, format)| Output {
                name: name.to_string(),
                expr: RExpr::Col(name.to_string()),
                format: *format,
            })
            .collect();
        plan
    }

    /// The visible columns of an aggregated result: the period, the keys, then
    /// what `show` asks for (or the aggregates).
    pub fn result_columns(&self) -> Vec<String> {
        let mut names: Vec<String> = self.time.iter().map(|t| t.column().to_string()).collect();
        names.extend(self.keys.iter().cloned());
        if self.outputs.is_empty() {
            names.extend(self.aggs.iter().filter(|a| !a.name.starts_with("__")).map(|a| a.name.clone()));
        } else {
            let shown: Vec<String> =
                self.outputs.iter().filter(|o| !names.contains(&o.name)).map(|o| o.name.clone()).collect();
            names.extend(shown);
        }
        names
    }

    /// The result columns whose values are whole numbers (counts, ranks,
    /// streaks): written as integers in every format and by every backend.
    pub fn integer_columns(&self) -> Vec<String> {
        let is_count = |name: &str| {
            self.aggs.iter().any(|a| a.name == name && matches!(a.func, AggFunc::Count | AggFunc::CountDistinct))
        };
        if self.outputs.is_empty() {
            return self.aggs.iter().filter(|a| is_count(&a.name)).map(|a| a.name.clone()).collect();
        }
        self.outputs
            .iter()
            .filter(|o| match &o.expr {
                RExpr::Col(c) => is_count(c) && !self.post_derives.iter().any(|(n, _)| n == c),
                RExpr::Measure(m) => matches!(m.as_ref(), Measure::Rank(..) | Measure::Streak(_)),
                _ => false,
            })
            .map(|o| o.name.clone())
            .collect()
    }

    /// The order of an aggregated result: the `sort` stage's keys, then the
    /// calendar key (`__t`) and the grouping keys it does not name.
    pub fn result_order(&self) -> Vec<(String, bool)> {
        let mut by: Vec<(String, bool)> = self.sort.clone();
        let mut defaults: Vec<String> = self.time.iter().map(|_| "__t".to_string()).collect();
        defaults.extend(self.keys.iter().cloned());
        for d in defaults {
            if !by.iter().any(|(c, _)| *c == d) {
                // A `top`'s members by size, then "others" (`__is_others`).
                if let Some((_, dim, size)) = &self.top
                    && *dim == d
                {
                    by.push(("__is_others".to_string(), false));
                    if !by.iter().any(|(c, _)| c == size) {
                        by.push((size.clone(), true));
                    }
                }
                by.push((d, false));
            }
        }
        by
    }

    /// For share(x) and contribution(x): the aggregate column x (a sum) and
    /// the row column it sums, whose total over the base rows they divide by.
    pub fn sum_columns<'p>(&'p self, x: &'p RExpr, measure: &str) -> crate::Result<(&'p String, String)> {
        let RExpr::Col(agg_name) = x else { return Err(crate::Error::internal(format!("{measure} of a non-column"))) };
        let row_col = self
            .aggs
            .iter()
            .find(|g| g.name == *agg_name && g.func == AggFunc::Sum)
            .and_then(|g| g.arg.clone())
            .ok_or_else(|| crate::Error::internal(format!("{measure} of a column that is not a sum")))?;
        Ok((agg_name, row_col))
    }
}

impl fmt::Display for RExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RExpr::Num(n) => write!(f, "{n}"),
            RExpr::Str(s) => write!(f, "{s:?}"),
            RExpr::Date(d) => write!(f, "{}", crate::period::Period::from_days(*d, Frequency::Month)),
            RExpr::Bool(b) => write!(f, "{b}"),
            RExpr::Col(c) => write!(f, "{c}"),
            RExpr::Neg(e) => write!(f, "-{e}"),
            RExpr::Not(e) => write!(f, "not {e}"),
            RExpr::Bin(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            RExpr::In(e, list) => {
                write!(f, "{e} in (")?;
                for (i, x) in list.iter().enumerate() {
                    write!(f, "{}{x}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, ")")
            }
            RExpr::IsCode(c, codes) => {
                let quoted: Vec<String> = codes.iter().map(|x| format!("{x:?}")).collect();
                write!(f, "{c} in ({})", quoted.join(", "))
            }
            RExpr::Between(e, lo, hi, excl) => write!(f, "{lo} <= {e} {} {hi}", if *excl { "<" } else { "<=" }),
            RExpr::Code(c, e) => write!(f, "{}({e})", format!("{c:?}").to_lowercase()),
            RExpr::If(c, a, b) => write!(f, "if({c}, {a}, {b})"),
            RExpr::Convert(e, c) => write!(f, "convert({e}, {c:?})"),
            RExpr::Calendar(c, e) => write!(f, "{}({e})", format!("{c:?}").to_lowercase()),
            RExpr::Measure(m) => {
                write!(f, "{}(", m.name())?;
                match m.as_ref() {
                    Measure::Yoy(x)
                    | Measure::Pop(x)
                    | Measure::Pp(x)
                    | Measure::Ytd(x)
                    | Measure::Record(x)
                    | Measure::Streak(x)
                    | Measure::FirstRelease(x) => write!(f, "{x}")?,
                    Measure::Share(x, w, of) | Measure::Contribution(x, w, of) => {
                        write!(f, "{x}")?;
                        if let Some(t) = of {
                            write!(f, ", {} = {:?}", t.dim, t.code)?;
                        }
                        if !w.is_empty() {
                            write!(f, " within {}", w.join(", "))?;
                        }
                    }
                    Measure::Rank(x, w) => {
                        write!(f, "{x}")?;
                        if !w.is_empty() {
                            write!(f, " within {}", w.join(", "))?;
                        }
                    }
                    Measure::Rolling(x, n, _) | Measure::High(x, n) => write!(f, "{x}, {n}")?,
                    Measure::Versus { x, back: Back::Years(n), .. } if *n > 1 => write!(f, "{x}, {n}")?,
                    Measure::Versus { x, .. } => write!(f, "{x}")?,
                    Measure::UnitValue => write!(f, "value / quantity where quantity > 0")?,
                }
                write!(f, ")")
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "from {} ({}ly)", self.dataset, self.frequency)?;
        for (dim, codes) in &self.left_out {
            writeln!(
                f,
                "  leave out the aggregate rows of {dim} ({}): a `where` naming {dim} codes selects them",
                codes.join(", ")
            )?;
        }
        for g in &self.groups {
            let when = g.as_of.map_or("as of each period".to_string(), |d| {
                format!("as of {}", crate::period::Period::from_days(d, Frequency::Month))
            });
            writeln!(f, "  map {} to {} through group table {} ({when})", g.dim, g.alias, g.table)?;
        }
        for e in &self.row_filters[self.left_out.len()..] {
            writeln!(f, "  filter rows: {e}")?;
        }
        for (n, e) in &self.derives {
            writeln!(f, "  derive {n} = {e}")?;
        }
        if let Some(t) = self.time {
            let first = match self.ytd_through {
                Some(m) => format!("year (calendar, year to date: {})", months_label(m)),
                None => format!("{} (calendar)", t.column()),
            };
            let mut keys = vec![first];
            keys.extend(self.keys.iter().cloned());
            writeln!(f, "group by {}", keys.join(", "))?;
        } else if !self.keys.is_empty() {
            writeln!(f, "group by {}", self.keys.join(", "))?;
        }
        for a in &self.aggs {
            writeln!(f, "  {} = {}({})", a.name, a.func.name(), a.arg.as_deref().unwrap_or(""))?;
        }
        if let Some((n, dim, by)) = &self.top {
            writeln!(f, "top {n} {dim} by {by} per period, the rest as \"others\"")?;
        }
        for (n, e) in &self.post_derives {
            writeln!(f, "derive {n} = {e}")?;
        }
        for o in &self.outputs {
            writeln!(
                f,
                "show {} = {}{}",
                o.name,
                o.expr,
                o.format.map(|x| format!(" as {x:?}").to_lowercase()).unwrap_or_default()
            )?;
            o.expr.any(&mut |e| {
                if let RExpr::Measure(m) = e
                    && let Measure::Share(RExpr::Col(x), within, of) | Measure::Contribution(RExpr::Col(x), within, of) =
                        m.as_ref()
                {
                    if let Some(t) = of {
                        let _ = writeln!(
                            f,
                            "  {}({x}) divides by the total of the rows whose {} is {:?} (the query's filters on {} \
                             left aside){}",
                            m.name(),
                            t.dim,
                            t.code,
                            t.dim,
                            if matches!(m.as_ref(), Measure::Contribution(..)) { ", a year before" } else { "" }
                        );
                        return false;
                    }
                    let column = self.aggs.iter().find(|a| a.name == *x).and_then(|a| a.arg.clone());
                    let per: Vec<String> =
                        self.time.iter().map(|t| t.column().to_string()).chain(within.iter().cloned()).collect();
                    let _ = writeln!(
                        f,
                        "  {}({x}) divides by the total of {} over the stored rows that pass the filters, each \
                         counted once (never a sum of groups){}{}",
                        m.name(),
                        column.unwrap_or_else(|| x.clone()),
                        if per.is_empty() { String::new() } else { format!(", per {}", per.join(" and ")) },
                        if matches!(m.as_ref(), Measure::Contribution(..)) { ", a year before" } else { "" }
                    );
                }
                false
            });
        }
        for e in &self.post_filters {
            writeln!(f, "filter results: {e}")?;
        }
        if !self.sort.is_empty() {
            let keys: Vec<String> =
                self.sort.iter().map(|(c, d)| format!("{c}{}", if *d { " desc" } else { "" })).collect();
            writeln!(f, "sort {}", keys.join(", "))?;
        }
        if let Some(n) = self.limit {
            writeln!(f, "limit {n}")?;
        }
        Ok(())
    }
}

/// "January-October": the months of a year-to-date roll-up through month `last`.
pub fn months_label(last: u32) -> String {
    const NAMES: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let last = last.clamp(1, 12) as usize;
    if last == 1 { NAMES[0].to_string() } else { format!("{}-{}", NAMES[0], NAMES[last - 1]) }
}

/// What the query's `chart` stage asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChartOptions {
    pub kind: Option<ChartKind>,
    pub title: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    Line,
    Bar,
}
