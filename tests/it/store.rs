//! Revisions, dry runs, locking, layouts and `info`.

use crate::common::*;
use tradeql::store::Store;

fn panel(months: &[(&str, f64)]) -> String {
    let mut csv = String::from("period,reporter,partner,flow,product,value\n");
    for (p, v) in months {
        csv.push_str(&format!("{p},CHN,USA,export,01,{v}\n{p},CHN,DEU,export,01,{v}\n"));
    }
    csv
}

#[test]
fn revision_replaces_its_periods_and_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let months: Vec<String> =
        (1..=12).map(|m| format!("2023-{m:02}")).chain((1..=12).map(|m| format!("2024-{m:02}"))).collect();
    let first: Vec<(&str, f64)> = months.iter().map(|m| (m.as_str(), 10.0)).collect();
    let v1 = write(dir.path(), "v1.csv", &panel(&first));
    ok(&["ingest", s(&v1), "--store", s(&store), "-d", "t", "-q"]);
    assert_eq!(totals(&store, "t"), (48, 480.0));

    // Customs revise June and July 2024, and publish January 2025.
    let v2 = write(dir.path(), "v2.csv", &panel(&[("2024-06", 50.0), ("2024-07", 50.0), ("2025-01", 7.0)]));
    let before = snapshot(&store);
    let dry = ok(&["ingest", s(&v2), "--store", s(&store), "-d", "t", "--dry-run", "-q"]);
    assert!(dry.contains("would ingest 6 rows into t (version 2, not written)"), "{dry}");
    assert!(dry.contains("periods added:    2025-01"), "{dry}");
    assert!(dry.contains("periods replaced: 2024-06 .. 2024-07"), "{dry}");
    assert!(dry.contains("partitions to write: year=2024, year=2025"), "{dry}");
    assert_eq!(snapshot(&store), before, "a dry run changed the store");

    ok(&["ingest", s(&v2), "--store", s(&store), "-d", "t", "-q"]);
    // 48 - 4 replaced + 4 revised + 2 new rows; 480 - 40 + 200 + 14.
    assert_eq!(totals(&store, "t"), (50, 654.0));
    let m = Store::at(&store).manifest("t").unwrap().unwrap();
    assert_eq!(m.version, 2);
    assert_eq!(m.periods.len(), 25);
    assert_eq!(m.ingests[1].periods_replaced, ["2024-06", "2024-07"]);
    // 2023 was not touched: same file as version 1.
    assert_eq!(m.files[0].path, "year=2023/part-v000001.parquet");
    assert_eq!(m.files[1].path, "year=2024/part-v000002.parquet");
    // The published 2024 file is the new version's; the replaced one is kept for version 1.
    let pool = store.join(".tradeql/datasets/t/files");
    assert!(tradeql::store::same_file(&store.join("t/year=2024/part-0.parquet"), &pool.join(&m.files[1].path)));
    assert!(pool.join("year=2024/part-v000001.parquet").is_file(), "version 1's file is kept");
    assert_eq!(std::fs::read_dir(store.join("t/year=2024")).unwrap().count(), 1, "one file a year published");
    let info = ok(&["info", s(&store), "--verify"]);
    assert!(info.contains("periods     2023-01 .. 2025-01 (25 periods)"), "{info}");
    assert!(info.contains("verify: every file matches its manifest"), "{info}");
}

#[test]
fn a_second_writer_fails_clearly_while_the_store_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let before = snapshot(&store);
    let held = Store::at(&store).lock(false, "a test").unwrap();
    let src = write(dir.path(), "more.csv", &panel(&[("2024-03", 1.0)]));
    let err = fails(&["ingest", s(&src), "--store", s(&store), "-d", "trade", "-q"]);
    assert!(err.contains("is being written by another process (pid"), "{err}");
    assert!(err.contains("help: wait for it to finish, or pass --wait"), "{err}");
    assert_eq!(snapshot(&store), before);
    drop(held);
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "trade", "-q"]);
}

