//! Every measure checked against a hand-written computation on generated data
//! with missing cells (and so missing months) and overlapping partner groups.
//! The reference reads the stored rows with polars and computes each measure
//! with plain loops and maps, keyed by calendar, independently of tradeql's
//! compiler; results must agree to 1e-9 relative.

use crate::common::*;
use polars::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One stored row: (year, month, partner, flow, product, value, quantity).
type Row = (i32, u32, String, String, String, f64, Option<f64>);
/// One membership: (group, member, valid_from as (year, month), open if None).
type Membership = (String, String, Option<(i32, u32)>);

struct Panel {
    _dir: tempfile::TempDir,
    store: PathBuf,
    rows: Vec<Row>,
    groups: Vec<Membership>,
}

/// A small panel: 12 partners, 6 products, 30 months, 15% of cells present
/// (so partners miss whole months).
fn panel() -> &'static Panel {
    static PANEL: OnceLock<Panel> = OnceLock::new();
    PANEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        gen_into(&store, "--partners 12 --products 6 --months 30 --density 0.15 --seed 11 --start 2022-01");
        let files = format!("{}/trade/**/*.parquet", store.display());
        let df =
            LazyFrame::scan_parquet(PlRefPath::new(&files), ScanArgsParquet::default()).unwrap().collect().unwrap();
        let period = df.column("period").unwrap().date().unwrap().physical().clone();
        let strs = |c: &str| df.column(c).unwrap().str().unwrap().clone();
        let (partner, flow, product) = (strs("partner"), strs("flow"), strs("product"));
        let value = df.column("value").unwrap().f64().unwrap().clone();
        let quantity = df.column("quantity").unwrap().f64().unwrap().clone();
        let rows = (0..df.height())
            .map(|i| {
                let (y, m, _) = tradeql::period::civil_from_days(period.get(i).unwrap());
                (
                    y,
                    m,
                    partner.get(i).unwrap().into(),
                    flow.get(i).unwrap().into(),
                    product.get(i).unwrap().into(),
                    value.get(i).unwrap(),
                    quantity.get(i),
                )
            })
            .collect();
        let gdir = store.join("_groups");
        let gfile = std::fs::read_dir(&gdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "parquet"))
            .unwrap();
        let g = LazyFrame::scan_parquet(PlRefPath::new(gfile.to_str().unwrap()), ScanArgsParquet::default())
            .unwrap()
            .collect()
            .unwrap();
        let (gg, gm) =
            (g.column("group").unwrap().str().unwrap().clone(), g.column("member").unwrap().str().unwrap().clone());
        let from = g.column("valid_from").unwrap().date().unwrap().physical().clone();
        let groups = (0..g.height())
            .map(|i| {
                let f = from.get(i).map(|d| {
                    let (y, m, _) = tradeql::period::civil_from_days(d);
                    (y, m)
                });
                (gg.get(i).unwrap().to_string(), gm.get(i).unwrap().to_string(), f)
            })
            .collect();
        Panel { _dir: dir, store, rows, groups }
    })
}

/// Runs query text on the panel; rows as column -> text.
fn run(text: &str) -> Vec<BTreeMap<String, String>> {
    let p = panel();
    let dir = tempfile::tempdir().unwrap();
    let q = write(dir.path(), "q.tql", text);
    csv_rows(&ok(&["run", s(&q), "--store", s(&p.store), "--format", "csv"]))
}

fn close(got: &str, want: Option<f64>, what: &str) {
    match (got, want) {
        ("", None) => {}
        (g, Some(w)) if !g.is_empty() => {
            let g: f64 = g.parse().unwrap();
            assert!((g - w).abs() <= 1e-9 * w.abs().max(1e-12), "{what}: got {g}, want {w}");
        }
        (g, w) => panic!("{what}: got {g:?}, want {w:?}"),
    }
}

type Key = (i32, u32, String);

/// value summed by (year, month, partner).
fn monthly_by_partner() -> BTreeMap<Key, f64> {
    let mut m = BTreeMap::new();
    for (y, mo, p, _, _, v, _) in &panel().rows {
        *m.entry((*y, *mo, p.clone())).or_insert(0.0) += v;
    }
    m
}

fn yearly_by_partner() -> BTreeMap<(i32, String), f64> {
    let mut m = BTreeMap::new();
    for (y, _, p, _, _, v, _) in &panel().rows {
        *m.entry((*y, p.clone())).or_insert(0.0) += v;
    }
    m
}

