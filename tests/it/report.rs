//! The release as one web page (`batch --report`), loaded by a real browser:
//! headless Chromium (Debian's `chromium`, installed by scripts/setup-peers.sh;
//! missing, the test skips on a developer's machine and fails under CI) renders
//! the page from the file, and the test checks what it rendered.

use crate::common::*;
use crate::queries::bundled_store;
use std::path::Path;
use std::process::Command;

/// The release job of queries/, on the bundled store, into `dir`, with its page.
fn release_with_report(dir: &Path) -> (std::path::PathBuf, tradeql::batch::RunManifest) {
    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    let text = std::fs::read_to_string(queries.join("release.toml"))
        .unwrap()
        .replace("store = \"../store\"", &format!("store = {:?}", s(bundled_store())))
        .replace("out_dir = \"../extracts\"", &format!("out_dir = {:?}", s(&dir.join("extracts"))));
    let job = queries.join(format!(".test-report-{}.toml", std::process::id()));
    std::fs::write(&job, text).unwrap();
    let page = dir.join("report.html");
    let out = tradeql(&["batch", s(&job), "--report", s(&page)]);
    let _ = std::fs::remove_file(&job);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = std::fs::read_to_string(dir.join("extracts/run.json")).unwrap();
    (page, serde_json::from_str(&manifest).unwrap())
}

fn chromium(args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_release_page_is_self_contained_and_a_browser_renders_every_extract() {
    let dir = tempfile::tempdir().unwrap();
    let (page, manifest) = release_with_report(dir.path());
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch, nothing to run.
    assert!(!html.contains("<script"), "no script");
    for outside in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(outside), "{outside} in the page");
    }
    let extracts: Vec<&tradeql::batch::TaskRecord> =
        manifest.tasks.iter().filter(|t| t.status == "ok" && !t.name.starts_with("reconcile")).collect();
    assert!(extracts.len() >= 15, "{} extracts", extracts.len());
    // Each extract's section, and its warnings beside it.
    for t in &extracts {
        assert!(html.contains(&format!("<section id=\"{}\">", t.name)), "{}", t.name);
    }
    let monthly = html.split("<section id=\"monthly_2024\">").nth(1).unwrap().split("</section>").next().unwrap();
    assert!(monthly.contains("<h2>Monthly total trade in 2024</h2>"), "{monthly:.300}");
    assert!(
        monthly.contains("<td class=\"n\">43.85</td>"),
        "the December year-to-date total, as the terminal shows it"
    );
    let yearly = html.split("<section id=\"trade_2023\">").nth(1).unwrap().split("</section>").next().unwrap();
    assert!(yearly.contains("(year = 2023)</h2>"), "a parameter run says which");
    assert!(yearly.contains("class=\"warning\">warning: yoy(total) is null for 2023"), "{yearly:.600}");
    assert!(html.contains("<footer>") && html.contains("gacc version"), "the data versions in the footer");

    if !tool_present("chromium") {
        return;
    }
    // What the browser rendered: the DOM after it loaded the file.
    let url = format!("file://{}", page.display());
    let out = chromium(&["--dump-dom", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dom = String::from_utf8_lossy(&out.stdout);
    for t in &extracts {
        assert!(dom.contains(&format!("<section id=\"{}\">", t.name)), "rendered: {}", t.name);
    }
    let headings = dom.matches("<h2>").count();
    assert_eq!(headings, extracts.len(), "one heading per extract");
    let rows: usize = extracts.iter().map(|t| t.rows.unwrap_or(0) as usize).sum();
    assert_eq!(dom.matches("<tr>").count(), rows + extracts.len(), "every row, and a header row per table");
    let charts = dom.matches("<figure class=\"chart\"><svg").count();
    assert!(charts >= 12, "{charts} charts rendered");
    // A screenshot, kept beside the page.
    let shot = dir.path().join("report.png");
    let out = chromium(&["--window-size=1280,2400", &format!("--screenshot={}", shot.display()), &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 50_000, "a screenshot of a page with charts: {} bytes", png.len());
}

#[test]
fn a_report_inside_the_store_or_on_a_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let q = write(dir.path(), "q.tql", "from trade\nby period\nsum value\n");
    let job = write(
        dir.path(),
        "job.toml",
        &format!("store = {:?}\nout_dir = \"out\"\n[[query]]\nfile = {:?}\n", s(&store), s(&q)),
    );
    let err = fails(&["batch", s(&job), "--report", s(&store.join("r.html"))]);
    assert!(err.contains("inside the store"), "{err}");
    let err = fails(&["batch", s(&job), "--report", s(dir.path())]);
    assert!(err.contains("is a folder"), "{err}");
}
