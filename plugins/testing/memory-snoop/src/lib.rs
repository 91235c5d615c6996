//! Looks for what an earlier step left in its memory, then leaves some
//! itself: a step that runs in a pooled instance slot after another must
//! find the slot as new. Two places are searched, each where a missed
//! reset would show: a static (in the module's initial image, zero) and
//! pages it grows the memory by (zero by the spec). (A zeroed heap
//! allocation would prove nothing here: wasi-libc's `calloc` always
//! clears, and the compiler may assume what it returns is zero.)
//! `contained` when both are clean, `escaped` otherwise; `wrote` says it
//! did leave its marker, read back through `black_box` so the check is
//! not folded away.

use runbook_sdk::{Error, Outcome, Pair, RunContext, Step, outcome};

/// What every step leaves behind, 16 bytes at the start of each 4 KiB.
const MARKER: &[u8; 16] = b"left-by-a-step!!";
const PAGE: usize = 4096;
/// Wasm pages grown by hand.
const GROWN_PAGES: usize = 4;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
const WASM_PAGE: usize = 65536;

const SCRATCH_LEN: usize = 256 * 1024;
/// Zero in the initial image (`.bss`).
static mut SCRATCH: [u8; SCRATCH_LEN] = [0; SCRATCH_LEN];

fn marked(bytes: &[u8]) -> bool {
    bytes.chunks(PAGE).any(|c| c.starts_with(MARKER))
}

fn mark(bytes: &mut [u8]) {
    for c in bytes.chunks_mut(PAGE) {
        c[..MARKER.len()].copy_from_slice(MARKER);
    }
}

/// `pages` Wasm pages grown now, as bytes.
#[cfg(target_arch = "wasm32")]
fn grow(pages: usize) -> Option<&'static mut [u8]> {
    let before = core::arch::wasm32::memory_size(0);
    if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
        return None;
    }
    // SAFETY: the pages were just grown and belong to no allocation.
    Some(unsafe {
        core::slice::from_raw_parts_mut((before * WASM_PAGE) as *mut u8, pages * WASM_PAGE)
    })
}

/// Only a component has a linear memory to grow (`cargo test` builds
/// this crate natively).
#[cfg(not(target_arch = "wasm32"))]
fn grow(_pages: usize) -> Option<&'static mut [u8]> {
    None
}

struct MemorySnoop;

impl Step for MemorySnoop {
    fn run(_ctx: RunContext, _inputs: Vec<Pair>) -> Result<Outcome, Error> {
        // SAFETY: one step runs at a time in an instance; nothing else
        // refers to the static.
        let scratch: &mut [u8] = unsafe {
            core::slice::from_raw_parts_mut((&raw mut SCRATCH).cast::<u8>(), SCRATCH_LEN)
        };
        let static_left = scratch.iter().any(|&b| b != 0);

        let Some(grown) = grow(GROWN_PAGES) else {
            return outcome("error").summary("memory.grow was refused");
        };
        let grown_left = grown.iter().any(|&b| b != 0);

        mark(scratch);
        mark(grown);
        let wrote = marked(std::hint::black_box(scratch)) && marked(std::hint::black_box(grown));

        let yes = |b: bool| if b { "yes" } else { "no" };
        let label = if static_left || grown_left {
            "escaped"
        } else {
            "contained"
        };
        outcome(label)
            .fact("static-left", yes(static_left))
            .fact("grown-left", yes(grown_left))
            .fact("wrote", yes(wrote))
            .summary(format!(
                "left in the static: {}, in grown pages: {}",
                yes(static_left),
                yes(grown_left)
            ))
    }
}

runbook_sdk::export_step!(MemorySnoop);
