use std::time::Instant;
fn main() {
    let rt = runbook_engine::runtime::Runtime::new(None).unwrap();
    for b in runbook_engine::builtin::all() {
        let t = Instant::now();
        let _ = b.component(&rt.engine).unwrap();
        println!(
            "deserialize {:<20} {:>8.1} us ({} KiB)",
            b.name,
            t.elapsed().as_secs_f64() * 1e6,
            b.cwasm.len() / 1024
        );
    }
    use runbook_core::interface::Interface;
    for set in [
        vec![],
        vec![Interface::Metrics],
        vec![Interface::Metrics, Interface::Redis],
    ] {
        let t = Instant::now();
        let _ =
            runbook_capabilities::registry::linker_for(&rt.engine, set.iter().copied()).unwrap();
        println!(
            "linker {:?} {:>8.1} us",
            set,
            t.elapsed().as_secs_f64() * 1e6
        );
    }
    let b = runbook_engine::builtin::find("metric-threshold").unwrap();
    let (c, _) = b.component(&rt.engine).unwrap();
    let l =
        runbook_capabilities::registry::linker_for(&rt.engine, [Interface::Metrics].into_iter())
            .unwrap();
    let t = Instant::now();
    let _ = l.instantiate_pre(&c).unwrap();
    println!(
        "instantiate_pre {:>8.1} us",
        t.elapsed().as_secs_f64() * 1e6
    );
    let t = Instant::now();
    let l2 = l.clone();
    println!("linker clone {:>8.1} us", t.elapsed().as_secs_f64() * 1e6);
    drop(l2);
}
