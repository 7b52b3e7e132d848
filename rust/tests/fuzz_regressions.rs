//! Every input a fuzzer once failed on (`rust/fuzz/regressions/<target>/`), and the seeds it
//! starts from, replayed on the stable toolchain: a fixed bug stays fixed.

use std::fs;
use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable directory").path();
            let data = fs::read(&path).expect("a readable input");
            check(&data);
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn selector_inputs() {
    assert!(
        replay("selector", _core::fuzzing::selector) > 0,
        "no selector seeds"
    );
}

#[test]
fn endpoint_inputs() {
    assert!(
        replay("endpoint", _core::fuzzing::endpoint) > 0,
        "no endpoint seeds"
    );
}