#[test]
fn wide_layout_with_scale_constants_and_recode() {
    // One row per month, one column per flow, values in 100 million yuan.
    let dir = tempfile::tempdir().unwrap();
    let src =
        write(dir.path(), "wide.csv", "month,exports,imports\n2024-11,\"22,863\",\"16,615\"\n2024-12,\"24,010\",\n");
    let map = write(
        dir.path(),
        "wide.toml",
        r#"
currency = "CNY"
value_scale = 1e8
thousands = ","
[columns]
period = "month"
[constants]
reporter = "CHN"
partner = "World"
product = "TOTAL"
[recode.partner]
World = "WLD"
[wide]
columns = ["exports", "imports"]
names_to = "flow"
names = { exports = "export", imports = "import" }
"#,
    );
    let store = dir.path().join("store");
    let out = ok(&["ingest", s(&src), "--store", s(&store), "-d", "gacc", "-m", s(&map), "-q"]);
    assert!(out.contains("ingested 3 rows"), "{out}"); // the empty import cell is no row
    let (n, v) = totals(&store, "gacc");
    assert_eq!(n, 3);
    assert!((v - (22_863.0 + 16_615.0 + 24_010.0) * 1e8).abs() < 1.0, "{v}");
    let m = Store::at(&store).manifest("gacc").unwrap().unwrap();
    assert_eq!(m.currency.as_deref(), Some("CNY"));
    assert_eq!(m.aggregate_rows, 3, "WLD / TOTAL rows are flagged");
}

#[test]
fn wide_months_with_a_year_column() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "m.csv", "Year,Partner,Jan,Feb,Mar\n2024,USA,1,2,3\n2024,DEU,4,,6\n");
    let map = write(
        dir.path(),
        "m.toml",
        "[columns]\nyear = \"Year\"\npartner = \"Partner\"\n[constants]\nreporter = \"CHN\"\nflow = \"X\"\nproduct = \"TOTAL\"\n[wide]\ncolumns = [\"Jan\", \"Feb\", \"Mar\"]\nnames_to = \"month\"\n",
    );
    let store = dir.path().join("store");
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "m", "-m", s(&map), "-q"]);
    assert_eq!(totals(&store, "m"), (5, 16.0));
    let m = Store::at(&store).manifest("m").unwrap().unwrap();
    assert_eq!(m.periods, ["2024-01", "2024-02", "2024-03"]);
}

#[test]
fn period_forms_flows_and_leading_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(
        dir.path(),
        "forms.csv",
        "period,reporter,partner,flow,product,value,quantity\n202412,CHN,USA,X,010121,1,\n2024-11-01,CHN,USA,M,010121,2,5\n2024-10,CHN,USA,1,010121,3,0\n",
    );
    let store = dir.path().join("store");
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "f", "-q"]);
    use polars::prelude::*;
    let df = LazyFrame::scan_parquet(
        PlRefPath::new(format!("{}/f/**/*.parquet", store.display())),
        ScanArgsParquet::default(),
    )
    .unwrap()
    .sort(["period"], Default::default())
    .collect()
    .unwrap();
    let strings = |name: &str| -> Vec<String> {
        let ca = df.column(name).unwrap().str().unwrap().clone();
        (0..df.height()).map(|i| ca.get(i).unwrap().to_string()).collect()
    };
    let products = strings("product");
    assert_eq!(products, ["010121", "010121", "010121"]);
    let flows = strings("flow");
    assert_eq!(flows, ["export", "import", "export"]);
    let ca = df.column("quantity").unwrap().f64().unwrap().clone();
    let q: Vec<Option<f64>> = (0..df.height()).map(|i| ca.get(i)).collect();
    assert_eq!(q, [Some(0.0), Some(5.0), None]);
}

#[test]
fn quarterly_data_and_gaps_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(
        dir.path(),
        "q.csv",
        "period,reporter,partner,flow,product,value\n2023-Q1,CHN,USA,export,01,1\n2023-Q4,CHN,USA,export,01,1\n2024-Q1,CHN,USA,export,01,1\n",
    );
    let store = dir.path().join("store");
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "q", "-q"]);
    let info = ok(&["info", s(&store)]);
    assert!(info.contains("dataset q  (version 1, quarterly"), "{info}");
    assert!(info.contains("periods     2023-Q1 .. 2024-Q1 (3 periods)"), "{info}");
    assert!(info.contains("gaps        2023-Q2 .. 2023-Q3"), "{info}");
    // A monthly file cannot join a quarterly dataset.
    let m = write(dir.path(), "m.csv", "period,reporter,partner,flow,product,value\n2024-05,CHN,USA,export,01,1\n");
    let err = fails(&["ingest", s(&m), "--store", s(&store), "-d", "q", "-q"]);
    assert!(err.contains("the dataset q is quarterly but this source is monthly"), "{err}");
}

