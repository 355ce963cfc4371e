//! Runs the sidecar image against the local stack, as a user would, and checks it:
//! `container-check --image localhost/sinkd:test`. Called by `docker/image/test.sh`
//! after it built the image from `docker/Dockerfile`.
//!
//! 1. A pipeline file is mounted read-only at /etc/sinkd/pipelines; the container runs
//!    with `--network host` against the broker, registry and PostgreSQL on loopback.
//! 2. The image's HEALTHCHECK must turn healthy (`podman healthcheck run`: podman runs
//!    health checks from systemd timers, which this machine has not).
//! 3. 5,000 events reach PostgreSQL through the container: the table equals the model,
//!    and `/readyz` answers 200.
//! 4. 20,000 more events are produced and the container is stopped (SIGTERM) while it
//!    writes them: it must exit 0; started again, it must finish them with nothing lost
//!    and nothing applied twice.
//! 5. Prints the image size and the daemon's idle RSS.
//!
//! First of all, the binary must carry none of the tests' crash points.

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use sinkd_tests::daemon::Workdir;
use sinkd_tests::scenarios::merge_ends;
use sinkd_tests::target::Target;
use sinkd_tests::{shop, stack};

#[derive(Parser)]
struct Args {
    /// The image to run.
    #[arg(long, default_value = "localhost/sinkd:test")]
    image: String,
}

