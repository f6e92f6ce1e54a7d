//! Grammar fuzzing past `resolve`: queries generated from the language's
//! grammar (stages, measures nested at random, filters, groups, top, formats)
//! and queries of the corpus mutated token by token, each loaded (lex, parse,
//! resolve, compile: what `tradeql check` does) and, when it loads, collected
//! on a small generated store. The properties:
//!
//! - no panic, at any stage, on any input;
//! - a query that `check` accepts runs (`check` passing and `run` failing is
//!   a bug);
//! - no input takes more than a few seconds.
//!
//! The run is bounded: `TRADEQL_FUZZ_CASES` inputs (600 by default, as in
//! CI) from the seed `TRADEQL_FUZZ_SEED`; a failure prints the input and the
//! seed. The kept corpus (`tests/fuzz/corpus`) runs first, through the same
//! properties.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tradeql::lang::QueryFile;
use tradeql::store::Store;

/// Grammar choices from tradeql's own seedable generator (splitmix64).
struct Rng(tradeql::panel::Rng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A store with a generated panel (`trade`, monthly, with partner groups)
/// and the bundled datasets, built once for all fuzz tests.
fn fuzz_store() -> &'static Path {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tradeql-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = dir.join("store");
        gen_into(&store, "--dataset trade --partners 6 --products 12 --months 30 --seed 5");
        ingest_bundled(&store);
        let blocs = write(
            &dir,
            "blocs.csv",
            "group,member,valid_from,valid_to\nG1,PAA,,\nG1,PAB,,\nG2,PAB,,\nG2,PAC,2024-01,\n",
        );
        ok(&["groups", "add", "blocs", s(&blocs), "--of", "partner", "--store", s(&store)]);
        store
    })
}

const CALENDAR: [&str; 6] = ["year", "quarter", "month", "half", "period", "ytd"];
const DIMENSIONS: [&str; 5] = ["partner", "flow", "product", "reporter", "bloc"];

/// A numeric expression over aggregated rows, `depth` levels of measures deep at most.
fn measure(rng: &mut Rng, depth: usize, cols: &[&str]) -> String {
    if depth == 0 || rng.chance(25) {
        return match rng.below(10) {
            0 => "1".into(),
            1 if cols.contains(&"quantity") => "unit_value()".into(),
            _ => rng.pick(cols).to_string(),
        };
    }
    let x = measure(rng, depth - 1, cols);
    let k = rng.pick(&["1", "2", "3", "12", "1", "2", "3", "0", "1200", "1201", "2.5"]);
    match rng.below(22) {
        0 => format!("yoy({x})"),
        1 => format!("pop({x})"),
        2 => format!("share({x})"),
        3 => format!("share({x} within {})", rng.pick(&DIMENSIONS)),
        4 => format!("pp({x})"),
        5 => format!("contribution({x})"),
        6 => format!("ytd({x})"),
        7 => format!("ytd_yoy({x})"),
        8 => format!("rolling({x}, {k})"),
        9 => format!("rolling_mean({x}, {k})"),
        10 => format!("rank({x})"),
        11 => format!("change({x})"),
        12 => format!("change({x}, {k})"),
        13 => format!("yoy({x}, {k})"),
        14 => format!("pop_change({x})"),
        15 => format!("pop_pp({x})"),
        16 => format!("streak({x} > 0)"),
        17 => format!("mom({x})"),
        18 => format!("({x}) / ({})", measure(rng, depth - 1, cols)),
        19 => format!("{x} - {}", measure(rng, depth - 1, cols)),
        20 => format!("-({x})"),
        _ => format!("if({} > 0, {x}, 0)", measure(rng, depth - 1, cols)),
    }
}