#[test]
fn parquet_sources_ingest_like_csv() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    // Re-ingest the stored file itself as a source into another dataset.
    let file = store.join("trade/year=2024/part-0.parquet");
    ok(&["ingest", s(&file), "--store", s(&store), "-d", "copy", "-q"]);
    assert_eq!(totals(&store, "copy"), totals(&store, "trade"));
}

#[test]
fn groups_are_stored_checked_and_flag_bloc_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let groups =
        write(dir.path(), "g.csv", "group,member,valid_from,valid_to\nEU,DEU,,\nEU,GBR,1973-01,2020-01\nBRICS,BRA,,\n");
    let out = ok(&["groups", "add", "partner_groups", s(&groups), "--store", s(&store)]);
    assert!(out.contains("stored group table partner_groups (3 rows): BRICS (1), EU (2)"), "{out}");
    let src = write(
        dir.path(),
        "t.csv",
        "period,reporter,partner,flow,product,value\n2024-01,CHN,EU,export,01,5\n2024-01,CHN,DEU,export,01,3\n",
    );
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "t", "-q"]);
    assert_eq!(Store::at(&store).manifest("t").unwrap().unwrap().aggregate_rows, 1);
    let info = ok(&["info", s(&store), "--verify"]);
    assert!(info.contains("partner_groups   3 rows, groups of partner codes: BRICS (1), EU (2)"), "{info}");

    let overlap =
        write(dir.path(), "o.csv", "group,member,valid_from,valid_to\nEU,GBR,1973-01,2020-01\nEU,GBR,2019-01,\n");
    let err = fails(&["groups", "add", "partner_groups", s(&overlap), "--store", s(&store)]);
    assert!(err.contains("o.csv:3: GBR is listed in EU twice for overlapping months (also line 2)"), "{err}");
    let backwards = write(dir.path(), "b.csv", "group,member,valid_from,valid_to\nEU,GBR,2020-01,1973-01\n");
    let err = fails(&["groups", "add", "partner_groups", s(&backwards), "--store", s(&store)]);
    assert!(err.contains("b.csv:2: column `valid_to`: valid_to is before valid_from (value \"1973-01\")"), "{err}");
}