fn period_of(y: i32, m: u32) -> String {
    format!("{y}-{m:02}-01")
}

fn back(y: i32, m: u32, months: i32) -> (i32, u32) {
    let idx = y * 12 + m as i32 - 1 - months;
    (idx.div_euclid(12), (idx.rem_euclid(12) + 1) as u32)
}

#[test]
fn panel_has_missing_months_and_overlapping_groups() {
    let m = monthly_by_partner();
    let partners: BTreeSet<&String> = m.keys().map(|k| &k.2).collect();
    let cells = partners.len() * 30;
    assert!(m.len() < cells, "some partner-months are missing ({} of {cells})", m.len());
    let g = &panel().groups;
    let in_two = g.iter().filter(|(_, mem, _)| g.iter().filter(|(_, m2, _)| m2 == mem).count() > 1).count();
    assert!(in_two > 0, "groups overlap");
}

#[test]
fn yoy_share_pp_rank_by_year_and_partner() {
    let rows = run(
        "from trade\nby year, partner\nsum value\nshow value, yoy(value), share(value), pp(share(value)), rank(value)",
    );
    let yearly = yearly_by_partner();
    let totals: BTreeMap<i32, f64> = yearly.iter().fold(BTreeMap::new(), |mut t, ((y, _), v)| {
        *t.entry(*y).or_insert(0.0) += v;
        t
    });
    assert_eq!(rows.len(), yearly.len());
    for r in &rows {
        let y: i32 = r["year"].parse().unwrap();
        let p = r["partner"].clone();
        let v = yearly[&(y, p.clone())];
        close(&r["value"], Some(v), "value");
        close(&r["value_yoy"], yearly.get(&(y - 1, p.clone())).map(|b| v / b - 1.0), "yoy");
        let share = |yy: i32| yearly.get(&(yy, p.clone())).map(|x| x / totals[&yy]);
        close(&r["value_share"], share(y), "share");
        close(&r["value_share_pp"], share(y - 1).map(|b| (share(y).unwrap() - b) * 100.0), "pp");
        let rank = 1 + yearly.iter().filter(|((yy, _), x)| *yy == y && **x > v).count();
        close(&r["value_rank"], Some(rank as f64), "rank");
    }
}

#[test]
fn monthly_pop_ytd_rolling_high_record_streak() {
    let rows = run("from trade\nby month, partner\nsum value\n\
         show pop(value), ytd(value), ytd_yoy(value), rolling(value, 3), high(value, 3), record(value), streak(yoy(value) > 0)");
    let m = monthly_by_partner();
    assert_eq!(rows.len(), m.len());
    let ytd = |y: i32, mo: u32, p: &str| -> f64 { (1..=mo).filter_map(|k| m.get(&(y, k, p.to_string()))).sum() };
    for r in &rows {
        let p = r["partner"].clone();
        let (y, mo) = (r["period"][..4].parse::<i32>().unwrap(), r["period"][5..7].parse::<u32>().unwrap());
        assert_eq!(r["period"], period_of(y, mo));
        let v = m[&(y, mo, p.clone())];
        let at = |months: i32| {
            let (yy, mm) = back(y, mo, months);
            m.get(&(yy, mm, p.clone())).copied()
        };
        close(&r["value_pop"], at(1).map(|b| v / b - 1.0), "pop");
        close(&r["value_ytd"], Some(ytd(y, mo, &p)), "ytd");
        // Keyed by calendar, as the benchmark's reference SQL: the year before
        // must have a row for this very month, or the comparison is null.
        let ytd_prev = m.contains_key(&(y - 1, mo, p.clone())).then(|| ytd(y - 1, mo, &p));
        close(&r["value_ytd_yoy"], ytd_prev.map(|b| ytd(y, mo, &p) / b - 1.0), "ytd_yoy");
        let window: Vec<Option<f64>> = (0..3).map(at).collect();
        let full = window.iter().all(Option::is_some);
        close(&r["value_rolling_3"], full.then(|| window.iter().map(|x| x.unwrap()).sum()), "rolling");
        let high = full.then(|| window.iter().all(|x| x.unwrap() <= v));
        assert_eq!(r["value_high_3"], high.map_or(String::new(), |h| h.to_string()), "high {y}-{mo} {p}");
        let earlier: Vec<f64> =
            m.iter().filter(|((yy, mm, pp), _)| *pp == p && (*yy, *mm) < (y, mo)).map(|(_, x)| *x).collect();
        let record = (!earlier.is_empty()).then(|| earlier.iter().all(|x| *x < v));
        assert_eq!(r["value_record"], record.map_or(String::new(), |h| h.to_string()), "record {y}-{mo} {p}");
        // streak: consecutive months, up to this one, with value above the same month a year before.
        let grew = |months: i32| -> bool {
            let (yy, mm) = back(y, mo, months);
            match (m.get(&(yy, mm, p.clone())), m.get(&(yy - 1, mm, p.clone()))) {
                (Some(a), Some(b)) => a / b - 1.0 > 0.0,
                _ => false,
            }
        };
        let streak = (0..).take_while(|k| grew(*k)).count();
        close(&r["streak"], Some(streak as f64), &format!("streak {y}-{mo} {p}"));
    }
}

