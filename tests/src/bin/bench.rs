//! The sink benchmark: 1M shop events (~200 bytes, 100k keys, 8 partitions) through the
//! real `sinkd` binary into a sink, beside the fastest plain load of the same final rows on
//! the same server: COPY into an empty table for PostgreSQL, an unordered bulk upsert
//! through the driver for MongoDB. Run it with `./bench [--sink mongodb]` (release build).

use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use sinkd_tests::daemon::{Daemon, Workdir};
use sinkd_tests::target::{MONGO_DATABASE, Target};
use sinkd_tests::{shop, stack};

#[derive(Parser)]
struct Args {
    /// Events to produce.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Partitions.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Approximate value size in bytes.
    #[arg(long, default_value_t = 200)]
    value_bytes: usize,
    /// Events per batch (sink transaction).
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// librdkafka `queued.max.messages.kbytes` (prefetch bound), when set.
    #[arg(long)]
    queue_kb: Option<u32>,
    /// Writers of the pipeline (`sink.parallelism`), each with its own connection.
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// The sink: postgres, mongodb or tantivy.
    #[arg(long, default_value = "postgres")]
    sink: String,
    /// After the catch-up, rebuild the read model with a swap and time it.
    #[arg(long)]
    rebuild: bool,
    /// The projection: `copy` (fields copied by name: the shop pipeline), `computed` (the
    /// same stream through computed columns and `when` rules, see
    /// `sinkd_tests::projected`), `lines` (orders with item arrays into orders and
    /// order_lines, see `sinkd_tests::lines`), `lines-by-path` (the same tables and rows
    /// with the orders' computed columns copied from fields instead) or `lines-copy` (the
    /// same orders stream, fields copied by name into one table: the items as JSON).
    #[arg(long, default_value = "copy")]
    projection: String,
}

/// What the rebuild measured.
struct Rebuilt {
    secs: f64,
    swapping_secs: f64,
    events: i64,
}

/// What a reader of the live table saw while the rebuild ran.
struct Reads {
    count: u64,
    longest: Duration,
}

/// The secondary indexes a read model's queries need. sinkd creates none; the swap must
/// carry them over, and must not make readers wait while they are built.
const USER_INDEXES: [&str; 2] = ["(customer)", "(status, customer)"];

/// Gives the live table [`USER_INDEXES`], as its users would.
async fn add_user_indexes(table: &str) {
    let pg = stack::pg().await;
    for (i, columns) in USER_INDEXES.iter().enumerate() {
        pg.batch_execute(&format!(
            "CREATE INDEX \"{table}_user_{i}\" ON \"{table}\" {columns}"
        ))
        .await
        .expect("user index");
    }
}

