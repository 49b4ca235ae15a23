//! The fuzz target bodies (`fuzz/logic`, run by `cargo +nightly fuzz`) on stable: each target
//! runs over its committed seed corpus, the built-in seeds, mutations of them and a few
//! thousand deterministic pseudo-random inputs, with every invariant the fuzzers check.
//!
//! With `PVABI_WRITE_FUZZ_SEEDS=1` the built-in seeds are (re)written to
//! `fuzz/corpus/<target>/seed-*`.

#[allow(dead_code, unreachable_pub)]
#[path = "../../../fuzz/logic/mod.rs"]
mod logic;

use std::path::PathBuf;

use logic::env::plain_ram;
use logic::input::Rng;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// The committed corpus files of a target (seeds and anything added later).
fn corpus(target: &str, built_in: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    if std::env::var_os("PVABI_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (i, s) in built_in.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s).expect("write seed");
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let out: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("read corpus file"))
        .collect();
    assert!(
        !out.is_empty(),
        "no seed corpus in {} (write it with PVABI_WRITE_FUZZ_SEEDS=1)",
        dir.display()
    );
    out
}

/// Seeds, then mutations of them (bytes flipped, cut, spliced), then random inputs.
fn inputs(target: &str, built_in: Vec<Vec<u8>>, seed: u64, random: usize) -> Vec<Vec<u8>> {
    let mut all = corpus(target, &built_in);
    all.extend(built_in);
    let base = all.clone();
    let mut rng = Rng(seed);
    for i in 0..random {
        let mut v = if i % 2 == 0 {
            let s = &base[rng.next_u64() as usize % base.len()];
            s.clone()
        } else {
            let len = rng.next_u64() as usize % 400;
            rng.bytes(len)
        };
        if !v.is_empty() {
            for _ in 0..1 + rng.next_u64() % 6 {
                let at = rng.next_u64() as usize % v.len();
                match rng.next_u64() % 4 {
                    0 => v[at] = rng.next_u64() as u8,
                    1 => v[at] ^= 1 << (rng.next_u64() % 8),
                    2 => v.truncate(at.max(1)),
                    _ => {
                        let n = 1 + rng.next_u64() as usize % 32;
                        let extra = rng.bytes(n);
                        v.splice(at..at, extra);
                    }
                }
            }
        }
        all.push(v);
    }
    all
}

#[test]
fn dispatch_target_over_corpus_and_random_inputs() {
    let ram = plain_ram();
    let all = inputs("dispatch", logic::seeds::dispatch(), 0x5eed_0001, 3000);
    logic::dispatch::STATS.with(|s| *s.borrow_mut() = Some(Default::default()));
    for data in &all {
        logic::dispatch::run(data, &ram);
    }
    let stats = logic::dispatch::STATS.with(|s| s.borrow_mut().take().unwrap_or_default());
    // The input decoding reaches every v1 call ...
    for c in pvabi::call::CALLS {
        let (ok, failed) = stats.get(&(c.id.0 as u64)).copied().unwrap_or_default();
        assert!(ok + failed > 0, "{} never ran", c.name);
    }
    // ... and the seeds reach the success paths the invariants are about.
    use pvabi::call::*;
    for id in [
        EVENT_ALLOC,
        EVENT_SEND,
        STORE_WRITE,
        STORE_READ,
        STORE_WATCH_NEXT,
        STORE_TXN_COMMIT,
        GRANT_SETUP_TABLE,
        HARNESS_GRANT_ACCESS,
        MULTICALL_EXECUTE,
        BASE_RING_REGISTER,
        CLOCK_REGISTER_PAGE,
        CONSOLE_READ,
        HARNESS_REPORT,
        POWER_SHUTDOWN,
    ] {
        let (ok, _) = stats.get(&(id.0 as u64)).copied().unwrap_or_default();
        assert!(ok > 0, "{id:?} never succeeded");
    }
}

#[test]
fn store_target_over_corpus_and_random_inputs() {
    for data in &inputs("store", logic::seeds::store(), 0x5eed_0002, 3000) {
        logic::store::run(data);
    }
}

#[test]
fn multicall_target_over_corpus_and_random_inputs() {
    let (a, b) = (plain_ram(), plain_ram());
    for data in &inputs("multicall", logic::seeds::multicall(), 0x5eed_0003, 3000) {
        logic::multicall::run(data, &a, &b);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// The store model of the `store` target (guest and host writers, access, quotas,
    /// watches and their queue, transactions with conflict and serialisability checks)
    /// under proptest, which shrinks a failing operation sequence to a minimal one.
    #[test]
    fn store_against_model_proptest(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..800)) {
        logic::store::run(&data);
    }

    /// The `multicall` target's comparison with entry-by-entry execution, shrinkable.
    #[test]
    fn multicall_against_sequential_proptest(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        let (a, b) = (plain_ram(), plain_ram());
        logic::multicall::run(&data, &a, &b);
    }
}
