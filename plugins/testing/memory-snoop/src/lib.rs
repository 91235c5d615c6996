//! Looks for what an earlier step left in its memory, then leaves some
//! itself: a step that runs in a pooled instance slot after another must
//! find the slot as new. Three places are searched, each where a missed
//! reset would show: a static (in the module's initial image), pages it
//! grows the memory by (zero by the spec), and a zeroed heap allocation
//! (the allocator trusts fresh pages to be zero and may skip clearing
//! them). `contained` when all three are clean, `escaped` otherwise;
//! `wrote` says it did leave its marker (so a clean read means something).

use runbook_sdk::{Error, Outcome, Pair, RunContext, Step, outcome};

/// What every step leaves behind, 16 bytes at the start of each 4 KiB.
const MARKER: &[u8; 16] = b"left-by-a-step!!";
const PAGE: usize = 4096;
/// Wasm pages grown by hand.
const GROWN_PAGES: usize = 4;
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

struct MemorySnoop;

impl Step for MemorySnoop {
    fn run(_ctx: RunContext, _inputs: Vec<Pair>) -> Result<Outcome, Error> {
        // SAFETY: one step runs at a time in an instance; nothing else
        // refers to the static.
        let scratch: &mut [u8] = unsafe {
            core::slice::from_raw_parts_mut((&raw mut SCRATCH).cast::<u8>(), SCRATCH_LEN)
        };
        let static_left = scratch.iter().any(|&b| b != 0);

        let before = core::arch::wasm32::memory_size(0);
        if core::arch::wasm32::memory_grow(0, GROWN_PAGES) == usize::MAX {
            return outcome("error").summary("memory.grow was refused");
        }
        // SAFETY: the pages were just grown and belong to no allocation.
        let grown: &mut [u8] = unsafe {
            core::slice::from_raw_parts_mut(
                (before * WASM_PAGE) as *mut u8,
                GROWN_PAGES * WASM_PAGE,
            )
        };
        let grown_left = grown.iter().any(|&b| b != 0);

        let mut heap = vec![0u8; 1 << 20];
        let heap_left = heap.iter().any(|&b| b != 0);

        mark(scratch);
        mark(grown);
        mark(&mut heap);
        let wrote = marked(scratch) && marked(grown) && marked(std::hint::black_box(&heap));
        // Kept: the allocator may hand the same pages to the next
        // allocation, and they stay dirty for the next instance.
        std::mem::forget(heap);

        let yes = |b: bool| if b { "yes" } else { "no" };
        let label = if static_left || grown_left || heap_left {
            "escaped"
        } else {
            "contained"
        };
        outcome(label)
            .fact("static-left", yes(static_left))
            .fact("grown-left", yes(grown_left))
            .fact("heap-left", yes(heap_left))
            .fact("wrote", yes(wrote))
            .summary(format!(
                "static {}, grown {}, heap {}",
                yes(static_left),
                yes(grown_left),
                yes(heap_left)
            ))
    }
}

runbook_sdk::export_step!(MemorySnoop);