/// Queries the live table through its first user index until `stop`, timing each read.
async fn read_live(table: String, stop: tokio::sync::watch::Receiver<bool>) -> Reads {
    let pg = stack::pg().await;
    let sql = format!("SELECT count(*) FROM \"{table}\" WHERE customer = $1");
    let mut reads = Reads {
        count: 0,
        longest: Duration::ZERO,
    };
    while !*stop.borrow() {
        let customer = format!("customer-{}", reads.count % 1000);
        let began = Instant::now();
        pg.query_one(&sql, &[&customer]).await.expect("live read");
        reads.longest = reads.longest.max(began.elapsed());
        reads.count += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reads
}

/// Asks the daemon for a swap rebuild and follows it to the end: wall time from the
/// request, and how long the live pipeline was paused (the swapping phase).
async fn rebuild(base: &str, pipeline: &str) -> Rebuilt {
    let http = reqwest::Client::new();
    let url = format!("{base}/pipelines/{pipeline}/rebuild");
    let start = Instant::now();
    let resp = http
        .post(&url)
        .bearer_auth(BENCH_TOKEN)
        .json(&serde_json::json!({"mode": "swap"}))
        .send()
        .await
        .expect("rebuild request");
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let mut swapping: Option<Instant> = None;
    loop {
        let v: serde_json::Value = http
            .get(&url)
            .bearer_auth(BENCH_TOKEN)
            .send()
            .await
            .expect("progress")
            .json()
            .await
            .expect("JSON");
        match v["phase"].as_str() {
            Some("swapping") => {
                swapping.get_or_insert_with(Instant::now);
            }
            Some("done") => {
                let end = Instant::now();
                return Rebuilt {
                    secs: (end - start).as_secs_f64(),
                    swapping_secs: swapping.map_or(0.0, |s| (end - s).as_secs_f64()),
                    events: v["events_done"].as_i64().unwrap_or(0),
                };
            }
            Some("failed" | "cancelled") => panic!("rebuild ended: {v}"),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const BENCH_TOKEN: &str = "bench-token";

/// What the plain load of the final rows measured.
struct Baseline {
    what: &'static str,
    rows: u64,
    secs: f64,
    server: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let target = match args.sink.as_str() {
        "postgres" => Target::postgres(),
        "mongodb" => Target::mongo(),
        "tantivy" => Target::Tantivy(std::env::temp_dir().join("sinkd-bench-index")),
        other => panic!("unknown sink {other}: postgres, mongodb or tantivy"),
    };
    if let Target::Tantivy(base) = &target {
        std::fs::create_dir_all(base).expect("index base folder");
    }
    let name = stack::unique("bench");
    let topic = format!("{name}.orders");
    stack::create_topic(&topic, args.partitions).await;

    eprintln!("generating {} events over {} keys…", args.events, args.keys);
    let orders_stream = args.projection.starts_with("lines");
    let mut events = shop::generate(if orders_stream { 0 } else { args.events }, args.keys, 2026);
    shop::pad(&mut events, args.value_bytes);
    let line_events = if orders_stream {
        sinkd_tests::lines::generate(args.events, args.keys, 2026)
    } else {
        Vec::new()
    };
    let produce_start = Instant::now();
    let (ends, avg) = if orders_stream {
        eprintln!("producing orders with items…");
        (sinkd_tests::lines::publish(&topic, &line_events).await, 0)
    } else {
        let ids = shop::register_schemas(&topic).await;
        let records = shop::records(&ids, &events);
        let bytes: usize = records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, Vec::len))
            .sum();
        let avg = bytes / records.len().max(1);
        eprintln!("producing ({avg} bytes per value on average)…");
        (stack::produce(&topic, records).await, avg)
    };
    let produce_secs = produce_start.elapsed().as_secs_f64();

    let dir = Workdir::new(&name);
    let extra = format!("batch:\n  max_events: {}\n  max_wait_ms: 200\n", args.batch);
    let mut sink = target.sink_yaml(&name);
    if args.parallelism != 1 {
        sink.push_str(&format!("  parallelism: {}\n", args.parallelism));
    }
    let mut yaml = shop::pipeline_yaml_to(&name, &topic, &sink, &extra);
    if let Some(kb) = args.queue_kb {
        yaml = yaml.replace(
            "      heartbeat.interval.ms: \"500\"\n",
            &format!(
                "      heartbeat.interval.ms: \"500\"\n      queued.max.messages.kbytes: \"{kb}\"\n"
            ),
        );
    }
    let computed = match args.projection.as_str() {
        "copy" | "lines" | "lines-by-path" | "lines-copy" => false,
        "computed" => true,
        other => {
            panic!("unknown projection {other}: copy, computed, lines, lines-by-path or lines-copy")
        }
    };
    if computed {
        yaml = sinkd_tests::projected::pipeline_yaml(&yaml);
    }
    let lines_table = format!("{name}_lines");
    if orders_stream {
        let rules = if args.projection == "lines" {
            sinkd_tests::lines::RULES.replace("{lines}", &lines_table)
        } else if args.projection == "lines-by-path" {
            sinkd_tests::lines::rules_by_path().replace("{lines}", &lines_table)
        } else {
            "events:\n  com.shop.OrderOpened: {op: upsert}\n  \
             com.shop.LineAdded: {op: increment, columns: {item_count: qty}}\n  \
             com.shop.StatusChanged: {op: merge}\n"
                .to_owned()
        };
        let start = yaml.find("events:\n").expect("events");
        let marker = "  com.shop.OrderCancelled:\n    op: delete\n";
        let end = yaml.find(marker).expect("shop events") + marker.len();
        yaml = format!("{}{rules}{}", &yaml[..start], &yaml[end..]);
    }
    let file = dir.file("pipeline.yaml", &yaml);
    eprintln!(
        "running sinkd into {} ({} projection)…",
        args.sink, args.projection
    );
    let start = Instant::now();
    let listen = format!("127.0.0.1:{}", stack::free_port());
    let mut daemon = Daemon::start_with_env(
        &file,
        &dir.0.join("sinkd.log"),
        &listen,
        &[("SINKD_API_TOKEN", BENCH_TOKEN)],
    );
    let pid = daemon.pid();
    // Start-up: process start to the first committed batch (polled every 10 ms).
    let first_commit = {
        let (target, name) = (target.clone(), name.clone());
        tokio::spawn(async move {
            while target.checkpoints(&name).await.values().all(|n| *n == 0) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            start.elapsed().as_secs_f64()
        })
    };
    target
        .wait_caught_up(&name, &ends, Duration::from_secs(1800))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let first_commit_secs = first_commit.await.expect("start-up probe");
    let sinkd_secs = start.elapsed().as_secs_f64();
    let rss = sinkd_tests::daemon::proc_status_kib(pid, "VmHWM").unwrap_or(0);
    let rebuilt = if args.rebuild {
        let reader = if matches!(target, Target::Postgres(_)) {
            add_user_indexes(&name).await;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            Some((stop, tokio::spawn(read_live(name.clone(), stopped))))
        } else {
            None
        };
        eprintln!("rebuilding with a swap…");
        let rebuilt = rebuild(&format!("http://{listen}"), &name).await;
        let reads = match reader {
            Some((stop, task)) => {
                let _ = stop.send(true);
                Some(task.await.expect("reader"))
            }
            None => None,
        };
        Some((rebuilt, reads))
    } else {
        None
    };
    let kept_indexes = match (&target, args.rebuild) {
        (Target::Postgres(_), true) => Some(user_indexes_of(&name).await),
        _ => None,
    };
    let rebuild_rss = sinkd_tests::daemon::proc_status_kib(pid, "VmHWM").unwrap_or(0);
    daemon.terminate(Duration::from_secs(30));
    let kept_log = std::env::temp_dir().join("sinkd-bench.log");
    let _ = std::fs::copy(dir.0.join("sinkd.log"), &kept_log);

    let (exact, final_rows) = match args.projection.as_str() {
        "lines" => {
            let got = sinkd_tests::lines::read(&target, &name, &lines_table).await;
            let want = sinkd_tests::lines::expected(&line_events);
            (
                (got == want).to_string(),
                format!("{} orders + {} lines", got.orders.len(), got.lines.len()),
            )
        }
        "lines-copy" => ("n/a".into(), format!("{}", target.count(&name).await)),
        "lines-by-path" => {
            let got = sinkd_tests::lines::read(&target, &name, &lines_table).await;
            let want = sinkd_tests::lines::expected(&line_events);
            (
                format!("n/a; lines {}", got.lines == want.lines),
                format!("{} orders + {} lines", got.orders.len(), got.lines.len()),
            )
        }
        _ => {
            let got = target.read_orders(&name).await;
            let want = if computed {
                sinkd_tests::projected::expected(&events)
            } else {
                shop::expected(&events)
            };
            ((got == want).to_string(), got.len().to_string())
        }
    };
    let baseline = match &target {
        Target::Postgres(_) => copy_rows(&name).await,
        Target::Mongo(url) => bulk_upsert(url, &name).await,
        Target::Tantivy(base) => raw_index(&base.join(&name)),
    };

    let sinkd_rate = args.events as f64 / sinkd_secs;
    let baseline_rate = baseline.rows as f64 / baseline.secs;
    println!();
    println!(
        "| measure ({}, {} projection) | value |",
        args.sink, args.projection
    );
    println!("|---|---|");
    println!("| events (avg value bytes) | {} ({avg}) |", args.events);
    println!(
        "| keys / partitions / batch / writers | {} / {} / {} / {} |",
        args.keys, args.partitions, args.batch, args.parallelism
    );
    println!(
        "| produce rate (broker, for context) | {:.0} events/s |",
        args.events as f64 / produce_secs
    );
    println!(
        "| **sinkd end to end** | **{sinkd_rate:.0} events/s** ({sinkd_secs:.1} s, incl. group join) |"
    );
    println!("| sinkd peak RSS | {:.1} MiB |", rss as f64 / 1024.0);
    println!("| start-up: process start → first committed batch | {first_commit_secs:.2} s |");
    println!(
        "| sinkd from the first commit to caught up (start-up excluded) | {:.0} events/s |",
        args.events as f64 / (sinkd_secs - first_commit_secs)
    );
    println!("| final rows (exact: {exact}) | {final_rows} |");
    println!(
        "| {} of the final rows | {baseline_rate:.0} rows/s ({} in {:.2} s) |",
        baseline.what, baseline.rows, baseline.secs
    );
    println!(
        "| sinkd events/s ÷ baseline rows/s | {:.2} |",
        sinkd_rate / baseline_rate
    );
    println!("| server | {} |", baseline.server);
    if let Some((r, reads)) = rebuilt {
        println!(
            "| **rebuild with swap** (request → swapped in) | **{:.1} s**, {:.0} events/s ({} events) |",
            r.secs,
            r.events as f64 / r.secs,
            r.events
        );
        println!(
            "| rebuild ÷ catch-up rate | {:.2} |",
            (r.events as f64 / r.secs) / sinkd_rate
        );
        println!(
            "| live task stopped → shadow swapped in, live task restarted (its group join follows) | {:.2} s |",
            r.swapping_secs
        );
        println!(
            "| sinkd peak RSS with the rebuild | {:.1} MiB |",
            rebuild_rss as f64 / 1024.0
        );
        if let Some(reads) = reads {
            println!(
                "| reads of the live table during the rebuild (through a user index) | {}, **longest {:.0} ms** |",
                reads.count,
                reads.longest.as_secs_f64() * 1000.0
            );
        }
        if let Some(kept) = kept_indexes {
            println!(
                "| user indexes on the table after the swap | {kept} of {} |",
                USER_INDEXES.len()
            );
        }
    }
    println!("\nsinkd's log: {}", kept_log.display());
    if exact == "false" {
        eprintln!("the read model differs from the expected state");
        std::process::exit(1);
    }
}

/// How many of [`USER_INDEXES`] the live table has, under their own names.
async fn user_indexes_of(table: &str) -> usize {
    let pg = stack::pg().await;
    let row = pg
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = $1 AND indexname LIKE $2",
            &[&table, &format!("{table}_user_%")],
        )
        .await
        .expect("indexes");
    row.get::<_, i64>(0) as usize
}

/// COPY of the sink table's rows into an empty table of the same shape.
async fn copy_rows(name: &str) -> Baseline {
    let pg = stack::pg().await;
    let copy_table = format!("{name}_copy");
    pg.batch_execute(&format!(
        "CREATE TABLE \"{copy_table}\" (LIKE \"{name}\" INCLUDING ALL)"
    ))
    .await
    .expect("copy table");
    let mut dump = Vec::new();
    let out = pg
        .copy_out(&format!("COPY \"{name}\" TO STDOUT (FORMAT binary)"))
        .await
        .expect("copy out");
    futures::pin_mut!(out);
    while let Some(chunk) = out.next().await {
        dump.push(chunk.expect("chunk"));
    }
    let start = Instant::now();
    let sink = pg
        .copy_in::<_, bytes::Bytes>(&format!("COPY \"{copy_table}\" FROM STDIN (FORMAT binary)"))
        .await
        .expect("copy in");
    futures::pin_mut!(sink);
    for chunk in dump {
        sink.send(chunk).await.expect("send");
    }
    let rows = sink.finish().await.expect("copy finished");
    let secs = start.elapsed().as_secs_f64();
    let fsync: String = pg.query_one("SHOW fsync", &[]).await.unwrap().get(0);
    pg.batch_execute(&format!(
        "DROP TABLE \"{name}\"; DROP TABLE \"{copy_table}\""
    ))
    .await
    .ok();
    Baseline {
        what: "COPY into an empty table",
        rows,
        secs,
        server: format!("PostgreSQL 15, fsync {fsync}"),
    }
}

/// The same final documents upserted into an empty collection with unordered `update`
/// commands of 1,000 statements through the driver (what a hand-written loader does).
async fn bulk_upsert(url: &str, name: &str) -> Baseline {
    use mongodb::bson::{Document, doc};
    let client = mongodb::Client::with_uri_str(url).await.expect("client");
    let db = client.database(MONGO_DATABASE);
    let docs = stack::all_documents(&db.collection(name)).await;
    let copy = format!("{name}_bulk");
    let start = Instant::now();
    for chunk in docs.chunks(1_000) {
        let updates: Vec<Document> = chunk
            .iter()
            .map(|d| doc! { "q": { "_id": d.get("_id").unwrap().clone() }, "u": d.clone(), "upsert": true })
            .collect();
        let reply = db
            .run_command(doc! { "update": &copy, "updates": updates, "ordered": false })
            .await
            .expect("bulk upsert");
        assert!(!reply.contains_key("writeErrors"), "{reply}");
    }
    let secs = start.elapsed().as_secs_f64();
    let version = client
        .database("admin")
        .run_command(doc! { "buildInfo": 1 })
        .await
        .ok()
        .and_then(|b| b.get_str("version").ok().map(str::to_owned))
        .unwrap_or_default();
    let _ = db.collection::<Document>(name).drop().await;
    let _ = db.collection::<Document>(&copy).drop().await;
    Baseline {
        what: "unordered bulk upsert (driver)",
        rows: docs.len() as u64,
        secs,
        server: format!("mongod {version}, replica set, data on /dev/shm"),
    }
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The same final documents indexed by plain Tantivy into a new directory: one writer,
/// the same 64 MiB heap, one commit.
fn raw_index(dir: &std::path::Path) -> Baseline {
    use tantivy::collector::DocSetCollector;
    use tantivy::query::AllQuery;
    let index = tantivy::Index::open_in_dir(dir).expect("sinkd's index");
    let searcher = index.reader().expect("reader").searcher();
    let docs: Vec<tantivy::TantivyDocument> = searcher
        .search(&AllQuery, &DocSetCollector)
        .expect("all docs")
        .into_iter()
        .map(|a| searcher.doc(a).expect("doc"))
        .collect();
    let raw_dir = dir.with_extension("raw");
    let _ = std::fs::remove_dir_all(&raw_dir);
    std::fs::create_dir_all(&raw_dir).unwrap();
    let raw = tantivy::Index::create_in_dir(&raw_dir, index.schema()).expect("raw index");
    let start = Instant::now();
    let mut writer: tantivy::IndexWriter<tantivy::TantivyDocument> = raw
        .writer_with_num_threads(1, 64 * 1024 * 1024)
        .expect("writer");
    for d in &docs {
        writer.add_document(d.clone()).expect("add");
    }
    writer.commit().expect("commit");
    writer.wait_merging_threads().expect("merges");
    let secs = start.elapsed().as_secs_f64();
    let server = format!(
        "index size: sinkd {:.1} MiB, raw {:.1} MiB",
        dir_size(dir) as f64 / 1048576.0,
        dir_size(&raw_dir) as f64 / 1048576.0
    );
    let _ = std::fs::remove_dir_all(&raw_dir);
    let _ = std::fs::remove_dir_all(dir);
    Baseline {
        what: "raw Tantivy indexing (one writer, 64 MiB heap)",
        rows: docs.len() as u64,
        secs,
        server,
    }
}
