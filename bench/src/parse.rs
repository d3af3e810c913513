//! `ingest-bench parse`: feed parsing throughput on one core over one corpus
//! (generated RSS 2.0, Atom 1.0 and RSS 1.0 feeds, written to files), side by side in
//! the same run with Go's gofeed (bench/go/feedparse, GOMAXPROCS=1) and
//! Python's feedparser (bench/python/feed_parse.py). The Rust side is what
//! the rss type does with a body: the tolerant reader plus mapping every
//! entry to its document. The corpus adds the dialect files of
//! worker/tests/feeds.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use ingest_worker::jobs::rss;
use serde::Deserialize;

#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// Feeds of each dialect in the corpus.
    #[arg(long, default_value_t = 40)]
    feeds: usize,
    /// Items per feed.
    #[arg(long, default_value_t = 50)]
    items: usize,
    /// Minimum measuring time of each parser, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    #[arg(long)]
    python: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Report {
    items: u64,
    bytes: u64,
    /// Feeds of the corpus the parser could not read at all.
    #[serde(default)]
    failed: u64,
    seconds: f64,
}

impl Report {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
    fn items_per_s(&self) -> f64 {
        self.items as f64 / self.seconds
    }
}

pub async fn run(args: ParseArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for f in 0..args.feeds {
        for (dialect, xml) in [
            ("rss2", crate::feeds::feed_xml(f, args.items)),
            ("atom", atom_xml(f, args.items)),
            ("rdf", rdf_xml(f, args.items)),
        ] {
            let path = dir.path().join(format!("{dialect}-{f}.xml"));
            std::fs::write(&path, xml)?;
            files.push(path);
        }
    }
    // The dialects and oddities of the reader's own corpus (RSS 0.90-2.x,
    // Atom 0.3, odd types, encodings, broken ends), as many times as each
    // generated dialect.
    let dialects = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../worker/tests/feeds");
    let mut odd = Vec::new();
    for entry in std::fs::read_dir(&dialects).context("worker/tests/feeds")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "xml") {
            odd.push(path);
        }
    }
    odd.sort();
    for f in 0..args.feeds {
        for path in &odd {
            let copy =
                dir.path().join(format!("{f}-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("feed.xml")));
            std::fs::copy(path, &copy)?;
            files.push(copy);
        }
    }
    let size: u64 = files.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    println!(
        "corpus: {} feeds (RSS 2.0, Atom 1.0, RSS 1.0 generated; {} dialect files of worker/tests/feeds), {:.1} MB",
        files.len(),
        odd.len(),
        size as f64 / 1e6
    );

    let rust = tokio::task::spawn_blocking({
        let files = files.clone();
        move || parse_rust(&files, args.seconds)
    })
    .await??;
    println!(
        "ingest (reader + mapping):   {:>8.1} MB/s  {:>9.0} items/s  {} feeds unread",
        rust.mb_per_s(),
        rust.items_per_s(),
        rust.failed
    );

    let go = parse_go(&files, args.seconds).await?;
    println!(
        "go gofeed (GOMAXPROCS=1):    {:>8.1} MB/s  {:>9.0} items/s  {} feeds unread; ingest is {:.2}× in MB/s, \
         {:.2}× in items/s (bar: 5×)",
        go.mb_per_s(),
        go.items_per_s(),
        go.failed,
        rust.mb_per_s() / go.mb_per_s(),
        rust.items_per_s() / go.items_per_s()
    );

    let python = match args.python {
        Some(python) => python,
        None => crate::feeds::python_venv().await?,
    };
    let py = run_json(
        tokio::process::Command::new(python)
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/feed_parse.py"))
            .args(["--seconds", &args.seconds.to_string()])
            .args(&files),
    )
    .await
    .context("the feedparser baseline")?;
    println!(
        "python feedparser:           {:>8.1} MB/s  {:>9.0} items/s  {} feeds unread; ingest is {:.1}× (bar: 20×)",
        py.mb_per_s(),
        py.items_per_s(),
        py.failed,
        rust.items_per_s() / py.items_per_s()
    );
    Ok(())
}

fn parse_rust(files: &[PathBuf], seconds: f64) -> anyhow::Result<Report> {
    let bodies: Vec<(Vec<u8>, url::Url)> = files
        .iter()
        .map(|p| Ok((std::fs::read(p)?, format!("http://127.0.0.1/{}", p.display()).parse()?)))
        .collect::<anyhow::Result<_>>()?;
    let (mut items, mut bytes, mut failed, mut rounds) = (0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        rounds += 1;
        for (body, url) in &bodies {
            bytes += body.len() as u64;
            let Ok(feed) = rss::parse(body, url) else {
                failed += 1;
                continue;
            };
            for entry in &feed.entries {
                let item = rss::item(&feed, entry, url, rss::entry_id(url, entry));
                std::hint::black_box(item);
            }
            items += feed.entries.len() as u64;
        }
    }
    Ok(Report { items, bytes, failed: failed / rounds.max(1), seconds: started.elapsed().as_secs_f64() })
}

async fn parse_go(files: &[PathBuf], seconds: f64) -> anyhow::Result<Report> {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("go/feedparse");
    let bin = tempfile::tempdir()?;
    let exe = bin.path().join("feedparse");
    let status = tokio::process::Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&exe)
        .arg(".")
        .current_dir(&source)
        .status()
        .await
        .context("go build (needs Go and the module proxy for gofeed)")?;
    if !status.success() {
        bail!("go build of bench/go/feedparse failed");
    }
    run_json(tokio::process::Command::new(&exe).args(["-seconds", &seconds.to_string()]).args(files)).await
}