/// A row filter.
fn predicate(rng: &mut Rng, depth: usize) -> String {
    if depth > 0 && rng.chance(30) {
        let (a, b) = (predicate(rng, depth - 1), predicate(rng, depth - 1));
        return match rng.below(3) {
            0 => format!("({a}) and ({b})"),
            1 => format!("({a}) or ({b})"),
            _ => format!("not ({a})"),
        };
    }
    match rng.below(11) {
        0 => format!("partner = \"{}\"", rng.pick(&["PAA", "PAB", "PAC", "PAA", "WLD", "others", "ZZZ"])),
        1 => "partner in (\"PAA\", \"PAC\", \"PAD\")".into(),
        2 => format!("flow = \"{}\"", rng.pick(&["export", "import", "export", "total"])),
        3 => format!("value > {}", rng.pick(&["0", "1e6", "-1"])),
        4 => format!("period in {} .. {}", rng.pick(&["2023-01", "2024-06"]), rng.pick(&["2024-03", "2023-02"])),
        5 => format!("year = {}", rng.pick(&["2023", "2024", "1999"])),
        6 => "not aggregate".into(),
        7 => format!("month(period) <= {}", rng.pick(&["3", "12", "13"])),
        8 => format!("partner in ({})", ["\"PAA\"", "\"PAB\"", "\"PAE\""][..rng.below(3) + 1].join(", ")),
        9 => "value in (1, 2, 3)".into(),
        _ => format!("bloc = \"{}\"", rng.pick(&["G1", "G2", "G1", "ASEAN"])),
    }
}

/// A whole query from the grammar; sometimes wrong on purpose.
fn generated(rng: &mut Rng) -> String {
    let mut q = format!(
        "from {}\n",
        rng.pick(&["trade", "trade", "trade", "trade", "trade", "trade", "trade", "trade", "gacc", "nope"])
    );
    let grouped = rng.chance(35);
    if grouped {
        q.push_str("group partner by blocs as bloc\n");
    }
    for _ in 0..rng.below(3) {
        let p = predicate(rng, 2);
        if grouped || !p.contains("bloc") {
            q.push_str(&format!("where {p}\n"));
        }
    }
    if rng.chance(20) {
        q.push_str("derive v2 = value * 2\n");
    }
    let mut keys: Vec<&str> = Vec::new();
    if rng.chance(95) {
        keys.push(rng.pick(&CALENDAR));
    }
    for _ in 0..rng.below(3) {
        let d = rng.pick(&DIMENSIONS);
        if !keys.contains(&d) && (grouped || d != "bloc") {
            keys.push(d);
        }
    }
    if !keys.is_empty() {
        q.push_str(&format!("by {}\n", keys.join(", ")));
    }
    let (agg, cols): (&str, &[&str]) = match rng.below(8) {
        0..=3 => ("sum value\n", &["value"]),
        4 | 5 => ("sum value, quantity\n", &["value", "quantity"]),
        6 => ("agg value = sum(value), quantity = sum(quantity), n = count()\n", &["value", "quantity", "n"]),
        _ => ("agg value = mean(value)\n", &["value"]),
    };
    q.push_str(agg);
    if rng.chance(20)
        && let Some(d) = keys.iter().copied().find(|k| DIMENSIONS.contains(k))
    {
        q.push_str(&format!("top {} {d} by value\n", rng.pick(&["1", "3", "5", "1", "0"])));
    }
    let items: Vec<String> = (0..rng.below(3) + 1)
        .map(|i| {
            let depth = rng.below(5);
            let e = measure(rng, depth, cols);
            let fmt = rng.pick(&["", "", "", "", "", " as pct", " as pp", " as million", " as int", " as nope"]);
            if rng.chance(90) { format!("m{i} = {e}{fmt}") } else { format!("{e}{fmt}") }
        })
        .collect();
    q.push_str(&format!("show {}\n", items.join(", ")));
    if rng.chance(30) {
        q.push_str(&format!("where {}\n", rng.pick(&["value > 0", "m0 > 0", "partner != \"others\""])));
    }
    if rng.chance(20) {
        q.push_str(&format!("sort {} desc\nlimit {}\n", rng.pick(&["value", "m0", "period"]), rng.pick(&["1", "10"])));
    }
    q
}

