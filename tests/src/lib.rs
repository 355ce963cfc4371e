//! Shared code for sinkd's end-to-end tests, the demo producer and the benchmark.
//!
//! Server addresses come from the environment (`docker/env` prints them) with loopback
//! defaults; every test uses its own topic, group and table names so tests never interfere.
//!
//! - [`shop`]: the demo domain: Avro schemas, a deterministic event stream, and the
//!   expected read model computed independently of sinkd.
//! - [`lines`]: orders with lines, a read model of two targets (child rows), and the
//!   model of both computed independently.
//! - [`projected`]: the shop's stream through computed columns and `when` rules, and
//!   the read model they give, computed independently.
//! - [`stack`]: the servers: topic creation, producing, the registry, PostgreSQL.
//! - [`conformance`]: scenarios every sink must pass, against the `Sink` trait.
//! - [`target`]: a sink under test (PostgreSQL or MongoDB): its YAML and how to read it.
//! - [`scenarios`]: the end-to-end scenarios every sink runs.
//! - [`faults`]: fault scenarios beyond `kill -9` (a zombie writer).
//! - [`daemon`]: running the real `sinkd` binary on a pipeline file.

pub mod conformance;
pub mod control;
pub mod daemon;
pub mod evolution;
pub mod faults;
pub mod lines;
pub mod mongod;
pub mod network;
pub mod outbox;
pub mod postgres;
pub mod projected;
pub mod scenarios;
pub mod shop;
pub mod stack;
pub mod target;
pub mod tmpfs;

/// Declares one `#[tokio::test]` per shared scenario, each run against one target.
///
/// The scenarios live once in this crate; a sink's test file names the ones that apply
/// to it, one line each, instead of a hand-written wrapper per scenario:
///
/// ```ignore
/// sinkd_tests::scenario_tests! { Target::postgres();
///     sigterm_resumes => control::a_rebuild_interrupted_by_a_restart_resumes, control::Stop::Term;
/// }
/// ```
#[macro_export]
macro_rules! scenario_tests {
    ($target:expr; $($name:ident => $scenario:path $(, $arg:expr)*;)+) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                $scenario(&$target $(, $arg)*).await;
            }
        )+
    };
}

/// Declares the scenarios every sink must pass end to end, against `$target`: a run
/// over several partitions, `kill -9` during a run, offsets moved back, both bad-record
/// policies, and a rebuild under load and through a `kill -9`.
#[macro_export]
macro_rules! every_sink_scenarios {
    ($target:expr) => {
        $crate::every_sink_scenarios!(@named $target; scenarios:
            ten_thousand_events_over_four_partitions_give_the_expected_table,
            kill_dash_nine_six_times_during_a_run_leaves_an_exact_table,
            moving_the_group_offsets_back_does_not_reapply_anything,
            a_poisoned_record_is_dead_lettered_and_the_rest_applied,
            with_the_fail_policy_a_poisoned_record_stops_the_pipeline_and_says_where);
        $crate::every_sink_scenarios!(@named $target; control:
            a_rebuild_under_load_never_shows_a_partial_target_and_misses_nothing);
        $crate::scenario_tests! { $target;
            kill_dash_nine_during_a_rebuild_leaves_the_live_target_intact_and_the_rebuild_resumes =>
                $crate::control::a_rebuild_interrupted_by_a_restart_resumes,
                $crate::control::Stop::Kill9;
        }
    };
    // Tests named as the scenarios they run, from one module of this crate.
    (@named $target:expr; $module:ident: $($name:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                $crate::$module::$name(&$target).await;
            }
        )+
    };
}