fn podman(args: &[&str]) -> Result<String, String> {
    let out = Command::new("podman")
        .args(args)
        .output()
        .map_err(|e| format!("podman: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The container's log: `podman logs` replays the daemon's stderr on its own stderr.
fn logs(container: &str, tail: &str) -> String {
    Command::new("podman")
        .args(["logs", "--tail", tail, container])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default()
}

fn fail(what: &str, container: &str) -> ! {
    let logs = logs(container, "60");
    let _ = podman(&["rm", "-f", container]);
    eprintln!("container check FAILED: {what}\n--- container log ---\n{logs}");
    std::process::exit(1);
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // The tests' crash points (`SINKD_CRASH_AT`) are compiled out of the release binary:
    // a stray variable in production must never abort the daemon.
    let crash_points = podman(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &args.image,
        "-c",
        "grep -c SINKD_CRASH_AT /usr/local/bin/sinkd || true",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        crash_points, "0",
        "the image's sinkd carries the tests' crash points"
    );
    let name = stack::unique("container");
    let topic = format!("{name}.orders");
    stack::create_topic(&topic, 4).await;
    let dir = Workdir::new(&name);
    let pipelines = dir.0.join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("orders.yaml"),
        shop::pipeline_yaml(&name, &topic, &name, ""),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", stack::free_port());
    let volume = format!("{}:/etc/sinkd/pipelines:ro", pipelines.display());
    let env = |k: &str, v: String| format!("{k}={v}");
    let run = |container: &str| {
        podman(&[
            "run",
            "-d",
            "--name",
            container,
            "--network",
            "host",
            // No systemd here to run the HEALTHCHECK on a timer: it is run on demand.
            "--health-interval",
            "disable",
            "-v",
            &volume,
            "-e",
            &env("SINKD_LISTEN", listen.clone()),
            "-e",
            &env("KAFKA_BROKERS", stack::brokers()),
            "-e",
            &env("SCHEMA_REGISTRY_URL", stack::registry_url()),
            "-e",
            &env("POSTGRES_URL", stack::postgres_url()),
            &args.image,
        ])
    };
    let container = name.as_str();
    let events = shop::generate(25_000, 2_000, 7);
    let (first, rest) = events.split_at(5_000);
    let mut ends = shop::publish(&topic, first).await;

    if let Err(e) = run(container) {
        fail(&e, container);
    }
    let start = Instant::now();
    loop {
        match podman(&["healthcheck", "run", container]) {
            Ok(_) => break,
            Err(e) if start.elapsed() > Duration::from_secs(60) => {
                fail(&format!("never healthy: {e}"), container)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let healthy_after = start.elapsed();
    let status = podman(&["inspect", "--format", "{{.State.Health.Status}}", container])
        .unwrap_or_else(|e| fail(&e, container));
    if status != "healthy" {
        fail(&format!("health status is {status}"), container);
    }
    if let Err(e) = Target::postgres()
        .wait_caught_up(&name, &ends, Duration::from_secs(120))
        .await
    {
        fail(&e, container);
    }
    let ready = reqwest::get(format!("http://{listen}/readyz")).await;
    if !ready.as_ref().is_ok_and(|r| r.status().is_success()) {
        fail(&format!("/readyz: {ready:?}"), container);
    }
    if Target::postgres().read_orders(&name).await != shop::expected(first) {
        fail(
            "the table after 5,000 events differs from the model",
            container,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = podman(&["inspect", "--format", "{{.State.Pid}}", container])
        .unwrap_or_else(|e| fail(&e, container));
    let idle_rss = pid
        .parse()
        .ok()
        .and_then(|pid| sinkd_tests::daemon::proc_status_kib(pid, "VmRSS"));

    // SIGTERM while the next 20,000 are being produced and written.
    // In 40 chunks over about 4 s, so that events keep arriving after the stop.
    let producing = {
        let (topic, rest) = (topic.clone(), rest.to_vec());
        tokio::spawn(async move {
            let mut ends = std::collections::HashMap::new();
            for chunk in rest.chunks(500) {
                merge_ends(&mut ends, shop::publish(&topic, chunk).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ends
        })
    };
    // Stop once the container has applied some of them, not all.
    let wait = Instant::now();
    while Target::postgres()
        .checkpoints(&name)
        .await
        .values()
        .sum::<i64>()
        <= first.len() as i64
    {
        if wait.elapsed() > Duration::from_secs(60) {
            fail(
                "the second batch of events never started to arrive",
                container,
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop_start = Instant::now();
    if let Err(e) = podman(&["stop", "--time", "30", container]) {
        fail(&e, container);
    }
    let stopped_in = stop_start.elapsed();
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", container])
        .unwrap_or_else(|e| fail(&e, container));
    if code != "0" {
        fail(&format!("SIGTERM: exit code {code}, want 0"), container);
    }
    if !logs(container, "-1").contains("shutdown requested") {
        fail("no shutdown message in the log after SIGTERM", container);
    }
    let stored_at_stop = Target::postgres().checkpoints(&name).await;
    merge_ends(&mut ends, producing.await.expect("producer task"));
    let applied_at_stop: i64 = stored_at_stop.values().sum();
    if applied_at_stop >= events.len() as i64 {
        fail(
            "the stop came after everything was written: not a stop mid-run",
            container,
        );
    }
    if let Err(e) = podman(&["start", container]) {
        fail(&e, container);
    }
    if let Err(e) = Target::postgres()
        .wait_caught_up(&name, &ends, Duration::from_secs(120))
        .await
    {
        fail(&e, container);
    }
    if Target::postgres().read_orders(&name).await != shop::expected(&events) {
        fail(
            "after stop and start the table differs from the model",
            container,
        );
    }
    let _ = podman(&["stop", "--time", "30", container]);
    let _ = podman(&["rm", "-f", container]);

    let size = podman(&["image", "inspect", "--format", "{{.Size}}", &args.image])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    println!("container check passed:");
    println!("  image {}: {:.1} MiB", args.image, size as f64 / 1048576.0);
    println!("  healthy {:.1} s after start", healthy_after.as_secs_f64());
    match idle_rss {
        Some(kib) => println!(
            "  idle RSS of sinkd in the container: {:.1} MiB",
            kib as f64 / 1024.0
        ),
        None => println!("  idle RSS: /proc/{pid}/status not readable"),
    }
    println!(
        "  SIGTERM mid-run: exit 0 in {:.1} s with {applied_at_stop} of {} events applied; \
         restarted, all applied exactly once",
        stopped_in.as_secs_f64(),
        events.len()
    );
}
