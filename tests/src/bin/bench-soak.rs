//! The soak (`./bench soak --minutes N`): a steady stream into PostgreSQL, MongoDB and
//! Tantivy, one daemon each, while a scheduler injects faults at random: `kill -9` of a
//! daemon, a daemon frozen (SIGSTOP) past its group session, PostgreSQL and mongod
//! crashed, the registry hanging or down, latency, packet loss, a partition, a full disk
//! under the index. At the end every target must equal the model; the run prints the
//! faults injected, the recovery time of each kind (from the fault's end to the affected
//! pipelines' next committed batch: max and p99) and each daemon's RSS over time.
//!
//! Every server is the soak's own (the network faults need a proxy in front of each, see
//! `sinkd_tests::network`); it needs root, like the fault tests.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sinkd_tests::daemon::{Daemon, proc_status_kib};
use sinkd_tests::faults::CrashableServer;
use sinkd_tests::network::{Firewall, ProxiedServers};
use sinkd_tests::scenarios::{QUICK_BATCHES, Setup, merge_ends};
use sinkd_tests::shop;
use sinkd_tests::stack;
use sinkd_tests::target::Target;
use sinkd_tests::tmpfs::Tmpfs;

#[derive(Parser)]
struct Args {
    /// How long faults are injected; the stream runs as long.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Events per second into each sink.
    #[arg(long, default_value_t = 300)]
    rate: usize,
    /// Orders the events touch.
    #[arg(long, default_value_t = 5_000)]
    keys: usize,
    /// Seed of the stream and of the fault schedule.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// The kinds of fault, as the report names them.
const FAULTS: [&str; 10] = [
    "kill -9 sinkd",
    "freeze sinkd",
    "crash PostgreSQL",
    "crash mongod",
    "registry hangs",
    "registry down",
    "latency 200 ms",
    "packet loss 5 %",
    "partition",
    "disk full",
];

/// One pipeline of the soak and its daemon.
struct Pipeline {
    setup: Setup,
    daemon: Daemon,
    /// RSS (MiB) sampled each minute.
    rss: Vec<u64>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut s = ProxiedServers::start().await;
    let disk = Tmpfs::mount(1024);
    let targets = [
        s.postgres(),
        s.mongo(),
        Target::Tantivy(disk.path().to_path_buf()),
    ];
    let mut pipelines = Vec::new();
    for (target, name) in targets.iter().zip(["soakpg", "soakmongo", "soaktantivy"]) {
        let setup = Setup::new(target, name, 4, QUICK_BATCHES).await;
        let daemon = setup.start();
        pipelines.push(Pipeline {
            setup,
            daemon,
            rss: Vec::new(),
        });
    }
    // The stream outlasts the faults by a minute, so that the recovery from the last
    // fault is measured while events still arrive.
    let total = args.rate * (args.minutes as usize + 1) * 60;
    let events = shop::generate(total, args.keys, args.seed);
    println!(
        "soak: faults every 5–20 s for {} min, a stream of {} events/s into PostgreSQL, \
         MongoDB and Tantivy for a minute longer ({total} events, {} orders)",
        args.minutes, args.rate, args.keys
    );
    let producer = produce_steadily(&pipelines, &events, args.rate).await;

    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut recoveries: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.minutes * 60);
    let mut next_sample = start + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(rng.random_range(5..=20))).await;
        if Instant::now() >= deadline {
            break;
        }
        if Instant::now() >= next_sample {
            sample_rss(&mut pipelines);
            next_sample += Duration::from_secs(60);
        }
        let fault = FAULTS[rng.random_range(0..FAULTS.len())];
        let victim = rng.random_range(0..pipelines.len());
        let affected = inject(fault, victim, &mut s, &disk, &mut pipelines, &mut rng).await;
        let recovered = recovery(&pipelines, &affected).await;
        eprintln!(
            "{:>5.0} s  {fault:<16} {}  recovered in {recovered:.1} s",
            start.elapsed().as_secs_f64(),
            affected
                .iter()
                .map(|&i| pipelines[i].setup.pipeline.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        recoveries.entry(fault).or_default().push(recovered);
    }
    sample_rss(&mut pipelines);

    let ends = producer.await.expect("producer");
    let want = shop::expected(&events);
    println!("\n| fault            | count | recovery max s | recovery p99 s |");
    println!("|------------------|------:|---------------:|---------------:|");
    for (fault, mut times) in recoveries {
        times.sort_by(f64::total_cmp);
        let p99 = times[((times.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
        println!(
            "| {fault:<16} | {:>5} | {:>14.1} | {p99:>14.1} |",
            times.len(),
            times.last().copied().unwrap_or(0.0)
        );
    }
    println!("\n| sink        | exact | RSS MiB each minute (peak) |");
    println!("|-------------|-------|----------------------------|");
    let mut all_exact = true;
    for (p, ends) in pipelines.iter().zip(&ends) {
        let caught_up = p
            .setup
            .target
            .wait_caught_up(&p.setup.pipeline, ends, Duration::from_secs(300))
            .await;
        let exact = caught_up.is_ok() && p.setup.orders().await == want;
        all_exact &= exact;
        println!(
            "| {:<11} | {:<5} | {} ({}) |",
            p.setup.pipeline.split('_').next().unwrap_or_default(),
            if exact { "yes" } else { "NO" },
            p.rss
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            p.rss.iter().max().copied().unwrap_or(0)
        );
        if let Err(e) = caught_up {
            eprintln!("{}: {e}\n{}", p.setup.pipeline, p.daemon.log());
        }
    }
    assert!(all_exact, "every target equals the model after the soak");
}

/// Produces `events` into every pipeline's topic at `rate` per second, in the background;
/// returns the partition ends per pipeline.
async fn produce_steadily(
    pipelines: &[Pipeline],
    events: &[shop::ShopEvent],
    rate: usize,
) -> tokio::task::JoinHandle<Vec<HashMap<i32, i64>>> {
    let mut streams = Vec::new();
    for p in pipelines {
        let ids = shop::register_schemas(&p.setup.topic).await;
        streams.push((p.setup.topic.clone(), shop::records(&ids, events)));
    }
    tokio::spawn(async move {
        let producer = stack::producer();
        let mut ends = vec![HashMap::new(); streams.len()];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while streams.iter().any(|(_, r)| !r.is_empty()) {
            tick.tick().await;
            for ((topic, records), ends) in streams.iter_mut().zip(&mut ends) {
                let rest = records.split_off(records.len().min(rate));
                let now = std::mem::replace(records, rest);
                merge_ends(ends, stack::produce_with(&producer, topic, now).await);
            }
        }
        ends
    })
}

/// Injects `fault` (on pipeline `victim` where it concerns one daemon), holds it, ends
/// it; returns the pipelines it affected.
async fn inject(
    fault: &str,
    victim: usize,
    s: &mut ProxiedServers,
    disk: &Tmpfs,
    pipelines: &mut [Pipeline],
    rng: &mut StdRng,
) -> Vec<usize> {
    let hold = Duration::from_secs(rng.random_range(5..=20));
    let all = vec![0, 1, 2];
    match fault {
        "kill -9 sinkd" => {
            let p = &mut pipelines[victim];
            p.daemon.kill9();
            p.daemon = p.setup.start();
            vec![victim]
        }
        "freeze sinkd" => {
            // Past the 6 s group session: the group drops it, and it must rejoin.
            pipelines[victim].daemon.signal("STOP");
            tokio::time::sleep(Duration::from_secs(8)).await;
            pipelines[victim].daemon.signal("CONT");
            vec![victim]
        }
        "crash PostgreSQL" => {
            s.pg.crash().await;
            vec![0]
        }
        "crash mongod" => {
            s.mongod.crash().await;
            vec![1]
        }
        "registry hangs" => {
            s.registry.signal("STOP");
            tokio::time::sleep(hold).await;
            s.registry.signal("CONT");
            all
        }
        "registry down" => {
            s.registry.stop();
            tokio::time::sleep(hold).await;
            s.registry.restart();
            all
        }
        "latency 200 ms" => {
            for p in s.proxies() {
                p.set_latency(Duration::from_millis(100));
            }
            tokio::time::sleep(hold).await;
            for p in s.proxies() {
                p.set_latency(Duration::ZERO);
            }
            all
        }
        "packet loss 5 %" | "partition" => {
            let mut firewall = Firewall::on(&s.proxies().map(|p| p.port));
            firewall.drop_packets(if fault == "partition" { 1.0 } else { 0.05 });
            tokio::time::sleep(hold).await;
            firewall.clear();
            all
        }
        "disk full" => {
            disk.fill();
            tokio::time::sleep(hold).await;
            disk.free();
            vec![2]
        }
        other => unreachable!("fault {other}"),
    }
}

/// Seconds until every affected pipeline commits a batch again (its checkpoints move),
/// at most 10 minutes.
async fn recovery(pipelines: &[Pipeline], affected: &[usize]) -> f64 {
    let start = Instant::now();
    for &i in affected {
        let p = &pipelines[i].setup;
        let before = p.applied().await;
        while p.applied().await == before {
            if start.elapsed() > Duration::from_secs(600) {
                eprintln!(
                    "{} did not recover\n{}",
                    p.pipeline,
                    pipelines[i].daemon.log()
                );
                return f64::INFINITY;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    start.elapsed().as_secs_f64()
}

fn sample_rss(pipelines: &mut [Pipeline]) {
    for p in pipelines {
        let kib = proc_status_kib(p.daemon.pid(), "VmRSS").unwrap_or(0);
        p.rss.push(kib / 1024);
    }
}
