//! A bounded smoke run of every fuzz target on the ordinary toolchain: each file of its kept
//! corpus (`fuzz/corpus/<target>/`, seeds and what campaigns found) is replayed, then mutated at
//! random for a short time. Not coverage-guided: the campaigns are `scripts/fuzz.sh`; this keeps
//! what they found fixed and catches a parser that panics on its own seeds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use onramp::fuzzing::TARGETS;

/// Random mutations per target after the replay.
const MUTATION_TIME: Duration = Duration::from_millis(1500);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// xorshift64: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One libFuzzer-like mutation: flip, overwrite, insert, delete, duplicate a slice, or splice.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => out[at] = [0, 0xff, 0x7f, 0x80, b'"', b'{'][rng.below(6)],
            2 => out.insert(at, rng.next() as u8),
            3 if at < out.len() => drop(out.drain(at..(at + rng.below(8)).min(out.len()))),
            4 if at < out.len() => {
                let end = (at + rng.below(16)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => {
                let from = rng.below(other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
        }
    }
    out
}

#[test]
fn every_fuzz_target_is_listed_and_has_a_corpus() {
    let mut files: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    files.sort();
    let listed: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        files, listed,
        "fuzz/fuzz_targets and onramp::fuzzing::TARGETS differ"
    );
    for name in listed {
        assert!(!corpus(name).is_empty(), "fuzz/corpus/{name} is empty");
    }
}

#[test]
fn fuzz_targets_survive_their_corpora_and_mutations() {
    for (name, target) in TARGETS {
        let seeds = corpus(name);
        for seed in &seeds {
            target(seed);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let started = Instant::now();
        let mut runs = 0u64;
        while started.elapsed() < MUTATION_TIME {
            let input = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            target(&mutate(&mut rng, input, other));
            runs += 1;
        }
        println!("{name}: {} corpus files, {runs} mutations", seeds.len());
    }
}