#[test]
fn groups_overlap_and_contributions_use_the_base_total() {
    let rows = run(
        "from trade\ngroup partner by partner_groups as bloc\nby year, bloc\nsum value\nshow value, yoy(value), contribution(value)",
    );
    let p = panel();
    let member = |g: &str, partner: &str, y: i32, m: u32| {
        p.groups.iter().any(|(gg, mm, from)| gg == g && mm == partner && from.is_none_or(|f| f <= (y, m)))
    };
    let names: BTreeSet<&String> = p.groups.iter().map(|(g, _, _)| g).collect();
    let mut bloc: BTreeMap<(i32, String), f64> = BTreeMap::new();
    let mut total: BTreeMap<i32, f64> = BTreeMap::new();
    for (y, mo, partner, _, _, v, _) in &p.rows {
        *total.entry(*y).or_insert(0.0) += v;
        for g in &names {
            if member(g, partner, *y, *mo) {
                *bloc.entry((*y, g.to_string())).or_insert(0.0) += v;
            }
        }
    }
    assert_eq!(rows.len(), bloc.len());
    let sum_of_blocs: f64 = bloc.values().sum();
    assert!(sum_of_blocs > total.values().sum::<f64>(), "overlapping blocs add up to more than the total");
    for r in &rows {
        let y: i32 = r["year"].parse().unwrap();
        let g = r["bloc"].clone();
        let v = bloc[&(y, g.clone())];
        close(&r["value"], Some(v), "bloc value");
        let prev = bloc.get(&(y - 1, g.clone()));
        close(&r["value_yoy"], prev.map(|b| v / b - 1.0), "bloc yoy");
        close(&r["value_contribution"], prev.map(|b| (v - b) / total[&(y - 1)] * 100.0), "contribution");
    }
}

#[test]
fn contributions_of_a_partition_add_up_to_total_growth() {
    // Property: partners partition the total, so their contributions (pp) sum to
    // the total's growth (%), for every year and for several panels.
    for seed in ["3", "5", "8"] {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        gen_into(&store, &format!("--partners 9 --products 5 --months 36 --density 0.5 --seed {seed}"));
        let q = write(dir.path(), "c.tql", "from trade\nby year, partner\nsum value\nshow contribution(value)");
        let t = write(dir.path(), "t.tql", "from trade\nby year\nsum value\nshow yoy(value)");
        let parse = |path: &Path| csv_rows(&ok(&["run", s(path), "--store", s(&store), "--format", "csv"]));
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        let mut entrants = BTreeSet::new();
        for r in parse(&q) {
            match r["value_contribution"].parse::<f64>() {
                Ok(c) => *sums.entry(r["year"].clone()).or_insert(0.0) += c,
                Err(_) => {
                    entrants.insert(r["year"].clone());
                }
            }
        }
        for r in parse(&t) {
            let Ok(growth) = r["value_yoy"].parse::<f64>() else { continue };
            // A partner with no trade a year before has no contribution (null); the
            // generated panels are dense enough per year that this does not happen.
            assert!(!entrants.contains(&r["year"]), "seed {seed}: a new partner in {}", r["year"]);
            let sum = sums[&r["year"]];
            assert!(
                (sum - growth * 100.0).abs() < 1e-9 * growth.abs().max(1.0) * 100.0,
                "seed {seed} {}: {sum} vs {}",
                r["year"],
                growth * 100.0
            );
        }
    }
}

