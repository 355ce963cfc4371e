//! Network faults between sinkd and every server it talks to (broker, registry,
//! PostgreSQL, MongoDB), with the real `sinkd` binary: 200 ms round trips, 5 % of the
//! packets dropped, then a 20 s partition in which nothing arrives. Two pipelines, one
//! per database, read the same stream through it all; both keep applying under latency
//! and loss, ride out the partition, and end equal to the model (increments included).
//!
//! The servers are the test's own, each behind a [`Proxy`] (latency) whose port the
//! [`Firewall`] drops packets on: the shared servers of the other tests are never touched.
//! This is the only test of its binary, because it points the test helpers at its own
//! broker and registry ([`stack::use_own_servers`]).

use std::time::{Duration, Instant};

use sinkd_tests::network::{Firewall, ProxiedServers};
use sinkd_tests::scenarios::{self, Setup};
use sinkd_tests::shop;
use sinkd_tests::target::Target;

/// Events applied by both pipelines, read through the proxies.
async fn applied(pipelines: &[&Setup]) -> Vec<i64> {
    let mut out = Vec::new();
    for s in pipelines {
        out.push(s.applied().await);
    }
    out
}

/// Waits `span` under a fault, then checks that every pipeline applied more meanwhile.
async fn keeps_applying(pipelines: &[&Setup], span: Duration, fault: &str) {
    let before = applied(pipelines).await;
    tokio::time::sleep(span).await;
    let after = applied(pipelines).await;
    assert!(
        before.iter().zip(&after).all(|(b, a)| a > b),
        "progress under {fault}: {before:?} → {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_loss_and_a_partition_are_ridden_out() {
    let servers = ProxiedServers::start().await;
    let (pg, mongod) = (&servers.pg, &servers.mongod);
    let into_pg = Setup::new(&servers.postgres(), "netpg", 4, scenarios::QUICK_BATCHES).await;
    let into_mongo = Setup::new(&servers.mongo(), "netmongo", 4, scenarios::QUICK_BATCHES).await;
    let pipelines = [&into_pg, &into_mongo];
    // Produced over at least 48 s, so there is work to do through every fault.
    let events = shop::generate(48_000, 1_500, 101);
    let mut producers = Vec::new();
    for s in pipelines {
        let ids = shop::register_schemas(&s.topic).await;
        let records = shop::records(&ids, &events);
        producers.push(scenarios::produce_in_slices(
            &s.topic,
            records,
            1_000,
            Duration::from_secs(1),
        ));
    }
    let daemons: Vec<_> = pipelines.iter().map(|s| s.start()).collect();
    let start = Instant::now();
    while applied(&pipelines).await.iter().any(|&n| n < 1_000) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no progress\n{}",
            daemons[0].log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let proxies = servers.proxies();
    for p in proxies {
        p.set_latency(Duration::from_millis(100));
    }
    keeps_applying(&pipelines, Duration::from_secs(10), "200 ms round trips").await;
    for p in proxies {
        p.set_latency(Duration::ZERO);
    }

    let mut firewall = Firewall::on(&proxies.map(|p| p.port));
    firewall.drop_packets(0.05);
    keeps_applying(&pipelines, Duration::from_secs(10), "5 % packet loss").await;
    firewall.drop_packets(1.0);
    // Read past the proxies: nothing gets through the partition, so nothing moves.
    let direct = [
        (Target::Postgres(pg.url()), &into_pg.pipeline),
        (Target::Mongo(mongod.url()), &into_mongo.pipeline),
    ];
    let stored = async || {
        let mut out = Vec::new();
        for (target, pipeline) in &direct {
            out.push(target.checkpoints(pipeline).await);
        }
        out
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let early = stored().await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let late = stored().await;
    assert_eq!(early, late, "nothing crosses the partition");
    for stored in &early {
        let done: i64 = stored.values().sum();
        assert!(
            done < events.len() as i64,
            "the partition came while there was work to do: {done}"
        );
    }
    firewall.clear();

    for ((s, producer), daemon) in pipelines.iter().zip(producers).zip(&daemons) {
        let ends = producer.await.expect("producer");
        s.caught_up(&ends, daemon).await;
        assert_eq!(s.orders().await, shop::expected(&events), "{}", s.pipeline);
    }
}
