//! The parsers' fuzz targets (`runbook_engine::fuzzing`) on the stable
//! toolchain: every seed in `fuzz/corpus/`, every input that once crashed
//! in `fuzz/regressions/`, and thousands of deterministic mutations of the
//! seeds. A panic fails the test; the full libFuzzer campaign is `cargo
//! +nightly fuzz run TARGET` in `fuzz/`.

mod common;

use std::path::Path;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to YAML, TOML and the host's own syntax.
const INTERESTING: &[u8] = b"[]{}\"'#:-*&!|>,=\n\t\\ {}/.0123456789eE+_";

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 if at < out.len() => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            3 if at < out.len() => {
                let end = (at + rng.below(64)).min(out.len());
                let piece = out[at..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, piece);
            }
            4 => out.truncate(at),
            _ => {
                let n = rng.below(32);
                let c = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, std::iter::repeat_n(c, n));
            }
        }
    }
    out
}

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn every_parser_survives_its_corpus_regressions_and_mutations() {
    let fuzz = common::root().join("fuzz");
    let mut rng = Rng(0x5eed_2026_1127);
    let targets = runbook_engine::fuzzing::TARGETS
        .iter()
        .chain(runbook_fleet::fuzzing::TARGETS);
    for (name, target) in targets {
        let seeds = files(&fuzz.join("corpus").join(name));
        assert!(!seeds.is_empty(), "no seeds for `{name}`");
        for input in files(&fuzz.join("regressions").join(name))
            .iter()
            .chain(&seeds)
        {
            target(input);
        }
        for seed in &seeds {
            for _ in 0..200 {
                target(&mutate(seed, &mut rng));
            }
        }
    }
}