/// A corpus query with a few tokens (split at spaces) dropped, repeated or replaced.
fn mutated(rng: &mut Rng, corpus: &[String]) -> String {
    let source = &corpus[rng.below(corpus.len())];
    let mut words: Vec<String> = source.split(' ').map(str::to_string).collect();
    const VOCABULARY: [&str; 24] = [
        "(",
        ")",
        ",",
        "yoy(",
        "share(",
        "within",
        "by",
        "\n",
        "-",
        "not",
        "\"",
        "12",
        "ytd",
        "top",
        "others",
        "=",
        "..",
        "2024-13",
        "$year",
        "as",
        "pct",
        "rolling(value,",
        "1e309",
        "#",
    ];
    for _ in 0..rng.below(4) + 1 {
        if words.is_empty() {
            break;
        }
        let i = rng.below(words.len());
        match rng.below(3) {
            0 => {
                words.remove(i);
            }
            1 => {
                let w = words[i].clone();
                words.insert(i, w);
            }
            _ => words[i] = rng.pick(&VOCABULARY).to_string(),
        }
    }
    words.join(" ")
}

fn corpus_queries() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["queries", "tests/fuzz/corpus", "tests/queries/errors"] {
        for f in tql_files(&root.join(dir)) {
            if let Ok(text) = std::fs::read_to_string(f) {
                out.push(text);
            }
        }
    }
    out
}

/// Loads and (when it loads) collects `text`: whether it loaded, or what
/// went wrong when a property fails.
fn check_then_run(store: &Store, text: &str, params: &[(String, String)]) -> Result<bool, String> {
    // A parameter is given only to a query that declares one.
    let params = if text.contains("param ") { params } else { &[] };
    let file = QueryFile { path: PathBuf::from("fuzz.tql"), text: text.to_string() };
    let start = Instant::now();
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match tradeql::lang::load(&file, store, params) {
            Err(e) => Ok(Err(e)),
            Ok(loaded) => {
                tradeql::run::collect(&loaded.compiled).map(Ok).map_err(|e| format!("check passed, run failed: {e}"))
            }
        }));
    let took = start.elapsed();
    let ran = matches!(&outcome, Ok(Ok(Ok(_))));
    match outcome {
        Err(panic) => {
            let what =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            return Err(format!("panic: {}", what.unwrap_or_default()));
        }
        Ok(Err(run_failed)) => return Err(run_failed),
        Ok(Ok(Err(e))) if e.kind == tradeql::ErrorKind::Internal => return Err(format!("internal error: {e}")),
        Ok(Ok(Err(e))) if std::env::var_os("TRADEQL_FUZZ_VERBOSE").is_some() => eprintln!("--- {text}{e}"),
        Ok(Ok(_)) => {}
    }
    if took > Duration::from_secs(8) {
        return Err(format!("took {took:?}"));
    }
    Ok(ran)
}

fn report(failures: &[(String, String)], seed: u64) {
    if failures.is_empty() {
        return;
    }
    let shown: Vec<String> = failures.iter().take(5).map(|(q, why)| format!("--- {why}\n{q}")).collect();
    panic!("{} of the fuzz inputs broke a property (seed {seed}):\n{}", failures.len(), shown.join("\n"));
}

#[test]
fn generated_and_mutated_queries_load_run_or_fail_cleanly() {
    let store = Store::at(fuzz_store());
    let seed: u64 = std::env::var("TRADEQL_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261201);
    let cases: usize = std::env::var("TRADEQL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let mut rng = Rng(tradeql::panel::Rng(seed));
    let corpus = corpus_queries();
    let params = vec![("year".to_string(), "2024".to_string())];
    let mut failures = Vec::new();
    let mut loaded = 0;
    for text in &corpus {
        if let Err(why) = check_then_run(&store, text, &params) {
            failures.push((text.clone(), why));
        }
    }
    for i in 0..cases {
        let text = if i % 3 == 2 { mutated(&mut rng, &corpus) } else { generated(&mut rng) };
        match check_then_run(&store, &text, &params) {
            Ok(true) => loaded += 1,
            Ok(false) => {}
            Err(why) => failures.push((text, why)),
        }
    }
    let _ = std::fs::remove_dir_all(fuzz_store().parent().unwrap());
    report(&failures, seed);
    // The generator must reach compile and run, not only the parser's errors.
    let generated = cases - cases / 3;
    assert!(loaded * 5 >= generated, "only {loaded} of {generated} generated queries loaded");
    eprintln!("fuzz: {cases} inputs from seed {seed}, {loaded} loaded and ran, no property broken");
}
