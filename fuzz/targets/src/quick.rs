//! A quick mutational run of a target on the stable toolchain, for `./test`: the
//! committed corpus (`fuzz/corpus/<target>/`) and every input a campaign ever found a
//! crash with (`fuzz/regressions/<target>/`) are replayed, then mutated at random (bit
//! flips, byte changes, insertions, deletions, duplicated runs, splices of two inputs,
//! interesting values) for a fixed time. Blind where cargo-fuzz is coverage-guided, but
//! fast to start and enough to keep known crashes from coming back.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// An input that made a target panic, and what it said.
#[derive(Debug)]
pub struct Finding {
    /// The input.
    pub input: Vec<u8>,
    /// The panic's message.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "panicked: {}\ninput ({} bytes, as text): {:?}\ninput (hex): {}",
            self.message,
            self.input.len(),
            String::from_utf8_lossy(&self.input),
            self.input
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    }
}

/// The folder of a target's inputs under `fuzz/`: `corpus` or `regressions`.
pub fn folder(kind: &str, target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(kind)
        .join(target)
}

/// Every file of the target's corpus and regressions, sorted by name.
pub fn inputs(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .filter_map(|kind| std::fs::read_dir(folder(kind, target)).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("corpus file"))
        .collect()
}

/// Runs `target` on `input`, catching a panic.
pub fn call(target: fn(&[u8]), input: &[u8]) -> Result<(), Finding> {
    catch_unwind(AssertUnwindSafe(|| target(input))).map_err(|panic| Finding {
        input: input.to_vec(),
        message: panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into()),
    })
}

/// Replays `seeds`, then runs mutations of them for `budget`; returns how many inputs
/// were run.
pub fn run(
    target: fn(&[u8]),
    seeds: &[Vec<u8>],
    budget: Duration,
    seed: u64,
) -> Result<u64, Finding> {
    assert!(!seeds.is_empty(), "a corpus to start from");
    for input in seeds {
        call(target, input)?;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut runs = seeds.len() as u64;
    while start.elapsed() < budget {
        let mut input = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..=4) {
            mutate(&mut rng, &mut input, seeds);
        }
        call(target, &input)?;
        runs += 1;
    }
    Ok(runs)
}

/// Values at the edges of integer encodings (Avro's zig-zag varints among them).
const INTERESTING: [u8; 8] = [0x00, 0x01, 0x02, 0x7f, 0x80, 0xfe, 0xff, b'\n'];

/// Applies one random mutation to `input` (`seeds`: the inputs a splice takes tails from).
pub fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let at = |rng: &mut StdRng, len: usize| rng.random_range(0..=len);
    match rng.random_range(0..8) {
        0 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            input[i] ^= 1 << rng.random_range(0..8);
        }
        1 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            input[i] = rng.random();
        }
        2 => {
            let i = at(rng, input.len());
            input.insert(i, INTERESTING[rng.random_range(0..INTERESTING.len())]);
        }
        3 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            let n = rng.random_range(1..=(input.len() - i).min(16));
            input.drain(i..i + n);
        }
        4 if !input.is_empty() => {
            // A run of bytes repeated: lengths and counts that grow.
            let i = rng.random_range(0..input.len());
            let n = rng.random_range(1..=(input.len() - i).min(32));
            let run: Vec<u8> = input[i..i + n].to_vec();
            let j = at(rng, input.len());
            input.splice(j..j, run);
        }
        5 => {
            // Splice: the head of this input, the tail of another.
            let other = &seeds[rng.random_range(0..seeds.len())];
            let i = at(rng, input.len());
            let j = at(rng, other.len());
            input.truncate(i);
            input.extend_from_slice(&other[j..]);
        }
        6 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            input.truncate(i);
        }
        _ => {
            let i = at(rng, input.len());
            let byte = INTERESTING[rng.random_range(0..INTERESTING.len())];
            let n = rng.random_range(1..=8);
            input.splice(i..i, std::iter::repeat_n(byte, n));
        }
    }
}