#[test]
fn verify_finds_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let file = store.join("trade/year=2024/part-0.parquet");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    std::fs::write(store.join("trade/year=2024/stray.parquet"), b"x").unwrap();
    let out = tradeql(&["info", s(&store), "--verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("part-v000001.parquet: content differs from the manifest (SHA-256)"), "{text}");
    assert!(text.contains("stray.parquet: not a file of the current version of trade"), "{text}");
}

/// One month of rows: one per product code `P0000`.. (value 1 each, so a
/// year's member total is the number of products) and their `TOTAL` row.
fn products_month(period: &str, products: usize) -> String {
    let mut csv = String::from("period,reporter,partner,flow,product,value\n");
    for p in 0..products {
        csv.push_str(&format!("{period},CHN,USA,export,P{p:04},1\n"));
    }
    csv.push_str(&format!("{period},CHN,USA,export,TOTAL,{products}\n"));
    csv
}

#[test]
fn a_column_with_thousands_of_codes_is_indexed_in_the_manifest_exactly_through_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let wide = tradeql::store::manifest::CODES_KEPT + 100;
    for (period, n) in [("2023-01", wide), ("2024-01", wide)] {
        let csv = write(dir.path(), &format!("{period}.csv"), &products_month(period, n));
        ok(&["ingest", s(&csv), "--store", s(&store), "--dataset", "trade", "-q"]);
    }
    let q = write(dir.path(), "q.tql", "from trade\nby year\nsum value\n");
    let answer = |want: [usize; 2]| {
        let rows = csv_rows(&ok(&["run", s(&q), "--store", s(&store), "--format", "csv"]));
        let got: Vec<usize> = rows.iter().map(|r| r["value"].parse::<f64>().unwrap() as usize).collect();
        assert_eq!(got, want, "the member rows, the TOTAL row left out");
    };
    let codes = |store: &std::path::Path| {
        let m = Store::open_existing(store).unwrap().manifest("trade").unwrap().unwrap();
        // What the manifest says against what the files hold.
        let (rows, _) = totals(store, "trade");
        assert!(rows > 0);
        let held: std::collections::BTreeSet<String> = m
            .files
            .iter()
            .flat_map(|f| {
                let path = Store::open_existing(store).unwrap().files_dir("trade").join(&f.path);
                let df = polars::prelude::LazyFrame::scan_parquet(
                    polars::prelude::PlRefPath::new(path.to_str().unwrap()),
                    Default::default(),
                )
                .unwrap()
                .collect()
                .unwrap();
                let c = df.column("product").unwrap().str().unwrap().clone();
                c.iter().flatten().map(str::to_string).collect::<Vec<_>>()
            })
            .collect();
        (m, held.into_iter().collect::<Vec<String>>())
    };
    let (m, held) = codes(&store);
    assert_eq!(held.len(), wide + 1);
    assert_eq!(m.wide_codes.get("product"), Some(&held), "the index lists every product code once");
    assert!(m.files.iter().all(|f| f.wide.contains_key("product") && !f.codes.contains_key("product")));
    assert_eq!(m.listed_codes("product"), Some(held));
    answer([wide, wide]);
    // A rollup by product read for one year, after a revision of the other
    // year adds codes that sort before every code of the kept year (so the
    // kept year's positions in the index move): the same as the rows.
    ok(&["rollup", "add", "trade", "--by", "product", "--store", s(&store)]);
    let mut added = products_month("2024-01", wide);
    added.push_str(&(0..50).map(|p| format!("2024-01,CHN,USA,export,A{p:03},2\n")).collect::<String>());
    let csv = write(dir.path(), "rev-added.csv", &added);
    ok(&["ingest", s(&csv), "--store", s(&store), "--dataset", "trade", "-q"]);
    let q2 = write(dir.path(), "q2.tql", "from trade\nwhere period = 2023-01\nby product\nsum value\n");
    assert!(ok(&["explain", s(&q2), "--store", s(&store)]).contains("rollup: product is read"), "the rollup is read");
    let via_rollup = ok(&["run", s(&q2), "--store", s(&store), "--format", "csv"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
        .args(["run", s(&q2), "--store", s(&store), "--format", "csv"])
        .env("TRADEQL_ROLLUPS", "off")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(via_rollup, String::from_utf8_lossy(&out.stdout), "the rollup answers as the rows do");
    let products: Vec<String> = csv_rows(&via_rollup).iter().map(|r| r["product"].clone()).collect();
    assert!(products.len() >= wide && products.iter().all(|p| p.starts_with('P') || p == "TOTAL"), "{products:?}");
    // Every file's ranges, the rows' and the rollup's, name the codes it holds.
    let m = Store::open_existing(&store).unwrap().manifest("trade").unwrap().unwrap();
    let index = m.wide_codes.get("product").expect("an index of products");
    for f in m.stored_files() {
        let path = Store::open_existing(&store).unwrap().files_dir("trade").join(&f.path);
        let df = polars::prelude::LazyFrame::scan_parquet(
            polars::prelude::PlRefPath::new(path.to_str().unwrap()),
            Default::default(),
        )
        .unwrap()
        .collect()
        .unwrap();
        let held: std::collections::BTreeSet<&str> =
            df.column("product").unwrap().str().unwrap().iter().flatten().collect();
        let listed: Vec<&str> = f.wide_codes(index, "product").expect("ranges").iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, held.into_iter().collect::<Vec<_>>(), "{}", f.path);
    }
    let (m, held) = codes(&store);
    assert_eq!(m.listed_codes("product"), Some(held));
    // Revisions that drop products: the index drops them with the last file that held them.
    for (period, n) in [("2024-01", 10), ("2023-01", 12)] {
        let csv = write(dir.path(), &format!("rev-{period}.csv"), &products_month(period, n));
        ok(&["ingest", s(&csv), "--store", s(&store), "--dataset", "trade", "-q"]);
    }
    let (m, held) = codes(&store);
    assert_eq!(held.len(), 13);
    assert_eq!(m.listed_codes("product"), Some(held));
    answer([12, 10]);
}