#[test]
fn top_n_with_others_and_unit_values() {
    let rows = run(
        "from trade\nby year, partner\nagg value = sum(value), quantity = sum(quantity)\ntop 3 partner by value\nshow value, unit_value()",
    );
    let yearly = yearly_by_partner();
    let years: BTreeSet<i32> = yearly.keys().map(|k| k.0).collect();
    for y in years {
        let mut ranked: Vec<(&String, f64)> =
            yearly.iter().filter(|((yy, _), _)| *yy == y).map(|((_, p), v)| (p, *v)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let got: Vec<&BTreeMap<String, String>> = rows.iter().filter(|r| r["year"] == y.to_string()).collect();
        assert_eq!(got.len(), 4, "three partners and others in {y}");
        for (p, v) in &ranked[..3] {
            let r = got.iter().find(|r| r["partner"] == **p).unwrap_or_else(|| panic!("{p} in the top 3 of {y}"));
            close(&r["value"], Some(*v), "top value");
        }
        let others: f64 = ranked[3..].iter().map(|x| x.1).sum();
        close(&got.iter().find(|r| r["partner"] == "others").unwrap()["value"], Some(others), "others");
    }
    // Unit value: value over quantity of the rows that report a quantity.
    let rows = run("from trade\nby year\nsum value\nshow unit_value()");
    for r in rows {
        let y: i32 = r["year"].parse().unwrap();
        let (mut v, mut q) = (0.0, 0.0);
        for (yy, _, _, _, _, value, quantity) in &panel().rows {
            if *yy == y && quantity.is_some_and(|x| x > 0.0) {
                v += value;
                q += quantity.unwrap();
            }
        }
        close(&r["unit_value"], Some(v / q), "unit value");
    }
}

/// value summed by (year, group) with membership as of each row's month, and
/// by (year, group, flow); the base total by year, and by (year, flow).
#[allow(clippy::type_complexity)]
fn blocs_by_year() -> (
    BTreeMap<(i32, String), f64>,
    BTreeMap<(i32, String, String), f64>,
    BTreeMap<i32, f64>,
    BTreeMap<(i32, String), f64>,
) {
    let p = panel();
    let member = |g: &str, partner: &str, y: i32, m: u32| {
        p.groups.iter().any(|(gg, mm, from)| gg == g && mm == partner && from.is_none_or(|f| f <= (y, m)))
    };
    let names: BTreeSet<&String> = p.groups.iter().map(|(g, _, _)| g).collect();
    let (mut bloc, mut bloc_flow, mut total, mut flow_total) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for (y, mo, partner, flow, _, v, _) in &p.rows {
        *total.entry(*y).or_insert(0.0) += v;
        *flow_total.entry((*y, flow.clone())).or_insert(0.0) += v;
        for g in &names {
            if member(g, partner, *y, *mo) {
                *bloc.entry((*y, g.to_string())).or_insert(0.0) += v;
                *bloc_flow.entry((*y, g.to_string(), flow.clone())).or_insert(0.0) += v;
            }
        }
    }
    (bloc, bloc_flow, total, flow_total)
}

#[test]
fn shares_over_overlapping_groups_divide_by_the_base_rows() {
    // share: of all stored rows of the year (each once), not of the sum of
    // the (overlapping) blocs; within bloc: of the bloc's own total; within
    // flow: of the flow's total over all rows.
    let rows = run(
        "from trade\ngroup partner by partner_groups as bloc\nby year, bloc, flow\nsum value\nshow value, all = share(value), in_bloc = share(value within bloc), in_flow = share(value within flow)",
    );
    let (bloc, bloc_flow, total, flow_total) = blocs_by_year();
    assert_eq!(rows.len(), bloc_flow.len());
    let sum_of_blocs: f64 = bloc.values().sum();
    assert!(sum_of_blocs > total.values().sum::<f64>(), "the blocs overlap, so a sum over them counts rows twice");
    for r in &rows {
        let y: i32 = r["year"].parse().unwrap();
        let (g, f) = (r["bloc"].clone(), r["flow"].clone());
        let v = bloc_flow[&(y, g.clone(), f.clone())];
        close(&r["value"], Some(v), "value");
        close(&r["all"], Some(v / total[&y]), "share");
        close(&r["in_bloc"], Some(v / bloc[&(y, g.clone())]), "share within bloc");
        close(&r["in_flow"], Some(v / flow_total[&(y, f.clone())]), "share within flow");
    }
    // Without a calendar key: the total of every stored row.
    let rows = run("from trade\ngroup partner by partner_groups as bloc\nby bloc\nsum value\nshow share(value)");
    let all: f64 = total.values().sum();
    for r in &rows {
        let v: f64 = bloc.iter().filter(|((_, g), _)| *g == r["bloc"]).map(|(_, v)| v).sum();
        close(&r["value_share"], Some(v / all), "share without a period");
    }
}

#[test]
fn top_n_members_are_measured_on_their_own_series() {
    // A member new in this year's top n is compared with its own value of the
    // year before (even if it was in "others" then); its rank is among all
    // partners; "others" has the rest's share, no growth and no rank, and
    // comes last in its year.
    let yearly = yearly_by_partner();
    let years: BTreeSet<i32> = yearly.keys().map(|k| k.0).collect();
    let mut entered = 0;
    for n in 2..=5usize {
        let rows = run(&format!(
            "from trade\nby year, partner\nsum value\ntop {n} partner by value\nshow value, yoy(value), share(value), rank(value)"
        ));
        for &y in &years {
            let mut ranked: Vec<(&String, f64)> =
                yearly.iter().filter(|((yy, _), _)| *yy == y).map(|((_, p), v)| (p, *v)).collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            let total: f64 = ranked.iter().map(|x| x.1).sum();
            let got: Vec<&BTreeMap<String, String>> = rows.iter().filter(|r| r["year"] == y.to_string()).collect();
            assert_eq!(got.len(), n + 1, "{n} partners and others in {y}");
            assert_eq!(got[n]["partner"], "others", "others last in {y}");
            let before: Vec<&String> = {
                let mut b: Vec<(&String, f64)> =
                    yearly.iter().filter(|((yy, _), _)| *yy == y - 1).map(|((_, p), v)| (p, *v)).collect();
                b.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
                b.iter().take(n).map(|x| x.0).collect()
            };
            for (i, (p, v)) in ranked[..n].iter().enumerate() {
                let r = got.iter().find(|r| r["partner"] == **p).unwrap_or_else(|| panic!("{p} in the top {n} of {y}"));
                let prev = yearly.get(&(y - 1, p.to_string()));
                if prev.is_some() && !before.contains(p) {
                    entered += 1;
                }
                close(&r["value_yoy"], prev.map(|b| v / b - 1.0), "a member's own growth");
                close(&r["value_share"], Some(v / total), "share");
                close(&r["value_rank"], Some((i + 1) as f64), "rank among all partners");
            }
            let others: f64 = ranked[n..].iter().map(|x| x.1).sum();
            close(&got[n]["value"], Some(others), "others");
            close(&got[n]["value_share"], Some(others / total), "others' share");
            close(&got[n]["value_yoy"], None, "others' growth");
            close(&got[n]["value_rank"], None, "others' rank");
        }
    }
    assert!(entered > 0, "some partner enters the top from others, or the test checks little");
    // A query drops "others" with a filter after `top`.
    let rows =
        run("from trade\nby year, partner\nsum value\ntop 3 partner by value\nshow value\nwhere partner != \"others\"");
    assert!(!rows.is_empty() && rows.iter().all(|r| r["partner"] != "others"));
}

#[test]
fn shares_of_a_partition_add_up_to_one() {
    // Property: for groups that partition the partners, the groups' shares
    // add up to 1 in every year, and their contributions to the total's growth.
    for seed in ["3", "5", "8"] {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        gen_into(&store, &format!("--partners 9 --products 5 --months 36 --density 0.5 --seed {seed}"));
        let partners = csv_rows(&ok(&[
            "run",
            s(&write(dir.path(), "p.tql", "from trade\nby partner\nsum value")),
            "--store",
            s(&store),
            "-f",
            "csv",
        ]));
        let mut table = String::from("group,member,valid_from,valid_to\n");
        for (i, r) in partners.iter().enumerate() {
            table.push_str(&format!("H{},{},,\n", i % 2, r["partner"]));
        }
        let t = write(dir.path(), "halves.csv", &table);
        ok(&["groups", "add", "halves", s(&t), "--store", s(&store)]);
        let q = write(
            dir.path(),
            "q.tql",
            "from trade\ngroup partner by halves as part\nby year, part\nsum value\nshow share(value), contribution(value)",
        );
        let g = write(dir.path(), "g.tql", "from trade\nby year\nsum value\nshow yoy(value)");
        let parse = |path: &Path| csv_rows(&ok(&["run", s(path), "--store", s(&store), "--format", "csv"]));
        let (mut shares, mut contributions): (BTreeMap<String, f64>, BTreeMap<String, f64>) = Default::default();
        for r in parse(&q) {
            *shares.entry(r["year"].clone()).or_insert(0.0) += r["value_share"].parse::<f64>().unwrap();
            if let Ok(c) = r["value_contribution"].parse::<f64>() {
                *contributions.entry(r["year"].clone()).or_insert(0.0) += c;
            }
        }
        assert_eq!(shares.len(), 3, "seed {seed}: three years");
        for (y, sum) in &shares {
            assert!((sum - 1.0).abs() < 1e-12, "seed {seed} {y}: shares add up to {sum}");
        }
        for r in parse(&g) {
            let Ok(growth) = r["value_yoy"].parse::<f64>() else { continue };
            let sum = contributions[&r["year"]];
            assert!(
                (sum - growth * 100.0).abs() < 1e-9 * 100.0,
                "seed {seed} {}: {sum} vs {}",
                r["year"],
                growth * 100.0
            );
        }
    }
}

#[test]
fn convert_uses_each_months_rate_and_refuses_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    ingest_gacc(&store);
    // Synthetic rates (test data, not real ones): CNY per USD drifting by month; EUR flat.
    let rate = |y: i32, m: u32| 7.0 + f64::from(y - 2023) * 0.1 + f64::from(m) * 0.01;
    let mut csv = String::from("period,currency,per_usd\n");
    for y in [2023, 2024] {
        for m in 1..=12u32 {
            if (y, m) == (2023, 1) {
                continue; // left out on purpose, see below
            }
            csv.push_str(&format!("{y}-{m:02},CNY,{}\n{y}-{m:02},EUR,0.9\n", rate(y, m)));
        }
    }
    let rates = write(dir.path(), "rates.csv", &csv);
    let out = ok(&["rates", "add", s(&rates), "--store", s(&store)]);
    assert!(out.contains("stored 46 exchange rates for CNY, EUR from 2023-02 to 2024-12"), "{out}");

    let q = write(
        dir.path(),
        "usd.tql",
        "from gacc\nwhere year = 2024\nderive usd = convert(value, \"USD\"), eur = convert(value, \"EUR\")\nby year\nagg usd = sum(usd), eur = sum(eur)\nshow usd, eur",
    );
    let rows = csv_rows(&ok(&["run", s(&q), "--store", s(&store), "--format", "csv"]));
    let source = std::fs::read_to_string(data.join("gacc_monthly_2023_2024.csv")).unwrap();
    let (mut usd, mut eur) = (0.0, 0.0);
    for line in source.lines().skip(1).filter(|l| l.starts_with("2024")) {
        let f: Vec<&str> = line.split(',').collect();
        let (m, v): (u32, f64) = (f[0][5..7].parse().unwrap(), f[5].parse().unwrap());
        usd += v / rate(2024, m);
        eur += v / rate(2024, m) * 0.9;
    }
    close(&rows[0]["usd"], Some(usd), "yearly total in USD, month by month");
    close(&rows[0]["eur"], Some(eur), "yearly total in EUR");

    // 2023-01 has no rate: a query that touches it fails and names it.
    let q = write(dir.path(), "all.tql", "from gacc\nderive usd = convert(value, \"USD\")\nby year\nsum usd");
    let err = fails(&["run", s(&q), "--store", s(&store)]);
    assert!(err.contains("convert(..., \"USD\"): no CNY to USD rate for 2023-01"), "{err}");
    assert!(err.contains("help: add the missing months with `tradeql rates add`"), "{err}");

    // Bad rates are refused with their line.
    let bad = write(dir.path(), "bad.csv", "period,currency,per_usd\n2024-01,CNY,7.1\n2024-01,CNY,7.2\n");
    let err = fails(&["rates", "add", s(&bad), "--store", s(&store)]);
    assert!(err.contains("bad.csv:3: column `period`: a second CNY rate for 2024-01 (first at line 2)"), "{err}");
    let bad = write(dir.path(), "cur.csv", "period,currency,per_usd\n2024-01,yuan,7.1\n");
    let err = fails(&["rates", "add", s(&bad), "--store", s(&store)]);
    assert!(err.contains("a currency is an ISO 4217 code such as CNY (value \"yuan\")"), "{err}");
    ok(&["info", s(&store), "--verify"]);
}