async fn run_json(command: &mut tokio::process::Command) -> anyhow::Result<Report> {
    let output = command.output().await?;
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).with_context(|| String::from_utf8_lossy(&output.stdout).to_string())
}

fn atom_xml(feed: usize, items: usize) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\"><title>Atom bench {feed}</title>\
         <id>urn:bench:{feed}</id><updated>2026-11-01T00:00:00Z</updated><link href=\"https://example.org/{feed}/\"/>\n"
    );
    for i in 0..items {
        xml.push_str(&format!(
            "<entry><title type=\"html\">Entry {i} &amp; more of feed {feed}</title><id>urn:bench:{feed}:{i}</id>\
             <link href=\"https://example.org/{feed}/e/{i}\"/><updated>2026-11-{:02}T{:02}:00:00Z</updated>\
             <published>2026-11-{:02}T00:00:00+01:00</published><author><name>Writer {}</name></author>\
             <category term=\"topic{}\"/><summary type=\"html\">{}</summary></entry>\n",
            1 + i % 28,
            i % 24,
            1 + i % 28,
            i % 13,
            i % 9,
            "&lt;p&gt;Summary text for the entry, long enough to look like a real one.&lt;/p&gt; ".repeat(8)
        ));
    }
    xml.push_str("</feed>\n");
    xml
}

fn rdf_xml(feed: usize, items: usize) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\"?>\n<rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\" xmlns=\"http://purl.org/rss/1.0/\" \
         xmlns:dc=\"http://purl.org/dc/elements/1.1/\"><channel rdf:about=\"https://example.org/{feed}/\"><title>RDF bench {feed}</title>\
         <link>https://example.org/{feed}/</link><description>d</description></channel>\n"
    );
    for i in 0..items {
        xml.push_str(&format!(
            "<item rdf:about=\"https://example.org/{feed}/r/{i}\"><title>RDF item {i}</title><link>https://example.org/{feed}/r/{i}</link>\
             <dc:date>2026-11-{:02}T07:08:09Z</dc:date><dc:creator>Editor {}</dc:creator><description>{}</description></item>\n",
            1 + i % 28,
            i % 5,
            "Plain description words of a plausible length for a feed item. ".repeat(10)
        ));
    }
    xml.push_str("</rdf:RDF>\n");
    xml
}
